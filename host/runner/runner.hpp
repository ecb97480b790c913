// A runner calls a job type's plugin code: the seam between the executor (which decides what runs and what becomes
// of it) and the place the code runs. Two kinds:
//   - thread  (registry::TaskInstance): the plugin's run() on the calling worker thread, in the host process;
//   - process (runner::ProcessRunner): the same run() in a supervised `jobhost worker` process, so a crash, abort,
//     exit, hang or memory hog in plugin code costs that attempt and a worker, never the host.
// Both report each job's outcome through the jh_job host_handle (a loader::PluginHandle), exactly as a plugin does;
// the SDK and the ABI do not know which runner called them.
#pragma once

#include <jobhost/abi.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace jobhost::runner {

enum class Isolation { thread, process };
std::string_view isolation_name(Isolation i) noexcept;

// What a run may be asked while it goes.
struct RunControl {
    // True once the run should stop: its timeout passed or the host is shutting down. Polled by the runner.
    std::function<bool()> cancelled;
    // A run that does not return within this long after cancelled() turned true is killed (process runner only; a
    // thread cannot be killed, it is reported as stuck instead).
    std::chrono::milliseconds stuck_grace{5'000};
};

// How a run ended, beyond what each job reported.
struct RunEnd {
    // Empty when the plugin returned normally. Otherwise why the code stopped ("worker crashed: SIGSEGV"); every
    // job of the run that reported no result has failed with this reason.
    std::string failure;
    bool killed_stuck = false;  // killed stuck_grace after it was asked to stop
    bool out_of_memory = false; // killed for going over memory_limit
};

class Runner {
public:
    virtual ~Runner() = default;
    // Runs `count` jobs; blocks until they are done. Thread-safe: called by up to `concurrency` threads at once.
    virtual RunEnd run(const jh_job* jobs, std::size_t count, const RunControl& control) = 0;
    virtual Isolation isolation() const noexcept = 0;
    // When this runner can take work again (a process runner backs off after workers die); earlier: now.
    virtual std::chrono::steady_clock::time_point ready_at() const { return {}; }
    // Workers started and lost so far (process runner), for metrics and /api/v1/types.
    virtual std::uint64_t workers_started() const noexcept { return 0; }
    virtual std::uint64_t workers_lost() const noexcept { return 0; }
};

} // namespace jobhost::runner
