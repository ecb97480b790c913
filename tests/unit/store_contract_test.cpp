// The store contract (host/store/store.hpp), one suite for every engine. The rules that concern a crash or a second
// host run where an engine has them: SQLite and PostgreSQL, with real processes that die holding jobs. PostgreSQL
// runs on a server of the suite's own (tests/support/pg_server.hpp), one schema per test.
#include "store/memory_store.hpp"
#include "store/pg.hpp"
#include "store/postgres_store.hpp"
#include "store/sqlite_store.hpp"

#include "support/pg_server.hpp"
#include "support/temp_dir.hpp"

#include <functional>
#include <doctest/doctest.h>

#include <csignal>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace jobhost;
using namespace std::chrono_literals;
using jobhost::test::TempDir;
using store::Clock;
using store::JobState;
using store::Outcome;

namespace {

struct MemoryContract {
    static constexpr bool durable = false;
    static constexpr bool keeps_done = false; // finished jobs are forgotten
    std::int64_t retain_done = 0;
    TempDir dir;
    std::unique_ptr<store::JobStore> open() { return std::make_unique<store::MemoryStore>(); }
};

struct SqliteContract {
    static constexpr bool durable = true;
    static constexpr bool keeps_done = true;
    std::int64_t retain_done = 0;                   // [store] retain_done
    std::chrono::milliseconds retain_done_for{0};   // [store] retain_done_for
    std::size_t retain_dead = 100'000;              // [store] retain_dead
    static constexpr bool knows_crash_cause = true; // the host record keeps the signal
    TempDir dir;
    // Null with the reason in `why` (for a forked child, which must not REQUIRE).
    std::unique_ptr<store::JobStore> try_open(bool host, std::string& why) {
        store::SqliteOptions o;
        o.path = dir / "jobs.db";
        o.host = host;
        o.retain_done = static_cast<std::size_t>(retain_done);
        o.retain_done_for = retain_done_for;
        o.retain_dead = retain_dead;
        auto s = store::SqliteStore::open(o);
        if (!s) {
            why = s.error().message;
            return nullptr;
        }
        return std::move(*s);
    }
    std::unique_ptr<store::JobStore> open(bool host = true) {
        std::string why;
        auto s = try_open(host, why);
        REQUIRE_MESSAGE(s, why);
        return s;
    }
    bool hosts_gone() const { return std::filesystem::is_empty(store::HostRecord::folder_of(dir / "jobs.db")); }
};

// One server for the whole suite, started on first use.
jobhost::test::PgServer& pg_server() {
    static jobhost::test::PgServer server;
    return server;
}

struct PostgresContract {
    static constexpr bool durable = true;
    static constexpr bool keeps_done = true;
    std::int64_t retain_done = 0;                    // [store] retain_done
    std::chrono::milliseconds retain_done_for{0};    // [store] retain_done_for
    std::size_t retain_dead = 100'000;               // [store] retain_dead
    static constexpr bool knows_crash_cause = false; // another machine cannot read what killed a host
    std::size_t mark_sequences = store::PostgresOptions{}.mark_sequences; // at most; more runs: marked in a table
    std::string url = pg_server().url();
    std::string schema = [] {
        static int n = 0;
        return "contract_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
    }();
    std::unique_ptr<store::JobStore> try_open(bool host, std::string& why) {
        store::PostgresOptions o;
        o.url = url;
        o.schema = schema;
        o.host = host;
        o.lease = 3s;
        o.retain_done = static_cast<std::size_t>(retain_done);
        o.retain_done_for = retain_done_for;
        o.retain_dead = retain_dead;
        o.mark_sequences = mark_sequences;
        auto s = store::PostgresStore::open(o);
        if (!s) {
            why = s.error().message;
            return nullptr;
        }
        return std::move(*s);
    }
    std::unique_ptr<store::JobStore> open(bool host = true) {
        std::string why;
        auto s = try_open(host, why);
        REQUIRE_MESSAGE(s, why);
        return s;
    }
    bool hosts_gone() const { return pg_server().psql("SELECT count(*) FROM " + schema + ".hosts") == "0"; }
};

store::NewJob job(const std::string& type, const std::string& payload = "null",
                  registry::Priority priority = registry::Priority::normal, std::uint32_t max_attempts = 3) {
    store::NewJob n;
    n.type = type;
    n.payload = payload;
    n.priority = priority;
    n.max_attempts = max_attempts;
    return n;
}

std::vector<store::JobId> ids_of(const std::vector<store::EnqueueOutcome>& out) {
    std::vector<store::JobId> ids;
    for (const auto& o : out) ids.push_back(o.id);
    return ids;
}

// Claims with the given (type, cap) pairs, retrying while an engine brings reservations from its file.
store::ClaimResult claim(store::JobStore& s, std::vector<std::pair<std::string, std::uint32_t>> types,
                         std::uint32_t max = 1000, std::function<bool(std::size_t)> take = {}) {
    store::ClaimRequest r;
    r.take = std::move(take);
    for (const auto& [t, cap] : types) r.types.emplace_back(s.intern(t), cap);
    r.max = max;
    r.owner = "contract";
    for (int i = 0; i < 200; ++i) {
        r.now = Clock::now();
        r.lease_expiry = r.now + 30s;
        auto got = s.claim(r);
        if (!got.jobs.empty()) return got;
        s.flush();
        std::this_thread::sleep_for(2ms);
    }
    return {};
}

std::vector<store::JobRecord> claim_all(store::JobStore& s, const std::string& type, std::size_t n) {
    std::vector<store::JobRecord> out;
    for (int i = 0; i < 50 && out.size() < n; ++i) {
        auto got = claim(s, {{type, static_cast<std::uint32_t>(n - out.size())}});
        if (got.jobs.empty()) break;
        out.insert(out.end(), got.jobs.begin(), got.jobs.end());
    }
    return out;
}

Outcome outcome(const store::JobRecord& j, Outcome::Kind kind, const std::string& error = {}) {
    auto now = Clock::now();
    return Outcome{j.id, j.type, kind, now, now, error, store::DeadReason::retries_exhausted, now};
}

} // namespace

TEST_CASE_TEMPLATE("an id is never handed out twice, whatever was deleted", E, MemoryContract, SqliteContract,
                   PostgresContract) {
    E e;
    store::JobId highest = 0;
    {
        auto s = e.open();
        auto ids = ids_of(s->enqueue(std::vector{job("a"), job("a"), job("a")}));
        highest = ids.back();
        for (const auto& j : claim_all(*s, "a", 3)) s->finish(std::vector{outcome(j, Outcome::Kind::done)});
        s->flush();
        CHECK(s->counts()["a"].pending() == 0);
        auto next = ids_of(s->enqueue(std::vector{job("a")}));
        CHECK(next.front() > highest);
        highest = next.front();
        s->close();
    }
    if constexpr (E::durable) { // and after a restart with every job gone
        auto s = e.open();
        for (const auto& j : claim_all(*s, "a", 1)) s->finish(std::vector{outcome(j, Outcome::Kind::done)});
        s->flush();
        CHECK(ids_of(s->enqueue(std::vector{job("a")})).front() > highest);
        s->close();
    }
}

TEST_CASE_TEMPLATE("an attempt is charged when a run ends, never when a job is fetched", E, MemoryContract,
                   SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    auto id = ids_of(s->enqueue(std::vector{job("a")})).front();
    auto got = claim(*s, {{"a", 1}});
    REQUIRE(got.jobs.size() == 1);
    CHECK(got.jobs[0].attempt == 1); // the attempt it is about to run
    auto token = s->begin_run(got.jobs);
    s->flush(); // begin_run may write without waiting; a flush makes it visible to reads
    auto running = s->get(id);
    REQUIRE(running);
    CHECK(running->state == JobState::running);
    CHECK(running->attempt == 1);
    auto now = Clock::now();
    s->finish(std::vector{Outcome{id, "a", Outcome::Kind::retry, now, now, "try again", {}, now}}, std::move(token));
    s->flush();
    auto after = s->get(id);
    REQUIRE(after);
    CHECK(after->attempt == 1);
    REQUIRE(after->errors.size() == 1);
    CHECK(after->errors[0].attempt == 1);
    auto again = claim(*s, {{"a", 1}});
    REQUIRE(again.jobs.size() == 1);
    CHECK(again.jobs[0].attempt == 2);
    s->close();
}

TEST_CASE_TEMPLATE("a run cancelled by a shutdown goes back to ready uncharged, its error kept", E, MemoryContract,
                   SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    auto id = ids_of(s->enqueue(std::vector{job("a")})).front();
    auto got = claim(*s, {{"a", 1}});
    REQUIRE(got.jobs.size() == 1);
    auto token = s->begin_run(got.jobs);
    auto now = Clock::now();
    s->finish(std::vector{Outcome{id, "a", Outcome::Kind::released, now, {}, "cancelled by shutdown", {}, now}},
              std::move(token));
    s->flush();
    auto j = s->get(id);
    REQUIRE(j);
    CHECK(j->state == JobState::ready);
    CHECK(j->attempt == 0);
    REQUIRE(j->errors.size() == 1);
    CHECK(j->errors[0].message == "cancelled by shutdown");
    s->close();
}

// Retention: prune() keeps the newest retain_done finished jobs and the newest retain_dead dead letters, and none
// finished longer than retain_done_for ago. (The memory engine keeps no finished job to prune.)
TEST_CASE_TEMPLATE("pruning keeps the newest retain_done finished jobs and retain_dead dead letters, none older than "
                   "retain_done_for",
                   E, SqliteContract, PostgresContract) {
    // which of `ids` the store still has
    auto kept = [](store::JobStore& s, const std::vector<store::JobId>& ids) {
        std::vector<store::JobId> out;
        for (auto id : ids)
            if (s.get(id)) out.push_back(id);
        return out;
    };
    auto finish_all = [](store::JobStore& s, const std::string& type, Outcome::Kind kind,
                         const std::vector<std::chrono::minutes>& ago) {
        std::vector<store::NewJob> jobs(ago.size(), job(type, "null", registry::Priority::normal, 1));
        s.enqueue(jobs);
        auto got = claim_all(s, type, ago.size());
        REQUIRE(got.size() == ago.size());
        std::sort(got.begin(), got.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
        std::vector<Outcome> outcomes;
        std::vector<store::JobId> ids;
        for (std::size_t i = 0; i < got.size(); ++i) {
            auto o = outcome(got[i], kind);
            o.at = Clock::now() - ago[i];
            if (kind == Outcome::Kind::dead) o.error = "no";
            outcomes.push_back(o);
            ids.push_back(got[i].id);
        }
        s.finish(outcomes);
        s.flush();
        return ids;
    };
    SUBCASE("by number") {
        E e;
        e.retain_done = 3;
        e.retain_dead = 2;
        auto s = e.open();
        auto done = finish_all(*s, "a", Outcome::Kind::done, {5min, 4min, 3min, 2min, 1min});
        auto dead = finish_all(*s, "b", Outcome::Kind::dead, {3min, 2min, 1min});
        CHECK(kept(*s, done) == done); // nothing is pruned before prune()
        s->prune();
        CHECK(kept(*s, done) == std::vector(done.begin() + 2, done.end()));
        CHECK(kept(*s, dead) == std::vector(dead.begin() + 1, dead.end()));
        CHECK(s->counts()["a"].done == 3);
        CHECK(s->counts()["b"].dead == 2);
        s->close();
    }
    SUBCASE("by age") {
        E e;
        e.retain_done_for = 1h;
        auto s = e.open();
        auto done = finish_all(*s, "a", Outcome::Kind::done, {120min, 61min, 59min, 1min});
        s->prune();
        CHECK(kept(*s, done) == std::vector(done.begin() + 2, done.end()));
        CHECK(s->counts()["a"].done == 2);
        s->close();
    }
}

TEST_CASE_TEMPLATE("a running job's latest progress is kept, and a report after it ended changes nothing", E,
                   MemoryContract, SqliteContract, PostgresContract) {
    E e;
    e.retain_done = 10;
    auto s = e.open();
    s->enqueue(std::vector{job("p")});
    auto got = claim(*s, {{"p", 1}});
    REQUIRE(got.jobs.size() == 1);
    auto j = got.jobs.front();
    auto token = s->begin_run(std::vector{j});
    auto at = Clock::now();
    s->progress(j.id, {40, "two of five", at});
    s->progress(j.id, {60, "three of five", at + 1ms});
    s->flush();
    auto running = s->get(j.id);
    REQUIRE(running);
    REQUIRE(running->progress);
    CHECK(running->progress->percent == 60);
    CHECK(running->progress->message == "three of five");
    auto ms = [](store::TimePoint t) { // the stores keep milliseconds
        return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    };
    CHECK(ms(running->progress->at) == ms(at + 1ms));
    auto o = outcome(j, Outcome::Kind::done);
    o.result = store::JobResult{"all five", R"({"n":5,"s":"\"quoted\" \\ back"})", ""};
    s->finish(std::vector{o}, std::move(token));
    s->progress(j.id, {99, "too late", Clock::now()});
    s->flush();
    if constexpr (E::keeps_done) {
        auto done = s->get(j.id);
        REQUIRE(done);
        CHECK(done->state == JobState::done);
        REQUIRE(done->progress);
        CHECK(done->progress->percent == 60);
        REQUIRE(done->result);
        CHECK(done->result->message == "all five");
        CHECK(done->result->output == R"({"n":5,"s":"\"quoted\" \\ back"})");
    }
    s->close();
}

TEST_CASE_TEMPLATE("a retry from the dead-letter queue gives a fresh set of attempts and numbers its errors on", E,
                   MemoryContract, SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    auto id = ids_of(s->enqueue(std::vector{job("r", "null", registry::Priority::normal, 2)})).front();
    auto fail = [&](Outcome::Kind kind, const std::string& error) {
        auto got = claim(*s, {{"r", 1}});
        REQUIRE(got.jobs.size() == 1);
        auto token = s->begin_run(got.jobs);
        auto o = outcome(got.jobs.front(), kind, error);
        o.retry_at = o.at; // at once
        s->finish(std::vector{o}, std::move(token));
        s->flush();
    };
    fail(Outcome::Kind::retry, "first");
    fail(Outcome::Kind::dead, "second");
    CHECK(s->replay(std::vector{id}, Clock::now()) == 1);
    auto back = s->get(id);
    REQUIRE(back);
    CHECK(back->attempt == 2);
    CHECK(back->max_attempts == 4); // two more, as it had
    CHECK(back->attempts_before == 2);
    fail(Outcome::Kind::retry, "third");
    fail(Outcome::Kind::dead, "fourth");
    CHECK(s->replay(std::vector{id}, Clock::now()) == 1);
    back = s->get(id);
    REQUIRE(back);
    CHECK(back->max_attempts == 6); // again two more, not four
    fail(Outcome::Kind::dead, "fifth");
    auto j = s->get(id);
    REQUIRE(j);
    REQUIRE(j->errors.size() == 5);
    for (std::uint32_t i = 0; i < 5; ++i) CHECK(j->errors[i].attempt == i + 1);
    CHECK(j->errors[4].message == "fifth");
    s->close();
}

TEST_CASE_TEMPLATE("a batch takes only jobs that would be next anyway, across types", E, MemoryContract, SqliteContract,
                   PostgresContract) {
    E e;
    auto s = e.open();
    using registry::Priority;
    s->enqueue(std::vector{job("batch", "\"high\"", Priority::high), job("batch", "\"low-1\"", Priority::low),
                           job("batch", "\"low-2\"", Priority::low)});
    std::this_thread::sleep_for(2ms);
    s->enqueue(std::vector{job("other", "\"high\"", Priority::high)});
    // the batch type's high job is the oldest high one; its low jobs must wait for the other type's high job
    auto first = claim(*s, {{"batch", 8}, {"other", 1}});
    REQUIRE(first.jobs.size() == 1);
    CHECK(first.jobs[0].payload == "\"high\"");
    CHECK(first.jobs[0].type == "batch");
    auto second = claim(*s, {{"batch", 8}, {"other", 1}});
    REQUIRE(second.jobs.size() == 1);
    CHECK(second.jobs[0].type == "other");
    auto third = claim(*s, {{"batch", 8}, {"other", 1}});
    CHECK(third.jobs.size() == 2);
    s->close();
}

TEST_CASE_TEMPLATE("a type whose lane refuses the slot (ClaimRequest::take) is passed over for the next best one", E,
                   MemoryContract, SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    using registry::Priority;
    s->enqueue(std::vector{job("full", "\"best\"", Priority::high), job("free", "\"next\"", Priority::normal)});
    std::vector<std::size_t> asked;
    auto refuse_full = [&](std::size_t i) {
        asked.push_back(i);
        return i != 0; // entry 0 is "full": its lane is at its concurrency
    };
    auto got = claim(*s, {{"full", 1}, {"free", 1}}, 1000, refuse_full);
    REQUIRE(got.jobs.size() == 1);
    CHECK(got.jobs[0].payload == "\"next\"");
    CHECK(got.index == 1);
    REQUIRE(asked.size() >= 2);
    CHECK(asked[0] == 0); // the best was offered first, and refused
    CHECK(asked.back() == 1);
    // refused everywhere: nothing is taken, and the refused job is still there for a lane with room
    store::ClaimRequest none;
    none.types.emplace_back(s->intern("full"), 1);
    none.max = 1000;
    none.owner = "contract";
    none.now = Clock::now();
    none.lease_expiry = none.now + 30s;
    none.take = [](std::size_t) { return false; };
    CHECK(s->claim(none).jobs.empty());
    auto later = claim(*s, {{"full", 1}});
    REQUIRE(later.jobs.size() == 1);
    CHECK(later.jobs[0].payload == "\"best\"");
    s->close();
}

TEST_CASE_TEMPLATE("a schedule's tick is queued once, and coalesced while its previous run is pending", E,
                   MemoryContract, SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    auto tick = [](store::TimePoint at) {
        auto n = job("periodic");
        n.from_schedule = true;
        n.unique_key = std::string(store::kScheduleKey);
        n.tick = at;
        return n;
    };
    auto t0 = Clock::now();
    auto first = s->enqueue(std::vector{tick(t0)});
    CHECK(first[0].created);
    auto same = s->enqueue(std::vector{tick(t0)}); // the same tick from another host
    CHECK(same[0].tick_taken);
    CHECK_FALSE(same[0].created);
    auto next = s->enqueue(std::vector{tick(t0 + 1s)}); // the next tick while the first run is pending
    CHECK_FALSE(next[0].created);
    CHECK_FALSE(next[0].tick_taken);
    CHECK(next[0].id == first[0].id);
    for (const auto& j : claim_all(*s, "periodic", 1)) s->finish(std::vector{outcome(j, Outcome::Kind::done)});
    s->flush();
    CHECK(s->enqueue(std::vector{tick(t0 + 2s)})[0].created);
    CHECK(s->enqueue(std::vector{tick(t0 + 1s)})[0].tick_taken); // an older tick never runs after a newer one
    s->close();
}

TEST_CASE_TEMPLATE("counts are kept by state, and every enqueue is counted whoever made it, replays included", E,
                   MemoryContract, SqliteContract, PostgresContract) {
    E e;
    auto s = e.open();
    auto later = Clock::now() + 1h;
    auto delayed = job("a");
    delayed.run_at = later;
    s->enqueue(std::vector{job("a"), job("a", "null", registry::Priority::normal, 1), delayed});
    auto c = s->counts()["a"];
    CHECK(c.enqueued == 3);
    CHECK(c.ready == 2);
    CHECK(c.scheduled == 1);
    auto got = claim_all(*s, "a", 2);
    REQUIRE(got.size() == 2);
    auto token = s->begin_run(got);
    s->flush();
    c = s->counts()["a"];
    CHECK(c.running == 2);
    CHECK(c.ready == 0);
    auto now = Clock::now();
    s->finish(
        std::vector{Outcome{got[0].id, "a", Outcome::Kind::dead, now, {}, "no", store::DeadReason::timed_out, now},
                    Outcome{got[1].id, "a", Outcome::Kind::dead, now, {}, "no", store::DeadReason::timed_out, now}},
        std::move(token));
    s->flush();
    c = s->counts()["a"];
    CHECK(c.dead == 2);
    CHECK(c.running == 0);
    CHECK(s->replay(std::vector{got[0].id}, Clock::now()) == 1);
    c = s->counts()["a"];
    CHECK(c.enqueued == 4); // the replay is an enqueue
    CHECK(c.dead == 1);
    CHECK(c.ready == 1);
    CHECK(s->purge_dead(std::string("a"), std::nullopt) == 1);
    CHECK(s->counts()["a"].dead == 0);
    if constexpr (E::durable) { // an enqueue by another process (the CLI) counts too
        auto cli = e.open(false);
        cli->enqueue(std::vector{job("a")});
        cli->close();
        CHECK(s->counts()["a"].enqueued == 5);
    }
    s->close();
}

// --- What a crash does: a real process dies holding jobs (SQLite and PostgreSQL; the memory engine has nothing to
// survive). ---

namespace {

// Forks a host that opens the store, reserves `reserve` jobs of type "a", marks the first `run` of them as
// running, then stops itself with `how`: SIGKILL, SIGSEGV, or exit. Returns its pid, not yet reaped (a zombie
// once dead) when `reap` is false.
template <class E>
pid_t crash_host(E& e, std::size_t reserve, std::size_t run, int how, bool reap = true) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(ready[0]);
        std::string why;
        auto s = e.try_open(true, why);
        if (!s) ::_exit(3);
        auto& st = *s;
        if (how == SIGSEGV || how == SIGABRT) store::arm_crash_notes(st.host_record());
        auto got = claim_all(st, "a", reserve);
        st.begin_run(std::span(got).first(std::min(run, got.size())));
        st.flush(); // the start marks are sent (PostgreSQL: and applied, so the test knows what ran)
        char c = static_cast<char>(got.size());
        [[maybe_unused]] auto n = ::write(ready[1], &c, 1);
        if (how == 0) ::_exit(0);
        ::raise(how);
        ::_exit(4);
    }
    ::close(ready[1]);
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    CHECK(static_cast<std::size_t>(c) == reserve);
    if (reap) {
        int status = 0;
        ::waitpid(pid, &status, 0);
    } else {
        std::this_thread::sleep_for(100ms); // let it die, and stay a zombie
    }
    return pid;
}

} // namespace

// A burst: a host whose workers end runs as fast as refills bring jobs, with many more waiting. It used to hold 2
// ahead until its demand window (50 ms) measured the pace, so each refill brought 1 or 2 jobs for the first 50 ms of
// a burst (a 50-slot host drained a backlog at about 1,000 jobs/s for that time). Each refill that such claims went
// without now holds twice as many ahead, up to the cap. Idle workers taking their first job (slots filling up with
// long jobs) do not make it grow, so such a host leaves the rest of the backlog to other hosts.
TEST_CASE_TEMPLATE("a host that ends runs faster than refills bring jobs holds twice as many ahead with each refill", E,
                   SqliteContract, PostgresContract) {
    E e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector<store::NewJob>(5000, job("a")));
        s->close();
    }
    auto s = e.open();
    std::mutex m;
    std::condition_variable cv;
    int wakeups = 0; // a refill landed
    s->set_wakeup([&] {
        std::lock_guard lock(m);
        ++wakeups;
        cv.notify_all();
    });
    // Claims one job at a time until `refills` claims found nothing with a refill under way (each then waits for
    // it): the jobs taken between two such waits.
    std::size_t total = 0;
    auto bursts = [&](std::size_t refills, bool after_run) {
        store::ClaimRequest r;
        r.types = {{s->intern("a"), 1}};
        r.max = 1;
        r.owner = "contract";
        r.after_run = after_run;
        std::vector<std::size_t> out;
        std::size_t burst = 0;
        while (out.size() < refills) {
            int seen = 0;
            {
                std::lock_guard lock(m);
                seen = wakeups;
            }
            r.now = Clock::now();
            r.lease_expiry = r.now + 30s;
            auto got = s->claim(r);
            if (!got.jobs.empty()) {
                burst += got.jobs.size();
                continue;
            }
            REQUIRE(got.waiting.size() == 1); // nothing ahead, a refill under way
            out.push_back(burst);
            total += burst;
            burst = 0;
            std::unique_lock lock(m);
            REQUIRE(cv.wait_for(lock, 10s, [&] { return wakeups > seen; }));
        }
        std::string seq;
        for (auto b : out) seq += std::to_string(b) + " ";
        std::string who = after_run ? "workers that ended a run" : "idle workers";
        MESSAGE(who << " took between refills: " << seq);
        return out;
    };
    auto start = std::chrono::steady_clock::now();
    auto fresh = bursts(6, false);
    if (std::chrono::steady_clock::now() - start < 45ms) // (after 50 ms, the demand window sizes it: a slow build)
        CHECK(*std::max_element(fresh.begin(), fresh.end()) <= 2);
    auto fast = bursts(12, true);
    CHECK(total < 5000); // the backlog outlasted the test: every refill left more in the database
    CHECK(*std::max_element(fast.begin(), fast.end()) >= 64);
    s->set_wakeup({});
    s->close();
}

TEST_CASE_TEMPLATE("after a crash, only the jobs that were running are charged, reserved ones come back unchanged", E,
                   SqliteContract, PostgresContract) {
    E e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector{job("a", "1"), job("a", "2"), job("a", "3"), job("a", "4")});
        s->close();
    }
    crash_host(e, 3, 1, SIGSEGV);
    auto s = e.open();
    CHECK(s->recovered_at_open() >= 3); // what it reserved ahead too
    auto jobs = s->list({"a", std::nullopt, 10});
    REQUIRE(jobs.size() == 4);
    int charged = 0;
    for (const auto& j : jobs) {
        CHECK(j.state == JobState::ready);
        if (j.attempt == 0) {
            CHECK(j.errors.empty());
            continue;
        }
        ++charged;
        CHECK(j.attempt == 1);
        REQUIRE(j.errors.size() == 1);
        if constexpr (E::knows_crash_cause)
            CHECK(j.errors[0].message.find("the host died while this job was running (killed by signal 11 (SIGSEGV)") ==
                  0);
        else
            CHECK(j.errors[0].message.find("the host died while this job was running (host ") == 0);
    }
    CHECK(charged == 1);
    s->close();
}

TEST_CASE_TEMPLATE("a job that crashes its host every time is charged each crash and dead-lettered as crashed_host", E,
                   SqliteContract, PostgresContract) {
    E e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector{job("a", "\"poison\"", registry::Priority::normal, 3)});
        s->close();
    }
    for (int i = 0; i < 3; ++i) crash_host(e, 1, 1, SIGKILL);
    auto s = e.open();
    auto dead = s->dead_letters({});
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].attempt == 3);
    CHECK(dead[0].dead_reason == store::DeadReason::crashed_host);
    REQUIRE(dead[0].errors.size() == 3);
    for (std::uint32_t i = 0; i < 3; ++i) {
        CHECK(dead[0].errors[i].attempt == i + 1);
        CHECK(dead[0].errors[i].message.find("the host died while this job was running") == 0);
    }
    s->close();
}

namespace {

// A host in a child process that a test steps through: it opens, reserves `reserve` jobs of type "a" and says how
// many it got; on go() it calls `then` with them, says so, and waits to be killed.
struct SteppedHost {
    pid_t pid = -1;
    int to_child = -1, from_child = -1;
    bool read_within(char& c, int ms) const {
        pollfd p{from_child, POLLIN, 0};
        return ::poll(&p, 1, ms) == 1 && ::read(from_child, &c, 1) == 1;
    }
    bool go() const { return ::write(to_child, "g", 1) == 1; }
    void kill() const {
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        ::close(to_child);
        ::close(from_child);
    }
};

SteppedHost stepped_host(PostgresContract& e, std::size_t reserve,
                         const std::function<void(store::JobStore&, std::vector<store::JobRecord>&)>& then) {
    int to_child[2], to_parent[2];
    REQUIRE(::pipe(to_child) == 0);
    REQUIRE(::pipe(to_parent) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(to_child[1]);
        ::close(to_parent[0]);
        std::string why;
        auto s = e.try_open(true, why);
        if (!s) ::_exit(3);
        auto got = claim_all(*s, "a", reserve);
        char c = static_cast<char>(got.size());
        if (::write(to_parent[1], &c, 1) != 1 || ::read(to_child[0], &c, 1) != 1 || got.size() != reserve) ::_exit(5);
        then(*s, got);
        [[maybe_unused]] auto n = ::write(to_parent[1], "b", 1);
        ::pause();
        ::_exit(4);
    }
    ::close(to_child[0]);
    ::close(to_parent[1]);
    return {pid, to_child[1], to_parent[0]};
}

// The jobs of type "a" once a live host gave back a dead one's (it looks each second), within 10 s.
std::vector<store::JobRecord> after_rescue(store::JobStore& s) {
    std::vector<store::JobRecord> jobs;
    auto until = std::chrono::steady_clock::now() + 10s;
    do {
        std::this_thread::sleep_for(100ms);
        jobs = s.list({"a", std::nullopt, 10});
    } while (std::chrono::steady_clock::now() < until &&
             std::any_of(jobs.begin(), jobs.end(), [](const auto& j) { return j.state != JobState::ready; }));
    return jobs;
}

} // namespace

// PostgreSQL: a run waits only until its start mark is in the server's socket, not until the server applied it. A
// host killed while the server has not yet applied its marks (here they wait behind locks) is still charged exactly
// the runs it started: the server applies what its socket holds before it sees the connection close, and the host
// counts as alive until then. Before, each run waited for its mark's answer (here: the first run would wait for the
// lock, and the others never start); marks sent with a Sync each were lost (the server ends a session it cannot
// answer, and drops what its socket still holds). Marks by the line's sequence (runs started in line), by both (the
// second job in line started first: it is marked in the table, and the sequence passes it once the first started),
// and in the table (no sequences).
TEST_CASE("PostgreSQL: a host killed before the server applied its start marks is charged every run it started") {
    struct Variant {
        std::size_t sequences;
        std::vector<std::size_t> order; // of the first 3 jobs in line
        const char* in_table;           // runs marked in the table
    };
    for (const auto& v : {Variant{128, {0, 1, 2}, "0"}, Variant{128, {1, 0, 2}, "1"}, Variant{0, {0, 1, 2}, "3"}}) {
        CAPTURE(v.sequences);
        CAPTURE(v.order[0]);
        PostgresContract e;
        e.mark_sequences = v.sequences;
        {
            auto s = e.open(false);
            s->enqueue(std::vector{job("a", "1"), job("a", "2"), job("a", "3"), job("a", "4")});
            s->close();
        }
        // reserves all 4, and on go starts 3 runs one at a time
        auto host = stepped_host(e, 4, [order = v.order](store::JobStore& s, std::vector<store::JobRecord>& got) {
            for (auto i : order) s.begin_run(std::span(got).subspan(i, 1));
        });
        char c = 0;
        REQUIRE(host.read_within(c, 20000));
        REQUIRE(c == 4);
        auto blocker = store::pg::Connection::open(e.url); // holds every mark up until it commits
        blocker->exec("BEGIN; LOCK TABLE " + e.schema + ".running IN EXCLUSIVE MODE");
        // (a setval waits for the lock an ALTER SEQUENCE takes)
        blocker->exec("DO $$ DECLARE s regclass; BEGIN FOR s IN SELECT seq FROM " + e.schema +
                      ".marks LOOP EXECUTE format('ALTER SEQUENCE %s CACHE 1', s); END LOOP; END $$");
        CHECK(blocker->exec("SELECT count(*) FROM " + e.schema + ".marks").text(0, 0) ==
              std::to_string(std::min<std::size_t>(v.sequences, 64)));
        REQUIRE(host.go());
        bool begun = host.read_within(c, 5000);
        CHECK_MESSAGE(begun, "the runs waited for the server to apply their start marks");
        std::this_thread::sleep_for(100ms);
        host.kill();
        // not applied when it died
        CHECK(blocker->exec("SELECT count(*) FROM " + e.schema + ".running_now()").text(0, 0) == "0");
        blocker->exec("COMMIT");
        std::string marked;
        for (int i = 0; i < 100 && marked != "3"; ++i) {
            std::this_thread::sleep_for(20ms);
            marked = pg_server().psql("SELECT count(DISTINCT id) FROM " + e.schema + ".running_now()");
        }
        CHECK(marked == "3"); // applied once the locks were let go, before any host rescued the jobs
        CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".running") == v.in_table);
        auto s = e.open();
        auto jobs = after_rescue(*s); // once the server applied the marks and closed the session
        REQUIRE(jobs.size() == 4);
        int charged = 0;
        for (const auto& j : jobs) {
            CHECK(j.state == JobState::ready);
            CHECK(j.attempt == (j.payload == "4" ? 0u : 1u));
            if (j.attempt == 0) continue;
            ++charged;
            REQUIRE(j.errors.size() == 1);
            CHECK(j.errors[0].message.find("the host died while this job was running (host ") == 0);
        }
        CHECK(charged == 3);
        s->close();
    }
}

// PostgreSQL: a line's sequence marks every job of the line up to a place, so it may reach a job's place only once
// every job before it in line started. Here the second and third jobs start and the first does not: their runs are
// marked in the table, and after a crash the first goes back uncharged. (Setting the sequence to the place of the
// last job started would have charged the first an attempt it never ran.)
TEST_CASE("PostgreSQL: a line's sequence never passes a job that was taken but not started") {
    PostgresContract e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector{job("a", "1"), job("a", "2"), job("a", "3")});
        s->close();
    }
    auto host = stepped_host(e, 3, [](store::JobStore& s, std::vector<store::JobRecord>& got) {
        s.begin_run(std::span(got).subspan(1, 1));
        s.begin_run(std::span(got).subspan(2, 1));
        s.flush();
    });
    char c = 0;
    REQUIRE(host.read_within(c, 20000));
    REQUIRE(c == 3);
    REQUIRE(host.go());
    REQUIRE(host.read_within(c, 5000));
    CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".running") == "2");
    CHECK(pg_server().psql("SELECT string_agg(j.payload::text, ',' ORDER BY j.payload::text) FROM " + e.schema +
                           ".jobs j WHERE (j.id, j.lease_owner, j.attempt + 1) IN (SELECT * FROM " + e.schema +
                           ".running_now())") == "2,3");
    host.kill();
    auto s = e.open();
    auto jobs = after_rescue(*s);
    REQUIRE(jobs.size() == 3);
    for (const auto& j : jobs) {
        CAPTURE(j.payload);
        CHECK(j.state == JobState::ready);
        CHECK(j.attempt == (j.payload == "1" ? 0u : 1u));
    }
    s->close();
}

// PostgreSQL: a job taken from its line and given back without starting leaves the line once that is committed:
// the jobs after it are marked by the line's sequence again, and it is not (it is ready, uncharged).
TEST_CASE("PostgreSQL: a job given back without starting lets its line's sequence pass it") {
    PostgresContract e;
    auto s = e.open();
    s->enqueue(std::vector{job("a", "1"), job("a", "2"), job("a", "3")});
    auto got = claim_all(*s, "a", 3);
    REQUIRE(got.size() == 3);
    auto in_table = [&] { return pg_server().psql("SELECT count(*) FROM " + e.schema + ".running"); };
    s->begin_run(std::span(got).subspan(1, 1)); // before the first in line: marked in the table
    s->flush();
    CHECK(in_table() == "1");
    auto now = Clock::now();
    s->finish(std::vector{Outcome{got[0].id, "a", Outcome::Kind::released, now, {}, {}, store::DeadReason::none, now}});
    s->flush();
    s->begin_run(std::span(got).subspan(2, 1)); // the line passes the first (given back) and the second (started)
    s->flush();
    CHECK(in_table() == "1");
    CHECK(pg_server().psql("SELECT string_agg(j.payload::text, ',' ORDER BY j.payload::text) FROM " + e.schema +
                           ".jobs j WHERE (j.id, j.lease_owner, j.attempt + 1) IN (SELECT * FROM " + e.schema +
                           ".running_now())") == "2,3");
    auto first = s->get(got[0].id);
    REQUIRE(first);
    CHECK(first->state == JobState::ready);
    CHECK(first->attempt == 0);
    s->finish(std::vector{outcome(got[1], Outcome::Kind::done), outcome(got[2], Outcome::Kind::done)});
    s->close();
}

// PostgreSQL: start marks live in sequences of each host's own. A host takes at least 64 as it starts; one that
// closes hands them back as spares (set free), which the next host takes instead of creating its own (creating one
// costs the server about 0.35 ms); the sequences of a host that died are dropped once its jobs are rescued.
TEST_CASE("PostgreSQL: mark sequences are handed back by a host that closes, and dropped after one that dies") {
    PostgresContract e;
    auto count = [&](const std::string& where) {
        return pg_server().psql("SELECT count(*) FROM " + e.schema + ".marks m WHERE " + where);
    };
    auto schema_sequences = [&] {
        return pg_server().psql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                                "n.nspname = '" +
                                e.schema + "' AND c.relkind = 'S' AND c.relname ~ '^mark_[0-9]+$'");
    };
    {
        auto s = e.open();
        s->enqueue(std::vector{job("a"), job("a")});
        CHECK(count("m.host IS NOT NULL") == "64");
        auto got = claim_all(*s, "a", 1);
        REQUIRE(got.size() == 1);
        s->begin_run(got);
        s->flush();
        CHECK(count("pg_sequence_last_value(m.seq) <> 0") == "1"); // the line's
        s->finish(std::vector{outcome(got[0], Outcome::Kind::done)});
        s->close();
    }
    CHECK(count("m.host IS NULL") == "64"); // spares, set free
    CHECK(count("pg_sequence_last_value(m.seq) <> 0") == "0");
    CHECK(schema_sequences() == "64");
    crash_host(e, 1, 1, SIGKILL); // took the 64 spares, ran the other job, and was killed
    CHECK(count("m.host IS NULL") == "0");
    CHECK(schema_sequences() == "64");
    auto s = e.open(); // the second host on the schema: creates 64 (no spares), rescues the dead one's job
    std::string left;
    for (int i = 0; i < 100 && left != "64"; ++i) {
        std::this_thread::sleep_for(50ms);
        left = schema_sequences();
    }
    CHECK(left == "64"); // the dead host's are dropped, the live host's are left
    auto jobs = s->list({"a", std::nullopt, 10});
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].state == JobState::ready);
    CHECK(jobs[0].attempt == 1); // it was running: charged
    s->close();
}

// PostgreSQL: a host gives each line of jobs (a type at one priority) a sequence of its own as it first reserves
// jobs of the line, while it has sequences free: its 64 serve 64 lines. The jobs of a line it has none for are marked
// in the table, and it adds more (64 at most, once a second, up to mark_sequences): the line's later runs are marked
// by its sequence. Every run is seen running either way.
TEST_CASE("PostgreSQL: runs of a line with no sequence are marked in the table, and more sequences are added") {
    PostgresContract e;
    e.mark_sequences = 70;
    auto s = e.open();
    auto in_table = [&] { return pg_server().psql("SELECT count(*) FROM " + e.schema + ".running"); };
    auto start_each = [&](std::vector<store::JobRecord>& got) { // one run at a time, as 2 slots start them
        for (std::size_t i = 0; i < got.size(); ++i) s->begin_run(std::span(got).subspan(i, 1));
    };
    auto finish_all = [&](const std::vector<store::JobRecord>& got) {
        std::vector<Outcome> done;
        for (const auto& j : got) done.push_back(outcome(j, Outcome::Kind::done));
        s->finish(done);
    };
    CHECK(claim(*s, {{"idle", 1}}).jobs.empty()); // a type with no jobs takes none
    for (int t = 0; t < 13; ++t) {                // 64 lines: 12 types at every priority, one at 4
        auto type = "t" + std::to_string(t);
        std::vector<store::NewJob> five;
        for (int p = 0; p < (t < 12 ? 5 : 4); ++p)
            five.push_back(job(type, "null", static_cast<registry::Priority>(p)));
        s->enqueue(five);
        auto got = claim_all(*s, type, five.size());
        REQUIRE(got.size() == five.size());
        start_each(got);
        finish_all(got);
    }
    s->flush();
    CHECK(in_table() == "0");
    CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".marks WHERE pg_sequence_last_value(seq) > 0") ==
          "64");
    // none left for "a"
    std::vector<store::NewJob> jobs(10, job("a", "null", registry::Priority::critical));
    s->enqueue(jobs);
    auto got = claim_all(*s, "a", 10);
    REQUIRE(got.size() == 10);
    start_each(got);
    s->flush();
    CHECK(in_table() == "10");
    CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".running_now()") == "10");
    CHECK(s->counts()["a"].running == 10);
    std::string have;
    for (int i = 0; i < 100 && have != "70"; ++i) {
        std::this_thread::sleep_for(50ms);
        have = pg_server().psql("SELECT count(*) FROM " + e.schema + ".marks WHERE host IS NOT NULL");
    }
    CHECK(have == "70"); // 6 more: up to mark_sequences
    finish_all(got);
    s->flush();
    CHECK(in_table() == "0"); // deleted with the outcomes
    // the line has a sequence now
    s->enqueue(jobs);
    got = claim_all(*s, "a", 10);
    REQUIRE(got.size() == 10);
    start_each(got);
    s->flush();
    CHECK(in_table() == "0");
    CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".running_now()") == "10");
    CHECK(s->counts()["a"].running == 10);
    finish_all(got);
    s->flush();
    CHECK(pg_server().psql("SELECT count(*) FROM " + e.schema + ".jobs") == "0");
    s->close();
}

// PostgreSQL: the server may end the marks connection while it sits idle (pg_terminate_backend, a proxy, an idle
// timeout); the next run's mark is then written on a new connection before the run goes on, not only with the
// next run's or the next flush.
TEST_CASE("PostgreSQL: a start mark sent after the server ended the marks connection is written on a new one") {
    PostgresContract e;
    auto s = e.open();
    s->enqueue(std::vector{job("a")});
    auto got = claim_all(*s, "a", 1);
    REQUIRE(got.size() == 1);
    CHECK(pg_server().psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = "
                           "'jobhost marks'") == "1");
    std::this_thread::sleep_for(100ms); // the session is gone
    s->begin_run(got);
    std::string marked;
    for (int i = 0; i < 40 && marked != "1"; ++i) {
        std::this_thread::sleep_for(50ms);
        marked = pg_server().psql("SELECT count(*) FROM " + e.schema + ".running_now()");
    }
    CHECK(marked == "1");
    s->flush();
    auto j = s->get(got[0].id);
    REQUIRE(j);
    CHECK(j->state == JobState::running);
    s->finish(std::vector{outcome(got[0], Outcome::Kind::done)});
    s->close();
}

TEST_CASE_TEMPLATE("a dead host is recognised by its lock, not its pid: a zombie's jobs are recovered at once", E,
                   SqliteContract, PostgresContract) {
    E e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector{job("a"), job("a")});
        s->close();
    }
    pid_t zombie = crash_host(e, 2, 0, SIGKILL, false);
    CHECK(::kill(zombie, 0) == 0); // what kill(pid, 0) says of a zombie: alive
    auto s = e.open();
    CHECK(s->recovered_at_open() == 2);
    CHECK(s->counts()["a"].ready == 2);
    int status = 0;
    ::waitpid(zombie, &status, 0);
    s->close();
}

TEST_CASE_TEMPLATE("a live host's jobs are left alone, when it dies an idle host recovers and runs them within 2 s", E,
                   SqliteContract, PostgresContract) {
    E e;
    {
        auto s = e.open(false);
        s->enqueue(std::vector{job("a"), job("a")});
        s->close();
    }
    int go[2];
    REQUIRE(::pipe(go) == 0);
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) { // a host that reserves both jobs, then waits to be told to die
        ::close(go[1]);
        ::close(ready[0]);
        std::string why;
        auto s = e.try_open(true, why);
        if (!s) ::_exit(3);
        auto got = claim_all(*s, "a", 2);
        char c = static_cast<char>(got.size());
        [[maybe_unused]] auto n = ::write(ready[1], &c, 1);
        [[maybe_unused]] auto m = ::read(go[0], &c, 1);
        ::raise(SIGKILL);
    }
    ::close(go[0]);
    ::close(ready[1]);
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    CHECK(c == 2);
    auto s = e.open();
    CHECK(s->recovered_at_open() == 0);
    CHECK(s->counts()["a"].reserved == 2);
    CHECK(claim(*s, {{"a", 1}}).jobs.empty()); // held by the live host
    [[maybe_unused]] auto n = ::write(go[1], "x", 1);
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto died = std::chrono::steady_clock::now();
    auto got = claim(*s, {{"a", 2}}); // retries for up to about a second
    while (got.jobs.empty() && std::chrono::steady_clock::now() - died < 3s) got = claim(*s, {{"a", 2}});
    CHECK(std::chrono::steady_clock::now() - died < 2s);
    CHECK_FALSE(got.jobs.empty());
    for (const auto& j : got.jobs) CHECK(j.attempt == 1); // reserved only: never charged
    s->close();
}

TEST_CASE_TEMPLATE("close gives back reserved jobs unchanged and charges a run that never returned", E, SqliteContract,
                   PostgresContract) {
    E e;
    auto s = e.open();
    auto ids = ids_of(s->enqueue(std::vector{job("a"), job("a", "null", registry::Priority::normal, 1)}));
    auto got = claim_all(*s, "a", 2);
    REQUIRE(got.size() == 2);
    REQUIRE(got[1].id == ids[1]);         // (oldest first)
    s->begin_run(std::span(got).last(1)); // never returns
    s->close();
    auto again = e.open(false);
    auto reserved = again->get(ids[0]);
    REQUIRE(reserved);
    CHECK(reserved->state == JobState::ready);
    CHECK(reserved->attempt == 0);
    auto stuck = again->get(ids[1]);
    REQUIRE(stuck);
    CHECK(stuck->state == JobState::dead);
    CHECK(stuck->dead_reason == store::DeadReason::host_stopped);
    REQUIRE(stuck->errors.size() == 1);
    CHECK(stuck->errors[0].message.find("the host stopped while this job was still running") == 0);
    CHECK(e.hosts_gone()); // its record is gone
    again->close();
}
