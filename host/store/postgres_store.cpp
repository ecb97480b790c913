#include "store/postgres_store.hpp"

#include "store/job_json.hpp"

#include "log/log.hpp"
#include "store/host_record.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <sched.h>
#include <climits>
#include <limits>
#include <random>
#include <regex>

namespace jobhost::store {

extern const char* const kPostgresSchemaSql; // postgres_schema.sql, compiled in

namespace {

constexpr int kScheduled = 0, kReady = 1, kReserved = 2, kDone = 3, kDead = 4, kRunning = 5;

std::int64_t to_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
    return TimePoint(std::chrono::milliseconds(ms));
}
std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// A timestamp parameter: milliseconds since the epoch.
constexpr const char* kTs = "to_timestamp(%::float8 / 1000)";
std::string ts(int n) {
    std::string s = kTs;
    s.replace(s.find('%'), 1, "$" + std::to_string(n));
    return s;
}
std::string ms(const std::string& col) {
    return "(extract(epoch from " + col + ") * 1000)::int8";
}
// Whether the held job `j` is running: its host marked this attempt started (read once per statement).
std::string running_of(const std::string& j) {
    return "(" + j + "id, " + j + "lease_owner, " + j + "attempt + 1) IN (SELECT * FROM {s}.running_now())";
}

// `just_reserved`: rows this statement reserved, which cannot be running yet (no look into `running` per row).
std::string columns(const std::string& p = "", bool just_reserved = false) {
    std::string state = just_reserved
                            ? p + "state"
                            : "CASE WHEN " + p + "state = 2 AND " + running_of(p) + " THEN 5 ELSE " + p + "state END";
    return p + "id, " + p + "type, " + p + "payload, " + p + "priority, " + p + "unique_key, " + p + "attempt, " + p +
           "max_attempts, " + state + ", " + ms(p + "run_at") + ", " + ms(p + "created_at") + ", " +
           ms(p + "started_at") + ", " + ms(p + "finished_at") + ", " + p + "lease_owner, " + p + "from_schedule, " +
           p + "dead_reason, " + p + "errors, " + p + "attempts_before, " + p + "result, " + p + "progress";
}

// The size of a claim that wants `want` jobs (see PostgresStore::reserve): up to 16 exactly; above, the largest of
// 16, 24, 32, 48, 64, 96, ... (powers of two and one and a half times them) that is not more than `want`: 28 sizes
// up to the prefetch, 1024.
std::size_t claim_size(std::size_t want) {
    if (want <= 16) return want;
    std::size_t size = 16;
    for (std::size_t p = 16; p <= want; p *= 2) {
        size = p;
        if (p + p / 2 <= want) size = p + p / 2;
    }
    return size;
}

// What an enqueue answers while the database is away: say what, and what to do.
[[noreturn]] void unavailable(const pg::Error& e) {
    throw std::runtime_error("the PostgreSQL store is unavailable (" + std::string(e.what()) +
                             "); nothing was queued: retry when it is back");
}

} // namespace

struct PostgresStore::Io {
    boost::asio::io_context context;
    std::unique_ptr<pg::Connection> listener;
    std::unique_ptr<boost::asio::posix::stream_descriptor> listen_socket;
    boost::asio::steady_timer retry{context};
    std::chrono::milliseconds backoff{0};
};

PostgresStore::PostgresStore(PostgresOptions options)
    : ReservingStore(options.host, options.prefetch), options_(std::move(options)) {}

std::string PostgresStore::q(std::string_view sql) const {
    std::string out(sql);
    for (auto at = out.find("{s}"); at != std::string::npos; at = out.find("{s}", at + options_.schema.size()))
        out.replace(at, 3, options_.schema);
    return out;
}

core::Expected<std::unique_ptr<PostgresStore>> PostgresStore::open(const PostgresOptions& options) {
    static const std::regex identifier("[a-z_][a-z0-9_]{0,40}");
    if (!std::regex_match(options.schema, identifier))
        return core::Error{"[store] schema \"" + options.schema +
                           "\" is not a plain PostgreSQL name: use lower-case letters, digits and _ (default jobhost)"};
    if (options.url.empty())
        return core::Error{"[store] kind = \"postgres\" needs a database: set [store] url, or the environment "
                           "variable that [store] url_env names (default JOBHOST_DATABASE_URL)"};
    std::unique_ptr<PostgresStore> store(new PostgresStore(options));
    auto& o = store->options_;
    if (o.owner.empty()) o.owner = HostRecord::make_owner();
    std::uint32_t h = 2166136261u; // FNV-1a of the schema: this schema's advisory lock space
    for (char c : o.schema) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
    store->lock_space_ = static_cast<std::int32_t>(h & 0x7fffffff);
    try {
        store->writer_ = pg::Connection::open(o.url);
        auto& w = *store->writer_;
        store->configure_writer();
        // Migrate once across hosts that start together: a transaction-scoped advisory lock.
        w.exec("BEGIN");
        // (the one-key form: a key space apart from the hosts' two-key locks)
        w.run("SELECT pg_advisory_xact_lock($1::int8 * 4)", pg::Params().add(std::int64_t{store->lock_space_}));
        auto exists = w.run("SELECT to_regclass($1) IS NOT NULL", pg::Params().add(o.schema + ".meta"));
        std::int64_t version = 0;
        if (exists.text(0, 0) == "t")
            version = w.exec(store->q("SELECT value::int FROM {s}.meta WHERE key = 'schema_version'")).int64(0, 0);
        if (version > kSchemaVersion) {
            w.exec("ROLLBACK");
            return core::Error{"the PostgreSQL schema " + o.schema + " at " + pg::redact(o.url) +
                               " has jobhost schema version " + std::to_string(version) +
                               ", newer than this jobhost's " + std::to_string(kSchemaVersion) +
                               "; use a newer jobhost, or point [store] schema at another schema"};
        }
        if (version == 0) {
            w.exec(store->q(kPostgresSchemaSql));
            log::write(log::Level::info, "store",
                       "created the jobhost schema " + o.schema + " (version " + std::to_string(kSchemaVersion) + ")");
        } else if (version < kSchemaVersion) {
            if (version == 1) // 1 -> 2: results, progress, attempts counted across dead-letter retries
                w.exec(store->q("ALTER TABLE {s}.jobs ADD COLUMN attempts_before integer NOT NULL DEFAULT 0, "
                                "ADD COLUMN result jsonb, ADD COLUMN progress jsonb"));
            // 2 -> 3: start marks in sequences; 3 -> 4: what they mark is a place in line (the schema's last parts)
            std::string all = kPostgresSchemaSql;
            w.exec(store->q(all.substr(all.find(version < 3 ? "-- Version 3:" : "-- Version 4:")) +
                            "; UPDATE {s}.meta SET value = '4' WHERE key = 'schema_version'"));
            log::write(log::Level::info, "store",
                       "migrated the jobhost schema " + o.schema + " from version " + std::to_string(version) + " to " +
                           std::to_string(kSchemaVersion));
        }
        w.exec("COMMIT");
        if (o.host) {
            store->register_host();
            auto now = Clock::now();
            w.exec("BEGIN");
            store->recovered_at_open_ = store->rescue(now);
            store->promote_due(now);
            w.exec("COMMIT");
            store->last_liveness_ = now;
            // what the host knows of each job (its id and the attempt it starts), so that a mark reads nothing of
            // jobs: looking each job up (to insert only for jobs still held by this host) cost an index descent per
            // run on the pages the writer was changing (2 slots drained about 6 % faster without it)
            store->mark_sql_ = store->q("INSERT INTO {s}.running (id, owner, attempt) SELECT u.id, $2, u.attempt FROM "
                                        "unnest($1::int8[], $3::int8[]) AS u(id, attempt)");
            // one run's mark (a host with few slots often starts runs one at a time): measured alone, the server spent
            // 7.3 to 8.0 us a mark with it (BEGIN, INSERT, COMMIT) against 8.8 to 9.5 with one-element arrays
            store->mark_one_sql_ =
                store->q("INSERT INTO {s}.running (id, owner, attempt) VALUES ($1::int8, $2, $3::int)");
            // marks in this host's sequences: no transaction id, no WAL (see begin_run)
            store->set_mark_sql_ = "SELECT pg_catalog.setval($1::oid::regclass, $2::int8)";
            store->set_marks_sql_ = "SELECT count(pg_catalog.setval(u.s::regclass, u.v)) FROM unnest($1::oid[], "
                                    "$2::int8[]) AS u(s, v)";
            store->open_marks();
            store->io_ = std::make_unique<Io>();
            store->io_thread_ = std::thread([s = store.get()] { s->io_loop(); });
        }
    } catch (const pg::Error& e) {
        std::string what = e.what();
        if (e.disconnect())
            return core::Error{what + "; check [store] url (or JOBHOST_DATABASE_URL) and that the server is up"};
        return core::Error{"the PostgreSQL store at " + pg::redact(o.url) + " (schema " + o.schema +
                           ") failed to open: " + what};
    }
    store->start_writer();
    return store;
}

PostgresStore::~PostgresStore() {
    if (io_) {
        io_->context.stop();
        if (io_thread_.joinable()) io_thread_.join();
    }
    stop_writer();
    if (grow_thread_.joinable()) grow_thread_.join();
}

// The statement that registers this host; a host registers again (after its row was taken for dead) under the id it
// had, which every connection of it holds the lock of.
pg::Result PostgresStore::insert_host(pg::Connection& c, const std::string& on_conflict) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    auto params = pg::Params().add(options_.owner).add(std::string(name)).add(std::int64_t{::getpid()});
    if (!host_id_)
        return c.run(q("INSERT INTO {s}.hosts (owner, hostname, pid, heartbeat_at) VALUES ($1, $2, $3, "
                       "clock_timestamp()) " +
                       on_conflict),
                     params);
    return c.run(q("INSERT INTO {s}.hosts (id, owner, hostname, pid, heartbeat_at) OVERRIDING SYSTEM VALUE VALUES ($4, "
                   "$1, $2, $3, clock_timestamp()) " +
                   on_conflict),
                 params.add(*host_id_));
}

// Every connection of a host holds the same lock, shared (pg_advisory_lock_shared): other hosts take the host for
// dead when the last of them is gone (the process died), not when one connection drops and is opened again.
void PostgresStore::hold_lock(pg::Connection& c) {
    auto id = lock_id_.load();
    if (id != 0)
        c.run("SELECT pg_advisory_lock_shared($1, $2::int)", pg::Params().add(std::int64_t{lock_space_}).add(id));
}

void PostgresStore::register_host() {
    auto& w = *writer_;
    w.exec("BEGIN");
    heartbeat_sent_ms_ = steady_ms();
    auto r = insert_host(w, "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = clock_timestamp(), locked_at = now() "
                            "RETURNING id, xmax = 0");
    bool first = !host_id_.has_value();
    bool again = !first && r.text(0, 1) == "t"; // our row was gone: other hosts took our jobs
    host_id_ = r.int64(0, 0);
    lock_id_ = *host_id_;
    // Held while this connection lives (and by the host's other connections): other hosts see the last of them
    // vanish the moment this process dies.
    hold_lock(w);
    if (first || again) take_marks(again); // (a writer that reconnected keeps them: runs in progress are marked there)
    w.exec("COMMIT");
    apply_marks();
    heartbeat_ok_ms_ = heartbeat_sent_ms_;
    if (again) lost_lease();
}

// This host's first mark sequences, all free. After a lost lease the ones it had are dropped (a run of the old lease
// may still set one: it fails, and that run's outcome is dropped anyway) and others taken.
void PostgresStore::take_marks(bool again) {
    if (options_.mark_sequences == 0) return;
    if (again) writer_->run(q("SELECT {s}.drop_marks($1)"), pg::Params().add(*host_id_));
    // 64, spares first (a line of jobs, a type at one priority, needs one once it has jobs: 64 serve 64 lines, and
    // more are added while lines find none free)
    const auto n = static_cast<std::int64_t>(std::min<std::size_t>(64, options_.mark_sequences));
    auto r =
        writer_->run(q("SELECT {s}.add_marks($1, $2, $3, $3)"), pg::Params().add(*host_id_).add(options_.owner).add(n));
    marks_given_.clear();
    for (int i = 0; i < r.rows(); ++i) marks_given_.push_back(r.int64(i, 0));
    marks_pending_ = true;
}

// More mark sequences, 64 at most once a second (up to mark_sequences), in a transaction of their own on a connection
// of their own: creating one costs the server about 0.35 ms, which must not hold up the writer. Meanwhile the runs
// of lines that have none are marked in the table.
void PostgresStore::grow_marks() {
    auto now = std::chrono::steady_clock::now();
    if (!host_id_ || growing_.exchange(true)) return;
    std::size_t have = 0;
    std::uint64_t generation = 0;
    bool off = false;
    {
        std::lock_guard lock(marks_mutex_);
        have = mark_seqs_.size();
        generation = marks_generation_;
        off = seq_marks_off_;
    }
    if (off || have == 0 || have >= options_.mark_sequences || now - last_grow_ < std::chrono::seconds(1)) {
        growing_ = false;
        return;
    }
    last_grow_ = now;
    if (grow_thread_.joinable()) grow_thread_.join();
    auto more = std::min<std::size_t>(64, options_.mark_sequences - have);
    grow_thread_ = std::thread([this, more, generation, host = *host_id_] {
        try {
            auto c = pg::Connection::open(options_.url);
            c->exec("SET application_name = 'jobhost marks setup'");
            auto r = c->run(q("SELECT {s}.add_marks($1, $2, $3, $3)"),
                            pg::Params().add(host).add(options_.owner).add(static_cast<std::int64_t>(more)));
            std::lock_guard lock(marks_mutex_);
            // (replaced meanwhile, after a lost lease: these stay unused, and are spares once this host closes)
            if (marks_generation_ == generation)
                for (int i = 0; i < r.rows(); ++i) {
                    if (!seq_marks_off_) free_marks_.push_back(mark_seqs_.size());
                    mark_seqs_.push_back(r.int64(i, 0));
                }
        } catch (const std::exception& e) {
            log::write(log::Level::warning, "store",
                       std::string("could not add start mark sequences (") + e.what() +
                           "); runs that find none free are marked in a table, which costs more");
        }
        growing_ = false;
    });
}

// Once the transaction that took them committed (the marks connection cannot see new ones before).
void PostgresStore::apply_marks() {
    if (!marks_pending_) return;
    marks_pending_ = false;
    std::lock_guard lock(marks_mutex_);
    ++marks_generation_;
    mark_seqs_ = std::move(marks_given_);
    marks_given_.clear();
    free_marks_.clear();
    taken_.clear(); // (runs of jobs taken before are marked in the table: their outcomes are dropped anyway)
    reached_.clear();
    lines_.clear();
    if (!seq_marks_off_)
        for (std::size_t i = mark_seqs_.size(); i-- > 0;) free_marks_.push_back(i);
}

void PostgresStore::lost_lease() {
    log::write(log::Level::error, "store",
               "this host's lease was lost: other hosts found it dead (silent for longer than [store] lease, " +
                   std::to_string(options_.lease.count()) +
                   " ms: a pause, or the database out of reach; or every connection it had was gone) and took over its "
                   "jobs; it registers again, and outcomes of runs that were in progress are not recorded");
    clear_caches();
}

// A host that stalls inside a transaction (SIGSTOP, a frozen VM) would hold its row locks, and every other host's
// rescue would wait on them: the server ends such a session after the lease, which releases them (the host's other
// connections keep its advisory lock, but its heartbeat stopped with it, so the others rescue its jobs once its
// lease has expired). No statement waits on a lock for longer than 10 s.
void PostgresStore::configure_writer() {
    auto idle = std::max<std::int64_t>(options_.lease.count(), 1000);
    writer_->exec("SET application_name = 'jobhost'; SET lock_timeout = '10s'; SET "
                  "idle_in_transaction_session_timeout = " +
                  std::to_string(idle));
}

void PostgresStore::connect_writer() {
    writer_ = pg::Connection::open(options_.url);
    configure_writer();
    if (options_.host) {
        // What we reserved is still ours unless other hosts found us dead meanwhile, which register_host sees (our
        // row was gone) and then drops. (Dropping it on every reconnect stranded those jobs: held by a live host,
        // no other host rescues them, and this one no longer knew it held them.)
        register_host();
        auto out =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - outage_since_);
        char after[64];
        std::snprintf(after, sizeof after, " after %.1f s and %zu failed attempt(s)",
                      static_cast<double>(out.count()) / 1000.0, outage_attempts_);
        log::write(log::Level::info, "store",
                   std::string("reconnected to PostgreSQL") + (outage_attempts_ > 0 ? after : ""));
    }
}

bool PostgresStore::is_disconnect(std::exception_ptr e) const noexcept {
    try {
        std::rethrow_exception(e);
    } catch (const pg::Error& x) {
        // and the transient ones: a lock wait timed out, a deadlock or a serialization failure: retry the batch
        return x.disconnect() || x.sqlstate() == "55P03" || x.sqlstate() == "40P01" || x.sqlstate() == "40001";
    } catch (...) {
        return false;
    }
}

bool PostgresStore::is_unreachable(std::exception_ptr e) const noexcept {
    try {
        std::rethrow_exception(e);
    } catch (const pg::Error& x) {
        return x.disconnect();
    } catch (...) {
        return false;
    }
}

std::exception_ptr PostgresStore::copy_error(const std::exception_ptr& e) const {
    try {
        std::rethrow_exception(e);
    } catch (const pg::Error& x) {
        return std::make_exception_ptr(pg::Error(x.what(), x.sqlstate(), x.disconnect()));
    } catch (...) {
        return ReservingStore::copy_error(e);
    }
}

void PostgresStore::tx_begin() {
    if (!writer_ || !writer_->ok()) connect_writer();
    writer_->exec("BEGIN");
    notify_ = false;
    heartbeat_pending_ = false;
    if (!unsure_.empty()) give_back_unsure();
}

// A refill whose transaction failed at its COMMIT may have been applied all the same (the server committed, the
// connection broke before its answer came): its jobs are then held by this host, which is alive (so no other host
// rescues them) and never cached them (so it never runs them). They are given back before anything else, so that
// no refill of this host takes them into its cache first; the guard leaves them alone when the commit was not
// applied (then they are ready, or another host's).
void PostgresStore::give_back_unsure() {
    giving_back_.insert(giving_back_.end(), unsure_.begin(), unsure_.end());
    unsure_.clear();
    auto r =
        writer_->run(q("UPDATE {s}.jobs SET state = 1, lease_owner = NULL WHERE id = ANY($1::int8[]) AND state = 2 AND "
                       "lease_owner = $2"),
                     pg::Params().add(pg::int_array(giving_back_)).add(options_.owner));
    given_back_ = r.affected();
    if (given_back_ > 0) notify_ = true;
}

void PostgresStore::refill_failed(const std::vector<JobRecord>& jobs) {
    for (const auto& j : jobs) unsure_.push_back(j.id);
}

void PostgresStore::tx_commit() {
    if (notify_) notify();
    writer_->exec("COMMIT");
    if (!giving_back_.empty()) {
        giving_back_.clear();
        if (given_back_ > 0) {
            log::write(log::Level::warning, "store",
                       std::to_string(given_back_) +
                           " job(s) given back to ready: a refill's commit was applied although its answer was lost "
                           "with the connection, so this host held them without knowing");
            wake_after_batch_ = true;
            std::lock_guard lock(cache_mutex_);
            for (auto& c : caches_) c.maybe_in_db = true;
        }
        given_back_ = 0;
    }
    apply_marks();
    if (heartbeat_pending_) {
        auto before = heartbeat_ok_ms_.exchange(heartbeat_sent_ms_);
        // claims refused while the lease was unsure (see claim) may go on
        if (steady_ms() - before > options_.lease.count() / 2) wake_after_batch_ = true;
    }
}

void PostgresStore::tx_rollback() noexcept {
    marks_pending_ = false; // (what the transaction took is not taken)
    marks_given_.clear();
    unsure_.insert(unsure_.end(), giving_back_.begin(), giving_back_.end()); // for the next transaction
    giving_back_.clear();
    try {
        if (writer_ && writer_->ok()) writer_->exec("ROLLBACK");
    } catch (...) {
    }
}

void PostgresStore::notify() {
    writer_->run("SELECT pg_notify($1, $2)", pg::Params().add(options_.schema + "_jobs").add(options_.owner));
}

std::chrono::milliseconds PostgresStore::idle_wait() {
    auto wait = std::min({options_.poll, options_.liveness, std::chrono::milliseconds(250)});
    if (options_.host && next_due_) {
        auto until = std::chrono::duration_cast<std::chrono::milliseconds>(*next_due_ - Clock::now()) +
                     std::chrono::milliseconds(1);
        wait = std::clamp(until, std::chrono::milliseconds(0), wait);
    }
    return wait;
}

void PostgresStore::maintain(TimePoint now) {
    // (after close() deleted this host's row in this transaction, a heartbeat due would find the row gone, take that
    // for a lost lease and register the host again: an error logged at every clean stop, and a row left behind)
    if (!options_.host || left_) return;
    if (marks_short_.exchange(false)) grow_marks();
    auto beat = std::min<std::chrono::milliseconds>(options_.lease / 4, std::chrono::seconds(1));
    if (now - last_heartbeat_ >= beat) {
        last_heartbeat_ = now;
        heartbeat();
    }
    bool look = db_changed_.exchange(false);
    if (now - last_poll_ >= options_.poll) {
        last_poll_ = now;
        look = true;
        auto r = writer_->exec(q("SELECT " + std::string("(extract(epoch from min(run_at)) * 1000)::int8") +
                                 " FROM {s}.jobs WHERE state = 0")
                                   .c_str());
        next_due_.reset();
        if (!r.null(0, 0)) next_due_ = from_ms(r.int64(0, 0));
    }
    if (next_due_ && *next_due_ <= now && promote_due(now) > 0) look = true;
    if (now - last_liveness_ >= options_.liveness) {
        last_liveness_ = now;
        if (rescue(now) > 0) look = true;
    }
    if (now - last_fold_ >= std::chrono::seconds(1)) {
        last_fold_ = now;
        fold_counts();
        // marks left behind: a job whose outcome was dropped (its lease was lost meanwhile) keeps its mark
        writer_->run(q("DELETE FROM {s}.running r WHERE r.owner = $1 AND NOT EXISTS (SELECT 1 FROM {s}.jobs j WHERE "
                       "j.id = r.id AND j.state = 2 AND j.lease_owner = r.owner AND j.attempt + 1 = r.attempt)"),
                     pg::Params().add(options_.owner));
        // mark sequences of hosts that are gone: no row, no connection (a stalled host keeps its own), and none of
        // their jobs left to rescue (not made spares: a host cut off may come back, and set them)
        writer_->run(q("SELECT {s}.drop_marks(m.host) FROM (SELECT DISTINCT host, owner FROM {s}.marks WHERE host IS "
                       "NOT NULL) m WHERE NOT "
                       "EXISTS (SELECT 1 FROM {s}.hosts h WHERE h.id = m.host) AND NOT EXISTS (SELECT 1 FROM pg_locks "
                       "l WHERE l.locktype = 'advisory' AND l.classid = $1::oid AND l.objid = m.host::oid AND "
                       "l.objsubid = 2) AND NOT EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.state IN (2, 5) AND "
                       "j.lease_owner = m.owner)"),
                     pg::Params().add(std::int64_t{lock_space_}));
    }
    if (now - last_prune_ >= std::chrono::seconds(30)) {
        last_prune_ = now;
        prune_locked(now);
    }
    if (look) {
        refresh_heads();
        wake_after_batch_ = true;
    }
}

void PostgresStore::heartbeat() {
    // The time this host counts its lease from is taken before the statement, and the database stamps the row
    // with its clock as the statement runs (not at the transaction's start): the row is never older than what
    // the host believes, so the host stops serving reservations (claim) before any other host could rescue them.
    heartbeat_sent_ms_ = steady_ms();
    auto r = writer_->run(q("UPDATE {s}.hosts SET heartbeat_at = clock_timestamp() WHERE owner = $1"),
                          pg::Params().add(options_.owner));
    if (r.affected() == 1) {
        heartbeat_pending_ = true;
        return;
    }
    // Another host found us dead (we stalled, or lost the database, for longer than the lease) and gave our jobs
    // to others: drop what we reserved, and register again. Runs still going will find their jobs lost.
    // (under the same id, whose lock this connection and the host's others still hold)
    lost_lease();
    insert_host(*writer_, "");
    take_marks(true);
    heartbeat_pending_ = true;
}

// Dead hosts: silent for longer than the lease, or whose lock is gone although they locked during this server's
// life (after a server restart every lock is gone, so only the heartbeat says then). Their rows go, and every job
// held by an owner without a row is given back: running ones charged, reserved ones unchanged; both keep their
// run_at, so they go first among their priority rather than behind the backlog. Guarded by state
// and owner, and SKIP LOCKED, so two hosts rescuing at once, or an outcome landing meanwhile, do no harm.
std::size_t PostgresStore::rescue(TimePoint now) {
    auto gone = writer_->run(
        q("DELETE FROM {s}.hosts h WHERE h.owner <> $1 AND (h.heartbeat_at < now() - $2::int8 * interval '1 ms' OR "
          "(h.locked_at > pg_postmaster_start_time() AND NOT EXISTS "
          "(SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = $3::oid AND l.objid = h.id::oid "
          "AND l.objsubid = 2))) RETURNING h.owner, h.heartbeat_at < now() - $2::int8 * interval '1 ms'"),
        pg::Params()
            .add(options_.owner)
            .add(static_cast<std::int64_t>(options_.lease.count()))
            .add(std::int64_t{lock_space_}));
    std::vector<std::string> owners, messages;
    for (int i = 0; i < gone.rows(); ++i) {
        owners.push_back(gone.text(i, 0));
        bool stalled = gone.text(i, 1) == "t";
        messages.push_back(stalled ? "the lease of host " + owners.back() +
                                         " expired while this job was running: it stalled or lost the database"
                                   : "the host died while this job was running (host " + owners.back() + ")");
    }
    auto r = writer_->run(
        q("WITH gone AS (SELECT j.id, CASE WHEN " + running_of("j.") +
          " THEN 5 ELSE 2 END AS was FROM {s}.jobs j "
          "WHERE j.state IN (2, 5) AND NOT EXISTS "
          "(SELECT 1 FROM {s}.hosts h WHERE h.owner = j.lease_owner) FOR UPDATE OF j SKIP LOCKED), "
          "msg AS (SELECT * FROM unnest($1::text[], $2::text[]) AS m(owner, message)) "
          "UPDATE {s}.jobs j SET "
          "state = CASE WHEN gone.was = 2 THEN 1 WHEN j.attempt + 1 >= j.max_attempts THEN 4 ELSE 1 END, "
          "attempt = j.attempt + CASE WHEN gone.was = 5 THEN 1 ELSE 0 END, "
          "finished_at = CASE WHEN gone.was = 5 AND j.attempt + 1 >= j.max_attempts THEN " +
          ts(3) +
          " END, "
          "dead_reason = CASE WHEN gone.was = 5 AND j.attempt + 1 >= j.max_attempts THEN 5 ELSE 0 END, "
          "errors = CASE WHEN gone.was = 5 THEN j.errors || jsonb_build_array(jsonb_build_object('attempt', "
          "j.attempt + 1, 'at', $3::int8, 'message', coalesce((SELECT m.message FROM msg m WHERE m.owner = "
          "j.lease_owner), 'the host died while this job was running (host ' || j.lease_owner || ')'))) ELSE "
          "j.errors END, "
          "lease_owner = NULL "
          "FROM gone WHERE j.id = gone.id "
          "RETURNING j.id, j.type, gone.was, j.attempt, j.max_attempts, j.state")
            .c_str(),
        pg::Params().add(pg::text_array(owners)).add(pg::text_array(messages)).add(to_ms(now)));
    if (r.rows() > 0)
        writer_->exec(q("DELETE FROM {s}.running r WHERE NOT EXISTS (SELECT 1 FROM {s}.hosts h WHERE h.owner = "
                        "r.owner)"));
    std::size_t running = 0;
    for (int i = 0; i < r.rows(); ++i) {
        if (r.int64(i, 2) != kRunning) continue;
        ++running;
        bool dead = r.int64(i, 5) == kDead;
        log::write(dead ? log::Level::error : log::Level::warning, "store",
                   "job " + r.text(i, 0) + " was running when its host died or stalled; attempt " + r.text(i, 3) + "/" +
                       r.text(i, 4) + " charged, " +
                       (dead ? std::string("dead-lettered (crashed_host)") : std::string("back to ready")),
                   r.text(i, 1), r.text(i, 0));
    }
    for (std::size_t i = 0; i < owners.size(); ++i)
        log::write(log::Level::warning, "store",
                   "host " + owners[i] + " is gone: " +
                       (messages[i].find("lease") != std::string::npos
                            ? "it was silent for longer than the lease"
                            : "its connection closed (it crashed or was killed)"));
    if (r.rows() > 0) {
        log::write(log::Level::warning, "store",
                   std::to_string(r.rows()) + " job(s) of dead hosts given back, " + std::to_string(running) +
                       " of them were running");
        notify_ = true;
    }
    return static_cast<std::size_t>(r.rows());
}

void PostgresStore::refresh_heads() {
    auto names = type_names();
    if (names.empty()) return;
    auto r = writer_->run(q("SELECT (SELECT max(j.priority) FROM {s}.jobs j WHERE j.type = t AND j.state = 1) FROM "
                            "unnest($1::text[]) WITH ORDINALITY AS u(t, k) ORDER BY k"),
                          pg::Params().add(pg::text_array(names)));
    std::vector<int> heads(names.size(), -2);
    for (int i = 0; i < r.rows() && i < static_cast<int>(heads.size()); ++i)
        if (!r.null(i, 0)) heads[static_cast<std::size_t>(i)] = static_cast<int>(r.int64(i, 0));
    set_db_heads(heads);
}

std::size_t PostgresStore::promote_due(TimePoint now) {
    auto r = writer_->run(q("UPDATE {s}.jobs SET state = 1 WHERE id IN (SELECT id FROM {s}.jobs WHERE state = 0 AND "
                            "run_at <= " +
                            ts(1) + " ORDER BY run_at LIMIT 10000 FOR UPDATE SKIP LOCKED)")
                              .c_str(),
                          pg::Params().add(to_ms(now)));
    auto n = r.affected();
    auto next =
        writer_->exec(q("SELECT (extract(epoch from min(run_at)) * 1000)::int8 FROM {s}.jobs WHERE state = 0").c_str());
    next_due_.reset();
    if (!next.null(0, 0)) next_due_ = from_ms(next.int64(0, 0));
    if (n > 0) notify_ = true;
    return n;
}

void PostgresStore::fold_counts() {
    // One host at a time; the others skip this round.
    auto got =
        writer_->run("SELECT pg_try_advisory_xact_lock($1::int8 * 4 + 1)", pg::Params().add(std::int64_t{lock_space_}));
    if (got.text(0, 0) != "t") return;
    writer_->exec(q("WITH d AS (DELETE FROM {s}.count_deltas RETURNING type, state, n), "
                    "s AS (SELECT type, state, sum(n) AS n FROM d GROUP BY 1, 2) "
                    "INSERT INTO {s}.counts AS c (type, state, n) SELECT type, state, n FROM s "
                    "ON CONFLICT (type, state) DO UPDATE SET n = c.n + excluded.n")
                      .c_str());
}

void PostgresStore::prune_locked(TimePoint now) {
    auto total = [this](int state) {
        auto r = writer_->run(q("SELECT coalesce(sum(n), 0)::int8 FROM (SELECT n FROM {s}.counts WHERE state = $1 "
                                "UNION ALL SELECT n FROM {s}.count_deltas WHERE state = $1) x"),
                              pg::Params().add(std::int64_t{state}));
        return static_cast<std::size_t>(std::max<std::int64_t>(0, r.int64(0, 0)));
    };
    if (options_.retain_done > 0 && total(kDone) > options_.retain_done)
        writer_->run(q("DELETE FROM {s}.jobs WHERE state = 3 AND id NOT IN (SELECT id FROM {s}.jobs WHERE state = 3 "
                       "ORDER BY finished_at DESC LIMIT $1)"),
                     pg::Params().add(static_cast<std::int64_t>(options_.retain_done)));
    if (options_.retain_done_for.count() > 0)
        writer_->run(q("DELETE FROM {s}.jobs WHERE state = 3 AND finished_at < " + ts(1)).c_str(),
                     pg::Params().add(to_ms(now - options_.retain_done_for)));
    if (total(kDead) > options_.retain_dead) {
        auto r = writer_->run(q("DELETE FROM {s}.jobs WHERE state = 4 AND id NOT IN (SELECT id FROM {s}.jobs WHERE "
                                "state = 4 ORDER BY finished_at DESC LIMIT $1)"),
                              pg::Params().add(static_cast<std::int64_t>(options_.retain_dead)));
        if (auto n = r.affected(); n > 0)
            log::write(log::Level::warning, "store",
                       "pruned " + std::to_string(n) +
                           " dead letter(s) beyond retain_dead = " + std::to_string(options_.retain_dead));
    }
}

void PostgresStore::prune() {
    submit(Op{[this] {
                  fold_counts();
                  prune_locked(Clock::now());
              },
              {},
              nullptr},
           true);
}

// One statement takes up to claim_size(wanted) ready jobs and looks at one more without taking it: its level is the
// best left beyond them (the head). It is locked like the others until the commit, so another host skips it meanwhile.
// (A separate look for the head cost a scan over the index entries of every job just taken.) The size is written
// into the statement, not passed: with LIMIT a parameter PostgreSQL planned the claim again at every call (a custom
// plan each time: 1.2 ms per 1000 jobs, about a tenth of the writer's busy time with 50 slots); with it a constant,
// each size is prepared once and its generic plan kept, and claim_size keeps the sizes few. The cache's target is
// "about": the next refill brings the rest.
std::vector<JobRecord> PostgresStore::reserve(const std::string& type, std::size_t wanted, bool aging, int& head) {
    std::vector<JobRecord> rows;
    head = -2;
    const auto want = claim_size(wanted);
    const auto n = std::to_string(want);
    // Each job taken gets its place in its line (see begin_run): in the order this host will start them (priority,
    // then age, as the cache keeps them), after every place given before.
    auto& line = lines_[type];
    std::vector<std::int64_t> seqs(line.begin(), line.end());
    const auto base = next_pos_;
    next_pos_ += static_cast<std::int64_t>(want) + 2;
    auto r = writer_->run(
        q(("WITH picked AS MATERIALIZED (SELECT id, priority, row_number() OVER (ORDER BY priority DESC, run_at, id) "
           "AS n FROM (SELECT id, priority, run_at FROM {s}.jobs WHERE type = $1 AND state = 1 ORDER BY priority "
           "DESC, run_at, id LIMIT " +
           std::to_string(want + 1) +
           " FOR UPDATE SKIP LOCKED) x), taken AS (UPDATE {s}.jobs j SET state = 2, lease_owner = $2, mark_seq = "
           "nullif(($3::int8[])[j.priority + 1], 0)::oid, mark_pos = $4::int8 + picked.n FROM picked WHERE j.id = "
           "picked.id AND picked.n <= " +
           n + " RETURNING " + columns("j.", true) +
           ", j.mark_seq, j.mark_pos) SELECT taken.*, (SELECT priority FROM picked WHERE n > " + n + ") FROM taken")
              .c_str()),
        pg::Params().add(type).add(options_.owner).add(pg::int_array(seqs)).add(base));
    auto read_taken = [this](const pg::Result& res, int i) {
        auto j = read_row(res, i);
        if (!res.null(i, 19)) j.mark_seq = static_cast<std::uint32_t>(res.int64(i, 19));
        j.mark_pos = res.int64(i, 20);
        return j;
    };
    for (int i = 0; i < r.rows(); ++i) rows.push_back(read_taken(r, i));
    if (r.rows() > 0 && !r.null(0, r.columns() - 1)) head = static_cast<int>(r.int64(0, r.columns() - 1));
    if (aging) {
        // the oldest job of each lower level too: it is the one aging raises first (see SqliteStore::reserve)
        const auto after = next_pos_;
        next_pos_ += 4;
        auto o = writer_->run(
            q(("WITH picked AS MATERIALIZED (SELECT x.id, p.level FROM generate_series(0, 3) AS p(level), LATERAL "
               "(SELECT id FROM {s}.jobs WHERE type = $1 AND state = 1 AND priority = p.level ORDER BY run_at, id "
               "LIMIT 1 FOR UPDATE SKIP LOCKED) x) UPDATE {s}.jobs j SET state = 2, lease_owner = $2, mark_seq = "
               "nullif(($3::int8[])[j.priority + 1], 0)::oid, mark_pos = $4::int8 + picked.level FROM picked WHERE "
               "j.id = picked.id RETURNING " +
               columns("j.", true) + ", j.mark_seq, j.mark_pos")
                  .c_str()),
            pg::Params().add(type).add(options_.owner).add(pg::int_array(seqs)).add(after));
        for (int i = 0; i < o.rows(); ++i) rows.push_back(read_taken(o, i));
        // (these may include the job looked at for the head: look again)
        head = -2;
        auto h = writer_->run(q("SELECT priority FROM {s}.jobs WHERE type = $1 AND state = 1 ORDER BY priority "
                                "DESC, run_at, id LIMIT 1"),
                              pg::Params().add(type));
        if (h.rows() > 0) head = static_cast<int>(h.int64(0, 0));
    }
    // A line that had no sequence gets one as its first jobs are taken (not before: a type with no jobs takes none),
    // and those jobs are given it in this transaction. With none free, their runs are marked in the table, and more
    // sequences are added.
    std::vector<std::int64_t> given, given_seqs;
    bool short_of_marks = false;
    for (auto& j : rows) {
        if (j.mark_seq != 0) continue;
        auto& seq = line[static_cast<std::size_t>(j.priority)];
        if (seq == 0 && options_.mark_sequences > 0) {
            std::lock_guard lock(marks_mutex_);
            if (!seq_marks_off_ && !free_marks_.empty()) {
                seq = static_cast<std::uint32_t>(mark_seqs_[free_marks_.back()]);
                free_marks_.pop_back();
            }
        }
        if (seq == 0) {
            short_of_marks = options_.mark_sequences > 0;
            continue;
        }
        j.mark_seq = seq;
        given.push_back(static_cast<std::int64_t>(j.id));
        given_seqs.push_back(seq);
    }
    if (!given.empty())
        writer_->run(q("UPDATE {s}.jobs j SET mark_seq = u.seq::oid FROM unnest($1::int8[], $2::int8[]) AS u(id, seq) "
                       "WHERE j.id = u.id"),
                     pg::Params().add(pg::int_array(given)).add(pg::int_array(given_seqs)));
    if (short_of_marks) marks_short_ = true;
    return rows;
}

ClaimResult PostgresStore::claim(const ClaimRequest& request) {
    // Serve reservations only while this host's lease is surely ours: after a long pause, the writer heartbeats
    // (and learns whether other hosts took our jobs) before anything starts; its commit wakes the executor. Nor while
    // the writer cannot reach the database: if every connection of this host was cut, other hosts take its jobs
    // within a second, and a run started from the cache then would run a second time there (and without a mark).
    auto age = steady_ms() - heartbeat_ok_ms_.load();
    if (reserving_ && (age > options_.lease.count() / 2 || unreachable_.load())) {
        poke_writer();
        ClaimResult none;
        for (std::size_t i = 0; i < request.types.size(); ++i) none.waiting.push_back(i);
        none.held_back = true;
        return none;
    }
    return ReservingStore::claim(request);
}

JobRecord PostgresStore::read_row(const pg::Result& r, int row) const {
    JobRecord j;
    j.id = static_cast<JobId>(r.int64(row, 0));
    j.type = r.text(row, 1);
    j.payload = r.text(row, 2);
    j.priority = static_cast<registry::Priority>(std::clamp<std::int64_t>(r.int64(row, 3), 0, 4));
    if (!r.null(row, 4)) j.unique_key = r.text(row, 4);
    j.attempt = static_cast<std::uint32_t>(r.int64(row, 5));
    j.max_attempts = static_cast<std::uint32_t>(r.int64(row, 6));
    auto state = r.int64(row, 7);
    j.run_at = from_ms(r.int64(row, 8));
    j.ready_since = j.run_at;
    j.created_at = from_ms(r.int64(row, 9));
    if (!r.null(row, 10)) j.started_at = from_ms(r.int64(row, 10));
    if (!r.null(row, 11)) j.finished_at = from_ms(r.int64(row, 11));
    if (!r.null(row, 12)) j.lease_owner = r.text(row, 12);
    j.from_schedule = r.text(row, 13) == "t";
    j.dead_reason = static_cast<DeadReason>(r.int64(row, 14));
    switch (state) {
    case kScheduled: j.state = JobState::scheduled; break;
    case kReady: j.state = JobState::ready; break;
    case kReserved: j.state = JobState::reserved; break;
    case kRunning: j.state = JobState::running; break;
    case kDone: j.state = JobState::done; break;
    default: j.state = JobState::dead; break;
    }
    try {
        auto errors = boost::json::parse(r.text(row, 15));
        for (const auto& e : errors.as_array()) {
            const auto& o = e.as_object();
            j.errors.push_back({static_cast<std::uint32_t>(o.at("attempt").to_number<std::int64_t>()),
                                from_ms(o.at("at").to_number<std::int64_t>()),
                                std::string(o.at("message").as_string())});
        }
    } catch (const std::exception&) {
        j.errors.push_back({0, {}, "(the error history of this job could not be read)"});
    }
    j.attempts_before = static_cast<std::uint32_t>(r.int64(row, 16));
    if (!r.null(row, 17)) j.result = result_from_json(r.text(row, 17));
    if (!r.null(row, 18)) j.progress = progress_from_json(r.text(row, 18));
    return j;
}

std::vector<EnqueueOutcome> PostgresStore::enqueue(std::span<const NewJob> jobs) {
    std::vector<EnqueueOutcome> out(jobs.size());
    if (jobs.empty()) return out;
    std::vector<std::string> types, payloads, keys, run_at, ticks;
    std::string prios = "{", maxes = "{", sched = "{", runs = "{", tks = "{";
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& n = jobs[i];
        types.push_back(n.type);
        payloads.push_back(n.payload);
        keys.push_back(n.unique_key);
        const char* sep = i ? "," : "";
        prios += sep + std::to_string(static_cast<int>(n.priority));
        maxes += sep + std::to_string(n.max_attempts);
        sched += sep + std::string(n.from_schedule ? "t" : "f");
        runs += sep + (n.run_at == TimePoint{} ? std::string("NULL") : std::to_string(to_ms(n.run_at)));
        tks += sep + (n.tick ? std::to_string(to_ms(*n.tick)) : std::string("NULL"));
    }
    // unique keys: NULL where empty
    std::string key_array = "{";
    for (std::size_t i = 0; i < keys.size(); ++i) {
        if (i) key_array += ',';
        if (keys[i].empty()) {
            key_array += "NULL";
            continue;
        }
        key_array += '"';
        for (char c : keys[i]) {
            if (c == '"' || c == '\\') key_array += '\\';
            key_array += c;
        }
        key_array += '"';
    }
    key_array += "}";
    auto params = std::make_shared<pg::Params>();
    params->add(pg::text_array(types))
        .add(pg::text_array(payloads))
        .add(prios + "}")
        .add(key_array)
        .add(maxes + "}")
        .add(runs + "}")
        .add(sched + "}")
        .add(tks + "}")
        .add(options_.owner);
    Op op;
    op.in_transaction = [&, params] {
        auto r = writer_->run(
            q("SELECT idx, id, created, tick_taken FROM {s}.enqueue_batch($1::text[], $2::json[], $3::smallint[], "
              "$4::text[], $5::int[], ARRAY(SELECT to_timestamp(x::float8 / 1000) FROM unnest($6::int8[]) x), "
              "$7::boolean[], ARRAY(SELECT to_timestamp(x::float8 / 1000) FROM unnest($8::int8[]) x), $9)"),
            *params);
        for (int i = 0; i < r.rows(); ++i) {
            auto idx = static_cast<std::size_t>(r.int64(i, 0));
            if (idx >= out.size()) continue;
            out[idx] = {static_cast<JobId>(r.int64(i, 1)), r.text(i, 2) == "t", r.text(i, 3) == "t"};
        }
    };
    op.after_commit = [&] {
        std::lock_guard lock(cache_mutex_);
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            if (!out[i].created) continue;
            auto& c = cache_locked(jobs[i].type);
            if (jobs[i].run_at == TimePoint{} || jobs[i].run_at <= Clock::now()) {
                c.maybe_in_db = true;
                c.db_head_level = std::max(c.db_head_level, static_cast<int>(jobs[i].priority));
                wake_after_batch_ = true;
            } else if (!next_due_ || jobs[i].run_at < *next_due_) {
                next_due_ = jobs[i].run_at;
            }
        }
    };
    try {
        submit(std::move(op), true);
    } catch (const pg::Error& e) {
        if (e.disconnect()) unavailable(e);
        throw std::runtime_error("the PostgreSQL store refused the enqueue: " + std::string(e.what()));
    }
    return out;
}

// The connection of start marks: asynchronous commits (a mark must outlive the host, not the server), in pipeline
// mode. Marks sent on a connection that failed before they were known to be applied are sent again first.
void PostgresStore::open_marks() {
    marks_ = pg::Connection::open(options_.url);
    // No notice is sent (the server writes those out at once: see begin_run), and no timeout set on the server
    // ends the session or a mark while the marks wait in its socket (the ones newer servers have are looked up).
    marks_->exec("SET synchronous_commit = off; SET client_min_messages = error; SET application_name = 'jobhost "
                 "marks'; SELECT set_config(name, '0', false) FROM pg_settings WHERE name IN ('statement_timeout', "
                 "'idle_session_timeout', 'client_connection_check_interval')");
    hold_lock(*marks_);
    for (const auto* sql : {"BEGIN", "COMMIT"}) marks_->prepare(sql);
    marks_->prepare(mark_sql_);
    marks_->prepare(mark_one_sql_);
    marks_->prepare(set_mark_sql_);
    marks_->prepare(set_marks_sql_);
    marks_->enter_pipeline();
    marks_unsynced_ = 0;
}

namespace {
// A run waiting for its group sleeps in the kernel until the group's state changes, with no spinning and no yield
// (std::atomic::wait spins with sched_yield first, which cost more context switches than it saved).
static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
void futex_wait(std::atomic<int>& state, int expected) {
    ::syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<int>& state, int how_many) {
    ::syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAKE_PRIVATE, how_many, nullptr, nullptr, 0);
}
} // namespace

// Start marks. A run's mark is in the server's socket before begin_run returns, and the run does not wait for the
// answer: the server applies what its socket holds even after this process died (it reads to the end before it
// sees the connection close), and the host counts as alive until then (the marks connection holds its lock), so
// the host that rescues the jobs sees every mark sent. That holds only while the server has no answer to send:
// a server that fails to write to a dead client ends the session, and drops what its socket still holds (marks sent
// with a Sync each were lost this way: 4 to 93 % of 5,000, when the client was killed with marks queued). So each mark
// is its own transaction in the pipeline (BEGIN, setval or INSERT, COMMIT, whose answers the server keeps until a
// Sync; a transaction that only sets sequences takes no transaction id and writes no commit record), and a
// Sync is sent only every kMarksPerSync groups, by the run whose group reaches it, which reads every answer before
// any further mark is sent; the answers held meanwhile (about 70 bytes a group) stay well within the server's 8 KiB
// output buffer, which it would write out when full. (Waiting for each answer instead cost each run a round trip:
// with 2 slots a host drained a backlog at about half the bare loop's pace.)
//
// Marks are group-committed: a run adds its ids to the open group; the first to find nobody writing takes the whole
// group (a new one opens) and writes it with one statement, so runs that start together share one statement,
// however many slots there are. The others wait on their group's state, not on the mutex: when a group is written,
// its runs go on without taking the mutex again (with 50 slots, half of the host's context switches were runs woken
// together queueing for it), and one run of the group that opened meanwhile (if any) is woken to write it.
RunToken PostgresStore::begin_run(std::span<const JobRecord> jobs) {
    if (reserving_ && !jobs.empty()) mark(jobs, false);
    return {};
}

void PostgresStore::taken_locked(const JobRecord& job) {
    if (job.mark_seq == 0) return;
    std::lock_guard lock(marks_mutex_); // (the cache's mutex is held: the order of the line)
    if (!seq_marks_off_) taken_[job.mark_seq].push_back({job.id, job.mark_pos, false});
}

void PostgresStore::mark(std::span<const JobRecord> jobs, bool sync) {
    std::unique_lock lock(marks_mutex_);
    // A line's sequence reaches a place once every job taken from the line before it started (they are started in
    // the order they were taken, but two slots may reach this point the other way round): until then a run is
    // marked in the table.
    auto line_of = [&](const JobRecord& j) -> std::deque<Taken>* {
        if (j.mark_seq == 0 || seq_marks_off_) return nullptr;
        auto it = taken_.find(j.mark_seq);
        return it == taken_.end() ? nullptr : &it->second;
    };
    std::vector<bool> in_line(jobs.size());
    for (std::size_t i = 0; i < jobs.size(); ++i)
        if (auto* line = line_of(jobs[i]))
            for (auto& t : *line)
                if (t.id == jobs[i].id && !t.started) {
                    t.started = true;
                    in_line[i] = true;
                    break;
                }
    // Passes the jobs at the head of a line that started; whether one of these is still held back by a job before it.
    auto held_back = [&] {
        bool held = false;
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            auto* line = in_line[i] ? line_of(jobs[i]) : nullptr;
            if (!line) continue;
            auto& reached = reached_[jobs[i].mark_seq];
            while (!line->empty() && line->front().started) {
                reached = std::max(reached, line->front().pos);
                line->pop_front();
            }
            held = held || std::any_of(line->begin(), line->end(), [&](const Taken& t) { return t.id == jobs[i].id; });
        }
        return held;
    };
    // The job before is most often a moment from its own start: a few yields let it get there (each run marked in the
    // table instead is a transaction of its own).
    for (int i = 0; held_back() && i < 4; ++i) {
        lock.unlock();
        ::sched_yield();
        lock.lock();
    }
    auto group = open_mark_group_;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& j = jobs[i];
        auto* line = in_line[i] ? line_of(j) : nullptr;
        if (line && std::none_of(line->begin(), line->end(), [&](const Taken& t) { return t.id == j.id; })) {
            auto reached = reached_[j.mark_seq];
            if (j.mark_pos <= reached) {
                auto at = std::find(group->seqs.begin(), group->seqs.end(), std::int64_t{j.mark_seq});
                if (at == group->seqs.end()) {
                    group->seqs.push_back(j.mark_seq);
                    group->values.push_back(reached);
                } else {
                    auto& v = group->values[static_cast<std::size_t>(at - group->seqs.begin())];
                    v = std::max(v, reached);
                }
                continue;
            }
        }
        table_marked_.insert(j.id);
        group->ids.push_back(static_cast<std::int64_t>(j.id));
        group->attempts.push_back(j.attempt);
    }
    group->runs += jobs.size();
    group->sync = group->sync || sync;
    while (marking_ || group != open_mark_group_) {
        lock.unlock();
        int state = group->state.load(std::memory_order_acquire);
        while (state == MarkGroup::waiting) {
            futex_wait(group->state, state);
            state = group->state.load(std::memory_order_acquire);
        }
        if (state == MarkGroup::done) return;
        lock.lock(); // asked to write it: unless another run took it first, it does
        if (marking_ || group != open_mark_group_) {
            lock.unlock();
            while (group->state.load(std::memory_order_acquire) != MarkGroup::done)
                futex_wait(group->state, MarkGroup::write_me);
            return;
        }
    }
    marking_ = true;
    if (last_group_runs_ > 2) {
        // Runs are starting together: those ready to start on this core join the group first (their threads run
        // while this one yields). With 50 slots a group held about 2 runs without it, and 20 to 35 with it. A lone
        // run (an idle host) does not yield, nor one after a group of 2: with 2 slots that is the most a group can
        // hold, and yielding after one cost the host 1.3 us and 0.9 context switches a job (--only-slots 2).
        lock.unlock();
        ::sched_yield();
        ::sched_yield();
        lock.lock();
    }
    open_mark_group_ = std::make_shared<MarkGroup>();
    last_group_runs_ = group->runs;
    lock.unlock();
    write_marks(*group);
    lock.lock();
    marking_ = false;
    auto next = open_mark_group_;
    bool wake_next = !next->ids.empty() || !next->seqs.empty() || next->sync;
    if (wake_next) next->state.store(MarkGroup::write_me, std::memory_order_release);
    lock.unlock();
    group->state.store(MarkGroup::done, std::memory_order_release);
    futex_wake(group->state, INT_MAX);
    if (wake_next) futex_wake(next->state, 1);
}

void PostgresStore::write_marks(MarkGroup& group) {
    const std::size_t kMarksPerSync = 64;
    const std::size_t kKeep = 65536; // marks kept for a new connection (while the database is away, runs go on)
    auto keep = [kKeep](std::vector<std::int64_t>& a, std::vector<std::int64_t>& b,
                        const std::vector<std::int64_t>& add_a, const std::vector<std::int64_t>& add_b) {
        a.insert(a.end(), add_a.begin(), add_a.end());
        b.insert(b.end(), add_b.begin(), add_b.end());
        if (a.size() > kKeep) { // the oldest runs have most likely ended
            auto drop = static_cast<std::ptrdiff_t>(a.size() - kKeep);
            a.erase(a.begin(), a.begin() + drop);
            b.erase(b.begin(), b.begin() + drop);
        }
    };
    keep(unapplied_ids_, unapplied_attempts_, group.ids, group.attempts);
    // (a later mark of the same sequence supersedes an earlier one; sending both in order is the same)
    keep(unapplied_seqs_, unapplied_values_, group.seqs, group.values);
    // A connection the server ended while it sat idle (or that has a failed mark to report) is found before the
    // send, and replaced; one that fails during it gets one more try, on a new connection.
    for (int attempt = 0; attempt < 2; ++attempt) {
        bool fresh = !marks_ || !marks_->silent();
        if (fresh) marks_.reset();
        try {
            if (fresh) {
                open_marks();
                // sequences this host no longer has (it registered again after other hosts dropped them) are left
                std::lock_guard lock(marks_mutex_);
                std::vector<std::int64_t> mine = mark_seqs_;
                std::sort(mine.begin(), mine.end());
                std::size_t n = 0;
                for (std::size_t i = 0; i < unapplied_seqs_.size(); ++i)
                    if (std::binary_search(mine.begin(), mine.end(), unapplied_seqs_[i])) {
                        unapplied_seqs_[n] = unapplied_seqs_[i];
                        unapplied_values_[n++] = unapplied_values_[i];
                    }
                unapplied_seqs_.resize(n);
                unapplied_values_.resize(n);
            }
            // on a new connection, every mark not known to be applied (this group's among them)
            const auto& ids = fresh ? unapplied_ids_ : group.ids;
            const auto& attempts = fresh ? unapplied_attempts_ : group.attempts;
            const auto& seqs = fresh ? unapplied_seqs_ : group.seqs;
            const auto& values = fresh ? unapplied_values_ : group.values;
            if (!ids.empty() || !seqs.empty()) {
                // A transaction even when only sequences are set (no transaction id, no commit record): the
                // sequences' locks are let go at its end, not held until the next Sync.
                marks_->send("BEGIN");
                if (ids.size() == 1)
                    marks_->send(mark_one_sql_, pg::Params().add(ids[0]).add(options_.owner).add(attempts[0]));
                else if (!ids.empty())
                    marks_->send(mark_sql_,
                                 pg::Params().add(pg::int_array(ids)).add(options_.owner).add(pg::int_array(attempts)));
                if (seqs.size() == 1)
                    marks_->send(set_mark_sql_, pg::Params().add(seqs[0]).add(values[0]));
                else if (!seqs.empty())
                    marks_->send(set_marks_sql_, pg::Params().add(pg::int_array(seqs)).add(pg::int_array(values)));
                marks_->send("COMMIT");
                marks_->flush();
                ++marks_unsynced_;
            }
            if (marks_unsynced_ > 0 && (group.sync || fresh || marks_unsynced_ >= kMarksPerSync)) {
                marks_->sync();
                marks_unsynced_ = 0;
            }
            if (marks_unsynced_ == 0) {
                unapplied_ids_.clear();
                unapplied_attempts_.clear();
                unapplied_seqs_.clear();
                unapplied_values_.clear();
            }
            return;
        } catch (const std::exception& e) {
            marks_.reset(); // reopened by the next try or the next group, which send these marks again first
            if (!fresh && attempt == 0) continue;
            log::write(log::Level::warning, "store",
                       std::string("could not record that ") +
                           std::to_string(unapplied_ids_.size() + unapplied_seqs_.size()) + " run(s) started (" +
                           e.what() +
                           "); they run anyway, their marks are sent again on a new connection, and a crash before "
                           "then would not charge them");
            return;
        }
    }
}

// Outcomes are written together: each finish() adds to a list that one queued op writes, however many runs
// ended while the last transaction committed, with one statement for every job that finished and is deleted.
void PostgresStore::finish(std::span<const Outcome> outcomes, RunToken) {
    if (closed_) return;
    bool queue = false;
    {
        std::lock_guard lock(outcomes_mutex_);
        pending_outcomes_.insert(pending_outcomes_.end(), outcomes.begin(), outcomes.end());
        queue = !outcomes_queued_;
        outcomes_queued_ = true;
    }
    if (!queue) return;
    auto mine = std::make_shared<std::vector<Outcome>>();
    Op op;
    op.keep_on_disconnect = true; // kept, with what came meanwhile, until the database takes them
    op.in_transaction = [this, mine] {
        {
            std::lock_guard lock(outcomes_mutex_);
            mine->insert(mine->end(), pending_outcomes_.begin(), pending_outcomes_.end());
            pending_outcomes_.clear();
            outcomes_queued_ = false;
        }
        write_outcomes(*mine);
    };
    op.after_commit = [this, mine] {
        {
            // Jobs given back that never started leave their lines: the lines' sequences may pass their places now
            // (before, a crash would have charged them).
            std::lock_guard lock(marks_mutex_);
            for (const auto& o : *mine) {
                if (o.kind != Outcome::Kind::released) continue;
                for (auto& [seq, line] : taken_) {
                    auto it = std::find_if(line.begin(), line.end(),
                                           [&](const Taken& t) { return t.id == o.id && !t.started; });
                    if (it == line.end()) continue;
                    line.erase(it);
                    break;
                }
            }
        }
        std::lock_guard lock(cache_mutex_);
        for (const auto& o : *mine) {
            bool ready = o.kind == Outcome::Kind::released || (o.kind == Outcome::Kind::retry && o.retry_at <= o.at);
            if (!ready) continue;
            auto& c = cache_locked(o.type);
            c.maybe_in_db = true;
            c.db_head_level = -1;
            wake_after_batch_ = true;
        }
    };
    try {
        submit(std::move(op), false);
    } catch (const std::exception& e) {
        log::write(log::Level::warning, "store", std::string("an outcome came after the store closed: ") + e.what());
    }
}

void PostgresStore::write_outcomes(const std::vector<Outcome>& outcomes) {
    // A run given back uncharged keeps its attempt: its start mark in the table, if it were applied after this, would
    // match the job's next reservation by this host and make it look running. So every mark sent is applied first.
    // (A place in line cannot: the next reservation gets a place further on.)
    std::vector<std::int64_t> table_marked;
    bool released = std::any_of(outcomes.begin(), outcomes.end(),
                                [](const Outcome& o) { return o.kind == Outcome::Kind::released; });
    {
        std::lock_guard lock(marks_mutex_);
        for (const auto& o : outcomes)
            if (table_marked_.erase(o.id) > 0) table_marked.push_back(static_cast<std::int64_t>(o.id));
    }
    if (released && !table_marked.empty()) mark({}, true);
    std::vector<std::int64_t> deleted;
    std::vector<const Outcome*> deleted_o, kept_o;         // what each statement is sent, to name what it missed
    std::vector<std::pair<std::string, std::string>> lost; // (id, type)
    // The ids a statement returned; each of `sent` it did not return is lost (this host no longer holds the job).
    auto returned = [&lost](const pg::Result& r, const std::vector<const Outcome*>& sent) {
        std::set<std::int64_t> got;
        for (int i = 0; i < r.rows(); ++i) got.insert(r.int64(i, 0));
        if (got.size() < sent.size())
            for (const auto* o : sent)
                if (!got.count(static_cast<std::int64_t>(o->id))) lost.emplace_back(std::to_string(o->id), o->type);
        return got;
    };
    bool keep_done = options_.retain_done > 0 || options_.retain_done_for.count() > 0;
    std::vector<std::int64_t> kept, kept_started, kept_finished; // done, and kept (retain_done)
    std::vector<std::string> kept_results;                       // JSON text, or empty for none
    std::vector<const Outcome*> changed;                         // retries, dead letters and releases
    for (const auto& o : outcomes) {
        if ((o.kind == Outcome::Kind::done && !keep_done) || o.kind == Outcome::Kind::dropped) {
            deleted.push_back(static_cast<std::int64_t>(o.id));
            deleted_o.push_back(&o);
            continue;
        }
        if (o.kind == Outcome::Kind::done) {
            kept.push_back(static_cast<std::int64_t>(o.id));
            kept_o.push_back(&o);
            kept_started.push_back(to_ms(o.started));
            kept_finished.push_back(to_ms(o.at));
            kept_results.push_back(o.result ? result_json(*o.result) : std::string());
            continue;
        }
        changed.push_back(&o);
    }
    if (!changed.empty()) { // one statement for every retry, dead letter and release
        // kind: 0 retry, 1 dead, 2 released (back to ready, not charged: the error is kept with the attempt it ran)
        std::vector<std::int64_t> ids, kinds, at, started, retry_at, reason, state;
        std::vector<std::string> errors;
        for (const auto* o : changed) {
            ids.push_back(static_cast<std::int64_t>(o->id));
            bool later = o->kind == Outcome::Kind::retry && o->retry_at > o->at;
            kinds.push_back(o->kind == Outcome::Kind::retry ? 0 : o->kind == Outcome::Kind::dead ? 1 : 2);
            state.push_back(o->kind == Outcome::Kind::dead ? kDead : later ? kScheduled : kReady);
            at.push_back(to_ms(o->at));
            started.push_back(to_ms(o->started));
            retry_at.push_back(to_ms(o->retry_at));
            reason.push_back(static_cast<std::int64_t>(o->reason));
            errors.push_back(o->error);
        }
        auto r = writer_->run(
            q("UPDATE {s}.jobs j SET state = u.state, attempt = j.attempt + (u.kind < 2)::int, "
              "run_at = CASE WHEN u.kind = 0 THEN to_timestamp(u.retry_at::float8 / 1000) ELSE j.run_at END, "
              "started_at = CASE WHEN u.kind < 2 THEN to_timestamp(u.started::float8 / 1000) ELSE j.started_at END, "
              "finished_at = CASE WHEN u.kind = 1 THEN to_timestamp(u.at::float8 / 1000) ELSE j.finished_at END, "
              "dead_reason = CASE WHEN u.kind = 1 THEN u.reason::smallint ELSE j.dead_reason END, "
              "lease_owner = NULL, errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt + "
              "1, 'at', u.at, 'message', u.error)) "
              "FROM unnest($1::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], "
              "$9::text[]) AS u(id, kind, state, at, started, retry_at, reason, error) "
              "WHERE j.id = u.id AND j.state IN (2, 5) AND j.lease_owner = $2 RETURNING j.id"),
            pg::Params()
                .add(pg::int_array(ids))
                .add(options_.owner)
                .add(pg::int_array(kinds))
                .add(pg::int_array(state))
                .add(pg::int_array(at))
                .add(pg::int_array(started))
                .add(pg::int_array(retry_at))
                .add(pg::int_array(reason))
                .add(pg::text_array(errors)));
        auto got = returned(r, changed);
        for (const auto* o : changed) {
            if (!got.count(static_cast<std::int64_t>(o->id))) continue;
            bool later = o->kind == Outcome::Kind::retry && o->retry_at > o->at;
            if (later && (!next_due_ || o->retry_at < *next_due_)) next_due_ = o->retry_at;
            if (!later && o->kind != Outcome::Kind::dead) notify_ = true; // ready again now
        }
    }
    if (!kept.empty()) { // one statement for every finished job that is kept
        auto r = writer_->run(q("UPDATE {s}.jobs j SET state = 3, attempt = j.attempt + 1, started_at = "
                                "to_timestamp(u.s::float8 / 1000), finished_at = to_timestamp(u.f::float8 / 1000), "
                                "lease_owner = NULL, result = nullif(u.r, '')::jsonb "
                                "FROM unnest($1::int8[], $3::int8[], $4::int8[], $5::text[]) AS u(id, s, f, r) "
                                "WHERE j.id = u.id AND j.state IN (2, 5) AND j.lease_owner = $2 RETURNING j.id"),
                              pg::Params()
                                  .add(pg::int_array(kept))
                                  .add(options_.owner)
                                  .add(pg::int_array(kept_started))
                                  .add(pg::int_array(kept_finished))
                                  .add(pg::text_array(kept_results)));
        returned(r, kept_o);
    }
    {
        // one statement: the finished jobs that are deleted, and the start marks in the table
        auto r =
            writer_->run(q("WITH d AS (DELETE FROM {s}.jobs WHERE id = ANY($1::int8[]) AND state IN (2, 5) AND "
                           "lease_owner = $2 RETURNING id), m AS (DELETE FROM {s}.running WHERE id = "
                           "ANY($3::int8[]) AND owner = $2) SELECT id FROM d"),
                         pg::Params().add(pg::int_array(deleted)).add(options_.owner).add(pg::int_array(table_marked)));
        returned(r, deleted_o);
    }
    for (const auto& [id, type] : lost)
        log::write(log::Level::warning, "store",
                   "job " + id +
                       ": its outcome was not recorded, because this host no longer holds the job (it was "
                       "silent for longer than [store] lease, and another host took the job over)",
                   type, id);
}

std::optional<TimePoint> PostgresStore::next_due(const std::set<std::string>&, TimePoint) {
    return std::nullopt; // the writer promotes due jobs itself and wakes the executor
}

void PostgresStore::flush() {
    ReservingStore::flush();
    if (reserving_) mark({}, true); // every start mark sent is applied
}

pg::Connection& PostgresStore::reader() {
    if (!reader_ || !reader_->ok()) {
        reader_.reset();
        reader_ = pg::Connection::open(options_.url);
        reader_->exec("SET application_name = 'jobhost reads'");
    }
    return *reader_;
}

std::optional<JobRecord> PostgresStore::get(JobId id) {
    std::lock_guard lock(reader_mutex_);
    auto r = reader().run(q(("SELECT " + columns("j.") + " FROM {s}.jobs j WHERE j.id = $1").c_str()),
                          pg::Params().add(static_cast<std::int64_t>(id)));
    if (r.rows() == 0) return std::nullopt;
    auto j = read_row(r, 0);
    if (j.state == JobState::running) j.attempt += 1; // the attempt it is on
    return j;
}

std::vector<JobRecord> PostgresStore::list(const ListFilter& f) {
    std::string sql = "SELECT " + columns("j.") + " FROM {s}.jobs j WHERE true";
    pg::Params p;
    if (f.type) {
        p.add(*f.type);
        sql += " AND j.type = $" + std::to_string(p.values.size());
    }
    if (f.before) {
        p.add(static_cast<std::int64_t>(*f.before));
        sql += " AND j.id < $" + std::to_string(p.values.size());
    }
    if (f.state) {
        switch (*f.state) {
        case JobState::scheduled: sql += " AND j.state = 0"; break;
        case JobState::ready: sql += " AND j.state = 1"; break;
        case JobState::reserved: sql += " AND j.state = 2 AND NOT " + running_of("j."); break;
        case JobState::running: sql += " AND j.state = 2 AND " + running_of("j."); break;
        case JobState::done: sql += " AND j.state = 3"; break;
        case JobState::dead: sql += " AND j.state = 4"; break;
        }
    }
    // (a limit of SIZE_MAX, "all", was bound as -1, which PostgreSQL refuses: `jobhost dlq list` failed)
    p.add(static_cast<std::int64_t>(std::min<std::size_t>(f.limit, std::numeric_limits<std::int64_t>::max())));
    sql += " ORDER BY j.id DESC LIMIT $" + std::to_string(p.values.size());
    std::lock_guard lock(reader_mutex_);
    auto r = reader().run(q(sql.c_str()), p);
    std::vector<JobRecord> out;
    for (int i = 0; i < r.rows(); ++i) {
        out.push_back(read_row(r, i));
        if (out.back().state == JobState::running) out.back().attempt += 1;
    }
    return out;
}

std::vector<JobRecord> PostgresStore::dead_letters(const DeadLetterFilter& filter) {
    auto out = list({filter.type, JobState::dead, filter.limit});
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
}

std::optional<std::uint64_t> PostgresStore::size_on_disk() {
    std::lock_guard lock(reader_mutex_);
    auto r = reader().run("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c JOIN "
                          "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
                          pg::Params().add(options_.schema));
    return static_cast<std::uint64_t>(r.int64(0, 0));
}

void PostgresStore::progress(JobId id, const Progress& p) {
    if (closed_) return;
    auto text = std::make_shared<std::string>(progress_json(p));
    Op op;
    op.in_transaction = [this, id, text] {
        writer_->run(q("UPDATE {s}.jobs SET progress = $2::jsonb WHERE id = $1 AND state = 2"),
                     pg::Params().add(static_cast<std::int64_t>(id)).add(*text));
    };
    try {
        submit(std::move(op), false);
    } catch (const std::exception&) { // closing meanwhile: progress is not worth keeping a run for
    }
}

std::size_t PostgresStore::replay(std::span<const JobId> ids, TimePoint now) {
    std::vector<std::int64_t> v(ids.begin(), ids.end());
    std::size_t n = 0;
    submit(Op{[&] {
                  // a replay counts as queued again (state -1 in counts), like the other engines
                  auto r = writer_->run(
                      // a fresh set of attempts, the same size as the one it had; the count goes on
                      q(("WITH r AS (UPDATE {s}.jobs j SET state = 1, max_attempts = attempt + max_attempts - "
                         "least(max_attempts, attempts_before), attempts_before = attempt, dead_reason = 0, run_at = " +
                         ts(2) +
                         ", finished_at = NULL WHERE id = ANY($1::int8[]) AND state = 4 AND NOT EXISTS (SELECT 1 "
                         "FROM {s}.jobs o WHERE o.type = j.type AND o.unique_key = j.unique_key AND o.state IN (0, "
                         "1, 2, 5)) RETURNING j.type), c AS (INSERT INTO {s}.count_deltas (type, state, n) SELECT "
                         "type, -1, count(*) FROM r GROUP BY 1) SELECT count(*) FROM r")
                            .c_str()),
                      pg::Params().add(pg::int_array(v)).add(to_ms(now)));
                  n = static_cast<std::size_t>(r.int64(0, 0));
                  if (n > 0) notify_ = true;
              },
              [this] {
                  std::lock_guard lock(cache_mutex_);
                  for (auto& c : caches_) {
                      c.maybe_in_db = true;
                      c.db_head_level = -1;
                  }
                  wake_after_batch_ = true;
              },
              nullptr},
           true);
    return n;
}

std::size_t PostgresStore::purge(std::span<const JobId> ids) {
    std::vector<std::int64_t> v(ids.begin(), ids.end());
    std::size_t n = 0;
    submit(Op{[&] {
                  n = writer_
                          ->run(q("DELETE FROM {s}.jobs WHERE id = ANY($1::int8[]) AND state = 4"),
                                pg::Params().add(pg::int_array(v)))
                          .affected();
              },
              {},
              nullptr},
           true);
    return n;
}

std::size_t PostgresStore::purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) {
    std::size_t n = 0;
    submit(Op{[&] {
                  std::string sql = "DELETE FROM {s}.jobs WHERE state = 4";
                  pg::Params p;
                  if (type) {
                      p.add(*type);
                      sql += " AND type = $" + std::to_string(p.values.size());
                  }
                  if (older_than) {
                      p.add(to_ms(*older_than));
                      sql += " AND finished_at < " + ts(static_cast<int>(p.values.size()));
                  }
                  n = writer_->run(q(sql.c_str()), p).affected();
              },
              {},
              nullptr},
           true);
    return n;
}

std::map<std::string, TypeCounts> PostgresStore::counts() {
    std::map<std::string, TypeCounts> out;
    std::lock_guard lock(reader_mutex_);
    auto r = reader().exec(q("SELECT type, state, sum(n)::int8 FROM (SELECT type, state, n FROM {s}.counts UNION ALL "
                             "SELECT type, state, n FROM {s}.count_deltas) x GROUP BY 1, 2 HAVING sum(n) <> 0")
                               .c_str());
    for (int i = 0; i < r.rows(); ++i) {
        auto& c = out[r.text(i, 0)];
        auto n = static_cast<std::size_t>(std::max<std::int64_t>(0, r.int64(i, 2)));
        switch (r.int64(i, 1)) {
        case -1: c.enqueued = n; break;
        case kScheduled: c.scheduled = n; break;
        case kReady: c.ready = n; break;
        case kReserved: c.reserved = n; break;
        case kRunning: c.running = n; break;
        case kDone: c.done = n; break;
        default: c.dead = n; break;
        }
    }
    // held jobs are reserved unless their host marked them started: few rows, whatever the backlog
    auto run = reader().exec(q("SELECT j.type, count(*) FROM {s}.running_now() r JOIN {s}.jobs j ON j.id = r.id AND "
                               "j.state = 2 AND j.lease_owner = r.owner AND j.attempt + 1 = r.attempt GROUP BY 1"));
    for (int i = 0; i < run.rows(); ++i) {
        auto& c = out[run.text(i, 0)];
        auto n = static_cast<std::size_t>(run.int64(i, 1));
        c.running = std::min(n, c.reserved);
        c.reserved -= c.running;
    }
    std::vector<std::string> waiting;
    for (const auto& [type, c] : out)
        if (c.ready > 0) waiting.push_back(type);
    if (!waiting.empty()) {
        // the longest-waiting ready job: one index seek per type and level
        auto o = reader().run(q("SELECT t, (SELECT (extract(epoch from min(m)) * 1000)::int8 FROM (SELECT (SELECT "
                                "run_at FROM {s}.jobs WHERE type = t AND state = 1 AND priority = p ORDER BY run_at "
                                "LIMIT 1) AS m FROM generate_series(0, 4) p) x) FROM unnest($1::text[]) t"),
                              pg::Params().add(pg::text_array(waiting)));
        for (int i = 0; i < o.rows(); ++i)
            if (!o.null(i, 1)) out[o.text(i, 0)].oldest_ready = from_ms(o.int64(i, 1));
    }
    return out;
}

void PostgresStore::set_type_defaults(const std::map<std::string, TypeDefaults>& defaults) {
    std::vector<std::string> names;
    std::string prios = "{", maxes = "{";
    for (const auto& [type, d] : defaults) {
        const char* sep = names.empty() ? "" : ",";
        names.push_back(type);
        (prios += sep) += std::to_string(static_cast<int>(d.priority)); // (sep + ...: a GCC 12 -Wrestrict false alarm)
        (maxes += sep) += std::to_string(d.max_attempts);
    }
    if (names.empty()) return;
    try {
        submit(Op{[&] {
                      writer_->run(q("INSERT INTO {s}.types AS t (type, priority, max_attempts) SELECT * FROM "
                                     "unnest($1::text[], $2::smallint[], $3::int[]) ON CONFLICT (type) DO UPDATE SET "
                                     "priority = excluded.priority, max_attempts = excluded.max_attempts, updated_at "
                                     "= now()"),
                                   pg::Params().add(pg::text_array(names)).add(prios + "}").add(maxes + "}"));
                  },
                  {},
                  nullptr},
               true);
    } catch (const std::exception& e) {
        log::write(log::Level::warning, "store",
                   std::string("could not publish the job types' defaults for SQL enqueues: ") + e.what());
    }
}

void PostgresStore::io_loop() {
    using boost::asio::posix::stream_descriptor;
    auto& io = *io_;
    const std::string channel = options_.schema + "_jobs";
    std::function<void()> listen, reconnect_later;
    reconnect_later = [&] {
        io.listen_socket.reset();
        io.listener.reset();
        io.backoff = std::clamp(io.backoff * 2, std::chrono::milliseconds(50), std::chrono::milliseconds(2000));
        static thread_local std::mt19937 rng{std::random_device{}()};
        auto jitter = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 100)(rng));
        io.retry.expires_after(io.backoff + jitter);
        io.retry.async_wait([&](boost::system::error_code ec) {
            if (!ec) listen();
        });
    };
    listen = [&] {
        try {
            if (!io.listener) {
                io.listener = pg::Connection::open(options_.url);
                io.listener->exec("SET application_name = 'jobhost listen'; LISTEN " + channel);
                hold_lock(*io.listener);
                PQsetnonblocking(io.listener->get(), 1);
                io.listen_socket = std::make_unique<stream_descriptor>(io.context, ::dup(io.listener->socket()));
                io.backoff = std::chrono::milliseconds(0);
                db_changed_ = true; // anything queued while we did not listen
                poke_writer();
            }
        } catch (const std::exception& e) {
            if (io.backoff.count() == 0)
                log::write(log::Level::warning, "store",
                           std::string("cannot listen for new jobs (") + e.what() + "); retrying with back-off");
            reconnect_later();
            return;
        }
        io.listen_socket->async_wait(stream_descriptor::wait_read, [&](boost::system::error_code ec) {
            if (ec) return;
            PGconn* c = io.listener->get();
            if (!PQconsumeInput(c)) {
                // the connection broke: the writer looks at once whether the database can still be reached (claims
                // wait while it cannot), rather than at its next transaction
                poke_writer();
                reconnect_later();
                return;
            }
            bool others = false;
            while (PGnotify* n = PQnotifies(c)) {
                if (options_.owner != n->extra) others = true;
                PQfreemem(n);
            }
            if (others) {
                db_changed_ = true;
                poke_writer();
            }
            listen();
        });
    };
    listen();
    io.context.run();
    io.listen_socket.reset();
    io.listener.reset();
}

void PostgresStore::close() {
    if (closed_.exchange(true)) return;
    if (io_) {
        io_->context.stop();
        if (io_thread_.joinable()) io_thread_.join();
    }
    if (options_.host) {
        clear_caches();
        {
            std::lock_guard lock(marks_mutex_); // no run sets a sequence after this (they become spares)
            seq_marks_off_ = true;
            free_marks_.clear();
        }
        // sequences being added are this host's once added: they become spares with the others (joined here, before
        // the writer hands them back; none is added after seq_marks_off_)
        while (growing_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        mark({}, true); // every start mark sent is applied, so that what still runs is charged
        try {
            submit(Op{[this] {
                          auto now = Clock::now();
                          // what still runs is charged first; what is left was only reserved, and goes back
                          auto r = writer_->run(
                              q(("UPDATE {s}.jobs SET state = CASE WHEN attempt + 1 >= max_attempts THEN 4 ELSE 1 "
                                 "END, attempt = attempt + 1, run_at = " +
                                 ts(2) + ", finished_at = CASE WHEN attempt + 1 >= max_attempts THEN " + ts(2) +
                                 " END, dead_reason = CASE WHEN attempt + 1 >= max_attempts THEN 6 ELSE 0 END, "
                                 "lease_owner = NULL, errors = errors || jsonb_build_array(jsonb_build_object("
                                 "'attempt', attempt + 1, 'at', $2::int8, 'message', 'the host stopped while this "
                                 "job was still running: it did not return after cancellation within "
                                 "shutdown_grace + stuck_grace')) WHERE state = 2 AND lease_owner = $1 AND " +
                                 running_of("{s}.jobs.") + " RETURNING id, type")
                                    .c_str()),
                              pg::Params().add(options_.owner).add(to_ms(now)));
                          writer_->run(
                              q("UPDATE {s}.jobs SET state = 1, lease_owner = NULL WHERE state = 2 AND lease_owner = "
                                "$1"),
                              pg::Params().add(options_.owner));
                          writer_->run(q("DELETE FROM {s}.running WHERE owner = $1"), pg::Params().add(options_.owner));
                          // (spares for the next host to start: creating them costs about 0.35 ms each)
                          if (host_id_) writer_->run(q("SELECT {s}.spare_marks($1)"), pg::Params().add(*host_id_));
                          for (int i = 0; i < r.rows(); ++i)
                              log::write(log::Level::warning, "store",
                                         "job " + r.text(i, 0) +
                                             " was still running when this host stopped; its attempt was charged",
                                         r.text(i, 1), r.text(i, 0));
                          writer_->run(q("DELETE FROM {s}.hosts WHERE owner = $1"), pg::Params().add(options_.owner));
                          left_ = true;
                          notify_ = true;
                      },
                      {},
                      nullptr},
                   true);
        } catch (const std::exception& e) {
            log::write(log::Level::error, "store",
                       std::string("closing: could not give back this host's jobs (") + e.what() +
                           "); another host recovers them once this host's lease expires");
        }
    }
    stop_writer();
    if (grow_thread_.joinable()) grow_thread_.join();
    writer_.reset();
    marks_.reset();
    std::lock_guard lock(reader_mutex_);
    reader_.reset();
}

} // namespace jobhost::store
