#include "executor/executor.hpp"

#include "executor/outcome.hpp"

#include "log/log.hpp"
#include "runner/runner.hpp"

#include <boost/asio/post.hpp>
#include <boost/json/parser.hpp>

#include <algorithm>
#include <cmath>
#include <random>

namespace jobhost::executor {

using store::Clock;
using store::JobRecord;
using store::Outcome;

struct Executor::Lane {
    std::string type;
    std::shared_ptr<runner::Runner> task; // null: unusable
    std::string unusable_reason;
    // A new version waiting for the runs of the current one to end (a replaced library): while set, the lane takes
    // no new jobs; the last run to end swaps it in.
    std::shared_ptr<runner::Runner> next_task;
    bool swapping = false;
    std::shared_ptr<const registry::JobSettings> settings;
    std::uint32_t running_runs = 0; // against settings->concurrency
    bool has_work = true;           // the store may hold claimable jobs of this type (false: a claim said none)
    store::TypeRef ref = 0;
    TypeMetrics m;
    std::atomic<std::uint64_t> stuck{0}; // counted by the watchdog on the io thread, without the lock
};

std::string_view event_kind_name(JobEventKind k) {
    switch (k) {
    case JobEventKind::enqueued: return "enqueued";
    case JobEventKind::started: return "started";
    case JobEventKind::succeeded: return "succeeded";
    case JobEventKind::failed: return "failed";
    case JobEventKind::timed_out: return "timed_out";
    case JobEventKind::retried: return "retried";
    case JobEventKind::dead_lettered: return "dead_lettered";
    case JobEventKind::dropped: return "dropped";
    case JobEventKind::released: return "released";
    case JobEventKind::coalesced: return "coalesced";
    case JobEventKind::stuck: return "stuck";
    case JobEventKind::plugin_loaded: return "plugin_loaded";
    case JobEventKind::plugin_replaced: return "plugin_replaced";
    case JobEventKind::plugin_removed: return "plugin_removed";
    case JobEventKind::plugin_refused: return "plugin_refused";
    }
    return "unknown";
}

namespace {

double uniform(double lo, double hi) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(lo, hi)(rng);
}

std::string ms_text(Duration d) {
    return core::format_duration(d);
}

} // namespace

// One job inside a run: the handle plugin code calls back through.
class RunningJob final : public loader::PluginHandle {
public:
    RunningJob(RunContext& run, JobRecord& job) : run_(run), job_(job), id_text_(std::to_string(job.id)) {}
    void log(std::int32_t level, std::string_view message) override;
    bool cancelled() override;
    void progress(std::int32_t percent, std::string_view message) override {
        log::write(log::Level::debug, "job", "progress " + std::to_string(percent) + "% " + std::string(message),
                   job_.type, id_text_);
    }
    jh_status enqueue(std::string_view type, std::string_view payload, const jh_enqueue_options* options,
                      std::string& id, std::string& error) override;
    void set_result(jh_status status, std::uint32_t flags, std::string_view message, std::string_view output) override {
        has_result = true;
        this->status = status;
        this->flags = flags;
        this->message.assign(message);
        this->output.assign(output);
    }

    JobRecord& job() { return job_; }
    const std::string& id_text() const { return id_text_; }

    bool has_result = false;
    jh_status status = JH_FAILED;
    std::uint32_t flags = 0;
    std::string message;
    std::string output;

private:
    RunContext& run_;
    JobRecord& job_;
    std::string id_text_;
};

// One call into the plugin (one job, or one batch). Shared with its timeout watch on the io_context, which may
// outlive the call; the watch touches only the atomics and strings here.
class RunContext {
public:
    RunContext(Executor& ex, Executor::Lane& lane, std::string type) : ex(ex), lane(&lane), type(std::move(type)) {}
    Executor& ex;
    Executor::Lane* lane;               // lanes live as long as the executor
    std::atomic<bool> cancelled{false}; // the deadline passed or the host is shutting down
    std::atomic<bool> timed_out{false};
    std::atomic<bool> finished{false};
    std::optional<boost::asio::steady_timer> timer; // only for types with a timeout
    std::string type;
    std::string ids; // for log lines
    std::vector<store::JobId> job_ids;
};

void RunningJob::log(std::int32_t level, std::string_view message) {
    log::write(static_cast<log::Level>(std::clamp<std::int32_t>(level, JH_LOG_TRACE, JH_LOG_ERROR)), "job", message,
               job_.type, id_text_);
}

bool RunningJob::cancelled() {
    return run_.cancelled.load(std::memory_order_relaxed) || run_.ex.shutting_down_.load(std::memory_order_relaxed);
}

jh_status RunningJob::enqueue(std::string_view type, std::string_view payload, const jh_enqueue_options* options,
                              std::string& id, std::string& error) {
    EnqueueRequest r;
    r.from_job = true; // accepted while the host drains: the follow-up work of a finished job is not lost
    r.type = std::string(type);
    r.payload = payload.empty() ? std::string("null") : std::string(payload);
    if (options && options->struct_size >= sizeof(std::uint32_t) * 2) {
        if (options->priority >= 0 && options->priority <= 4)
            r.priority = static_cast<registry::Priority>(options->priority);
        if (options->delay_ms > 0) r.delay = Duration(options->delay_ms);
        if (options->run_at_unix_ms > 0)
            r.run_at = store::TimePoint(std::chrono::milliseconds(options->run_at_unix_ms));
        if (options->unique_key.data && options->unique_key.size)
            r.unique_key.assign(options->unique_key.data, options->unique_key.size);
    }
    auto result = run_.ex.enqueue(r);
    if (!result.ok) {
        error = result.error;
        return JH_INVALID;
    }
    id = std::to_string(result.id);
    return JH_OK;
}

Executor::Executor(boost::asio::io_context& io, const registry::Registry& registry, store::JobStore& store,
                   ExecutorOptions options)
    : io_(io), store_(store), options_(std::move(options)), idle_workers_(options_.workers), due_timer_(io),
      backoff_timer_(io), pool_(options_.workers) {
    for (const auto& [name, t] : registry.types()) {
        auto l = std::make_unique<Lane>();
        l->type = name;
        l->task = t.task;
        l->unusable_reason = t.error;
        l->settings = std::make_shared<const registry::JobSettings>(t.effective);
        l->ref = store.intern(name);
        lane_list_.push_back(l.get());
        lanes_.emplace(name, std::move(l));
        type_names_.insert(name);
    }
    store_.set_wakeup([this] {
        poke();
        arm_due_timer();
    });
}

Executor::~Executor() {
    store_.set_wakeup({}); // waits for a wakeup in progress
    shutdown(Duration(0));
    pool_.join();
}

void Executor::emit(JobEventKind kind, std::string_view type, store::JobId id, std::uint32_t attempt, Duration duration,
                    std::string_view error) const noexcept {
    if (!options_.observer) return;
    options_.observer->on_event(JobEvent{kind, type, id, attempt, duration, error, Clock::now()});
}

void Executor::poke() {
    std::lock_guard lock(mutex_);
    for (Lane* l : lane_list_) l->has_work = true;
    if (idle_workers_ > 0) pump_locked();
}

Executor::Lane* Executor::lane(std::string_view type) {
    auto it = lanes_.find(type);
    return it == lanes_.end() ? nullptr : it->second.get();
}

std::optional<std::string> payload_error(std::string_view payload) {
    boost::json::parser p;
    boost::system::error_code ec;
    std::size_t used = p.write_some(payload.data(), payload.size(), ec);
    if (!ec && used < payload.size()) ec = boost::json::error::extra_data;
    if (!ec) return std::nullopt;
    return ec.message() + " at byte " + std::to_string(used);
}

EnqueueResult Executor::enqueue(const EnqueueRequest& request) {
    return std::move(enqueue(std::span<const EnqueueRequest>(&request, 1)).front());
}

std::vector<EnqueueResult> Executor::enqueue(std::span<const EnqueueRequest> requests) {
    std::vector<EnqueueResult> results(requests.size());
    std::vector<store::NewJob> jobs;
    std::vector<std::size_t> index; // jobs[k] is requests[index[k]]
    std::vector<Lane*> lanes(requests.size(), nullptr);
    std::vector<std::shared_ptr<const registry::JobSettings>> settings(requests.size());
    std::vector<std::string> unusable(requests.size()); // why a lane has no code to run, as it was under the lock
    jobs.reserve(requests.size());
    index.reserve(requests.size());
    bool accepting;
    {
        std::lock_guard lock(mutex_);
        accepting = accepting_;
        for (std::size_t i = 0; i < requests.size(); ++i)
            if ((lanes[i] = lane(requests[i].type))) {
                settings[i] = lanes[i]->settings;
                if (!lanes[i]->task && !lanes[i]->swapping) unusable[i] = lanes[i]->unusable_reason;
            }
    }
    auto now = Clock::now();
    std::size_t refused_payloads = 0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const auto& request = requests[i];
        auto& result = results[i];
        Lane* ln = lanes[i];
        if (!ln) {
            result.error = "unknown job type '" + request.type + "'; nothing was queued (see 'jobhost plugins')";
            continue;
        }
        if (!accepting && !request.from_job) {
            result.error = "the host is shutting down; nothing was queued";
            continue;
        }
        if (!unusable[i].empty()) {
            result.error = "job type '" + request.type + "' is unusable (" + unusable[i] + "); nothing was queued";
            continue;
        }
        if (!settings[i]->enabled) {
            result.error = "job type '" + request.type + "' is disabled (enabled = false); nothing was queued";
            continue;
        }
        if (request.payload != "null") {
            if (auto why = payload_error(request.payload)) {
                result.error = "the payload is not valid JSON (" + *why + "); nothing was queued";
                ++refused_payloads;
                continue;
            }
        }
        store::NewJob& n = jobs.emplace_back();
        n.type = request.type;
        n.payload = request.payload;
        n.priority = request.priority.value_or(settings[i]->priority);
        n.unique_key = request.from_schedule ? std::string(store::kScheduleKey) : request.unique_key;
        n.max_attempts = static_cast<std::uint32_t>(1 + settings[i]->max_retries);
        n.from_schedule = request.from_schedule;
        n.tick = request.tick;
        if (request.delay.count() > 0)
            n.run_at = now + request.delay;
        else if (request.run_at)
            n.run_at = *request.run_at;
        index.push_back(i);
    }
    if (jobs.empty() && refused_payloads == 0) return results;
    auto out = jobs.empty() ? std::vector<store::EnqueueOutcome>{} : store_.enqueue(jobs);
    bool delayed = false;
    {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < requests.size(); ++i)
            if (lanes[i] && !results[i].error.empty() && results[i].error.rfind("the payload", 0) == 0)
                lanes[i]->m.refused += 1;
        for (std::size_t k = 0; k < jobs.size(); ++k) {
            std::size_t i = index[k];
            auto& result = results[i];
            Lane* ln = lanes[i];
            result.id = out[k].id;
            if (out[k].tick_taken) {
                result.tick_taken = true;
                result.error = "this tick of the schedule was queued already";
                continue;
            }
            if (!out[k].created && requests[i].from_schedule) {
                result.duplicate = true;
                result.error = "the previous run from the schedule is still pending or running (job " +
                               std::to_string(result.id) + "); tick coalesced";
                ln->m.coalesced += 1;
                emit(JobEventKind::coalesced, ln->type, 0);
                continue;
            }
            if (!out[k].created) {
                result.duplicate = true;
                result.error = "a job of type '" + requests[i].type + "' with unique key '" + requests[i].unique_key +
                               "' is already pending or running: job " + std::to_string(result.id) +
                               "; nothing was queued";
                ln->m.refused += 1;
                continue;
            }
            result.ok = true;
            ln->m.enqueued += 1;
            emit(JobEventKind::enqueued, ln->type, result.id);
            ln->has_work = true;
            delayed = delayed || jobs[k].run_at > now;
        }
        if (idle_workers_ > 0) pump_locked();
    }
    if (delayed) arm_due_timer();
    return results;
}

bool Executor::tick(const std::string& type, store::TimePoint tick_at) {
    EnqueueRequest r;
    r.type = type;
    r.from_schedule = true;
    r.tick = tick_at;
    auto result = enqueue(r);
    if (result.ok) return true;
    if (result.tick_taken) {
        log::write(log::Level::debug, "scheduler", "tick queued already (by another host sharing the store)", type);
        if (options_.observer) options_.observer->on_schedule(type, Clock::now());
    } else if (result.duplicate)
        log::write(log::Level::debug, "scheduler", "tick coalesced: " + result.error, type);
    else if (accepting())
        log::write(log::Level::warning, "scheduler", "tick not queued: " + result.error, type);
    return false;
}

Executor::Claimed Executor::claim_locked() {
    if (!dispatching_) return {};
    auto& req = claim_request_;
    req.types.clear();
    claim_lanes_.clear();
    auto steady_now = std::chrono::steady_clock::now();
    for (Lane* l : lane_list_) {
        if (!l->has_work || !l->task || l->swapping || !l->settings->enabled) continue;
        if (l->running_runs >= static_cast<std::uint32_t>(l->settings->concurrency)) continue;
        if (auto at = l->task->ready_at(); at > steady_now) { // its runner backs off after losing workers
            arm_backoff_timer_locked(at);
            continue;
        }
        req.types.emplace_back(l->ref, static_cast<std::uint32_t>(l->settings->batch_size));
        claim_lanes_.push_back(l);
    }
    if (req.types.empty()) return {};
    req.max = 1u << 20;
    req.now = Clock::now();
    req.owner = options_.owner;
    req.lease_expiry = req.now + options_.lease;
    req.aging = options_.aging;
    Claimed c;
    auto result = store_.claim(req);
    // stop scanning lanes with nothing claimable until an enqueue, a retry, a due timer or a store wakeup
    for (std::size_t i : result.exhausted) claim_lanes_[i]->has_work = false;
    if (result.jobs.empty()) return c;
    c.jobs = std::move(result.jobs);
    Lane* l = c.lane = claim_lanes_[result.index];
    c.settings = l->settings;
    c.task = l->task; // the code this run calls, even if a new version is swapped in meanwhile
    l->running_runs += 1;
    l->m.running += static_cast<std::uint32_t>(c.jobs.size());
    l->m.max_running = std::max(l->m.max_running, l->m.running);
    l->m.started += c.jobs.size();
    if (options_.observer)
        for (const auto& j : c.jobs)
            emit(JobEventKind::started, l->type, j.id, j.attempt,
                 std::chrono::duration_cast<Duration>(req.now - std::min(req.now, j.ready_since)));
    l->m.runs += 1;
    running_runs_ += 1;
    return c;
}

void Executor::pump_locked() {
    while (idle_workers_ > 0) {
        auto c = claim_locked();
        if (c.jobs.empty()) break;
        idle_workers_ -= 1;
        boost::asio::post(pool_, [this, c = std::move(c)]() mutable { worker(std::move(c)); });
    }
}

void Executor::worker(Claimed c) {
    while (!c.jobs.empty()) {
        auto lock = run_batch(c.jobs, *c.lane, *c.task, *c.settings); // returns holding the lock, accounts done
        c.task.reset();                                               // an old version's last run lets go of it here
        c = claim_locked();
        if (c.jobs.empty())
            idle_workers_ += 1;
        else if (idle_workers_ > 0)
            pump_locked();
        changed_.notify_all();
    }
}

std::unique_lock<std::mutex> Executor::run_batch(std::vector<JobRecord>& batch, Lane& ln, runner::Runner& task,
                                                 const registry::JobSettings& settings) {
    auto ctx = std::make_shared<RunContext>(*this, ln, ln.type);
    const bool thread_mode = task.isolation() == runner::Isolation::thread;
    std::vector<RunningJob> handles;
    handles.reserve(batch.size());
    for (auto& j : batch) handles.emplace_back(*ctx, j);
    std::int64_t deadline_ms = 0;
    if (settings.timeout.count() > 0) {
        auto deadline = Clock::now() + settings.timeout;
        deadline_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline.time_since_epoch()).count();
        for (const auto& h : handles) ctx->ids += (ctx->ids.empty() ? "" : ",") + h.id_text();
        for (const auto& j : batch) ctx->job_ids.push_back(j.id);
        ctx->timer.emplace(io_);
        ctx->timer->expires_after(settings.timeout);
        Duration stuck_grace = options_.stuck_grace;
        Duration timeout = settings.timeout;
        ctx->timer->async_wait([ctx, stuck_grace, timeout, thread_mode](const boost::system::error_code& ec) {
            if (ec || ctx->finished.load()) return;
            ctx->timed_out = true;
            ctx->cancelled = true;
            log::write(log::Level::warning, "executor",
                       "job " + ctx->ids + " timed out after " + ms_text(timeout) + "; cancellation requested",
                       ctx->type, ctx->ids);
            if (!thread_mode) return; // a worker process that ignores it is killed by its runner
            ctx->timer->expires_after(stuck_grace);
            ctx->timer->async_wait([ctx, stuck_grace](const boost::system::error_code& ec2) {
                if (ec2 || ctx->finished.load()) return;
                log::write(log::Level::error, "executor",
                           "job " + ctx->ids + " of type " + ctx->type + " is stuck: still running " +
                               ms_text(stuck_grace) + " after its timeout and ignoring cancellation",
                           ctx->type, ctx->ids);
                ctx->lane->stuck.fetch_add(1, std::memory_order_relaxed);
                for (store::JobId id : ctx->job_ids) ctx->ex.emit(JobEventKind::stuck, ctx->type, id);
            });
        });
    }
    if (shutting_down_.load()) ctx->cancelled = true;
    std::vector<jh_job> jobs(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& j = jobs[i];
        j.struct_size = sizeof(jh_job);
        j.id = {handles[i].id_text().data(), handles[i].id_text().size()};
        j.type = {batch[i].type.data(), batch[i].type.size()};
        j.payload = {batch[i].payload.data(), batch[i].payload.size()};
        j.attempt = batch[i].attempt;
        j.max_retries = batch[i].max_attempts > 0 ? batch[i].max_attempts - 1 : 0;
        j.deadline_unix_ms = deadline_ms;
        j.host_handle = &handles[i];
    }
    std::vector<store::JobId> ids;
    ids.reserve(batch.size());
    for (const auto& j : batch) ids.push_back(j.id);
    auto started = Clock::now();
    auto token = store_.begin_run(ids); // from here a crash of this process charges these jobs an attempt
    auto run_start = std::chrono::steady_clock::now();
    runner::RunControl control;
    control.cancelled = [&] { return handles.front().cancelled(); };
    control.stuck_grace = options_.stuck_grace;
    auto end = task.run(jobs.data(), jobs.size(), control);
    if (!end.failure.empty()) {
        // The code stopped under the run (a worker died or was killed): what did not report fails with the reason.
        log::write(log::Level::error, "executor",
                   "job " + std::to_string(batch.front().id) +
                       (batch.size() > 1 ? " and " + std::to_string(batch.size() - 1) + " more" : std::string()) +
                       ": " + end.failure,
                   ln.type, handles.front().id_text());
        for (auto& h : handles)
            if (!h.has_result) h.set_result(JH_FAILED, 0, end.failure, {});
        if (end.killed_stuck) {
            ln.stuck.fetch_add(1, std::memory_order_relaxed);
            for (const auto& j : batch) emit(JobEventKind::stuck, ln.type, j.id);
        }
    }
    auto ran = std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - run_start);
    ctx->finished = true;
    if (ctx->timer) boost::asio::post(io_, [ctx] { ctx->timer->cancel(); });

    // Outcomes, decided outside the lock.
    auto now = Clock::now();
    bool timed_out = ctx->timed_out.load();
    bool cancelled_by_shutdown = shutting_down_.load() && !timed_out;
    std::vector<Outcome> outcomes;
    TypeMetrics d; // deltas
    bool retry_scheduled = false;
    for (auto& h : handles) {
        JobRecord& job = h.job();
        auto decision = decide_outcome({h.has_result, h.status, h.flags, h.message}, job.attempt, job.max_attempts,
                                       timed_out, cancelled_by_shutdown, settings, uniform);
        if (decision.timed_out && end.killed_stuck) decision.error += "; " + end.failure;
        const std::string& error = decision.error;
        if (decision.kind == Decision::Kind::succeeded) {
            d.succeeded += 1;
            emit(JobEventKind::succeeded, job.type, job.id, job.attempt, ran);
            outcomes.push_back({job.id, job.type, Outcome::Kind::done, now, {}, {}, store::DeadReason::none, started});
            continue;
        }
        d.failed += 1;
        emit(JobEventKind::failed, job.type, job.id, job.attempt, ran, error);
        if (decision.timed_out) {
            d.timed_out += 1;
            emit(JobEventKind::timed_out, job.type, job.id, job.attempt, ran, error);
        }
        std::string why(store::dead_reason_name(decision.reason));
        switch (decision.kind) {
        case Decision::Kind::succeeded: break;
        case Decision::Kind::released:
            d.released += 1;
            emit(JobEventKind::released, job.type, job.id, job.attempt, ran, error);
            outcomes.push_back({job.id,
                                job.type,
                                Outcome::Kind::released,
                                now,
                                {},
                                "cancelled by shutdown (not counted as an attempt): " + error,
                                store::DeadReason::none,
                                started});
            log::write(log::Level::warning, "executor",
                       "cancelled by shutdown; back to ready, not counted as an attempt: " + error, job.type,
                       h.id_text());
            break;
        case Decision::Kind::retry:
            d.retried += 1;
            emit(JobEventKind::retried, job.type, job.id, job.attempt, decision.delay, error);
            retry_scheduled = true;
            outcomes.push_back(
                {job.id, job.type, Outcome::Kind::retry, now, now + decision.delay, error, decision.reason, started});
            log::write(log::Level::warning, "executor",
                       "attempt " + std::to_string(job.attempt) + "/" + std::to_string(job.max_attempts) +
                           " failed: " + error + "; retrying in " + ms_text(decision.delay),
                       job.type, h.id_text());
            break;
        case Decision::Kind::dead:
            d.dead_lettered += 1;
            emit(JobEventKind::dead_lettered, job.type, job.id, job.attempt, ran, error);
            outcomes.push_back({job.id, job.type, Outcome::Kind::dead, now, {}, error, decision.reason, started});
            log::write(log::Level::error, "executor",
                       "dead-lettered after attempt " + std::to_string(job.attempt) + " (" + why + "): " + error,
                       job.type, h.id_text());
            break;
        case Decision::Kind::dropped:
            d.dropped += 1;
            emit(JobEventKind::dropped, job.type, job.id, job.attempt, ran, error);
            outcomes.push_back({job.id, job.type, Outcome::Kind::dropped, now, {}, error, decision.reason, started});
            log::write(log::Level::warning, "executor",
                       "dropped after attempt " + std::to_string(job.attempt) + " (" + why +
                           ", dead_letter = false): " + error,
                       job.type, h.id_text());
            break;
        }
    }
    store_.finish(outcomes, std::move(token)); // clears the run's mark once the outcomes are committed
    if (retry_scheduled) arm_due_timer();
    std::unique_lock lock(mutex_);
    {
        auto& m = ln.m;
        m.succeeded += d.succeeded;
        m.failed += d.failed;
        m.timed_out += d.timed_out;
        m.retried += d.retried;
        m.dead_lettered += d.dead_lettered;
        m.dropped += d.dropped;
        m.released += d.released;
        m.running -= static_cast<std::uint32_t>(batch.size());
        if (d.retried + d.released > 0) ln.has_work = true;
        ln.running_runs -= 1;
        running_runs_ -= 1;
        if (ln.swapping && ln.running_runs == 0) swap_in_locked(ln);
    }
    return lock;
}

void Executor::arm_backoff_timer_locked(std::chrono::steady_clock::time_point at) {
    if (backoff_armed_ && backoff_at_ <= at) return;
    backoff_armed_ = true;
    backoff_at_ = at;
    boost::asio::post(io_, [this, at] {
        backoff_timer_.expires_at(at);
        backoff_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            {
                std::lock_guard lock(mutex_);
                backoff_armed_ = false;
            }
            poke();
        });
    });
}

void Executor::arm_due_timer() {
    boost::asio::post(io_, [this] {
        std::set<std::string> names;
        {
            std::lock_guard lock(mutex_); // set_task may add a type
            names = type_names_;
        }
        auto due = store_.next_due(names, Clock::now());
        // What next_due found due is claimable now, and a lane may have given up on it a moment ago (its claim came
        // just before the retry's time): look again, or it waits for an unrelated enqueue.
        poke();
        if (!due) return;
        auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*due - Clock::now()) + Duration(1);
        due_timer_.expires_after(std::max(delay, Duration(0)));
        due_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            poke();
            arm_due_timer();
        });
    });
}

std::size_t Executor::shutdown(Duration grace) {
    std::unique_lock lock(mutex_);
    if (!accepting_ && !dispatching_ && running_runs_ == 0) return 0;
    accepting_ = false;
    dispatching_ = false;
    if (running_runs_ > 0)
        log::write(log::Level::info, "executor",
                   "waiting up to " + ms_text(grace) + " for " + std::to_string(running_runs_) + " running job(s)");
    changed_.wait_for(lock, grace, [this] { return running_runs_ == 0; });
    if (running_runs_ == 0) return 0;
    shutting_down_ = true; // every running job's Context now says cancelled
    log::write(log::Level::warning, "executor",
               std::to_string(running_runs_) + " run(s) still going after the grace period; cancelling them");
    changed_.wait_for(lock, options_.stuck_grace, [this] { return running_runs_ == 0; });
    return running_runs_;
}

void Executor::swap_in_locked(Lane& ln) {
    ln.task = std::move(ln.next_task);
    ln.swapping = false;
    ln.has_work = true;
    log::write(log::Level::info, "executor",
               ln.task ? "the new version serves from now on" : "no longer served: " + ln.unusable_reason, ln.type);
}

void Executor::set_task(const std::string& type, std::shared_ptr<runner::Runner> task,
                        const registry::JobSettings& settings) {
    std::lock_guard lock(mutex_);
    Lane* ln = lane(type);
    if (!ln) {
        auto l = std::make_unique<Lane>();
        l->type = type;
        l->ref = store_.intern(type);
        ln = l.get();
        lane_list_.push_back(ln);
        lanes_.emplace(type, std::move(l));
        type_names_.insert(type);
    }
    ln->settings = std::make_shared<const registry::JobSettings>(settings);
    ln->unusable_reason.clear();
    if (ln->running_runs > 0 && ln->task) { // the old version's runs finish first
        ln->next_task = std::move(task);
        ln->swapping = true;
        log::write(log::Level::info, "executor",
                   "a new version is loaded; it serves once the " + std::to_string(ln->running_runs) +
                       " run(s) of the old one end",
                   type);
    } else {
        ln->next_task.reset();
        ln->swapping = false;
        ln->task = std::move(task);
        ln->has_work = true;
    }
    if (idle_workers_ > 0) pump_locked();
}

void Executor::remove_task(const std::string& type, const std::string& reason) {
    std::lock_guard lock(mutex_);
    Lane* ln = lane(type);
    if (!ln) return;
    ln->unusable_reason = reason;
    ln->next_task.reset();
    if (ln->running_runs > 0) {
        ln->swapping = true; // to nothing: the runs going on finish on the code they started with
    } else {
        ln->task.reset();
        ln->swapping = false;
    }
}

void Executor::update_settings(const std::string& type, const registry::JobSettings& settings) {
    std::lock_guard lock(mutex_);
    Lane* ln = lane(type);
    if (!ln) return;
    ln->settings = std::make_shared<const registry::JobSettings>(settings);
    if (idle_workers_ > 0) pump_locked(); // a raised concurrency or a re-enabled type may free work
}

TypeMetrics Executor::metrics(const std::string& type) const {
    std::lock_guard lock(mutex_);
    auto it = lanes_.find(type);
    if (it == lanes_.end()) return TypeMetrics{};
    auto m = it->second->m;
    m.stuck += it->second->stuck.load(std::memory_order_relaxed);
    return m;
}

std::map<std::string, TypeMetrics> Executor::all_metrics() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, TypeMetrics> out;
    for (const auto& [name, l] : lanes_) {
        out[name] = l->m;
        out[name].stuck += l->stuck.load(std::memory_order_relaxed);
    }
    return out;
}

std::shared_ptr<const registry::JobSettings> Executor::settings(std::string_view type) const {
    std::lock_guard lock(mutex_);
    auto it = lanes_.find(type);
    return it == lanes_.end() ? nullptr : it->second->settings;
}

bool Executor::accepting() const {
    std::lock_guard lock(mutex_);
    return accepting_;
}

std::size_t Executor::running_runs() const {
    std::lock_guard lock(mutex_);
    return running_runs_;
}

bool Executor::wait_idle(Duration limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        bool quiet;
        {
            std::lock_guard lock(mutex_);
            quiet = running_runs_ == 0;
        }
        if (quiet) {
            store_.flush(); // outcomes may still be on their way to the store
            bool idle = true;
            for (const auto& [type, c] : store_.counts()) idle = idle && c.pending() == 0;
            std::lock_guard lock(mutex_);
            if (idle && running_runs_ == 0) return true;
        }
        if (std::chrono::steady_clock::now() >= until) return false;
        // woken by a finished run; delayed jobs are woken by the due timer, so re-check now and then
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, std::chrono::milliseconds(10));
    }
}

} // namespace jobhost::executor
