// The TOML config: any text gives a config or errors with a line, never an exception; an accepted config's
// durations are within their bounds; and each job type's settings round-trip through what `jobhost plugins` (and
// `--json`) shows: the values shown, written back under their keys, are accepted and give the same settings.
#include "config/config.hpp"
#include "registry/job_settings.hpp"
#include "fuzz_check.hpp"

#include <jobhost/abi.h>
#include <toml++/toml.h>

#include <charconv>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>

namespace {

using Shown = std::vector<std::pair<std::string, std::string>>;

// The shown settings as a config that sets each of them for `type`.
std::string as_config(const std::string& type, const Shown& shown) {
    static const std::set<std::string> booleans = {"enabled", "dead_letter", "run_on_start"};
    static const std::set<std::string> integers = {"max_retries", "concurrency", "batch_size"};
    static const std::set<std::string> numbers = {"backoff.multiplier", "backoff.jitter"};
    toml::table job, backoff;
    for (const auto& [key, value] : shown) {
        if (value.empty()) continue; // not set
        toml::table& into = key.rfind("backoff.", 0) == 0 ? backoff : job;
        std::string name = key.rfind("backoff.", 0) == 0 ? key.substr(8) : key;
        if (booleans.count(key)) {
            into.insert(name, value == "true");
        } else if (integers.count(key)) {
            into.insert(name, std::stoll(value));
        } else if (numbers.count(key)) {
            double v = 0;
            std::from_chars(value.data(), value.data() + value.size(), v);
            into.insert(name, v);
        } else if (key == "timeout" && value == "none") {
            into.insert(name, "0s");
        } else {
            into.insert(name, value);
        }
    }
    job.insert("backoff", std::move(backoff));
    toml::table jobs, root;
    jobs.insert(type, std::move(job));
    root.insert("jobs", std::move(jobs));
    std::ostringstream out;
    out << root;
    return out.str();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 65536) return 0;
    std::string text(reinterpret_cast<const char*>(data), size);
    auto r = jobhost::config::parse(text, "fuzz.toml", "/");
    if (!r.ok()) {
        for (const auto& e : r.errors) FUZZ_CHECK(!e.message.empty(), "an error without a message");
        return 0;
    }
    const auto& c = r.config;
    using jobhost::core::kMaxDuration;
    FUZZ_CHECK(c.host.shutdown_grace.count() >= 0 && c.host.shutdown_grace <= kMaxDuration, "shutdown_grace");
    FUZZ_CHECK(c.http.idle_timeout.count() >= 0 && c.http.idle_timeout <= kMaxDuration, "idle_timeout");
    FUZZ_CHECK(c.store.lease.count() >= 1000 && c.store.lease <= kMaxDuration, "lease");
    namespace registry = jobhost::registry;
    jh_job_descriptor plain{}; // a plugin that declares nothing: every setting is the config's or the default
    const auto declared = registry::settings_from_descriptor(plain);
    for (const auto& [type, job] : c.jobs) {
        if (job.overrides.interval) FUZZ_CHECK(job.overrides.interval->count() > 0, "interval of " + type);
        if (job.overrides.timeout) FUZZ_CHECK(*job.overrides.timeout <= kMaxDuration, "timeout of " + type);
        auto first = declared;
        registry::Provenance p;
        registry::apply_override(first, job.overrides, "fuzz.toml", p);
        if (!registry::validate_settings(first).empty()) continue; // refused at load: nothing is shown
        auto shown = registry::describe(first);
        auto again_text = as_config(type, shown);
        auto again = jobhost::config::parse(again_text, "again.toml", "/");
        FUZZ_CHECK(again.ok(), "the settings shown for " + type + " are refused when written back:\n" + again_text +
                                   "\n" + (again.ok() ? "" : again.errors.front().to_string()));
        auto it = again.config.jobs.find(type);
        FUZZ_CHECK(it != again.config.jobs.end(), "the type is lost when written back");
        auto second = declared;
        registry::apply_override(second, it->second.overrides, "again.toml", p);
        FUZZ_CHECK(registry::describe(second) == shown,
                   "the settings shown for " + type + " change when written back:\n" + again_text);
    }
    return 0;
}
