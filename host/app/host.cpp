#include "app/host.hpp"

#include "http/server.hpp"
#include "log/log.hpp"
#include "store/memory_store.hpp"
#include "store/postgres_store.hpp"
#include "store/sqlite_store.hpp"

#include <boost/asio/post.hpp>
#include <systemd/sd-daemon.h>

#include <sys/inotify.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <future>

namespace jobhost::app {

namespace {
// The PostgreSQL URL: [store] url, else the variable [store] url_env names; empty when neither is set.
std::string postgres_url(const config::StoreSection& store) {
    if (!store.url.empty()) return store.url;
    const char* env = std::getenv(store.url_env.c_str());
    return env ? env : "";
}
std::string postgres_url_missing(const config::StoreSection& store) {
    return "[store] kind = \"postgres\" needs a database: set " + store.url_env +
           " (named by [store] url_env) to its URL, e.g. postgresql://jobhost@db.example/jobs, or set [store] url";
}
} // namespace

core::Expected<std::unique_ptr<store::JobStore>> open_store(const config::Config& config, bool host, bool create) {
    if (config.store.kind == config::StoreSection::Kind::memory)
        return std::unique_ptr<store::JobStore>(std::make_unique<store::MemoryStore>());
    if (config.store.kind == config::StoreSection::Kind::postgres) {
        store::PostgresOptions po;
        po.url = postgres_url(config.store);
        if (po.url.empty()) return core::Error{postgres_url_missing(config.store)};
        po.schema = config.store.schema;
        po.host = host;
        po.lease = config.store.lease;
        po.retain_done = static_cast<std::size_t>(config.store.retain_done);
        po.retain_done_for = config.store.retain_done_for;
        po.retain_dead = static_cast<std::size_t>(config.store.retain_dead);
        auto s = store::PostgresStore::open(po);
        if (!s) return s.error();
        return std::unique_ptr<store::JobStore>(std::move(*s));
    }
    store::SqliteOptions so;
    so.path = config.store.path;
    so.full_sync = config.store.full_sync;
    so.create = host || create;
    so.host = host;
    so.retain_done = static_cast<std::size_t>(config.store.retain_done);
    so.retain_done_for = config.store.retain_done_for;
    so.retain_dead = static_cast<std::size_t>(config.store.retain_dead);
    so.lease = config.store.lease;
    auto s = store::SqliteStore::open(so);
    if (!s) return s.error();
    return std::unique_ptr<store::JobStore>(std::move(*s));
}

std::string describe_store(const config::StoreSection& store) {
    switch (store.kind) {
    case config::StoreSection::Kind::memory: return "in memory";
    case config::StoreSection::Kind::postgres:
        return "PostgreSQL " + store::pg::redact(postgres_url(store)) + " (schema " + store.schema + ")";
    case config::StoreSection::Kind::sqlite: break;
    }
    return store.path.string();
}

std::vector<std::string> preflight(const config::Config& config) {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    std::error_code ec;
    const auto& dir = config.host.plugin_dir;
    if (!fs::is_directory(dir, ec))
        out.push_back("the plugin folder " + dir.string() +
                      (fs::exists(dir, ec) ? " is not a folder" : " does not exist") +
                      "; create it, or set [host] plugin_dir (or --plugin-dir)");
    if (config.http.enabled) {
        if (auto token = http::load_token(config.http); !token) out.push_back(token.error().message);
        if (auto token = http::load_read_token(config.http); !token) out.push_back(token.error().message);
    }
    if (config.store.kind == config::StoreSection::Kind::postgres && postgres_url(config.store).empty())
        out.push_back(postgres_url_missing(config.store));
    if (config.store.kind == config::StoreSection::Kind::sqlite) {
        const auto& path = config.store.path;
        if (fs::exists(path, ec)) {
            if (!fs::is_regular_file(path, ec))
                out.push_back("[store] path " + path.string() + " is not a file; point it at a file");
            else if (::access(path.c_str(), R_OK | W_OK) != 0)
                out.push_back("[store] path " + path.string() + " is not readable and writable by this user");
        } else { // the nearest folder that exists must let us create the rest
            auto parent = path.parent_path();
            while (!parent.empty() && !fs::exists(parent, ec) && parent != parent.parent_path())
                parent = parent.parent_path();
            if (!fs::is_directory(parent, ec) || ::access(parent.c_str(), W_OK | X_OK) != 0)
                out.push_back("cannot create the store " + path.string() + ": " + parent.string() +
                              " is not a writable folder; set [store] path to a place this user can write");
        }
    }
    return out;
}

Host::Host(config::Config config, const loader::Discovery& discovery, registry::Registry& registry, HostOptions options)
    : config_(std::move(config)), registry_(registry), options_(std::move(options)) {
    for (const auto& t : discovery.types) discovered_.emplace(t.type, t);
    for (const auto& f : discovery.files) files_.emplace(f, file_state(f));
    for (const auto& t : discovery.types)
        if (auto it = files_.find(t.file); it != files_.end()) it->second.types.insert(t.type);
    for (const auto& p : discovery.problems) refused_[p.file].push_back(loader::refusal(p));
}

Host::FileState Host::file_state(const std::filesystem::path& file) {
    FileState f;
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return f;
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.size = st.st_size;
    f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    return f;
}

void Host::plugin_event(executor::JobEventKind kind, const std::string& type, const std::string& what) {
    if (monitor_)
        monitor_->on_event(executor::JobEvent{kind, type, 0, 0, core::Duration(0), what, store::Clock::now()});
}

PluginChanges Host::reload_plugins(std::string_view why) {
    namespace fs = std::filesystem;
    using K = executor::JobEventKind;
    PluginChanges changes;
    if (!executor_ || stopping_) return changes;
    loader::LoaderOptions lo{config_.host.plugin_dir, config_.host.allow_insecure_plugins};
    std::map<fs::path, FileState> seen; // the files this scan loads
    auto d = loader::discover(lo, [&](const fs::path& f) {
        auto st = file_state(f);
        auto it = files_.find(f);
        bool changed = it == files_.end() || !(it->second == st);
        if (changed) seen[f] = st; // new or changed: loaded below
        return changed;
    });
    registry::BuildOptions bo{options_.worker_exe};
    auto provider = [&](const std::string& type, const fs::path& other_than) -> const fs::path* {
        for (const auto& [file, st] : files_)
            if (file != other_than && st.types.count(type)) return &file;
        return nullptr;
    };
    auto retire = [&](const std::string& type, const std::string& reason) {
        registry_.retire(type, reason);
        executor_->remove_task(type, reason);
        registry::JobSettings off;
        off.enabled = false;
        scheduler_->set(type, off, false); // its schedule stops
        discovered_.erase(type);
        changes.removed.push_back(type);
        plugin_event(K::plugin_removed, type, reason);
        JH_LOG(warning, "plugins") << "job type " << type << " is no longer served: " << reason;
    };

    for (const auto& [file, st] : seen) { // new or changed files
        bool is_new = !files_.count(file);
        auto& state = files_[file];
        std::set<std::string> old_types = state.types;
        state = st;
        refused_.erase(file);
        std::vector<const loader::DiscoveredType*> found;
        for (const auto& t : d.types)
            if (t.file == file) found.push_back(&t);
        for (const auto& p : d.problems) {
            if (p.file != file) continue;
            refused_[file].push_back(loader::refusal(p));
            std::string text = p.to_string();
            changes.refused.push_back(text);
            if (p.type.empty() && !old_types.empty())
                for (const auto& type : old_types) plugin_event(K::plugin_refused, type, text);
            else
                plugin_event(K::plugin_refused, p.type, text);
            JH_LOG(error, "plugins") << (old_types.empty() ? "refused "
                                                           : "the new version was refused, the old one "
                                                             "keeps serving: ")
                                     << text;
        }
        if (found.empty() && !old_types.empty() &&
            d.problems.end() != std::find_if(d.problems.begin(), d.problems.end(),
                                             [&, &f = file](const auto& p) { return p.file == f && p.type.empty(); })) {
            state.types = old_types; // the whole file was refused: what it served before goes on serving
            continue;
        }
        std::set<std::string> now_types;
        for (const auto* t : found) {
            if (const auto* other = provider(t->type, file)) {
                std::string text =
                    file.string() + " [" + t->type + "]: " + loader::declared_twice(t->type, *other, file);
                changes.refused.push_back(text);
                plugin_event(K::plugin_refused, t->type, text);
                JH_LOG(error, "plugins") << text;
                continue;
            }
            std::vector<loader::Problem> problems;
            auto jt = registry::Registry::make(*t, config_, bo, problems);
            bool replacing = old_types.count(t->type) > 0;
            if (!jt.usable()) {
                std::string text = file.string() + " [" + t->type + "]: " + jt.error;
                changes.refused.push_back(text);
                plugin_event(K::plugin_refused, t->type, text);
                if (replacing && registry_.find(t->type) && registry_.find(t->type)->usable()) {
                    JH_LOG(error, "plugins") << "the new version was refused, the old one keeps serving: " << text;
                    now_types.insert(t->type);
                } else {
                    JH_LOG(error, "plugins") << "refused " << text;
                    registry_.put(std::move(jt));
                }
                continue;
            }
            auto task = jt.task;
            auto effective = jt.effective;
            bool known_before = registry_.find(t->type) != nullptr;
            registry_.put(std::move(jt));
            executor_->set_task(t->type, task, effective);
            if (!stopping_ && options_.schedules) scheduler_->set(t->type, effective, !known_before);
            discovered_.insert_or_assign(t->type, *t);
            now_types.insert(t->type);
            const char* what = replacing ? "replaced" : known_before ? "provided again" : "added";
            (replacing ? changes.replaced : changes.added).push_back(t->type);
            plugin_event(replacing ? K::plugin_replaced : K::plugin_loaded, t->type,
                         std::string(what) + " from " + file.string());
            JH_LOG(info, "plugins") << "job type " << t->type << " " << what << " from " << file.string()
                                    << (is_new ? "" : " (the file changed)") << " (" << why << ")";
        }
        for (const auto& type : old_types)
            if (!now_types.count(type))
                retire(type, "its library " + file.string() +
                                 " no longer declares it; its queued jobs wait for a "
                                 "plugin that does");
        state.types = std::move(now_types);
    }
    for (auto it = files_.begin(); it != files_.end();) { // removed files
        if (std::find(d.files.begin(), d.files.end(), it->first) != d.files.end()) {
            ++it;
            continue;
        }
        for (const auto& type : it->second.types)
            retire(type, "its library " + it->first.string() +
                             " was removed; its queued jobs wait for a plugin "
                             "that provides it");
        refused_.erase(it->first);
        it = files_.erase(it);
    }
    if (!changes.any()) JH_LOG(debug, "plugins") << "plugin folder rescanned (" << why << "): nothing changed";
    if (!changes.added.empty() || !changes.replaced.empty()) publish_type_defaults();
    return changes;
}

void Host::watch_plugins() {
    if (!config_.host.watch_plugins) return;
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0 ||
        ::inotify_add_watch(fd, config_.host.plugin_dir.c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB) < 0) {
        JH_LOG(warning, "plugins") << "cannot watch " << config_.host.plugin_dir.string() << " for changes ("
                                   << std::strerror(errno)
                                   << "); load new plugins with SIGHUP or POST /api/v1/plugins/reload";
        if (fd >= 0) ::close(fd);
        return;
    }
    watch_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fd);
    watch_debounce_ = std::make_unique<boost::asio::steady_timer>(io_);
    arm_watch();
}

void Host::arm_watch() {
    watch_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        alignas(inotify_event) char buf[8192];
        bool relevant = false;
        for (;;) {
            auto n = ::read(watch_->native_handle(), buf, sizeof buf);
            if (n <= 0) break;
            for (char* p = buf; p < buf + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                std::string_view name = e->len ? std::string_view(e->name) : std::string_view();
                if (name.size() > 3 && name.substr(name.size() - 3) == ".so") relevant = true;
                p += sizeof(inotify_event) + e->len;
            }
        }
        if (relevant) { // a copy in progress sends many events: act once it has been quiet for a moment
            watch_debounce_->expires_after(std::chrono::milliseconds(300));
            watch_debounce_->async_wait([this](const boost::system::error_code& ec2) {
                if (!ec2 && !stopping_) reload_plugins("the plugin folder changed");
            });
        }
        arm_watch();
    });
}

Host::~Host() {
    if (opened_) {
        drain(core::Duration(0));
        close();
    }
    if (io_thread_.joinable()) {
        work_.reset();
        io_.stop();
        io_thread_.join();
    }
    io_.restart();
    io_.poll(); // what the stopped loop still held (timer cancellations), while the executor exists
    scheduler_.reset();
    server_.reset();
    watch_.reset(); // io objects go before the io_context they belong to
    watch_debounce_.reset();
    executor_.reset(); // joins the workers before the registry unloads the plugins
}

std::optional<core::Error> Host::open() {
    if (options_.store) {
        store_ = options_.store;
    } else {
        auto s = open_store(config_, true);
        if (!s) return s.error();
        owned_store_ = std::move(*s);
        store_ = owned_store_.get();
    }
    if (store_->recovered_at_open() > 0)
        JH_LOG(warning, "store") << store_->recovered_at_open()
                                 << " job(s) held by a host that is gone were given back (see above for each one "
                                    "that was running)";
    if (options_.crash_notes) store::arm_crash_notes(store_->host_record()); // before any job can run
    monitor::MonitorOptions mo;
    mo.events = static_cast<std::size_t>(config_.monitor.events);
    mo.failure_rate = config_.monitor.failure_rate;
    mo.failure_window = static_cast<std::size_t>(config_.monitor.failure_window);
    mo.failure_min_runs = static_cast<std::size_t>(config_.monitor.failure_min_runs);
    mo.late_factor = config_.monitor.late_factor;
    mo.backlog_age = config_.monitor.backlog_age;
    mo.dead_letter_rate = config_.monitor.dead_letter_rate;
    mo.store_timeout = config_.monitor.store_timeout;
    mo.window = config_.monitor.window;
    mo.clear_after = config_.monitor.clear_after;
    mo.max_run_time = config_.monitor.max_run_time;
    mo.run_time_p95 = config_.monitor.run_time_statistic == "p95";
    mo.unhealthy_at = static_cast<std::size_t>(config_.monitor.unhealthy_at);
    monitor_ = std::make_unique<monitor::Monitor>(mo);

    executor::ExecutorOptions eo;
    if (options_.executor) {
        eo = *options_.executor;
    } else {
        eo.workers = static_cast<std::size_t>(config_.host.workers);
        eo.stuck_grace = config_.host.stuck_grace;
        eo.aging = config_.host.aging;
        eo.max_result = static_cast<std::size_t>(config_.store.max_result);
    }
    if (!eo.observer) eo.observer = monitor_.get();
    executor_ = std::make_unique<executor::Executor>(io_, registry_, *store_, eo);
    opened_ = true;
    executor_->poke(); // jobs the store kept from before

    services_ = std::make_unique<http::Services>(
        http::Services{config_,
                       registry_,
                       *executor_,
                       *store_,
                       *monitor_,
                       store::Clock::now(),
                       options_.plugins_skipped,
                       {},
                       {},
                       &stopping_,
                       [this] { return reload_plugins("POST /api/v1/plugins/reload"); },
                       [this](const std::string& type, bool enabled) { set_enabled(type, enabled); }});
    if (options_.http && config_.http.enabled) {
        auto token = http::load_token(config_.http);
        if (!token) return token.error();
        services_->token = *token;
        auto read_token = http::load_read_token(config_.http);
        if (!read_token) return read_token.error();
        services_->read_token = *read_token;
        server_ = std::make_unique<http::Server>(io_, *services_, config_.http);
        auto ep = server_->start();
        if (!ep) return ep.error();
        http_port_ = ep->port();
        JH_LOG(info, "http") << "http listening on " << ep->address().to_string() << ":" << ep->port()
                             << (services_->token.empty() ? " (no token: mutating requests are open to local users)"
                                                          : " (mutating requests need the bearer token)");
    }
    health_timer_ = std::make_unique<boost::asio::steady_timer>(io_);
    arm_health_timer();
    scheduler_ = std::make_unique<scheduler::Scheduler>(
        io_, [this](const std::string& type, scheduler::SystemTime at) { executor_->tick(type, at); });
    if (options_.schedules)
        for (const auto& [name, t] : registry_.types())
            if (t.usable()) scheduler_->set(name, t.effective, true);
    publish_type_defaults();
    watch_plugins();
    return std::nullopt;
}

// POST /api/v1/types/{type}/enable|disable: the executor's settings and the schedule, as a reload applies them.
void Host::set_enabled(const std::string& type, bool enabled) {
    auto settings = executor_->settings(type);
    if (!settings) return;
    auto changed = *settings;
    changed.enabled = enabled;
    executor_->update_settings(type, changed);
    if (scheduler_ && !stopping_ && options_.schedules) scheduler_->set(type, changed, false);
}

void Host::publish_type_defaults() {
    std::map<std::string, store::TypeDefaults> defaults;
    for (const auto& [name, t] : registry_.types())
        if (t.usable())
            defaults[name] = {t.effective.priority, static_cast<std::uint32_t>(1 + t.effective.max_retries)};
    store_->set_type_defaults(defaults);
}

// Health: evaluated on a timer; alerts are raised and cleared as the rules start and stop holding.
void Host::arm_health_timer() {
    health_timer_->expires_after(config_.monitor.interval);
    health_timer_->async_wait([this](const boost::system::error_code& ec) {
        if (ec || stopping_) return;
        http::evaluate_health(*services_);
        arm_health_timer();
    });
}

void Host::start() {
    work_.emplace(io_.get_executor());
    io_thread_ = std::thread([this] { io_.run(); });
}

bool Host::reload() {
    if (config_.file.empty()) {
        JH_LOG(warning, "host") << "SIGHUP: no --config file to reload";
        return false;
    }
    auto r = config::load_file(config_.file);
    std::set<std::string> known;
    for (const auto& [type, t] : discovered_) known.insert(type);
    std::vector<config::RefusedPlugin> refused;
    for (const auto& [file, list] : refused_) refused.insert(refused.end(), list.begin(), list.end());
    if (r.ok()) {
        auto more = config::check_job_types(r.config, known, refused);
        r.errors.insert(r.errors.end(), more.begin(), more.end());
    }
    std::vector<std::pair<std::string, registry::JobSettings>> updates;
    if (r.ok()) {
        for (const auto& [type, t] : discovered_) {
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
        return false;
    }
    for (const auto& [type, eff] : updates) {
        const auto* t = registry_.find(type);
        if (!t || !t->usable()) continue;
        executor_->update_settings(type, eff);
        scheduler_->set(type, eff, false);                // an unchanged schedule keeps its timer and phase
        monitor_->on_schedule(type, store::Clock::now()); // lateness counts from the new schedule
        if (auto it = r.config.jobs.find(type); it != r.config.jobs.end() && it->second.settings != t->settings)
            JH_LOG(warning, "host") << "SIGHUP: [jobs." << type
                                    << ".settings] changed; task settings take effect after a restart";
    }
    if (r.config.host.workers != config_.host.workers || r.config.host.plugin_dir != config_.host.plugin_dir)
        JH_LOG(warning, "host") << "SIGHUP: [host] workers and plugin_dir take effect after a restart";
    JH_LOG(info, "host") << "SIGHUP: configuration reloaded from " << config_.file.string();
    return true;
}

void Host::stop_intake() {
    stopping_ = true; // /readyz answers 503 from here on
    if (watch_) watch_->close();
    if (watch_debounce_) watch_debounce_->cancel();
    if (scheduler_) scheduler_->stop();
    if (health_timer_) health_timer_->cancel();
    // HTTP stays up while the host drains: /readyz answers 503 "draining", reads and /metrics still answer,
    // mutations are refused with 503. drain() stops it once the running jobs have ended.
}

std::size_t Host::drain(core::Duration grace) {
    if (!opened_ || drained_) return left_running_;
    drained_ = true;
    // Intake stops on the io thread (or here, when it does not run); the io_context keeps running meanwhile, so
    // timeouts and the stuck watch still fire during the grace.
    if (io_thread_.joinable()) {
        std::promise<void> stopped;
        boost::asio::post(io_, [&] {
            stop_intake();
            stopped.set_value();
        });
        stopped.get_future().wait();
    } else if (!stopping_) {
        stop_intake();
    }
    left_running_ = executor_->shutdown(grace);
    if (server_) server_->stop(); // its own threads: safe from the drainer thread too
    return left_running_;
}

void Host::close() {
    if (!opened_ || closed_) return;
    closed_ = true;
    if (!drained_) drain(core::Duration(0));
    store::disarm_crash_notes();
    if (left_running_ > 0)
        JH_LOG(error, "host") << left_running_ << " run(s) did not return after cancellation; they are charged an "
                              << "attempt, and the process must exit without unloading their plugins";
    if (owned_store_) owned_store_->close(); // gives back reservations; charges runs that never returned
}

namespace {
std::string summary(const std::string& type, const executor::TypeMetrics& m) {
    return type + ": enqueued " + std::to_string(m.enqueued) + ", started " + std::to_string(m.started) +
           ", succeeded " + std::to_string(m.succeeded) + ", failed " + std::to_string(m.failed) + ", timed out " +
           std::to_string(m.timed_out) + ", retried " + std::to_string(m.retried) + ", dead-lettered " +
           std::to_string(m.dead_lettered) + ", dropped " + std::to_string(m.dropped) + ", coalesced " +
           std::to_string(m.coalesced) + ", stuck " + std::to_string(m.stuck) + ", released " +
           std::to_string(m.released) + ", max running " + std::to_string(m.max_running);
}
} // namespace

int Host::run() {
    boost::asio::signal_set signals(io_, SIGINT, SIGTERM, SIGHUP);
    std::thread drainer;
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                               int signo) {
        if (ec) return;
        const char* name = signo == SIGINT ? "SIGINT" : signo == SIGTERM ? "SIGTERM" : "SIGHUP";
        if (signo == SIGHUP) {
            ::sd_notify(0, "RELOADING=1");
            reload_plugins("SIGHUP");
            reload();
            ::sd_notify(0, "READY=1");
        } else if (drainer.joinable()) { // a second SIGINT or SIGTERM: at once
            static const char msg[] = "jobhost: second signal, exiting at once\n";
            [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
            std::_Exit(1);
        } else {
            JH_LOG(info, "host") << "received " << name << ", shutting down: intake stopped, waiting up to "
                                 << core::format_duration(config_.host.shutdown_grace)
                                 << " for running jobs; a second signal exits at once";
            ::sd_notify(0, "STOPPING=1\nSTATUS=draining: waiting for running jobs");
            stop_intake();
            drainer = std::thread([this] {
                drain(config_.host.shutdown_grace);
                boost::asio::post(io_, [this] { io_.stop(); });
            });
        }
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);
    // systemd (Type=notify): ready now; a watchdog ping from this loop while it runs. No-ops outside systemd.
    ::sd_notifyf(0, "READY=1\nSTATUS=serving %zu job type(s)", registry_.types().size());
    std::uint64_t watchdog_usec = 0;
    boost::asio::steady_timer watchdog(io_);
    std::function<void()> ping = [&] {
        ::sd_notify(0, "WATCHDOG=1");
        watchdog.expires_after(std::chrono::microseconds(watchdog_usec / 2));
        watchdog.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) ping();
        });
    };
    if (::sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) ping();
    JH_LOG(info, "host") << "serving " << registry_.types().size() << " job type(s) with "
                         << (options_.executor ? options_.executor->workers
                                               : static_cast<std::size_t>(config_.host.workers))
                         << " worker(s), store " << describe_store(config_.store)
                         << "; SIGINT or SIGTERM stops, SIGHUP reloads the config";
    io_.run();
    watchdog.cancel();
    if (drainer.joinable()) drainer.join();
    signals.clear();
    for (const auto& [type, m] : executor_->all_metrics())
        if (m.enqueued || m.started || m.coalesced) JH_LOG(info, "host") << "summary " << summary(type, m);
    bool stuck = left_running_ > 0;
    close();
    if (stuck) std::_Exit(1); // worker threads are still inside plugin code: unloading it would crash them
    JH_LOG(info, "host") << "stopped";
    return 0;
}

} // namespace jobhost::app
