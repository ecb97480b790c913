// Runs the real jobhost binary: to completion with a time limit, or in the background to be signalled.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace jobhost::test {

struct Finished {
    int exit_code = -1; // -1 when killed by a signal or the time limit
    int signal = 0;
    bool timed_out = false;
    std::string out;
    std::string err;
};

// Runs `args` (args[0] is the program) and waits at most `limit`; on timeout the process is killed.
Finished run(const std::vector<std::string>& args, std::chrono::milliseconds limit = std::chrono::seconds(60));

// The jobhost binary under test, followed by args.
Finished run_jobhost(const std::vector<std::string>& args, std::chrono::milliseconds limit = std::chrono::seconds(60));

// A process in the background whose stdout and stderr go to files.
class Background {
public:
    explicit Background(const std::vector<std::string>& args);
    ~Background(); // SIGKILLs the process if it still runs
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;

    pid_t pid() const noexcept { return pid_; }
    void signal(int signo) const;
    // Waits for exit; returns false on timeout.
    bool wait(std::chrono::milliseconds limit);
    int exit_code() const noexcept { return exit_code_; }
    int term_signal() const noexcept { return term_signal_; }
    std::string out() const;
    std::string err() const;
    // Polls stderr+stdout until `needle` appears `count` times or the limit passes.
    bool wait_for_output(const std::string& needle, std::chrono::milliseconds limit, std::size_t count = 1) const;

private:
    pid_t pid_ = -1;
    int exit_code_ = -1;
    int term_signal_ = 0;
    bool done_ = false;
    std::filesystem::path out_, err_;
};

std::size_t count_occurrences(const std::string& haystack, const std::string& needle);
inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// Waits until `f()` is true or the limit passes; returns the last answer.
template <class F>
bool eventually(F f, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!f()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
}

} // namespace jobhost::test
