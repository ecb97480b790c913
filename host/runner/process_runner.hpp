// The process runner: a job type's plugin code runs in supervised `jobhost worker` processes, one run at a time
// per worker and at most `concurrency` workers, started on demand and kept while the type is served. What a
// worker's plugin code does to its process costs that attempt and that worker, never the host:
//   - it crashes, aborts, calls exit() or is killed: the run fails with "worker crashed: SIGSEGV (signal 11)" or
//     "worker exited with code 3", and the next worker starts after a back-off (50 ms, doubling to 2 s while
//     workers keep dying; reset by a run that returns);
//   - it ignores cancellation: stuck_grace after the run was asked to stop (its timeout, or a shutdown) the worker
//     is killed and the slot is free again;
//   - it grows past memory_limit (resident memory, read from /proc every 20 ms while it runs): killed, the run
//     fails as "out of memory".
// The worker loads the host's private copy of the library (its memfd, inherited as fd 4), so it runs exactly the
// version the host checked, whatever happened to the file since.
#pragma once

#include "common/error.hpp"
#include "loader/host_api.hpp"
#include "runner/protocol.hpp"
#include "runner/runner.hpp"

#include <sys/types.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace jobhost::runner {

struct ProcessSpec {
    std::string type;
    std::filesystem::path file; // the plugin file, for messages
    int library_fd = -1;        // the host's private copy; -1: the worker loads `file`
    std::string settings_json = "{}";
    std::filesystem::path exe;      // the jobhost executable; empty: this process's own
    std::uint64_t memory_limit = 0; // bytes of resident memory per worker; 0: no limit
};

class ProcessRunner final : public Runner {
public:
    // Starts the first worker, which creates the task (its constructor and validate_config run there). The error
    // says why that failed: the task's own reason, or how the worker died.
    static core::Expected<std::shared_ptr<ProcessRunner>> start(ProcessSpec spec);
    ~ProcessRunner() override; // closes every idle worker and waits for it (killed after 2 s)

    RunEnd run(const jh_job* jobs, std::size_t count, const RunControl& control) override;
    Isolation isolation() const noexcept override { return Isolation::process; }
    std::chrono::steady_clock::time_point ready_at() const override;
    std::uint64_t workers_started() const noexcept override { return started_.load(); }
    std::uint64_t workers_lost() const noexcept override { return lost_.load(); }

    struct Worker {
        pid_t pid = -1;
        int fd = -1;
        wire::FrameReader in;
        ~Worker();
    };

private:
    explicit ProcessRunner(ProcessSpec spec) : spec_(std::move(spec)), type_log_(spec_.type) {}
    core::Expected<std::unique_ptr<Worker>> spawn();
    std::unique_ptr<Worker> take();
    void give_back(std::unique_ptr<Worker> w);
    void lost();

    ProcessSpec spec_;
    // Where the task's own log lines go (job index -1: while a worker starts, or during a run); stateless.
    loader::TypeHandle type_log_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Worker>> idle_;
    std::chrono::steady_clock::time_point ready_at_{};
    int losses_in_a_row_ = 0;
    std::atomic<std::uint64_t> started_{0}, lost_{0};
};

// How a child ended, in words: "crashed: SIGSEGV (signal 11)", "exited with code 3".
std::string describe_exit(int wait_status);
// The jobhost executable of this process (/proc/self/exe, resolved).
std::filesystem::path self_exe();

} // namespace jobhost::runner
