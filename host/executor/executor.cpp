#include "executor/executor.hpp"

#include "common/text.hpp"
#include "executor/outcome.hpp"

#include "log/log.hpp"
#include "runner/runner.hpp"

#include <boost/asio/post.hpp>
#include <boost/json/parser.hpp>

#include <boost/asio/dispatch.hpp>

#include <algorithm>
#include <cmath>
#include <future>
#include <random>
#include <thread>

namespace jobhost::executor {

using store::Clock;
using store::JobRecord;
using store::Outcome;

// What the hot path reads of a lane's current version; published by the lane's strand, never changed in place.
struct Executor::LaneView {
    std::shared_ptr<const registry::JobSettings> settings;
    std::shared_ptr<runner::Runner> task; // null: unusable (unusable_reason says why)
    std::string unusable_reason;
};

struct Executor::Lane {
    Lane(boost::asio::io_context& io, std::string type, store::TypeRef ref)
        : type(std::move(type)), ref(ref), strand(boost::asio::make_strand(io)) {}
    const std::string type;
    const store::TypeRef ref;
    boost::asio::strand<boost::asio::io_context::executor_type> strand;

    // [strand] a new version waiting for the runs of the current one to end
    std::shared_ptr<runner::Runner> next_task;
    std::shared_ptr<const registry::JobSettings> next_settings;
    std::string next_reason; // with no next_task: the lane retires, for this reason

    // Published by the strand (view under view_mutex, held only to copy the pointer), read by anyone.
    mutable std::mutex view_mutex;
    std::shared_ptr<const LaneView> view;
    std::shared_ptr<const LaneView> current() const {
        std::lock_guard lock(view_mutex);
        return view;
    }
    std::atomic<bool> eligible{false}; // usable and enabled
    std::atomic<bool> swapping{false}; // takes no new run until the current version's runs end
    std::atomic<std::uint32_t> concurrency{1}, batch{1};
    std::atomic<std::uint32_t> running_runs{0}; // slots taken, against concurrency
    std::atomic<std::uint64_t> work_gen{1};     // moved on whenever the store may hold claimable work
    std::atomic<std::uint64_t> empty_at{0};     // the work_gen the store last said "nothing" at
    std::atomic<std::int64_t> paused_until{0};  // steady-clock ns: the runner backs off until then
    std::atomic<bool> refill_wait{false};       // the store refills this type's reservations: keep asking

    // Counters, updated by whichever thread does the thing, without a lock.
    struct Counters {
        std::atomic<std::uint64_t> enqueued{0}, refused{0}, started{0}, runs{0}, succeeded{0}, failed{0}, timed_out{0},
            retried{0}, dead_lettered{0}, dropped{0}, coalesced{0}, stuck{0}, released{0};
        std::atomic<std::uint32_t> running{0}, max_running{0};
    } m;
    TypeMetrics snapshot() const {
        TypeMetrics t;
        t.enqueued = m.enqueued.load();
        t.refused = m.refused.load();
        t.started = m.started.load();
        t.runs = m.runs.load();
        t.succeeded = m.succeeded.load();
        t.failed = m.failed.load();
        t.timed_out = m.timed_out.load();
        t.retried = m.retried.load();
        t.dead_lettered = m.dead_lettered.load();
        t.dropped = m.dropped.load();
        t.coalesced = m.coalesced.load();
        t.stuck = m.stuck.load();
        t.released = m.released.load();
        t.running = m.running.load();
        t.max_running = m.max_running.load();
        return t;
    }
    void more_work() { work_gen.fetch_add(1); }
    bool has_work() const { return work_gen.load() != empty_at.load(); }
    bool paused(std::int64_t now_ns) const { return paused_until.load(std::memory_order_relaxed) > now_ns; }
    // Reserves a run slot (the store's ClaimRequest::take). Refused at the concurrency limit and while the lane
    // swaps versions; the second look at `swapping` pairs with try_swap's look at running_runs, so a swap never
    // overlaps a run of the old version.
    bool try_take() {
        if (swapping.load()) return false;
        auto cur = running_runs.load();
        do {
            if (cur >= concurrency.load(std::memory_order_relaxed)) return false;
        } while (!running_runs.compare_exchange_weak(cur, cur + 1));
        if (swapping.load()) {
            running_runs.fetch_sub(1);
            return false;
        }
        return true;
    }
};

namespace {
std::int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
} // namespace

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

// What a successful run returned, bounded by max_result; nullopt when it returned nothing.
std::optional<store::JobResult> bounded_result(const std::string& message, const std::string& output,
                                               std::size_t limit) {
    if (message.empty() && output.empty()) return std::nullopt;
    store::JobResult r;
    bool cut = false;
    r.message = common::readable_text(message, limit, &cut);
    if (cut)
        r.note = "the message was cut to " + std::to_string(r.message.size()) + " of its " +
                 std::to_string(message.size()) + " bytes ([store] max_result = " + std::to_string(limit) + ")";
    if (output.size() <= limit) {
        r.output = output;
    } else {
        if (!r.note.empty()) r.note += "; ";
        r.note += "the output (" + std::to_string(output.size()) +
                  " bytes) was not kept: it is larger than [store] "
                  "max_result = " +
                  std::to_string(limit) + " bytes";
    }
    return r;
}

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
    // Kept in the store at most once a second per job (the first report, and 100 %, at once); a report held back
    // is written when the run ends (flush_progress), so the store ends with the latest one.
    void progress(std::int32_t percent, std::string_view message) override;
    void flush_progress();
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
    std::optional<store::Progress> pending_progress;
    std::chrono::steady_clock::time_point progress_written{};
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
    std::string ids;                                          // for log lines
    std::vector<std::pair<store::JobId, std::uint32_t>> jobs; // each job and the attempt it is on
};

void RunningJob::log(std::int32_t level, std::string_view message) {
    constexpr std::size_t kMaxLine = 65'536;
    log::write(static_cast<log::Level>(std::clamp<std::int32_t>(level, JH_LOG_TRACE, JH_LOG_ERROR)), "job",
               common::readable_text(message, kMaxLine), job_.type, id_text_);
}

void RunningJob::progress(std::int32_t percent, std::string_view message) {
    constexpr std::size_t kMaxMessage = 1024;
    store::Progress p{std::clamp<std::int32_t>(percent, 0, 100), common::readable_text(message, kMaxMessage),
                      Clock::now()};
    log::write(log::Level::debug, "job", "progress " + std::to_string(percent) + "% " + p.message, job_.type, id_text_);
    auto now = std::chrono::steady_clock::now();
    bool first = progress_written == std::chrono::steady_clock::time_point{};
    if (first || p.percent == 100 || now - progress_written >= std::chrono::seconds(1)) {
        progress_written = now;
        pending_progress.reset();
        run_.ex.store_.progress(job_.id, p);
    } else {
        pending_progress = std::move(p);
    }
}

void RunningJob::flush_progress() {
    if (!pending_progress) return;
    run_.ex.store_.progress(job_.id, *pending_progress);
    pending_progress.reset();
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
        Lane* l = add_lane(name);
        publish(*l, std::make_shared<const registry::JobSettings>(t.effective), t.task, t.error);
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

Executor::Lane* Executor::add_lane(const std::string& type) {
    std::unique_lock lock(names_mutex_);
    if (auto it = lanes_.find(type); it != lanes_.end()) return it->second.get();
    std::size_t n = lane_count_.load();
    if (n >= kMaxLanes) throw std::runtime_error("more than " + std::to_string(kMaxLanes) + " job types");
    auto l = std::make_unique<Lane>(io_, type, store_.intern(type));
    Lane* raw = l.get();
    lanes_.emplace(type, std::move(l));
    type_names_.insert(type);
    list_[n].store(raw, std::memory_order_release);
    lane_count_.store(n + 1, std::memory_order_release);
    return raw;
}

Executor::Lane* Executor::lane(std::string_view type) const {
    std::shared_lock lock(names_mutex_);
    auto it = lanes_.find(type);
    return it == lanes_.end() ? nullptr : it->second.get();
}

// Runs `f` on the lane's strand and returns once it ran: at once on the io thread (the strand's own), else posted
// there and waited for. When the io_context has stopped, runs it here.
template <class F>
void Executor::on_strand(Lane& l, F f) {
    if (io_.stopped()) { // nobody runs the strand's handlers any more: nobody can race with this one
        f();
        return;
    }
    if (io_.get_executor().running_in_this_thread()) {
        boost::asio::dispatch(l.strand, std::move(f));
        return;
    }
    std::promise<void> done;
    boost::asio::post(l.strand, [&] {
        f();
        done.set_value();
    });
    done.get_future().wait();
}

void Executor::publish(Lane& l, std::shared_ptr<const registry::JobSettings> settings,
                       std::shared_ptr<runner::Runner> task, std::string unusable_reason) {
    auto v = std::make_shared<LaneView>();
    v->settings = std::move(settings);
    v->task = std::move(task);
    v->unusable_reason = std::move(unusable_reason);
    l.concurrency.store(static_cast<std::uint32_t>(std::max<std::int64_t>(1, v->settings->concurrency)));
    l.batch.store(static_cast<std::uint32_t>(std::max<std::int64_t>(1, v->settings->batch_size)));
    l.eligible.store(v->task && v->settings->enabled);
    {
        std::lock_guard lock(l.view_mutex);
        l.view = std::move(v);
    }
    l.more_work();
}

void Executor::poke() {
    std::size_t n = lane_count();
    for (std::size_t i = 0; i < n; ++i) list_[i].load(std::memory_order_acquire)->more_work();
    pokes_.fetch_add(1); // before signal_work reads searching_ (see worker)
    signal_work();
}

std::optional<std::string> payload_error(std::string_view payload) {
    boost::json::parser p;
    boost::system::error_code ec;
    std::size_t used = p.write_some(payload.data(), payload.size(), ec);
    if (!ec && used < payload.size()) ec = boost::json::error::extra_data;
    if (!ec) return std::nullopt;
    return ec.message() + " at byte " + std::to_string(used);
}

std::vector<Line> json_lines(std::string_view text) {
    std::vector<Line> out;
    for (std::size_t number = 1; !text.empty(); ++number) {
        auto nl = text.find('\n');
        auto line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        out.push_back({number, line});
    }
    return out;
}

PayloadLines payload_lines(std::string_view text) {
    PayloadLines out;
    auto lines = json_lines(text);
    out.payloads.reserve(lines.size());
    for (const auto& line : lines) {
        if (auto why = payload_error(line.text)) {
            out.payloads.clear();
            out.bad_line = line.number;
            out.why = std::move(*why);
            return out;
        }
        out.payloads.push_back(line.text);
    }
    return out;
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
    bool accepting = accepting_.load();
    {
        std::shared_lock lock(names_mutex_);
        for (std::size_t i = 0; i < requests.size(); ++i)
            if (auto it = lanes_.find(requests[i].type); it != lanes_.end()) lanes[i] = it->second.get();
    }
    for (std::size_t i = 0; i < requests.size(); ++i) {
        if (!lanes[i]) continue;
        auto v = lanes[i]->current();
        settings[i] = v->settings;
        if (!v->task && !lanes[i]->swapping.load()) unusable[i] = v->unusable_reason;
    }
    auto now = Clock::now();
    std::size_t refused_payloads = 0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const auto& request = requests[i];
        auto& result = results[i];
        Lane* ln = lanes[i];
        if (!ln) {
            result.error = "unknown job type '" + request.type + "'; nothing was queued (see 'jobhost plugins')";
            result.code = core::Code::not_found;
            continue;
        }
        if (!accepting && !request.from_job) {
            result.error = "the host is shutting down; nothing was queued";
            result.code = core::Code::unavailable;
            continue;
        }
        if (!unusable[i].empty()) {
            result.error = "job type '" + request.type + "' is unusable (" + unusable[i] + "); nothing was queued";
            result.code = core::Code::unprocessable;
            continue;
        }
        if (!settings[i]->enabled) {
            result.error = "job type '" + request.type + "' is disabled (enabled = false); nothing was queued";
            result.code = core::Code::unprocessable;
            continue;
        }
        if (request.payload != "null") {
            if (auto why = payload_error(request.payload)) {
                result.error = "the payload is not valid JSON (" + *why + "); nothing was queued";
                result.code = core::Code::invalid;
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
    std::vector<store::EnqueueOutcome> out;
    try {
        if (!jobs.empty()) out = store_.enqueue(jobs);
    } catch (const std::exception& e) { // the store cannot take them now (its database is away): nothing queued
        for (std::size_t i : index) {
            results[i].error = e.what();
            results[i].code = core::Code::unavailable;
        }
        return results;
    }
    bool delayed = false, queued = false;
    for (std::size_t i = 0; i < requests.size(); ++i)
        if (lanes[i] && !results[i].error.empty() && results[i].error.rfind("the payload", 0) == 0)
            lanes[i]->m.refused.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t k = 0; k < jobs.size(); ++k) {
        std::size_t i = index[k];
        auto& result = results[i];
        Lane* ln = lanes[i];
        result.id = out[k].id;
        if (out[k].tick_taken) {
            result.tick_taken = true;
            result.error = "this tick of the schedule was queued already";
            result.code = core::Code::conflict;
            continue;
        }
        if (!out[k].created && requests[i].from_schedule) {
            result.duplicate = true;
            result.error = "the previous run from the schedule is still pending or running (job " +
                           std::to_string(result.id) + "); tick coalesced";
            result.code = core::Code::conflict;
            ln->m.coalesced.fetch_add(1, std::memory_order_relaxed);
            emit(JobEventKind::coalesced, ln->type, 0);
            continue;
        }
        if (!out[k].created) {
            result.duplicate = true;
            result.error = "a job of type '" + requests[i].type + "' with unique key '" + requests[i].unique_key +
                           "' is already pending or running: job " + std::to_string(result.id) + "; nothing was queued";
            result.code = core::Code::conflict;
            ln->m.refused.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        result.ok = true;
        ln->m.enqueued.fetch_add(1, std::memory_order_relaxed);
        emit(JobEventKind::enqueued, ln->type, result.id);
        if (jobs[k].run_at > now) {
            delayed = true;
        } else {
            ln->more_work();
            queued = true;
        }
    }
    if (queued) signal_work();
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

bool Executor::claim(Claimed& c, bool after_run) {
    thread_local store::ClaimRequest req;
    thread_local std::vector<Lane*> lanes;
    thread_local std::vector<std::uint64_t> gens;
    c.held_back = false;
    c.more = false;
    req.types.clear();
    lanes.clear();
    gens.clear();
    auto now_ns = steady_ns();
    std::size_t n = lane_count();
    for (std::size_t i = 0; i < n; ++i) {
        Lane* l = list_[i].load(std::memory_order_acquire);
        if (!l->eligible.load(std::memory_order_relaxed) || l->swapping.load(std::memory_order_relaxed)) continue;
        auto gen = l->work_gen.load();
        if (gen == l->empty_at.load() && !l->refill_wait.load(std::memory_order_relaxed)) continue;
        if (l->running_runs.load(std::memory_order_relaxed) >= l->concurrency.load(std::memory_order_relaxed)) continue;
        if (l->paused(now_ns)) { // its runner backs off after losing workers
            arm_backoff_timer(std::chrono::steady_clock::time_point(
                std::chrono::nanoseconds(l->paused_until.load(std::memory_order_relaxed))));
            continue;
        }
        req.types.emplace_back(l->ref, l->batch.load(std::memory_order_relaxed));
        lanes.push_back(l);
        gens.push_back(gen);
    }
    if (req.types.empty()) return false;
    req.max = 1u << 20;
    req.now = Clock::now();
    req.owner = options_.owner;
    req.lease_expiry = req.now + options_.lease;
    req.aging = options_.aging;
    req.take = [](std::size_t i) { return lanes[i]->try_take(); };
    req.after_run = after_run;
    auto result = store_.claim(req);
    // nothing claimable until an enqueue, a retry, a due timer or a store wakeup moves work_gen on
    for (Lane* l : lanes) // written only where set: no store to every lane's cache line on each claim
        if (l->refill_wait.load(std::memory_order_relaxed)) l->refill_wait.store(false, std::memory_order_relaxed);
    for (std::size_t i : result.exhausted) lanes[i]->empty_at.store(gens[i]);
    for (std::size_t i : result.waiting) { // not work to wake for, but still asked about (see ClaimResult::waiting)
        lanes[i]->empty_at.store(gens[i]);
        lanes[i]->refill_wait.store(true, std::memory_order_relaxed);
    }
    c.held_back = result.held_back;
    if (result.jobs.empty()) return false;
    Lane* l = lanes[result.index]; // its slot was taken by try_take
    c.lane = l;
    c.more = result.more;
    c.view = l->current();
    c.jobs = std::move(result.jobs);
    if (!c.view->task) { // retired between the scan and the claim: give the jobs back, uncharged
        std::vector<Outcome> back;
        for (const auto& j : c.jobs)
            back.push_back({j.id, j.type, Outcome::Kind::released, req.now, {}, {}, store::DeadReason::none, req.now});
        store_.finish(back, {});
        c.jobs.clear();
        finished_run(*l);
        return false;
    }
    auto count = static_cast<std::uint32_t>(c.jobs.size());
    auto running = l->m.running.fetch_add(count) + count;
    auto max = l->m.max_running.load();
    while (running > max && !l->m.max_running.compare_exchange_weak(max, running)) {
    }
    l->m.started.fetch_add(count, std::memory_order_relaxed);
    l->m.runs.fetch_add(1, std::memory_order_relaxed);
    if (options_.observer)
        for (const auto& j : c.jobs)
            emit(JobEventKind::started, l->type, j.id, j.attempt,
                 std::chrono::duration_cast<Duration>(req.now - std::min(req.now, j.ready_since)));
    return true;
}

bool Executor::any_work() const {
    auto now_ns = steady_ns();
    std::size_t n = lane_count();
    for (std::size_t i = 0; i < n; ++i) {
        const Lane* l = list_[i].load(std::memory_order_acquire);
        if (l->eligible.load() && !l->swapping.load() && l->has_work() && !l->paused(now_ns) &&
            l->running_runs.load() < l->concurrency.load())
            return true;
    }
    return false;
}

void Executor::wake_one() {
    auto idle = idle_workers_.load();
    while (idle > 0)
        if (idle_workers_.compare_exchange_weak(idle, idle - 1)) {
            searching_.fetch_add(1); // counted from now, so that the next signal does not wake another
            boost::asio::post(pool_, [this] { worker(); });
            return;
        }
}

void Executor::signal_work() {
    // A worker that is looking for work now finds what was just announced (it reads work_gen after announcing
    // itself, and the announcer reads searching_ after moving work_gen on): wake one only when nobody looks.
    if (searching_.load() == 0 && idle_workers_.load() > 0) wake_one();
}

void Executor::worker() {
    Claimed c;
    bool after_run = false; // this worker has just ended a run (see ClaimRequest::after_run)
    for (;;) {              // searching_ counts this worker on entry to each round
        auto pokes = pokes_.load();
        bool got = dispatching_.load() && claim(c, after_run);
        if (!got) {
            idle_workers_.fetch_add(1);
            searching_.fetch_sub(1);
            // Look once more: an enqueue that saw this worker searching, and so woke nobody, is seen here. Not when
            // the store held work back for a refill: looking again would spin until it lands, and it wakes us;
            // unless it landed (and woke nobody, this worker being still counted as searching) since the claim.
            bool refill_landed = pokes_.load() != pokes;
            if (!dispatching_.load() || (c.held_back && !refill_landed) || !any_work()) return;
            auto idle = idle_workers_.load();
            bool back = false;
            while (idle > 0 && !(back = idle_workers_.compare_exchange_weak(idle, idle - 1))) {
            }
            if (!back) return; // another thread took the idle slot: it wakes a worker
            searching_.fetch_add(1);
            continue;
        }
        searching_.fetch_sub(1);
        if (c.more) signal_work(); // more waits: one more pair of hands, unless someone looks already
        run_batch(c.jobs, *c.lane, *c.view);
        c.view.reset(); // an old version's last run lets go of it here
        finished_run(*c.lane);
        after_run = true;
        searching_.fetch_add(1);
    }
}

void Executor::finished_run(Lane& l) {
    auto left = l.running_runs.fetch_sub(1) - 1;
    if (left == 0 && l.swapping.load()) boost::asio::post(l.strand, [this, &l] { try_swap(l); });
}

void Executor::try_swap(Lane& l) {
    if (!l.swapping.load() || l.running_runs.load() != 0) return; // a run still holds the old version
    if (l.next_task)
        log::write(log::Level::info, "executor", "the new version serves from now on", l.type);
    else
        log::write(log::Level::info, "executor", "no longer served: " + l.next_reason, l.type);
    publish(l, l.next_settings ? l.next_settings : l.current()->settings, std::move(l.next_task),
            std::move(l.next_reason));
    l.next_settings.reset();
    l.next_reason.clear();
    l.swapping.store(false);
    signal_work();
}

void Executor::run_batch(std::vector<JobRecord>& batch, Lane& ln, const LaneView& view) {
    runner::Runner& task = *view.task;
    const registry::JobSettings& settings = *view.settings;
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
        for (const auto& j : batch) ctx->jobs.emplace_back(j.id, j.attempt);
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
                ctx->lane->m.stuck.fetch_add(1, std::memory_order_relaxed);
                for (const auto& [id, attempt] : ctx->jobs) ctx->ex.emit(JobEventKind::stuck, ctx->type, id, attempt);
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
    auto started = Clock::now();
    auto token = store_.begin_run(batch); // from here a crash of this process charges these jobs an attempt
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
            ln.m.stuck.fetch_add(1, std::memory_order_relaxed);
            for (const auto& j : batch) emit(JobEventKind::stuck, ln.type, j.id, j.attempt);
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
        h.flush_progress(); // before the outcome, so that the store ends with the latest report
        JobRecord& job = h.job();
        auto decision = decide_outcome({h.has_result, h.status, h.flags, h.message}, job.attempt, job.max_attempts,
                                       timed_out, cancelled_by_shutdown, settings, uniform);
        // a failure's message as logs, JSON and the store take it: UTF-8 without NUL, and bounded (max_result); a
        // success's message is made so by bounded_result
        if (decision.kind != Decision::Kind::succeeded)
            decision.error = common::readable_text(decision.error, options_.max_result);
        if (decision.timed_out && end.killed_stuck) decision.error += "; " + end.failure;
        const std::string& error = decision.error;
        if (decision.kind == Decision::Kind::succeeded) {
            d.succeeded += 1;
            emit(JobEventKind::succeeded, job.type, job.id, job.attempt, ran);
            outcomes.push_back({job.id,
                                job.type,
                                Outcome::Kind::done,
                                now,
                                {},
                                {},
                                store::DeadReason::none,
                                started,
                                bounded_result(h.message, h.output, options_.max_result)});
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
    if (auto at = task.ready_at(); at > std::chrono::steady_clock::now()) // the runner backs off: pause the lane
        ln.paused_until.store(std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count());
    if (retry_scheduled) arm_due_timer();
    auto& m = ln.m;
    auto add = [](std::atomic<std::uint64_t>& a, std::uint64_t v) {
        if (v) a.fetch_add(v, std::memory_order_relaxed);
    };
    add(m.succeeded, d.succeeded);
    add(m.failed, d.failed);
    add(m.timed_out, d.timed_out);
    add(m.retried, d.retried);
    add(m.dead_lettered, d.dead_lettered);
    add(m.dropped, d.dropped);
    add(m.released, d.released);
    m.running.fetch_sub(static_cast<std::uint32_t>(batch.size()));
    if (d.retried + d.released > 0) ln.more_work();
}

void Executor::arm_backoff_timer(std::chrono::steady_clock::time_point at) {
    {
        std::lock_guard lock(timer_mutex_);
        if (backoff_armed_ && backoff_at_ <= at) return;
        backoff_armed_ = true;
        backoff_at_ = at;
    }
    boost::asio::post(io_, [this, at] {
        backoff_timer_.expires_at(at);
        backoff_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            {
                std::lock_guard lock(timer_mutex_);
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
            std::shared_lock lock(names_mutex_); // set_task may add a type
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

std::size_t Executor::running_runs() const {
    std::size_t sum = 0, n = lane_count();
    for (std::size_t i = 0; i < n; ++i) sum += list_[i].load(std::memory_order_acquire)->running_runs.load();
    return sum;
}

namespace {
// Waits until `done()` or the limit passes; polls, as shutdown is rare and must not cost the hot path a signal.
template <class F>
bool wait_until(F done, Duration limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}
} // namespace

std::size_t Executor::shutdown(Duration grace) {
    bool was_accepting = accepting_.exchange(false);
    bool was_dispatching = dispatching_.exchange(false);
    if (!was_accepting && !was_dispatching && running_runs() == 0) return 0;
    if (auto n = running_runs(); n > 0 && grace.count() > 0)
        log::write(log::Level::info, "executor",
                   "waiting up to " + ms_text(grace) + " for " + std::to_string(n) + " running job(s)");
    if (wait_until([this] { return running_runs() == 0; }, grace)) return 0;
    shutting_down_ = true; // every running job's Context now says cancelled
    log::write(log::Level::warning, "executor",
               std::to_string(running_runs()) + " run(s) still going after the grace period; cancelling them");
    wait_until([this] { return running_runs() == 0; }, options_.stuck_grace);
    return running_runs();
}

void Executor::update_settings(const std::string& type, const registry::JobSettings& settings) {
    Lane* ln = lane(type);
    if (!ln) return;
    auto s = std::make_shared<const registry::JobSettings>(settings);
    on_strand(*ln, [this, ln, s] {
        if (ln->swapping.load()) { // applies to the version being swapped in
            ln->next_settings = s;
            return;
        }
        auto v = ln->current();
        publish(*ln, s, v->task, v->unusable_reason);
        signal_work(); // a raised concurrency or a re-enabled type may free work
    });
}

void Executor::set_task(const std::string& type, std::shared_ptr<runner::Runner> task,
                        const registry::JobSettings& settings) {
    Lane* ln = add_lane(type);
    auto s = std::make_shared<const registry::JobSettings>(settings);
    on_strand(*ln, [this, ln, s, task = std::move(task)]() mutable {
        ln->next_task = std::move(task);
        ln->next_settings = s;
        ln->next_reason.clear();
        bool had_runs = ln->running_runs.load() > 0 && ln->current()->task;
        ln->swapping.store(true); // no new run of the old version from here; try_swap waits for the last one
        if (had_runs)
            log::write(log::Level::info, "executor",
                       "a new version is loaded; it serves once the " + std::to_string(ln->running_runs.load()) +
                           " run(s) of the old one end",
                       ln->type);
        try_swap(*ln);
    });
}

void Executor::remove_task(const std::string& type, const std::string& reason) {
    Lane* ln = lane(type);
    if (!ln) return;
    on_strand(*ln, [this, ln, reason] {
        ln->next_task.reset();
        ln->next_settings.reset();
        ln->next_reason = reason;
        ln->swapping.store(true); // the runs going on finish on the code they started with
        try_swap(*ln);
    });
}

TypeMetrics Executor::metrics(const std::string& type) const {
    Lane* ln = lane(type);
    return ln ? ln->snapshot() : TypeMetrics{};
}

std::map<std::string, TypeMetrics> Executor::all_metrics() const {
    std::map<std::string, TypeMetrics> out;
    std::shared_lock lock(names_mutex_);
    for (const auto& [name, l] : lanes_) out[name] = l->snapshot();
    return out;
}

std::shared_ptr<const registry::JobSettings> Executor::settings(std::string_view type) const {
    Lane* ln = lane(type);
    return ln ? ln->current()->settings : nullptr;
}

bool Executor::accepting() const {
    return accepting_.load();
}

bool Executor::wait_idle(Duration limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (running_runs() == 0) {
            store_.flush(); // outcomes may still be on their way to the store
            bool idle = true;
            for (const auto& [type, c] : store_.counts()) idle = idle && c.pending() == 0;
            if (idle && running_runs() == 0) return true;
        }
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

} // namespace jobhost::executor
