// One jobhost host: the place that builds the store, executor, scheduler, monitor and HTTP server from a
// configuration and a registry, and owns each one's open, run, reload, drain and close. The jobhost command, the
// tests and the benchmarks all build hosts through it.
//
// Lifecycle. open() opens the store (recovering dead hosts' jobs), builds the executor and the monitor, binds the
// HTTP listener and starts the schedules. run() serves on the calling thread until SIGINT or SIGTERM; start() runs
// the io_context on a thread of its own instead (tests, benchmarks). drain() stops intake (schedules, HTTP), lets
// running jobs finish within the grace while the io_context keeps running (so timeouts still fire), cancels what is
// left and gives it stuck_grace more; close() then gives back what the store holds ahead for this host and, when a
// run never returned, charges it (see store.hpp). The destructor drains and closes if the caller did not.
//
// Ownership and threads. The registry (and so every plugin library) must outlive the Host: the executor's runs call
// into it. Everything the io_context runs (timers, HTTP, signals, reload) runs on its one thread; the executor's
// workers call the store and the monitor, which are thread-safe.
//
// Locks, in the one order they may nest (a lock may be taken while holding only those above it):
//   1. SqliteStore::wakeup_mutex_   held while the store's wakeup runs Executor::poke (from the writer thread)
//   2. SqliteStore::cache_mutex_ or MemoryStore::mutex_   the reservation caches and type handles / every job;
//      held across ClaimRequest::take, which only touches one lane's atomics (and may post to its strand)
//   3. SqliteStore::queue_mutex_    the writer's queue of operations (a refill is queued from inside a claim)
//   4. Monitor::mutex_              the figures; it calls out to nobody
// The executor has no lock of its own on the hot path (see executor.hpp): lanes are atomics plus a strand each;
// Executor::names_mutex_ (shared) guards only the name -> lane map, and Lane::view_mutex only a pointer copy.
// Taken alone, never nesting another: SqliteStore::reader_mutex_ (the read connection), HostRecord::mutex_ (free
// slots), ProcessRunner::mutex_ (idle workers).
// A `_locked` suffix means: the caller holds the mutex that guards what the function touches.
#pragma once

#include "common/error.hpp"
#include "config/config.hpp"
#include "executor/executor.hpp"
#include "http/api.hpp"
#include "loader/plugin_loader.hpp"
#include "monitor/monitor.hpp"
#include "registry/registry.hpp"
#include "scheduler/scheduler.hpp"
#include "store/store.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <thread>

namespace jobhost::http {
class Server;
}

namespace jobhost::app {

// What the log says the store is: a file, "in memory", or a PostgreSQL URL without its password.
std::string describe_store(const config::StoreSection& store);

// Opens the configured store. `host`: this process runs jobs (it reserves, recovers, keeps a host record);
// otherwise it is the command line. `create`: a missing file is created (always for a host).
core::Expected<std::unique_ptr<store::JobStore>> open_store(const config::Config& config, bool host,
                                                            bool create = false);

// What `jobhost check` and `jobhost run` both refuse before anything starts or is created: a missing plugin
// folder, an HTTP listener that cannot serve (unparsable address, a non-loopback address without a token, an
// unreadable or empty token_file), a store path that cannot be created. Each entry says what, where, and what to do.
std::vector<std::string> preflight(const config::Config& config);

struct HostOptions {
    bool http = true;      // serve [http] when the config enables it
    bool schedules = true; // start the periodic types' timers at open()
    // The store to use instead of opening [store] (benchmarks); it must outlive the Host, and the Host does not
    // close it.
    store::JobStore* store = nullptr;
    // Executor options instead of the ones [host] gives (tests). The observer is replaced by the monitor unless set.
    std::optional<executor::ExecutorOptions> executor;
    std::size_t plugins_skipped = 0;  // for health and /api/v1/status
    std::filesystem::path worker_exe; // the jobhost executable for process isolation; empty: this process's
    // Leave a note in the host record when plugin code crashes or calls exit() (store::arm_crash_notes), from
    // open() on: before the first job can run. For the jobhost process (jobhost run sets it), not for tests that
    // host in-process: the notes end the process with code 70 on an exit() they did not ask for.
    bool crash_notes = false;
};

using registry::PluginChanges;

class Host {
public:
    // The Host takes over the registry's types as the plugin folder changes (reload_plugins); the caller keeps
    // both alive, and touches the registry only from the io thread once open() returned.
    Host(config::Config config, const loader::Discovery& discovery, registry::Registry& registry,
         HostOptions options = {});
    ~Host();
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;

    // Opens the store, builds the components, binds HTTP and starts the schedules. The error says what and where.
    std::optional<core::Error> open();
    // Serves on this thread until SIGINT or SIGTERM (a second one exits at once; SIGHUP reloads), then drains and
    // closes. Returns the process exit code: 0 after a clean stop.
    int run();
    // Runs the io_context on a thread of its own (tests, benchmarks); stop with drain() and close().
    void start();
    // Re-reads the config file and applies what can change while running; keeps the running config on any error.
    // Returns whether the new config was applied. Call on the io thread (SIGHUP does).
    bool reload();
    // Rescans the plugin folder and applies what changed since the last scan (on the io thread: the folder watch,
    // SIGHUP and POST /api/v1/plugins/reload call it):
    //   - a new file: its types are served;
    //   - a changed file (any new inode, size or mtime; `cp` over it in place included): its types take no new jobs,
    //     their running jobs finish on the old code, then the new code serves; queued jobs are kept. A new version
    //     that fails to load leaves the old one serving, and the reason is logged;
    //   - a removed file: its types stop running jobs; their queued jobs stay, waiting for a plugin.
    // Each change is a log line and an event (plugin_loaded, plugin_replaced, plugin_removed, plugin_refused).
    PluginChanges reload_plugins(std::string_view why);
    // See above. Returns how many runs never returned; they hold worker threads, so the plugins must stay loaded.
    std::size_t drain(core::Duration grace);
    // See above. Idempotent.
    void close();

    executor::Executor& executor() { return *executor_; }
    store::JobStore& store() { return *store_; }
    monitor::Monitor& monitor() { return *monitor_; }
    boost::asio::io_context& io() { return io_; }
    scheduler::Scheduler& scheduler() { return *scheduler_; }
    const config::Config& config() const { return config_; }
    // The HTTP listener's port, once open() bound it (0 when HTTP is off).
    unsigned short http_port() const noexcept { return http_port_; }

private:
    void stop_intake();
    void set_enabled(const std::string& type, bool enabled);
    void arm_health_timer();
    // Tells the store each type's priority and attempts, for enqueues that come from SQL.
    void publish_type_defaults();
    void watch_plugins();
    void arm_watch();
    void plugin_event(executor::JobEventKind kind, const std::string& type, const std::string& what);

    struct FileState {
        dev_t dev = 0;
        ino_t ino = 0;
        off_t size = 0;
        std::int64_t mtime_ns = 0;
        std::set<std::string> types; // the types this file serves
        bool operator==(const FileState& o) const {
            return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
        }
    };
    static FileState file_state(const std::filesystem::path& file);

    config::Config config_;
    registry::Registry& registry_;
    std::map<std::string, loader::DiscoveredType> discovered_;                    // the version of each type served now
    std::map<std::filesystem::path, FileState> files_;                            // each *.so as last scanned
    std::map<std::filesystem::path, std::vector<config::RefusedPlugin>> refused_; // by file, for config checks
    HostOptions options_;

    std::unique_ptr<store::JobStore> owned_store_;
    store::JobStore* store_ = nullptr;
    boost::asio::io_context io_;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
    std::thread io_thread_;
    std::unique_ptr<monitor::Monitor> monitor_;
    std::unique_ptr<executor::Executor> executor_;
    std::unique_ptr<scheduler::Scheduler> scheduler_;
    std::unique_ptr<http::Services> services_;
    std::unique_ptr<http::Server> server_;
    std::unique_ptr<boost::asio::steady_timer> health_timer_;
    std::unique_ptr<boost::asio::posix::stream_descriptor> watch_; // inotify on plugin_dir
    std::unique_ptr<boost::asio::steady_timer> watch_debounce_;
    std::atomic<bool> stopping_{false};
    unsigned short http_port_ = 0;
    bool opened_ = false, drained_ = false, closed_ = false;
    std::size_t left_running_ = 0;
};

} // namespace jobhost::app
