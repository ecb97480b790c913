// What the SQLite and PostgreSQL engines share: one writer thread that turns everything queued while a transaction
// commits into the next transaction (group commit), and per-type caches of jobs this host reserved ahead, from which
// a claim takes jobs without I/O. An engine supplies the transaction, the statement that reserves jobs, and its
// periodic duties (maintain).
//
// Writes. Callers queue an Op (statements to run inside the next transaction, and what to do after it commits or
// rolls back); enqueues wait for the commit, outcomes and refills do not.
//
// Reservations. How many jobs of a type a host holds ahead follows demand: it starts at 2 per type, follows what this
// host started of the type in about 100 ms (measured over at least 50 ms), never below a whole batch, and is capped by
// `prefetch`. So a host that runs long jobs holds about what it runs, and leaves the rest to other hosts. A burst of
// short jobs grows it faster: while workers that have just ended a run find the cache empty with a refill under way,
// and the last refill left more in the database, each refill doubles it (up to the cap), so a host reaches full pace
// within about ten refills rather than after a 50 ms window or two (a 50-slot host draining a backlog on PostgreSQL:
// after about 40 ms, against 140 ms). Idle workers taking their first job do not count (a host whose slots fill with
// long jobs would otherwise hold as many again ahead). A claim never passes over a job that a refill under way may
// bring, if that job may be better (the engine says the best level left in the database after each refill); the
// refill's wakeup claims again.
//
// Lock order: cache_mutex_ before queue_mutex_; wakeup_mutex_ is taken alone. cache_mutex_ guards refs_, names_ and
// caches_; queue_mutex_ guards queue_, stopping_ and poked_; wakeup_mutex_ guards wakeup_. Members marked "writer"
// are used by the writer thread only.
#pragma once

#include "store/store.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace jobhost::store {

class ReservingStore : public JobStore {
public:
    TypeRef intern(std::string_view type) override;
    ClaimResult claim(const ClaimRequest& request) override;
    void set_wakeup(std::function<void()> wakeup) override;
    void flush() override;

protected:
    // `host`: this object reserves and runs jobs (a host), rather than only reading and writing them (the CLI).
    ReservingStore(bool host, std::size_t prefetch) : reserving_(host), prefetch_(prefetch) {}

    // What a caller of submit(op, wait = true) waits on. The error it receives is a copy made for it alone
    // (copy_error), and the writer keeps no reference to it: an exception object is never shared between threads, so
    // its last owner is always the thread that reads it (libstdc++'s exception reference counts are invisible to
    // ThreadSanitizer, which otherwise reports the writer freeing what the caller read).
    class Waiter {
    public:
        void finish(std::exception_ptr error);
        void wait(); // rethrows the error, if any
    private:
        std::mutex mutex_;
        std::condition_variable cv_;
        bool done_ = false;
        std::exception_ptr error_;
    };
    struct Op {
        std::function<void()> in_transaction;
        std::function<void()> after_commit;
        std::shared_ptr<Waiter> done;             // null: nobody waits
        std::function<void()> after_failure = {}; // the transaction rolled back
        // Kept for the next transaction when this one failed because the database went away (an outcome must not be
        // lost to a reconnect); ops with a waiter fail instead, and the waiter reports the error.
        bool keep_on_disconnect = false;
    };
    struct Cache {
        std::array<std::deque<JobRecord>, 5> ready; // reserved by this host, not started; FIFO per priority
        std::size_t size = 0;
        std::size_t target = 2;  // how many to hold ahead: what this host starts in about 100 ms, 2 to prefetch
        bool maybe_in_db = true; // the database may hold ready jobs of this type that are not cached
        bool refill_pending = false;
        std::size_t at_least = 2; // a whole batch, for a batch type
        std::size_t claimed = 0;  // jobs claimed since window_start: the demand that sizes `target`
        TimePoint window_start{};
        // A worker that had just ended a run (ClaimRequest::after_run) found the cache empty while a refill was under
        // way, and the last refill left ready jobs in the database: the target is too small for this host's pace (a
        // burst of short jobs). The next refill doubles it.
        bool starved = false;
        bool last_refill_left_more = false;
        // The level of the best ready job in the database beyond the cache (-1: not known; -2: none), as of the last
        // refill or the last look after another process wrote.
        int db_head_level = -1;
    };

    // ---- what an engine supplies; all on the writer thread ----
    virtual void tx_begin() = 0;
    virtual void tx_commit() = 0;
    virtual void tx_rollback() noexcept = 0;
    // Periodic duties inside the batch's transaction, after its ops.
    virtual void maintain(TimePoint now) = 0;
    // How long the writer may sleep with nothing queued.
    virtual std::chrono::milliseconds idle_wait() = 0;
    // Inside a transaction: reserves up to `want` ready jobs of `type` for this host, best first (with `aging`, also
    // the oldest job of each lower level), and sets `head` to the best level still waiting beyond them (-2: none).
    virtual std::vector<JobRecord> reserve(const std::string& type, std::size_t want, bool aging, int& head) = 0;
    // Whether a failed op poisons the transaction (PostgreSQL): then the batch is rolled back and each op is run in
    // a transaction of its own. SQLite keeps the rest of the batch.
    virtual bool op_error_aborts_transaction() const noexcept { return false; }
    // Whether this error means the connection was lost, or another failure worth retrying: the writer then retries
    // with back-off (50 ms doubling to 2 s, with jitter), keeping the ops marked keep_on_disconnect.
    virtual bool is_disconnect(std::exception_ptr) const noexcept { return false; }
    // Whether this error means the database cannot be reached: until the next attempt, ops that wait for an answer
    // (enqueues) are refused at once with it, rather than waiting out the back-off.
    virtual bool is_unreachable(std::exception_ptr) const noexcept { return false; }
    // A new exception object equal to `e` (its engine's type kept), for one waiter.
    virtual std::exception_ptr copy_error(const std::exception_ptr& e) const;
    // A refill's transaction failed after reserve() had taken `jobs`: they are not cached. An engine whose commit
    // may have been applied although its answer was lost (a server across a network) gives them back (see
    // PostgresStore); they are nowhere else in this host.
    virtual void refill_failed(const std::vector<JobRecord>& jobs) { (void)jobs; }
    // A claim took `job` from the cache (under the cache's mutex, in the order jobs are taken).
    virtual void taken_locked(const JobRecord& job) { (void)job; }

    // ---- for engines ----
    void start_writer();
    // Stops the writer after what is queued; idempotent.
    void stop_writer();
    void submit(Op op, bool wait);
    // Makes the writer run a transaction (and so maintain) now rather than after idle_wait().
    void poke_writer();
    void request_refill_locked(TypeRef ref, bool better_waiting = false);
    Cache& cache_locked(std::string_view type, TypeRef* ref = nullptr);
    void wake();
    // Writer thread: ask the engine for the best ready level of each type in the database (-2: none), to know
    // whether a refill may bring a better job than a cache holds.
    void set_db_heads(const std::vector<int>& heads);
    std::vector<std::string> type_names();
    // Drops every reservation from the caches (close, or a lease this host lost).
    void clear_caches();

    // The writer's last transaction failed because the database could not be reached (is_unreachable); set until
    // one commits again (then the executor is woken). An engine may refuse to start runs meanwhile.
    std::atomic<bool> unreachable_{false};
    // writer: while transactions fail on a lost connection (is_disconnect), when that began and how many attempts
    // failed since (0: none)
    std::chrono::steady_clock::time_point outage_since_{};
    std::size_t outage_attempts_ = 0;

    bool reserving_;
    std::size_t prefetch_;
    std::atomic<std::int64_t> aging_ms_{0}; // the aging the executor claims with (ms); 0: off
    bool wake_after_batch_ = false;         // writer

    std::mutex cache_mutex_;
    std::unordered_map<std::string, TypeRef> refs_;
    std::vector<std::string> names_;
    std::deque<Cache> caches_;

private:
    void writer_loop();
    // Runs ops in one transaction; returns the transaction's error, if it failed (and leaves `keep` with what to
    // retry, if it was a lost connection).
    std::exception_ptr run_batch(std::deque<Op>& batch, std::deque<Op>& keep);

    std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::deque<Op> queue_;
    bool stopping_ = false;
    bool poked_ = false;
    std::thread writer_thread_;

    std::mutex wakeup_mutex_;
    std::function<void()> wakeup_;
};

} // namespace jobhost::store
