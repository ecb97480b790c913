// The SQLite engine on real files: what survives a restart, crash recovery, and files it must refuse.
#include "store/sqlite_store.hpp"

#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

using namespace jobhost;
using namespace std::chrono_literals;
using jobhost::test::TempDir;
using store::Clock;

namespace {

std::unique_ptr<store::SqliteStore> open_store(const std::filesystem::path& path, const std::string& owner,
                                               bool host = true) {
    store::SqliteOptions o;
    o.path = path;
    o.owner = owner;
    o.host = host;
    o.create = host;
    auto s = store::SqliteStore::open(o);
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message));
    return std::move(*s);
}

store::NewJob job(const std::string& type, const std::string& payload = "null") {
    store::NewJob n;
    n.type = type;
    n.payload = payload;
    n.max_attempts = 3;
    return n;
}

// Claims up to `n` jobs of `type`, waiting for the reservations from the file (a few at a time).
std::vector<store::JobRecord> claim(store::SqliteStore& s, const std::string& type, std::uint32_t n) {
    store::ClaimRequest r;
    std::vector<store::JobRecord> out;
    for (int i = 0; i < 100 && out.size() < n; ++i) {
        r.types = {{s.intern(type), n - static_cast<std::uint32_t>(out.size())}};
        r.max = n;
        r.now = Clock::now();
        auto got = s.claim(r);
        if (!got.jobs.empty()) {
            out.insert(out.end(), got.jobs.begin(), got.jobs.end());
            i = 90; // a few more tries for the rest, then what there is
            continue;
        }
        s.flush();
        std::this_thread::sleep_for(5ms);
    }
    return out;
}

std::string read_bytes(const std::filesystem::path& p) {
    return test::read_file(p);
}

} // namespace

TEST_CASE("dead letters, unique keys, scheduled jobs and attempt counts survive a restart") {
    TempDir dir;
    auto path = dir / "jobs.db";
    store::JobId dead_id, unique_id, scheduled_id, retried_id;
    auto later = Clock::now() + 1h;
    {
        auto s = open_store(path, "test:1");
        dead_id = s->enqueue(std::vector{job("a", "{\"n\":1}")}).front().id;
        auto uj = job("b");
        uj.unique_key = "nightly";
        unique_id = s->enqueue(std::vector{uj}).front().id;
        auto sj = job("c");
        sj.run_at = later;
        scheduled_id = s->enqueue(std::vector{sj}).front().id;
        retried_id = s->enqueue(std::vector{job("d")}).front().id;

        auto a = claim(*s, "a", 1);
        REQUIRE(a.size() == 1);
        store::Outcome dead{dead_id, "a",        store::Outcome::Kind::dead,          Clock::now(),
                            {},      "it broke", store::DeadReason::permanent_failure};
        s->finish(std::vector{dead});
        auto d = claim(*s, "d", 1);
        REQUIRE(d.size() == 1);
        CHECK(d[0].attempt == 1);
        store::Outcome retry{retried_id,   "d",         store::Outcome::Kind::retry, Clock::now(),
                             Clock::now(), "try again", store::DeadReason::none};
        s->finish(std::vector{retry});
        s->flush();
    }
    auto s = open_store(path, "test:2");
    auto dead = s->dead_letters({});
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].id == dead_id);
    CHECK(dead[0].payload == "{\"n\":1}");
    CHECK(dead[0].dead_reason == store::DeadReason::permanent_failure);
    REQUIRE(dead[0].errors.size() == 1);
    CHECK(dead[0].errors[0].message == "it broke");
    CHECK(dead[0].errors[0].attempt == 1);

    auto again = job("b");
    again.unique_key = "nightly";
    auto out = s->enqueue(std::vector{again}).front();
    CHECK_FALSE(out.created);
    CHECK(out.id == unique_id);

    auto scheduled = s->get(scheduled_id);
    REQUIRE(scheduled);
    CHECK(scheduled->state == store::JobState::scheduled);
    CHECK(std::chrono::abs(scheduled->run_at - later) < 1ms);

    auto d = claim(*s, "d", 1); // its retry is due now; the second attempt is counted as the second
    REQUIRE(d.size() == 1);
    CHECK(d[0].attempt == 2);
    CHECK(d[0].errors.at(0).message == "try again");
}

TEST_CASE("a store from a newer jobhost is refused and left untouched") {
    TempDir dir;
    auto path = dir / "new.db";
    {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db, "CREATE TABLE t(x); PRAGMA user_version = 99;", nullptr, nullptr, nullptr) ==
                SQLITE_OK);
        sqlite3_close(db);
    }
    auto before = read_bytes(path);
    store::SqliteOptions o;
    o.path = path;
    auto s = store::SqliteStore::open(o);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().message == "the store " + path.string() +
                                   " has schema version 99, newer than this jobhost's 3; use a newer jobhost, "
                                   "or point [store] path at another file");
    CHECK(read_bytes(path) == before);
}

TEST_CASE("a version 2 store gains results, progress and attempts across retries, its jobs intact") {
    TempDir dir;
    auto path = dir / "v2.db";
    store::JobId id = 0;
    {
        auto s = open_store(path, "t:1");
        id = s->enqueue(std::vector{job("a", R"({"keep":1})")}).front().id;
        s->close();
    }
    { // back to what version 2 was
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db,
                             "ALTER TABLE jobs DROP COLUMN attempts_before; ALTER TABLE jobs DROP COLUMN result; "
                             "ALTER TABLE jobs DROP COLUMN progress; PRAGMA user_version = 2;",
                             nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);
    }
    auto s = open_store(path, "t:2");
    auto j = s->get(id);
    REQUIRE(j);
    CHECK(j->payload == R"({"keep":1})");
    auto got = claim(*s, "a", 1);
    REQUIRE(got.size() == 1);
    auto token = s->begin_run(got);
    s->progress(id, {50, "half", Clock::now()});
    s->flush();
    REQUIRE(s->get(id)->progress);
    CHECK(s->get(id)->progress->percent == 50);
    s->close();
}

TEST_CASE("a corrupt store file is reported with its path and never overwritten") {
    TempDir dir;
    auto path = dir.write("broken.db", std::string(4096, 'x'));
    auto before = read_bytes(path);
    store::SqliteOptions o;
    o.path = path;
    auto s = store::SqliteStore::open(o);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().message.find("the store " + path.string() + " is not a jobhost store or is corrupt") == 0);
    CHECK(s.error().message.find("left untouched") != std::string::npos);
    CHECK(read_bytes(path) == before);
}

TEST_CASE("a missing store is an error for the command line, which never creates one") {
    TempDir dir;
    store::SqliteOptions o;
    o.path = dir / "none.db";
    o.create = false;
    o.host = false;
    auto s = store::SqliteStore::open(o);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().message.find("no store at " + (dir / "none.db").string()) == 0);
    CHECK_FALSE(std::filesystem::exists(dir / "none.db"));
}

TEST_CASE("a store locked by another process is reported as locked") {
    TempDir dir;
    auto path = dir / "jobs.db";
    open_store(path, "t:1"); // create it
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;", nullptr, nullptr, nullptr) ==
            SQLITE_OK);
    store::SqliteOptions o;
    o.path = path;
    o.create = false;
    o.host = false;
    o.busy_timeout = 100ms;
    auto s = store::SqliteStore::open(o);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().message.find("is locked by another process") != std::string::npos);
}

TEST_CASE("replay puts dead letters back to ready with a fresh set of attempts and history kept, purge deletes them") {
    TempDir dir;
    auto s = open_store(dir / "jobs.db", "t:1");
    std::vector<store::NewJob> jobs{job("a", "1"), job("a", "2"), job("b", "3")};
    auto ids = s->enqueue(jobs);
    for (const char* type : {"a", "b"}) {
        for (const auto& j : claim(*s, type, 2)) {
            store::Outcome o{j.id, j.type, store::Outcome::Kind::dead,          Clock::now(),
                             {},   "boom", store::DeadReason::retries_exhausted};
            s->finish(std::vector{o});
        }
    }
    s->flush();
    REQUIRE(s->dead_letters({}).size() == 3);
    CHECK(s->replay(std::vector{ids[0].id}, Clock::now()) == 1);
    auto replayed = s->get(ids[0].id);
    REQUIRE(replayed);
    CHECK(replayed->state == store::JobState::ready);
    CHECK(replayed->attempt == 1); // the count goes on...
    CHECK(replayed->attempts_before == 1);
    CHECK(replayed->max_attempts == 1 + 3); // ...with a fresh set of attempts (it had 3)
    CHECK(replayed->errors.size() == 1);
    CHECK(s->replay(std::vector{ids[0].id}, Clock::now()) == 0); // no longer dead
    CHECK(s->purge(std::vector{ids[1].id}) == 1);
    CHECK_FALSE(s->get(ids[1].id));
    CHECK(s->purge_dead(std::string("b"), std::nullopt) == 1);
    CHECK(s->dead_letters({}).empty());
}

TEST_CASE("finished jobs are deleted by default and kept up to retain_done when asked") {
    for (std::size_t retain : {std::size_t{0}, std::size_t{5}}) {
        CAPTURE(retain);
        TempDir dir;
        store::SqliteOptions o;
        o.path = dir / "jobs.db";
        o.owner = "t:1";
        o.retain_done = retain;
        auto opened = store::SqliteStore::open(o);
        REQUIRE(opened.ok());
        auto s = std::move(*opened);
        std::vector<store::NewJob> jobs;
        for (int i = 0; i < 3; ++i) jobs.push_back(job("a"));
        s->enqueue(jobs);
        for (const auto& j : claim(*s, "a", 3))
            s->finish(std::vector{store::Outcome{j.id, j.type, store::Outcome::Kind::done, Clock::now(), {}, {}, {}}});
        s->flush();
        CHECK(s->counts()["a"].done == (retain == 0 ? 0u : 3u));
    }
}

TEST_CASE("finished jobs older than retain_done_for are pruned, younger ones stay") {
    TempDir dir;
    store::SqliteOptions o;
    o.path = dir / "jobs.db";
    o.owner = "t:1";
    o.retain_done_for = 1h;
    auto opened = store::SqliteStore::open(o);
    REQUIRE(opened.ok());
    auto s = std::move(*opened);
    std::vector<store::NewJob> jobs{job("a"), job("a")};
    s->enqueue(jobs);
    auto claimed = claim(*s, "a", 2);
    REQUIRE(claimed.size() == 2);
    // one finished two hours ago, one just now
    s->finish(std::vector{store::Outcome{claimed[0].id, "a", store::Outcome::Kind::done, Clock::now() - 2h, {}, {}, {}},
                          store::Outcome{claimed[1].id, "a", store::Outcome::Kind::done, Clock::now(), {}, {}, {}}});
    s->flush();
    CHECK(s->counts()["a"].done == 2);
    s->prune();
    CHECK(s->counts()["a"].done == 1);
    CHECK_FALSE(s->get(claimed[0].id));
    CHECK(s->get(claimed[1].id));
}
