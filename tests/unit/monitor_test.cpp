// The monitor: figures from real runs of fixture plugins, and each alert rule raised and cleared.
#include "monitor/monitor.hpp"

#include "support/harness.hpp"

#include <doctest/doctest.h>

using namespace jobhost;
using namespace std::chrono_literals;
using executor::JobEventKind;
using jobhost::test::Harness;
using store::Clock;

namespace {

void feed(monitor::Monitor& m, JobEventKind kind, const char* type, store::JobId id = 1, core::Duration d = 0ms) {
    m.on_event(executor::JobEvent{kind, type, id, 1, d, kind == JobEventKind::failed ? "boom" : "", Clock::now()});
}

bool has_alert(const monitor::Monitor& m, const std::string& rule, std::string* message = nullptr) {
    for (const auto& a : m.alerts())
        if (a.rule == rule) {
            if (message) *message = a.message;
            return true;
        }
    return false;
}

monitor::HealthInputs inputs(std::map<std::string, registry::JobSettings> types = {}) {
    monitor::HealthInputs in;
    in.now = Clock::now();
    in.started = in.now;
    in.types = std::move(types);
    return in;
}

// The same inputs, evaluated `d` later (a fake clock: the monitor reads time only from its inputs and events).
monitor::HealthInputs after(monitor::HealthInputs in, core::Duration d) {
    in.now += d;
    return in;
}

void feed_at(monitor::Monitor& m, JobEventKind kind, const char* type, store::TimePoint at, core::Duration d = 0ms) {
    m.on_event(executor::JobEvent{kind, type, 1, 1, d, kind == JobEventKind::failed ? "boom" : "", at});
}

} // namespace

TEST_CASE("timings, last outcomes and events come from real runs of fixture plugins") {
    monitor::Monitor mon;
    executor::ExecutorOptions o;
    o.observer = &mon;
    o.stuck_grace = 100ms;
    {
        Harness h(Harness::Engine::memory, {"fx_good.so"}, {}, o);
        REQUIRE(h.enqueue("fx.stuck", "{\"ms\":600}").ok); // timeout 100ms, stuck after 200ms, returns at 600ms
        for (int i = 0; i < 3; ++i) REQUIRE(h.enqueue("fx.slow", "{\"ms\":120}").ok);
        auto fail = h.enqueue("fx.fail");
        REQUIRE(fail.ok);
        REQUIRE(h.enqueue("fx.ok", "1").ok);
        REQUIRE(h.ex().wait_idle(10s));

        auto slow = mon.stats("fx.slow");
        CHECK(slow.run.count == 3);
        CHECK(slow.run.min >= 120);
        CHECK(slow.run.p50 >= 120);
        CHECK(slow.run.max < 2000);
        CHECK(slow.wait.count == 3);
        CHECK(slow.last_success.has_value());
        CHECK_FALSE(slow.last_failure.has_value());
        std::uint64_t in_hist = 0;
        for (auto c : slow.run_hist.counts) in_hist += c;
        CHECK(in_hist == 3);
        CHECK(slow.run_hist.sum >= 0.36);

        auto f = mon.stats("fx.fail");
        CHECK(f.recent_runs == 2);
        CHECK(f.recent_failures == 2);
        CHECK(f.recent_dead == 1);
        CHECK(f.last_error == "failed on attempt 2");
        CHECK_FALSE(f.last_success.has_value());

        // the history of one job, oldest first
        auto events = mon.events({std::nullopt, fail.id, std::nullopt, 100});
        std::vector<std::string> kinds;
        for (auto it = events.rbegin(); it != events.rend(); ++it)
            kinds.emplace_back(executor::event_kind_name(it->kind));
        CHECK(kinds == std::vector<std::string>{"enqueued", "started", "failed", "retried", "started", "failed",
                                                "dead_lettered"});
        CHECK(mon.events({std::string("fx.ok"), std::nullopt, JobEventKind::succeeded, 10}).size() == 1);
        CHECK(mon.jobs_per_second(Clock::now()) > 0);

        // the stuck run was reported while it ran, and is no longer stuck once it returned
        auto stuck_events = mon.events({std::string("fx.stuck"), std::nullopt, JobEventKind::stuck, 10});
        REQUIRE(stuck_events.size() == 1);
        CHECK(stuck_events.front().attempt == 1); // the attempt it was stuck on (it said 0)
        CHECK(mon.events({std::string("fx.stuck"), std::nullopt, JobEventKind::timed_out, 10}).size() == 1);
        auto stuck = mon.stats("fx.stuck");
        CHECK(stuck.stuck.empty());
        CHECK(stuck.run.min >= 600);
        CHECK(stuck.last_error == "timed out after 100ms");
    }
}

TEST_CASE("the event history is bounded") {
    monitor::MonitorOptions o;
    o.events = 5;
    monitor::Monitor mon(o);
    for (store::JobId i = 1; i <= 20; ++i) feed(mon, JobEventKind::enqueued, "a", i);
    auto e = mon.events({});
    REQUIRE(e.size() == 5);
    CHECK(e.front().id == 20);
    CHECK(e.back().id == 16);
}

TEST_CASE("the failure-rate alert is raised once while it holds and cleared once when it stops") {
    monitor::MonitorOptions o;
    o.failure_window = 10;
    o.failure_min_runs = 4;
    monitor::Monitor mon(o);
    registry::JobSettings s;
    for (int i = 0; i < 4; ++i) feed(mon, JobEventKind::failed, "a");
    CHECK(mon.evaluate(inputs({{"a", s}})) == monitor::Health::degraded);
    std::string msg;
    REQUIRE(has_alert(mon, "failure_rate:a", &msg));
    CHECK(msg == "job type a: 4 of its last 4 runs failed (100%), above the threshold 50% ([monitor] failure_rate)");
    mon.evaluate(inputs({{"a", s}}));
    CHECK(mon.alerts_raised()["failure_rate"] == 1); // raised once, not once per evaluation
    for (int i = 0; i < 10; ++i) feed(mon, JobEventKind::succeeded, "a");
    CHECK(mon.evaluate(inputs({{"a", s}})) == monitor::Health::degraded); // held for clear_after (30s) more
    CHECK(mon.evaluate(after(inputs({{"a", s}}), 31s)) == monitor::Health::healthy);
    CHECK_FALSE(has_alert(mon, "failure_rate:a"));
}

TEST_CASE("the dead-letter-rate alert is raised and cleared") {
    monitor::MonitorOptions o;
    o.failure_window = 10;
    o.failure_min_runs = 2;
    o.failure_rate = 1.0; // only the dead-letter rule here
    monitor::Monitor mon(o);
    registry::JobSettings s;
    feed(mon, JobEventKind::dead_lettered, "a");
    feed(mon, JobEventKind::dead_lettered, "a");
    mon.evaluate(inputs({{"a", s}}));
    std::string msg;
    REQUIRE(has_alert(mon, "dead_letter_rate:a", &msg));
    CHECK(msg.find("2 of its last 2 finished jobs were dead-lettered (100%), above the threshold 20%") !=
          std::string::npos);
    for (int i = 0; i < 10; ++i) feed(mon, JobEventKind::succeeded, "a");
    mon.evaluate(after(inputs({{"a", s}}), 31s));
    CHECK_FALSE(has_alert(mon, "dead_letter_rate:a"));
}

TEST_CASE("the stuck alert holds while a stuck run has not returned") {
    monitor::Monitor mon;
    registry::JobSettings s;
    feed(mon, JobEventKind::stuck, "a", 7);
    mon.evaluate(inputs({{"a", s}}));
    std::string msg;
    REQUIRE(has_alert(mon, "stuck:a", &msg));
    CHECK(msg == "job type a: job 7 is stuck, running past its timeout and ignoring cancellation");
    feed(mon, JobEventKind::failed, "a", 7);
    mon.evaluate(after(inputs({{"a", s}}), 31s));
    CHECK_FALSE(has_alert(mon, "stuck:a"));
}

TEST_CASE("a periodic type that has not run for late_factor periods is late, until it runs") {
    monitor::MonitorOptions o;
    o.clear_after = 0ms; // this rule alone: no hysteresis
    monitor::Monitor mon(o);
    registry::JobSettings s;
    s.interval = 1s;
    auto in = inputs({{"tick", s}});
    in.started = in.now - 10s;
    mon.evaluate(in);
    std::string msg;
    REQUIRE(has_alert(mon, "schedule_late:tick", &msg));
    CHECK(msg.find("job type tick has not run for 10s, more than 3s") == 0);
    feed(mon, JobEventKind::started, "tick");
    mon.evaluate(in);
    CHECK_FALSE(has_alert(mon, "schedule_late:tick"));
    s.enabled = false; // a disabled type is never late
    auto off = inputs({{"tick", s}});
    off.started = off.now - 1h;
    monitor::Monitor fresh;
    fresh.evaluate(off);
    CHECK(fresh.alerts().empty());
}

TEST_CASE("a backlog older than backlog_age raises an alert that clears when it drains") {
    monitor::Monitor mon;
    registry::JobSettings s;
    auto in = inputs({{"a", s}});
    store::TypeCounts c;
    c.ready = 12;
    c.oldest_ready = in.now - 10min;
    in.counts["a"] = c;
    mon.evaluate(in);
    std::string msg;
    REQUIRE(has_alert(mon, "backlog_age:a", &msg));
    CHECK(msg == "job type a: the oldest ready job has waited 10m, longer than 5m ([monitor] backlog_age); 12 ready");
    in.counts["a"].oldest_ready = in.now - 1s;
    mon.evaluate(after(in, 31s));
    CHECK_FALSE(has_alert(mon, "backlog_age:a"));
}

TEST_CASE("a store that does not answer makes the host unhealthy until it answers again") {
    monitor::Monitor mon;
    auto in = inputs();
    in.store_error = "database is locked";
    CHECK(mon.evaluate(in) == monitor::Health::unhealthy);
    std::string msg;
    REQUIRE(has_alert(mon, "store", &msg));
    CHECK(msg == "the store did not answer: database is locked");
    in.store_error.reset();
    CHECK(mon.evaluate(after(in, 31s)) == monitor::Health::healthy);
    CHECK(mon.alerts().empty());
    CHECK(mon.alerts_raised()["store"] == 1);
}

TEST_CASE("a schedule seen alive without a run here is not late: a tick run by another host, or a reload") {
    registry::JobSettings s;
    s.interval = std::chrono::seconds(1);
    auto in = inputs({{"tick", s}});
    in.started = in.now - 1h;
    monitor::MonitorOptions o;
    o.clear_after = 0ms;     // this rule alone: no hysteresis
    monitor::Monitor mon(o); // no run for an hour (say the interval was 10m before a reload shrank it)
    mon.evaluate(in);
    REQUIRE(has_alert(mon, "schedule_late:tick"));
    mon.on_schedule("tick", in.now - std::chrono::milliseconds(500)); // the reload, or another host's tick
    mon.evaluate(in);
    CHECK_FALSE(has_alert(mon, "schedule_late:tick"));
}

TEST_CASE("rate windows are bounded by time: a type that stopped running stops counting against itself") {
    monitor::MonitorOptions o;
    o.failure_min_runs = 2;
    o.window = 60s;
    o.clear_after = 10s;
    monitor::Monitor mon(o);
    registry::JobSettings s;
    auto t0 = Clock::now();
    feed_at(mon, JobEventKind::failed, "a", t0);
    feed_at(mon, JobEventKind::failed, "a", t0);
    auto in = inputs({{"a", s}});
    in.now = t0;
    REQUIRE(mon.evaluate(in) == monitor::Health::degraded);
    REQUIRE(has_alert(mon, "failure_rate:a"));
    // no run since: inside the window it holds; once its runs are older than the window it no longer holds, and it
    // clears clear_after after it last held
    CHECK(mon.evaluate(after(in, 59s)) == monitor::Health::degraded);
    CHECK(mon.evaluate(after(in, 61s)) == monitor::Health::degraded);
    CHECK(mon.evaluate(after(in, 69s)) == monitor::Health::healthy);
    CHECK_FALSE(has_alert(mon, "failure_rate:a"));
    CHECK(mon.stats("a").recent_runs == 0);
}

TEST_CASE("an alert whose figure hovers around its threshold is raised once and clears only after clear_after") {
    monitor::MonitorOptions o;
    o.failure_window = 4;
    o.failure_min_runs = 4;
    o.clear_after = 5s;
    monitor::Monitor mon(o);
    registry::JobSettings s;
    auto in = inputs({{"a", s}});
    auto t = in.now;
    auto at = [&](core::Duration d) { return after(in, d); };
    for (int i = 0; i < 3; ++i) feed_at(mon, JobEventKind::failed, "a", t);
    feed_at(mon, JobEventKind::succeeded, "a", t); // 3 of 4: above 50%
    mon.evaluate(at(0s));
    REQUIRE(has_alert(mon, "failure_rate:a"));
    for (int second = 1; second <= 8; ++second) {      // below, above, below...: one evaluation a second
        for (int k = 0; k < (second % 2 ? 2 : 3); ++k) // 2 of 4 failed (not above 50%), then 3 of 4 (above)
            feed_at(mon, second % 2 ? JobEventKind::succeeded : JobEventKind::failed, "a", t);
        mon.evaluate(at(core::Duration(second * 1000)));
        CHECK(has_alert(mon, "failure_rate:a"));
    }
    CHECK(mon.alerts_raised()["failure_rate"] == 1);
    for (int i = 0; i < 4; ++i) feed_at(mon, JobEventKind::succeeded, "a", t);
    mon.evaluate(at(12s)); // below since 9s, last held at 8s: 4s < clear_after
    CHECK(has_alert(mon, "failure_rate:a"));
    mon.evaluate(at(14s));
    CHECK_FALSE(has_alert(mon, "failure_rate:a"));
    CHECK(mon.alerts_raised()["failure_rate"] == 1);
}

TEST_CASE("the run_time alert compares a type's mean or p95 run with its own threshold or the monitor's") {
    monitor::MonitorOptions o;
    o.failure_min_runs = 3;
    o.max_run_time = 300ms;
    monitor::Monitor mon(o);
    registry::JobSettings slow, allowed;
    allowed.max_run_time = 1s; // [jobs.allowed] max_run_time
    auto t = Clock::now();
    for (int i = 0; i < 4; ++i) {
        feed_at(mon, JobEventKind::succeeded, "slow", t, 400ms);
        feed_at(mon, JobEventKind::succeeded, "allowed", t, 400ms);
    }
    auto in = inputs({{"slow", slow}, {"allowed", allowed}});
    in.now = t;
    mon.evaluate(in);
    std::string msg;
    REQUIRE(has_alert(mon, "run_time:slow", &msg));
    CHECK(msg ==
          "job type slow: the mean run of its last 4 runs took 400ms, longer than 300ms ([monitor] max_run_time)");
    CHECK_FALSE(has_alert(mon, "run_time:allowed"));

    // p95: one slow run in twenty moves the p95, not the mean
    o.run_time_p95 = true;
    o.max_run_time = 1s;
    monitor::Monitor p95(o);
    for (int i = 0; i < 19; ++i) feed_at(p95, JobEventKind::succeeded, "x", t, 100ms);
    feed_at(p95, JobEventKind::succeeded, "x", t, 5s);
    auto px = inputs({{"x", slow}});
    px.now = t;
    p95.evaluate(px);
    REQUIRE(has_alert(p95, "run_time:x", &msg));
    CHECK(msg.find("the p95 run of its last 20 runs took 5s") != std::string::npos);
}

TEST_CASE("enough alerts at once make the host unhealthy, not only a store failure") {
    monitor::MonitorOptions o;
    o.unhealthy_at = 3;
    monitor::Monitor mon(o);
    registry::JobSettings s;
    auto in = inputs({{"a", s}, {"b", s}, {"c", s}});
    for (const char* type : {"a", "b"}) {
        store::TypeCounts c;
        c.ready = 1;
        c.oldest_ready = in.now - 10min;
        in.counts[type] = c;
    }
    CHECK(mon.evaluate(in) == monitor::Health::degraded); // two problems
    in.counts["c"] = in.counts["a"];
    CHECK(mon.evaluate(in) == monitor::Health::unhealthy); // three
    CHECK(mon.alerts().size() == 3);
}
