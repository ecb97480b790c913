#include "support/process.hpp"

#include "support/temp_dir.hpp"

#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace jobhost::test {

namespace fs = std::filesystem;

namespace {
pid_t spawn(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("posix_spawn " + args[0] + " failed");
    return pid;
}

fs::path scratch(const char* suffix) {
    static std::atomic<int> n{0};
    return fs::temp_directory_path() /
           ("jobhost-proc-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + suffix);
}
} // namespace

std::size_t count_occurrences(const std::string& haystack, const std::string& needle) {
    std::size_t n = 0;
    for (std::size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
    return n;
}

Background::Background(const std::vector<std::string>& args) : out_(scratch(".out")), err_(scratch(".err")) {
    pid_ = spawn(args, out_, err_);
}

Background::~Background() {
    if (!done_) {
        ::kill(pid_, SIGKILL);
        int st;
        ::waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    fs::remove(out_, ec);
    fs::remove(err_, ec);
}

void Background::signal(int signo) const {
    ::kill(pid_, signo);
}

bool Background::wait(std::chrono::milliseconds limit) {
    if (done_) return true;
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            done_ = true;
            if (WIFEXITED(st)) exit_code_ = WEXITSTATUS(st);
            if (WIFSIGNALED(st)) term_signal_ = WTERMSIG(st);
            return true;
        }
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

std::string Background::out() const {
    return read_file(out_);
}
std::string Background::err() const {
    return read_file(err_);
}

bool Background::wait_for_output(const std::string& needle, std::chrono::milliseconds limit, std::size_t count) const {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (count_occurrences(err() + out(), needle) >= count) return true;
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

Finished run(const std::vector<std::string>& args, std::chrono::milliseconds limit) {
    Background p(args);
    Finished f;
    if (!p.wait(limit)) {
        f.timed_out = true;
        p.signal(SIGKILL);
        p.wait(std::chrono::seconds(5));
    }
    f.exit_code = p.exit_code();
    f.signal = p.term_signal();
    f.out = p.out();
    f.err = p.err();
    return f;
}

Finished run_jobhost(const std::vector<std::string>& args, std::chrono::milliseconds limit) {
    std::vector<std::string> full{JOBHOST_BINARY};
    full.insert(full.end(), args.begin(), args.end());
    return run(full, limit);
}

} // namespace jobhost::test
