// The executor: dispatches ready jobs to a pool of worker threads that run plugin code, in priority order across
// types and never above a type's concurrency, and turns each run's result into an outcome (done, retry at t, dead).
//
// Why one dispatch lock instead of a strand per type: the rule "a free worker takes the highest-priority ready job
// whose type has a free slot" needs a view across all types at once. Strands would serialise each lane but still
// need a global decision; a single short critical section (claim, count, account) gives that view directly, does
// no polling, and measured faster than posting between strands (see tools/bench). Timers (retries, delayed jobs,
// timeouts) run on the host's io_context.
#pragma once

#include "executor/metrics.hpp"
#include "executor/observer.hpp"
#include "registry/registry.hpp"
#include "store/store.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace jobhost::executor {

using core::Duration;
using store::JobId;

struct ExecutorOptions {
    std::size_t workers = 2;
    Duration stuck_grace{5'000}; // a run still going this long after its timeout is reported as stuck
    Duration aging{0};           // a waiting job gains one priority level per `aging`; 0: off
    Duration lease{30'000};      // lease length asked of the store (an engine may keep its own); renewed while it runs
    std::string owner = "jobhost";
    ExecutorObserver* observer = nullptr; // told about every job event; must outlive the executor
};

struct EnqueueRequest {
    std::string type;
    std::string payload = "null";               // JSON text
    std::optional<registry::Priority> priority; // default: the type's
    Duration delay{0};
    std::optional<store::TimePoint> run_at;
    std::string unique_key;
    bool from_schedule = false;
    std::optional<store::TimePoint> tick; // a schedule's tick (with from_schedule): queued once across hosts
    bool from_job = false; // queued by a running job (Context::enqueue): accepted while the host drains too
};

struct EnqueueResult {
    bool ok = false;
    JobId id = 0;            // the new job; on a unique-key conflict, the existing one
    bool duplicate = false;  // a job holds the unique key (for a schedule's tick: the previous run is pending)
    bool tick_taken = false; // a schedule's tick was queued already, by this host or another one
    std::string error;       // why nothing was queued
};

class RunContext;
class RunningJob;

// Why `payload` is not one valid JSON text ("... at byte N"), or nullopt when it is.
std::optional<std::string> payload_error(std::string_view payload);

class Executor {
public:
    // The registry and store must outlive the executor. `io` runs the timers; it must be run by the caller.
    Executor(boost::asio::io_context& io, const registry::Registry& registry, store::JobStore& store,
             ExecutorOptions options);
    ~Executor();
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    // Validates and queues one job. Thread-safe; callable from plugin code (Context::enqueue).
    EnqueueResult enqueue(const EnqueueRequest& request);
    // The same for many jobs, with one store call and one lock: one result per request, in order.
    std::vector<EnqueueResult> enqueue(std::span<const EnqueueRequest> requests);

    // A periodic tick planned for `tick_at`: queues a run unless a host sharing the store queued this tick already,
    // or a run from the schedule is still pending or running (read from the store), in which case the tick is
    // coalesced and counted. Returns true when a job was queued.
    bool tick(const std::string& type, store::TimePoint tick_at);

    // Stops intake and dispatch, lets running jobs finish within `grace`, then cancels the rest and gives them
    // `stuck_grace` more; jobs cancelled this way go back to the store to be retried. Returns how many runs still
    // have not returned (their plugins must then not be unloaded).
    std::size_t shutdown(Duration grace);

    // Applies new effective settings of a type (SIGHUP reload): priority, concurrency, retries, backoff, timeout,
    // enabled. Jobs already queued keep the priority they were queued with.
    void update_settings(const std::string& type, const registry::JobSettings& settings);

    // Serves `type` with `task` from now on (a plugin library added or replaced while running). A new type gets a
    // lane. A type whose current version has runs going on stops taking new jobs, lets those runs finish on the old
    // code, and swaps when the last one ends; its queued jobs stay where they are. Callable from any thread.
    void set_task(const std::string& type, std::shared_ptr<runner::Runner> task, const registry::JobSettings& settings);
    // Stops serving `type` (its library was removed): no new runs; running ones finish; queued jobs stay in the
    // store, and enqueues are refused with `reason`.
    void remove_task(const std::string& type, const std::string& reason);

    TypeMetrics metrics(const std::string& type) const;
    // The effective settings a type runs with now (they change on reload); null for an unknown type.
    std::shared_ptr<const registry::JobSettings> settings(std::string_view type) const;
    bool accepting() const;
    std::map<std::string, TypeMetrics> all_metrics() const;

    // Looks for claimable work in every lane (jobs the store holds from before, or that another process queued)
    // and dispatches what it finds. The store's wakeup calls this; call it once after construction.
    void poke();

    // For tests and benchmarks: waits until nothing is ready, scheduled or running, or the limit passes.
    bool wait_idle(Duration limit);
    std::size_t running_runs() const;

private:
    friend class RunContext;
    friend class RunningJob;
    struct Lane;

    struct Claimed {
        Lane* lane = nullptr;
        std::shared_ptr<const registry::JobSettings> settings; // as they were when claimed
        std::shared_ptr<runner::Runner> task;                  // the version claimed for
        std::vector<store::JobRecord> jobs;
    };
    Claimed claim_locked();
    void pump_locked();
    void worker(Claimed claimed);
    // Runs one claim through the plugin, records its outcomes, and returns holding mutex_ with the accounting done.
    std::unique_lock<std::mutex> run_batch(std::vector<store::JobRecord>& batch, Lane& lane, runner::Runner& task,
                                           const registry::JobSettings& settings);
    void swap_in_locked(Lane& lane);
    void arm_due_timer();
    void arm_backoff_timer_locked(std::chrono::steady_clock::time_point at);
    Lane* lane(std::string_view type);
    void emit(JobEventKind kind, std::string_view type, store::JobId id, std::uint32_t attempt = 0,
              Duration duration = Duration(0), std::string_view error = {}) const noexcept;

    boost::asio::io_context& io_;
    store::JobStore& store_;
    ExecutorOptions options_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;                                 // a run finished or the executor stopped
    std::map<std::string, std::unique_ptr<Lane>, std::less<>> lanes_; // added to by set_task, never removed
    std::vector<Lane*> lane_list_;                                    // the same lanes, for the dispatch scan
    store::ClaimRequest claim_request_;                               // reused by claim_locked
    std::vector<Lane*> claim_lanes_;                                  // the lane of each claim_request_ entry
    std::set<std::string> type_names_;
    std::size_t idle_workers_;
    std::size_t running_runs_ = 0;
    bool accepting_ = true;
    bool dispatching_ = true;
    std::atomic<bool> shutting_down_{false};

    boost::asio::steady_timer due_timer_;
    boost::asio::steady_timer backoff_timer_; // wakes lanes whose runner backs off (process workers lost)
    bool backoff_armed_ = false;
    std::chrono::steady_clock::time_point backoff_at_{};
    boost::asio::thread_pool pool_;
};

} // namespace jobhost::executor
