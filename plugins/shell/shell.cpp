// shell: runs a shell command and fails with its exit status and the tail of its output.
//
// The command comes from the payload ({"command": "..."} or a JSON string) or else from settings.command, and runs
// under /bin/sh -c in its own process group, in settings.workdir if given. When the job is cancelled (timeout or
// shutdown) the whole group gets SIGTERM, then SIGKILL two seconds later.
#include <jobhost/sdk.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

std::string tail(const std::string& out, std::size_t max_lines, std::size_t max_bytes) {
    std::size_t end = out.size();
    while (end > 0 && out[end - 1] == '\n') --end;
    std::size_t start = end, lines = 0;
    while (start > 0 && lines < max_lines && end - start < max_bytes) {
        --start;
        if (out[start] == '\n') ++lines;
    }
    if (start < out.size() && out[start] == '\n') ++start;
    return out.substr(start, end - start);
}

} // namespace

class Shell : public jobhost::Task {
public:
    jobhost::Result validate_config(const boost::json::object& settings) override {
        for (const auto& [key, value] : settings) {
            if (key == "command" || key == "workdir") {
                if (!value.is_string())
                    return jobhost::Result::failure("settings." + std::string(key) + " must be a string");
            } else if (key == "tail_lines") {
                if (!value.is_int64() || value.as_int64() < 1)
                    return jobhost::Result::failure("settings.tail_lines must be a positive integer");
            } else {
                return jobhost::Result::failure("unknown setting '" + std::string(key) +
                                                "' (known: command, workdir, tail_lines)");
            }
        }
        if (auto* c = settings.if_contains("command")) command_ = std::string(c->as_string());
        if (auto* w = settings.if_contains("workdir")) workdir_ = std::string(w->as_string());
        if (auto* t = settings.if_contains("tail_lines")) tail_lines_ = static_cast<std::size_t>(t->as_int64());
        return jobhost::Result::success();
    }

    jobhost::Result validate(jobhost::Context& ctx) override {
        if (command(ctx).empty())
            return jobhost::Result::permanent(
                "no command: give {\"command\": \"...\"} as payload or set settings.command");
        return jobhost::Result::success();
    }

    jobhost::Result execute(jobhost::Context& ctx) override {
        std::string cmd = command(ctx);
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) return jobhost::Result::failure(std::string("pipe: ") + std::strerror(errno));
        pid_t pid = ::fork();
        if (pid < 0) {
            ::close(fds[0]);
            ::close(fds[1]);
            return jobhost::Result::failure(std::string("fork: ") + std::strerror(errno));
        }
        if (pid == 0) { // child: only async-signal-safe calls until exec
            ::setpgid(0, 0);
            ::dup2(fds[1], 1);
            ::dup2(fds[1], 2);
            if (!workdir_.empty() && ::chdir(workdir_.c_str()) != 0) ::_exit(126);
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ::close(fds[1]);
        std::string output;
        bool killed = false;
        auto kill_at = std::chrono::steady_clock::time_point::max();
        for (;;) {
            pollfd p{fds[0], POLLIN, 0};
            int n = ::poll(&p, 1, 100);
            if (n > 0) {
                char buf[4096];
                ssize_t r = ::read(fds[0], buf, sizeof buf);
                if (r > 0) {
                    output.append(buf, static_cast<std::size_t>(r));
                    if (output.size() > 1 << 20) output.erase(0, output.size() - (1 << 19)); // keep the tail
                    continue;
                }
                if (r == 0) break; // every writer closed
            }
            if (ctx.cancelled() && !killed) {
                ::kill(-pid, SIGTERM);
                killed = true;
                kill_at = std::chrono::steady_clock::now() + 2s;
            }
            if (killed && std::chrono::steady_clock::now() > kill_at) ::kill(-pid, SIGKILL);
        }
        ::close(fds[0]);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        std::string last = tail(output, tail_lines_, 4096);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return jobhost::Result::success(last);
        std::string why = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                            : "killed by signal " + std::to_string(WTERMSIG(status));
        if (killed) why += " after cancellation";
        return jobhost::Result::failure("command failed (" + why + "): " + cmd + (last.empty() ? "" : "\n" + last));
    }

private:
    std::string command(jobhost::Context& ctx) const {
        const auto& p = ctx.payload();
        if (p.is_string()) return std::string(p.as_string());
        if (p.is_object())
            if (auto* c = p.as_object().if_contains("command"); c && c->is_string()) return std::string(c->as_string());
        return command_;
    }
    // Written once in validate_config, read-only afterwards.
    std::string command_;
    std::string workdir_;
    std::size_t tail_lines_ = 20;
};

JOBHOST_JOB(Shell, .type = "shell", .name = "Shell command",
            .description = "Runs a command with /bin/sh -c; fails with its exit status and output tail",
            .max_retries = 2, .backoff = {.initial = 5s, .multiplier = 2.0, .max = 1min, .jitter = 0.2},
            .timeout = 5min, .concurrency = 2);
