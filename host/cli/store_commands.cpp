#include "cli/store_commands.hpp"

#include "app/host.hpp"

#include "executor/executor.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"
#include "store/job_json.hpp"
#include "store/sqlite_store.hpp"

#include <boost/json.hpp>

#include <ctime>
#include <fstream>
#include <iterator>
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace jobhost::cli {

namespace {

using store::Clock;
using store::iso;
using store::TimePoint;
using store::to_json;

// "2026-11-29T10:00:00Z" (UTC) or whole seconds since the epoch.
std::optional<TimePoint> parse_time(const std::string& text) {
    if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 13)
        return TimePoint(std::chrono::seconds(std::stoll(text)));
    std::tm tm{};
    const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || (*end != 'Z' && *end != '\0') || (*end == 'Z' && end[1] != '\0')) return std::nullopt;
    // a day the month does not have (timegm would move 30 February to 2 March), or a leap second
    std::chrono::year_month_day day{std::chrono::year(tm.tm_year + 1900),
                                    std::chrono::month(static_cast<unsigned>(tm.tm_mon + 1)),
                                    std::chrono::day(static_cast<unsigned>(tm.tm_mday))};
    if (!day.ok() || tm.tm_sec > 59) return std::nullopt;
    return Clock::from_time_t(timegm(&tm));
}

// Opens the configured SQLite store for a command; prints why it cannot and returns null.
// `create`: a missing store is created (enqueue fills a queue before its first host starts); the other commands
// never create one.
std::unique_ptr<store::JobStore> open_for_cli(const CommonOptions& common, config::Config& config, int& code,
                                              bool create = false) {
    code = load_config(common, config);
    if (code >= 0) return nullptr;
    if (config.store.kind == config::StoreSection::Kind::memory) {
        std::cerr << "jobhost: the configured store is in memory, inside the running host; commands on the store "
                     "need [store] kind = \"sqlite\" or \"postgres\"\n";
        code = kExitUsage;
        return nullptr;
    }
    auto s = app::open_store(config, false, create);
    if (!s) {
        std::cerr << "jobhost: " << s.error().message << "\n";
        code = kExitRuntime;
        return nullptr;
    }
    code = -1;
    return std::move(*s);
}

void print_table(const std::vector<store::JobRecord>& jobs) {
    // the type column as wide as the longest name (a column never runs into the next)
    int type_width = 6;
    for (const auto& j : jobs) type_width = std::max(type_width, static_cast<int>(j.type.size()) + 2);
    std::cout << std::left << std::setw(10) << "ID" << std::setw(type_width) << "TYPE" << std::setw(10) << "STATE"
              << std::setw(9) << "PRIORITY" << std::setw(9) << "ATTEMPT" << std::setw(22) << "RUN AT"
              << "LAST ERROR\n";
    for (const auto& j : jobs) {
        std::string last = j.errors.empty() ? "" : j.errors.back().message;
        if (auto nl = last.find('\n'); nl != std::string::npos) last = last.substr(0, nl) + " ...";
        if (last.size() > 60) last = last.substr(0, 57) + "...";
        std::cout << std::left << std::setw(10) << j.id << std::setw(type_width) << j.type << std::setw(10)
                  << store::state_name(j.state) << std::setw(9) << registry::priority_name(j.priority) << std::setw(9)
                  << (std::to_string(j.attempt) + "/" + std::to_string(j.max_attempts)) << std::setw(22)
                  << iso(j.run_at) << last << "\n";
    }
}

void print_job(const store::JobRecord& j) {
    std::cout << "job " << j.id << "\n";
    std::cout << "  type         " << j.type << "\n";
    std::cout << "  state        " << store::state_name(j.state) << "\n";
    if (j.dead_reason != store::DeadReason::none)
        std::cout << "  stopped      " << store::dead_reason_name(j.dead_reason) << "\n";
    std::cout << "  priority     " << registry::priority_name(j.priority) << "\n";
    std::cout << "  attempt      " << j.attempt << " of " << j.max_attempts;
    if (j.attempts_before) std::cout << " (" << j.attempts_before << " before its retry from the dead-letter queue)";
    std::cout << "\n";
    if (!j.unique_key.empty()) std::cout << "  unique key   " << j.unique_key << "\n";
    std::cout << "  created      " << iso(j.created_at) << "\n";
    std::cout << "  run at       " << iso(j.run_at) << "\n";
    std::cout << "  started      " << iso(j.started_at) << "\n";
    std::cout << "  finished     " << iso(j.finished_at) << "\n";
    if (!j.lease_owner.empty()) std::cout << "  held by      " << j.lease_owner << "\n";
    std::cout << "  payload      " << j.payload << "\n";
    if (j.progress)
        std::cout << "  progress     " << j.progress->percent << "%" << (j.progress->message.empty() ? "" : " ")
                  << j.progress->message << " (at " << iso(j.progress->at) << ")\n";
    if (j.result) {
        std::cout << "  result       " << (j.result->message.empty() ? "(no message)" : j.result->message) << "\n";
        if (!j.result->output.empty()) std::cout << "  output       " << j.result->output << "\n";
        if (!j.result->note.empty()) std::cout << "  note         " << j.result->note << "\n";
    }
    std::cout << "  errors       " << j.errors.size() << "\n";
    for (const auto& e : j.errors)
        std::cout << "    attempt " << e.attempt << " at " << iso(e.at) << ": " << e.message << "\n";
}

// The ids to act on: the given ones (each must exist as a dead letter) or, with --all, every dead letter of --type.
std::optional<std::vector<store::JobId>> dead_ids(store::JobStore& s, const DlqOptions& o,
                                                  const std::string& store_path) {
    std::vector<store::JobId> ids;
    if (o.all == !o.ids.empty()) {
        std::cerr << "jobhost: give job ids or --all, not both and not neither\n";
        return std::nullopt;
    }
    if (o.all) {
        for (const auto& j : s.dead_letters({o.type, std::numeric_limits<std::size_t>::max()})) ids.push_back(j.id);
        return ids;
    }
    for (const auto& text : o.ids) {
        auto id = store::parse_job_id(text);
        if (!id) {
            std::cerr << "jobhost: '" << text << "' is not a job id (a positive whole number)\n";
            return std::nullopt;
        }
        auto j = s.get(*id);
        if (!j) {
            std::cerr << "jobhost: no job " << *id << " in " << store_path << "\n";
            return std::nullopt;
        }
        if (j->state != store::JobState::dead) {
            std::cerr << "jobhost: job " << *id << " is " << store::state_name(j->state)
                      << ", not in the dead-letter queue\n";
            return std::nullopt;
        }
        ids.push_back(*id);
    }
    return ids;
}

} // namespace

int enqueue_command(const CommonOptions& common, const EnqueueOptions& o) {
    config::Config config;
    if (int code = load_config(common, config); code >= 0) return code;
    // The type must exist and be enabled: read the plugins' descriptors (no task is created, nothing runs).
    auto discovery = loader::discover({config.host.plugin_dir, config.host.allow_insecure_plugins});
    const loader::DiscoveredType* type = nullptr;
    for (const auto& t : discovery.types)
        if (t.type == o.type) type = &t;
    if (!type) {
        std::cerr << "jobhost: unknown job type '" << o.type << "' in " << config.host.plugin_dir.string()
                  << "; nothing was queued (see 'jobhost plugins')\n";
        return kExitUsage;
    }
    registry::Provenance provenance;
    auto settings = registry::effective_settings(*type, config, provenance);
    if (!settings.enabled) {
        std::cerr << "jobhost: job type '" << o.type << "' is disabled (enabled = false); nothing was queued\n";
        return kExitUsage;
    }
    std::string payload = "null";
    if (o.payload && o.payload_file) {
        std::cerr << "jobhost: give --payload or --payload-file, not both\n";
        return kExitUsage;
    }
    if (o.payload) payload = *o.payload;
    if (o.payload_file) {
        std::ifstream in(*o.payload_file, std::ios::binary);
        if (!in) {
            std::cerr << "jobhost: cannot read --payload-file " << *o.payload_file << "\n";
            return kExitUsage;
        }
        std::stringstream buf;
        buf << in.rdbuf();
        payload = buf.str();
    }
    if (auto why = executor::payload_error(payload)) {
        std::cerr << "jobhost: the payload is not valid JSON (" << *why << "); nothing was queued\n";
        return kExitUsage;
    }
    store::NewJob n;
    n.type = o.type;
    n.payload = payload;
    n.priority = settings.priority;
    if (o.priority) {
        auto p = registry::parse_priority(*o.priority);
        if (!p) {
            std::cerr << "jobhost: --priority must be low, normal, medium, high or critical\n";
            return kExitUsage;
        }
        n.priority = *p;
    }
    if (o.delay && o.at) {
        std::cerr << "jobhost: give --delay or --at, not both\n";
        return kExitUsage;
    }
    if (o.delay) {
        auto d = core::parse_duration(*o.delay);
        if (!d) {
            std::cerr << "jobhost: --delay '" << *o.delay << "' " << *core::duration_error(*o.delay)
                      << "; nothing was queued\n";
            return kExitUsage;
        }
        n.run_at = Clock::now() + *d;
    }
    if (o.at) {
        auto t = parse_time(*o.at);
        if (!t) {
            std::cerr << "jobhost: --at '" << *o.at
                      << "' is not a time such as 2026-11-29T10:00:00Z (UTC) or unix seconds\n";
            return kExitUsage;
        }
        n.run_at = *t;
    }
    n.unique_key = o.unique_key;
    n.max_attempts = static_cast<std::uint32_t>(1 + settings.max_retries);
    if (o.jsonl) {
        if (o.payload || o.payload_file || !o.unique_key.empty()) {
            std::cerr << "jobhost: --jsonl gives every payload; it goes with neither --payload, --payload-file nor "
                         "--unique\n";
            return kExitUsage;
        }
        std::ifstream in(*o.jsonl, std::ios::binary);
        std::string text;
        if (in) text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        if (!in && !in.eof()) {
            std::cerr << "jobhost: cannot read --jsonl " << *o.jsonl << "\n";
            return kExitUsage;
        }
        auto lines = executor::payload_lines(text);
        if (lines.bad_line != 0) {
            std::cerr << *o.jsonl << ":" << lines.bad_line << ": the payload is not valid JSON (" << lines.why
                      << "); nothing was queued\n";
            return kExitUsage;
        }
        std::vector<store::NewJob> jobs(lines.payloads.size(), n);
        for (std::size_t i = 0; i < jobs.size(); ++i) jobs[i].payload = lines.payloads[i];
        int code;
        auto s = open_for_cli(common, config, code, true);
        if (!s) return code;
        for (std::size_t i = 0; i < jobs.size(); i += 1000) {
            auto chunk = std::span<const store::NewJob>(jobs).subspan(i, std::min<std::size_t>(1000, jobs.size() - i));
            s->enqueue(chunk);
        }
        std::cout << "queued " << jobs.size() << " job(s)\n";
        return kExitOk;
    }
    int code;
    auto s = open_for_cli(common, config, code, true);
    if (!s) return code;
    auto out = s->enqueue(std::span<const store::NewJob>(&n, 1)).front();
    if (!out.created) {
        std::cerr << "jobhost: a job of type '" << o.type << "' with unique key '" << o.unique_key
                  << "' is already pending or running: job " << out.id << "; nothing was queued\n";
        return kExitUsage;
    }
    std::cout << out.id << "\n";
    return kExitOk;
}

namespace {

void print_list(const CommonOptions& common, const std::vector<store::JobRecord>& jobs, const std::string& footer) {
    if (common.json) {
        boost::json::array a;
        for (const auto& j : jobs) a.push_back(to_json(j));
        std::cout << boost::json::serialize(a) << "\n";
        return;
    }
    print_table(jobs);
    if (!footer.empty()) std::cout << footer << "\n";
}

// jobhost job ID and jobhost dlq show ID: one job, or one dead letter.
int show_one(const CommonOptions& common, const std::string& text, bool dead_only) {
    auto id = store::parse_job_id(text);
    if (!id) {
        std::cerr << "jobhost: '" << text << "' is not a job id (a positive whole number)\n";
        return kExitUsage;
    }
    config::Config config;
    int code;
    auto s = open_for_cli(common, config, code);
    if (!s) return code;
    auto j = s->get(*id);
    if (!j || (dead_only && j->state != store::JobState::dead)) {
        std::cerr << "jobhost: no " << (dead_only ? "dead letter " : "job ") << *id << " in "
                  << config.store.path.string()
                  << (dead_only ? "" : " (finished jobs are kept only with [store] retain_done)") << "\n";
        return kExitUsage;
    }
    if (common.json)
        std::cout << boost::json::serialize(to_json(*j)) << "\n";
    else
        print_job(*j);
    return kExitOk;
}

} // namespace

int jobs_command(const CommonOptions& common, const ListOptions& o) {
    store::ListFilter f;
    f.type = o.type;
    f.limit = o.limit;
    if (o.state) {
        f.state = store::parse_state(*o.state);
        if (!f.state) {
            std::cerr << "jobhost: --state must be scheduled, ready, reserved, running, done or dead\n";
            return kExitUsage;
        }
    }
    config::Config config;
    int code;
    auto s = open_for_cli(common, config, code);
    if (!s) return code;
    print_list(common, s->list(f), {});
    return kExitOk;
}

int job_command(const CommonOptions& common, const std::string& text) {
    return show_one(common, text, false);
}

int dlq_list_command(const CommonOptions& common, const DlqOptions& o) {
    config::Config config;
    int code;
    auto s = open_for_cli(common, config, code);
    if (!s) return code;
    auto jobs = s->dead_letters({o.type, std::numeric_limits<std::size_t>::max()});
    print_list(common, jobs, std::to_string(jobs.size()) + " dead letter(s)");
    return kExitOk;
}

int dlq_show_command(const CommonOptions& common, const std::string& text) {
    return show_one(common, text, true);
}

int dlq_retry_command(const CommonOptions& common, const DlqOptions& o) {
    if (o.older_than) {
        std::cerr << "jobhost: --older-than goes with 'dlq purge'\n";
        return kExitUsage;
    }
    config::Config config;
    int code;
    auto s = open_for_cli(common, config, code);
    if (!s) return code;
    auto ids = dead_ids(*s, o, config.store.path.string());
    if (!ids) return kExitUsage;
    auto n = s->replay(*ids, Clock::now());
    std::cout << "retried " << n << " dead letter(s)";
    if (n < ids->size()) std::cout << "; " << ids->size() - n << " kept: another job holds their unique key";
    std::cout << "\n";
    return kExitOk;
}

int dlq_purge_command(const CommonOptions& common, const DlqOptions& o) {
    std::optional<TimePoint> older;
    if (o.older_than) {
        auto d = core::parse_duration(*o.older_than);
        if (!d) {
            std::cerr << "jobhost: --older-than '" << *o.older_than << "' is not a duration such as 7d or 12h\n";
            return kExitUsage;
        }
        older = Clock::now() - *d;
    }
    config::Config config;
    int code;
    auto s = open_for_cli(common, config, code);
    if (!s) return code;
    std::size_t n = 0;
    if (o.all && o.ids.empty()) {
        n = s->purge_dead(o.type, older);
    } else {
        if (older) {
            std::cerr << "jobhost: --older-than goes with --all\n";
            return kExitUsage;
        }
        auto ids = dead_ids(*s, o, config.store.path.string());
        if (!ids) return kExitUsage;
        n = s->purge(*ids);
    }
    std::cout << "purged " << n << " dead letter(s)\n";
    return kExitOk;
}

} // namespace jobhost::cli
