// The settings of one job type: what its plugin declared, overlaid by [jobs.<type>] from the config.
#pragma once

#include "common/duration.hpp"
#include "runner/runner.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct jh_job_descriptor;

namespace jobhost::registry {

using core::Duration;

enum class Priority : int { low = 0, normal = 1, medium = 2, high = 3, critical = 4 };
std::optional<Priority> parse_priority(std::string_view name);
std::string_view priority_name(Priority p);

struct BackoffSettings {
    Duration initial{1000};
    double multiplier = 2.0;
    Duration max{300'000};
    double jitter = 0.2;
};

struct JobSettings {
    std::string name;
    std::string description;
    std::string version;
    bool enabled = true;
    Duration interval{0};
    std::string cron;
    Priority priority = Priority::normal;
    std::int64_t max_retries = 3;
    BackoffSettings backoff;
    Duration timeout{0};
    std::int64_t concurrency = 1;
    std::int64_t batch_size = 1;
    bool dead_letter = true;
    // Host-side scheduling, set only in the config:
    Duration schedule_jitter{0}; // each periodic tick is delayed by a random amount up to this
    bool run_on_start = false;   // a periodic type also runs once at start-up
    // Where the plugin code runs ([host] isolation, or [jobs.<type>] isolation): in the host, or in supervised
    // worker processes (see runner/process_runner.hpp).
    runner::Isolation isolation = runner::Isolation::thread;
    std::uint64_t memory_limit = 0; // resident bytes per worker process; 0: no limit (process isolation only)
    // The run_time alert's threshold for this type ([jobs.<type>] max_run_time); unset: [monitor] max_run_time.
    std::optional<Duration> max_run_time;

    bool periodic() const noexcept { return interval.count() > 0 || !cron.empty(); }
};

// One optional value per field: what a [jobs.<type>] table sets.
struct JobOverride {
    std::optional<std::string> name, description, version, cron;
    std::optional<bool> enabled, dead_letter, run_on_start;
    std::optional<Duration> interval, timeout, schedule_jitter;
    std::optional<Priority> priority;
    std::optional<std::int64_t> max_retries, concurrency, batch_size;
    std::optional<Duration> backoff_initial, backoff_max;
    std::optional<double> backoff_multiplier, backoff_jitter;
    std::optional<runner::Isolation> isolation;
    std::optional<std::uint64_t> memory_limit;
    std::optional<Duration> max_run_time;
};

// Where each effective value came from, for `jobhost plugins`: field name -> "plugin", "default" or "file:line".
struct Provenance {
    std::vector<std::pair<std::string, std::string>> fields;
    std::string of(std::string_view field) const;
};

// The settings a descriptor declares (defaults for anything it leaves unset).
JobSettings settings_from_descriptor(const jh_job_descriptor& d);

// Applies an override; `where` names its source ("config/jobhost.toml:12") for provenance. A cron in the override
// clears the plugin's interval and vice versa, so a config can switch a type from one schedule kind to the other.
// `key_where`, when given, names the source of each field that has its own line ("file:7"); others get `where`.
void apply_override(JobSettings& s, const JobOverride& o, const std::string& where, Provenance& provenance,
                    const std::map<std::string, std::string>* key_where = nullptr);

// Every impossible value, as messages (empty when valid): zero concurrency, negative interval, interval and cron
// together, a cron that does not parse, and so on.
std::vector<std::string> validate_settings(const JobSettings& s);

// A job type name: 1 to 128 characters of [a-z0-9_.-]. Returns an error message or empty.
std::string validate_type_name(std::string_view type);

// Each setting as text, in a fixed order: what `jobhost plugins` shows, and in the config's own spelling (a value
// shown can be written back under its key: tests/fuzz/fuzz_config.cpp holds it to that). Empty: not set.
std::vector<std::pair<std::string, std::string>> describe(const JobSettings& s);

} // namespace jobhost::registry
