// What the executor tells an observer (the monitor) about each job, as it happens. Called on the executor's threads,
// sometimes under its lock: an observer must be quick, must not throw, and must not call back into the executor.
#pragma once

#include "store/job.hpp"

#include <chrono>
#include <string_view>

namespace jobhost::executor {

enum class JobEventKind {
    enqueued,
    started,
    succeeded,
    failed, // every failed attempt, timed-out ones included
    timed_out,
    retried,
    dead_lettered,
    dropped,
    released, // cancelled by shutdown, left to be retried
    coalesced,
    stuck,
    // A plugin library changed while the host ran (the job id is 0; `error` says what happened):
    plugin_loaded,   // a new type is served
    plugin_replaced, // a type's new version is loaded (it serves once the old version's runs end)
    plugin_removed,  // a type's library is gone; its queued jobs wait
    plugin_refused,  // a new or changed file could not be loaded; what served before still does
};
std::string_view event_kind_name(JobEventKind k);

struct JobEvent {
    JobEventKind kind;
    std::string_view type;
    store::JobId id = 0; // 0 for a coalesced tick
    std::uint32_t attempt = 0;
    std::chrono::milliseconds duration{0}; // started: time waited since ready; finished kinds: time the run took
    std::string_view error;
    store::TimePoint at;
};

class ExecutorObserver {
public:
    virtual ~ExecutorObserver() = default;
    virtual void on_event(const JobEvent& event) noexcept = 0;
    // A type's schedule is known to be alive at `at` without a run here: another host sharing the store ran the
    // tick, or the schedule was just (re)set by a reload. The lateness rule measures from here too.
    virtual void on_schedule(std::string_view type, store::TimePoint at) noexcept {
        (void)type;
        (void)at;
    }
};

} // namespace jobhost::executor
