// The host's configuration file (TOML). Every key is validated; each problem is a Diagnostic with file, line and
// column, and the host does not start on a file that has any.
#pragma once

#include "common/duration.hpp"
#include "log/log.hpp"
#include "registry/job_settings.hpp"

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace jobhost::config {

struct Diagnostic {
    std::string file;
    int line = 0; // 1-based; 0 when the problem has no position (the file cannot be read)
    int column = 0;
    std::string message;
    // "file:line:column: message"
    std::string to_string() const;
};

struct HostSection {
    std::filesystem::path plugin_dir = "plugins"; // relative paths are relative to the config file's folder
    std::int64_t workers = 2;
    core::Duration shutdown_grace{30'000};
    bool strict = false;                 // any plugin problem is fatal
    bool allow_insecure_plugins = false; // load from files or folders that others may write
    core::Duration stuck_grace{5'000};   // a run this long past its timeout is reported as stuck
    core::Duration aging{0};             // a waiting job gains one priority level per `aging`; 0 turns aging off
    // Where plugin code runs unless [jobs.<type>] isolation says otherwise: "thread" (in the host) or "process"
    // (supervised `jobhost worker` processes).
    runner::Isolation isolation = runner::Isolation::thread;
    bool watch_plugins = true; // load, replace and retire plugins as files change in plugin_dir while running
};

struct LogSection {
    log::Level level = log::Level::info;
    log::Format format = log::Format::text;
    std::optional<std::filesystem::path> file;
};

struct StoreSection {
    enum class Kind { sqlite, memory, postgres } kind = Kind::sqlite;
    std::filesystem::path path = "var/jobhost.db"; // made absolute against the config file's folder
    // postgres: the database, as a libpq URL or connection string; empty: read from the variable url_env names,
    // so that a password stays out of the file.
    std::string url;
    std::string url_env = "JOBHOST_DATABASE_URL";
    std::string schema = "jobhost";
    bool full_sync = false; // synchronous = "full"
    std::int64_t retain_done = 0;
    core::Duration retain_done_for{0};
    std::int64_t retain_dead = 100'000;
    // bytes of a run's result message, of its JSON output and of a failed run's error message, kept with the job
    std::int64_t max_result = 65'536;
    // How long a host's hold on a job lasts without renewal (renewed every third of it while the host lives): after
    // it, a host that stalled (SIGSTOP, a frozen VM) loses its jobs to the others. A host that died is noticed by
    // its lock within a second, whatever the lease.
    core::Duration lease{30'000};
};

struct HttpSection {
    bool enabled = true;
    std::string listen = "127.0.0.1:8080";           // host:port; port 0 picks a free one (logged)
    std::optional<std::filesystem::path> token_file; // bearer token for mutating endpoints, read from this file
    std::string token_env = "JOBHOST_HTTP_TOKEN";    // ... or from this environment variable
    std::int64_t max_body = 4 << 20;                 // a batch of 1,000 jobs with small payloads fits well inside
    std::int64_t max_header = 8'192;
    std::int64_t max_connections = 64;   // when full, the connection that has waited longest for its headers makes room
    core::Duration idle_timeout{10'000}; // a connection silent this long between requests is closed
    core::Duration header_timeout{5'000}; // a request's headers must arrive within this, however slowly they trickle
    std::int64_t threads = 2;             // I/O threads serving HTTP (the host's own thread keeps the schedules)
    // Reads (the API's GETs, the dashboard's data) need this token too when set; payloads may hold secrets.
    std::optional<std::filesystem::path> read_token_file;
    std::string read_token_env = "JOBHOST_HTTP_READ_TOKEN";
};

struct MonitorSection {
    std::int64_t events = 1000;
    double failure_rate = 0.5;
    std::int64_t failure_window = 20;
    std::int64_t failure_min_runs = 5;
    double late_factor = 3.0;
    core::Duration backlog_age{300'000};
    double dead_letter_rate = 0.2;
    core::Duration store_timeout{1'000};
    core::Duration interval{1'000}; // how often health is evaluated
    core::Duration window{300'000}; // the rate and run-time rules look at runs this recent (and failure_window at most)
    core::Duration clear_after{30'000};      // an alert clears once its rule has not held for this long
    core::Duration max_run_time{300'000};    // the run_time rule's threshold (0s: off); [jobs.<type>] max_run_time
    std::string run_time_statistic = "mean"; // "mean" or "p95" of the runs in the window
    std::int64_t unhealthy_at = 3;           // this many alerts at once make the host unhealthy
};

struct JobSection {
    std::string type;
    int line = 0;
    int column = 0;
    registry::JobOverride overrides;
    std::map<std::string, int> key_lines; // the line of each key set ("max_retries", "backoff.initial"...)
    boost::json::object settings;         // [jobs.<type>.settings], converted to JSON untouched
};

struct Config {
    std::filesystem::path file; // empty when built from defaults
    HostSection host;
    LogSection log;
    StoreSection store;
    HttpSection http;
    MonitorSection monitor;
    std::map<std::string, JobSection> jobs;
};

struct LoadResult {
    Config config;
    std::vector<Diagnostic> errors;
    bool ok() const noexcept { return errors.empty(); }
};

// Reads and validates a file. Relative paths inside it are made absolute against the file's folder.
LoadResult load_file(const std::filesystem::path& file);

// Validates TOML text; `source` names it in diagnostics, `base_dir` anchors relative paths.
LoadResult parse(std::string_view text, const std::string& source, const std::filesystem::path& base_dir);

// A plugin that discovery refused: the type it declared (empty when the whole file was refused) and why, as
// "file: reason".
struct RefusedPlugin {
    std::string type;
    std::string reason;
};

// A [jobs.<type>] for a type that no plugin provides is an error at that table's position. The message gives the
// real reason when it can: the refusal of the plugin that declares the type, or else the files that were refused
// (one of them may provide it), or else the nearest known type.
std::vector<Diagnostic> check_job_types(const Config& config, const std::set<std::string>& known_types,
                                        const std::vector<RefusedPlugin>& refused = {});

// The closest of `candidates` to `word` by edit distance, if it is close enough to be a likely typo.
std::optional<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates);

} // namespace jobhost::config
