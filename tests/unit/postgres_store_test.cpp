// What is particular to the PostgreSQL engine (the contract itself is in store_contract_test.cpp): migrations,
// errors that say what and what to do, and passwords kept out of messages.
#include "store/pg.hpp"
#include "store/postgres_store.hpp"

#include "support/pg_server.hpp"

#include <doctest/doctest.h>

#include <future>
#include <thread>

using namespace jobhost;
using namespace std::chrono_literals;

namespace {

jobhost::test::PgServer& server() {
    static jobhost::test::PgServer s;
    return s;
}

core::Expected<std::unique_ptr<store::PostgresStore>>
open(const std::string& schema, bool host = true, std::string url = {}, std::chrono::milliseconds poll = 1000ms) {
    store::PostgresOptions o;
    o.poll = poll;
    o.url = url.empty() ? server().url() : url;
    o.schema = schema;
    o.host = host;
    return store::PostgresStore::open(o);
}

} // namespace

TEST_CASE("postgres: hosts that start together create the schema once, and a newer schema is refused") {
    std::vector<std::future<std::string>> starting;
    for (int i = 0; i < 4; ++i)
        starting.push_back(std::async(std::launch::async, [] {
            auto s = open("together");
            if (!s) return s.error().message;
            (*s)->close();
            return std::string();
        }));
    for (auto& f : starting) CHECK(f.get() == "");
    CHECK(server().psql("SELECT value FROM together.meta WHERE key = 'schema_version'") == "2");
    CHECK(server().psql("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
                        "n.nspname = 'together' AND p.proname = 'enqueue'") == "1");

    server().psql("UPDATE together.meta SET value = '99' WHERE key = 'schema_version'");
    auto refused = open("together");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("has jobhost schema version 99, newer than this jobhost's 2") !=
          std::string::npos);
    CHECK(refused.error().message.find("use a newer jobhost") != std::string::npos);
}

TEST_CASE(
    "postgres: a version 1 schema is migrated to 2 (results, progress, attempts across retries), its jobs intact") {
    store::JobId id = 0;
    {
        auto s = open("older");
        REQUIRE(s);
        store::NewJob n;
        n.type = "a";
        n.payload = R"({"keep":1})";
        id = (*s)->enqueue(std::vector{n}).front().id;
        (*s)->close();
    }
    server().psql("ALTER TABLE older.jobs DROP COLUMN attempts_before, DROP COLUMN result, DROP COLUMN progress; "
                  "UPDATE older.meta SET value = '1' WHERE key = 'schema_version'");
    auto s = open("older");
    REQUIRE(s);
    CHECK(server().psql("SELECT value FROM older.meta WHERE key = 'schema_version'") == "2");
    auto j = (*s)->get(id);
    REQUIRE(j);
    CHECK(j->payload == R"({"keep":1})");
    CHECK(j->attempts_before == 0);
    (*s)->close();
}

TEST_CASE("postgres: a database that cannot be reached, a bad schema name or no URL each say what to do") {
    auto gone = open("x", true, "postgresql://jobhost:s3cret@127.0.0.1:1/jobs");
    REQUIRE_FALSE(gone);
    CHECK(gone.error().message.find("cannot connect to PostgreSQL at postgresql://jobhost:***@127.0.0.1:1/jobs") == 0);
    CHECK(gone.error().message.find("s3cret") == std::string::npos);
    CHECK(gone.error().message.find("check [store] url") != std::string::npos);

    auto bad = open("Robert'); DROP TABLE students;--");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.find("is not a plain PostgreSQL name") != std::string::npos);

    store::PostgresOptions none;
    auto empty = store::PostgresStore::open(none);
    REQUIRE_FALSE(empty);
    CHECK(empty.error().message.find("JOBHOST_DATABASE_URL") != std::string::npos);
}

TEST_CASE("postgres: passwords are kept out of messages in every URL form") {
    CHECK(store::pg::redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db");
    CHECK(store::pg::redact("postgres://u:pw@h:5432/db?sslmode=require") ==
          "postgres://u:***@h:5432/db?sslmode=require");
    CHECK(store::pg::redact("host=h user=u password=pw dbname=d") == "host=h user=u password=*** dbname=d");
    CHECK(store::pg::redact("postgresql:///db?host=/tmp") == "postgresql:///db?host=/tmp");
}

TEST_CASE("postgres: an enqueue from SQL exists only if its transaction commits, and wakes a host at once") {
    auto s = open("sqlq", true, {}, 60s); // no fallback poll in this test: only NOTIFY can wake it
    REQUIRE(s);
    auto& st = **s;
    st.set_type_defaults({{"t", {registry::Priority::high, 4}}});
    server().psql("BEGIN; SELECT sqlq.enqueue('t', '1'); ROLLBACK;");
    CHECK(st.counts()["t"].enqueued == 0);
    std::this_thread::sleep_for(500ms); // the wake-up of the listener's first connection is over
    std::promise<void> woken;
    std::atomic<bool> once{false};
    st.set_wakeup([&] {
        if (!once.exchange(true)) woken.set_value();
    });
    auto id = server().psql("SELECT sqlq.enqueue('t', '{\"n\": 2}', unique_key => 'k')");
    CHECK(woken.get_future().wait_for(5s) == std::future_status::ready);
    auto j = st.get(std::stoull(id));
    REQUIRE(j);
    CHECK(j->priority == registry::Priority::high); // the type's defaults, as the hosts published them
    CHECK(j->max_attempts == 4);
    CHECK(j->payload == "{\"n\": 2}");
    // the same unique key: the pending job's id again, nothing new
    CHECK(server().psql("SELECT sqlq.enqueue('t', 'null', unique_key => 'k')") == id);
    CHECK(st.counts()["t"].enqueued == 1);
    st.set_wakeup({});
    st.close();
}
