// What is particular to the PostgreSQL engine (the contract itself is in store_contract_test.cpp): migrations,
// errors that say what and what to do, and passwords kept out of messages.
#include "store/pg.hpp"
#include "store/postgres_store.hpp"

#include "support/pg_server.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <map>
#include <set>
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

// A proxy on a Unix socket of its own between libpq and the server, which can lose the answer to one COMMIT: once
// armed, the first COMMIT of a transaction that ran the statement containing `marker` is passed on, the server's
// answer is read (so the commit is surely applied) and thrown away, and both sides are closed. That is what a client
// sees when the network breaks just after the server committed.
class CommitCutter {
public:
    CommitCutter(std::filesystem::path target, std::string marker)
        : target_(std::move(target)), marker_(std::move(marker)) {
        listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a = address(dir_.path() / ".s.PGSQL.5432");
        REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(listener_, 16) == 0);
        REQUIRE(::pipe(stop_) == 0);
        thread_ = std::thread([this] { loop(); });
    }
    ~CommitCutter() {
        (void)!::write(stop_[1], "x", 1);
        thread_.join();
        for (auto& c : conns_) close_pair(c);
        ::close(listener_);
        ::close(stop_[0]);
        ::close(stop_[1]);
    }
    std::string url() const {
        return "postgresql:///postgres?host=" + dir_.path().string() + "&port=5432&user=postgres";
    }
    void arm() { armed_ = true; }
    int cuts() const { return cuts_.load(); }

private:
    struct Conn {
        int client = -1, server = -1;
        std::string in;               // client bytes not yet parsed into whole messages
        bool started = false;         // the startup message has passed (messages have a type byte after it)
        std::set<std::string> marked; // prepared statements whose text holds the marker
        bool marked_in_tx = false;
    };
    static sockaddr_un address(const std::filesystem::path& p) {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, p.c_str(), sizeof a.sun_path - 1);
        return a;
    }
    static void send_all(int fd, const char* p, std::size_t n) {
        while (n > 0) {
            auto w = ::send(fd, p, n, MSG_NOSIGNAL);
            if (w <= 0) return;
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    }
    static void close_pair(Conn& c) {
        if (c.client >= 0) ::close(c.client);
        if (c.server >= 0) ::close(c.server);
        c.client = c.server = -1;
    }
    static std::uint32_t be32(const char* p) {
        return (std::uint32_t(std::uint8_t(p[0])) << 24) | (std::uint32_t(std::uint8_t(p[1])) << 16) |
               (std::uint32_t(std::uint8_t(p[2])) << 8) | std::uint32_t(std::uint8_t(p[3]));
    }
    // Passes on the client's whole messages; false once the connection was cut.
    bool from_client(Conn& c) {
        for (;;) {
            std::size_t head = c.started ? 5 : 4;
            if (c.in.size() < head) return true;
            std::size_t len = be32(c.in.data() + head - 4) + (c.started ? 1 : 0);
            if (c.in.size() < len) return true;
            std::string m = c.in.substr(0, len);
            c.in.erase(0, len);
            if (!c.started) {
                auto code = be32(m.data() + 4);
                c.started = code != 80877103 && code != 80877104; // not an SSL or GSS request
                send_all(c.server, m.data(), m.size());
                continue;
            }
            const char* body = m.data() + 5;
            if (m[0] == 'P') { // Parse: statement name, text
                std::string name(body), text(body + name.size() + 1);
                if (text.find(marker_) != std::string::npos) c.marked.insert(name);
            } else if (m[0] == 'B') { // Bind: portal, statement
                std::string portal(body), statement(body + portal.size() + 1);
                if (c.marked.count(statement)) c.marked_in_tx = true;
            } else if (m[0] == 'Q') {
                std::string query(body);
                if (query.rfind("COMMIT", 0) == 0 && c.marked_in_tx && armed_.exchange(false)) {
                    send_all(c.server, m.data(), m.size());
                    std::string answer; // until ReadyForQuery: the server has committed
                    for (char buf[4096]; answer.find('Z') == std::string::npos;) {
                        pollfd p{c.server, POLLIN, 0};
                        if (::poll(&p, 1, 5000) <= 0) break;
                        auto r = ::recv(c.server, buf, sizeof buf, 0);
                        if (r <= 0) break;
                        answer.append(buf, static_cast<std::size_t>(r));
                    }
                    close_pair(c);
                    cuts_ += 1;
                    return false;
                }
                if (query.rfind("BEGIN", 0) == 0 || query.rfind("ROLLBACK", 0) == 0 || query.rfind("COMMIT", 0) == 0)
                    c.marked_in_tx = false;
            }
            send_all(c.server, m.data(), m.size());
        }
    }
    void loop() {
        for (;;) {
            std::vector<pollfd> fds{{stop_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
            for (auto& c : conns_) {
                fds.push_back({c.client, POLLIN, 0});
                fds.push_back({c.server, POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), 1000) < 0) continue;
            if (fds[0].revents) return;
            const std::size_t polled = conns_.size(); // a connection accepted now is polled next round
            if (fds[1].revents & POLLIN) {
                Conn c;
                c.client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
                c.server = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                sockaddr_un a = address(target_);
                if (c.client >= 0 && ::connect(c.server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
                    conns_.push_back(std::move(c));
                else
                    close_pair(c);
            }
            for (std::size_t i = 0; i < polled; ++i) {
                auto& c = conns_[i];
                auto crev = fds[2 + 2 * i].revents, srev = fds[3 + 2 * i].revents;
                char buf[65536];
                bool open = true;
                if (crev & (POLLIN | POLLHUP | POLLERR)) {
                    auto r = ::recv(c.client, buf, sizeof buf, 0);
                    if (r <= 0) {
                        open = false;
                    } else {
                        c.in.append(buf, static_cast<std::size_t>(r));
                        open = from_client(c);
                    }
                }
                if (open && (srev & (POLLIN | POLLHUP | POLLERR))) {
                    auto r = ::recv(c.server, buf, sizeof buf, 0);
                    if (r <= 0)
                        open = false;
                    else
                        send_all(c.client, buf, static_cast<std::size_t>(r));
                }
                if (!open) close_pair(c);
            }
            std::erase_if(conns_, [](const Conn& c) { return c.client < 0; });
        }
    }

    test::TempDir dir_;
    std::filesystem::path target_;
    std::string marker_;
    int listener_ = -1;
    int stop_[2] = {-1, -1};
    std::atomic<bool> armed_{false};
    std::atomic<int> cuts_{0};
    std::vector<Conn> conns_;
    std::thread thread_;
};

} // namespace

TEST_CASE("postgres: jobs a refill reserved are given back when its commit was applied but the answer was lost") {
    CommitCutter cutter(server().dir() / ".s.PGSQL.5432", "SET state = 2, lease_owner");
    auto s = open("unsure", true, cutter.url());
    REQUIRE(s);
    auto& st = **s;
    std::vector<store::NewJob> jobs(5);
    for (auto& j : jobs) j.type = "u";
    std::set<store::JobId> queued;
    for (const auto& o : st.enqueue(jobs)) queued.insert(o.id);
    REQUIRE(queued.size() == 5);
    cutter.arm();
    store::ClaimRequest r;
    r.types.emplace_back(st.intern("u"), 1);
    r.max = 1000;
    r.owner = st.owner();
    std::set<store::JobId> claimed;
    for (auto until = std::chrono::steady_clock::now() + 10s;
         claimed.size() < queued.size() && std::chrono::steady_clock::now() < until;) {
        r.now = store::Clock::now();
        r.lease_expiry = r.now + 30s;
        for (const auto& j : st.claim(r).jobs) CHECK(claimed.insert(j.id).second); // each once
        std::this_thread::sleep_for(5ms);
    }
    CHECK(cutter.cuts() == 1); // the fault happened: a refill's commit applied, its answer never arrived
    CHECK(claimed == queued);  // and yet every job reached this host's cache (before the fix: none, held for ever)
    std::vector<store::Outcome> done;
    for (auto id : claimed) done.push_back({id, "u", store::Outcome::Kind::done, store::Clock::now()});
    st.finish(done);
    st.flush();
    CHECK(server().psql("SELECT count(*) FROM unsure.jobs WHERE state = 2") == "0");
    st.close();
}

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
    CHECK(server().psql("SELECT value FROM together.meta WHERE key = 'schema_version'") == "4");
    CHECK(server().psql("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
                        "n.nspname = 'together' AND p.proname = 'enqueue'") == "1");

    server().psql("UPDATE together.meta SET value = '99' WHERE key = 'schema_version'");
    auto refused = open("together");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("has jobhost schema version 99, newer than this jobhost's 4") !=
          std::string::npos);
    CHECK(refused.error().message.find("use a newer jobhost") != std::string::npos);
}

TEST_CASE(
    "postgres: a version 1, 2 or 3 schema is migrated to 4 (results, progress, attempts across retries, start marks "
    "in sequences, places in line), its jobs intact") {
    for (int from : {1, 2, 3}) {
        CAPTURE(from);
        auto schema = "older" + std::to_string(from);
        store::JobId id = 0;
        {
            auto s = open(schema);
            REQUIRE(s);
            store::NewJob n;
            n.type = "a";
            n.payload = R"({"keep":1})";
            id = (*s)->enqueue(std::vector{n}).front().id;
            (*s)->close();
        }
        // what version 3 lacked: the places in line
        server().psql("ALTER TABLE " + schema + ".jobs DROP COLUMN mark_seq, DROP COLUMN mark_pos; UPDATE " + schema +
                      ".meta SET value = '3' WHERE key = 'schema_version'");
        // what version 2 lacked: the mark sequences (the host's, spares since it closed), their table and functions
        if (from < 3)
            server().psql("DO $$ DECLARE r regclass; BEGIN FOR r IN SELECT seq FROM " + schema +
                          ".marks LOOP EXECUTE 'DROP SEQUENCE ' || r; END LOOP; END $$; DROP TABLE " + schema +
                          ".marks; DROP FUNCTION " + schema + ".running_now, " + schema + ".add_marks, " + schema +
                          ".drop_marks, " + schema + ".spare_marks, " + schema + ".new_mark; DROP SEQUENCE " + schema +
                          ".mark_numbers; UPDATE " + schema + ".meta SET value = '2' WHERE key = 'schema_version'");
        if (from < 3)
            CHECK(server().psql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                                "n.nspname = '" +
                                schema + "' AND c.relkind = 'S'") == "2"); // the ids of jobs and of hosts
        if (from == 1)
            server().psql("ALTER TABLE " + schema +
                          ".jobs DROP COLUMN attempts_before, DROP COLUMN result, DROP COLUMN progress; UPDATE " +
                          schema + ".meta SET value = '1' WHERE key = 'schema_version'");
        auto s = open(schema);
        REQUIRE(s);
        CHECK(server().psql("SELECT value FROM " + schema + ".meta WHERE key = 'schema_version'") == "4");
        CHECK(server().psql("SELECT count(*) FROM " + schema + ".marks") == "64"); // the host's first mark sequences
        store::ClaimRequest r;
        r.types.emplace_back((*s)->intern("a"), 1);
        r.owner = (*s)->owner();
        store::ClaimResult got;
        for (auto until = std::chrono::steady_clock::now() + 10s;
             got.jobs.empty() && std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(5ms)) {
            r.now = store::Clock::now();
            r.lease_expiry = r.now + 30s;
            got = (*s)->claim(r);
        }
        REQUIRE(got.jobs.size() == 1);
        (*s)->begin_run(got.jobs);
        (*s)->flush();
        auto j = (*s)->get(id);
        REQUIRE(j);
        CHECK(j->payload == R"({"keep":1})");
        CHECK(j->attempts_before == 0);
        CHECK(j->state == store::JobState::running);
        (*s)->finish(std::vector<store::Outcome>{{id, "a", store::Outcome::Kind::done, store::Clock::now()}});
        (*s)->close();
    }
}

// close() deletes the host's row; a heartbeat that fell due in that same transaction found the row gone, took it for
// a lost lease, logged an error and registered the host again, leaving its row behind after a clean stop. With a
// 40 ms lease a heartbeat is due every 10 ms, so it is due in close()'s transaction unless one ran just before.
TEST_CASE("postgres: a host that closes leaves no row behind, also when a heartbeat is due as it closes") {
    for (int i = 0; i < 3; ++i) {
        store::PostgresOptions o;
        o.url = server().url();
        o.schema = "leaving";
        o.lease = 40ms;
        o.owner = "leaving-" + std::to_string(i);
        auto s = store::PostgresStore::open(o);
        REQUIRE(s);
        CHECK(server().psql("SELECT count(*) FROM leaving.hosts WHERE owner = '" + o.owner + "'") == "1");
        std::this_thread::sleep_for(100ms);
        (*s)->close();
        CHECK(server().psql("SELECT count(*) FROM leaving.hosts") == "0");
    }
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
