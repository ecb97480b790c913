// Periodic job types: one timer per type on the host's io_context, by interval or cron (UTC). Each tick asks the
// executor to queue a run; the executor coalesces a tick whose previous run is still pending or running. The next
// tick is always planned from now, so a long pause (a suspended machine, a blocked host) yields one run, not one per
// missed interval. All calls must come from the io_context's thread (or before it runs).
#pragma once

#include "registry/job_settings.hpp"
#include "scheduler/cron.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace jobhost::scheduler {

class Scheduler {
public:
    // `tick` queues one run of a type (Executor::tick).
    Scheduler(boost::asio::io_context& io, std::function<void(const std::string&)> tick);

    // Starts or replaces the schedule of a type; a type that is not periodic or not enabled has none.
    // `at_start` honours run_on_start (true at start-up, false on reload).
    void set(const std::string& type, const registry::JobSettings& settings, bool at_start);

    // Cancels every timer.
    void stop();

    // The next planned tick of a type, for display and tests.
    std::optional<std::chrono::system_clock::time_point> next_tick(const std::string& type) const;

private:
    struct Entry {
        std::string type;
        registry::JobSettings settings;
        std::optional<CronExpression> cron;
        std::unique_ptr<boost::asio::steady_timer> timer;
        std::chrono::system_clock::time_point next;
    };
    void arm(const std::shared_ptr<Entry>& e);

    boost::asio::io_context& io_;
    std::function<void(const std::string&)> tick_;
    std::map<std::string, std::shared_ptr<Entry>> entries_;
    bool stopped_ = false;
};

} // namespace jobhost::scheduler
