#include "config/config.hpp"

#include "scheduler/cron.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <fstream>
#include <sstream>
#include <tuple>

namespace jobhost::config {

namespace fs = std::filesystem;

std::string Diagnostic::to_string() const {
    if (line == 0) return file + ": " + message;
    return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

std::optional<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates) {
    std::optional<std::string> best;
    std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        std::vector<std::size_t> prev(c.size() + 1), cur(c.size() + 1);
        for (std::size_t j = 0; j <= c.size(); ++j) prev[j] = j;
        for (std::size_t i = 1; i <= word.size(); ++i) {
            cur[0] = i;
            for (std::size_t j = 1; j <= c.size(); ++j)
                cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word[i - 1] == c[j - 1] ? 0 : 1)});
            std::swap(prev, cur);
        }
        if (prev[c.size()] < best_d) {
            best_d = prev[c.size()];
            best = c;
        }
    }
    return best;
}

namespace {

// Collects diagnostics while walking the document.
class Validator {
public:
    Validator(std::string source, fs::path base_dir) : source_(std::move(source)), base_(std::move(base_dir)) {}

    void error(const toml::source_region& where, std::string message) {
        errors_.push_back(
            {source_, static_cast<int>(where.begin.line), static_cast<int>(where.begin.column), std::move(message)});
    }

    // Reports every key of `table` not in `known`, with a suggestion.
    void known_keys(const toml::table& table, const std::string& name, const std::vector<std::string>& known) {
        for (const auto& [key, value] : table) {
            std::string k(key.str());
            if (std::find(known.begin(), known.end(), k) != known.end()) continue;
            std::string msg = "unknown key '" + k + "' in [" + name + "]";
            if (auto n = nearest(k, known))
                msg += "; did you mean '" + *n + "'?";
            else {
                msg += "; known keys are:";
                for (const auto& c : known) msg += " " + c;
            }
            error(key.source(), msg);
        }
    }

    const toml::table* table(const toml::node& node, const std::string& name) {
        if (auto t = node.as_table()) return t;
        error(node.source(), "'" + name + "' must be a table, got " + type_name(node));
        return nullptr;
    }

    static std::string type_name(const toml::node& node) {
        switch (node.type()) {
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        default: return "a date or time";
        }
    }

    std::optional<bool> boolean(const toml::node& node, const std::string& key) {
        if (auto v = node.value_exact<bool>()) return v;
        error(node.source(), "'" + key + "' must be true or false, got " + type_name(node));
        return std::nullopt;
    }

    std::optional<std::string> string(const toml::node& node, const std::string& key) {
        if (auto v = node.value_exact<std::string>()) return v;
        error(node.source(), "'" + key + "' must be a string, got " + type_name(node));
        return std::nullopt;
    }

    std::optional<std::int64_t> integer(const toml::node& node, const std::string& key, std::int64_t min,
                                        std::int64_t max) {
        auto v = node.value_exact<std::int64_t>();
        if (!v) {
            error(node.source(), "'" + key + "' must be an integer, got " + type_name(node));
            return std::nullopt;
        }
        if (*v < min || *v > max) {
            error(node.source(), "'" + key + "' must be between " + std::to_string(min) + " and " +
                                     std::to_string(max) + ", got " + std::to_string(*v));
            return std::nullopt;
        }
        return v;
    }

    std::optional<double> number(const toml::node& node, const std::string& key, double min, double max) {
        std::optional<double> v;
        if (auto i = node.value_exact<std::int64_t>()) v = static_cast<double>(*i);
        if (auto d = node.value_exact<double>()) v = *d;
        if (!v) {
            error(node.source(), "'" + key + "' must be a number, got " + type_name(node));
            return std::nullopt;
        }
        if (!std::isfinite(*v) || *v < min || *v > max) {
            std::ostringstream m;
            m << "'" << key << "' must be between " << min << " and " << max << ", got " << *v;
            error(node.source(), m.str());
            return std::nullopt;
        }
        return v;
    }

    // A duration: a string such as "1h30m" or "250ms", or an integer of seconds.
    std::optional<core::Duration> duration(const toml::node& node, const std::string& key) {
        if (auto i = node.value_exact<std::int64_t>()) {
            if (*i < 0) {
                error(node.source(), "'" + key + "' must not be negative, got " + std::to_string(*i));
                return std::nullopt;
            }
            if (*i > core::kMaxDuration.count() / 1000) {
                error(node.source(),
                      "'" + key + "' " + *core::duration_error(std::to_string(*i)) + ", got " + std::to_string(*i));
                return std::nullopt;
            }
            return core::Duration(*i * 1000);
        }
        if (auto s = node.value_exact<std::string>()) {
            if (auto d = core::parse_duration(*s)) return d;
            error(node.source(), "'" + key + "' " + *core::duration_error(*s) + ", got \"" + *s + "\"");
            return std::nullopt;
        }
        error(node.source(), "'" + key + "' must be a duration string such as \"30s\" or an integer of seconds, got " +
                                 type_name(node));
        return std::nullopt;
    }

    // A size: an integer of bytes, or a string "512MiB", "2GiB", "64MB", "100KiB".
    std::optional<std::uint64_t> size(const toml::node& node, const std::string& key) {
        auto bad = [&](const std::string& got) {
            error(node.source(), "'" + key +
                                     "' must be a size such as \"256MiB\" or \"2GiB\" (or an integer of "
                                     "bytes) of at least 1MiB, got " +
                                     got);
            return std::optional<std::uint64_t>();
        };
        if (auto i = node.value_exact<std::int64_t>()) {
            if (*i < (1 << 20)) return bad(std::to_string(*i));
            return static_cast<std::uint64_t>(*i);
        }
        auto s = node.value_exact<std::string>();
        if (!s) return bad(type_name(node));
        std::size_t used = 0;
        double n = 0;
        try {
            n = std::stod(*s, &used);
        } catch (const std::exception&) {
            return bad("\"" + *s + "\"");
        }
        std::string unit = s->substr(used);
        static const std::pair<const char*, double> units[] = {
            {"B", 1},    {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"KB", 1e3},
            {"MB", 1e6}, {"GB", 1e9},     {"K", 1024.0},      {"M", 1048576.0},      {"G", 1073741824.0}};
        for (const auto& [name, factor] : units)
            if (unit == name) {
                double bytes = n * factor;
                if (!(bytes >= 1048576.0) || bytes > 1e15) return bad("\"" + *s + "\"");
                return static_cast<std::uint64_t>(bytes);
            }
        return bad("\"" + *s + "\"");
    }

    std::optional<runner::Isolation> isolation(const toml::node& node) {
        auto s = string(node, "isolation");
        if (!s) return std::nullopt;
        if (*s == "thread") return runner::Isolation::thread;
        if (*s == "process") return runner::Isolation::process;
        error(node.source(), "'isolation' must be \"thread\" (plugin code runs in the host) or \"process\" (in "
                             "supervised worker processes), got \"" +
                                 *s + "\"");
        return std::nullopt;
    }

    fs::path path(const std::string& value) const {
        fs::path p(value);
        return p.is_absolute() ? p : (base_ / p).lexically_normal();
    }

    std::vector<Diagnostic> take() { return std::move(errors_); }

private:
    std::string source_;
    fs::path base_;
    std::vector<Diagnostic> errors_;
};

boost::json::value to_json(const toml::node& node) {
    switch (node.type()) {
    case toml::node_type::table: {
        boost::json::object o;
        for (const auto& [k, v] : *node.as_table()) o[k.str()] = to_json(v);
        return o;
    }
    case toml::node_type::array: {
        boost::json::array a;
        for (const auto& v : *node.as_array()) a.push_back(to_json(v));
        return a;
    }
    case toml::node_type::string: return boost::json::string(node.as_string()->get());
    case toml::node_type::integer: return node.as_integer()->get();
    case toml::node_type::floating_point: return node.as_floating_point()->get();
    case toml::node_type::boolean: return node.as_boolean()->get();
    default: {
        std::ostringstream s;
        node.visit([&](const auto& v) { s << v; });
        return boost::json::string(s.str());
    }
    }
}

void parse_host(Validator& v, const toml::table& t, HostSection& host) {
    v.known_keys(t, "host",
                 {"plugin_dir", "workers", "shutdown_grace", "strict", "allow_insecure_plugins", "stuck_grace", "aging",
                  "isolation", "watch_plugins"});
    if (auto n = t.get("watch_plugins"))
        if (auto b = v.boolean(*n, "watch_plugins")) host.watch_plugins = *b;
    if (auto n = t.get("isolation"))
        if (auto i = v.isolation(*n)) host.isolation = *i;
    if (auto n = t.get("plugin_dir"))
        if (auto s = v.string(*n, "plugin_dir")) {
            if (s->empty())
                v.error(n->source(), "'plugin_dir' must not be empty");
            else
                host.plugin_dir = v.path(*s);
        }
    if (auto n = t.get("workers"))
        if (auto i = v.integer(*n, "workers", 1, 1024)) host.workers = *i;
    if (auto n = t.get("shutdown_grace"))
        if (auto d = v.duration(*n, "shutdown_grace")) host.shutdown_grace = *d;
    if (auto n = t.get("stuck_grace"))
        if (auto d = v.duration(*n, "stuck_grace")) host.stuck_grace = *d;
    if (auto n = t.get("aging"))
        if (auto d = v.duration(*n, "aging")) host.aging = *d;
    if (auto n = t.get("strict"))
        if (auto b = v.boolean(*n, "strict")) host.strict = *b;
    if (auto n = t.get("allow_insecure_plugins"))
        if (auto b = v.boolean(*n, "allow_insecure_plugins")) host.allow_insecure_plugins = *b;
}

void parse_log(Validator& v, const toml::table& t, LogSection& log) {
    v.known_keys(t, "log", {"level", "format", "file"});
    if (auto n = t.get("level"))
        if (auto s = v.string(*n, "level")) {
            if (auto l = log::parse_level(*s))
                log.level = *l;
            else
                v.error(n->source(), "'level' must be one of trace, debug, info, warning, error; got \"" + *s + "\"");
        }
    if (auto n = t.get("format"))
        if (auto s = v.string(*n, "format")) {
            if (*s == "text")
                log.format = log::Format::text;
            else if (*s == "json")
                log.format = log::Format::json;
            else
                v.error(n->source(), "'format' must be \"text\" or \"json\", got \"" + *s + "\"");
        }
    if (auto n = t.get("file"))
        if (auto s = v.string(*n, "file")) log.file = v.path(*s);
}

void parse_store(Validator& v, const toml::table& t, StoreSection& store) {
    v.known_keys(t, "store",
                 {"kind", "path", "synchronous", "retain_done", "retain_done_for", "retain_dead", "max_result", "lease",
                  "url", "url_env", "schema"});
    if (auto n = t.get("kind"))
        if (auto s = v.string(*n, "kind")) {
            if (*s == "sqlite")
                store.kind = StoreSection::Kind::sqlite;
            else if (*s == "memory")
                store.kind = StoreSection::Kind::memory;
            else if (*s == "postgres")
                store.kind = StoreSection::Kind::postgres;
            else
                v.error(n->source(), "'kind' must be \"sqlite\", \"memory\" or \"postgres\", got \"" + *s + "\"");
        }
    if (auto n = t.get("url"))
        if (auto s = v.string(*n, "url")) store.url = *s;
    if (auto n = t.get("url_env"))
        if (auto s = v.string(*n, "url_env")) {
            if (s->empty())
                v.error(n->source(), "'url_env' must name an environment variable");
            else
                store.url_env = *s;
        }
    if (auto n = t.get("schema"))
        if (auto s = v.string(*n, "schema")) {
            bool plain = !s->empty() && s->size() <= 40 &&
                         (std::islower(static_cast<unsigned char>((*s)[0])) || (*s)[0] == '_') &&
                         s->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
            if (plain)
                store.schema = *s;
            else
                v.error(n->source(),
                        "'schema' must be a plain PostgreSQL name (lower-case letters, digits and _), got \"" + *s +
                            "\"");
        }
    if (auto n = t.get("path"))
        if (auto s = v.string(*n, "path")) {
            if (s->empty())
                v.error(n->source(), "'path' must not be empty");
            else
                store.path = v.path(*s);
        }
    if (auto n = t.get("synchronous"))
        if (auto s = v.string(*n, "synchronous")) {
            if (*s == "normal" || *s == "full")
                store.full_sync = *s == "full";
            else
                v.error(n->source(), "'synchronous' must be \"normal\" or \"full\", got \"" + *s + "\"");
        }
    if (auto n = t.get("retain_done"))
        if (auto i = v.integer(*n, "retain_done", 0, 1'000'000'000)) store.retain_done = *i;
    if (auto n = t.get("retain_done_for"))
        if (auto d = v.duration(*n, "retain_done_for")) store.retain_done_for = *d;
    if (auto n = t.get("retain_dead"))
        if (auto i = v.integer(*n, "retain_dead", 1, 1'000'000'000)) store.retain_dead = *i;
    if (auto n = t.get("max_result"))
        if (auto i = v.integer(*n, "max_result", 0, 16 << 20)) store.max_result = *i;
    if (auto n = t.get("lease"))
        if (auto d = v.duration(*n, "lease")) {
            if (*d < core::Duration(1000))
                v.error(n->source(), "'lease' must be at least 1s, got \"" + core::format_duration(*d) + "\"");
            else
                store.lease = *d;
        }
}

void parse_http(Validator& v, const toml::table& t, HttpSection& http) {
    v.known_keys(t, "http",
                 {"enabled", "listen", "token_file", "token_env", "max_body", "max_header", "max_connections",
                  "idle_timeout", "header_timeout", "threads", "read_token_file", "read_token_env"});
    if (auto n = t.get("enabled"))
        if (auto b = v.boolean(*n, "enabled")) http.enabled = *b;
    if (auto n = t.get("listen"))
        if (auto s = v.string(*n, "listen")) {
            auto colon = s->rfind(':');
            bool ok = colon != std::string::npos && colon > 0 && colon + 1 < s->size() &&
                      s->find_first_not_of("0123456789", colon + 1) == std::string::npos && s->size() - colon <= 6 &&
                      std::stoi(s->substr(colon + 1)) <= 65535;
            if (ok)
                http.listen = *s;
            else
                v.error(n->source(), "'listen' must be host:port, such as \"127.0.0.1:8080\", got \"" + *s + "\"");
        }
    if (auto n = t.get("token_file"))
        if (auto s = v.string(*n, "token_file")) http.token_file = v.path(*s);
    if (auto n = t.get("token_env"))
        if (auto s = v.string(*n, "token_env")) http.token_env = *s;
    if (auto n = t.get("max_body"))
        if (auto i = v.integer(*n, "max_body", 1024, 64 << 20)) http.max_body = *i;
    if (auto n = t.get("max_header"))
        if (auto i = v.integer(*n, "max_header", 1024, 1 << 20)) http.max_header = *i;
    if (auto n = t.get("max_connections"))
        if (auto i = v.integer(*n, "max_connections", 1, 100000)) http.max_connections = *i;
    if (auto n = t.get("idle_timeout"))
        if (auto d = v.duration(*n, "idle_timeout")) http.idle_timeout = *d;
    if (auto n = t.get("header_timeout"))
        if (auto d = v.duration(*n, "header_timeout")) http.header_timeout = *d;
    if (auto n = t.get("threads"))
        if (auto i = v.integer(*n, "threads", 1, 64)) http.threads = *i;
    if (auto n = t.get("read_token_file"))
        if (auto s = v.string(*n, "read_token_file")) http.read_token_file = v.path(*s);
    if (auto n = t.get("read_token_env"))
        if (auto s = v.string(*n, "read_token_env")) http.read_token_env = *s;
}

void parse_monitor(Validator& v, const toml::table& t, MonitorSection& m) {
    v.known_keys(t, "monitor",
                 {"events", "failure_rate", "failure_window", "failure_min_runs", "late_factor", "backlog_age",
                  "dead_letter_rate", "store_timeout", "interval", "window", "clear_after", "max_run_time",
                  "run_time_statistic", "unhealthy_at"});
    if (auto n = t.get("window"))
        if (auto d = v.duration(*n, "window")) m.window = *d;
    if (auto n = t.get("clear_after"))
        if (auto d = v.duration(*n, "clear_after")) m.clear_after = *d;
    if (auto n = t.get("max_run_time"))
        if (auto d = v.duration(*n, "max_run_time")) m.max_run_time = *d;
    if (auto n = t.get("run_time_statistic"))
        if (auto s = v.string(*n, "run_time_statistic")) {
            if (*s == "mean" || *s == "p95")
                m.run_time_statistic = *s;
            else
                v.error(n->source(), "'run_time_statistic' must be \"mean\" or \"p95\", got \"" + *s + "\"");
        }
    if (auto n = t.get("unhealthy_at"))
        if (auto i = v.integer(*n, "unhealthy_at", 1, 1000)) m.unhealthy_at = *i;
    if (auto n = t.get("events"))
        if (auto i = v.integer(*n, "events", 0, 10'000'000)) m.events = *i;
    if (auto n = t.get("failure_rate"))
        if (auto d = v.number(*n, "failure_rate", 0.0, 1.0)) m.failure_rate = *d;
    if (auto n = t.get("failure_window"))
        if (auto i = v.integer(*n, "failure_window", 1, 100000)) m.failure_window = *i;
    if (auto n = t.get("failure_min_runs"))
        if (auto i = v.integer(*n, "failure_min_runs", 1, 100000)) m.failure_min_runs = *i;
    if (auto n = t.get("late_factor"))
        if (auto d = v.number(*n, "late_factor", 1.0, 1000.0)) m.late_factor = *d;
    if (auto n = t.get("backlog_age"))
        if (auto d = v.duration(*n, "backlog_age")) m.backlog_age = *d;
    if (auto n = t.get("dead_letter_rate"))
        if (auto d = v.number(*n, "dead_letter_rate", 0.0, 1.0)) m.dead_letter_rate = *d;
    if (auto n = t.get("store_timeout"))
        if (auto d = v.duration(*n, "store_timeout")) m.store_timeout = *d;
    if (auto n = t.get("interval"))
        if (auto d = v.duration(*n, "interval")) {
            if (d->count() < 100)
                v.error(n->source(), "'interval' must be at least 100ms");
            else
                m.interval = *d;
        }
}

void parse_job(Validator& v, const std::string& type, const toml::table& t, JobSection& job) {
    const std::string where = "jobs." + type;
    v.known_keys(t, where,
                 {"name", "description", "version", "enabled", "interval", "cron", "priority", "max_retries", "backoff",
                  "timeout", "concurrency", "batch_size", "dead_letter", "jitter", "run_on_start", "settings",
                  "isolation", "memory_limit", "max_run_time"});
    auto& o = job.overrides;
    for (const auto& [key, node] : t) job.key_lines[std::string(key.str())] = static_cast<int>(key.source().begin.line);
    if (auto n = t.get("name")) o.name = v.string(*n, "name");
    if (auto n = t.get("description")) o.description = v.string(*n, "description");
    if (auto n = t.get("version")) o.version = v.string(*n, "version");
    if (auto n = t.get("enabled")) o.enabled = v.boolean(*n, "enabled");
    if (auto n = t.get("dead_letter")) o.dead_letter = v.boolean(*n, "dead_letter");
    if (auto n = t.get("run_on_start")) o.run_on_start = v.boolean(*n, "run_on_start");
    if (auto n = t.get("interval")) {
        o.interval = v.duration(*n, "interval");
        if (o.interval && o.interval->count() == 0) {
            v.error(n->source(), "'interval' must be above zero; to stop a periodic type set enabled = false");
            o.interval.reset();
        }
    }
    if (auto n = t.get("timeout")) o.timeout = v.duration(*n, "timeout");
    if (auto n = t.get("jitter")) o.schedule_jitter = v.duration(*n, "jitter");
    if (auto n = t.get("cron")) {
        o.cron = v.string(*n, "cron");
        if (o.cron) {
            auto c = scheduler::CronExpression::parse(*o.cron);
            if (!c) {
                v.error(n->source(), "'cron' is invalid: " + c.error().message);
                o.cron.reset();
            }
        }
    }
    if (t.get("interval") && t.get("cron"))
        v.error(t.get("cron")->source(), "[" + where + "] sets both 'interval' and 'cron'; keep one of them");
    if (auto n = t.get("priority"))
        if (auto s = v.string(*n, "priority")) {
            o.priority = registry::parse_priority(*s);
            if (!o.priority)
                v.error(n->source(),
                        "'priority' must be one of low, normal, medium, high, critical; got \"" + *s + "\"");
        }
    if (auto n = t.get("max_retries")) o.max_retries = v.integer(*n, "max_retries", 0, 1000);
    if (auto n = t.get("concurrency")) o.concurrency = v.integer(*n, "concurrency", 1, 10000);
    if (auto n = t.get("batch_size")) o.batch_size = v.integer(*n, "batch_size", 1, 10000);
    if (auto n = t.get("isolation")) o.isolation = v.isolation(*n);
    if (auto n = t.get("memory_limit")) o.memory_limit = v.size(*n, "memory_limit");
    if (auto n = t.get("max_run_time")) o.max_run_time = v.duration(*n, "max_run_time");
    if (auto n = t.get("backoff")) {
        if (auto b = v.table(*n, where + ".backoff")) {
            for (const auto& [key, node] : *b)
                job.key_lines["backoff." + std::string(key.str())] = static_cast<int>(key.source().begin.line);
            v.known_keys(*b, where + ".backoff", {"initial", "multiplier", "max", "jitter"});
            if (auto m = b->get("initial")) o.backoff_initial = v.duration(*m, "initial");
            if (auto m = b->get("max")) o.backoff_max = v.duration(*m, "max");
            if (auto m = b->get("multiplier")) o.backoff_multiplier = v.number(*m, "multiplier", 1.0, 100.0);
            if (auto m = b->get("jitter")) o.backoff_jitter = v.number(*m, "jitter", 0.0, 1.0);
            if (o.backoff_initial && o.backoff_max && *o.backoff_max < *o.backoff_initial)
                v.error(b->get("max")->source(), "'max' must be at least 'initial' in [" + where + ".backoff]");
        }
    }
    if (auto n = t.get("settings"))
        if (auto s = v.table(*n, where + ".settings")) job.settings = to_json(*s).as_object();
}

} // namespace

LoadResult parse(std::string_view text, const std::string& source, const fs::path& base_dir) {
    LoadResult result;
    result.config.host.plugin_dir = (base_dir / "plugins").lexically_normal();
    result.config.store.path = (base_dir / "var" / "jobhost.db").lexically_normal();
    toml::table doc;
    try {
        doc = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        result.errors.push_back({source, static_cast<int>(e.source().begin.line),
                                 static_cast<int>(e.source().begin.column),
                                 "TOML syntax error: " + std::string(e.description())});
        return result;
    }
    Validator v(source, base_dir);
    v.known_keys(doc, "top level", {"host", "log", "store", "http", "monitor", "jobs"});
    auto& cfg = result.config;
    if (auto n = doc.get("host"))
        if (auto t = v.table(*n, "host")) parse_host(v, *t, cfg.host);
    if (auto n = doc.get("log"))
        if (auto t = v.table(*n, "log")) parse_log(v, *t, cfg.log);
    if (auto n = doc.get("store"))
        if (auto t = v.table(*n, "store")) parse_store(v, *t, cfg.store);
    if (auto n = doc.get("http"))
        if (auto t = v.table(*n, "http")) parse_http(v, *t, cfg.http);
    if (auto n = doc.get("monitor"))
        if (auto t = v.table(*n, "monitor")) parse_monitor(v, *t, cfg.monitor);
    if (auto n = doc.get("jobs"))
        if (auto jobs = v.table(*n, "jobs")) {
            for (const auto& [key, node] : *jobs) {
                std::string type(key.str());
                auto t = v.table(node, "jobs." + type);
                if (!t) continue;
                JobSection job;
                job.type = type;
                job.line = static_cast<int>(key.source().begin.line);
                job.column = static_cast<int>(key.source().begin.column);
                if (auto err = registry::validate_type_name(type); !err.empty()) v.error(key.source(), err);
                parse_job(v, type, *t, job);
                cfg.jobs.emplace(type, std::move(job));
            }
        }
    result.errors = v.take();
    std::stable_sort(result.errors.begin(), result.errors.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    return result;
}

LoadResult load_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        LoadResult r;
        r.errors.push_back({file.string(), 0, 0,
                            "cannot read the config file (" + std::string(std::strerror(errno)) +
                                "); pass an existing file with --config"});
        return r;
    }
    std::stringstream buf;
    buf << in.rdbuf();
    fs::path base = fs::absolute(file).parent_path();
    auto r = parse(buf.str(), file.string(), base);
    r.config.file = file;
    return r;
}

std::vector<Diagnostic> check_job_types(const Config& config, const std::set<std::string>& known_types,
                                        const std::vector<RefusedPlugin>& refused) {
    std::vector<Diagnostic> out;
    std::vector<std::string> known(known_types.begin(), known_types.end());
    std::vector<std::string> refused_files;
    for (const auto& r : refused)
        if (r.type.empty()) refused_files.push_back(r.reason);
    for (const auto& [type, job] : config.jobs) {
        if (known_types.count(type)) continue;
        auto own = std::find_if(refused.begin(), refused.end(), [&t = type](const auto& r) { return r.type == t; });
        std::string msg;
        if (own != refused.end()) {
            msg = "[jobs." + type + "] configures a job type whose plugin was refused: " + own->reason;
        } else {
            msg = "[jobs." + type + "] configures a job type that no loaded plugin provides";
            if (auto n = nearest(type, known)) {
                msg += "; did you mean '" + *n + "'?";
            } else if (!refused_files.empty()) {
                msg += "; " + std::to_string(refused_files.size()) +
                       " plugin file(s) were refused and one of them may provide it: ";
                for (std::size_t i = 0; i < refused_files.size() && i < 5; ++i)
                    msg += (i ? "; " : "") + refused_files[i];
                if (refused_files.size() > 5) msg += "; and " + std::to_string(refused_files.size() - 5) + " more";
            } else {
                msg += "; run 'jobhost plugins' to list the types that were found";
            }
        }
        out.push_back({config.file.string(), job.line, job.column, msg});
    }
    return out;
}

} // namespace jobhost::config
