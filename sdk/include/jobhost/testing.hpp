// Unit-testing a Task without a host: runs it through the same adapter the host calls (settings, validate_config,
// validate, execute or execute_batch, on_error, should_retry, cleanup), with a fake host that records what the run
// did. Header-only; use it from any test framework.
//
//   auto runner = jobhost::testing::TaskRunner::make<Greet>({{"name", "world"}});
//   auto run = runner.run({.payload = R"({"name":"ada"})"});
//   assert(run.ok() && run.message == "hello ada");
//   assert(run.progress.back().percent == 100);
#ifndef JOBHOST_TESTING_HPP
#define JOBHOST_TESTING_HPP

#include <jobhost/sdk.hpp>

#include <functional>
#include <stdexcept>

namespace jobhost::testing {

// One job handed to a run.
struct Job {
    std::string payload = "null"; // JSON text
    std::uint32_t attempt = 1;    // 1 on the first run
    std::uint32_t max_retries = 3;
    std::optional<std::chrono::system_clock::time_point> deadline;
    std::function<bool()> cancelled; // asked by Context::cancelled(); unset: never cancelled
};

struct Enqueued {
    std::string type;
    std::string payload;
    std::optional<Priority> priority;
    Duration delay{0};
    std::string unique_key;
};

struct ProgressReport {
    int percent = 0;
    std::string message;
};

struct LogLine {
    int level = JH_LOG_INFO; // JH_LOG_*
    std::string message;
};

// What one job's run did, as the host would have seen it.
struct Run {
    bool reported = false; // the adapter reported a result (a job without one counts as failed)
    jh_status status = JH_FAILED;
    bool no_retry = false; // should_retry said no
    std::string message;   // Result::message
    std::string output;    // Result::output as JSON text; empty for none
    std::vector<Enqueued> enqueued;
    std::vector<ProgressReport> progress;
    std::vector<LogLine> logs;

    bool ok() const noexcept { return reported && status == JH_OK; }
    bool permanent() const noexcept { return status == JH_PERMANENT; }
    // Failed, and the host would retry it (attempts permitting).
    bool retryable() const noexcept { return reported && status == JH_FAILED && !no_retry; }
    boost::json::value output_json() const {
        return output.empty() ? boost::json::value() : boost::json::parse(output);
    }
};

class TaskRunner {
public:
    // Makes the task as the host does: its constructor, then validate_config with `settings`. Throws
    // std::runtime_error with the message the host would log when that fails.
    template <class T>
    static TaskRunner make(boost::json::object settings = {}, std::string type = "test") {
        TaskRunner r;
        r.type_ = std::move(type);
        r.settings_ = boost::json::serialize(settings);
        r.api_ = std::make_unique<jh_host_api>();
        r.api_->struct_size = sizeof(jh_host_api);
        r.api_->abi_version = JOBHOST_ABI_VERSION;
        r.api_->log = &log_fn;
        r.api_->cancelled = &cancelled_fn;
        r.api_->progress = &progress_fn;
        r.api_->enqueue = &enqueue_fn;
        r.api_->set_result = &set_result_fn;
        jh_task_config config{};
        config.struct_size = sizeof config;
        config.type = jh_str{r.type_.data(), r.type_.size()};
        config.settings_json = jh_str{r.settings_.data(), r.settings_.size()};
        config.host = r.api_.get();
        config.host_handle = static_cast<Sink*>(r.outside_.get());
        char error[1024] = {};
        void* task = nullptr;
        if (detail::create<T>(&config, &task, error, sizeof error) != JH_OK)
            throw std::runtime_error(std::string("the task could not be made: ") + error);
        r.task_ = task;
        return r;
    }

    TaskRunner(TaskRunner&& o) noexcept { *this = std::move(o); }
    TaskRunner& operator=(TaskRunner&& o) noexcept {
        std::swap(task_, o.task_);
        std::swap(api_, o.api_);
        std::swap(type_, o.type_);
        std::swap(settings_, o.settings_);
        std::swap(outside_, o.outside_);
        std::swap(refuse_enqueues_, o.refuse_enqueues_);
        std::swap(next_id_, o.next_id_);
        return *this;
    }
    ~TaskRunner() {
        if (task_) detail::destroy(task_);
    }

    // Runs one job.
    Run run(const Job& job) { return std::move(run_batch({job}).front()); }

    // Runs jobs as one batch (execute_batch when more than one passes validate), as a type with batch_size does.
    std::vector<Run> run_batch(const std::vector<Job>& jobs) {
        std::vector<Handle> handles(jobs.size());
        std::vector<std::string> ids(jobs.size());
        std::vector<jh_job> raw(jobs.size());
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            handles[i].job = &jobs[i];
            handles[i].runner = this;
            ids[i] = std::to_string(++next_id_);
            raw[i].struct_size = sizeof(jh_job);
            raw[i].id = jh_str{ids[i].data(), ids[i].size()};
            raw[i].type = jh_str{type_.data(), type_.size()};
            raw[i].payload = jh_str{jobs[i].payload.data(), jobs[i].payload.size()};
            raw[i].attempt = jobs[i].attempt;
            raw[i].max_retries = jobs[i].max_retries;
            raw[i].deadline_unix_ms =
                jobs[i].deadline
                    ? std::chrono::duration_cast<std::chrono::milliseconds>(jobs[i].deadline->time_since_epoch())
                          .count()
                    : 0;
            raw[i].host_handle = static_cast<Sink*>(&handles[i]);
        }
        detail::run(task_, raw.data(), raw.size());
        std::vector<Run> out;
        for (auto& h : handles) out.push_back(std::move(h.run));
        return out;
    }

    // From now on Context::enqueue is refused with this message (empty: accepted again).
    void refuse_enqueues(std::string why) { refuse_enqueues_ = std::move(why); }
    // What the task logged outside any run (from validate_config, say).
    const std::vector<LogLine>& logs_outside_runs() const noexcept { return outside_->logs; }

private:
    TaskRunner() = default;
    // What a host_handle points at: the task outside runs, or one job of a run (a Handle).
    struct Sink {
        bool is_job = false;
        std::vector<LogLine> logs;
    };
    struct Handle : Sink {
        const Job* job = nullptr;
        TaskRunner* runner = nullptr;
        Run run;
        Handle() { is_job = true; }
    };
    static Handle* job_of(void* handle) { return static_cast<Handle*>(static_cast<Sink*>(handle)); }

    static std::string text(jh_str s) { return s.data ? std::string(s.data, s.size) : std::string(); }

    static void log_fn(void* handle, std::int32_t level, jh_str message) {
        auto* sink = static_cast<Sink*>(handle);
        if (sink->is_job)
            job_of(handle)->run.logs.push_back({level, text(message)});
        else
            sink->logs.push_back({level, text(message)});
    }
    static std::int32_t cancelled_fn(void* handle) {
        auto* h = job_of(handle);
        return h->job->cancelled && h->job->cancelled() ? 1 : 0;
    }
    static void progress_fn(void* handle, std::int32_t percent, jh_str message) {
        job_of(handle)->run.progress.push_back({percent, text(message)});
    }
    static jh_status enqueue_fn(void* handle, jh_str type, jh_str payload, const jh_enqueue_options* options,
                                char* id_out, std::size_t id_cap, char* error, std::size_t error_cap) {
        auto* h = job_of(handle);
        if (!h->runner->refuse_enqueues_.empty()) {
            detail::write_error(error, error_cap, h->runner->refuse_enqueues_);
            return JH_INVALID;
        }
        Enqueued e{text(type), payload.size ? text(payload) : std::string("null"), std::nullopt, Duration(0), {}};
        if (options) {
            if (options->priority >= 0) e.priority = static_cast<Priority>(options->priority);
            e.delay = Duration(options->delay_ms);
            e.unique_key = text(options->unique_key);
        }
        h->run.enqueued.push_back(std::move(e));
        detail::write_error(id_out, id_cap, "enqueued-" + std::to_string(h->run.enqueued.size()));
        return JH_OK;
    }
    static void set_result_fn(void* handle, jh_status status, std::uint32_t flags, jh_str message, jh_str output) {
        auto& r = job_of(handle)->run;
        r.reported = true;
        r.status = status;
        r.no_retry = (flags & JH_RESULT_NO_RETRY) != 0;
        r.message = text(message);
        r.output = text(output);
    }

    void* task_ = nullptr;
    std::unique_ptr<jh_host_api> api_;
    std::string type_;
    std::string settings_;
    std::unique_ptr<Sink> outside_ = std::make_unique<Sink>(); // a stable address: the task keeps a pointer to it
    std::string refuse_enqueues_;
    std::uint64_t next_id_ = 0;
};

} // namespace jobhost::testing

#endif // JOBHOST_TESTING_HPP
