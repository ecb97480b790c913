#include "cli/commands.hpp"

#include "app/host.hpp"

#include "config/config.hpp"
#include "executor/executor.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"

#include <boost/json.hpp>

#include <iomanip>
#include <iostream>
#include <sstream>

namespace jobhost::cli {

namespace fs = std::filesystem;

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
        else if (o.store->rfind("postgres://", 0) == 0 || o.store->rfind("postgresql://", 0) == 0) {
            config.store.kind = config::StoreSection::Kind::postgres;
            config.store.url = *o.store;
        } else {
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
    auto type_errors = config::check_job_types(s.config, known, loader::refused_plugins(s.discovery));
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
            auto eff = registry::describe(t.effective);
            auto dec = registry::describe(t.declared);
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
        auto eff = registry::describe(t.effective);
        auto dec = registry::describe(t.declared);
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

// Prints what preflight() refuses and returns whether there was anything.
bool refused_at_preflight(const config::Config& config, const char* command) {
    auto errors = app::preflight(config);
    for (const auto& e : errors) std::cerr << "jobhost " << command << ": " << e << "\n";
    return !errors.empty();
}

int check_command(const CommonOptions& o) {
    Startup s;
    if (int code = start(o, s); code >= 0) return code;
    if (refused_at_preflight(s.config, "check")) return kExitUsage;
    if (!s.problems.empty()) {
        // Each problem was logged as a warning while loading; print them here only when the log level hid them.
        bool logged = o.log_level.value_or(s.config.log.level) <= log::Level::warning;
        if (!logged)
            for (const auto& p : s.problems) std::cerr << p.to_string() << "\n";
        std::cerr << "jobhost check: " << s.problems.size() << " plugin problem(s)" << (logged ? ", each above" : "")
                  << "\n";
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

} // namespace

int run_command(const CommonOptions& o) {
    Startup s;
    if (int code = start(o, s); code >= 0) return code;
    if (refused_at_preflight(s.config, "run")) return kExitUsage;
    if (s.registry.types().empty() && !s.config.host.watch_plugins) { // a host that could never serve anything
        std::cerr << "jobhost run: no job types found in " << s.config.host.plugin_dir.string()
                  << "; put plugins there (see 'jobhost plugins'), or set [host] plugin_dir\n";
        return kExitUsage;
    }
    if (s.registry.types().empty())
        JH_LOG(warning, "host") << "no job types found in " << s.config.host.plugin_dir.string()
                                << " yet; the folder is watched: a plugin copied there is served at once";
    app::HostOptions ho;
    ho.crash_notes = true;
    ho.plugins_skipped = s.problems.size();
    app::Host host(s.config, s.discovery, s.registry, ho);
    if (auto error = host.open()) {
        std::cerr << "jobhost: " << error->message << "\n";
        return kExitRuntime;
    }
    // Every --enqueue is checked before any is queued: a refused one must not leave the others run.
    for (const auto& arg : o.enqueue) {
        auto r = parse_enqueue_arg(arg);
        auto settings = host.executor().settings(r.type);
        std::string why = !settings             ? "unknown job type '" + r.type + "'"
                          : !settings->enabled  ? "job type '" + r.type + "' is disabled (enabled = false)"
                          : r.payload == "null" ? std::string()
                          : executor::payload_error(r.payload)
                              ? "the payload is not valid JSON (" + *executor::payload_error(r.payload) + ")"
                              : std::string();
        if (!why.empty()) {
            std::cerr << "jobhost: --enqueue " << arg << ": " << why << "; nothing was queued\n";
            return kExitUsage;
        }
    }
    for (const auto& arg : o.enqueue) {
        auto r = host.executor().enqueue(parse_enqueue_arg(arg));
        if (!r.ok) {
            std::cerr << "jobhost: --enqueue " << arg << ": " << r.error << "\n";
            return kExitUsage;
        }
        JH_LOG(info, "host") << "enqueued job " << r.id << " of type " << parse_enqueue_arg(arg).type;
    }
    return host.run();
}

} // namespace jobhost::cli
