// The outcome decision, without plugins: every way a run can end, against the type's settings.
#include "executor/outcome.hpp"

#include <doctest/doctest.h>

using namespace jobhost;
using namespace std::chrono_literals;
using executor::Decision;
using executor::RunReport;

namespace {

registry::JobSettings settings() {
    registry::JobSettings s;
    s.backoff.initial = 100ms;
    s.backoff.multiplier = 2.0;
    s.backoff.max = 1s;
    s.backoff.jitter = 0.0;
    s.timeout = 250ms;
    return s;
}

double middle(double lo, double hi) {
    return (lo + hi) / 2;
}

Decision decide(const RunReport& r, std::uint32_t attempt, std::uint32_t max, bool timed_out = false,
                bool shutdown = false, registry::JobSettings s = settings()) {
    return executor::decide_outcome(r, attempt, max, timed_out, shutdown, s, middle);
}

RunReport ok() {
    return {true, JH_OK, 0, ""};
}
RunReport failed(std::string message = "boom") {
    return {true, JH_FAILED, 0, std::move(message)};
}

} // namespace

TEST_CASE("a success succeeds, unless the run timed out") {
    CHECK(decide(ok(), 1, 3).kind == Decision::Kind::succeeded);
    CHECK(decide(ok(), 1, 3).error.empty());
    auto late = decide(ok(), 1, 3, true);
    CHECK(late.kind == Decision::Kind::retry);
    CHECK(late.error == "timed out after 250ms");
    CHECK(late.timed_out);
}

TEST_CASE("a failure is retried with backoff until its last attempt, then dead-lettered as retries exhausted") {
    auto first = decide(failed(), 1, 3);
    CHECK(first.kind == Decision::Kind::retry);
    CHECK(first.delay == 100ms);
    CHECK(first.error == "boom");
    CHECK(decide(failed(), 2, 3).delay == 200ms);
    auto last = decide(failed(), 3, 3);
    CHECK(last.kind == Decision::Kind::dead);
    CHECK(last.reason == store::DeadReason::retries_exhausted);
    CHECK(decide(failed(""), 1, 3).error == "failed");
    CHECK(decide(RunReport{}, 1, 3).error == "the task reported no result");
}

TEST_CASE("permanent failures and a should_retry that says no stop at once, a timeout on the last attempt is its "
          "own reason") {
    auto permanent = decide({true, JH_PERMANENT, 0, "bad input"}, 1, 5);
    CHECK(permanent.kind == Decision::Kind::dead);
    CHECK(permanent.reason == store::DeadReason::permanent_failure);
    auto no = decide({true, JH_FAILED, JH_RESULT_NO_RETRY, "no"}, 1, 5);
    CHECK(no.reason == store::DeadReason::should_retry_said_no);
    auto timeout = decide(failed(), 2, 2, true);
    CHECK(timeout.reason == store::DeadReason::timed_out);
    // a timeout overrides what the run said: a permanent result that came too late is retried as a timeout
    CHECK(decide({true, JH_PERMANENT, 0, "x"}, 1, 2, true).kind == Decision::Kind::retry);
}

TEST_CASE("without dead_letter a finished failure is dropped, a shutdown releases a run that did not succeed") {
    auto s = settings();
    s.dead_letter = false;
    auto dropped = decide(failed(), 3, 3, false, false, s);
    CHECK(dropped.kind == Decision::Kind::dropped);
    CHECK(dropped.reason == store::DeadReason::retries_exhausted);
    auto released = decide(failed("cancelled"), 3, 3, false, true);
    CHECK(released.kind == Decision::Kind::released);
    CHECK(released.error == "cancelled");
    CHECK(decide(ok(), 1, 3, false, true).kind == Decision::Kind::succeeded);
}

TEST_CASE("backoff is capped at max and scaled by the jitter's draw") {
    auto s = settings();
    CHECK(executor::backoff_delay(s, 10, middle) == 1s);
    s.backoff.jitter = 0.5;
    CHECK(executor::backoff_delay(s, 1, [](double lo, double) { return lo; }) == 50ms);
    CHECK(executor::backoff_delay(s, 1, [](double, double hi) { return hi; }) == 150ms);
}
