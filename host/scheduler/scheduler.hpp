// Periodic job types: one timer per type on the host's io_context, by interval or cron (UTC).
//
// Ticks are points in time that every host computes alike: cron times, and multiples of the interval counted from
// the Unix epoch. Each tick asks the executor to queue one run for that tick; the store queues a tick once across
// every host that shares it, and coalesces a tick whose previous run is still pending or running. A timer that
// wakes early waits again (no tick fires twice, or before its time); one that wakes late fires the tick it was
// planned for and then plans from now, so a long pause (a suspended machine, a blocked host) yields one run, not one
// per missed interval. A reload keeps the timer of a schedule whose settings did not change, and the phase of an
// interval is the epoch's, so a changed interval keeps it too. All calls must come from the io_context's thread
// (or before it runs).
#pragma once

#include "registry/job_settings.hpp"
#include "scheduler/cron.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace jobhost::scheduler {

using SystemTime = std::chrono::system_clock::time_point;

// The first tick of a schedule strictly after `after`: the next cron time, or the next multiple of `interval` since
// the epoch. nullopt: a cron that never fires again. Pure, for tests.
std::optional<SystemTime> tick_after(const std::optional<CronExpression>& cron, std::chrono::milliseconds interval,
                                     SystemTime after);
// The tick at or before `now` (for run_on_start): the last multiple of the interval, or `now` to the minute for cron.
SystemTime tick_at_or_before(const std::optional<CronExpression>& cron, std::chrono::milliseconds interval,
                             SystemTime now);

class Scheduler {
public:
    // `tick(type, tick_at)` queues one run of a type for that tick (Executor::tick). `now` is the clock (a seam
    // for tests); the timers themselves run on the io_context's steady clock.
    Scheduler(
        boost::asio::io_context& io, std::function<void(const std::string&, SystemTime)> tick,
        std::function<SystemTime()> now = [] { return std::chrono::system_clock::now(); });

    // Starts or replaces the schedule of a type; a type that is not periodic or not enabled has none. An unchanged
    // schedule keeps its timer. `at_start` honours run_on_start (true at start-up, false on reload).
    void set(const std::string& type, const registry::JobSettings& settings, bool at_start);

    // Cancels every timer.
    void stop();

    // The next planned tick of a type, for display and tests.
    std::optional<SystemTime> next_tick(const std::string& type) const;

private:
    struct Entry {
        std::string type;
        registry::JobSettings settings;
        std::optional<CronExpression> cron;
        std::unique_ptr<boost::asio::steady_timer> timer;
        SystemTime next;    // the planned tick
        SystemTime fire_at; // next, plus this tick's jitter
    };
    void plan(const std::shared_ptr<Entry>& e, SystemTime after);
    void arm(const std::shared_ptr<Entry>& e);

    boost::asio::io_context& io_;
    std::function<void(const std::string&, SystemTime)> tick_;
    std::function<SystemTime()> now_;
    std::map<std::string, std::shared_ptr<Entry>> entries_;
    bool stopped_ = false;
};

} // namespace jobhost::scheduler
