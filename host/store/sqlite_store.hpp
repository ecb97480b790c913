// The SQLite engine: one file, WAL, crash-safe, and the default store.
//
// One writer thread owns the write connection and turns everything that queues up while a transaction commits into
// the next transaction (group commit): enqueues (the caller waits for the commit), outcomes and releases (the caller
// does not wait: an outcome lost to a crash leaves its job leased, and lease recovery runs it again, so nothing is
// lost, at least once), lease renewal, recovery and pruning. A host prefetches ready jobs by leasing a few per type
// in one statement into an in-memory cache, so a claim costs no I/O; the cache per type is bounded, so memory does
// not grow with the backlog. Other processes (the jobhost CLI) write to the same file; the writer notices their
// commits through PRAGMA data_version within `poll` and wakes the executor.
#pragma once

#include "common/error.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"

#include <array>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace jobhost::store {

struct SqliteOptions {
    std::filesystem::path path;
    bool full_sync = false; // synchronous=FULL (survives power loss) instead of NORMAL (survives a process crash)
    bool create = true;     // false: a missing file is an error (the CLI never creates a store)
    bool host = true;       // a host recovers dead leases at open, prefetches and maintains; the CLI does not
    std::string owner;      // lease owner, "hostname:pid"
    std::chrono::milliseconds lease{300'000};
    std::chrono::milliseconds poll{200};          // how often to look for other processes' commits
    std::chrono::milliseconds busy_timeout{5000}; // how long to wait for another process's lock
    std::size_t prefetch = 256;                   // jobs per type leased ahead into the cache, at most
    std::size_t retain_done = 0;                  // finished jobs to keep (newest first)
    std::chrono::milliseconds retain_done_for{0}; // ... and for how long; with both 0 they are deleted when they finish
    std::size_t retain_dead = 100'000; // dead letters to keep; the oldest beyond it are pruned, with a warning
};

class SqliteStore final : public JobStore {
public:
    static constexpr int kSchemaVersion = 1;

    // Opens or creates the store. The error names the file and says what to do (missing, locked, corrupt, newer).
    static core::Expected<std::unique_ptr<SqliteStore>> open(const SqliteOptions& options);
    ~SqliteStore() override;

    std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) override;
    TypeRef intern(std::string_view type) override;
    ClaimResult claim(const ClaimRequest& request) override;
    void finish(std::span<const Outcome> outcomes) override;
    void release(std::span<const JobId> ids, const std::string& error, TimePoint now) override;
    std::optional<TimePoint> next_due(const std::set<std::string>& types, TimePoint now) override;
    std::optional<JobRecord> get(JobId id) override;
    std::vector<JobRecord> dead_letters(const DeadLetterFilter& filter) override;
    std::size_t replay(std::span<const JobId> ids, TimePoint now) override;
    std::size_t purge(std::span<const JobId> ids) override;
    std::vector<JobRecord> list(const ListFilter& filter) override;
    std::map<std::string, TypeCounts> counts() override;
    void set_wakeup(std::function<void()> wakeup) override;

    // Purges dead letters by filter (the CLI's --all); returns how many.
    std::size_t purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than);
    void flush() override;
    // Prunes now what the writer prunes every 30 seconds (retain_done, retain_done_for, retain_dead).
    void prune();
    // Leases whose owner process is gone, given back at open (host mode).
    std::size_t recovered_at_open() const noexcept { return recovered_at_open_; }

private:
    explicit SqliteStore(SqliteOptions options);
    struct Op {
        std::function<void()> in_transaction;
        std::function<void()> after_commit;
        std::shared_ptr<std::promise<void>> done; // null: nobody waits
    };
    struct Cache {
        std::array<std::deque<JobRecord>, 5> ready; // leased to this host, not started; FIFO per priority
        std::size_t size = 0;
        bool maybe_in_db = true; // the file may hold ready jobs of this type that are not cached
        bool refill_pending = false;
        std::optional<TimePoint> next_due_in_db;
    };

    void submit(Op op, bool wait);
    void writer_loop();
    void maintain(TimePoint now);
    void request_refill_locked(TypeRef ref);
    void wake();
    Cache& cache_locked(std::string_view type, TypeRef* ref = nullptr);
    JobRecord read_row(const sqlite::Statement& s) const;
    void append_error(JobId id, std::uint32_t attempt, TimePoint at, const std::string& message);
    std::size_t recover_dead_owners();
    // Inside a writer transaction: leases that expired before `now` go back to ready. Returns how many.
    std::size_t recover_expired_locked(TimePoint now);
    void prune_locked(TimePoint now);

    SqliteOptions options_;
    std::unique_ptr<sqlite::Connection> writer_; // used only on the writer thread (and in open, before it starts)
    std::unique_ptr<sqlite::Connection> reader_;
    std::mutex reader_mutex_;

    std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::deque<Op> queue_;
    bool stopping_ = false;
    std::thread writer_thread_;

    std::mutex cache_mutex_;
    std::unordered_map<std::string, TypeRef> refs_;
    std::vector<std::string> names_;
    std::deque<Cache> caches_;

    std::mutex wakeup_mutex_;
    std::function<void()> wakeup_;

    std::int64_t data_version_ = 0;
    TimePoint last_poll_{}, last_renew_{}, last_recover_{}, last_prune_{};
    std::size_t recovered_at_open_ = 0;
};

} // namespace jobhost::store
