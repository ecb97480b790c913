// The monitor observes the executor (it never steers it): per-type timings and last outcomes, a bounded history of
// job events, health with its reasons, and alerts that are raised once when a rule starts to hold and cleared once
// when it stops. Thread-safe: events arrive on worker threads, reads come from the HTTP server and the CLI.
#pragma once

#include "executor/metrics.hpp"
#include "executor/observer.hpp"
#include "registry/job_settings.hpp"
#include "store/store.hpp"

#include <array>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace jobhost::monitor {

using core::Duration;
using store::TimePoint;

// Thresholds, all in [monitor] with these defaults.
struct MonitorOptions {
    std::size_t events = 1000;        // job events kept for /api/v1/events
    double failure_rate = 0.5;        // a type whose failed share of its recent runs is above this is degraded
    std::size_t failure_window = 20;  // how many recent runs that share is taken over
    std::size_t failure_min_runs = 5; // ... once the type has at least this many
    double late_factor = 3.0;         // a periodic type that has not run for this many periods is late
    Duration backlog_age{300'000};    // a ready job waiting longer than this is a backlog
    double dead_letter_rate = 0.2;    // a type whose dead-lettered share of its recent finished jobs is above this
    Duration store_timeout{1'000};    // a store that takes longer than this to answer is not answering
    // The rate and run-time rules look at a type's runs of the last `window`, and at most its last failure_window
    // runs: a type that stopped running stops counting against itself.
    Duration window{300'000};
    Duration clear_after{30'000};   // an alert clears once its rule has not held for this long (hysteresis)
    Duration max_run_time{300'000}; // run_time rule: the mean (or p95) run of a type above this; 0: off
    bool run_time_p95 = false;      // the run_time rule looks at the p95 rather than the mean
    std::size_t unhealthy_at = 3;   // this many alerts at once make the host unhealthy
};

// Millisecond statistics of recent samples (the last 1024).
struct DurationStats {
    std::size_t count = 0;
    double mean = 0, min = 0, max = 0, p50 = 0, p95 = 0, p99 = 0;
};

// Cumulative histogram for Prometheus, in seconds.
inline constexpr std::array<double, 12> kBuckets{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 60, 300};
struct Histogram {
    std::array<std::uint64_t, kBuckets.size() + 1> counts{}; // per bucket, last = +Inf; not cumulative
    double sum = 0;
};

struct TypeStats {
    DurationStats wait, run;
    Histogram wait_hist, run_hist;
    std::optional<TimePoint> last_run, last_success, last_failure;
    std::string last_error;
    std::size_t recent_runs = 0, recent_failures = 0, recent_finished = 0, recent_dead = 0;
    std::set<store::JobId> stuck;
};

struct Event {
    std::uint64_t seq = 0;
    TimePoint at;
    executor::JobEventKind kind;
    std::string type;
    store::JobId id = 0;
    std::uint32_t attempt = 0;
    Duration duration{0};
    std::string error;
};

struct EventFilter {
    std::optional<std::string> type;
    std::optional<store::JobId> id;
    std::optional<executor::JobEventKind> kind;
    std::size_t limit = 100;
};

enum class Health { healthy, degraded, unhealthy };
std::string_view health_name(Health h);

struct Alert {
    std::string rule;    // "failure_rate:shell", "store", ...
    std::string message; // names the type, the figure and the threshold
    TimePoint since;
    bool critical = false; // makes the host unhealthy rather than degraded
    TimePoint last_held;   // the last evaluation at which its rule held; it clears clear_after later
};

// What the health rules look at, gathered by the caller.
struct HealthInputs {
    TimePoint now;
    TimePoint started;                                  // host start, for periodic types that never ran
    std::map<std::string, registry::JobSettings> types; // effective settings of usable types
    std::map<std::string, store::TypeCounts> counts;
    std::optional<std::string> store_error; // the store did not answer, and why
};

class Monitor final : public executor::ExecutorObserver {
public:
    explicit Monitor(MonitorOptions options = {});

    void on_event(const executor::JobEvent& event) noexcept override;
    void on_schedule(std::string_view type, TimePoint at) noexcept override;

    TypeStats stats(const std::string& type) const;
    std::vector<Event> events(const EventFilter& filter) const;
    // Finished jobs per second over the last minute.
    double jobs_per_second(TimePoint now) const;

    // Applies the rules: raises and clears alerts (logged, counted) and returns the health.
    Health evaluate(const HealthInputs& inputs);
    Health health() const;
    std::vector<Alert> alerts() const;
    std::map<std::string, std::uint64_t> alerts_raised() const; // per rule kind ("failure_rate", ...)

    const MonitorOptions& options() const noexcept { return options_; }

private:
    struct Samples {
        std::deque<double> wait_ms, run_ms;
        Histogram wait_hist, run_hist;
        struct Mark {
            TimePoint at;
            bool yes = false;
        };
        struct Timed {
            TimePoint at;
            double ms = 0;
        };
        std::deque<Mark> recent_failed;  // per run: did it fail; newest last
        std::deque<Mark> recent_dead;    // per finished job: was it dead-lettered; newest last
        std::deque<Timed> recent_run_ms; // per run, for the run_time rule
        std::optional<TimePoint> last_run, last_success, last_failure;
        std::optional<TimePoint> schedule_seen; // see ExecutorObserver::on_schedule
        std::string last_error;
        std::set<store::JobId> stuck;
    };
    static DurationStats summarize(const std::deque<double>& samples);
    void trim(Samples& s, TimePoint now) const; // drops runs older than the window

    MonitorOptions options_;
    mutable std::mutex mutex_;
    std::map<std::string, Samples, std::less<>> types_;
    std::deque<Event> events_;
    std::uint64_t next_seq_ = 1;
    std::array<std::uint64_t, 60> finished_per_second_{};
    std::int64_t finished_second_ = 0;
    std::map<std::string, Alert> alerts_;
    std::map<std::string, std::uint64_t> raised_;
    Health health_ = Health::healthy;
};

} // namespace jobhost::monitor
