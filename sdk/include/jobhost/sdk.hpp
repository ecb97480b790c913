// jobhost C++ SDK: the layer plugin authors write against. Header-only and compiled into the plugin; it turns a
// `jobhost::Task` subclass into the C descriptor of abi.h, and no C++ type crosses into the host.
//
//     #include <jobhost/sdk.hpp>
//     using namespace std::chrono_literals;
//
//     class Hello : public jobhost::Task {
//     public:
//         jobhost::Result execute(jobhost::Context& ctx) override {
//             ctx.log().info("hello from job " + std::string(ctx.id()));
//             return jobhost::Result::success();
//         }
//     };
//     JOBHOST_JOB(Hello, .type = "hello", .interval = 10s, .priority = jobhost::Priority::high);
//
// Concurrency contract: the host creates ONE instance of each task class per job type, and `execute` (and
// `validate`, `on_error`, `should_retry`, `cleanup`) may run on several threads at once when the type's concurrency
// is above 1. Keep per-run state in the Context or on the stack, not in members; members written after
// `validate_config` need their own synchronisation.
//
// Exceptions: anything a hook throws is caught by the adapter at the C boundary and becomes a failed result carrying
// the exception's message; it never reaches the host.
#ifndef JOBHOST_SDK_HPP
#define JOBHOST_SDK_HPP

#include <jobhost/abi.h>

#include <boost/dll/alias.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace jobhost {

using Duration = std::chrono::milliseconds;

// Priorities, lowest first. Across job types, a free worker always takes the highest-priority ready job.
enum class Priority : std::int32_t {
    low = JH_PRIORITY_LOW,
    normal = JH_PRIORITY_NORMAL,
    medium = JH_PRIORITY_MEDIUM,
    high = JH_PRIORITY_HIGH,
    critical = JH_PRIORITY_CRITICAL,
};

// Retry delays: min(initial * multiplier^(attempt-1), max), each scaled by a random factor in [1-jitter, 1+jitter].
struct Backoff {
    Duration initial{std::chrono::seconds(1)};
    double multiplier{2.0};
    Duration max{std::chrono::minutes(5)};
    double jitter{0.2};
};

// What a job type is. Used with designated initializers in JOBHOST_JOB; C++20 wants them in this declaration order.
// Every field but `type` has the default shown; `[jobs.<type>]` in the host's config overrides any of them.
struct JobSpec {
    const char* type = nullptr;        // required: [a-z0-9_.-]+, unique across all loaded plugins
    const char* name = nullptr;        // human-readable name; defaults to the type
    const char* description = nullptr; // one line for `jobhost plugins`
    const char* version = nullptr;     // the job type's own version, free-form
    bool enabled = true;               // a disabled type is loaded and listed but never runs
    Duration interval{0};              // run every interval; 0: not periodic (see cron)
    const char* cron = nullptr;        // five-field cron expression (UTC); mutually exclusive with interval
    Priority priority = Priority::normal;
    std::int32_t max_retries = 3; // a job runs at most 1 + max_retries times
    Backoff backoff{};
    Duration timeout{0};           // 0: no timeout
    std::uint32_t concurrency = 1; // runs of this type at once, at most
    std::uint32_t batch_size = 1;  // jobs handed to one execute_batch call, at most
    bool dead_letter = true;       // keep jobs that exhaust their retries; false: drop them (logged and counted)
};

// The outcome of one run. Cheap to copy; a success carries an optional JSON output.
class Result {
public:
    enum class Kind { success, failure, permanent };

    static Result success(std::string message = {}, boost::json::value output = nullptr) {
        return Result(Kind::success, std::move(message), std::move(output));
    }
    // A failure that may be retried (subject to max_retries and should_retry).
    static Result failure(std::string message) { return Result(Kind::failure, std::move(message), nullptr); }
    // A failure that is never retried: the job goes straight to the dead-letter queue.
    static Result permanent(std::string message) { return Result(Kind::permanent, std::move(message), nullptr); }

    Kind kind() const noexcept { return kind_; }
    bool ok() const noexcept { return kind_ == Kind::success; }
    bool permanent() const noexcept { return kind_ == Kind::permanent; }
    const std::string& message() const noexcept { return message_; }
    const boost::json::value& output() const noexcept { return output_; }

private:
    Result(Kind kind, std::string message, boost::json::value output)
        : kind_(kind), message_(std::move(message)), output_(std::move(output)) {}
    Kind kind_;
    std::string message_;
    boost::json::value output_;
};

// Why a run failed, as handed to on_error and should_retry.
struct Error {
    std::string message;
    bool permanent = false; // the run returned Result::permanent
    bool exception = false; // a hook threw
};

// Writes through the host's Boost.Log sinks, tagged with the job type (and job id inside a run). Thread-safe.
class Logger {
public:
    Logger(const jh_host_api* host, void* handle) noexcept : host_(host), handle_(handle) {}
    void trace(std::string_view m) const noexcept { write(JH_LOG_TRACE, m); }
    void debug(std::string_view m) const noexcept { write(JH_LOG_DEBUG, m); }
    void info(std::string_view m) const noexcept { write(JH_LOG_INFO, m); }
    void warning(std::string_view m) const noexcept { write(JH_LOG_WARNING, m); }
    void error(std::string_view m) const noexcept { write(JH_LOG_ERROR, m); }

private:
    void write(std::int32_t level, std::string_view m) const noexcept {
        if (host_ && host_->log) host_->log(handle_, level, jh_str{m.data(), m.size()});
    }
    const jh_host_api* host_;
    void* handle_;
};

// Options for Context::enqueue.
struct EnqueueOptions {
    std::optional<Priority> priority; // default: the type's own
    Duration delay{0};                // run no earlier than now + delay
    std::string unique_key;           // empty: none
};

// The outcome of Context::enqueue: the new job's id, or why nothing was queued.
struct EnqueueResult {
    bool ok = false;
    std::string id;    // when ok
    std::string error; // when not ok
};

// Everything a run knows about its job. Made by the adapter for one run and valid only during it; not shared
// between threads, so its lazily parsed payload needs no lock.
class Context {
public:
    Context(const jh_job& job, const jh_host_api* host, const boost::json::object& settings) noexcept
        : job_(job), host_(host), settings_(settings) {}

    std::string_view id() const noexcept { return {job_.id.data, job_.id.size}; }
    std::string_view type() const noexcept { return {job_.type.data, job_.type.size}; }
    std::uint32_t attempt() const noexcept { return job_.attempt; }         // 1 on the first run
    std::uint32_t max_retries() const noexcept { return job_.max_retries; } // runs at most 1 + this
    bool last_attempt() const noexcept { return job_.attempt > job_.max_retries; }

    // The payload as JSON text, exactly as enqueued ("null" when none was given).
    std::string_view payload_text() const noexcept { return {job_.payload.data, job_.payload.size}; }
    // The payload parsed; parsed on first use. Throws boost::system::system_error if it is not JSON (the host
    // validates payloads on enqueue, so this only happens for a hand-written store entry).
    const boost::json::value& payload() const {
        if (!payload_) payload_ = boost::json::parse(payload_text());
        return *payload_;
    }
    // The type's [jobs.<type>.settings] table, as JSON.
    const boost::json::object& settings() const noexcept { return settings_; }

    Logger log() const noexcept { return Logger(host_, job_.host_handle); }

    // True once the job should stop (deadline passed, or host shutting down). Long runs should check it.
    bool cancelled() const noexcept { return host_->cancelled && host_->cancelled(job_.host_handle) != 0; }
    // The deadline, when the type has a timeout.
    std::optional<std::chrono::system_clock::time_point> deadline() const noexcept {
        if (job_.deadline_unix_ms == 0) return std::nullopt;
        return std::chrono::system_clock::time_point(std::chrono::milliseconds(job_.deadline_unix_ms));
    }
    void progress(int percent, std::string_view message = {}) const noexcept {
        if (host_->progress) host_->progress(job_.host_handle, percent, jh_str{message.data(), message.size()});
    }
    // Enqueues another job; `payload` is JSON text. Never throws for a refused enqueue: look at the result.
    EnqueueResult enqueue(std::string_view type, std::string_view payload = "null",
                          const EnqueueOptions& options = {}) const {
        if (!host_->enqueue) return {false, {}, "enqueue is not supported by this host"};
        jh_enqueue_options o{};
        o.struct_size = sizeof o;
        o.priority = options.priority ? static_cast<std::int32_t>(*options.priority) : -1;
        o.delay_ms = options.delay.count();
        o.unique_key = jh_str{options.unique_key.data(), options.unique_key.size()};
        char id[128] = {};
        char err[512] = {};
        jh_status s = host_->enqueue(job_.host_handle, jh_str{type.data(), type.size()},
                                     jh_str{payload.data(), payload.size()}, &o, id, sizeof id, err, sizeof err);
        if (s == JH_OK) return {true, id, {}};
        return {
            false, {}, err[0] ? std::string(err) : std::string("enqueue refused (status ") + std::to_string(s) + ")"};
    }

private:
    const jh_job& job_;
    const jh_host_api* host_;
    const boost::json::object& settings_;
    mutable std::optional<boost::json::value> payload_;
};

// The base class of a job type. Only `execute` is required. See the concurrency contract at the top of this file.
class Task {
public:
    virtual ~Task() = default;

    // Called once when the type is loaded, with its [jobs.<type>.settings]. A failure (or a throw) disables the
    // type, and the host reports the message. Read settings into members here; it runs before any execute.
    virtual Result validate_config(const boost::json::object& settings) {
        (void)settings;
        return Result::success();
    }
    // Called before each run. A failure is a failed run (retried like any other), never a success.
    virtual Result validate(Context& ctx) {
        (void)ctx;
        return Result::success();
    }
    // Does the work.
    virtual Result execute(Context& ctx) = 0;
    // Runs up to batch_size jobs at once; must return one Result per context, in order. The default runs execute
    // on each. A missing result counts as a failure of that job.
    virtual std::vector<Result> execute_batch(std::span<Context> jobs) {
        std::vector<Result> out;
        out.reserve(jobs.size());
        for (auto& ctx : jobs) out.push_back(run_guarded([&] { return execute(ctx); }));
        return out;
    }
    // Called after a failed run. Return a Result to replace the failure (for example a success after recovery).
    virtual std::optional<Result> on_error(Context& ctx, const Error& error) {
        (void)ctx;
        (void)error;
        return std::nullopt;
    }
    // Called after a retryable failure; false stops retrying and sends the job to the dead-letter queue.
    virtual bool should_retry(Context& ctx, const Error& error) {
        (void)ctx;
        (void)error;
        return true;
    }
    // Always called after the run, whatever its outcome.
    virtual void cleanup(Context& ctx) { (void)ctx; }

protected:
    // Runs f, turning an exception into a failed Result.
    template <class F>
    static Result run_guarded(F&& f) noexcept {
        try {
            return f();
        } catch (const std::exception& e) {
            return Result::failure(std::string("exception: ") + e.what());
        } catch (...) {
            return Result::failure("exception of unknown type");
        }
    }
};

namespace detail {

inline void write_error(char* buf, std::size_t cap, std::string_view msg) noexcept {
    if (!buf || cap == 0) return;
    std::size_t n = msg.size() < cap - 1 ? msg.size() : cap - 1;
    std::memcpy(buf, msg.data(), n);
    buf[n] = '\0';
}

// What create() hands back to the host as the opaque task pointer.
struct TaskBox {
    std::unique_ptr<Task> task;
    boost::json::object settings;
    const jh_host_api* host = nullptr;
    void* handle = nullptr;
};

template <class T>
jh_status create(const jh_task_config* config, void** task_out, char* error, std::size_t error_cap) noexcept {
    *task_out = nullptr;
    try {
        auto box = std::make_unique<TaskBox>();
        box->host = config->host;
        box->handle = config->host_handle;
        std::string_view text(config->settings_json.data, config->settings_json.size);
        if (!text.empty()) {
            boost::json::value v = boost::json::parse(text);
            if (!v.is_object()) {
                write_error(error, error_cap, "settings must be a JSON object");
                return JH_INVALID;
            }
            box->settings = std::move(v.as_object());
        }
        try {
            box->task = std::make_unique<T>();
        } catch (const std::exception& e) {
            write_error(error, error_cap, std::string("the task's constructor threw: ") + e.what());
            return JH_FAILED;
        }
        Result r = Result::success();
        try {
            r = box->task->validate_config(box->settings);
        } catch (const std::exception& e) {
            write_error(error, error_cap, std::string("validate_config threw: ") + e.what());
            return JH_INVALID;
        }
        if (!r.ok()) {
            write_error(error, error_cap, "validate_config: " + r.message());
            return JH_INVALID;
        }
        *task_out = box.release();
        return JH_OK;
    } catch (const std::exception& e) {
        write_error(error, error_cap, std::string("creating the task failed: ") + e.what());
        return JH_FAILED;
    } catch (...) {
        write_error(error, error_cap, "creating the task failed with an exception of unknown type");
        return JH_FAILED;
    }
}

inline void destroy(void* task) noexcept {
    delete static_cast<TaskBox*>(task); // a throwing destructor terminates, as it would anywhere
}

inline void report(const jh_host_api* host, const jh_job& job, const Result& r, bool no_retry) noexcept {
    jh_status s = r.ok() ? JH_OK : (r.permanent() ? JH_PERMANENT : JH_FAILED);
    std::string out;
    try {
        if (!r.output().is_null()) out = boost::json::serialize(r.output());
    } catch (...) {
    }
    host->set_result(job.host_handle, s, no_retry ? JH_RESULT_NO_RETRY : 0u,
                     jh_str{r.message().data(), r.message().size()}, jh_str{out.data(), out.size()});
}

inline void run(void* task, const jh_job* jobs, std::size_t count) noexcept {
    auto* box = static_cast<TaskBox*>(task);
    Task& t = *box->task;
    try {
        std::vector<Context> ctxs;
        ctxs.reserve(count);
        for (std::size_t i = 0; i < count; ++i) ctxs.emplace_back(jobs[i], box->host, box->settings);

        // validate each; the ones that pass go to execute (or execute_batch) together
        std::vector<std::optional<Result>> results(count);
        std::vector<bool> threw(count, false);
        std::vector<Context> valid;
        std::vector<std::size_t> valid_index;
        for (std::size_t i = 0; i < count; ++i) {
            Result v = Result::success();
            try {
                v = t.validate(ctxs[i]);
            } catch (const std::exception& e) {
                v = Result::failure(std::string("validate threw: ") + e.what());
                threw[i] = true;
            } catch (...) {
                v = Result::failure("validate threw an exception of unknown type");
                threw[i] = true;
            }
            if (v.ok()) {
                valid.push_back(ctxs[i]);
                valid_index.push_back(i);
            } else {
                results[i] = Result::failure("validate: " + v.message());
                if (v.permanent()) results[i] = Result::permanent("validate: " + v.message());
            }
        }
        if (valid.size() == 1) {
            std::size_t i = valid_index[0];
            try {
                results[i] = t.execute(valid[0]);
            } catch (const std::exception& e) {
                results[i] = Result::failure(std::string("exception: ") + e.what());
                threw[i] = true;
            } catch (...) {
                results[i] = Result::failure("exception of unknown type");
                threw[i] = true;
            }
        } else if (!valid.empty()) {
            std::vector<Result> batch;
            try {
                batch = t.execute_batch(std::span<Context>(valid));
            } catch (const std::exception& e) {
                batch.assign(valid.size(), Result::failure(std::string("execute_batch threw: ") + e.what()));
            } catch (...) {
                batch.assign(valid.size(), Result::failure("execute_batch threw an exception of unknown type"));
            }
            for (std::size_t k = 0; k < valid.size(); ++k) {
                results[valid_index[k]] =
                    k < batch.size() ? batch[k]
                                     : Result::failure("execute_batch returned " + std::to_string(batch.size()) +
                                                       " results for " + std::to_string(valid.size()) + " jobs");
            }
        }

        for (std::size_t i = 0; i < count; ++i) {
            Result r = std::move(*results[i]);
            bool no_retry = false;
            if (!r.ok()) {
                Error err{r.message(), r.permanent(), threw[i]};
                try {
                    if (auto recovered = t.on_error(ctxs[i], err)) r = std::move(*recovered);
                } catch (const std::exception& e) {
                    ctxs[i].log().error(std::string("on_error threw: ") + e.what());
                } catch (...) {
                    ctxs[i].log().error("on_error threw an exception of unknown type");
                }
                if (!r.ok() && !r.permanent()) {
                    try {
                        no_retry = !t.should_retry(ctxs[i], err);
                    } catch (...) {
                        ctxs[i].log().error("should_retry threw; retrying as configured");
                    }
                }
            }
            try {
                t.cleanup(ctxs[i]);
            } catch (const std::exception& e) {
                ctxs[i].log().error(std::string("cleanup threw: ") + e.what());
            } catch (...) {
                ctxs[i].log().error("cleanup threw an exception of unknown type");
            }
            report(box->host, jobs[i], r, no_retry);
        }
    } catch (...) {
        // Out of memory or worse: report what we can; the host counts jobs without a result as failed.
    }
}

template <class T>
constexpr jh_job_descriptor describe(const JobSpec& s) noexcept {
    jh_job_descriptor d{};
    d.struct_size = sizeof(jh_job_descriptor);
    d.abi_version = JOBHOST_ABI_VERSION;
    d.type = s.type;
    d.name = s.name;
    d.description = s.description;
    d.version = s.version;
    d.enabled = s.enabled ? 1 : 0;
    d.priority = static_cast<std::int32_t>(s.priority);
    d.interval_ms = s.interval.count();
    d.cron = s.cron;
    d.max_retries = s.max_retries;
    d.dead_letter = s.dead_letter ? 1 : 0;
    d.backoff_initial_ms = s.backoff.initial.count();
    d.backoff_multiplier = s.backoff.multiplier;
    d.backoff_max_ms = s.backoff.max.count();
    d.backoff_jitter = s.backoff.jitter;
    d.timeout_ms = s.timeout.count();
    d.concurrency = s.concurrency;
    d.batch_size = s.batch_size;
    d.create = &create<T>;
    d.destroy = &destroy;
    d.run = &run;
    return d;
}

} // namespace detail
} // namespace jobhost

// Registers TaskClass as a job type. Use once per task class, at global scope, with the class's unqualified name
// (bring a namespaced class in with `using`). The fields after the class are JobSpec's designated initializers, in
// JobSpec's declaration order. A library may hold any number of JOBHOST_JOB lines, in any number of files.
namespace jobhost::detail {
// What JOBHOST_JOB checks at compile time (the host checks the same again at load, for plugins built otherwise).
consteval bool valid_type_name(const char* type) {
    if (!type || !*type) return false;
    std::size_t n = 0;
    for (const char* c = type; *c; ++c, ++n) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-';
        if (!ok || n >= 128) return false;
    }
    return true;
}
consteval bool one_schedule(const JobSpec& spec) {
    return !(spec.interval.count() > 0 && spec.cron && *spec.cron);
}
} // namespace jobhost::detail

#define JOBHOST_JOB(TaskClass, ...)                                                                                    \
    static_assert(::jobhost::detail::valid_type_name(::jobhost::JobSpec{__VA_ARGS__}.type),                            \
                  "JOBHOST_JOB: .type must be 1 to 128 characters of a-z, 0-9, '_', '.' and '-'");                     \
    static_assert(::jobhost::detail::one_schedule(::jobhost::JobSpec{__VA_ARGS__}),                                    \
                  "JOBHOST_JOB: give .interval or .cron, not both");                                                   \
    static constexpr ::jh_job_descriptor jobhost_descriptor_##TaskClass =                                              \
        ::jobhost::detail::describe<TaskClass>(::jobhost::JobSpec{__VA_ARGS__});                                       \
    BOOST_DLL_ALIAS_SECTIONED(jobhost_descriptor_##TaskClass, jobhost_job_##TaskClass, jobhost)

#endif // JOBHOST_SDK_HPP
