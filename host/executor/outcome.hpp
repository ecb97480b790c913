// The outcome decision: what becomes of a job after one run, as a pure function of what the run reported and the
// type's settings. The executor applies it (store, metrics, events, log); tests call it without plugins.
#pragma once

#include "registry/job_settings.hpp"
#include "store/job.hpp"

#include <jobhost/abi.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace jobhost::executor {

// What one job's run reported through the ABI.
struct RunReport {
    bool has_result = false; // the task set a result
    jh_status status = JH_FAILED;
    std::uint32_t flags = 0; // JH_RESULT_NO_RETRY
    std::string message;
};

struct Decision {
    // succeeded; retry after `delay`; dead (to the dead-letter queue) or dropped (dead_letter = false) with `reason`;
    // released: cancelled by a shutdown, back to ready uncharged.
    enum class Kind { succeeded, retry, dead, dropped, released } kind = Kind::succeeded;
    std::string error; // this attempt's error; empty on success
    store::DeadReason reason = store::DeadReason::none;
    std::chrono::milliseconds delay{0};
    bool timed_out = false;
};

// The retry delay before attempt `attempt` + 1: min(initial * multiplier^(attempt-1), max), scaled by a factor in
// [1 - jitter, 1 + jitter] that `uniform(lo, hi)` draws.
std::chrono::milliseconds backoff_delay(const registry::JobSettings& settings, std::uint32_t attempt,
                                        const std::function<double(double, double)>& uniform);

// `attempt` is the attempt that ran, of `max_attempts`. A timeout overrides what the run reported; a run cancelled
// by a shutdown (and not timed out) is released, whatever it reported unless it succeeded.
Decision decide_outcome(const RunReport& run, std::uint32_t attempt, std::uint32_t max_attempts, bool timed_out,
                        bool cancelled_by_shutdown, const registry::JobSettings& settings,
                        const std::function<double(double, double)>& uniform);

} // namespace jobhost::executor
