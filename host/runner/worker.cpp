#include "runner/worker.hpp"

#include "loader/host_api.hpp"
#include "loader/plugin_loader.hpp"
#include "runner/protocol.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdlib>
#include <deque>
#include <string>
#include <sys/prctl.h>
#include <unistd.h>
#include <vector>

namespace jobhost::runner {

namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto kFlushAfter = std::chrono::milliseconds(20); // buffered log lines wait at most this long
constexpr std::size_t kFlushBytes = 64u << 10;

// The worker's end of the socket: an output buffer flushed at the end of each run (or when it grows old or large),
// and the cancellation flag that kCancel frames set.
class Connection {
public:
    explicit Connection(int fd) : fd_(fd) {}

    std::string& out() {
        if (out_.empty()) first_unflushed_ = SteadyClock::now();
        return out_;
    }
    void flush() {
        if (out_.empty()) return;
        if (!wire::send_all(fd_, out_)) host_gone();
        out_.clear();
    }
    void maybe_flush() {
        if (out_.size() >= kFlushBytes || SteadyClock::now() - first_unflushed_ >= kFlushAfter) flush();
    }
    // Frames that arrived during a run: only kCancel matters then. At most one look per millisecond.
    bool cancelled() {
        auto now = SteadyClock::now();
        if (!cancel_ && now - last_look_ >= std::chrono::milliseconds(1)) {
            last_look_ = now;
            if (!in_.fill(fd_, true)) host_gone();
            drain_cancels();
        }
        return cancel_;
    }
    // Blocks for the next frame of `kind`, noting kCancel on the way.
    wire::Frame wait_for(wire::Kind kind) {
        for (;;) {
            while (auto f = in_.next()) {
                if (f->kind == wire::kCancel) {
                    cancel_ = true;
                    continue;
                }
                if (f->kind == kind) return *f;
            }
            if (!in_.fill(fd_)) host_gone();
        }
    }
    // The next frame between runs; nullopt when the host closed the socket.
    std::optional<wire::Frame> next() {
        for (;;) {
            if (auto f = in_.next()) return f;
            if (!in_.fill(fd_)) return std::nullopt;
        }
    }
    void start_run() { cancel_ = false; }

private:
    void drain_cancels() {
        while (auto f = in_.next())
            if (f->kind == wire::kCancel) cancel_ = true;
    }
    [[noreturn]] static void host_gone() { std::_Exit(0); } // the host died or let go: nothing to report to

    int fd_;
    wire::FrameReader in_;
    std::string out_;
    SteadyClock::time_point first_unflushed_{}, last_look_{};
    bool cancel_ = false;
};

// What plugin code calls back through, in the worker: each call becomes a frame to the host.
class WorkerHandle final : public loader::PluginHandle {
public:
    WorkerHandle(Connection& c, std::int32_t index) : c_(c), index_(index) {}
    void log(std::int32_t level, std::string_view message) override {
        wire::encode(c_.out(), wire::LogMessage{index_, level, message});
        c_.maybe_flush();
    }
    bool cancelled() override { return c_.cancelled(); }
    void progress(std::int32_t percent, std::string_view message) override {
        wire::encode(c_.out(), wire::ProgressMessage{index_, percent, message});
        c_.maybe_flush();
    }
    jh_status enqueue(std::string_view type, std::string_view payload, const jh_enqueue_options* options,
                      std::string& id, std::string& error) override {
        if (index_ < 0) return PluginHandle::enqueue(type, payload, options, id, error);
        jh_enqueue_options o{};
        if (options && options->struct_size >= sizeof(std::uint32_t) * 2)
            std::memcpy(&o, options, std::min<std::size_t>(options->struct_size, sizeof o));
        else
            o.priority = -1;
        std::string_view key = o.unique_key.data ? std::string_view(o.unique_key.data, o.unique_key.size) : "";
        wire::encode(c_.out(),
                     wire::EnqueueMessage{index_, type, payload, o.priority, o.delay_ms, o.run_at_unix_ms, key});
        c_.flush();
        auto reply = wire::decode_enqueue_reply(c_.wait_for(wire::kEnqueueReply).body);
        id = std::string(reply.id);
        error = std::string(reply.error);
        return static_cast<jh_status>(reply.status);
    }
    void set_result(jh_status status, std::uint32_t flags, std::string_view message, std::string_view output) override {
        wire::encode(c_.out(), wire::ResultMessage{index_, status, flags, message, output});
    }

private:
    Connection& c_;
    std::int32_t index_;
};

struct OwnedJob {
    std::string id, type, payload;
    std::uint32_t attempt = 0, max_retries = 0;
};

int serve(int fd);

} // namespace

int worker_main(int fd) {
    try {
        return serve(fd);
    } catch (const wire::ProtocolError& e) {
        // the host wrote something this worker cannot read: a mismatched binary, or a bug; it sees this end
        const std::string line = std::string("jobhost worker: a damaged message from the host: ") + e.what() + "\n";
        [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
        return 2;
    }
}

namespace {

int serve(int fd) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL); // the host died: so does its worker, whatever it was running
    if (::getppid() == 1) return 0;
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGINT, SIG_IGN); // a terminal's Ctrl-C is for the host, which stops its workers itself
    // A fault in plugin code ends this process with its own signal, which the host names ("worker crashed:
    // SIGSEGV"): no handler of a runtime (a sanitizer's included) turns it into something else.
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(sig, SIG_DFL);

    Connection c(fd);
    auto fail = [&](const std::string& why) {
        wire::encode(c.out(), wire::InitFailedMessage{why});
        c.flush();
        return 0;
    };
    auto init = c.next();
    if (!init || init->kind != wire::kInit) return 2;
    auto m = wire::decode_init(init->body);
    std::string type(m.type), settings(m.settings_json), library(m.library);

    loader::LoaderOptions lo;
    lo.allow_insecure_plugins = true; // the host checked the file; this is the host's private copy of it
    loader::Discovery d;
    loader::load_file(library, lo, d);
    auto it = std::find_if(d.types.begin(), d.types.end(), [&](const auto& t) { return t.type == type; });
    if (it == d.types.end()) {
        std::string why = "the worker could not load job type " + type;
        for (const auto& p : d.problems) why += "; " + p.message;
        return fail(why);
    }
    const jh_job_descriptor& desc = it->descriptor;
    WorkerHandle type_handle(c, -1);
    jh_task_config cfg{};
    cfg.struct_size = sizeof cfg;
    cfg.type = jh_str{type.data(), type.size()};
    cfg.settings_json = jh_str{settings.data(), settings.size()};
    cfg.host = loader::host_api();
    cfg.host_handle = &type_handle;
    void* task = nullptr;
    char error[1024] = {};
    jh_status s = desc.create(&cfg, &task, error, sizeof error);
    if (s != JH_OK || !task)
        return fail(std::string("the task could not be created: ") + (error[0] ? error : "no reason given"));
    wire::encode(c.out(), wire::ReadyMessage{});
    c.flush();

    std::vector<OwnedJob> owned;
    std::deque<WorkerHandle> handles;
    std::vector<jh_job> jobs;
    while (auto f = c.next()) {
        if (f->kind != wire::kRun) continue; // a late kCancel, between runs
        auto run = wire::decode_run(f->body);
        auto count = static_cast<std::uint32_t>(run.jobs.size());
        std::int64_t deadline = run.deadline_unix_ms;
        owned.resize(count);
        for (std::uint32_t i = 0; i < count; ++i) {
            owned[i].id = run.jobs[i].id;
            owned[i].type = run.jobs[i].type;
            owned[i].payload = run.jobs[i].payload;
            owned[i].attempt = run.jobs[i].attempt;
            owned[i].max_retries = run.jobs[i].max_retries;
        }
        while (handles.size() < count) handles.emplace_back(c, static_cast<std::int32_t>(handles.size()));
        jobs.assign(count, jh_job{});
        for (std::uint32_t i = 0; i < count; ++i) {
            auto& j = jobs[i];
            j.struct_size = sizeof j;
            j.id = {owned[i].id.data(), owned[i].id.size()};
            j.type = {owned[i].type.data(), owned[i].type.size()};
            j.payload = {owned[i].payload.data(), owned[i].payload.size()};
            j.attempt = owned[i].attempt;
            j.max_retries = owned[i].max_retries;
            j.deadline_unix_ms = deadline;
            j.host_handle = &handles[i];
        }
        c.start_run();
        desc.run(task, jobs.data(), jobs.size());
        wire::encode(c.out(), wire::DoneMessage{});
        c.flush();
    }
    desc.destroy(task);
    c.flush();
    return 0;
}

} // namespace

} // namespace jobhost::runner
