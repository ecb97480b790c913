#include "cli/commands.hpp"

#include "config/config.hpp"
#include "executor/executor.hpp"
#include "http/server.hpp"
#include "monitor/monitor.hpp"
#include "scheduler/scheduler.hpp"
#include "store/memory_store.hpp"
#include "store/sqlite_store.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include <csignal>
#include <functional>
#include <unistd.h>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace jobhost::cli {

namespace fs = std::filesystem;

namespace {} // namespace

core::Expected<std::unique_ptr<store::JobStore>> open_store(const config::Config& config, bool host, bool create) {
    if (config.store.kind == config::StoreSection::Kind::memory)
        return std::unique_ptr<store::JobStore>(std::make_unique<store::MemoryStore>());
    store::SqliteOptions so;
    so.path = config.store.path;
    so.full_sync = config.store.full_sync;
    so.create = host || create;
    so.host = host;
    so.retain_done = static_cast<std::size_t>(config.store.retain_done);
    so.retain_done_for = config.store.retain_done_for;
    so.retain_dead = static_cast<std::size_t>(config.store.retain_dead);
    auto s = store::SqliteStore::open(so);
    if (!s) return s.error();
    return std::unique_ptr<store::JobStore>(std::move(*s));
}

int load_config(const CommonOptions& o, config::Config& config) {
    log::configure({o.log_level.value_or(log::Level::info), log::Format::text, std::nullopt});
    if (o.config) {
        auto r = config::load_file(*o.config);
        if (!r.ok()) {
            for (const auto& d : r.errors) std::cerr << d.to_string() << "\n";
            std::cerr << "jobhost: " << r.errors.size() << " error(s) in the configuration; nothing was started\n";
            return kExitUsage;
        }
        config = std::move(r.config);
    } else {
        config.host.plugin_dir = fs::absolute("plugins");
        config.store.path = fs::absolute(fs::path("var") / "jobhost.db");
    }
    if (o.plugin_dir) config.host.plugin_dir = fs::absolute(*o.plugin_dir);
    if (o.store) {
        if (*o.store == "memory")
            config.store.kind = config::StoreSection::Kind::memory;
        else {
            config.store.kind = config::StoreSection::Kind::sqlite;
            config.store.path = fs::absolute(*o.store);
        }
    }
    if (o.strict) config.host.strict = true;
    if (o.listen) {
        if (*o.listen == "off")
            config.http.enabled = false;
        else {
            config.http.enabled = true;
            config.http.listen = *o.listen;
        }
    }
    return -1;
}

std::string host_id() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    return std::string(name) + ":" + std::to_string(::getpid());
}

namespace {

// Everything start-up produces, kept together so that the registry (and so every plugin library) outlives the
// commands that use it.
struct Startup {
    config::Config config;
    loader::Discovery discovery;
    registry::Registry registry;
    std::vector<loader::Problem> problems; // discovery and task-creation problems
};

// Loads config, logging, plugins and registry. Returns an exit code when start-up must stop, or -1 to go on.
int start(const CommonOptions& o, Startup& s) {
    if (int code = load_config(o, s.config); code >= 0) return code;

    log::Options lo{o.log_level.value_or(s.config.log.level), s.config.log.format, s.config.log.file};
    std::string log_error;
    if (!log::configure(lo, &log_error)) {
        std::cerr << s.config.file.string() << ": [log] file: " << log_error << "\n";
        return kExitUsage;
    }
    JH_LOG(info, "host") << "jobhost " << JOBHOST_VERSION << " (plugin ABI "
                         << loader::abi_version_string(JOBHOST_ABI_VERSION) << "), config "
                         << (s.config.file.empty() ? std::string("(defaults)") : s.config.file.string());

    s.discovery = loader::discover({s.config.host.plugin_dir, s.config.host.allow_insecure_plugins});
    s.problems = s.discovery.problems;

    std::set<std::string> known;
    for (const auto& t : s.discovery.types) known.insert(t.type);
    auto type_errors = config::check_job_types(s.config, known);
    if (!type_errors.empty()) {
        for (const auto& d : type_errors) std::cerr << d.to_string() << "\n";
        std::cerr << "jobhost: the configuration names job types that were not found in "
                  << s.config.host.plugin_dir.string() << "; nothing was started\n";
        return kExitUsage;
    }
    auto built = s.registry.build(s.discovery, s.config);
    s.problems.insert(s.problems.end(), built.problems.begin(), built.problems.end());

    for (const auto& p : s.problems) JH_LOG(warning, "loader") << "skipped " << p.to_string();
    std::size_t usable = 0;
    for (const auto& [name, t] : s.registry.types()) usable += t.usable() ? 1 : 0;
    JH_LOG(info, "loader") << "found " << s.discovery.types.size() << " job type(s) (" << usable << " usable) in "
                           << s.discovery.libraries_loaded << " librar"
                           << (s.discovery.libraries_loaded == 1 ? "y" : "ies") << " under "
                           << s.config.host.plugin_dir.string() << ", skipped " << s.problems.size();
    if (s.config.host.strict && !s.problems.empty()) {
        std::cerr << "jobhost: --strict: " << s.problems.size()
                  << " plugin problem(s), see above; nothing was started\n";
        return kExitUsage;
    }
    return -1;
}

// Each setting as text, in a fixed order, for display.
std::vector<std::pair<std::string, std::string>> describe(const registry::JobSettings& s) {
    auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    auto d = [](core::Duration v) { return core::format_duration(v); };
    auto num = [](double v) {
        std::ostringstream o;
        o << v;
        return o.str();
    };
    return {{"name", s.name},
            {"description", s.description},
            {"version", s.version},
            {"enabled", b(s.enabled)},
            {"interval", s.interval.count() ? d(s.interval) : ""},
            {"cron", s.cron},
            {"priority", std::string(registry::priority_name(s.priority))},
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
            {"run_on_start", b(s.run_on_start)}};
}

} // namespace

int plugins_command(const CommonOptions& o) {
    Startup s;
    if (int code = start(o, s); code >= 0) return code;
    if (o.json) {
        boost::json::object root;
        root["plugin_dir"] = s.config.host.plugin_dir.string();
        boost::json::array types;
        for (const auto& [name, t] : s.registry.types()) {
            boost::json::object jt;
            jt["type"] = name;
            jt["file"] = t.file.string();
            jt["abi_version"] = loader::abi_version_string(t.abi_version);
            jt["usable"] = t.usable();
            if (!t.usable()) jt["error"] = t.error;
            boost::json::object settings;
            auto eff = describe(t.effective);
            auto dec = describe(t.declared);
            for (std::size_t i = 0; i < eff.size(); ++i) {
                settings[eff[i].first] = {
                    {"value", eff[i].second}, {"declared", dec[i].second}, {"source", t.provenance.of(eff[i].first)}};
            }
            jt["settings"] = std::move(settings);
            jt["task_settings"] = t.settings;
            types.push_back(std::move(jt));
        }
        root["types"] = std::move(types);
        boost::json::array skipped;
        for (const auto& p : s.problems)
            skipped.push_back({{"file", p.file.string()}, {"type", p.type}, {"reason", p.message}});
        root["skipped"] = std::move(skipped);
        std::cout << boost::json::serialize(root) << "\n";
        return kExitOk;
    }
    std::cout << "plugin folder: " << s.config.host.plugin_dir.string() << "\n";
    std::cout << s.registry.types().size() << " job type(s)\n";
    for (const auto& [name, t] : s.registry.types()) {
        std::cout << "\n" << name << (t.usable() ? "" : "  [UNUSABLE: " + t.error + "]") << "\n";
        std::cout << "  file         " << t.file.string() << "\n";
        std::cout << "  abi          " << loader::abi_version_string(t.abi_version) << "\n";
        auto eff = describe(t.effective);
        auto dec = describe(t.declared);
        for (std::size_t i = 0; i < eff.size(); ++i) {
            if (eff[i].second.empty() && dec[i].second.empty()) continue;
            std::string source = t.provenance.of(eff[i].first);
            std::cout << "  " << std::left << std::setw(19) << eff[i].first << std::setw(15) << eff[i].second << " ";
            if (source == "plugin")
                std::cout << "(plugin)";
            else
                std::cout << "(" << source << "; plugin: " << (dec[i].second.empty() ? "unset" : dec[i].second) << ")";
            std::cout << "\n";
        }
        if (!t.settings.empty()) std::cout << "  settings           " << boost::json::serialize(t.settings) << "\n";
    }
    if (!s.problems.empty()) {
        std::cout << "\n" << s.problems.size() << " skipped\n";
        for (const auto& p : s.problems) std::cout << "  " << p.to_string() << "\n";
    }
    return kExitOk;
}

int check_command(const CommonOptions& o) {
    Startup s;
    if (int code = start(o, s); code >= 0) return code;
    if (!s.problems.empty()) {
        for (const auto& p : s.problems) std::cerr << p.to_string() << "\n";
        std::cerr << "jobhost check: " << s.problems.size() << " plugin problem(s)\n";
        return kExitUsage;
    }
    if (s.registry.types().empty()) {
        std::cerr << "jobhost check: no job types found in " << s.config.host.plugin_dir.string() << "\n";
        return kExitUsage;
    }
    std::cout << "ok: " << s.registry.types().size() << " job type(s), configuration valid\n";
    return kExitOk;
}

namespace {

// "TYPE" or "TYPE=JSON" from --enqueue.
executor::EnqueueRequest parse_enqueue_arg(const std::string& arg) {
    executor::EnqueueRequest r;
    auto eq = arg.find('=');
    r.type = arg.substr(0, eq);
    if (eq != std::string::npos) r.payload = arg.substr(eq + 1);
    return r;
}

std::string summary(const std::string& type, const executor::TypeMetrics& m) {
    return type + ": enqueued " + std::to_string(m.enqueued) + ", started " + std::to_string(m.started) +
           ", succeeded " + std::to_string(m.succeeded) + ", failed " + std::to_string(m.failed) + ", timed out " +
           std::to_string(m.timed_out) + ", retried " + std::to_string(m.retried) + ", dead-lettered " +
           std::to_string(m.dead_lettered) + ", dropped " + std::to_string(m.dropped) + ", coalesced " +
           std::to_string(m.coalesced) + ", stuck " + std::to_string(m.stuck) + ", released " +
           std::to_string(m.released) + ", max running " + std::to_string(m.max_running);
}

// After the first SIGINT/SIGTERM the io_context stops, and a second signal must end the process at once.
void exit_now(int) {
    static const char msg[] = "jobhost: second signal, exiting at once\n";
    [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
    std::_Exit(kExitRuntime);
}

} // namespace

int run_command(const CommonOptions& o) {
    Startup s;
    if (int code = start(o, s); code >= 0) return code;

    auto store_or = open_store(s.config, true);
    if (!store_or) {
        std::cerr << "jobhost: " << store_or.error().message << "\n";
        return kExitRuntime;
    }
    store::JobStore& store = **store_or;
    if (store.recovered_at_open() > 0)
        JH_LOG(warning, "store") << store.recovered_at_open()
                                 << " job(s) held by a host that is gone were given back (see above for each one "
                                    "that was running)";

    boost::asio::io_context io;
    executor::ExecutorOptions eo;
    eo.workers = static_cast<std::size_t>(s.config.host.workers);
    eo.stuck_grace = s.config.host.stuck_grace;
    eo.aging = s.config.host.aging;
    eo.owner = host_id();
    monitor::MonitorOptions mo;
    mo.events = static_cast<std::size_t>(s.config.monitor.events);
    mo.failure_rate = s.config.monitor.failure_rate;
    mo.failure_window = static_cast<std::size_t>(s.config.monitor.failure_window);
    mo.failure_min_runs = static_cast<std::size_t>(s.config.monitor.failure_min_runs);
    mo.late_factor = s.config.monitor.late_factor;
    mo.backlog_age = s.config.monitor.backlog_age;
    mo.dead_letter_rate = s.config.monitor.dead_letter_rate;
    mo.store_timeout = s.config.monitor.store_timeout;
    monitor::Monitor mon(mo);
    eo.observer = &mon;
    auto ex = std::make_unique<executor::Executor>(io, s.registry, store, eo);
    ex->poke(); // jobs the store kept from before

    std::atomic<bool> stopping{false};
    http::Services services{s.config,          s.registry, *ex,      store, mon, store::Clock::now(),
                            s.problems.size(), {},         &stopping};
    std::optional<http::Server> server;
    if (s.config.http.enabled) {
        auto token = http::load_token(s.config.http);
        if (!token) {
            std::cerr << "jobhost: " << token.error().message << "\n";
            ex->shutdown(core::Duration(0));
            return kExitUsage;
        }
        services.token = *token;
        server.emplace(io, services, s.config.http);
        auto ep = server->start();
        if (!ep) {
            std::cerr << "jobhost: " << ep.error().message << "\n";
            ex->shutdown(core::Duration(0));
            return kExitRuntime;
        }
        JH_LOG(info, "http") << "http listening on " << ep->address().to_string() << ":" << ep->port()
                             << (services.token.empty() ? " (no token: mutating requests are open to local users)"
                                                        : " (mutating requests need the bearer token)");
    }
    // Health: evaluated on a timer; alerts are raised and cleared as the rules start and stop holding.
    boost::asio::steady_timer health_timer(io);
    std::function<void()> check_health = [&] {
        health_timer.expires_after(s.config.monitor.interval);
        health_timer.async_wait([&](const boost::system::error_code& ec) {
            if (ec) return;
            http::evaluate_health(services);
            check_health();
        });
    };
    check_health();
    scheduler::Scheduler sched(io, [&](const std::string& type, scheduler::SystemTime at) { ex->tick(type, at); });
    for (const auto& [name, t] : s.registry.types())
        if (t.usable()) sched.set(name, t.effective, true);

    for (const auto& arg : o.enqueue) {
        auto r = ex->enqueue(parse_enqueue_arg(arg));
        if (!r.ok) {
            std::cerr << "jobhost: --enqueue " << arg << ": " << r.error << "\n";
            ex->shutdown(s.config.host.shutdown_grace);
            return kExitUsage;
        }
        JH_LOG(info, "host") << "enqueued job " << r.id << " of type " << parse_enqueue_arg(arg).type;
    }

    // SIGHUP: re-read the config; apply what can change while running, or keep the running config on any error.
    auto reload = [&] {
        if (s.config.file.empty()) {
            JH_LOG(warning, "host") << "SIGHUP: no --config file to reload";
            return;
        }
        auto r = config::load_file(s.config.file);
        std::set<std::string> known;
        for (const auto& t : s.discovery.types) known.insert(t.type);
        if (r.ok()) {
            auto more = config::check_job_types(r.config, known);
            r.errors.insert(r.errors.end(), more.begin(), more.end());
        }
        std::vector<std::pair<std::string, registry::JobSettings>> updates;
        if (r.ok()) {
            for (const auto& t : s.discovery.types) {
                registry::Provenance p;
                auto eff = registry::effective_settings(t, r.config, p);
                auto errors = registry::validate_settings(eff);
                if (!errors.empty())
                    r.errors.push_back({r.config.file.string(), 0, 0, "[jobs." + t.type + "]: " + errors.front()});
                updates.emplace_back(t.type, eff);
            }
        }
        if (!r.ok()) {
            for (const auto& d : r.errors) JH_LOG(error, "host") << "SIGHUP: " << d.to_string();
            JH_LOG(error, "host") << "SIGHUP: the new configuration is invalid; the running configuration stays";
            return;
        }
        for (const auto& [type, eff] : updates) {
            const auto* t = s.registry.find(type);
            if (!t || !t->usable()) continue;
            ex->update_settings(type, eff);
            sched.set(type, eff, false);
            if (auto it = r.config.jobs.find(type); it != r.config.jobs.end() && it->second.settings != t->settings)
                JH_LOG(warning, "host") << "SIGHUP: [jobs." << type
                                        << ".settings] changed; task settings take effect after a restart";
        }
        if (r.config.host.workers != s.config.host.workers || r.config.host.plugin_dir != s.config.host.plugin_dir)
            JH_LOG(warning, "host") << "SIGHUP: [host] workers and plugin_dir take effect after a restart";
        JH_LOG(info, "host") << "SIGHUP: configuration reloaded from " << s.config.file.string();
    };

    boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                               int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
            reload();
            signals.async_wait(on_signal);
            return;
        }
        JH_LOG(info, "host") << "received " << (signo == SIGINT ? "SIGINT" : "SIGTERM")
                             << ", shutting down: intake stopped, waiting up to "
                             << core::format_duration(s.config.host.shutdown_grace) << " for running jobs";
        sched.stop();
        stopping = true;
        health_timer.cancel();
        if (server) server->stop();
        io.stop();
    };
    signals.async_wait(on_signal);
    JH_LOG(info, "host") << "serving " << s.registry.types().size() << " job type(s) with " << eo.workers
                         << " worker(s), store "
                         << (s.config.store.kind == config::StoreSection::Kind::memory ? std::string("in memory")
                                                                                       : s.config.store.path.string())
                         << "; SIGINT or SIGTERM stops, SIGHUP reloads the config";
    store::arm_crash_notes(store.host_record()); // a crash or exit() in plugin code leaves a note for the next start
    io.run();

    signals.clear();
    struct sigaction sa {};
    sa.sa_handler = &exit_now;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    std::size_t left = ex->shutdown(s.config.host.shutdown_grace);
    for (const auto& [type, m] : ex->all_metrics())
        if (m.enqueued || m.started || m.coalesced) JH_LOG(info, "host") << "summary " << summary(type, m);
    if (left > 0) {
        JH_LOG(error, "host") << left << " run(s) did not return after cancellation; charging them an attempt "
                              << "and exiting without unloading their plugins";
        store.close(); // gives back what was reserved; charges the runs that never returned
        store::disarm_crash_notes();
        std::_Exit(kExitRuntime);
    }
    store::disarm_crash_notes();
    io.restart();
    io.poll();     // timer cancellations still queued, while the executor exists
    ex.reset();    // joins the workers before the registry unloads the plugins
    store.close(); // gives back what this host reserved ahead, uncharged
    JH_LOG(info, "host") << "stopped";
    return kExitOk;
}

} // namespace jobhost::cli
