// jobhost run with real plugins and real signals: jobs, retries, shutdown draining and SIGHUP reload.
#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

using namespace jobhost::test;
using namespace std::chrono_literals;

namespace {

// A folder with fx_good.so under plugins/ and a config pointing at it.
struct Setup {
    TempDir dir;
    std::filesystem::path config;
    explicit Setup(const std::string& extra_toml = {}) {
        copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
        config = dir.write("jobhost.toml",
                           "[http]\nlisten = \"127.0.0.1:0\"\n\n[host]\nplugin_dir = \"plugins\"\nworkers = 2\n" +
                               extra_toml);
    }
    std::vector<std::string> args(std::initializer_list<std::string> more) const {
        std::vector<std::string> a{JOBHOST_BINARY, "run", "--config", config.string()};
        a.insert(a.end(), more.begin(), more.end());
        return a;
    }
};

} // namespace

TEST_CASE("the example config runs periodic and enqueued jobs, retries a failing one and dead-letters it") {
    TempDir dir;
    auto cfg =
        dir.write("c.toml", "[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"s.db\"\n[host]\nplugin_dir = \"" +
                                std::string(JOBHOST_EXAMPLE_PLUGIN_DIR) +
                                "\"\n\n[jobs.hello]\ninterval = \"200ms\"\n\n"
                                "[jobs.shell]\nmax_retries = 1\nbackoff = { initial = \"50ms\", jitter = 0 }\n");
    Background host({JOBHOST_BINARY, "run", "--config", cfg.string(), "--enqueue", "text.upper={\"text\":\"abc\"}",
                     "--enqueue", "shell={\"command\":\"echo out-of-shell; exit 7\"}", "--enqueue",
                     "math.sum=[1,2,3]"});
    REQUIRE(host.wait_for_output("dead-lettered", 20s));
    REQUIRE(host.wait_for_output("hello from jobhost", 20s, 2));
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    std::string log = host.err();
    CAPTURE(log);
    CHECK(contains(log, "summary text.upper: enqueued 1, started 1, succeeded 1, failed 0"));
    CHECK(contains(log, "summary math.sum: enqueued 1, started 1, succeeded 1, failed 0"));
    CHECK(contains(log, "summary shell: enqueued 1, started 2, succeeded 0, failed 2, timed out 0, retried 1, "
                        "dead-lettered 1"));
    CHECK(contains(log, "command failed (exit status 7): echo out-of-shell; exit 7\nout-of-shell"));
    CHECK(contains(log, "{hello "));
}

TEST_CASE("a malformed --enqueue payload is refused with a clear error and exit code 2") {
    Setup s;
    auto r = run({s.args({"--enqueue", "fx.ok={\"a\":"})});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--enqueue fx.ok={\"a\":: the payload is not valid JSON"));
    auto unknown = run({s.args({"--enqueue", "nope"})});
    CHECK(unknown.exit_code == 2);
    CHECK(contains(unknown.err, "unknown job type 'nope'"));
    // every --enqueue is checked before any job is queued: the good one first does not run
    auto disabled = run({s.args({"--enqueue", "fx.ok", "--enqueue", "fx.tick"})});
    CHECK(disabled.exit_code == 2);
    CHECK(contains(disabled.err, "--enqueue fx.tick: job type 'fx.tick' is disabled"));
    CHECK_FALSE(contains(disabled.err + disabled.out, "fx.ok ran"));
    CHECK_FALSE(contains(disabled.err + disabled.out, "enqueued job"));
}

TEST_CASE("SIGTERM lets a running job finish within shutdown_grace, then exits 0") {
    Setup s("shutdown_grace = \"10s\"\n");
    Background host(s.args({"--enqueue", "fx.slow={\"ms\":700}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(150ms);
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    CHECK(contains(host.err(), "summary fx.slow: enqueued 1, started 1, succeeded 1, failed 0"));
    CHECK(contains(host.err(), "stopped"));
}

TEST_CASE("Ctrl-C during a long job: it is cancelled after shutdown_grace and goes back to ready, uncharged") {
    Setup s("shutdown_grace = \"200ms\"\n\n[store]\npath = \"var/jobs.db\"\n");
    Background host(s.args({"--enqueue", "fx.slow={\"ms\":5000}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(150ms);
    auto start = std::chrono::steady_clock::now();
    host.signal(SIGINT);
    REQUIRE(host.wait(20s));
    CHECK(std::chrono::steady_clock::now() - start < 4s);
    CHECK(host.exit_code() == 0);
    CHECK(contains(host.err(), "cancelled by shutdown; back to ready, not counted as an attempt"));
    CHECK(contains(host.err(), "released 1"));
    auto job = run({JOBHOST_BINARY, "job", "1", "--json", "--config", s.config.string()});
    REQUIRE(job.exit_code == 0);
    CHECK(contains(job.out, "\"state\":\"ready\""));
    CHECK(contains(job.out, "\"attempt\":0"));
    CHECK(contains(job.out, "cancelled by shutdown (not counted as an attempt)"));
}

TEST_CASE("a run that ignores cancellation past shutdown_grace + stuck_grace is charged, and the host exits 1") {
    Setup s("shutdown_grace = \"200ms\"\nstuck_grace = \"300ms\"\n\n[store]\npath = \"var/jobs.db\"\n\n"
            "[jobs.\"fx.stuck\"]\ntimeout = \"0s\"\n");
    Background host(s.args({"--enqueue", "fx.stuck={\"ms\":6000}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(150ms);
    auto start = std::chrono::steady_clock::now();
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(std::chrono::steady_clock::now() - start < 3s);
    CHECK(host.exit_code() == 1); // plugin code is still running: exit without unloading it
    CHECK(contains(host.err(), "1 run(s) did not return after cancellation"));
    auto job = run({JOBHOST_BINARY, "dlq", "show", "1", "--json", "--config", s.config.string()});
    REQUIRE(job.exit_code == 0); // max_retries = 0: its one attempt was that run
    CHECK(contains(job.out, "\"dead_reason\":\"host_stopped\""));
    CHECK(contains(job.out, "the host stopped while this job was still running"));
}

TEST_CASE("timeouts still fire while the host drains: a job past its timeout ends before shutdown_grace") {
    Setup s("shutdown_grace = \"10s\"\n\n[jobs.\"fx.slow\"]\ntimeout = \"400ms\"\n");
    Background host(s.args({"--enqueue", "fx.slow={\"ms\":8000}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(100ms);
    auto start = std::chrono::steady_clock::now();
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(std::chrono::steady_clock::now() - start < 3s); // the timeout at 400ms, not the 10s grace
    CHECK(host.exit_code() == 0);
    CHECK(contains(host.err(), "timed out after 400ms"));
}

TEST_CASE("a job that finishes while the host drains can still queue its follow-up work") {
    Setup s("shutdown_grace = \"10s\"\n\n[store]\npath = \"var/jobs.db\"\n");
    Background host(s.args({"--enqueue", "fx.chain={\"ms\":800,\"next\":\"fx.ok\"}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(200ms);
    host.signal(SIGTERM); // the chain is sleeping; it enqueues fx.ok during the grace
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    CHECK(contains(host.err(), "summary fx.chain: enqueued 1, started 1, succeeded 1, failed 0"));
    auto ready = run({JOBHOST_BINARY, "jobs", "--type", "fx.ok", "--json", "--config", s.config.string()});
    REQUIRE(ready.exit_code == 0);
    CHECK(contains(ready.out, "\"state\":\"ready\"")); // stored, for the next start or another host
    CHECK(contains(ready.out, "fx.chain"));
}

TEST_CASE("a second signal during shutdown exits at once") {
    Setup s("shutdown_grace = \"30s\"\n");
    Background host(s.args({"--enqueue", "fx.stuck={\"ms\":20000}"}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(100ms);
    host.signal(SIGINT);
    REQUIRE(host.wait_for_output("shutting down", 10s));
    auto start = std::chrono::steady_clock::now();
    host.signal(SIGINT);
    REQUIRE(host.wait(10s));
    CHECK(std::chrono::steady_clock::now() - start < 3s);
    CHECK(host.exit_code() == 1);
    CHECK(contains(host.err(), "second signal, exiting at once"));
}

TEST_CASE("SIGHUP reloads the config: a type is enabled and rescheduled, and an invalid file is rejected") {
    Setup s;
    Background host(s.args({}));
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(300ms);
    CHECK_FALSE(contains(host.err(), "summary fx.tick")); // disabled by its plugin

    std::ofstream(s.config) << "[host]\nplugin_dir = \"plugins\"\nworkers = 2\n\n[jobs.\"fx.tick\"]\nenabled = true\n"
                               "interval = \"100ms\"\n";
    host.signal(SIGHUP);
    REQUIRE(host.wait_for_output("configuration reloaded", 10s));
    std::this_thread::sleep_for(800ms);

    std::ofstream(s.config) << "[host]\nplugin_dir = \"plugins\"\nworkers = \"many\"\n";
    host.signal(SIGHUP);
    REQUIRE(host.wait_for_output("the running configuration stays", 10s));
    CHECK(contains(host.err(), "'workers' must be an integer, got a string"));
    std::this_thread::sleep_for(300ms);

    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    std::string log = host.err();
    CAPTURE(log);
    auto pos = log.find("summary fx.tick: enqueued ");
    REQUIRE(pos != std::string::npos);
    int enqueued = std::stoi(log.substr(pos + std::string("summary fx.tick: enqueued ").size()));
    CHECK(enqueued >= 3); // it ran after the reload, while the broken file changed nothing
}

TEST_CASE("under systemd the host says READY when it serves, pings the watchdog, and says STOPPING when it drains") {
    Setup s("shutdown_grace = \"5s\"\n");
    // a notification socket as systemd makes one (Type=notify, WatchdogSec=)
    auto path = (s.dir.path() / "notify").string();
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
    ::setenv("WATCHDOG_USEC", "200000", 1);
    Background host(s.args({"--enqueue", "fx.slow={\"ms\":800}"}));
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    std::string got;
    auto read_for = [&](std::chrono::milliseconds limit) {
        auto until = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < until) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char buf[512];
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n > 0) got.append(buf, static_cast<std::size_t>(n)).append("\n");
        }
    };
    read_for(1500ms);
    CHECK(contains(got, "READY=1"));
    CHECK(contains(got, "STATUS=serving"));
    CHECK(count_occurrences(got, "WATCHDOG=1") >= 3); // every 100ms
    CHECK_FALSE(contains(got, "STOPPING=1"));
    host.signal(SIGTERM);
    read_for(500ms);
    CHECK(contains(got, "STOPPING=1"));
    CHECK(host.wait(20s));
    CHECK(host.exit_code() == 0);
    ::close(fd);
}
