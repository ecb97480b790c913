// The SQLite engine: one file, WAL, crash-safe, and the default store. It keeps the contract in store.hpp.
//
// Writes. One writer thread owns the write connection and turns everything that queues up while a transaction
// commits into the next transaction (group commit): enqueues (the caller waits for the commit), outcomes and
// releases (the caller does not wait; the run's mark in the host record stays until the outcome commits, so a crash
// before it charges the run and runs the job again: at least once), reservations, lease renewal, recovery, the
// promotion of due scheduled jobs, and pruning.
//
// Reservations. A host reserves a few ready jobs per type in one statement into an in-memory cache, so a claim
// costs no I/O. How many follows demand: it starts at 2 per type, doubles each time a claim finds the cache empty
// while the file has more, and halves when a refill comes more than a second after the last one; `prefetch` caps it. So
// a host that runs long jobs holds about what it runs, and leaves the rest to other hosts. Reserved jobs are not
// charged.
//
// Running. begin_run writes the ids into this host's HostRecord (mapped memory beside the file), which the next
// host reads if this one dies: running jobs are charged, reserved ones go back unchanged.
//
// Counts. Triggers keep per-type, per-state counts and the number of jobs ever queued in the same transaction as
// each change, so counts() reads a few rows whatever the backlog. Scheduled jobs have their own stored state and are
// promoted when due through an index on (state, run_at); nothing periodic scans the backlog.
//
// Other processes (the jobhost CLI, other hosts) write to the same file; the writer notices their commits through
// PRAGMA data_version within `poll`, and looks for dead hosts every second.
//
// The writer thread, group commit and the reservation caches are ReservingStore's (reserving_store.hpp), shared with
// the PostgreSQL engine. reader_mutex_ guards reader_ and is taken alone. Members marked "writer" are used by the
// writer thread only.
#pragma once

#include "common/error.hpp"
#include "store/host_record.hpp"
#include "store/sqlite.hpp"
#include "store/reserving_store.hpp"

#include <atomic>
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
    bool create = true;     // false: a missing file is an error
    bool host = true;       // a host reserves, runs, recovers dead hosts and maintains; the CLI does not
    std::string owner;      // lease owner, unique per process (HostRecord::make_owner)
    std::chrono::milliseconds lease{30'000};      // renewed every third of it while the host lives
    std::chrono::milliseconds poll{200};          // how often to look for other processes' commits
    std::chrono::milliseconds liveness{1000};     // how often to look for dead hosts and expired leases
    std::chrono::milliseconds busy_timeout{5000}; // how long to wait for another process's lock
    std::size_t prefetch = 256;                   // jobs per type reserved ahead into the cache, at most
    std::size_t retain_done = 0;                  // finished jobs to keep (newest first)
    std::chrono::milliseconds retain_done_for{0}; // ... and for how long; with both 0 they are deleted when they finish
    std::size_t retain_dead = 100'000; // dead letters to keep; the oldest beyond it are pruned, with a warning
};

class SqliteStore final : public ReservingStore {
public:
    static constexpr int kSchemaVersion = 3;

    // Opens or creates the store. The error names the file and says what to do (missing, locked, corrupt, newer).
    static core::Expected<std::unique_ptr<SqliteStore>> open(const SqliteOptions& options);
    // Without close(), this is what a crash looks like to other hosts: the host record stays for them to read.
    ~SqliteStore() override;

    std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) override;
    RunToken begin_run(std::span<const JobRecord> jobs) override;
    void finish(std::span<const Outcome> outcomes, RunToken token = {}) override;
    void progress(JobId id, const Progress& progress) override;
    std::optional<std::uint64_t> size_on_disk() override;
    std::optional<TimePoint> next_due(const std::set<std::string>& types, TimePoint now) override;
    std::optional<JobRecord> get(JobId id) override;
    std::vector<JobRecord> dead_letters(const DeadLetterFilter& filter) override;
    std::size_t replay(std::span<const JobId> ids, TimePoint now) override;
    std::size_t purge(std::span<const JobId> ids) override;
    std::size_t purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) override;
    std::vector<JobRecord> list(const ListFilter& filter) override;
    std::map<std::string, TypeCounts> counts() override;
    void prune() override;
    void close() override;
    std::size_t recovered_at_open() const noexcept override { return recovered_at_open_; }

    HostRecord* host_record() const noexcept override { return record_.get(); }

private:
    explicit SqliteStore(SqliteOptions options);
    void tx_begin() override;
    void tx_commit() override;
    void tx_rollback() noexcept override;
    std::exception_ptr copy_error(const std::exception_ptr& e) const override;
    void maintain(TimePoint now) override;
    std::chrono::milliseconds idle_wait() override;
    std::vector<JobRecord> reserve(const std::string& type, std::size_t want, bool aging, int& head) override;
    // Writer thread: re-reads which types have ready jobs in the file, and the best level of each.
    void mark_all_maybe_in_db();
    JobRecord read_row(const sqlite::Statement& s) const;
    void read_errors(JobRecord& j, const std::string& text) const;
    // Inside a writer transaction: the jobs this store's rows say `owner` holds go back to ready; those in
    // `running` are charged an attempt with `error` (dead with `reason` once out of attempts). With `expired_before`,
    // only leases that expired before it. Returns how many rows changed.
    std::size_t recover_owner(const std::string& owner, const std::set<JobId>& running, const std::string& error,
                              DeadReason reason, std::optional<TimePoint> expired_before);
    // Inside a writer transaction: recovers every dead host's jobs and removes stale host records.
    std::size_t recover_dead_hosts(TimePoint now);
    std::size_t promote_due(TimePoint now);
    void refresh_next_due();
    void prune_locked(TimePoint now);

    SqliteOptions options_;
    std::filesystem::path hosts_dir_;
    std::unique_ptr<HostRecord> record_;         // host mode
    std::unique_ptr<sqlite::Connection> writer_; // writer (and open, before the thread starts)
    std::unique_ptr<sqlite::Connection> reader_;
    std::mutex reader_mutex_;

    // writer
    std::int64_t data_version_ = 0;
    TimePoint last_poll_{}, last_renew_{}, last_liveness_{}, last_prune_{};
    std::optional<TimePoint> next_due_; // the earliest run_at of a scheduled job

    std::size_t recovered_at_open_ = 0;
    std::atomic<bool> closed_{false};
};

} // namespace jobhost::store
