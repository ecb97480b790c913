// The job types the host serves: each discovered descriptor, its declared settings overlaid by the config, and the
// plugin's task instance made from them.
#pragma once

#include "config/config.hpp"
#include "loader/host_api.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/job_settings.hpp"
#include "runner/runner.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace jobhost::registry {

// The thread runner: owns a plugin's task instance in the host and calls it on the caller's thread. Destroys it
// through the plugin, and only then lets go of the library: the library member is declared first, so it is
// released last.
class TaskInstance final : public runner::Runner {
public:
    TaskInstance(std::shared_ptr<loader::PluginLibrary> library, const jh_job_descriptor& descriptor,
                 std::unique_ptr<loader::TypeHandle> handle, void* task)
        : library_(std::move(library)), descriptor_(descriptor), handle_(std::move(handle)), task_(task) {}
    ~TaskInstance() override {
        if (task_) descriptor_.destroy(task_);
    }
    TaskInstance(const TaskInstance&) = delete;
    TaskInstance& operator=(const TaskInstance&) = delete;

    // Runs jobs through the plugin. Thread-safe as the descriptor's concurrency contract says.
    runner::RunEnd run(const jh_job* jobs, std::size_t count, const runner::RunControl&) override {
        descriptor_.run(task_, jobs, count);
        return {};
    }
    runner::Isolation isolation() const noexcept override { return runner::Isolation::thread; }

private:
    std::shared_ptr<loader::PluginLibrary> library_;
    jh_job_descriptor descriptor_;
    std::unique_ptr<loader::TypeHandle> handle_;
    void* task_;
};

struct JobType {
    std::string type;
    std::filesystem::path file;
    std::uint32_t abi_version = 0;
    JobSettings declared;  // what the plugin said
    JobSettings effective; // declared, overlaid by the config
    Provenance provenance;
    boost::json::object settings;         // [jobs.<type>.settings]
    std::shared_ptr<runner::Runner> task; // null when the task could not be created
    std::string error;                    // why task is null
    std::chrono::system_clock::time_point loaded_at = std::chrono::system_clock::now();
    std::uint64_t generation = 1; // 1 for the version loaded at start, +1 for each replacement while running
    bool usable() const noexcept { return task != nullptr; }
};

// What one rescan of the plugin folder changed.
struct PluginChanges {
    std::vector<std::string> added, replaced, removed; // job types
    std::vector<std::string> refused;                  // "file: why" (or "file [type]: why")
    bool any() const noexcept { return !added.empty() || !replaced.empty() || !removed.empty() || !refused.empty(); }
};

struct BuildResult {
    std::vector<loader::Problem> problems; // types whose task could not be made, or whose overlay is invalid
};

struct BuildOptions {
    std::filesystem::path worker_exe; // the jobhost executable that process-isolated types run in; empty: this one
};

class Registry {
public:
    // Overlays the config on each discovered type and creates its task (constructor + validate_config): in the host
    // for thread isolation, in a first worker process for process isolation. A type whose task cannot be made is
    // kept, unusable, with the reason; every such case is also returned as a problem.
    BuildResult build(const loader::Discovery& discovery, const config::Config& config,
                      const BuildOptions& options = {});

    // One type, made as build() makes each: the config's overlay, then its task (or the reason it has none).
    // Problems are appended to `problems`.
    static JobType make(const loader::DiscoveredType& t, const config::Config& config, const BuildOptions& options,
                        std::vector<loader::Problem>& problems);
    // Adds a type or replaces one of the same name (a plugin added or replaced while running).
    void put(JobType type);
    // Marks a type as no longer provided (its library was removed): kept, unusable, with the reason.
    void retire(std::string_view type, std::string reason);

    const JobType* find(std::string_view type) const;
    const std::map<std::string, JobType, std::less<>>& types() const noexcept { return types_; }

private:
    std::map<std::string, JobType, std::less<>> types_;
};

// The effective settings of a discovered type under a config (no task is made). Used by build() and by SIGHUP reload.
JobSettings effective_settings(const loader::DiscoveredType& t, const config::Config& config, Provenance& provenance);

} // namespace jobhost::registry
