// The jobhost command, run as a user would: real binary, real plugin folders, real files and signals.
#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <thread>

using namespace jobhost::test;
using namespace std::chrono_literals;

namespace {

const std::string kConfig = std::string(JOBHOST_SOURCE_DIR) + "/config/jobhost.toml";

// The line of [jobs.hello]'s interval in the shipped config, where that override is said to come from (its own
// line, not its table's).
std::string hello_line() {
    std::string text = read_file(kConfig);
    auto at = text.find("interval", text.find("[jobs.hello]"));
    return std::to_string(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n') + 1);
}

// A plugin folder holding the good fixture and every broken one.
void fill_with_broken(const std::filesystem::path& dir) {
    copy_fixtures(dir, {"fx_good.so", "not_elf.so", "truncated.so", "no_section.so", "abi_major.so", "abi_minor.so",
                        "small_struct.so", "bad_metadata.so", "dup_a.so", "dup_b.so", "ctor_throws.so",
                        "config_rejects.so", "static_throw.so", "static_exit.so", "static_abort.so"});
}

} // namespace

TEST_CASE("--version and --help answer on every subcommand with exit code 0") {
    auto v = run_jobhost({"--version"});
    CHECK(v.exit_code == 0);
    CHECK(contains(v.out, "jobhost 0.1.0"));
    for (const char* sub : {"run", "plugins", "check"}) {
        CAPTURE(sub);
        auto h = run_jobhost({sub, "--help"});
        CHECK(h.exit_code == 0);
        CHECK(contains(h.out, "--config"));
        CHECK(contains(h.out, "--log-level"));
    }
    CHECK(contains(run_jobhost({"--help"}).out,
                   "Exit codes: 0 clean, 1 runtime failure, 2 usage or configuration error"));
}

TEST_CASE("bare jobhost in an empty folder prints help, creates nothing and exits 2; jobhost help exits 0") {
    TempDir empty;
    auto bare = run({"/bin/sh", "-c", "cd '" + empty.path().string() + "' && exec '" + JOBHOST_BINARY + "'"}, 20s);
    CHECK(bare.exit_code == 2);
    CHECK(contains(bare.err, "give a command, for example: jobhost run --config"));
    CHECK(contains(bare.err, "Subcommands:"));
    CHECK(std::filesystem::is_empty(empty.path()));
    auto help = run_jobhost({"help"});
    CHECK(help.exit_code == 0);
    CHECK(contains(help.out, "Exit codes: 0 clean"));
}

TEST_CASE("a usage error exits 2 and says what was wrong") {
    auto r = run_jobhost({"plugins", "--no-such-flag"});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--no-such-flag"));
    auto missing = run_jobhost({"check", "--config", "/nonexistent.toml"});
    CHECK(missing.exit_code == 2);
    CHECK(contains(missing.err, "/nonexistent.toml"));
}

TEST_CASE("jobhost plugins lists the example types with their effective settings and where each came from") {
    // --plugin-dir: the example plugins this build made (the config's ../plugins holds them only in the dev preset)
    auto r = run_jobhost({"plugins", "--config", kConfig, "--plugin-dir", JOBHOST_EXAMPLE_PLUGIN_DIR});
    REQUIRE(r.exit_code == 0);
    for (const char* t : {"hello", "shell", "text.upper", "text.count", "math.sum", "math.report"})
        CHECK(contains(r.out, t));
    CHECK(contains(r.out, "interval           5s              (" + kConfig + ":" + hello_line() + "; plugin: 10s)"));
    CHECK(contains(r.out, "concurrency        4               (plugin)"));
    CHECK(contains(r.out, "settings           {\"greeting\":\"hello from config/jobhost.toml\"}"));
}

TEST_CASE("jobhost plugins --json is machine-readable") {
    auto r = run_jobhost({"plugins", "--config", kConfig, "--json", "--plugin-dir", JOBHOST_EXAMPLE_PLUGIN_DIR});
    REQUIRE(r.exit_code == 0);
    auto doc = boost::json::parse(r.out).as_object();
    const auto& types = doc.at("types").as_array();
    REQUIRE(types.size() == 6);
    bool saw_hello = false;
    for (const auto& t : types) {
        const auto& o = t.as_object();
        if (o.at("type") != "hello") continue;
        saw_hello = true;
        CHECK(o.at("abi_version") == "1.0");
        const auto& interval = o.at("settings").as_object().at("interval").as_object();
        CHECK(interval.at("value") == "5s");
        CHECK(interval.at("declared") == "10s");
        CHECK(interval.at("source").as_string() == kConfig + ":" + hello_line());
    }
    CHECK(saw_hello);
    CHECK(doc.at("skipped").as_array().empty());
}

TEST_CASE("jobhost plugins names every skipped file with why, and lists the good types") {
    TempDir dir;
    fill_with_broken(dir.path());
    auto r = run_jobhost({"plugins", "--plugin-dir", dir.path().string()});
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "fx.ok"));
    CHECK(contains(r.out, "fx.meta_ok"));
    CHECK(contains(r.out, "not_elf.so: not a shared library"));
    CHECK(contains(r.out, "truncated.so: truncated ELF file"));
    CHECK(contains(r.out, "no_section.so: no 'jobhost' section"));
    CHECK(contains(r.out, "built for plugin ABI 2.0, this host speaks 1.0"));
    CHECK(contains(r.out, "built for plugin ABI 1.99, newer than this host's 1.0"));
    CHECK(contains(r.out, "small_struct.so: descriptor jobhost_job_small has struct_size 24"));
    CHECK(contains(r.out, "(type 'fx.zero_concurrency'): invalid metadata"));
    CHECK(contains(r.out, "job type 'fx.dup' is declared twice"));
    CHECK(contains(r.out, "the task's constructor threw: cannot connect to the warehouse"));
    CHECK(contains(r.out, "validate_config: settings.url is required"));
    // a library that kills the process that loads it: refused with what happened, the host never loads it
    CHECK(contains(r.out, "static_throw.so: refused: a probe process that loaded it first was killed by signal 6 "
                          "(SIGABRT); it said: terminate called after throwing an instance of 'std::runtime_error'"));
    CHECK(contains(r.out, "what():  no database at load time"));
    CHECK(contains(r.out, "static_exit.so: refused: a probe process that loaded it first ended with exit(3)"));
    CHECK(contains(r.out, "static_abort.so: refused: a probe process that loaded it first was killed by signal 6"));
    CHECK(contains(r.out, "17 skipped"));
    auto check = run_jobhost({"check", "--plugin-dir", dir.path().string()});
    CHECK(check.exit_code == 2); // survives them too, and says why
    CHECK(contains(check.err, "static_exit.so: refused"));
}

TEST_CASE("jobhost check accepts the shipped config and rejects a bad one with file, line and column") {
    auto good = run_jobhost({"check", "--config", kConfig, "--plugin-dir", JOBHOST_EXAMPLE_PLUGIN_DIR});
    CHECK(good.exit_code == 0);
    CHECK(contains(good.out, "ok: 6 job type(s)"));

    TempDir dir;
    auto bad = dir.write("bad.toml", "[host]\nplugin_dir = \"" + std::string(JOBHOST_EXAMPLE_PLUGIN_DIR) +
                                         "\"\nwokers = 2\n\n[jobs.hello]\npriority = \"urgent\"\n");
    auto r = run_jobhost({"check", "--config", bad.string()});
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, bad.string() + ":3:1: unknown key 'wokers' in [host]; did you mean 'workers'?"));
    CHECK(contains(r.err, bad.string() + ":6:12: 'priority' must be one of low, normal, medium, high, critical"));
}

TEST_CASE("a [jobs.x] naming a type no plugin provides stops start-up with its position") {
    TempDir dir;
    auto cfg = dir.write("c.toml", "[host]\nplugin_dir = \"" + std::string(JOBHOST_EXAMPLE_PLUGIN_DIR) +
                                       "\"\n\n[jobs.helo]\ninterval = \"5s\"\n");
    for (const char* sub : {"check", "run"}) {
        CAPTURE(sub);
        auto r = run_jobhost({sub, "--config", cfg.string()}, 20s); // stops before the store or http start
        CHECK(r.exit_code == 2);
        CHECK(contains(
            r.err,
            cfg.string() +
                ":4:7: [jobs.helo] configures a job type that no loaded plugin provides; did you mean 'hello'?"));
    }
}

TEST_CASE("jobhost check fails on any plugin problem, --strict makes plugin problems fatal for run") {
    TempDir dir;
    copy_fixtures(dir.path(), {"fx_good.so", "abi_major.so"});
    auto check = run_jobhost({"check", "--plugin-dir", dir.path().string()});
    CHECK(check.exit_code == 2);
    CHECK(count_occurrences(check.err, "abi_major.so") == 1); // said once, not logged and then listed again
    CHECK(contains(check.err, "1 plugin problem(s), each above"));
    auto quiet = run_jobhost({"check", "--plugin-dir", dir.path().string(), "--log-level", "error"});
    CHECK(count_occurrences(quiet.err, "abi_major.so") == 1); // the log hid it: listed instead
    // the type column is as wide as the longest name plus two (a long name never runs into the next column)
    TempDir store;
    auto db = (store.path() / "s.db").string();
    REQUIRE(run_jobhost({"enqueue", "fx.record2", "--store", db, "--plugin-dir", dir.path().string()}).exit_code == 0);
    auto table = run_jobhost({"jobs", "--store", db, "--plugin-dir", dir.path().string()});
    CHECK(contains(table.out, "fx.record2  ready"));
    auto strict = run_jobhost(
        {"run", "--strict", "--plugin-dir", dir.path().string(), "--store", "memory", "--listen", "off"}, 20s);
    CHECK(strict.exit_code == 2);
    CHECK(contains(strict.err, "--strict: 1 plugin problem(s)"));
}

TEST_CASE("jobhost run serves past broken plugins, logs each, and exits 0 on SIGTERM and on SIGINT") {
    for (int signo : {SIGTERM, SIGINT}) {
        CAPTURE(signo);
        TempDir dir;
        fill_with_broken(dir.path() / "plugins");
        Background host({JOBHOST_BINARY, "run", "--plugin-dir", (dir.path() / "plugins").string(), "--store",
                         (dir.path() / "store.db").string(), "--listen", "127.0.0.1:0"});
        REQUIRE(host.wait_for_output("serving", 20s));
        std::string log = host.err();
        CHECK(contains(log, "found 24 job type(s) (22 usable) in 5 libraries"));
        CHECK(contains(log, "skipped 17"));
        CHECK(contains(log, "not_elf.so: not a shared library"));
        host.signal(signo);
        REQUIRE(host.wait(20s));
        CHECK(host.exit_code() == 0);
        CHECK(contains(host.err(), "shutting down"));
    }
}

TEST_CASE("[log] format = json writes one JSON object per line with level, component and message") {
    TempDir dir;
    auto cfg = dir.write("c.toml", "[host]\nplugin_dir = \"" + std::string(JOBHOST_EXAMPLE_PLUGIN_DIR) +
                                       "\"\n[log]\nformat = \"json\"\nfile = \"host.log\"\n");
    auto r = run_jobhost({"check", "--config", cfg.string()});
    REQUIRE(r.exit_code == 0);
    std::string file_log = read_file(dir.path() / "host.log");
    REQUIRE_FALSE(file_log.empty());
    std::size_t lines = 0;
    std::size_t start = 0;
    while (start < file_log.size()) {
        auto end = file_log.find('\n', start);
        auto line = file_log.substr(start, end - start);
        start = end == std::string::npos ? file_log.size() : end + 1;
        if (line.empty()) continue;
        auto o = boost::json::parse(line).as_object();
        CHECK(o.contains("ts"));
        CHECK(o.contains("level"));
        CHECK(o.contains("component"));
        CHECK(o.contains("message"));
        ++lines;
    }
    CHECK(lines >= 2);
    CHECK(contains(file_log, "\"component\":\"loader\""));
}

TEST_CASE("jobhost check refuses what jobhost run refuses, and neither creates anything") {
    TempDir dir;
    copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
    dir.write("empty-token", "\n");
    struct Case {
        std::string name;
        std::string toml;
        std::string message;
    };
    std::vector<Case> cases{
        {"non-loopback listen without a token", "[http]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"JOBHOST_NO_SUCH\"\n",
         "is reachable from other machines, so mutating requests need a bearer token"},
        {"empty token_file", "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"empty-token\"\n", "is empty"},
        {"missing token_file", "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"no-such-token\"\n", "cannot be read"},
        {"unresolvable listen host", "[http]\nlisten = \"no.such.host:8080\"\n", "is not an IP address"},
        {"store that cannot be created", "[store]\npath = \"plugins/fx_good.so/jobs.db\"\n",
         "cannot create the store " + (dir.path() / "plugins/fx_good.so/jobs.db").string()},
        {"missing plugin folder", "[host]\nplugin_dir = \"no-such-folder\"\n", "no-such-folder does not exist"},
        {"postgres without a database", "[store]\nkind = \"postgres\"\nurl_env = \"JOBHOST_NO_SUCH_URL\"\n",
         "[store] kind = \"postgres\" needs a database: set JOBHOST_NO_SUCH_URL"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.name);
        std::string toml = c.toml;
        if (toml.find("[host]") == std::string::npos) toml = "[host]\nplugin_dir = \"plugins\"\n" + toml;
        if (toml.find("[store]") == std::string::npos) toml += "[store]\npath = \"var/jobs.db\"\n";
        auto cfg = dir.write("c.toml", toml);
        auto check = run_jobhost({"check", "--config", cfg.string()}, 20s);
        CHECK(check.exit_code == 2);
        CHECK(contains(check.err, c.message));
        auto run = run_jobhost({"run", "--config", cfg.string()}, 20s);
        CHECK(run.exit_code == 2);
        CHECK(contains(run.err, c.message));
        CHECK_FALSE(std::filesystem::exists(dir.path() / "var"));
    }
}

TEST_CASE("copying a new file over a loaded plugin in place never touches the running code") {
    TempDir dir;
    copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
    auto cfg = dir.write("c.toml", "[host]\nplugin_dir = \"plugins\"\n[http]\nenabled = false\n[store]\nkind = "
                                   "\"memory\"\n[jobs.\"fx.tick\"]\nenabled = true\ninterval = \"100ms\"\n");
    Background host({JOBHOST_BINARY, "run", "--config", cfg.string(), "--log-level", "debug"});
    REQUIRE(host.wait_for_output("serving", 20s));
    std::this_thread::sleep_for(300ms);
    auto plugin = dir.path() / "plugins" / "fx_good.so";
    struct stat before {};
    REQUIRE(::stat(plugin.c_str(), &before) == 0);
    { // what `cp other.so fx_good.so` does: truncate and rewrite the same inode, here with another library
        std::ofstream out(plugin, std::ios::binary | std::ios::trunc);
        out << read_file(fixture("no_section.so"));
    }
    struct stat after {};
    REQUIRE(::stat(plugin.c_str(), &after) == 0);
    CHECK(before.st_ino == after.st_ino);
    std::this_thread::sleep_for(800ms); // fx.tick keeps running its old code
    CHECK_FALSE(host.wait(std::chrono::milliseconds(1)));
    host.signal(SIGTERM);
    REQUIRE(host.wait(20s));
    CHECK(host.exit_code() == 0);
    auto log = host.err();
    auto pos = log.find("summary fx.tick: enqueued ");
    REQUIRE(pos != std::string::npos);
    CHECK(std::stoi(log.substr(log.find("succeeded ", pos) + 10)) >= 5); // it ran before and after the copy
}

TEST_CASE("a configured type whose plugin was refused is reported with the real reason by every command") {
    TempDir dir;
    copy_fixtures(dir.path() / "plugins", {"fx_good.so", "bad_metadata.so", "static_throw.so"});
    struct Case {
        std::string type;
        std::vector<std::string> says;
    };
    for (const Case& c :
         {Case{"fx.zero_concurrency",
               {"[jobs.fx.zero_concurrency] configures a job type whose plugin was refused: " +
                (dir.path() / "plugins/bad_metadata.so").string() +
                ": invalid metadata: concurrency must be at least 1, got 0"}},
          Case{"warehouse.sync",
               {"[jobs.warehouse.sync] configures a job type that no loaded plugin provides; 2 plugin file(s) were "
                "refused and one of them may provide it: ",
                (dir.path() / "plugins/static_throw.so").string() +
                    ": refused: a probe process that loaded it first was killed by signal 6"}}}) {
        CAPTURE(c.type);
        auto cfg =
            dir.write("c.toml", "[host]\nplugin_dir = \"plugins\"\n[store]\nkind = \"memory\"\n[http]\nenabled = "
                                "false\n\n[jobs.\"" +
                                    c.type + "\"]\nenabled = true\n");
        for (std::string command : {"check", "plugins", "run"}) {
            CAPTURE(command);
            auto r = run_jobhost({command, "--config", cfg.string()}, 20s);
            CHECK(r.exit_code == 2);
            for (const auto& part : c.says) CHECK(contains(r.err, part));
        }
    }
}
