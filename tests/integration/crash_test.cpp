// A plugin that takes the whole host down: segfault, abort(), exit(0). In thread isolation the host dies each time,
// but the job that did it is charged each crash, named in the log of the next start, and dead-lettered as
// crashed_host once out of attempts; the innocent jobs are never charged for it. In process isolation the host
// does not die at all.
#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <map>
#include <thread>

using namespace jobhost::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

struct Setup {
    TempDir dir;
    std::filesystem::path config, ran;
    Setup() {
        copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
        ran = dir.path() / "ran.txt";
        config = dir.write("jobhost.toml", "[http]\nenabled = false\n[host]\nplugin_dir = \"plugins\"\nworkers = 1\n\n"
                                           "[store]\npath = \"var/jobs.db\"\nretain_done = 1000\n\n"
                                           "[jobs.\"fx.crash\"]\nmax_retries = 2\npriority = \"critical\"\n\n"
                                           "[jobs.\"fx.record\".settings]\nfile = \"" +
                                               ran.string() + "\"\n");
    }
    Finished cli(std::vector<std::string> args) const {
        args.push_back("--config");
        args.push_back(config.string());
        return run_jobhost(args, 60s);
    }
    std::vector<std::string> host_args() const { return {JOBHOST_BINARY, "run", "--config", config.string()}; }
};

} // namespace

TEST_CASE("a job that crashes the host is charged each crash and dead-lettered as crashed_host, for each way to die") {
    struct Way {
        const char* payload;
        int signal;    // the host dies by this signal, or
        int exit_code; // ends with this exit code
        const char* cause;
    };
    for (const Way& way : {Way{"\"segv\"", SIGSEGV, -1, "killed by signal 11 (SIGSEGV)"},
                           Way{"\"abort\"", SIGABRT, -1, "killed by signal 6 (SIGABRT)"},
                           Way{"\"exit0\"", 0, 70, "exit() was called from plugin code"}}) {
        CAPTURE(way.payload);
        Setup s;
        auto q = s.cli({"enqueue", "fx.crash", "--payload", way.payload});
        REQUIRE(q.exit_code == 0);
        std::string id = q.out.substr(0, q.out.find('\n'));
        for (int i = 0; i < 5; ++i)
            REQUIRE(s.cli({"enqueue", "fx.record", "--payload", std::to_string(i)}).exit_code == 0);

        int crashes = 0;
        std::string logs;
        for (int start = 0; start < 6; ++start) {
            Background host(s.host_args());
            bool died = host.wait(2s); // the critical crash job runs first, within milliseconds
            logs += host.err();
            if (!died) { // it stays up: the poison job is out of attempts
                host.signal(SIGTERM);
                REQUIRE(host.wait(20s));
                logs += host.err();
                CHECK(host.exit_code() == 0);
                break;
            }
            ++crashes;
            if (way.signal)
                CHECK(host.term_signal() == way.signal);
            else
                CHECK(host.exit_code() == way.exit_code); // exit(0) from a plugin is not a clean exit
        }
        CHECK(crashes == 3); // max_retries = 2: exactly three attempts, then the dead-letter queue
        CHECK(contains(logs, "job " + id + " was running when its host died"));
        CHECK(contains(logs, way.cause));

        auto dlq = s.cli({"dlq", "show", id, "--json"});
        REQUIRE(dlq.exit_code == 0);
        auto job = json::parse(dlq.out).as_object();
        CHECK(job.at("dead_reason").as_string() == "crashed_host");
        CHECK(job.at("attempt").to_number<int>() == 3);
        const auto& errors = job.at("errors").as_array();
        REQUIRE(errors.size() == 3);
        for (std::size_t i = 0; i < 3; ++i) {
            auto message = std::string(errors[i].as_object().at("error").as_string());
            CAPTURE(message);
            CHECK(message.find("the host died while this job was running (" + std::string(way.cause)) == 0);
            CHECK(errors[i].as_object().at("attempt").to_number<std::size_t>() == i + 1);
        }
        // The innocent jobs: with one worker they never ran beside the crash, only waited reserved; so each ran
        // exactly once and was charged exactly once.
        std::map<std::string, int> runs;
        std::ifstream in(s.ran);
        std::string line;
        while (std::getline(in, line)) runs[line.substr(0, line.find(' '))] += 1;
        auto done = json::parse(s.cli({"jobs", "--type", "fx.record", "--json"}).out).as_array();
        CHECK(done.size() == 5);
        for (const auto& j : done) {
            const auto& o = j.as_object();
            CHECK(o.at("state").as_string() == "done");
            CHECK(o.at("attempt").to_number<int>() == 1);
            CHECK(o.at("errors").as_array().empty());
        }
        for (int i = 0; i < 5; ++i) CHECK(runs[std::to_string(i)] == 1);
    }
}

TEST_CASE("with isolation = \"process\" the same crashes cost one worker each: the host keeps its pid and serves") {
    Setup s;
    std::string text = read_file(s.config); // the same config, with plugin code in worker processes
    text.replace(text.find("[host]\n"), 7, "[host]\nisolation = \"process\"\n");
    {
        std::ofstream out(s.config, std::ios::trunc);
        out << text;
    }
    Background host(s.host_args());
    REQUIRE(host.wait_for_output("serving", 20s));
    const pid_t pid = host.pid();
    std::vector<std::string> ids;
    for (const char* payload : {"\"segv\"", "\"abort\"", "\"exit3\""}) {
        auto q = s.cli({"enqueue", "fx.crash", "--payload", payload});
        REQUIRE(q.exit_code == 0);
        ids.push_back(q.out.substr(0, q.out.find('\n')));
    }
    for (int i = 0; i < 3; ++i) REQUIRE(s.cli({"enqueue", "fx.record", "--payload", std::to_string(i)}).exit_code == 0);
    REQUIRE(eventually(
        [&] {
            auto d = s.cli({"dlq", "list", "--json"});
            return d.exit_code == 0 && json::parse(d.out).as_array().size() == 3;
        },
        60s));
    REQUIRE(eventually([&] { return count_occurrences(read_file(s.ran), "\n") == 3; }, 20s));
    CHECK(host.pid() == pid);
    CHECK_FALSE(host.wait(100ms)); // still running
    for (std::size_t i = 0; i < ids.size(); ++i) {
        auto dlq = s.cli({"dlq", "show", ids[i], "--json"});
        REQUIRE(dlq.exit_code == 0);
        auto job = json::parse(dlq.out).as_object();
        CHECK(job.at("attempt").to_number<int>() == 3);
        std::string first(job.at("errors").as_array().at(0).as_object().at("error").as_string());
        CAPTURE(first);
        const char* expected[] = {"worker crashed: SIGSEGV (signal 11) while running the job",
                                  "worker crashed: SIGABRT (signal 6) while running the job",
                                  "worker exited with code 3 while running the job"};
        CHECK(first == expected[i]);
    }
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    CHECK(contains(host.err(), "started 9, succeeded 0, failed 9")); // (queued by the CLI, not by this host)
}
