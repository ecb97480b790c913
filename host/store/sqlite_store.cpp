#include "store/sqlite_store.hpp"

#include "log/log.hpp"
#include "store/priority_levels.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <tuple>
#include <csignal>
#include <unistd.h>

namespace jobhost::store {

namespace fs = std::filesystem;
using sqlite::SqliteError;
using sqlite::Statement;

namespace {

// States as stored: queued covers scheduled and ready (run_at decides).
constexpr std::int64_t kQueued = 1, kLeased = 2, kDone = 3, kDead = 4;

std::int64_t to_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
    return TimePoint(std::chrono::milliseconds(ms));
}

const char* kColumns = "id, type, payload, priority, unique_key, attempt, max_attempts, state, run_at, created_at, "
                       "started_at, finished_at, lease_owner, lease_expiry, from_schedule, dead_reason, errors";

// Schema migrations: entry i brings a file from version i to i + 1.
const std::vector<const char*> kMigrations = {
    R"(CREATE TABLE jobs (
         id INTEGER PRIMARY KEY,
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
         errors TEXT NOT NULL DEFAULT '[]');
       CREATE INDEX jobs_ready ON jobs(type, state, priority DESC, run_at, id);
       CREATE INDEX jobs_lease ON jobs(state, lease_expiry);
       CREATE INDEX jobs_finished ON jobs(state, finished_at);
       CREATE UNIQUE INDEX jobs_unique ON jobs(type, unique_key)
         WHERE unique_key IS NOT NULL AND state IN (1, 2);)",
};

std::string hostname() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    return name;
}

} // namespace

SqliteStore::SqliteStore(SqliteOptions options) : options_(std::move(options)) {}

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
        w.exec("PRAGMA foreign_keys=ON");
        if (version < kSchemaVersion) {
            w.exec("BEGIN IMMEDIATE");
            for (auto v = version; v < kSchemaVersion; ++v) w.exec(kMigrations[static_cast<std::size_t>(v)]);
            w.exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
            w.exec("COMMIT");
        }
        store->reader_ = std::make_unique<sqlite::Connection>(path, SQLITE_OPEN_READWRITE);
        sqlite3_busy_timeout(store->reader_->get(), static_cast<int>(options.busy_timeout.count()));
        store->data_version_ = w.scalar("PRAGMA data_version");
        if (options.host) {
            w.exec("BEGIN IMMEDIATE");
            store->recovered_at_open_ = store->recover_dead_owners();
            w.exec("COMMIT");
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
    store->writer_thread_ = std::thread([s = store.get()] { s->writer_loop(); });
    return store;
}

SqliteStore::~SqliteStore() {
    {
        std::lock_guard lock(queue_mutex_);
        stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_thread_.joinable()) writer_thread_.join();
}

void SqliteStore::submit(Op op, bool wait) {
    std::future<void> f;
    if (wait) {
        op.done = std::make_shared<std::promise<void>>();
        f = op.done->get_future();
    }
    {
        std::lock_guard lock(queue_mutex_);
        if (stopping_) throw std::runtime_error("the store is closing");
        queue_.push_back(std::move(op));
    }
    queue_cv_.notify_one();
    if (wait) f.get(); // rethrows the op's error
}

void SqliteStore::flush() {
    submit(Op{[] {}, {}, nullptr}, true);
}

void SqliteStore::writer_loop() {
    for (;;) {
        std::deque<Op> batch;
        {
            std::unique_lock lock(queue_mutex_);
            queue_cv_.wait_for(lock, options_.poll, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_ && queue_.empty()) break;
            batch.swap(queue_);
        }
        auto now = Clock::now();
        std::exception_ptr tx_error;
        std::vector<std::exception_ptr> errors(batch.size());
        try {
            writer_->exec("BEGIN IMMEDIATE");
            for (std::size_t i = 0; i < batch.size(); ++i) {
                try {
                    batch[i].in_transaction();
                } catch (...) {
                    errors[i] = std::current_exception();
                }
            }
            maintain(now);
            writer_->exec("COMMIT");
        } catch (...) {
            tx_error = std::current_exception();
            try {
                writer_->exec("ROLLBACK");
            } catch (...) {
            }
            try {
                std::rethrow_exception(tx_error);
            } catch (const std::exception& e) {
                log::write(log::Level::error, "store",
                           std::string("a transaction failed and was rolled back: ") + e.what());
            }
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto err = tx_error ? tx_error : errors[i];
            if (!err && batch[i].after_commit) batch[i].after_commit();
            if (batch[i].done) {
                if (err)
                    batch[i].done->set_exception(err);
                else
                    batch[i].done->set_value();
            }
        }
    }
}

// Periodic duties, inside the writer's transaction: notice other processes' commits, renew this host's leases,
// recover expired ones, prune.
void SqliteStore::maintain(TimePoint now) {
    if (!options_.host) return;
    if (now - last_poll_ >= options_.poll) {
        last_poll_ = now;
        std::int64_t v = writer_->scalar("PRAGMA data_version");
        if (v != data_version_) {
            data_version_ = v;
            std::lock_guard lock(cache_mutex_);
            for (auto& c : caches_) c.maybe_in_db = true;
            // wake after this transaction: queue a no-op whose after_commit wakes the executor
            std::lock_guard q(queue_mutex_);
            queue_.push_back(Op{[] {}, [this] { wake(); }, nullptr});
        }
    }
    if (now - last_renew_ >= options_.lease / 3) {
        last_renew_ = now;
        auto& s = writer_->cached("UPDATE jobs SET lease_expiry = ? WHERE state = 2 AND lease_owner = ?");
        s.bind(1, to_ms(now + options_.lease)).bind(2, std::string_view(options_.owner)).run();
    }
    if (now - last_recover_ >= std::chrono::seconds(5)) {
        last_recover_ = now;
        if (recover_expired_locked(now) > 0) {
            std::lock_guard lock(cache_mutex_);
            for (auto& c : caches_) c.maybe_in_db = true;
        }
    }
    if (now - last_prune_ >= std::chrono::seconds(30)) {
        last_prune_ = now;
        prune_locked(now);
    }
}

// Inside a writer transaction: finished jobs beyond retain_done or older than retain_done_for, dead letters beyond
// retain_dead.
void SqliteStore::prune_locked(TimePoint now) {
    if (options_.retain_done > 0) {
        auto& s = writer_->cached("DELETE FROM jobs WHERE state = 3 AND id NOT IN "
                                  "(SELECT id FROM jobs WHERE state = 3 ORDER BY finished_at DESC LIMIT ?)");
        s.bind(1, static_cast<std::int64_t>(options_.retain_done)).run();
    }
    if (options_.retain_done_for.count() > 0) {
        auto& s = writer_->cached("DELETE FROM jobs WHERE state = 3 AND finished_at < ?");
        s.bind(1, to_ms(now - options_.retain_done_for)).run();
    }
    auto& s = writer_->cached("DELETE FROM jobs WHERE state = 4 AND id NOT IN "
                              "(SELECT id FROM jobs WHERE state = 4 ORDER BY finished_at DESC LIMIT ?)");
    s.bind(1, static_cast<std::int64_t>(options_.retain_dead)).run();
    if (auto n = writer_->changes(); n > 0)
        log::write(log::Level::warning, "store",
                   "pruned " + std::to_string(n) +
                       " dead letter(s) beyond retain_dead = " + std::to_string(options_.retain_dead));
}

void SqliteStore::prune() {
    submit(Op{[this] { prune_locked(Clock::now()); }, {}, nullptr}, true);
}

std::size_t SqliteStore::recover_expired_locked(TimePoint now) {
    auto& s = writer_->cached("UPDATE jobs SET state = 1, run_at = ?, lease_owner = NULL, lease_expiry = NULL, "
                              "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?, "
                              "'message', 'lease expired: the host running it stopped or stalled')) "
                              "WHERE state = 2 AND lease_expiry < ?");
    s.bind(1, to_ms(now)).bind(2, to_ms(now)).bind(3, to_ms(now)).run();
    return static_cast<std::size_t>(writer_->changes());
}

std::size_t SqliteStore::recover_dead_owners() {
    // Owners are "hostname:pid". On this machine, a lease whose process is gone goes back at once; elsewhere, it
    // waits for its expiry.
    std::vector<std::string> owners;
    {
        auto& s = writer_->cached("SELECT DISTINCT lease_owner FROM jobs WHERE state = 2 AND lease_owner IS NOT NULL");
        while (s.step()) owners.push_back(s.text(0));
        s.reset();
    }
    const std::string here = hostname() + ":";
    std::size_t n = 0;
    auto now = to_ms(Clock::now());
    for (const auto& owner : owners) {
        if (owner.rfind(here, 0) != 0) continue;
        pid_t pid = static_cast<pid_t>(std::atoll(owner.c_str() + here.size()));
        if (pid > 0 && pid != ::getpid() && (::kill(pid, 0) == 0 || errno == EPERM)) continue; // still alive
        auto& s = writer_->cached("UPDATE jobs SET state = 1, run_at = ?, lease_owner = NULL, lease_expiry = NULL, "
                                  "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?, "
                                  "'message', 'the host running it stopped (' || lease_owner || ')')) "
                                  "WHERE state = 2 AND lease_owner = ?");
        s.bind(1, now).bind(2, now).bind(3, std::string_view(owner)).run();
        n += static_cast<std::size_t>(writer_->changes());
    }
    return n;
}

SqliteStore::Cache& SqliteStore::cache_locked(std::string_view type, TypeRef* ref) {
    auto it = refs_.find(std::string(type));
    TypeRef r;
    if (it != refs_.end()) {
        r = it->second;
    } else {
        r = static_cast<TypeRef>(names_.size());
        refs_.emplace(std::string(type), r);
        names_.emplace_back(type);
        caches_.emplace_back();
    }
    if (ref) *ref = r;
    return caches_[r];
}

TypeRef SqliteStore::intern(std::string_view type) {
    std::lock_guard lock(cache_mutex_);
    TypeRef r;
    cache_locked(type, &r);
    return r;
}

void SqliteStore::wake() {
    std::lock_guard lock(wakeup_mutex_);
    if (wakeup_) wakeup_();
}

void SqliteStore::set_wakeup(std::function<void()> wakeup) {
    std::lock_guard lock(wakeup_mutex_);
    wakeup_ = std::move(wakeup);
}

JobRecord SqliteStore::read_row(const Statement& s) const {
    JobRecord j;
    j.id = static_cast<JobId>(s.int64(0));
    j.type = s.text(1);
    j.payload = s.text(2);
    j.priority = static_cast<registry::Priority>(s.int64(3));
    j.unique_key = s.text(4);
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
    j.state = state == kQueued   ? (j.run_at > Clock::now() ? JobState::scheduled : JobState::ready)
              : state == kLeased ? JobState::leased
              : state == kDone   ? JobState::done
                                 : JobState::dead;
    try {
        auto errors = boost::json::parse(s.text(16));
        for (const auto& e : errors.as_array()) {
            const auto& o = e.as_object();
            j.errors.push_back({static_cast<std::uint32_t>(o.at("attempt").to_number<std::int64_t>()),
                                from_ms(o.at("at").to_number<std::int64_t>()),
                                std::string(o.at("message").as_string())});
        }
    } catch (const std::exception&) {
        j.errors.push_back({0, {}, "(the error history of this job could not be read)"});
    }
    return j;
}

std::vector<EnqueueOutcome> SqliteStore::enqueue(std::span<const NewJob> jobs) {
    std::vector<EnqueueOutcome> out(jobs.size());
    std::vector<JobRecord> direct(jobs.size()); // jobs leased straight into the cache, by index
    std::vector<bool> is_direct(jobs.size(), false);
    auto now = Clock::now();
    // Which jobs may skip the file's queue: ready now, their type has nothing older waiting in the file, and the
    // cache has room. Decided before the transaction, applied after it commits.
    {
        std::lock_guard lock(cache_mutex_);
        std::unordered_map<std::string, std::size_t> room;
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            auto& c = cache_locked(jobs[i].type);
            bool ready = jobs[i].run_at == TimePoint{} || jobs[i].run_at <= now;
            auto& r = room.try_emplace(jobs[i].type, options_.prefetch > c.size ? options_.prefetch - c.size : 0)
                          .first->second;
            if (options_.host && ready && !c.maybe_in_db && r > 0) {
                is_direct[i] = true;
                --r;
            }
        }
    }
    Op op;
    op.in_transaction = [&] {
        auto& ins = writer_->cached(
            "INSERT OR IGNORE INTO jobs (type, payload, priority, unique_key, attempt, max_attempts, state, run_at, "
            "created_at, started_at, lease_owner, lease_expiry, from_schedule) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        auto& existing = writer_->cached("SELECT id FROM jobs WHERE type = ? AND unique_key = ? AND state IN (1, 2)");
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            const auto& n = jobs[i];
            TimePoint run_at = n.run_at == TimePoint{} ? now : n.run_at;
            ins.bind(1, std::string_view(n.type)).bind(2, std::string_view(n.payload));
            ins.bind(3, static_cast<std::int64_t>(n.priority));
            if (n.unique_key.empty())
                ins.bind_null(4);
            else
                ins.bind(4, std::string_view(n.unique_key));
            ins.bind(5, static_cast<std::int64_t>(is_direct[i] ? 1 : 0));
            ins.bind(6, static_cast<std::int64_t>(n.max_attempts));
            ins.bind(7, is_direct[i] ? kLeased : kQueued);
            ins.bind(8, to_ms(run_at)).bind(9, to_ms(now));
            if (is_direct[i]) {
                ins.bind(10, to_ms(now))
                    .bind(11, std::string_view(options_.owner))
                    .bind(12, to_ms(now + options_.lease));
            } else {
                ins.bind_null(10).bind_null(11).bind_null(12);
            }
            ins.bind(13, static_cast<std::int64_t>(n.from_schedule ? 1 : 0));
            ins.run();
            if (writer_->changes() == 0) {
                existing.bind(1, std::string_view(n.type)).bind(2, std::string_view(n.unique_key));
                out[i] = {existing.step() ? static_cast<JobId>(existing.int64(0)) : 0, false};
                existing.reset();
                is_direct[i] = false;
                continue;
            }
            out[i] = {static_cast<JobId>(writer_->last_insert_rowid()), true};
            if (is_direct[i]) {
                auto& j = direct[i];
                j.id = out[i].id;
                j.type = n.type;
                j.payload = n.payload;
                j.priority = n.priority;
                j.unique_key = n.unique_key;
                j.attempt = 1;
                j.max_attempts = n.max_attempts;
                j.state = JobState::leased;
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
                if (run_at <= now)
                    c.maybe_in_db = true;
                else if (!c.next_due_in_db || run_at < *c.next_due_in_db)
                    c.next_due_in_db = run_at;
            }
        }
    };
    submit(std::move(op), true);
    return out;
}

void SqliteStore::request_refill_locked(TypeRef ref) {
    auto& c = caches_[ref];
    if (c.refill_pending || !options_.host) return;
    c.refill_pending = true;
    std::size_t want = options_.prefetch > c.size ? options_.prefetch - c.size : 0;
    if (want == 0) {
        c.refill_pending = false;
        return;
    }
    auto rows = std::make_shared<std::vector<JobRecord>>();
    auto next_due = std::make_shared<std::optional<TimePoint>>();
    std::string type = names_[ref];
    Op op;
    op.in_transaction = [this, rows, next_due, type, want] {
        auto now = Clock::now();
        auto& s = writer_->cached(
            std::string("UPDATE jobs SET state = 2, attempt = attempt + 1, lease_owner = ?, lease_expiry = ?, "
                        "started_at = ? WHERE id IN (SELECT id FROM jobs WHERE type = ? AND state = 1 AND run_at <= ? "
                        "ORDER BY priority DESC, run_at, id LIMIT ?) RETURNING ") +
            kColumns);
        s.bind(1, std::string_view(options_.owner)).bind(2, to_ms(now + options_.lease)).bind(3, to_ms(now));
        s.bind(4, std::string_view(type)).bind(5, to_ms(now)).bind(6, static_cast<std::int64_t>(want));
        while (s.step()) rows->push_back(read_row(s));
        s.reset();
        auto& d = writer_->cached("SELECT MIN(run_at) FROM jobs WHERE type = ? AND state = 1 AND run_at > ?");
        d.bind(1, std::string_view(type)).bind(2, to_ms(now));
        if (d.step() && !d.is_null(0)) *next_due = from_ms(d.int64(0));
        d.reset();
    };
    op.after_commit = [this, rows, next_due, ref, want] {
        std::sort(rows->begin(), rows->end(), [](const JobRecord& a, const JobRecord& b) {
            return std::tie(a.run_at, a.id) < std::tie(b.run_at, b.id);
        });
        {
            std::lock_guard lock(cache_mutex_);
            auto& c = caches_[ref];
            for (auto& j : *rows) {
                j.state = JobState::leased;
                c.ready[static_cast<std::size_t>(j.priority)].push_back(std::move(j));
                c.size += 1;
            }
            c.maybe_in_db = rows->size() >= want;
            c.refill_pending = false;
            c.next_due_in_db = *next_due;
        }
        if (!rows->empty() || next_due->has_value()) wake();
    };
    // The refill runs on the writer thread; the caller (a claim) must not wait for it.
    std::lock_guard q(queue_mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(op));
    queue_cv_.notify_one();
}

ClaimResult SqliteStore::claim(const ClaimRequest& r) {
    ClaimResult result;
    std::lock_guard lock(cache_mutex_);
    auto since_of = [](const JobRecord& j) { return j.ready_since; };
    Cache* best_c = nullptr;
    std::uint32_t best_cap = 0;
    std::optional<HeadChoice> best;
    for (std::size_t i = 0; i < r.types.size(); ++i) {
        auto [ref, cap] = r.types[i];
        if (cap == 0 || ref >= caches_.size()) continue;
        auto& c = caches_[ref];
        if (c.next_due_in_db && *c.next_due_in_db <= r.now) {
            c.maybe_in_db = true;
            c.next_due_in_db.reset();
        }
        if (c.maybe_in_db && c.size < options_.prefetch / 2 + 1) request_refill_locked(ref);
        auto head = best_head(c.ready, r.now, r.aging, since_of);
        if (!head) { // a refill, if one is under way, wakes the executor when it brings jobs
            result.exhausted.push_back(i);
            continue;
        }
        if (head->beats(best)) {
            best = head;
            best_c = &c;
            best_cap = cap;
            result.index = i;
        }
    }
    if (!best_c) return result;
    std::uint32_t n = std::min(best_cap, r.max);
    while (result.jobs.size() < n) {
        auto head = best_head(best_c->ready, r.now, r.aging, since_of);
        if (!head) break;
        auto& from = best_c->ready[head->level];
        JobRecord job = std::move(from.front());
        from.pop_front();
        best_c->size -= 1;
        job.started_at = r.now;
        result.jobs.push_back(std::move(job));
    }
    return result;
}

void SqliteStore::append_error(JobId id, std::uint32_t attempt, TimePoint at, const std::string& message) {
    auto& s = writer_->cached("UPDATE jobs SET errors = json_insert(errors, '$[#]', json_object('attempt', ?, 'at', ?, "
                              "'message', ?)) WHERE id = ?");
    s.bind(1, static_cast<std::int64_t>(attempt)).bind(2, to_ms(at)).bind(3, std::string_view(message));
    s.bind(4, static_cast<std::int64_t>(id)).run();
}

void SqliteStore::finish(std::span<const Outcome> outcomes) {
    auto copy = std::make_shared<std::vector<Outcome>>(outcomes.begin(), outcomes.end());
    Op op;
    op.in_transaction = [this, copy] {
        auto& done_delete = writer_->cached("DELETE FROM jobs WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& done_keep = writer_->cached("UPDATE jobs SET state = 3, finished_at = ?, lease_owner = NULL WHERE id = ? "
                                          "AND state = 2 AND lease_owner = ?");
        auto& retry = writer_->cached(
            "UPDATE jobs SET state = 1, run_at = ?, lease_owner = NULL, lease_expiry = NULL, "
            "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?, 'message', ?)) "
            "WHERE id = ? AND state = 2 AND lease_owner = ?");
        auto& dead = writer_->cached(
            "UPDATE jobs SET state = 4, finished_at = ?, dead_reason = ?, lease_owner = NULL, lease_expiry = NULL, "
            "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?, 'message', ?)) "
            "WHERE id = ? AND state = 2 AND lease_owner = ?");
        std::string_view owner(options_.owner);
        for (const auto& o : *copy) {
            auto id = static_cast<std::int64_t>(o.id);
            switch (o.kind) {
            case Outcome::Kind::done:
                if (options_.retain_done == 0 && options_.retain_done_for.count() == 0)
                    done_delete.bind(1, id).bind(2, owner).run();
                else
                    done_keep.bind(1, to_ms(o.at)).bind(2, id).bind(3, owner).run();
                break;
            case Outcome::Kind::dropped: done_delete.bind(1, id).bind(2, owner).run(); break;
            case Outcome::Kind::retry:
                retry.bind(1, to_ms(o.retry_at)).bind(2, to_ms(o.at)).bind(3, std::string_view(o.error));
                retry.bind(4, id).bind(5, owner).run();
                break;
            case Outcome::Kind::dead:
                dead.bind(1, to_ms(o.at)).bind(2, static_cast<std::int64_t>(o.reason)).bind(3, to_ms(o.at));
                dead.bind(4, std::string_view(o.error)).bind(5, id).bind(6, owner).run();
                break;
            }
        }
    };
    op.after_commit = [this, copy] {
        // a retry is due later: remember when, so that a claim at that time refills from the file, and let the
        // executor arm its timer for it
        bool retries = false;
        {
            std::lock_guard lock(cache_mutex_);
            for (const auto& o : *copy) {
                if (o.kind != Outcome::Kind::retry) continue;
                retries = true;
                auto& c = cache_locked(o.type);
                if (!c.next_due_in_db || o.retry_at < *c.next_due_in_db) c.next_due_in_db = o.retry_at;
            }
        }
        if (retries) wake();
    };
    submit(std::move(op), false);
}

void SqliteStore::release(std::span<const JobId> ids, const std::string& error, TimePoint now) {
    auto copy = std::make_shared<std::vector<JobId>>(ids.begin(), ids.end());
    Op op;
    op.in_transaction = [this, copy, error, now] {
        auto& s = writer_->cached("UPDATE jobs SET state = 1, run_at = ?, lease_owner = NULL, lease_expiry = NULL, "
                                  "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?, "
                                  "'message', ?)) WHERE id = ? AND state = 2");
        for (JobId id : *copy)
            s.bind(1, to_ms(now))
                .bind(2, to_ms(now))
                .bind(3, std::string_view(error))
                .bind(4, static_cast<std::int64_t>(id))
                .run();
    };
    op.after_commit = [this] {
        std::lock_guard lock(cache_mutex_);
        for (auto& c : caches_) c.maybe_in_db = true;
    };
    submit(std::move(op), true);
}

std::optional<TimePoint> SqliteStore::next_due(const std::set<std::string>& types, TimePoint now) {
    std::lock_guard lock(cache_mutex_);
    std::optional<TimePoint> best;
    for (const auto& t : types) {
        auto it = refs_.find(t);
        if (it == refs_.end()) continue;
        auto& c = caches_[it->second];
        if (!c.next_due_in_db) continue;
        if (*c.next_due_in_db <= now) { // due already: fetch it; the refill wakes the executor
            c.next_due_in_db.reset();
            c.maybe_in_db = true;
            request_refill_locked(it->second);
            continue;
        }
        if (!best || *c.next_due_in_db < *best) best = c.next_due_in_db;
    }
    return best;
}

std::optional<JobRecord> SqliteStore::get(JobId id) {
    std::lock_guard lock(reader_mutex_);
    auto& s = reader_->cached(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?");
    s.bind(1, static_cast<std::int64_t>(id));
    std::optional<JobRecord> out;
    if (s.step()) out = read_row(s);
    s.reset(); // a statement left mid-row would pin this connection's snapshot
    return out;
}

std::vector<JobRecord> SqliteStore::list(const ListFilter& f) {
    std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE 1";
    if (f.type) sql += " AND type = :type";
    if (f.state) {
        switch (*f.state) {
        case JobState::scheduled: sql += " AND state = 1 AND run_at > :now"; break;
        case JobState::ready: sql += " AND state = 1 AND run_at <= :now"; break;
        case JobState::leased: sql += " AND state = 2"; break;
        case JobState::done: sql += " AND state = 3"; break;
        case JobState::dead: sql += " AND state = 4"; break;
        }
    }
    sql += " ORDER BY id DESC LIMIT :limit";
    std::lock_guard lock(reader_mutex_);
    auto& s = reader_->cached(sql);
    int idx = 1; // the parameters appear in the order they were added above
    if (f.type) s.bind(idx++, std::string_view(*f.type));
    if (f.state && (*f.state == JobState::scheduled || *f.state == JobState::ready)) s.bind(idx++, to_ms(Clock::now()));
    s.bind(idx, static_cast<std::int64_t>(f.limit));
    std::vector<JobRecord> out;
    while (s.step()) out.push_back(read_row(s));
    s.reset();
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
                  auto& s = writer_->cached("UPDATE OR IGNORE jobs SET state = 1, attempt = 0, dead_reason = 0, "
                                            "run_at = ?, finished_at = NULL WHERE id = ? AND state = 4");
                  for (JobId id : copy) {
                      s.bind(1, to_ms(now)).bind(2, static_cast<std::int64_t>(id)).run();
                      n += static_cast<std::size_t>(writer_->changes());
                  }
              },
              [this] {
                  {
                      std::lock_guard lock(cache_mutex_);
                      for (auto& c : caches_) c.maybe_in_db = true;
                  }
                  wake();
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
    {
        std::lock_guard lock(reader_mutex_);
        auto& s = reader_->cached("SELECT type, state, run_at > ?, COUNT(*), MIN(run_at) FROM jobs GROUP BY 1, 2, 3");
        s.bind(1, to_ms(Clock::now()));
        while (s.step()) {
            auto& c = out[s.text(0)];
            auto n = static_cast<std::size_t>(s.int64(3));
            if (s.int64(1) == kQueued && s.int64(2) == 0) c.oldest_ready = from_ms(s.int64(4));
            switch (s.int64(1)) {
            case kQueued: (s.int64(2) ? c.scheduled : c.ready) += n; break;
            case kLeased: c.leased += n; break;
            case kDone: c.done += n; break;
            default: c.dead += n; break;
            }
        }
        s.reset();
    }
    // Leased jobs waiting in this host's cache have not started: they are ready, as far as anyone can tell.
    std::lock_guard lock(cache_mutex_);
    for (std::size_t r = 0; r < caches_.size(); ++r) {
        if (caches_[r].size == 0) continue;
        auto& c = out[names_[r]];
        std::size_t n = std::min(caches_[r].size, c.leased);
        c.leased -= n;
        c.ready += n;
        for (const auto& level : caches_[r].ready)
            if (!level.empty() && (!c.oldest_ready || level.front().ready_since < *c.oldest_ready))
                c.oldest_ready = level.front().ready_since;
    }
    return out;
}

} // namespace jobhost::store
