#include "store/job.hpp"

namespace jobhost::store {

std::string_view state_name(JobState s) {
    switch (s) {
    case JobState::scheduled: return "scheduled";
    case JobState::ready: return "ready";
    case JobState::reserved: return "reserved";
    case JobState::running: return "running";
    case JobState::done: return "done";
    case JobState::dead: return "dead";
    }
    return "unknown";
}

std::optional<JobState> parse_state(std::string_view name) {
    for (JobState s :
         {JobState::scheduled, JobState::ready, JobState::reserved, JobState::running, JobState::done, JobState::dead})
        if (state_name(s) == name) return s;
    return std::nullopt;
}

std::string_view dead_reason_name(DeadReason r) {
    switch (r) {
    case DeadReason::none: return "none";
    case DeadReason::retries_exhausted: return "retries exhausted";
    case DeadReason::permanent_failure: return "permanent failure";
    case DeadReason::should_retry_said_no: return "should_retry said no";
    case DeadReason::timed_out: return "timed out";
    case DeadReason::crashed_host: return "crashed_host";
    case DeadReason::host_stopped: return "host_stopped";
    }
    return "unknown";
}

std::optional<JobId> parse_job_id(std::string_view text) {
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string_view::npos)
        return std::nullopt;
    JobId id = 0;
    for (char c : text) id = id * 10 + static_cast<JobId>(c - '0');
    return id;
}

} // namespace jobhost::store
