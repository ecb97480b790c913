// Plugins swapped while the real jobhost runs: a library copied over in place under load, removed, and added;
// the folder watch, SIGHUP and `jobhost reload` each trigger a rescan. Nothing is lost, and the old code never runs
// after the new code has started.
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <csignal>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

using namespace jobhost::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct Setup {
    TempDir dir;
    fs::path plugins = dir / "plugins";
    fs::path runs = dir / "runs.log";
    fs::path config;
    explicit Setup(const std::string& extra = {}) {
        fs::create_directories(plugins);
        config = dir.write("c.toml", "[host]\nplugin_dir = \"plugins\"\n" + extra +
                                         "[store]\npath = \"s.db\"\n[http]\nlisten = \"127.0.0.1:0\"\n"
                                         "[jobs.\"fx.version\".settings]\nfile = \"" +
                                         runs.string() + "\"\n");
    }
    void put(const char* fixture_name, const std::string& as) const {
        auto r = run({"/bin/cp", fixture(fixture_name).string(), (plugins / as).string()}); // cp: in place, same inode
        REQUIRE(r.exit_code == 0);
    }
    Finished enqueue_range(int from, int to, const std::string& delay = {}) const {
        auto file = dir / ("jobs-" + std::to_string(from) + ".jsonl");
        std::ofstream out(file);
        for (int i = from; i <= to; ++i) out << i << "\n";
        out.close();
        std::vector<std::string> args{"enqueue", "--config", config.string(), "fx.version", "--jsonl", file.string()};
        if (!delay.empty()) args.insert(args.end(), {"--delay", delay});
        return run_jobhost(args);
    }
    // Each line of runs.log: version and payload.
    std::vector<std::pair<int, int>> lines() const {
        std::vector<std::pair<int, int>> out;
        std::ifstream in(runs);
        std::string v;
        int payload;
        while (in >> v >> payload) out.emplace_back(std::stoi(v.substr(1)), payload);
        return out;
    }
    std::set<int> payloads() const {
        std::set<int> s;
        for (auto [v, p] : lines()) s.insert(p);
        return s;
    }
};

unsigned short port_of(const Background& host) {
    std::string log = host.err();
    auto at = log.find("http listening on 127.0.0.1:");
    if (at == std::string::npos) return 0;
    return static_cast<unsigned short>(std::stoi(log.substr(at + 28)));
}

} // namespace

TEST_CASE("a library copied over in place under load is swapped: no job lost, old code never called after the swap, "
          "removed, its queued jobs wait, added again, they run") {
    Setup s;
    s.put("fx_v1.so", "fx_version.so");
    Background host({JOBHOST_BINARY, "run", "--config", s.config.string()});
    REQUIRE(host.wait_for_output("serving", 20s));
    const pid_t pid = host.pid();

    REQUIRE(s.enqueue_range(1, 1500).exit_code == 0);
    REQUIRE(eventually([&] { return s.lines().size() >= 100; }, 20s)); // under load
    s.put("fx_v2.so", "fx_version.so");                                // cp over the loaded library
    REQUIRE(s.enqueue_range(1501, 3000).exit_code == 0);
    REQUIRE(eventually([&] { return s.payloads().size() == 3000; }, 60s));
    REQUIRE(host.wait_for_output("job type fx.version replaced from", 10s));

    auto lines = s.lines();
    std::size_t first_v2 = lines.size();
    for (std::size_t i = 0; i < lines.size(); ++i)
        if (lines[i].first == 2) {
            first_v2 = i;
            break;
        }
    REQUIRE(first_v2 < lines.size());
    CHECK(first_v2 >= 100); // v1 served before the copy
    std::size_t v1_after = 0;
    for (std::size_t i = first_v2; i < lines.size(); ++i) v1_after += lines[i].first == 1 ? 1 : 0;
    CHECK(v1_after == 0); // the old code never ran once the new code had started
    auto all = s.payloads();
    CHECK(all.size() == 3000); // none lost
    CHECK(*all.begin() == 1);
    CHECK(*all.rbegin() == 3000);

    // Removed: queued jobs wait for a plugin.
    REQUIRE(s.enqueue_range(5001, 5010, "2s").exit_code == 0);
    fs::remove(s.plugins / "fx_version.so");
    REQUIRE(host.wait_for_output("job type fx.version is no longer served: its library", 10s));
    std::this_thread::sleep_for(3s); // past the delay: the jobs are due, and nothing runs them
    CHECK(s.payloads().count(5001) == 0);
    auto port = port_of(host);
    REQUIRE(port != 0);
    auto type = request(port, "GET", "/api/v1/types/fx.version");
    REQUIRE(type.status == 200);
    auto t = boost::json::parse(type.body).as_object();
    CHECK(t.at("usable").as_bool() == false);
    CHECK(contains(std::string(t.at("error").as_string()), "was removed; its queued jobs wait"));
    CHECK(t.at("queue").as_object().at("ready").to_number<int>() == 10);

    // Added under another name: the waiting jobs run on it.
    s.put("fx_v1.so", "fx_again.so");
    REQUIRE(eventually([&] { return s.payloads().count(5010) == 1 && s.payloads().count(5001) == 1; }, 20s));
    REQUIRE(host.wait_for_output("job type fx.version provided again from", 10s));
    for (const char* kind : {"plugin_removed", "plugin_loaded"}) { // (plugin_replaced: see the next test)
        auto events = request(port, "GET", std::string("/api/v1/events?type=fx.version&kind=") + kind);
        CAPTURE(events.body);
        CHECK(contains(events.body, std::string("\"kind\":\"") + kind + "\""));
    }

    CHECK(host.pid() == pid);
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
}

TEST_CASE("a new version that fails to load leaves the old one serving, with the reason logged") {
    Setup s;
    s.put("fx_v1.so", "fx_version.so");
    Background host({JOBHOST_BINARY, "run", "--config", s.config.string()});
    REQUIRE(host.wait_for_output("serving", 20s));
    auto port = port_of(host);
    REQUIRE(port != 0);
    // a broken build lands over the good file
    s.put("static_abort.so", "fx_version.so");
    REQUIRE(host.wait_for_output("the new version was refused, the old one keeps serving", 10s));
    CHECK(contains(host.err(), "SIGABRT"));
    for (int i = 1; i <= 20; ++i) // over HTTP: `jobhost enqueue` reads the folder, where the type is gone now
        REQUIRE(request(port, "POST", "/api/v1/jobs", "{\"type\":\"fx.version\",\"payload\":" + std::to_string(i) + "}")
                    .status == 201);
    REQUIRE(eventually([&] { return s.payloads().size() == 20; }, 20s));
    for (auto [v, p] : s.lines()) CHECK(v == 1);
    // a good build lands: served
    s.put("fx_v2.so", "fx_version.so");
    REQUIRE(host.wait_for_output("job type fx.version replaced from", 10s));
    REQUIRE(s.enqueue_range(21, 40).exit_code == 0);
    REQUIRE(eventually([&] { return s.payloads().size() == 40; }, 20s));
    CHECK(s.lines().back().first == 2);
    for (const char* kind : {"plugin_refused", "plugin_replaced"}) {
        auto events = request(port, "GET", std::string("/api/v1/events?type=fx.version&kind=") + kind);
        CAPTURE(events.body);
        CHECK(contains(events.body, std::string("\"kind\":\"") + kind + "\""));
    }
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
}

TEST_CASE("with the folder watch off, SIGHUP and `jobhost reload` load new and changed plugins") {
    Setup s("watch_plugins = false\n");
    s.put("fx_v1.so", "fx_version.so");
    Background host({JOBHOST_BINARY, "run", "--config", s.config.string()});
    REQUIRE(host.wait_for_output("serving", 20s));
    s.put("fx_good.so", "fx_good.so");
    std::this_thread::sleep_for(1s);
    CHECK_FALSE(contains(host.err(), "job type fx.ok added"));
    host.signal(SIGHUP);
    REQUIRE(host.wait_for_output("job type fx.ok added from", 10s));

    s.put("fx_v2.so", "fx_version.so");
    auto port = port_of(host);
    REQUIRE(port != 0);
    std::string url = "http://127.0.0.1:" + std::to_string(port);
    auto r = run_jobhost({"reload", "--config", s.config.string(), "--url", url});
    CAPTURE(r.out);
    CAPTURE(r.err);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "replaced  fx.version"));
    REQUIRE(s.enqueue_range(1, 5).exit_code == 0);
    REQUIRE(eventually([&] { return s.payloads().size() == 5; }, 20s));
    for (auto [v, p] : s.lines()) CHECK(v == 2);
    auto again = run_jobhost({"reload", "--config", s.config.string(), "--url", url});
    CHECK(again.exit_code == 0);
    CHECK(contains(again.out, "no change in the plugin folder"));
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
}
