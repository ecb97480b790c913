// A job as the store keeps it. The store is the source of truth for every job's state; the executor holds a copy of
// the jobs it is running.
#pragma once

#include "registry/job_settings.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

namespace jobhost::store {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;
using JobId = std::uint64_t;

// scheduled: waits for run_at (a delayed enqueue or a retry); ready: may be claimed; reserved: held ahead by a host
// (no attempt charged yet); running: its plugin has been called (this attempt is charged); done: finished
// successfully; dead: in the dead-letter queue. See store.hpp for the rules.
enum class JobState { scheduled, ready, reserved, running, done, dead };
std::string_view state_name(JobState s);
std::optional<JobState> parse_state(std::string_view name); // the inverse of state_name

// A job id as users type it: 1 to 18 decimal digits.
std::optional<JobId> parse_job_id(std::string_view text);

// Why a job stopped for good without success.
// crashed_host: the host died while the job ran, on its last attempt; host_stopped: the host stopped while the job
// was still running (it ignored cancellation), on its last attempt.
enum class DeadReason {
    none,
    retries_exhausted,
    permanent_failure,
    should_retry_said_no,
    timed_out,
    crashed_host,
    host_stopped
};
std::string_view dead_reason_name(DeadReason r);

struct AttemptError {
    std::uint32_t attempt = 0;
    TimePoint at;
    std::string message;
};

// The latest progress a running job reported (Context::progress), kept after the job ends.
struct Progress {
    int percent = 0; // 0..100
    std::string message;
    TimePoint at;
};

// What a successful run returned (Result::success(message, output)), bounded by [store] max_result.
struct JobResult {
    std::string message;
    std::string output; // JSON text; empty: none
    std::string note;   // why the output or message was cut short, when it was
};

struct JobRecord {
    JobId id = 0;
    std::string type;
    std::string payload = "null"; // JSON text
    registry::Priority priority = registry::Priority::normal;
    std::string unique_key;         // empty: none
    std::uint32_t attempt = 0;      // attempts charged so far; a running job's is the attempt it is on
    std::uint32_t max_attempts = 1; // 1 + max_retries at enqueue time
    JobState state = JobState::ready;
    TimePoint run_at; // not before
    TimePoint created_at;
    TimePoint ready_since; // when it last became ready: the age that priority aging and "oldest first" use
    TimePoint started_at;
    TimePoint finished_at;
    std::string lease_owner;
    TimePoint lease_expiry;
    bool from_schedule = false; // enqueued by the scheduler (for tick coalescing)
    std::vector<AttemptError> errors;
    DeadReason dead_reason = DeadReason::none;
    // Attempts charged before its last retry from the dead-letter queue: such a retry gives the job a fresh set of
    // attempts (max_attempts grows by the set it had), and its attempts go on counting, so each error in its history
    // keeps a number of its own.
    std::uint32_t attempts_before = 0;
    std::optional<JobResult> result;  // done jobs, where the store keeps them
    std::optional<Progress> progress; // the latest one reported, if any
    // Where a PostgreSQL host marks this reservation's start (PostgresStore::begin_run): its line's sequence (an
    // oid; 0: none, the run is marked in a table) and its place in that line.
    std::uint32_t mark_seq = 0;
    std::int64_t mark_pos = 0;
};

// What an enqueue asks for.
struct NewJob {
    std::string type;
    std::string payload = "null";
    registry::Priority priority = registry::Priority::normal;
    std::string unique_key;
    std::uint32_t max_attempts = 1;
    TimePoint run_at{}; // epoch: now
    bool from_schedule = false;
    // A schedule's tick: the job is queued only if no host sharing the store has queued this tick (or a later one)
    // of this type already.
    std::optional<TimePoint> tick;
};

struct EnqueueOutcome {
    JobId id = 0;            // the new job, or the existing one on a unique-key conflict
    bool created = false;    // false: refused because `id` holds the same type and unique key, or tick_taken
    bool tick_taken = false; // the tick was queued already, by this host or another one
};

} // namespace jobhost::store
