#include "runner/process_runner.hpp"

#include "common/duration.hpp"
#include "loader/host_api.hpp"
#include "log/log.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace jobhost::runner {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string_view isolation_name(Isolation i) noexcept {
    return i == Isolation::process ? "process" : "thread";
}

namespace {

constexpr auto kInitLimit = std::chrono::seconds(10); // a worker that does not say ready by then is killed
constexpr auto kPollEvery = milliseconds(20);         // cancellation and memory are looked at this often
constexpr auto kBackoffFirst = milliseconds(50);
constexpr auto kBackoffMax = milliseconds(2'000);

std::string mib(std::uint64_t bytes) {
    return std::to_string((bytes + (1u << 19)) >> 20) + " MiB";
}

// Resident memory of a process in bytes, 0 when it cannot be read.
std::uint64_t resident_bytes(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(in >> size >> resident)) return 0;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// Waits for a child that is ending (its socket closed or it was killed), at most `limit`, then kills it.
int reap(pid_t pid, milliseconds limit) {
    int status = 0;
    auto until = SteadyClock::now() + limit;
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0 && errno != EINTR) return 0;
        if (SteadyClock::now() >= until) {
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return status;
        }
        std::this_thread::sleep_for(milliseconds(1));
    }
}

} // namespace

std::string describe_exit(int status) {
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char* name = sigabbrev_np(sig);
        return "crashed: " + (name ? "SIG" + std::string(name) + " " : std::string()) + "(signal " +
               std::to_string(sig) + ")";
    }
    if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
    return "ended";
}

std::filesystem::path self_exe() {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::filesystem::path("/proc/self/exe") : p;
}

ProcessRunner::Worker::~Worker() {
    if (fd >= 0) ::close(fd); // the worker reads the end of its stream, destroys its task and exits
    if (pid > 0) reap(pid, milliseconds(2'000));
}

core::Expected<std::unique_ptr<ProcessRunner::Worker>> ProcessRunner::spawn() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return core::Error{"cannot make a socket for a worker: " + std::string(std::strerror(errno))};
    // The child's ends move to fds 3 and 4; keep the sources above them so dup2 never sees equal numbers.
    int child = ::fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    ::close(sv[1]);
    int lib = spec_.library_fd >= 0 ? ::fcntl(spec_.library_fd, F_DUPFD_CLOEXEC, 10) : -1;
    auto w = std::make_unique<Worker>();
    w->fd = sv[0];

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_adddup2(&fa, child, 3);
    if (lib >= 0) ::posix_spawn_file_actions_adddup2(&fa, lib, 4);
    ::posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    ::posix_spawnattr_setsigdefault(&attr, &all);
    ::posix_spawnattr_setsigmask(&attr, &none);
    ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::string exe = spec_.exe.empty() ? self_exe().string() : spec_.exe.string();
    std::string a0 = exe, a1 = "worker", a2 = "--socket-fd", a3 = "3";
    char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), nullptr};
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv, environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::posix_spawnattr_destroy(&attr);
    ::close(child);
    if (lib >= 0) ::close(lib);
    if (rc != 0) return core::Error{"cannot start a worker process (" + exe + "): " + std::strerror(rc)};
    w->pid = pid;
    started_ += 1;

    std::string out;
    const std::string library = lib >= 0 ? std::string("/proc/self/fd/4") : spec_.file.string();
    wire::encode(out, wire::InitMessage{spec_.type, spec_.settings_json, library});
    wire::send_all(w->fd, out); // a failure shows as the end of the stream below

    auto until = SteadyClock::now() + kInitLimit;
    try {
        for (;;) {
            while (auto f = w->in.next()) {
                auto m = wire::decode_start_report(*f);
                if (std::holds_alternative<wire::ReadyMessage>(m)) return w;
                if (auto* failed = std::get_if<wire::InitFailedMessage>(&m))
                    return core::Error{std::string(failed->message)};
                if (auto* line = std::get_if<wire::LogMessage>(&m)) type_log_.log(line->level, line->message);
            }
            auto left = std::chrono::duration_cast<milliseconds>(until - SteadyClock::now());
            pollfd p{w->fd, POLLIN, 0};
            int n = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
            if (n < 0 && errno == EINTR) continue;
            if (n == 0) {
                ::kill(w->pid, SIGKILL);
                return core::Error{"the worker did not finish creating the task within " +
                                   core::format_duration(kInitLimit) + "; it was killed"};
            }
            if (!w->in.fill(w->fd)) {
                ::close(std::exchange(w->fd, -1));
                int status = reap(std::exchange(w->pid, -1), milliseconds(2'000));
                return core::Error{"the worker " + describe_exit(status) +
                                   " while loading the library or creating "
                                   "the task"};
            }
        }
    } catch (const wire::ProtocolError& e) {
        ::kill(w->pid, SIGKILL);
        return core::Error{std::string("the worker sent a damaged message while starting: ") + e.what()};
    }
}

core::Expected<std::shared_ptr<ProcessRunner>> ProcessRunner::start(ProcessSpec spec) {
    std::shared_ptr<ProcessRunner> r(new ProcessRunner(std::move(spec)));
    auto w = r->spawn();
    if (!w) return w.error();
    r->idle_.push_back(std::move(*w));
    return r;
}

ProcessRunner::~ProcessRunner() {
    std::lock_guard lock(mutex_);
    for (auto& w : idle_) ::close(std::exchange(w->fd, -1)); // every worker starts ending at once
    idle_.clear();                                           // then each is waited for
}

std::chrono::steady_clock::time_point ProcessRunner::ready_at() const {
    std::lock_guard lock(mutex_);
    return ready_at_;
}

std::unique_ptr<ProcessRunner::Worker> ProcessRunner::take() {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return nullptr;
    auto w = std::move(idle_.back());
    idle_.pop_back();
    return w;
}

void ProcessRunner::give_back(std::unique_ptr<Worker> w) {
    std::lock_guard lock(mutex_);
    losses_in_a_row_ = 0;
    idle_.push_back(std::move(w));
}

void ProcessRunner::lost() {
    lost_ += 1;
    std::lock_guard lock(mutex_);
    losses_in_a_row_ = std::min(losses_in_a_row_ + 1, 30);
    auto delay = std::min<milliseconds>(kBackoffFirst * (1 << std::min(losses_in_a_row_ - 1, 7)), kBackoffMax);
    ready_at_ = SteadyClock::now() + delay;
}

RunEnd ProcessRunner::run(const jh_job* jobs, std::size_t count, const RunControl& control) {
    RunEnd end;
    auto w = take();
    if (!w) {
        auto s = spawn();
        if (!s) {
            lost();
            end.failure = "the worker could not start: " + s.error().message;
            return end;
        }
        w = std::move(*s);
    }
    // indexes were checked by decode_run_report; -1 is the type's own handle (a log line of the task, not a job)
    auto handle = [&](std::int32_t i) -> loader::PluginHandle* {
        if (i < 0) return &type_log_;
        return static_cast<loader::PluginHandle*>(jobs[i].host_handle);
    };

    std::string out;
    {
        wire::RunMessage run;
        run.deadline_unix_ms = count ? jobs[0].deadline_unix_ms : 0;
        run.jobs.reserve(count);
        for (std::size_t i = 0; i < count; ++i) {
            const auto& j = jobs[i];
            run.jobs.push_back({{j.id.data, j.id.size},
                                {j.type.data, j.type.size},
                                {j.payload.data, j.payload.size},
                                j.attempt,
                                j.max_retries});
        }
        wire::encode(out, run);
    }
    bool sent = wire::send_all(w->fd, out);

    bool cancel_sent = false;
    SteadyClock::time_point kill_at = SteadyClock::time_point::max();
    auto next_memory_look = SteadyClock::now() + kPollEvery;
    std::string killed; // why we killed it, when we did
    try {
        while (sent) {
            while (auto f = w->in.next()) {
                auto report = wire::decode_run_report(*f, count);
                if (std::holds_alternative<wire::DoneMessage>(report)) {
                    give_back(std::move(w));
                    return end;
                }
                if (auto* m = std::get_if<wire::LogMessage>(&report)) {
                    handle(m->job)->log(m->level, m->message);
                } else if (auto* m = std::get_if<wire::ProgressMessage>(&report)) {
                    handle(m->job)->progress(m->percent, m->message);
                } else if (auto* m = std::get_if<wire::ResultMessage>(&report)) {
                    handle(m->job)->set_result(static_cast<jh_status>(m->status), m->flags, m->message, m->output);
                } else if (auto* m = std::get_if<wire::EnqueueMessage>(&report)) {
                    std::string type(m->type), payload(m->payload), key(m->unique_key);
                    jh_enqueue_options o{};
                    o.struct_size = sizeof o;
                    o.priority = m->priority;
                    o.delay_ms = m->delay_ms;
                    o.run_at_unix_ms = m->run_at_unix_ms;
                    o.unique_key = {key.data(), key.size()};
                    std::string id, error;
                    jh_status s = handle(m->job)->enqueue(type, payload, &o, id, error);
                    std::string reply;
                    wire::encode(reply, wire::EnqueueReplyMessage{s, id, error});
                    wire::send_all(w->fd, reply);
                }
            }
            pollfd p{w->fd, POLLIN, 0};
            int n = ::poll(&p, 1, static_cast<int>(kPollEvery.count()));
            if (n < 0 && errno != EINTR) break;
            auto now = SteadyClock::now();
            if (!cancel_sent && control.cancelled && control.cancelled()) {
                cancel_sent = true;
                kill_at = now + control.stuck_grace;
                std::string c;
                wire::Writer(c).begin(wire::kCancel).end();
                wire::send_all(w->fd, c);
            }
            if (killed.empty() && now >= kill_at) {
                ::kill(w->pid, SIGKILL);
                end.killed_stuck = true;
                killed = "the worker was killed: the run was still going " +
                         core::format_duration(control.stuck_grace) + " after it was asked to stop";
            }
            if (killed.empty() && spec_.memory_limit > 0 && now >= next_memory_look) {
                next_memory_look = now + kPollEvery;
                auto rss = resident_bytes(w->pid);
                if (rss > spec_.memory_limit) {
                    ::kill(w->pid, SIGKILL);
                    end.out_of_memory = true;
                    killed = "out of memory: the worker used " + mib(rss) + ", over memory_limit " +
                             mib(spec_.memory_limit) + "; it was killed";
                }
            }
            if (n > 0 && !w->in.fill(w->fd)) break; // the end of the stream: the worker is gone
        }
    } catch (const wire::ProtocolError& e) {
        ::kill(w->pid, SIGKILL);
        killed = std::string("the worker sent a damaged message (") + e.what() + "); it was killed";
    }
    ::close(std::exchange(w->fd, -1));
    int status = reap(std::exchange(w->pid, -1), milliseconds(2'000));
    lost();
    end.failure = killed.empty() ? "worker " + describe_exit(status) + " while running the job" : killed;
    return end;
}

} // namespace jobhost::runner
