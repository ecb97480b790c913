// The scheduler: ticks at points every host computes alike, each fired once, whatever the clock does.
#include "scheduler/scheduler.hpp"

#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>

#include <set>

using namespace jobhost;
using namespace std::chrono_literals;
using scheduler::Scheduler;
using scheduler::SystemTime;
using Clock = std::chrono::system_clock;

namespace {

registry::JobSettings periodic(std::chrono::milliseconds interval, std::string cron = {}) {
    registry::JobSettings s;
    s.name = "p";
    s.enabled = true;
    s.interval = interval;
    s.cron = std::move(cron);
    s.run_on_start = false;
    return s;
}

SystemTime floor_to(SystemTime t, std::chrono::milliseconds step) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    return SystemTime(std::chrono::milliseconds(ms - ms % step.count()));
}

} // namespace

TEST_CASE("the next tick is strictly after the time given: cron minutes, and interval multiples since the epoch") {
    auto cron = scheduler::CronExpression::parse("* * * * *");
    REQUIRE(cron);
    auto minute = floor_to(Clock::now(), 60s) + 60s;
    CHECK(scheduler::tick_after(*cron, 0ms, minute - 1ms) == minute); // at :59.999 the tick is the next minute
    CHECK(scheduler::tick_after(*cron, 0ms, minute) == minute + 60s); // once fired, never the same minute again
    auto t = floor_to(Clock::now(), 10s);
    CHECK(scheduler::tick_after(std::nullopt, 10s, t) == t + 10s);
    CHECK(scheduler::tick_after(std::nullopt, 10s, t + 3s) == t + 10s);
    CHECK(scheduler::tick_at_or_before(std::nullopt, 10s, t + 3s) == t);
}

TEST_CASE("a cron tick fires exactly once with a clock that reads early, and once with one that reads late") {
    for (auto skew : {-9ms, 0ms, 25ms}) {
        CAPTURE(skew.count());
        // A clock 150ms before a minute boundary, read with 10ms granularity (early by up to 10ms) plus a skew.
        auto real0 = Clock::now();
        auto fake0 = floor_to(real0, 60s) + 60s - 150ms;
        auto offset = fake0 - real0;
        auto now = [=] { return floor_to(Clock::now() + offset, 10ms) + skew; };
        boost::asio::io_context io;
        std::vector<SystemTime> ticks;
        Scheduler s(
            io, [&](const std::string&, SystemTime at) { ticks.push_back(at); }, now);
        s.set("p", periodic(0ms, "* * * * *"), true);
        io.run_for(600ms);
        s.stop();
        REQUIRE(ticks.size() == 1);
        CHECK(ticks[0] == floor_to(fake0, 60s) + 60s);
    }
}

TEST_CASE("interval ticks fire once each, on the epoch's multiples, with a clock that reads early") {
    auto now = [] { return floor_to(Clock::now(), 10ms) - 3ms; };
    boost::asio::io_context io;
    std::vector<SystemTime> ticks;
    Scheduler s(
        io, [&](const std::string&, SystemTime at) { ticks.push_back(at); }, now);
    s.set("p", periodic(50ms), true);
    io.run_for(530ms);
    s.stop();
    CHECK(ticks.size() >= 8);
    CHECK(std::set<SystemTime>(ticks.begin(), ticks.end()).size() == ticks.size()); // no tick twice
    for (std::size_t i = 0; i < ticks.size(); ++i) {
        CHECK(ticks[i].time_since_epoch() % 50ms == SystemTime::duration(0));
        if (i > 0) CHECK(ticks[i] - ticks[i - 1] >= 50ms);
    }
}

TEST_CASE("a reload keeps an unchanged schedule's timer and phase, a changed interval keeps the epoch's phase") {
    boost::asio::io_context io;
    Scheduler s(io, [](const std::string&, SystemTime) {});
    s.set("p", periodic(10s), true);
    auto next = s.next_tick("p");
    REQUIRE(next);
    auto same = periodic(10s);
    same.priority = registry::Priority::high; // a change that does not touch the schedule
    s.set("p", same, false);
    CHECK(s.next_tick("p") == next);
    s.set("p", periodic(4s), false);
    REQUIRE(s.next_tick("p"));
    CHECK(s.next_tick("p")->time_since_epoch() % 4s == SystemTime::duration(0));
    CHECK(*s.next_tick("p") - Clock::now() <= 4s);
    s.stop();
}
