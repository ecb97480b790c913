#include "executor/outcome.hpp"

#include "common/duration.hpp"

#include <algorithm>
#include <cmath>

namespace jobhost::executor {

std::chrono::milliseconds backoff_delay(const registry::JobSettings& s, std::uint32_t attempt,
                                        const std::function<double(double, double)>& uniform) {
    double base = static_cast<double>(s.backoff.initial.count()) *
                  std::pow(s.backoff.multiplier, static_cast<double>(attempt > 0 ? attempt - 1 : 0));
    base = std::min(base, static_cast<double>(s.backoff.max.count()));
    if (s.backoff.jitter > 0) base *= uniform(1.0 - s.backoff.jitter, 1.0 + s.backoff.jitter);
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::max(0.0, base)));
}

Decision decide_outcome(const RunReport& run, std::uint32_t attempt, std::uint32_t max_attempts, bool timed_out,
                        bool cancelled_by_shutdown, const registry::JobSettings& settings,
                        const std::function<double(double, double)>& uniform) {
    Decision d;
    d.timed_out = timed_out;
    if (run.has_result && run.status == JH_OK && !timed_out) return d;
    d.error = timed_out         ? "timed out after " + core::format_duration(settings.timeout)
              : !run.has_result ? std::string("the task reported no result")
                                : (run.message.empty() ? std::string("failed") : run.message);
    if (cancelled_by_shutdown && !timed_out) {
        d.kind = Decision::Kind::released;
        return d;
    }
    if (!timed_out && run.status == JH_PERMANENT)
        d.reason = store::DeadReason::permanent_failure;
    else if (!timed_out && (run.flags & JH_RESULT_NO_RETRY))
        d.reason = store::DeadReason::should_retry_said_no;
    else if (attempt >= max_attempts)
        d.reason = timed_out ? store::DeadReason::timed_out : store::DeadReason::retries_exhausted;
    if (d.reason == store::DeadReason::none) {
        d.kind = Decision::Kind::retry;
        d.delay = backoff_delay(settings, attempt, uniform);
        return d;
    }
    d.kind = settings.dead_letter ? Decision::Kind::dead : Decision::Kind::dropped;
    return d;
}

} // namespace jobhost::executor
