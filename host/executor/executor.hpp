// The executor: runs ready jobs on a pool of `workers` threads (the slots), in priority order across job types and
// never above a type's concurrency, through each type's runner (thread or process), and turns each run's result
// into an outcome (done, retry at t, dead).
//
// Lanes. Each job type is a lane. What changes rarely and must change together (its settings, its runner, a new
// version waiting to be swapped in, why it is unusable) is owned by the lane's strand, a strand on the host's
// io_context: set_task, remove_task and update_settings run there, one at a time per lane, never blocked by plugin
// code (the io thread never runs any). The strand publishes what the hot path needs as atomics on the lane
// (eligible, swapping, concurrency, batch) and an immutable LaneView (settings + runner), swapped under a per-lane
// mutex held only for the pointer copy. Everything a job does on its way through touches only its own lane's
// atomics: lanes never contend with each other, and there is no executor-wide lock.
//
// How a job flows.
//   1. enqueue: validated, written to the store (one call for a whole span), counted on its lane, which is marked as
//      having work (work_gen += 1); then an idle worker, if any, is woken (one per call).
//   2. A free worker thread builds a claim from the lanes that announce work (eligible, work_gen ahead of the last
//      "nothing here" the store said, running below concurrency, runner not backing off) and asks the store. The
//      store is the one place that sees every waiting job, so it makes the cross-lane choice (best priority, with
//      aging, FIFO within a level) under its own lock, and before taking the best lane's jobs asks the lane to
//      reserve a run slot (ClaimRequest::take: a compare-and-swap on the lane's running count, refused while the
//      lane swaps versions). Lanes the store found empty are marked so (empty_at = the work_gen read before the
//      claim; a later enqueue moves work_gen on, so no wakeup is lost).
//   3. The worker copies the lane's view (settings and runner of this version), calls the runner, decides each
//      outcome (outcome.hpp, a pure function), writes them to the store, counts them on the lane, frees the slot and
//      claims again. When the last run of a version that is being replaced ends, it posts the swap to the strand.
//   4. A worker that finds nothing goes idle, then looks once more (so that an enqueue racing with it is never
//      missed; after a claim the store held back for a refill, only if a wakeup came since the claim began, which
//      found it still searching and so woke nobody); one that found work wakes one more idle worker while work
//      remains, so a burst recruits the pool one thread at a time instead of waking all of them at once.
// Timeouts run on the io_context: at the deadline the run is asked to stop (its Context says cancelled); a thread
// run still going stuck_grace later is counted stuck (it cannot be killed); a process run is killed by its runner.
// Retries, delayed jobs and runner back-off are woken by timers on the io_context.
#pragma once

#include "common/error.hpp"
#include "executor/metrics.hpp"
#include "executor/observer.hpp"
#include "registry/registry.hpp"
#include "store/store.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
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
    std::size_t max_result = 65'536;      // bytes of a run's result message and of its output kept ([store] max_result)
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
    // The kind of `error`; unavailable: the store could not take it now (a database that is down), try again later.
    core::Code code = core::Code::failed;
};

class RunContext;
class RunningJob;

// Why `payload` is not one valid JSON text ("... at byte N"), or nullopt when it is.
std::optional<std::string> payload_error(std::string_view payload);

// The lines of a JSON Lines text (`jobhost enqueue --jsonl`, NDJSON over HTTP), numbered from 1: lines holding
// only spaces, tabs or CR are skipped, and a CR before a newline is not part of its line.
struct Line {
    std::size_t number = 0;
    std::string_view text;
};
std::vector<Line> json_lines(std::string_view text);

// A --jsonl file: one payload per line, all or nothing. `bad_line` is 0 when every line is valid JSON.
struct PayloadLines {
    std::vector<std::string_view> payloads;
    std::size_t bad_line = 0;
    std::string why;
};
PayloadLines payload_lines(std::string_view text);

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
    // enabled. Jobs already queued keep the priority they were queued with. Like set_task and remove_task, it runs
    // on the lane's strand and has taken effect when it returns.
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
    struct LaneView;
    static constexpr std::size_t kMaxLanes = 4096; // job types one host can serve

    struct Claimed {
        Lane* lane = nullptr;
        std::shared_ptr<const LaneView> view; // the settings and runner of the version claimed for
        std::vector<store::JobRecord> jobs;
        bool more = false;      // the store has more claimable now
        bool held_back = false; // the store held work back for a refill under way
    };
    bool claim(Claimed& out, bool after_run);
    bool any_work() const;
    void worker();
    void wake_one();
    void signal_work();
    void run_batch(std::vector<store::JobRecord>& batch, Lane& lane, const LaneView& view);
    void finished_run(Lane& lane);
    void try_swap(Lane& lane); // on the lane's strand
    void publish(Lane& lane, std::shared_ptr<const registry::JobSettings> settings,
                 std::shared_ptr<runner::Runner> task, std::string unusable_reason); // on the lane's strand
    template <class F>
    void on_strand(Lane& lane, F f);
    Lane* add_lane(const std::string& type);
    Lane* lane(std::string_view type) const;
    std::size_t lane_count() const { return lane_count_.load(std::memory_order_acquire); }
    void arm_due_timer();
    void arm_backoff_timer(std::chrono::steady_clock::time_point at);
    void emit(JobEventKind kind, std::string_view type, store::JobId id, std::uint32_t attempt = 0,
              Duration duration = Duration(0), std::string_view error = {}) const noexcept;

    boost::asio::io_context& io_;
    store::JobStore& store_;
    ExecutorOptions options_;

    // Lanes: added (set_task), never removed. The list is read without a lock by claimers; the map by name under
    // names_mutex_ (shared for lookups, exclusive to add).
    std::array<std::atomic<Lane*>, kMaxLanes> list_{};
    std::atomic<std::size_t> lane_count_{0};
    mutable std::shared_mutex names_mutex_;
    std::map<std::string, std::unique_ptr<Lane>, std::less<>> lanes_;
    std::set<std::string> type_names_; // under names_mutex_

    std::atomic<std::size_t> idle_workers_;
    std::atomic<std::size_t> searching_{0}; // workers between runs, looking for the next one (or woken to)
    // Moved on by every poke (the store's wakeup among them): a worker whose claim was held back for a refill looks
    // again if a poke came since it began the claim, which found it searching and so woke nobody.
    std::atomic<std::uint64_t> pokes_{0};
    std::atomic<bool> accepting_{true};
    std::atomic<bool> dispatching_{true};
    std::atomic<bool> shutting_down_{false};

    std::mutex timer_mutex_; // the back-off timer's arming state
    boost::asio::steady_timer due_timer_;
    boost::asio::steady_timer backoff_timer_; // wakes lanes whose runner backs off (process workers lost)
    bool backoff_armed_ = false;
    std::chrono::steady_clock::time_point backoff_at_{};
    boost::asio::thread_pool pool_;
};

} // namespace jobhost::executor
