#include "registry/job_settings.hpp"

#include "scheduler/cron.hpp"

#include <jobhost/abi.h>

#include <array>
#include <charconv>

namespace jobhost::registry {

namespace {
constexpr std::array<std::string_view, 5> kPriorityNames{"low", "normal", "medium", "high", "critical"};
}

std::optional<Priority> parse_priority(std::string_view name) {
    for (std::size_t i = 0; i < kPriorityNames.size(); ++i)
        if (kPriorityNames[i] == name) return static_cast<Priority>(i);
    return std::nullopt;
}

std::string_view priority_name(Priority p) {
    auto i = static_cast<std::size_t>(p);
    return i < kPriorityNames.size() ? kPriorityNames[i] : std::string_view("invalid");
}

std::string Provenance::of(std::string_view field) const {
    for (auto it = fields.rbegin(); it != fields.rend(); ++it)
        if (it->first == field) return it->second;
    return "plugin";
}

JobSettings settings_from_descriptor(const jh_job_descriptor& d) {
    JobSettings s;
    s.name = d.name ? d.name : (d.type ? d.type : "");
    s.description = d.description ? d.description : "";
    s.version = d.version ? d.version : "";
    s.enabled = d.enabled != 0;
    s.interval = Duration(d.interval_ms);
    s.cron = d.cron ? d.cron : "";
    s.priority = static_cast<Priority>(d.priority);
    s.max_retries = d.max_retries;
    s.dead_letter = d.dead_letter != 0;
    s.backoff.initial = Duration(d.backoff_initial_ms);
    s.backoff.multiplier = d.backoff_multiplier;
    s.backoff.max = Duration(d.backoff_max_ms);
    s.backoff.jitter = d.backoff_jitter;
    s.timeout = Duration(d.timeout_ms);
    s.concurrency = d.concurrency;
    s.batch_size = d.batch_size;
    return s;
}

void apply_override(JobSettings& s, const JobOverride& o, const std::string& where_table, Provenance& provenance,
                    const std::map<std::string, std::string>* key_where) {
    auto where_of = [&](const std::string& key) {
        if (key_where)
            if (auto it = key_where->find(key); it != key_where->end()) return it->second;
        return where_table;
    };
    auto set = [&](auto& field, const auto& value, const char* name) {
        if (value) {
            field = *value;
            provenance.fields.emplace_back(name, where_of(name));
        }
    };
    set(s.name, o.name, "name");
    set(s.description, o.description, "description");
    set(s.version, o.version, "version");
    set(s.enabled, o.enabled, "enabled");
    set(s.priority, o.priority, "priority");
    set(s.max_retries, o.max_retries, "max_retries");
    set(s.backoff.initial, o.backoff_initial, "backoff.initial");
    set(s.backoff.multiplier, o.backoff_multiplier, "backoff.multiplier");
    set(s.backoff.max, o.backoff_max, "backoff.max");
    set(s.backoff.jitter, o.backoff_jitter, "backoff.jitter");
    set(s.timeout, o.timeout, "timeout");
    set(s.concurrency, o.concurrency, "concurrency");
    set(s.batch_size, o.batch_size, "batch_size");
    set(s.dead_letter, o.dead_letter, "dead_letter");
    set(s.schedule_jitter, o.schedule_jitter, "jitter");
    set(s.run_on_start, o.run_on_start, "run_on_start");
    set(s.isolation, o.isolation, "isolation");
    set(s.memory_limit, o.memory_limit, "memory_limit");
    if (o.max_run_time) {
        s.max_run_time = *o.max_run_time;
        provenance.fields.emplace_back("max_run_time", where_of("max_run_time"));
    }
    if (o.interval && !o.cron && s.interval != *o.interval) {
        s.cron.clear();
        provenance.fields.emplace_back("cron", where_of("interval")); // the interval's line cleared it
    }
    if (o.cron && !o.interval && !o.cron->empty()) {
        s.interval = Duration(0);
        provenance.fields.emplace_back("interval", where_of("cron"));
    }
    set(s.interval, o.interval, "interval");
    set(s.cron, o.cron, "cron");
}

std::vector<std::string> validate_settings(const JobSettings& s) {
    std::vector<std::string> errors;
    if (s.concurrency < 1) errors.push_back("concurrency must be at least 1, got " + std::to_string(s.concurrency));
    if (s.batch_size < 1) errors.push_back("batch_size must be at least 1, got " + std::to_string(s.batch_size));
    if (s.interval.count() < 0)
        errors.push_back("interval must not be negative, got " + std::to_string(s.interval.count()) + "ms");
    if (s.timeout.count() < 0)
        errors.push_back("timeout must not be negative, got " + std::to_string(s.timeout.count()) + "ms");
    if (s.max_retries < 0) errors.push_back("max_retries must not be negative, got " + std::to_string(s.max_retries));
    if (s.interval.count() > 0 && !s.cron.empty())
        errors.push_back("both interval and cron are set; a type has one schedule, so set only one of them");
    if (!s.cron.empty()) {
        auto c = scheduler::CronExpression::parse(s.cron);
        if (!c) errors.push_back("cron: " + c.error().message);
    }
    auto p = static_cast<int>(s.priority);
    if (p < 0 || p > 4) errors.push_back("priority must be 0..4 (low..critical), got " + std::to_string(p));
    if (s.backoff.initial.count() < 0) errors.push_back("backoff.initial must not be negative");
    if (s.backoff.max.count() < s.backoff.initial.count())
        errors.push_back("backoff.max must be at least backoff.initial");
    if (!(s.backoff.multiplier >= 1.0)) errors.push_back("backoff.multiplier must be at least 1");
    if (!(s.backoff.jitter >= 0.0 && s.backoff.jitter <= 1.0)) errors.push_back("backoff.jitter must be within 0..1");
    if (s.schedule_jitter.count() < 0) errors.push_back("jitter must not be negative");
    if (s.memory_limit > 0 && s.isolation != runner::Isolation::process)
        errors.push_back("memory_limit needs isolation = \"process\": a thread in the host cannot be limited alone");
    return errors;
}

std::string validate_type_name(std::string_view type) {
    if (type.empty()) return "the job type is empty; JOBHOST_JOB needs .type = \"...\"";
    if (type.size() > 128) return "the job type is longer than 128 characters";
    for (char c : type) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok)
            return "the job type '" + std::string(type) + "' has the character '" + std::string(1, c) +
                   "'; use only a-z, 0-9, '_', '.' and '-'";
    }
    return {};
}

std::vector<std::pair<std::string, std::string>> describe(const JobSettings& s) {
    auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    auto d = [](core::Duration v) { return core::format_duration(v); };
    auto num = [](double v) { // the shortest text that reads back as the same double
        char buf[32];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        return std::string(buf, r.ptr);
    };
    return {{"name", s.name},
            {"description", s.description},
            {"version", s.version},
            {"enabled", b(s.enabled)},
            {"interval", s.interval.count() ? d(s.interval) : ""},
            {"cron", s.cron},
            {"priority", std::string(priority_name(s.priority))},
            {"max_retries", std::to_string(s.max_retries)},
            {"backoff.initial", d(s.backoff.initial)},
            {"backoff.multiplier", num(s.backoff.multiplier)},
            {"backoff.max", d(s.backoff.max)},
            {"backoff.jitter", num(s.backoff.jitter)},
            {"timeout", s.timeout.count() ? d(s.timeout) : "none"},
            {"concurrency", std::to_string(s.concurrency)},
            {"batch_size", std::to_string(s.batch_size)},
            {"dead_letter", b(s.dead_letter)},
            {"jitter", d(s.schedule_jitter)},
            {"run_on_start", b(s.run_on_start)},
            {"isolation", std::string(runner::isolation_name(s.isolation))},
            {"memory_limit", !s.memory_limit ? ""
                             : s.memory_limit % (std::uint64_t{1} << 20)
                                 ? std::to_string(s.memory_limit) + "B"
                                 : std::to_string(s.memory_limit >> 20) + "MiB"}};
}

} // namespace jobhost::registry
