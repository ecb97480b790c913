// The PostgreSQL engine: one queue for many hosts on many machines. It keeps the contract in store.hpp.
//
// Tables live in their own schema (default `jobhost`), created and migrated at open under an advisory lock, so that
// hosts starting together migrate once. A database from a newer jobhost is refused.
//
// Claims. Like SQLite (ReservingStore), a host reserves a few ready jobs per type ahead, with one statement:
// `FOR UPDATE SKIP LOCKED` over the ready index, best priority first, oldest first within one, so hosts never wait
// for each other's rows. A claim takes from that cache without I/O. Reserved jobs are not charged.
//
// Running. begin_run records that each job started on a connection of its own (pipeline mode, statements prepared
// once), and calls the plugin once the record is in the server's socket, without waiting for the answer: the server
// applies what its socket holds before it sees the connection close, and the host counts as alive until then (that
// connection holds the host's lock), so a host killed in a job is charged exactly the runs it started. The server must
// never have an answer to write meanwhile (one it cannot deliver to a dead host ends the session, and what its socket
// still holds is dropped), so answers are asked for only every 64 mark transactions, and read before any further mark
// is sent (see begin_run). (Waiting for each answer, as before, cost every run a round trip: 2 slots drained a
// backlog at about 0.45 of the bare loop.) A run's mark is a setval on an unlogged sequence of the host's own (schema
// table `marks`): no transaction id, no WAL, and the value outlives the host (not the server). One sequence serves a
// line of jobs, a type at one priority: a claim gives each job it reserves a place in its line (jobs.mark_pos, and
// the line's sequence in jobs.mark_seq), in the order the host will start them, and a mark sets the line's sequence to
// the place of the last job started, once every job taken from the line before it started; a held job is running
// when its line's sequence reached its place. (Before, a sequence named one run, id * 65536 + attempt, and could be
// set again only once that run's outcome was committed: a host draining a backlog set one of about a thousand, which
// cost the server about 1 us a job more than setting the same few again.) A run that starts before a job taken from
// its line before it (two slots reach this point the other way round; it yields up to four times first), and the runs
// of a line that has no sequence yet, insert a row into the unlogged table `running` instead (a transaction each). A
// host takes 64 sequences as it starts (spares handed back by hosts that closed, or new), gives a line one as it first
// reserves jobs of it, and adds 64 at most once a second, on a connection of its own, while jobs of a line without one
// are reserved. Runs that start while a group of marks is written form the next group, one transaction for all of them.
// The job's own row stays "held" (state 2): a mark never waits on the job's row lock, and costs no index change on
// jobs. Readers see both kinds through `running_now()`, once per statement. A host killed between the send and the
// plugin call is charged a run that did not start (the safe side, by one). A mark is lost, and its run goes back
// uncharged, only when the server never gets it (the host's machine or network fails within a moment of the start),
// when the server holds it back for longer than the lease, or when the database server itself crashes (unlogged
// sequences and tables are reset then). A gone host's sequences are dropped once it has no connection and no job left
// to rescue; a stalled one keeps them, and one that lost its lease takes new ones.
//
// Outcomes, enqueues, reservations, heartbeats and rescue are group-committed by the writer thread. An outcome is
// recorded only while this host still holds the job (state and owner are checked); one for a job that was rescued
// meanwhile (this host stalled past its lease) is dropped and logged as lost.
//
// Hosts and leases. Each host registers in `hosts`, heartbeats every min(lease/4, 1 s), and each of its connections
// (writer, marks, listener) holds the host's session advisory lock, shared. A host is dead when its heartbeat is
// older than `lease` (it stalled, or lost the database), or when its lock is gone and it locked during this
// server's life (all its connections closed: it crashed or was killed). One connection that drops and is opened
// again does not make a live host dead (when only the writer held the lock, it did, and its running jobs were run a
// second time elsewhere). Any live host rescues a dead host's jobs within `liveness` (1 s) of noticing: running jobs
// are charged an attempt (dead-lettered as crashed_host once out of attempts), reserved ones go back unchanged. A host
// serves reservations from its cache only while its last heartbeat is younger than half the lease, so a host that
// wakes from a long pause re-registers before it starts anything.
//
// Wake-ups. Enqueues (from hosts and from SQL) notify once per transaction on a channel the hosts LISTEN to, on a
// connection read by an Asio loop; each host also looks every `poll` in case a notification was lost.
//
// Counts. Statement-level triggers append per-type, per-state deltas; a host folds them into `counts` every second
// (one host at a time, under an advisory lock). counts() sums both: cost grows with recent changes, not the backlog.
//
// Faults. A lost connection is reopened with back-off and jitter (50 ms doubling to 2 s); outcomes wait in memory
// and are written once it is back; enqueues answer an error meanwhile. The host never exits because the database
// went away. What it held ahead stays its own after a reconnect (unless other hosts found it dead meanwhile), and
// the jobs of a refill whose COMMIT failed are given back first thing in the next transaction, in case the server
// applied that commit and only its answer was lost.
#pragma once

#include "common/error.hpp"
#include "store/pg.hpp"
#include "store/reserving_store.hpp"

#include <array>
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace jobhost::store {

struct PostgresOptions {
    std::string url; // a libpq connection string or URL
    std::string schema = "jobhost";
    bool host = true;                         // a host reserves, runs, rescues and maintains; the CLI does not
    std::string owner;                        // lease owner, unique per process (HostRecord::make_owner)
    std::chrono::milliseconds lease{30'000};  // a host silent this long is dead (stalled or cut off)
    std::chrono::milliseconds poll{1000};     // fallback look for work in case a notification was lost
    std::chrono::milliseconds liveness{1000}; // how often to look for dead hosts
    // Jobs per type reserved ahead into the cache, at most (a host holds about what it starts in 100 ms). At 256, a
    // host draining 60,000 jobs/s could not hold enough to cover one refill (2 ms) and its workers found the cache
    // empty in a quarter of their claims; 1024 drained 15 to 20 % faster, paired runs on one machine.
    std::size_t prefetch = 1024;
    // Start mark sequences of this host's own, at most (see begin_run): 64 at start, then 64 at most a second while
    // jobs of a line (a type at one priority) that has none are reserved; those runs are marked in a table.
    std::size_t mark_sequences = 4096;
    std::size_t retain_done = 0;
    std::chrono::milliseconds retain_done_for{0};
    std::size_t retain_dead = 100'000;
};

class PostgresStore final : public ReservingStore {
public:
    static constexpr int kSchemaVersion = 4;

    static core::Expected<std::unique_ptr<PostgresStore>> open(const PostgresOptions& options);
    // Without close(), this is what a crash looks like to other hosts.
    ~PostgresStore() override;

    std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) override;
    RunToken begin_run(std::span<const JobRecord> jobs) override;
    ClaimResult claim(const ClaimRequest& request) override;
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
    void set_type_defaults(const std::map<std::string, TypeDefaults>& defaults) override;
    void prune() override;
    void flush() override;
    void close() override;
    std::size_t recovered_at_open() const noexcept override { return recovered_at_open_; }

    const std::string& owner() const noexcept { return options_.owner; }

private:
    explicit PostgresStore(PostgresOptions options);

    void tx_begin() override;
    void tx_commit() override;
    void tx_rollback() noexcept override;
    void maintain(TimePoint now) override;
    std::chrono::milliseconds idle_wait() override;
    std::vector<JobRecord> reserve(const std::string& type, std::size_t want, bool aging, int& head) override;
    bool op_error_aborts_transaction() const noexcept override { return true; }
    void refill_failed(const std::vector<JobRecord>& jobs) override;
    bool is_disconnect(std::exception_ptr e) const noexcept override;
    bool is_unreachable(std::exception_ptr e) const noexcept override;
    std::exception_ptr copy_error(const std::exception_ptr& e) const override;

    // Writer thread: (re)opens the writer connection and registers this host; throws pg::Error.
    void connect_writer();
    void configure_writer();
    void lost_lease();                                         // logs it and drops the reservations
    void give_back_unsure();                                   // inside tx_begin
    void open_marks();                                         // under marks_mutex_ (or in open)
    void write_outcomes(const std::vector<Outcome>& outcomes); // inside a writer transaction
    void register_host();
    // In a writer transaction: this host's first mark sequences (after a lost lease, new ones), taken into use by
    // apply_marks once the transaction committed. More are taken on a connection of their own (grow_marks), so that
    // it never holds up the writer.
    void take_marks(bool again);
    void taken_locked(const JobRecord& job) override;
    void grow_marks();
    void apply_marks();
    pg::Result insert_host(pg::Connection& c, const std::string& on_conflict);
    void hold_lock(pg::Connection& c); // takes this host's lock on c (shared by all its connections)
    void heartbeat();
    std::size_t rescue(TimePoint now);
    void refresh_heads();
    std::size_t promote_due(TimePoint now);
    void fold_counts();
    void prune_locked(TimePoint now);
    void notify();

    // The io thread: LISTEN for enqueues.
    void io_loop();
    pg::Connection& reader(); // under reader_mutex_
    JobRecord read_row(const pg::Result& r, int row) const;
    std::string q(std::string_view sql) const; // the SQL with {s} replaced by the schema

    PostgresOptions options_;
    std::int32_t lock_space_ = 0; // the first key of this schema's advisory locks

    std::unique_ptr<pg::Connection> writer_; // writer thread (and open)
    std::mutex reader_mutex_;
    std::unique_ptr<pg::Connection> reader_;
    // Start marks, group-committed (see begin_run). A group's runs wait on its state (a futex), so the end of a group
    // wakes its runs and one run of the next group (which writes it), not every run waiting, and the runs woken
    // together do not queue on the mutex.
    struct MarkGroup {
        enum : int { waiting = 0, write_me = 1, done = 2 };
        std::vector<std::int64_t> ids, attempts; // runs marked in the table, under marks_mutex_ while the group is open
        std::vector<std::int64_t> seqs, values;  // lines' sequences (oids), and the place each has reached
        std::size_t runs = 0;                    // how many runs joined it
        bool sync = false;                       // a flush() waits for it: read every answer up to this group
        std::atomic<int> state{waiting};
    };
    // Writes `jobs`' marks, and with `sync` waits until the server applied them (and every mark before them).
    void mark(std::span<const JobRecord> jobs, bool sync);
    void write_marks(MarkGroup& group); // by the run that writes the group (marking_)
    std::mutex marks_mutex_; // guards open_mark_group_, marking_, last_group_runs_ and the open group's ids, attempts
    std::shared_ptr<MarkGroup> open_mark_group_ = std::make_shared<MarkGroup>(); // runs join it
    bool marking_ = false;                                                       // a run is writing a group
    std::size_t last_group_runs_ = 0; // under marks_mutex_: how many runs the last group written marked
    // Under marks_mutex_: this host's mark sequences (oids), and those that no line has yet (indexes).
    std::vector<std::int64_t> mark_seqs_;
    std::vector<std::size_t> free_marks_;
    // Under marks_mutex_: for each line's sequence, the jobs taken from the line and not yet passed by it, in the
    // order they were taken (taken_locked), and the place its marks reached; the runs marked in the table whose
    // outcomes are not yet written.
    struct Taken {
        JobId id;
        std::int64_t pos;
        bool started;
    };
    std::unordered_map<std::uint32_t, std::deque<Taken>> taken_;
    std::unordered_map<std::uint32_t, std::int64_t> reached_;
    std::unordered_set<JobId> table_marked_;
    // writer: each type's lines' sequences, by priority (0: none yet), and the next place in line to give
    std::unordered_map<std::string, std::array<std::uint32_t, 5>> lines_;
    std::int64_t next_pos_ = 1;
    bool seq_marks_off_ = false;           // closing: runs are marked in the table
    std::uint64_t marks_generation_ = 0;   // how many times they were replaced
    std::atomic<bool> marks_short_{false}; // a run found no sequence free
    // writer: the sequences the open transaction took (all of them)
    std::vector<std::int64_t> marks_given_;
    bool marks_pending_ = false;
    std::thread grow_thread_; // writer starts it (and joins the last); close and the destructor join it
    std::atomic<bool> growing_{false};
    std::chrono::steady_clock::time_point last_grow_{}; // writer
    // Used by the run that writes a group (marking_) only: the connection (pipeline mode), the groups sent since the
    // last sync, and what they marked (sent again on a new connection if this one fails before its sync).
    std::unique_ptr<pg::Connection> marks_;
    std::size_t marks_unsynced_ = 0;
    std::vector<std::int64_t> unapplied_ids_, unapplied_attempts_, unapplied_seqs_, unapplied_values_;
    std::string mark_sql_, mark_one_sql_, set_marks_sql_, set_mark_sql_;

    struct Io;
    std::unique_ptr<Io> io_;
    std::thread io_thread_;

    std::mutex outcomes_mutex_; // guards pending_outcomes_, outcomes_queued_
    std::vector<Outcome> pending_outcomes_;
    bool outcomes_queued_ = false;

    std::atomic<bool> db_changed_{false};          // a notification came: look for work
    std::atomic<std::int64_t> heartbeat_ok_ms_{0}; // steady clock, ms: the last committed heartbeat
    bool heartbeat_pending_ = false;               // writer: this transaction heartbeats
    bool left_ = false;                   // writer: close() deleted this host's row; no heartbeat may register it again
    std::int64_t heartbeat_sent_ms_ = 0;  // writer: steady clock, ms, just before that heartbeat
    std::optional<std::int64_t> host_id_; // writer: our row in hosts (the same id for the life of the process)
    std::atomic<std::int64_t> lock_id_{0}; // host_id_, for the other connections' locks (0: not registered yet)
    // writer: jobs a failed refill reserved, which the database may hold for this host all the same (its COMMIT
    // applied, the answer lost): given back first thing in the next transaction (giving_back_ while it runs)
    std::vector<std::int64_t> unsure_, giving_back_;
    std::size_t given_back_ = 0;
    // writer
    TimePoint last_poll_{}, last_heartbeat_{}, last_liveness_{}, last_prune_{}, last_fold_{};
    std::optional<TimePoint> next_due_;
    bool notify_ = false; // this transaction made jobs ready that other hosts may take
    std::map<std::string, TypeDefaults> type_defaults_;
    std::mutex defaults_mutex_;

    std::size_t recovered_at_open_ = 0;
    std::atomic<bool> closed_{false};
};

} // namespace jobhost::store
