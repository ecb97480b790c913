#include "config/config.hpp"

#include "support/temp_dir.hpp"

#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>

using namespace jobhost;

namespace {
config::LoadResult parse(const std::string& text) {
    return config::parse(text, "test.toml", "/etc/jobhost");
}
} // namespace

TEST_CASE("a valid file sets every section, with durations in both forms and paths made absolute") {
    auto r = parse(R"(
[host]
plugin_dir = "plugins"
workers = 4
shutdown_grace = 45
strict = true

[log]
level = "debug"
format = "json"
file = "/var/log/jobhost.log"

[jobs.hello]
interval = "1h30m"
priority = "critical"
max_retries = 7
timeout = "250ms"
concurrency = 3
batch_size = 10
dead_letter = false
jitter = "2s"
run_on_start = true
backoff = { initial = "2s", multiplier = 3, max = "1m", jitter = 0.5 }

[jobs.hello.settings]
greeting = "hi"
nested = { list = [1, 2.5, "x", true] }
)");
    REQUIRE_MESSAGE(r.ok(), (r.errors.empty() ? "" : r.errors.front().to_string()));
    const auto& c = r.config;
    CHECK(c.host.plugin_dir == "/etc/jobhost/plugins");
    CHECK(c.host.workers == 4);
    CHECK(c.host.shutdown_grace == core::Duration(45'000));
    CHECK(c.host.strict);
    CHECK(c.log.level == log::Level::debug);
    CHECK(c.log.format == log::Format::json);
    CHECK(c.log.file == "/var/log/jobhost.log");
    const auto& o = c.jobs.at("hello").overrides;
    CHECK(o.interval == core::Duration(5'400'000));
    CHECK(o.priority == registry::Priority::critical);
    CHECK(o.max_retries == 7);
    CHECK(o.timeout == core::Duration(250));
    CHECK(o.concurrency == 3);
    CHECK(o.batch_size == 10);
    CHECK(o.dead_letter == false);
    CHECK(o.schedule_jitter == core::Duration(2000));
    CHECK(o.run_on_start == true);
    CHECK(o.backoff_initial == core::Duration(2000));
    CHECK(o.backoff_multiplier == 3.0);
    CHECK(o.backoff_max == core::Duration(60'000));
    CHECK(o.backoff_jitter == 0.5);
    CHECK(boost::json::serialize(c.jobs.at("hello").settings) ==
          R"({"greeting":"hi","nested":{"list":[1,2.5E0,"x",true]}})");
}

TEST_CASE("each bad config line is reported with its message, line and column") {
    struct Case {
        const char* name;
        const char* text;
        const char* message;
        int line;
        int column;
    };
    const Case cases[] = {
        {"syntax error", "[host]\nworkers = = 2\n", "TOML syntax error", 2, 11},
        {"unclosed table header", "[host\n", "TOML syntax error", 1, 6},
        {"unknown top-level section", "[hots]\nworkers = 2\n",
         "unknown key 'hots' in [top level]; did you mean 'host'?", 1, 2},
        {"unknown host key", "[host]\nwokers = 2\n", "unknown key 'wokers' in [host]; did you mean 'workers'?", 2, 1},
        {"unknown log key", "[log]\nlevle = \"info\"\n", "unknown key 'levle' in [log]; did you mean 'level'?", 2, 1},
        {"unknown job key", "[jobs.a]\nintervall = \"5s\"\n",
         "unknown key 'intervall' in [jobs.a]; did you mean 'interval'?", 2, 1},
        {"unknown backoff key", "[jobs.a]\nbackoff = { inital = \"1s\" }\n",
         "unknown key 'inital' in [jobs.a.backoff]; did you mean 'initial'?", 2, 13},
        {"unknown key without a near match", "[host]\nzzzzzzzz = 1\n", "known keys are: plugin_dir workers", 2, 1},
        {"workers of the wrong type", "[host]\nworkers = \"two\"\n", "'workers' must be an integer, got a string", 2,
         11},
        {"workers out of range", "[host]\nworkers = 0\n", "'workers' must be between 1 and 1024, got 0", 2, 11},
        {"plugin_dir of the wrong type", "[host]\nplugin_dir = 5\n", "'plugin_dir' must be a string, got an integer", 2,
         14},
        {"empty plugin_dir", "[host]\nplugin_dir = \"\"\n", "'plugin_dir' must not be empty", 2, 14},
        {"strict not a boolean", "[host]\nstrict = \"yes\"\n", "'strict' must be true or false, got a string", 2, 10},
        {"malformed duration", "[host]\nshutdown_grace = \"30 seconds\"\n",
         "'shutdown_grace' is not a duration of at most 3650d written as", 2, 18},
        {"duration too long as an integer", "[host]\nshutdown_grace = 9223372036854775807\n",
         "'shutdown_grace' is not a duration of at most 3650d", 2, 18},
        {"duration too long as a string", "[jobs.a]\ntimeout = \"100000d\"\n",
         "'timeout' is not a duration of at most 3650d written as \"250ms\", \"30s\", \"5m\", \"1h30m\", \"2d\" or "
         "whole seconds, got \"100000d\"",
         2, 11},
        {"lease below a second", "[store]\nlease = \"200ms\"\n", "'lease' must be at least 1s, got \"200ms\"", 2, 9},
        {"negative duration", "[host]\nshutdown_grace = -3\n", "'shutdown_grace' must not be negative, got -3", 2, 18},
        {"duration of the wrong type", "[jobs.a]\ntimeout = true\n", "'timeout' must be a duration string", 2, 11},
        {"unknown log level", "[log]\nlevel = \"loud\"\n",
         "'level' must be one of trace, debug, info, warning, error; got \"loud\"", 2, 9},
        {"unknown log format", "[log]\nformat = \"xml\"\n", "'format' must be \"text\" or \"json\", got \"xml\"", 2,
         10},
        {"unknown priority", "[jobs.a]\npriority = \"urgent\"\n",
         "'priority' must be one of low, normal, medium, high, critical; got \"urgent\"", 2, 12},
        {"zero concurrency", "[jobs.a]\nconcurrency = 0\n", "'concurrency' must be between 1 and 10000, got 0", 2, 15},
        {"negative max_retries", "[jobs.a]\nmax_retries = -1\n", "'max_retries' must be between 0 and 1000, got -1", 2,
         15},
        {"zero batch_size", "[jobs.a]\nbatch_size = 0\n", "'batch_size' must be between 1 and 10000, got 0", 2, 14},
        {"zero interval", "[jobs.a]\ninterval = 0\n", "'interval' must be above zero", 2, 12},
        {"interval and cron together", "[jobs.a]\ninterval = \"5s\"\ncron = \"* * * * *\"\n",
         "sets both 'interval' and 'cron'", 3, 8},
        {"invalid cron", "[jobs.a]\ncron = \"61 * * * *\"\n", "'cron' is invalid: minute field '61' is outside 0-59", 2,
         8},
        {"backoff multiplier below one", "[jobs.a]\nbackoff = { multiplier = 0.5 }\n",
         "'multiplier' must be between 1 and 100, got 0.5", 2, 26},
        {"backoff jitter above one", "[jobs.a]\nbackoff = { jitter = 2 }\n", "'jitter' must be between 0 and 1, got 2",
         2, 22},
        {"backoff max below initial", "[jobs.a]\nbackoff = { initial = \"1m\", max = \"1s\" }\n",
         "'max' must be at least 'initial'", 2, 35},
        {"backoff not a table", "[jobs.a]\nbackoff = 5\n", "'jobs.a.backoff' must be a table, got an integer", 2, 11},
        {"settings not a table", "[jobs.a]\nsettings = \"x\"\n", "'jobs.a.settings' must be a table, got a string", 2,
         12},
        {"job type with bad characters", "[jobs.\"Bad Type\"]\nenabled = true\n",
         "the job type 'Bad Type' has the character 'B'", 1, 7},
        {"host not a table", "host = 3\n", "'host' must be a table, got an integer", 1, 8},
        {"enabled not a boolean", "[jobs.a]\nenabled = 1\n", "'enabled' must be true or false, got an integer", 2, 11},
    };
    for (const auto& c : cases) {
        CAPTURE(c.name);
        auto r = parse(c.text);
        REQUIRE_FALSE(r.ok());
        const auto& d = r.errors.front();
        CAPTURE(d.to_string());
        CHECK(d.file == "test.toml");
        CHECK(d.message.find(c.message) != std::string::npos);
        CHECK(d.line == c.line);
        CHECK(d.column == c.column);
    }
}

TEST_CASE("every problem in a file is reported, not just the first") {
    auto r = parse("[host]\nworkers = 0\nwokers = 2\n[log]\nlevel = \"loud\"\n");
    REQUIRE(r.errors.size() == 3);
    CHECK(r.errors[0].line == 2); // key order within [host] is the file's
}

TEST_CASE("a [jobs.x] for a type no plugin provides is an error at the table, with a suggestion") {
    auto r = parse("[jobs.helo]\ninterval = \"5s\"\n\n[jobs.zzz]\nenabled = false\n");
    REQUIRE(r.ok());
    r.config.file = "cfg.toml";
    auto errors = config::check_job_types(r.config, {"hello", "shell"});
    REQUIRE(errors.size() == 2);
    CHECK(errors[0].to_string() ==
          "cfg.toml:1:7: [jobs.helo] configures a job type that no loaded plugin provides; did you mean 'hello'?");
    CHECK(errors[1].line == 4);
    CHECK(errors[1].message.find("run 'jobhost plugins'") != std::string::npos);
}

TEST_CASE("a config file that cannot be read says so and what to do") {
    auto r = config::load_file("/nonexistent/jobhost.toml");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].to_string().find("/nonexistent/jobhost.toml: cannot read the config file") == 0);
    CHECK(r.errors[0].message.find("--config") != std::string::npos);
}

TEST_CASE("the shipped config/jobhost.toml is valid") {
    auto r = config::load_file(std::string(JOBHOST_SOURCE_DIR) + "/config/jobhost.toml");
    for (const auto& e : r.errors) MESSAGE(e.to_string());
    CHECK(r.ok());
    CHECK(r.config.host.plugin_dir == std::filesystem::path(JOBHOST_SOURCE_DIR) / "plugins");
}

TEST_CASE("nearest suggests only plausible typos") {
    CHECK(config::nearest("wokers", {"workers", "strict"}) == "workers");
    CHECK_FALSE(config::nearest("qqqqqq", {"workers", "strict"}).has_value());
}
