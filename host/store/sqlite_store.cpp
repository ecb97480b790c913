#include "store/sqlite_store.hpp"

#include "store/job_json.hpp"

#include "log/log.hpp"
#include "store/priority_levels.hpp"

#include <boost/json.hpp>

#include <algorithm>

namespace jobhost::store {

namespace fs = std::filesystem;
using sqlite::SqliteError;
using sqlite::Statement;

namespace {

// States as stored. Reserved and running share kHeld: which one a held job is, its host's record says.
constexpr std::int64_t kScheduled = 0, kReady = 1, kHeld = 2, kDone = 3, kDead = 4;

std::int64_t to_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
    return TimePoint(std::chrono::milliseconds(ms));
}

const char* kColumns = "id, type, payload, priority, unique_key, attempt, max_attempts, state, run_at, created_at, "
                       "started_at, finished_at, lease_owner, lease_expiry, from_schedule, dead_reason, errors, "
                       "attempts_before, result, progress";

// The jobs table as of version 2 (version 3 adds columns: kVersion3). AUTOINCREMENT: an id is never handed out twice,
// whatever was deleted.
const char* kJobsTable = R"(CREATE TABLE jobs (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         type TEXT NOT NULL,
         payload TEXT NOT NULL,
         priority INTEGER NOT NULL,
         unique_key TEXT,
         attempt INTEGER NOT NULL DEFAULT 0,
         max_attempts INTEGER NOT NULL,
         state INTEGER NOT NULL,
         run_at INTEGER NOT NULL,
         created_at INTEGER NOT NULL,
         started_at INTEGER,
         finished_at INTEGER,
         lease_owner TEXT,
         lease_expiry INTEGER,
         from_schedule INTEGER NOT NULL DEFAULT 0,
         dead_reason INTEGER NOT NULL DEFAULT 0,
         errors TEXT NOT NULL DEFAULT '[]'))";

// Indexes, counters kept by triggers in the same transaction as each change, and the schedules' last ticks.
const char* kSchemaRest = R"(
       CREATE INDEX jobs_ready ON jobs(type, state, priority DESC, run_at, id);
       CREATE INDEX jobs_due ON jobs(state, run_at);
       CREATE INDEX jobs_lease ON jobs(state, lease_expiry);
       CREATE INDEX jobs_finished ON jobs(state, finished_at);
       CREATE UNIQUE INDEX jobs_unique ON jobs(type, unique_key)
         WHERE unique_key IS NOT NULL AND state IN (0, 1, 2);
       CREATE TABLE type_counts (type TEXT NOT NULL, state INTEGER NOT NULL, n INTEGER NOT NULL,
                                 PRIMARY KEY (type, state)) WITHOUT ROWID;
       CREATE TABLE type_totals (type TEXT NOT NULL PRIMARY KEY, enqueued INTEGER NOT NULL) WITHOUT ROWID;
       CREATE TABLE schedule_ticks (type TEXT NOT NULL PRIMARY KEY, tick_at INTEGER NOT NULL) WITHOUT ROWID;
       CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
         INSERT INTO type_counts (type, state, n) VALUES (NEW.type, NEW.state, 1)
           ON CONFLICT (type, state) DO UPDATE SET n = n + 1;
         INSERT INTO type_totals (type, enqueued) VALUES (NEW.type, 1)
           ON CONFLICT (type) DO UPDATE SET enqueued = enqueued + 1;
       END;
       CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
         UPDATE type_counts SET n = n - 1 WHERE type = OLD.type AND state = OLD.state;
       END;
       CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
         UPDATE type_counts SET n = n - 1 WHERE type = OLD.type AND state = OLD.state;
         INSERT INTO type_counts (type, state, n) VALUES (NEW.type, NEW.state, 1)
           ON CONFLICT (type, state) DO UPDATE SET n = n + 1;
       END;
       CREATE TRIGGER jobs_count_replay AFTER UPDATE OF state ON jobs WHEN OLD.state = 4 AND NEW.state IN (0, 1)
       BEGIN
         UPDATE type_totals SET enqueued = enqueued + 1 WHERE type = NEW.type;
       END;)";

// 2 -> 3: results, progress, and attempts counted across retries from the dead-letter queue.
const char* kVersion3 = "ALTER TABLE jobs ADD COLUMN attempts_before INTEGER NOT NULL DEFAULT 0; "
                        "ALTER TABLE jobs ADD COLUMN result TEXT; ALTER TABLE jobs ADD COLUMN progress TEXT;";

void migrate_to_2(sqlite::Connection& w, std::int64_t version, TimePoint now);

// Brings a file from `version` to kSchemaVersion, inside the caller's transaction.
void migrate(sqlite::Connection& w, std::int64_t version, TimePoint now) {
    if (version == 0) {
        w.exec(kJobsTable);
        w.exec(kSchemaRest);
    } else if (version == 1) {
        migrate_to_2(w, version, now);
    }
    w.exec(kVersion3);
}

void migrate_to_2(sqlite::Connection& w, std::int64_t, TimePoint now) {
    // 1 -> 2: ids never reused (AUTOINCREMENT), scheduled jobs in a state of their own, counters, ticks. Version 1
    // charged an attempt when it leased; its leased jobs go back to ready as they are.
    std::string n = std::to_string(to_ms(now));
    w.exec("ALTER TABLE jobs RENAME TO jobs_v1");
    w.exec("DROP INDEX IF EXISTS jobs_ready; DROP INDEX IF EXISTS jobs_lease; DROP INDEX IF EXISTS jobs_finished; "
           "DROP INDEX IF EXISTS jobs_unique");
    w.exec(kJobsTable);
    w.exec(std::string("INSERT INTO jobs SELECT id, type, payload, priority, unique_key, attempt, max_attempts, "
                       "CASE WHEN state = 1 AND run_at > ") +
           n + " THEN 0 WHEN state = 2 THEN 1 ELSE state END, run_at, created_at, started_at, finished_at, " +
           "CASE WHEN state = 2 THEN NULL ELSE lease_owner END, CASE WHEN state = 2 THEN NULL ELSE lease_expiry END, " +
           "from_schedule, dead_reason, errors FROM jobs_v1");
    w.exec("DROP TABLE jobs_v1");
    w.exec(kSchemaRest);
    w.exec("INSERT INTO type_counts SELECT type, state, COUNT(*) FROM jobs GROUP BY 1, 2");
    w.exec("INSERT INTO type_totals SELECT type, COUNT(*) FROM jobs GROUP BY 1");
}

std::string describe_death(const std::string& owner, const std::string& cause) {
    return "the host died while this job was running (" + (cause.empty() ? std::string() : cause + ", ") + "host " +
           owner + ")";
}

} // namespace

SqliteStore::SqliteStore(SqliteOptions options)
    : ReservingStore(options.host, options.prefetch), options_(std::move(options)) {}

core::Expected<std::unique_ptr<SqliteStore>> SqliteStore::open(const SqliteOptions& options) {
    const std::string path = options.path.string();
    std::error_code ec;
    if (!fs::exists(options.path, ec)) {
        if (!options.create)
            return core::Error{"no store at " + path +
                               ": the file does not exist; start 'jobhost run' once to create it, or check [store] "
                               "path and --config"};
        if (options.path.has_parent_path()) fs::create_directories(options.path.parent_path(), ec);
        if (ec) return core::Error{"cannot create the folder of the store " + path + ": " + ec.message()};
    }
    std::unique_ptr<SqliteStore> store(new SqliteStore(options));
    if (store->options_.owner.empty()) store->options_.owner = HostRecord::make_owner();
    store->hosts_dir_ = HostRecord::folder_of(options.path);
    try {
        int flags = SQLITE_OPEN_READWRITE | (options.create ? SQLITE_OPEN_CREATE : 0);
        store->writer_ = std::make_unique<sqlite::Connection>(path, flags);
        auto& w = *store->writer_;
        sqlite3_busy_timeout(w.get(), static_cast<int>(options.busy_timeout.count()));
        // The first read of the file: a corrupt or foreign file fails here, and is left untouched.
        std::int64_t version = w.scalar("PRAGMA user_version");
        if (version > kSchemaVersion)
            return core::Error{"the store " + path + " has schema version " + std::to_string(version) +
                               ", newer than this jobhost's " + std::to_string(kSchemaVersion) +
                               "; use a newer jobhost, or point [store] path at another file"};
        w.exec("PRAGMA journal_mode=WAL");
        w.exec(options.full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        // Statements' scratch tables (a RETURNING's rows, a sort) in memory: by default SQLite gave each its own
        // temporary file, created, unlinked and written on every refill (a third of the writer's time on a drain).
        w.exec("PRAGMA temp_store=MEMORY");
        if (version < kSchemaVersion) {
            w.exec("BEGIN IMMEDIATE");
            // another process may have migrated between the read above and the lock
            version = w.scalar("PRAGMA user_version");
            if (version < kSchemaVersion) {
                migrate(w, version, Clock::now());
                w.exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
            }
            w.exec("COMMIT");
        }
        store->reader_ = std::make_unique<sqlite::Connection>(path, SQLITE_OPEN_READWRITE);
        sqlite3_busy_timeout(store->reader_->get(), static_cast<int>(options.busy_timeout.count()));
        store->reader_->exec("PRAGMA temp_store=MEMORY"); // a listing's sort too
        store->data_version_ = w.scalar("PRAGMA data_version");
        if (options.host) {
            auto record = HostRecord::create(store->hosts_dir_, store->options_.owner);
            if (!record) return record.error();
            store->record_ = std::move(*record);
            auto now = Clock::now();
            w.exec("BEGIN IMMEDIATE");
            store->recovered_at_open_ = store->recover_dead_hosts(now);
            store->promote_due(now);
            w.exec("COMMIT");
            store->refresh_next_due();
            store->last_liveness_ = now;
        }
    } catch (const SqliteError& e) {
        int primary = e.code() & 0xff;
        if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)
            return core::Error{"the store " + path + " is not a jobhost store or is corrupt (" + e.what() +
                               "); it was left untouched: move it aside to start with an empty store, or restore it "
                               "from a backup"};
        if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
            return core::Error{"the store " + path + " is locked by another process (" + e.what() +
                               "); try again, or stop the process that holds it"};
        if (primary == SQLITE_CANTOPEN || primary == SQLITE_PERM || primary == SQLITE_READONLY)
            return core::Error{"cannot open the store " + path + " (" + e.what() +
                               "); check the path and its permissions"};
        return core::Error{"the store " + path + " failed to open: " + e.what()};
    }
    store->start_writer();
    return store;
}

SqliteStore::~SqliteStore() {
    stop_writer();
    // Without close() the host record stays, unlocked once record_ goes: the next host recovers as after a crash.
}

void SqliteStore::close() {
    if (closed_.exchange(true)) return;
    if (record_) {
        clear_caches();
        auto running = record_->running();
        try {
            submit(Op{[this, running] {
                          recover_owner(options_.owner, running,
                                        "the host stopped while this job was still running: it did not return "
                                        "after cancellation within shutdown_grace + stuck_grace",
                                        DeadReason::host_stopped, std::nullopt);
                      },
                      {},
                      nullptr},
                   true);
        } catch (const std::exception& e) {
            log::write(log::Level::error, "store",
                       std::string("closing: could not give back this host's jobs (") + e.what() +
                           "); the next host to start recovers them");
        }
    }
    stop_writer();
    if (record_) record_->retire();
}

void SqliteStore::mark_all_maybe_in_db() {
    // Writer thread only. Read, for each type, the best level waiting in the file (one index seek each), so that
    // a claim knows exactly whether a refill may bring a better job than the cache holds. Marking them unknown
    // instead made every other process's commit hold back this host's claims until every type had refilled.
    auto names = type_names();
    std::vector<int> heads(names.size(), -2);
    auto& h = writer_->cached("SELECT MAX(priority) FROM jobs WHERE type = ? AND state = 1");
    for (std::size_t i = 0; i < names.size(); ++i) {
        h.bind(1, std::string_view(names[i]));
        if (h.step() && !h.is_null(0)) heads[i] = static_cast<int>(h.int64(0));
        h.reset();
    }
    set_db_heads(heads);
}

void SqliteStore::tx_begin() {
    writer_->exec("BEGIN IMMEDIATE");
}

void SqliteStore::tx_commit() {
    writer_->exec("COMMIT");
}

std::exception_ptr SqliteStore::copy_error(const std::exception_ptr& e) const {
    try {
        std::rethrow_exception(e);
    } catch (const SqliteError& x) {
        return std::make_exception_ptr(SqliteError(x.code(), x.what()));
    } catch (...) {
        return ReservingStore::copy_error(e);
    }
}

void SqliteStore::tx_rollback() noexcept {
    try {
        writer_->exec("ROLLBACK");
    } catch (...) {
    }
}

std::chrono::milliseconds SqliteStore::idle_wait() {
    auto wait = options_.poll;
    if (options_.host && next_due_) { // wake when the next scheduled job is due, to promote it
        auto until = std::chrono::duration_cast<std::chrono::milliseconds>(*next_due_ - Clock::now()) +
                     std::chrono::milliseconds(1);
        wait = std::clamp(until, std::chrono::milliseconds(0), wait);
    }
    return wait;
}

std::vector<JobRecord> SqliteStore::reserve(const std::string& type, std::size_t want, bool aging, int& head) {
    std::vector<JobRecord> rows;
    auto now = Clock::now();
    auto& s = writer_->cached(
        std::string("UPDATE jobs SET state = 2, lease_owner = ?, lease_expiry = ? WHERE id IN (SELECT id FROM "
                    "jobs WHERE type = ? AND state = 1 ORDER BY priority DESC, run_at, id LIMIT ?) RETURNING ") +
        kColumns);
    s.bind(1, std::string_view(options_.owner)).bind(2, to_ms(now + options_.lease));
    s.bind(3, std::string_view(type)).bind(4, static_cast<std::int64_t>(want));
    while (s.step()) rows.push_back(read_row(s));
    s.reset();
    if (aging) {
        // With aging, the best job may wait at a lower level: the oldest of each level is the one that has
        // gained the most, so hold it too (four index seeks), or a stream of better jobs would keep it out of
        // the cache, where aging is applied, for good.
        auto& o = writer_->cached(
            std::string("UPDATE jobs SET state = 2, lease_owner = ?1, lease_expiry = ?2 WHERE id IN ("
                        "SELECT (SELECT id FROM jobs WHERE type = ?3 AND state = 1 AND priority = 0 ORDER BY "
                        "run_at, id LIMIT 1) UNION ALL "
                        "SELECT (SELECT id FROM jobs WHERE type = ?3 AND state = 1 AND priority = 1 ORDER BY "
                        "run_at, id LIMIT 1) UNION ALL "
                        "SELECT (SELECT id FROM jobs WHERE type = ?3 AND state = 1 AND priority = 2 ORDER BY "
                        "run_at, id LIMIT 1) UNION ALL "
                        "SELECT (SELECT id FROM jobs WHERE type = ?3 AND state = 1 AND priority = 3 ORDER BY "
                        "run_at, id LIMIT 1)) RETURNING ") +
            kColumns);
        o.bind(1, std::string_view(options_.owner)).bind(2, to_ms(now + options_.lease));
        o.bind(3, std::string_view(type));
        while (o.step()) rows.push_back(read_row(o));
        o.reset();
    }
    head = -2;
    auto& h = writer_->cached(
        "SELECT priority FROM jobs WHERE type = ? AND state = 1 ORDER BY priority DESC, run_at, id LIMIT 1");
    h.bind(1, std::string_view(type));
    if (h.step()) head = static_cast<int>(h.int64(0));
    h.reset();
    return rows;
}

// Periodic duties, inside the writer's transaction. Each costs time that grows with what changed or with what the
// hosts hold, never with the backlog.
void SqliteStore::maintain(TimePoint now) {
    if (!options_.host) return;
    if (now - last_poll_ >= options_.poll) {
        last_poll_ = now;
        std::int64_t v = writer_->scalar("PRAGMA data_version");
        if (v != data_version_) { // another process committed
            data_version_ = v;
            mark_all_maybe_in_db();
            refresh_next_due();
            wake_after_batch_ = true;
        }
    }
    if (next_due_ && *next_due_ <= now && promote_due(now) > 0) {
        mark_all_maybe_in_db();
        wake_after_batch_ = true;
    }
    if (now - last_renew_ >= options_.lease / 3) {
        last_renew_ = now;
        auto& s = writer_->cached("UPDATE jobs SET lease_expiry = ? WHERE state = 2 AND lease_owner = ?");
        s.bind(1, to_ms(now + options_.lease)).bind(2, std::string_view(options_.owner)).run();
    }
    if (now - last_liveness_ >= options_.liveness) {
        last_liveness_ = now;
        if (recover_dead_hosts(now) > 0) {
            mark_all_maybe_in_db();
            wake_after_batch_ = true;
        }
    }
    if (now - last_prune_ >= std::chrono::seconds(30)) {
        last_prune_ = now;
        prune_locked(now);
    }
}

std::size_t SqliteStore::promote_due(TimePoint now) {
    auto& s = writer_->cached("UPDATE jobs SET state = 1 WHERE state = 0 AND run_at <= ?");
    s.bind(1, to_ms(now)).run();
    auto n = static_cast<std::size_t>(writer_->changes());
    refresh_next_due();
    return n;
}

void SqliteStore::refresh_next_due() {
    auto& s = writer_->cached("SELECT MIN(run_at) FROM jobs WHERE state = 0");
    next_due_.reset();
    if (s.step() && !s.is_null(0)) next_due_ = from_ms(s.int64(0));
    s.reset();
}

// Inside a writer transaction: finished jobs beyond retain_done or older than retain_done_for, dead letters beyond
// retain_dead. The counters tell whether there is anything to prune, so a quiet store costs a few row reads.
void SqliteStore::prune_locked(TimePoint now) {
    auto total = [this](std::int64_t state) {
        auto& s = writer_->cached("SELECT COALESCE(SUM(n), 0) FROM type_counts WHERE state = ?");
        s.bind(1, state);
        std::int64_t n = s.step() ? s.int64(0) : 0;
        s.reset();
        return static_cast<std::size_t>(n);
    };
    if (options_.retain_done > 0 && total(kDone) > options_.retain_done) {
        auto& s = writer_->cached("DELETE FROM jobs WHERE state = 3 AND id NOT IN "
                                  "(SELECT id FROM jobs WHERE state = 3 ORDER BY finished_at DESC LIMIT ?)");
        s.bind(1, static_cast<std::int64_t>(options_.retain_done)).run();
    }
    if (options_.retain_done_for.count() > 0) {
        auto& s = writer_->cached("DELETE FROM jobs WHERE state = 3 AND finished_at < ?");
        s.bind(1, to_ms(now - options_.retain_done_for)).run();
    }
    if (total(kDead) > options_.retain_dead) {
        auto& s = writer_->cached("DELETE FROM jobs WHERE state = 4 AND id NOT IN "
                                  "(SELECT id FROM jobs WHERE state = 4 ORDER BY finished_at DESC LIMIT ?)");
        s.bind(1, static_cast<std::int64_t>(options_.retain_dead)).run();
        if (auto n = writer_->changes(); n > 0)
            log::write(log::Level::warning, "store",
                       "pruned " + std::to_string(n) +
                           " dead letter(s) beyond retain_dead = " + std::to_string(options_.retain_dead));
    }
}

void SqliteStore::prune() {
    submit(Op{[this] { prune_locked(Clock::now()); }, {}, nullptr}, true);
}

std::size_t SqliteStore::recover_owner(const std::string& owner, const std::set<JobId>& running,
                                       const std::string& error, DeadReason reason,
                                       std::optional<TimePoint> expired_before) {
    struct Row {
        JobId id;
        std::string type;
        std::uint32_t attempt, max_attempts;
    };
    std::vector<Row> rows;
    {
        auto& s = writer_->cached(expired_before ? "SELECT id, type, attempt, max_attempts FROM jobs WHERE state = 2 "
                                                   "AND lease_owner = ? AND lease_expiry < ?"
                                                 : "SELECT id, type, attempt, max_attempts FROM jobs WHERE state = 2 "
                                                   "AND lease_owner = ?");
        s.bind(1, std::string_view(owner));
        if (expired_before) s.bind(2, to_ms(*expired_before));
        while (s.step())
            rows.push_back({static_cast<JobId>(s.int64(0)), s.text(1), static_cast<std::uint32_t>(s.int64(2)),
                            static_cast<std::uint32_t>(s.int64(3))});
        s.reset();
    }
    auto now = Clock::now();
    auto& back = writer_->cached("UPDATE jobs SET state = 1, lease_owner = NULL, lease_expiry = NULL "
                                 "WHERE id = ? AND state = 2 AND lease_owner = ?");
    auto& charge = writer_->cached(
        "UPDATE jobs SET state = ?, attempt = attempt + 1, run_at = ?, finished_at = ?, dead_reason = ?, "
        "lease_owner = NULL, lease_expiry = NULL, "
        "errors = json_insert(errors, '$[#]', json_object('attempt', attempt + 1, 'at', ?, 'message', ?)) "
        "WHERE id = ? AND state = 2 AND lease_owner = ?");
    std::size_t n = 0;
    for (const auto& r : rows) {
        auto id = static_cast<std::int64_t>(r.id);
        if (!running.count(r.id)) { // only reserved: back unchanged
            back.bind(1, id).bind(2, std::string_view(owner)).run();
            n += static_cast<std::size_t>(writer_->changes());
            continue;
        }
        std::uint32_t attempt = r.attempt + 1;
        bool dead = attempt >= r.max_attempts;
        charge.bind(1, dead ? kDead : kReady).bind(2, to_ms(now));
        if (dead)
            charge.bind(3, to_ms(now));
        else
            charge.bind_null(3);
        charge.bind(4, static_cast<std::int64_t>(dead ? reason : DeadReason::none));
        charge.bind(5, to_ms(now)).bind(6, std::string_view(error)).bind(7, id).bind(8, std::string_view(owner));
        charge.run();
        if (writer_->changes() == 0) continue;
        ++n;
        log::write(
            dead ? log::Level::error : log::Level::warning, "store",
            "job " + std::to_string(r.id) + " was running when " +
                (reason == DeadReason::host_stopped ? std::string("this host stopped") : "its host died") + ": " +
                error + "; attempt " + std::to_string(attempt) + "/" + std::to_string(r.max_attempts) + " charged, " +
                (dead ? "dead-lettered (" + std::string(dead_reason_name(reason)) + ")" : std::string("back to ready")),
            r.type, std::to_string(r.id));
    }
    return n;
}

std::size_t SqliteStore::recover_dead_hosts(TimePoint now) {
    std::vector<std::string> owners;
    {
        auto& s = writer_->cached("SELECT DISTINCT lease_owner FROM jobs WHERE state = 2 AND lease_owner IS NOT NULL");
        while (s.step()) owners.push_back(s.text(0));
        s.reset();
    }
    std::size_t n = 0;
    for (const auto& owner : owners) {
        if (owner == options_.owner) continue;
        HostRecord::Remains remains;
        switch (HostRecord::inspect(hosts_dir_, owner, &remains)) {
        case HostRecord::Liveness::dead: {
            auto k = recover_owner(owner, remains.running, describe_death(owner, remains.cause),
                                   DeadReason::crashed_host, std::nullopt);
            if (k > 0)
                log::write(log::Level::warning, "store",
                           "host " + owner + " is gone" + (remains.cause.empty() ? "" : " (" + remains.cause + ")") +
                               ": " + std::to_string(k) + " of its job(s) given back, " +
                               std::to_string(remains.running.size()) + " of them were running");
            n += k;
            break;
        }
        case HostRecord::Liveness::alive: { // alive but its leases expired: it stalled
            auto k = recover_owner(owner, HostRecord::peek(hosts_dir_, owner),
                                   "the lease of host " + owner + " expired while this job was running: it stalled",
                                   DeadReason::crashed_host, now);
            if (k > 0)
                log::write(log::Level::warning, "store",
                           "host " + owner + " let " + std::to_string(k) +
                               " lease(s) expire (stalled?); they were given back");
            n += k;
            break;
        }
        case HostRecord::Liveness::unknown: break;
        }
    }
    HostRecord::sweep(hosts_dir_, options_.owner);
    return n;
}

void SqliteStore::read_errors(JobRecord& j, const std::string& text) const {
    try {
        auto errors = boost::json::parse(text);
        for (const auto& e : errors.as_array()) {
            const auto& o = e.as_object();
            j.errors.push_back({static_cast<std::uint32_t>(o.at("attempt").to_number<std::int64_t>()),
                                from_ms(o.at("at").to_number<std::int64_t>()),
                                std::string(o.at("message").as_string())});
        }
    } catch (const std::exception&) {
        j.errors.push_back({0, {}, "(the error history of this job could not be read)"});
    }
}

JobRecord SqliteStore::read_row(const Statement& s) const {
    JobRecord j;
    j.id = static_cast<JobId>(s.int64(0));
    j.type = s.text(1);
    j.payload = s.text(2);
    j.priority = static_cast<registry::Priority>(std::clamp<std::int64_t>(s.int64(3), 0, 4));
    if (!s.is_null(4)) j.unique_key = s.text(4);
    j.attempt = static_cast<std::uint32_t>(s.int64(5));
    j.max_attempts = static_cast<std::uint32_t>(s.int64(6));
    auto state = s.int64(7);
    j.run_at = from_ms(s.int64(8));
    j.ready_since = j.run_at;
    j.created_at = from_ms(s.int64(9));
    if (!s.is_null(10)) j.started_at = from_ms(s.int64(10));
    if (!s.is_null(11)) j.finished_at = from_ms(s.int64(11));
    j.lease_owner = s.text(12);
    if (!s.is_null(13)) j.lease_expiry = from_ms(s.int64(13));
    j.from_schedule = s.int64(14) != 0;
    j.dead_reason = static_cast<DeadReason>(s.int64(15));
    j.state = state == kScheduled ? JobState::scheduled
              : state == kReady   ? JobState::ready
              : state == kHeld    ? JobState::reserved // list() and get() tell running ones apart
              : state == kDone    ? JobState::done
                                  : JobState::dead;
    read_errors(j, s.text(16));
    j.attempts_before = static_cast<std::uint32_t>(s.int64(17));
    if (!s.is_null(18)) j.result = result_from_json(s.text(18));
    if (!s.is_null(19)) j.progress = progress_from_json(s.text(19));
    return j;
}

std::vector<EnqueueOutcome> SqliteStore::enqueue(std::span<const NewJob> jobs) {
    std::vector<EnqueueOutcome> out(jobs.size());
    std::vector<JobRecord> direct(jobs.size()); // jobs reserved straight into the cache, by index
    std::vector<bool> is_direct(jobs.size(), false);
    auto now = Clock::now();
    // Which jobs may skip the file's queue: ready now, their type has nothing waiting in the file, and the cache
    // has room. Decided before the transaction, applied after it commits.
    if (options_.host) {
        std::lock_guard lock(cache_mutex_);
        std::unordered_map<std::string, std::size_t> room;
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            auto& c = cache_locked(jobs[i].type);
            bool ready = jobs[i].run_at == TimePoint{} || jobs[i].run_at <= now;
            auto& r = room.try_emplace(jobs[i].type, c.target > c.size ? c.target - c.size : 0).first->second;
            if (ready && !c.maybe_in_db && !c.refill_pending && r > 0) {
                is_direct[i] = true;
                --r;
            }
        }
    }
    Op op;
    op.in_transaction = [&] {
        auto& ins = writer_->cached(
            "INSERT OR IGNORE INTO jobs (type, payload, priority, unique_key, attempt, max_attempts, state, run_at, "
            "created_at, lease_owner, lease_expiry, from_schedule) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)");
        auto& existing =
            writer_->cached("SELECT id FROM jobs WHERE type = ? AND unique_key = ? AND state IN (0, 1, 2)");
        auto& tick = writer_->cached(
            "INSERT INTO schedule_ticks (type, tick_at) VALUES (?, ?) ON CONFLICT (type) DO UPDATE SET tick_at = "
            "excluded.tick_at WHERE excluded.tick_at > schedule_ticks.tick_at");
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            const auto& n = jobs[i];
            if (n.tick) { // a schedule's tick: queued once across every host
                tick.bind(1, std::string_view(n.type)).bind(2, to_ms(*n.tick)).run();
                if (writer_->changes() == 0) {
                    out[i] = {0, false, true};
                    is_direct[i] = false;
                    continue;
                }
            }
            TimePoint run_at = n.run_at == TimePoint{} ? now : n.run_at;
            std::int64_t state = is_direct[i] ? kHeld : run_at > now ? kScheduled : kReady;
            ins.bind(1, std::string_view(n.type)).bind(2, std::string_view(n.payload));
            ins.bind(3, static_cast<std::int64_t>(n.priority));
            if (n.unique_key.empty())
                ins.bind_null(4);
            else
                ins.bind(4, std::string_view(n.unique_key));
            ins.bind(5, static_cast<std::int64_t>(n.max_attempts)).bind(6, state);
            ins.bind(7, to_ms(run_at)).bind(8, to_ms(now));
            if (is_direct[i])
                ins.bind(9, std::string_view(options_.owner)).bind(10, to_ms(now + options_.lease));
            else
                ins.bind_null(9).bind_null(10);
            ins.bind(11, static_cast<std::int64_t>(n.from_schedule ? 1 : 0));
            ins.run();
            if (writer_->changes() == 0) {
                existing.bind(1, std::string_view(n.type)).bind(2, std::string_view(n.unique_key));
                out[i] = {existing.step() ? static_cast<JobId>(existing.int64(0)) : 0, false, false};
                existing.reset();
                is_direct[i] = false;
                continue;
            }
            out[i] = {static_cast<JobId>(writer_->last_insert_rowid()), true, false};
            if (state == kScheduled && (!next_due_ || run_at < *next_due_)) next_due_ = run_at;
            if (is_direct[i]) {
                auto& j = direct[i];
                j.id = out[i].id;
                j.type = n.type;
                j.payload = n.payload;
                j.priority = n.priority;
                j.unique_key = n.unique_key;
                j.max_attempts = n.max_attempts;
                j.state = JobState::reserved;
                j.run_at = j.ready_since = j.created_at = now;
                j.lease_owner = options_.owner;
                j.from_schedule = n.from_schedule;
            }
        }
    };
    op.after_commit = [&] {
        std::lock_guard lock(cache_mutex_);
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            auto& c = cache_locked(jobs[i].type);
            if (is_direct[i]) {
                c.ready[static_cast<std::size_t>(direct[i].priority)].push_back(std::move(direct[i]));
                c.size += 1;
            } else if (out[i].created) {
                TimePoint run_at = jobs[i].run_at == TimePoint{} ? now : jobs[i].run_at;
                if (run_at <= now) {
                    c.maybe_in_db = true;
                    c.db_head_level = std::max(c.db_head_level, static_cast<int>(jobs[i].priority));
                }
            }
        }
    };
    submit(std::move(op), true);
    return out;
}

RunToken SqliteStore::begin_run(std::span<const JobRecord> jobs) {
    if (!record_) return {};
    std::vector<JobId> ids;
    ids.reserve(jobs.size());
    for (const auto& j : jobs) ids.push_back(j.id);
    return record_->mark(ids);
}

void SqliteStore::finish(std::span<const Outcome> outcomes, RunToken token) {
    // A run that returns after close() (it ignored cancellation past the stop) was charged by close(); its outcome
    // has nowhere to go.
    if (closed_) return;
    auto copy = std::make_shared<std::vector<Outcome>>(outcomes.begin(), outcomes.end());
    auto held = std::make_shared<RunToken>(std::move(token));
    Op op;
    op.in_transaction = [this, copy] {
        auto& done_delete = writer_->cached("DELETE FROM jobs WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& done_keep = writer_->cached(
            "UPDATE jobs SET state = 3, attempt = attempt + 1, started_at = ?, finished_at = ?, lease_owner = NULL, "
            "lease_expiry = NULL, result = ? WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& retry = writer_->cached(
            "UPDATE jobs SET state = ?, attempt = attempt + 1, run_at = ?, started_at = ?, lease_owner = NULL, "
            "lease_expiry = NULL, "
            "errors = json_insert(errors, '$[#]', json_object('attempt', attempt + 1, 'at', ?, 'message', ?)) "
            "WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& dead = writer_->cached(
            "UPDATE jobs SET state = 4, attempt = attempt + 1, started_at = ?, finished_at = ?, dead_reason = ?, "
            "lease_owner = NULL, lease_expiry = NULL, "
            "errors = json_insert(errors, '$[#]', json_object('attempt', attempt + 1, 'at', ?, 'message', ?)) "
            "WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& released = writer_->cached(
            "UPDATE jobs SET state = 1, lease_owner = NULL, lease_expiry = NULL, "
            "errors = json_insert(errors, '$[#]', json_object('attempt', attempt + 1, 'at', ?, 'message', ?)) "
            "WHERE id = ? AND state = 2 AND lease_owner = ?");
        std::string_view owner(options_.owner);
        for (const auto& o : *copy) {
            auto id = static_cast<std::int64_t>(o.id);
            switch (o.kind) {
            case Outcome::Kind::done:
                if (options_.retain_done == 0 && options_.retain_done_for.count() == 0)
                    done_delete.bind(1, id).bind(2, owner).run();
                else {
                    done_keep.bind(1, to_ms(o.started)).bind(2, to_ms(o.at));
                    if (o.result)
                        done_keep.bind(3, std::string_view(result_json(*o.result)));
                    else
                        done_keep.bind_null(3);
                    done_keep.bind(4, id).bind(5, owner).run();
                }
                break;
            case Outcome::Kind::dropped: done_delete.bind(1, id).bind(2, owner).run(); break;
            case Outcome::Kind::retry: {
                bool later = o.retry_at > o.at;
                retry.bind(1, later ? kScheduled : kReady).bind(2, to_ms(o.retry_at)).bind(3, to_ms(o.started));
                retry.bind(4, to_ms(o.at)).bind(5, std::string_view(o.error)).bind(6, id).bind(7, owner).run();
                if (later && writer_->changes() > 0 && (!next_due_ || o.retry_at < *next_due_)) next_due_ = o.retry_at;
                break;
            }
            case Outcome::Kind::released:
                released.bind(1, to_ms(o.at)).bind(2, std::string_view(o.error)).bind(3, id).bind(4, owner).run();
                break;
            case Outcome::Kind::dead:
                dead.bind(1, to_ms(o.started)).bind(2, to_ms(o.at)).bind(3, static_cast<std::int64_t>(o.reason));
                dead.bind(4, to_ms(o.at)).bind(5, std::string_view(o.error)).bind(6, id).bind(7, owner).run();
                break;
            }
        }
    };
    op.after_commit = [this, copy, held] {
        if (record_) record_->clear(*held); // the outcome is durable: a crash no longer charges this run
        bool ready_now = false;
        {
            std::lock_guard lock(cache_mutex_);
            for (const auto& o : *copy) {
                bool ready =
                    o.kind == Outcome::Kind::released || (o.kind == Outcome::Kind::retry && o.retry_at <= o.at);
                if (!ready) continue;
                auto& c = cache_locked(o.type);
                c.maybe_in_db = true;
                c.db_head_level = -1;
                ready_now = true;
            }
        }
        if (ready_now) wake_after_batch_ = true;
    };
    try {
        submit(std::move(op), false);
    } catch (const std::exception& e) { // closing meanwhile: as above
        log::write(log::Level::warning, "store", std::string("an outcome came after the store closed: ") + e.what());
    }
}

std::optional<std::uint64_t> SqliteStore::size_on_disk() {
    std::uint64_t total = 0;
    for (const char* suffix : {"", "-wal", "-shm"}) {
        std::error_code ec;
        auto n = fs::file_size(options_.path.string() + suffix, ec);
        if (!ec) total += n;
    }
    return total;
}

void SqliteStore::progress(JobId id, const Progress& p) {
    if (closed_) return;
    auto text = std::make_shared<std::string>(progress_json(p));
    Op op;
    op.in_transaction = [this, id, text] {
        writer_->cached("UPDATE jobs SET progress = ? WHERE id = ? AND state = 2")
            .bind(1, std::string_view(*text))
            .bind(2, static_cast<std::int64_t>(id))
            .run();
    };
    try {
        submit(std::move(op), false);
    } catch (const std::exception&) { // closing meanwhile: progress is not worth keeping a run for
    }
}

std::optional<TimePoint> SqliteStore::next_due(const std::set<std::string>&, TimePoint) {
    return std::nullopt; // the writer promotes due jobs itself and wakes the executor
}

namespace {
std::set<JobId> running_of_hosts(const HostRecord* own, const fs::path& folder) {
    std::set<JobId> out;
    if (own) out = own->running();
    for (const auto& owner : HostRecord::owners(folder)) {
        if (own && owner == own->owner()) continue;
        auto more = HostRecord::peek(folder, owner);
        out.insert(more.begin(), more.end());
    }
    return out;
}
} // namespace

std::optional<JobRecord> SqliteStore::get(JobId id) {
    std::optional<JobRecord> out;
    {
        std::lock_guard lock(reader_mutex_);
        auto& s = reader_->cached(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?");
        s.bind(1, static_cast<std::int64_t>(id));
        if (s.step()) out = read_row(s);
        s.reset(); // a statement left mid-row would pin this connection's snapshot
    }
    if (out && out->state == JobState::reserved && running_of_hosts(record_.get(), hosts_dir_).count(id)) {
        out->state = JobState::running;
        out->attempt += 1;
    }
    return out;
}

std::vector<JobRecord> SqliteStore::list(const ListFilter& f) {
    std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE 1";
    if (f.type) sql += " AND type = :type";
    if (f.before) sql += " AND id < :before";
    if (f.state) {
        switch (*f.state) {
        case JobState::scheduled: sql += " AND state = 0"; break;
        case JobState::ready: sql += " AND state = 1"; break;
        case JobState::reserved:
        case JobState::running: sql += " AND state = 2"; break;
        case JobState::done: sql += " AND state = 3"; break;
        case JobState::dead: sql += " AND state = 4"; break;
        }
    }
    // held jobs are filtered by what their hosts' records say, after the query: fetch them all (there are few)
    bool held_filter = f.state && (*f.state == JobState::reserved || *f.state == JobState::running);
    sql += held_filter ? " ORDER BY id DESC" : " ORDER BY id DESC LIMIT :limit";
    std::vector<JobRecord> out;
    {
        std::lock_guard lock(reader_mutex_);
        auto& s = reader_->cached(sql);
        int idx = 1; // the parameters appear in the order they were added above
        if (f.type) s.bind(idx++, std::string_view(*f.type));
        if (f.before) s.bind(idx++, static_cast<std::int64_t>(*f.before));
        if (!held_filter) s.bind(idx, static_cast<std::int64_t>(f.limit));
        while (s.step()) out.push_back(read_row(s));
        s.reset();
    }
    bool any_held = std::any_of(out.begin(), out.end(), [](const auto& j) { return j.state == JobState::reserved; });
    if (!any_held) return out;
    auto running = running_of_hosts(record_.get(), hosts_dir_);
    for (auto& j : out)
        if (j.state == JobState::reserved && running.count(j.id)) {
            j.state = JobState::running;
            j.attempt += 1;
        }
    if (held_filter) {
        std::erase_if(out, [&](const auto& j) { return j.state != *f.state; });
        if (out.size() > f.limit) out.resize(f.limit);
    }
    return out;
}

std::vector<JobRecord> SqliteStore::dead_letters(const DeadLetterFilter& filter) {
    auto out = list({filter.type, JobState::dead, filter.limit});
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
}

std::size_t SqliteStore::replay(std::span<const JobId> ids, TimePoint now) {
    std::size_t n = 0;
    auto copy = std::vector<JobId>(ids.begin(), ids.end());
    submit(Op{[&] {
                  // a fresh set of attempts, the same size as the one it had; the count goes on
                  auto& s = writer_->cached(
                      "UPDATE OR IGNORE jobs SET state = 1, max_attempts = attempt + max_attempts - "
                      "min(max_attempts, attempts_before), attempts_before = attempt, dead_reason = 0, run_at = ?, "
                      "finished_at = NULL WHERE id = ? AND state = 4");
                  for (JobId id : copy) {
                      s.bind(1, to_ms(now)).bind(2, static_cast<std::int64_t>(id)).run();
                      n += static_cast<std::size_t>(writer_->changes());
                  }
              },
              [this] {
                  mark_all_maybe_in_db();
                  wake_after_batch_ = true;
              },
              nullptr},
           true);
    return n;
}

std::size_t SqliteStore::purge(std::span<const JobId> ids) {
    std::size_t n = 0;
    auto copy = std::vector<JobId>(ids.begin(), ids.end());
    submit(Op{[&] {
                  auto& s = writer_->cached("DELETE FROM jobs WHERE id = ? AND state = 4");
                  for (JobId id : copy) {
                      s.bind(1, static_cast<std::int64_t>(id)).run();
                      n += static_cast<std::size_t>(writer_->changes());
                  }
              },
              {},
              nullptr},
           true);
    return n;
}

std::size_t SqliteStore::purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) {
    std::size_t n = 0;
    submit(Op{[&] {
                  std::string sql = "DELETE FROM jobs WHERE state = 4";
                  if (type) sql += " AND type = ?1";
                  if (older_than) sql += " AND finished_at < ?2";
                  auto& s = writer_->cached(sql);
                  if (type) s.bind(1, std::string_view(*type));
                  if (older_than) s.bind(2, to_ms(*older_than));
                  s.run();
                  n = static_cast<std::size_t>(writer_->changes());
              },
              {},
              nullptr},
           true);
    return n;
}

std::map<std::string, TypeCounts> SqliteStore::counts() {
    std::map<std::string, TypeCounts> out;
    std::vector<std::pair<JobId, std::string>> held; // (id, type) of reserved or running jobs: few
    {
        std::lock_guard lock(reader_mutex_);
        reader_->exec("BEGIN"); // one snapshot for every figure
        try {
            auto& s = reader_->cached("SELECT type, state, n FROM type_counts WHERE n > 0");
            while (s.step()) {
                auto& c = out[s.text(0)];
                auto n = static_cast<std::size_t>(s.int64(2));
                switch (s.int64(1)) {
                case kScheduled: c.scheduled = n; break;
                case kReady: c.ready = n; break;
                case kHeld: break; // split below
                case kDone: c.done = n; break;
                default: c.dead = n; break;
                }
            }
            s.reset();
            auto& t = reader_->cached("SELECT type, enqueued FROM type_totals");
            while (t.step()) out[t.text(0)].enqueued = static_cast<std::uint64_t>(t.int64(1));
            t.reset();
            // the longest-waiting ready job: one index seek per priority level
            auto& o = reader_->cached("SELECT MIN(run_at) FROM jobs WHERE type = ? AND state = 1 AND priority = ?");
            for (auto& [type, c] : out) {
                if (c.ready == 0) continue;
                for (std::int64_t p = 0; p < 5; ++p) {
                    o.bind(1, std::string_view(type)).bind(2, p);
                    if (o.step() && !o.is_null(0)) {
                        auto at = from_ms(o.int64(0));
                        if (!c.oldest_ready || at < *c.oldest_ready) c.oldest_ready = at;
                    }
                    o.reset();
                }
            }
            auto& h = reader_->cached("SELECT id, type FROM jobs WHERE state = 2");
            while (h.step()) held.emplace_back(static_cast<JobId>(h.int64(0)), h.text(1));
            h.reset();
        } catch (...) {
            reader_->exec("COMMIT");
            throw;
        }
        reader_->exec("COMMIT");
    }
    if (!held.empty()) {
        auto running = running_of_hosts(record_.get(), hosts_dir_);
        for (const auto& [id, type] : held) (running.count(id) ? out[type].running : out[type].reserved) += 1;
    }
    return out;
}

} // namespace jobhost::store
