// jobhost new NAME: writes a ready out-of-tree plugin project (see commands.hpp).
#include "cli/commands.hpp"

#include "registry/job_settings.hpp"

#include <fstream>
#include <iostream>

namespace jobhost::cli {

namespace {

// "image.resize-v2" -> "ImageResizeV2": a C++ class name for the task.
std::string class_name(const std::string& type) {
    std::string out;
    bool upper = true;
    for (char c : type) {
        if (c == '.' || c == '-' || c == '_') {
            upper = true;
            continue;
        }
        out += upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
        upper = false;
    }
    if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out = "Job" + out;
    return out;
}

// A CMake target name: the type with '.' and '-' as '_'.
std::string target_name(const std::string& type) {
    std::string out = type;
    for (char& c : out)
        if (c == '.' || c == '-') c = '_';
    return out;
}

std::string fill(std::string text, const std::string& type) {
    auto put = [&](const std::string& key, const std::string& value) {
        for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size()))
            text.replace(at, key.size(), value);
    };
    put("@TYPE@", type);
    put("@CLASS@", class_name(type));
    put("@TARGET@", target_name(type));
    return text;
}

const char* kSource =
    R"jh(// The @TYPE@ job type. Build: cmake -B build -DCMAKE_PREFIX_PATH=<where jobhost is installed> && cmake --build build
// Then copy build/@TARGET@.so into the host's plugin folder, and add jobhost.toml's lines to its config.
#include <jobhost/sdk.hpp>

using namespace std::chrono_literals;

// One instance per type serves every run, on up to `concurrency` threads at once: keep what execute() changes
// local, or guard it.
class @CLASS@ : public jobhost::Task {
public:
    // Called once at load with [jobs."@TYPE@".settings]; a failure disables the type with this message.
    jobhost::Result validate_config(const boost::json::object& settings) override {
        if (auto* g = settings.if_contains("greeting")) {
            if (!g->is_string()) return jobhost::Result::failure("settings.greeting must be a string");
            greeting_ = std::string(g->as_string());
        }
        return jobhost::Result::success();
    }

    // Does the work. The payload is the JSON the job was queued with; a failure is retried up to max_retries.
    jobhost::Result execute(jobhost::Context& ctx) override {
        std::string name = "world";
        if (ctx.payload().is_object())
            if (auto* n = ctx.payload().as_object().if_contains("name"); n && n->is_string())
                name = std::string(n->as_string());
        if (ctx.cancelled()) return jobhost::Result::failure("cancelled"); // check it in long loops
        ctx.progress(100, "greeted " + name);
        ctx.log().info(greeting_ + ", " + name);
        // The message and the JSON output are kept with the job ([store] max_result bounds them).
        return jobhost::Result::success(greeting_ + ", " + name, boost::json::object{{"greeted", name}});
    }

private:
    std::string greeting_ = "hello";
};

// The type's name and defaults; the host's config can override any of them under [jobs."@TYPE@"].
JOBHOST_JOB(@CLASS@, .type = "@TYPE@", .description = "Greets payload.name", .max_retries = 3, .timeout = 30s);
)jh";

const char* kCMake = R"jh(cmake_minimum_required(VERSION 3.25)
project(@TARGET@ CXX)

find_package(jobhost 0.1 REQUIRED) # -DCMAKE_PREFIX_PATH=<where jobhost is installed>
jobhost_add_plugin(@TARGET@ SOURCES @TARGET@.cpp)

# The test runs the task through the SDK, without a host (doctest: Debian's doctest-dev).
enable_testing()
find_package(doctest REQUIRED)
add_executable(@TARGET@_test @TARGET@_test.cpp)
target_link_libraries(@TARGET@_test PRIVATE jobhost::sdk doctest::doctest)
add_test(NAME @TARGET@_test COMMAND @TARGET@_test)
)jh";

const char* kTest =
    R"jh(// Runs @CLASS@ through jobhost/testing.hpp: the adapter the host calls, with a fake host that records.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <jobhost/testing.hpp>

#include "@TARGET@.cpp"

TEST_CASE("@TYPE@ greets the payload's name with the configured greeting") {
    auto runner = jobhost::testing::TaskRunner::make<@CLASS@>({{"greeting", "hi"}}, "@TYPE@");
    auto run = runner.run({.payload = R"x({"name":"ada"})x"});
    CHECK(run.ok());
    CHECK(run.message == "hi, ada");
    CHECK(run.output_json().as_object().at("greeted") == "ada");
    REQUIRE(run.progress.size() == 1);
    CHECK(run.progress[0].percent == 100);
}

TEST_CASE("@TYPE@ stops when the host cancels it") {
    auto runner = jobhost::testing::TaskRunner::make<@CLASS@>();
    auto run = runner.run({.cancelled = [] { return true; }});
    CHECK(run.retryable());
    CHECK(run.message == "cancelled");
}

TEST_CASE("@TYPE@ refuses a greeting that is not a string") {
    CHECK_THROWS(jobhost::testing::TaskRunner::make<@CLASS@>({{"greeting", 5}}));
}
)jh";

const char* kConfig = R"jh(# Add to the host's config (for example config/jobhost.toml). Every field is optional.
[jobs."@TYPE@"]
max_retries = 3
timeout = "30s"
# interval = "5m"            # or cron = "0 3 * * *": run on a schedule

[jobs."@TYPE@".settings]
greeting = "hello"
)jh";

const char* kReadme = R"jh(# @TYPE@

A jobhost plugin. Build it against an installed jobhost, test it, and drop it into a host's plugin folder:

    cmake -B build -DCMAKE_PREFIX_PATH=/usr/local      # where jobhost is installed
    cmake --build build && ctest --test-dir build
    cp build/@TARGET@.so /path/to/plugins/             # a running host loads it within a second
    jobhost enqueue @TYPE@ --payload '{"name":"ada"}'

jobhost.toml holds the lines to add to the host's config.
)jh";

} // namespace

int new_command(const std::string& type, const std::optional<std::filesystem::path>& dir) {
    if (auto why = registry::validate_type_name(type); !why.empty()) {
        std::cerr << "jobhost new: " << why << "\n";
        return kExitUsage;
    }
    auto folder = dir.value_or(std::filesystem::current_path()) / target_name(type);
    std::error_code ec;
    if (std::filesystem::exists(folder, ec)) {
        std::cerr << "jobhost new: " << folder.string() << " exists already; nothing was written\n";
        return kExitUsage;
    }
    std::filesystem::create_directories(folder, ec);
    if (ec) {
        std::cerr << "jobhost new: cannot create " << folder.string() << ": " << ec.message() << "\n";
        return kExitRuntime;
    }
    const std::string target = target_name(type);
    for (const auto& [name, text] :
         std::initializer_list<std::pair<std::string, const char*>>{{target + ".cpp", kSource},
                                                                    {"CMakeLists.txt", kCMake},
                                                                    {target + "_test.cpp", kTest},
                                                                    {"jobhost.toml", kConfig},
                                                                    {"README.md", kReadme}}) {
        std::ofstream out(folder / name);
        out << fill(text, type);
        if (!out) {
            std::cerr << "jobhost new: cannot write " << (folder / name).string() << "\n";
            return kExitRuntime;
        }
    }
    std::cout << "wrote " << folder.string() << ": " << target << ".cpp, " << target
              << "_test.cpp, CMakeLists.txt, jobhost.toml, README.md\n"
              << "next: cmake -S " << folder.string() << " -B " << (folder / "build").string()
              << " -DCMAKE_PREFIX_PATH=<where jobhost is installed> && cmake --build " << (folder / "build").string()
              << " && ctest --test-dir " << (folder / "build").string() << "\n";
    return kExitOk;
}

} // namespace jobhost::cli
