#include "monitor/monitor.hpp"

#include "log/log.hpp"
#include "scheduler/cron.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace jobhost::monitor {

using executor::JobEventKind;

namespace {

constexpr std::size_t kSamples = 1024;

void push_sample(std::deque<double>& d, double v) {
    d.push_back(v);
    if (d.size() > kSamples) d.pop_front();
}

void observe(Histogram& h, double seconds) {
    std::size_t i = 0;
    while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
    h.counts[i] += 1;
    h.sum += seconds;
}

std::string percent(double v) {
    std::ostringstream o;
    o << std::round(v * 1000) / 10 << "%";
    return o.str();
}

std::int64_t seconds_of(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// The period of a periodic type: its interval, or the gap between its cron's next two firings.
std::optional<Duration> period_of(const registry::JobSettings& s, TimePoint now) {
    if (s.interval.count() > 0) return s.interval;
    if (s.cron.empty()) return std::nullopt;
    auto c = scheduler::CronExpression::parse(s.cron);
    if (!c) return std::nullopt;
    auto a = c->next_after(now);
    if (!a) return std::nullopt;
    auto b = c->next_after(*a);
    if (!b) return std::nullopt;
    return std::chrono::duration_cast<Duration>(*b - *a);
}

} // namespace

std::string_view health_name(Health h) {
    switch (h) {
    case Health::healthy: return "healthy";
    case Health::degraded: return "degraded";
    case Health::unhealthy: return "unhealthy";
    }
    return "unknown";
}

Monitor::Monitor(MonitorOptions options) : options_(options) {}

void Monitor::on_schedule(std::string_view type, TimePoint at) noexcept {
    try {
        std::lock_guard lock(mutex_);
        auto it = types_.find(type);
        if (it == types_.end()) it = types_.emplace(std::string(type), Samples{}).first;
        it->second.schedule_seen = at;
    } catch (...) {
    }
}

void Monitor::on_event(const executor::JobEvent& e) noexcept {
    try {
        std::lock_guard lock(mutex_);
        auto it = types_.find(e.type);
        if (it == types_.end()) it = types_.emplace(std::string(e.type), Samples{}).first;
        auto& s = it->second;
        double ms = static_cast<double>(e.duration.count());
        switch (e.kind) {
        case JobEventKind::started:
            push_sample(s.wait_ms, ms);
            observe(s.wait_hist, ms / 1000.0);
            s.last_run = e.at;
            break;
        case JobEventKind::succeeded:
        case JobEventKind::failed: {
            bool failed = e.kind == JobEventKind::failed;
            push_sample(s.run_ms, ms);
            observe(s.run_hist, ms / 1000.0);
            s.recent_failed.push_back({e.at, failed});
            while (s.recent_failed.size() > options_.failure_window) s.recent_failed.pop_front();
            s.recent_run_ms.push_back({e.at, ms});
            if (s.recent_run_ms.size() > kSamples) s.recent_run_ms.pop_front();
            (failed ? s.last_failure : s.last_success) = e.at;
            if (failed) s.last_error = std::string(e.error);
            s.stuck.erase(e.id);
            auto second = seconds_of(e.at);
            if (second != finished_second_) {
                for (auto t = std::max(finished_second_ + 1, second - 59); t <= second; ++t)
                    finished_per_second_[static_cast<std::size_t>(t % 60)] = 0;
                finished_second_ = second;
            }
            finished_per_second_[static_cast<std::size_t>(second % 60)] += 1;
            if (!failed) {
                s.recent_dead.push_back({e.at, false});
                while (s.recent_dead.size() > options_.failure_window) s.recent_dead.pop_front();
            }
            break;
        }
        case JobEventKind::dead_lettered:
        case JobEventKind::dropped:
            s.recent_dead.push_back({e.at, true});
            while (s.recent_dead.size() > options_.failure_window) s.recent_dead.pop_front();
            break;
        case JobEventKind::stuck: s.stuck.insert(e.id); break;
        default: break;
        }
        if (options_.events > 0) {
            events_.push_back(Event{next_seq_++, e.at, e.kind, std::string(e.type), e.id, e.attempt, e.duration,
                                    std::string(e.error)});
            while (events_.size() > options_.events) events_.pop_front();
        }
    } catch (...) {
        // out of memory: the event is not recorded; the executor goes on
    }
}

void Monitor::trim(Samples& s, TimePoint now) const {
    auto since = now - options_.window;
    while (!s.recent_failed.empty() && s.recent_failed.front().at < since) s.recent_failed.pop_front();
    while (!s.recent_dead.empty() && s.recent_dead.front().at < since) s.recent_dead.pop_front();
    while (!s.recent_run_ms.empty() && s.recent_run_ms.front().at < since) s.recent_run_ms.pop_front();
}

DurationStats Monitor::summarize(const std::deque<double>& samples) {
    DurationStats d;
    d.count = samples.size();
    if (samples.empty()) return d;
    std::vector<double> v(samples.begin(), samples.end());
    std::sort(v.begin(), v.end());
    auto at = [&](double p) {
        return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
    };
    double sum = 0;
    for (double x : v) sum += x;
    d.mean = sum / static_cast<double>(v.size());
    d.min = v.front();
    d.max = v.back();
    d.p50 = at(0.50);
    d.p95 = at(0.95);
    d.p99 = at(0.99);
    return d;
}

TypeStats Monitor::stats(const std::string& type) const {
    std::lock_guard lock(mutex_);
    TypeStats t;
    auto it = types_.find(type);
    if (it == types_.end()) return t;
    const auto& s = it->second;
    t.wait = summarize(s.wait_ms);
    t.run = summarize(s.run_ms);
    t.wait_hist = s.wait_hist;
    t.run_hist = s.run_hist;
    t.last_run = s.last_run;
    t.last_success = s.last_success;
    t.last_failure = s.last_failure;
    t.last_error = s.last_error;
    auto yes = [](const auto& d) {
        return static_cast<std::size_t>(std::count_if(d.begin(), d.end(), [](const auto& m) { return m.yes; }));
    };
    t.recent_runs = s.recent_failed.size();
    t.recent_failures = yes(s.recent_failed);
    t.recent_finished = s.recent_dead.size();
    t.recent_dead = yes(s.recent_dead);
    t.stuck = s.stuck;
    return t;
}

std::vector<Event> Monitor::events(const EventFilter& f) const {
    std::lock_guard lock(mutex_);
    std::vector<Event> out;
    for (auto it = events_.rbegin(); it != events_.rend() && out.size() < f.limit; ++it) {
        if (f.type && it->type != *f.type) continue;
        if (f.id && it->id != *f.id) continue;
        if (f.kind && it->kind != *f.kind) continue;
        out.push_back(*it);
    }
    return out; // newest first
}

double Monitor::jobs_per_second(TimePoint now) const {
    std::lock_guard lock(mutex_);
    auto second = seconds_of(now);
    std::uint64_t total = 0;
    for (std::int64_t t = second - 59; t <= second; ++t)
        if (t <= finished_second_ && t > finished_second_ - 60)
            total += finished_per_second_[static_cast<std::size_t>(t % 60)];
    return static_cast<double>(total) / 60.0;
}

Health Monitor::evaluate(const HealthInputs& in) {
    std::map<std::string, Alert> holding;
    auto hold = [&](std::string rule, std::string message, bool critical = false) {
        Alert a{rule, std::move(message), in.now, critical};
        holding.emplace(std::move(rule), std::move(a));
    };
    if (in.store_error) hold("store", "the store did not answer: " + *in.store_error, true);
    {
        std::lock_guard lock(mutex_);
        for (const auto& [type, settings] : in.types) {
            auto it = types_.find(type);
            const Samples* s = it == types_.end() ? nullptr : &it->second;
            if (it != types_.end()) trim(it->second, in.now);
            auto yes = [](const auto& d) {
                return static_cast<std::size_t>(std::count_if(d.begin(), d.end(), [](const auto& m) { return m.yes; }));
            };
            if (s && s->recent_failed.size() >= options_.failure_min_runs) {
                auto failed = yes(s->recent_failed);
                double rate = static_cast<double>(failed) / static_cast<double>(s->recent_failed.size());
                if (rate > options_.failure_rate)
                    hold("failure_rate:" + type, "job type " + type + ": " + std::to_string(failed) + " of its last " +
                                                     std::to_string(s->recent_failed.size()) + " runs failed (" +
                                                     percent(rate) + "), above the threshold " +
                                                     percent(options_.failure_rate) + " ([monitor] failure_rate)");
            }
            if (s && s->recent_dead.size() >= options_.failure_min_runs) {
                auto dead = yes(s->recent_dead);
                double rate = static_cast<double>(dead) / static_cast<double>(s->recent_dead.size());
                if (rate > options_.dead_letter_rate)
                    hold("dead_letter_rate:" + type,
                         "job type " + type + ": " + std::to_string(dead) + " of its last " +
                             std::to_string(s->recent_dead.size()) + " finished jobs were dead-lettered (" +
                             percent(rate) + "), above the threshold " + percent(options_.dead_letter_rate) +
                             " ([monitor] dead_letter_rate)");
            }
            auto limit = settings.max_run_time.value_or(options_.max_run_time);
            if (s && limit.count() > 0 && s->recent_run_ms.size() >= options_.failure_min_runs) {
                std::deque<double> ms;
                for (const auto& r : s->recent_run_ms) ms.push_back(r.ms);
                auto st = summarize(ms);
                double figure = options_.run_time_p95 ? st.p95 : st.mean;
                if (figure > static_cast<double>(limit.count()))
                    hold("run_time:" + type, "job type " + type + ": the " + (options_.run_time_p95 ? "p95" : "mean") +
                                                 " run of its last " + std::to_string(ms.size()) + " runs took " +
                                                 core::format_duration(Duration(static_cast<std::int64_t>(figure))) +
                                                 ", longer than " + core::format_duration(limit) +
                                                 (settings.max_run_time ? " ([jobs." + type + "] max_run_time)"
                                                                        : std::string(" ([monitor] max_run_time)")));
            }
            if (s && !s->stuck.empty())
                hold("stuck:" + type,
                     "job type " + type + ": job " + std::to_string(*s->stuck.begin()) +
                         " is stuck, running past its timeout and ignoring cancellation" +
                         (s->stuck.size() > 1 ? " (and " + std::to_string(s->stuck.size() - 1) + " more)" : ""));
            if (settings.enabled && settings.periodic()) {
                if (auto period = period_of(settings, in.now)) {
                    // from the last run here, the last tick another host ran, or the last reload, whichever is latest
                    TimePoint last = in.started;
                    if (s && s->last_run) last = std::max(last, *s->last_run);
                    if (s && s->schedule_seen) last = std::max(last, *s->schedule_seen);
                    auto since = std::chrono::duration_cast<Duration>(in.now - last);
                    auto limit = Duration(
                        static_cast<std::int64_t>(static_cast<double>(period->count()) * options_.late_factor));
                    if (since > limit)
                        hold("schedule_late:" + type,
                             "job type " + type + " has not run for " + core::format_duration(since) + ", more than " +
                                 core::format_duration(limit) + " (" +
                                 std::to_string(options_.late_factor).substr(0, 4) + " x its period " +
                                 core::format_duration(*period) + ", [monitor] late_factor)");
                }
            }
            if (auto c = in.counts.find(type); c != in.counts.end() && c->second.oldest_ready) {
                auto age = std::chrono::duration_cast<Duration>(in.now - *c->second.oldest_ready);
                if (age > options_.backlog_age)
                    hold("backlog_age:" + type,
                         "job type " + type + ": the oldest ready job has waited " + core::format_duration(age) +
                             ", longer than " + core::format_duration(options_.backlog_age) +
                             " ([monitor] backlog_age); " + std::to_string(c->second.ready) + " ready");
            }
        }
        for (auto& [rule, alert] : holding) {
            alert.last_held = in.now;
            auto existing = alerts_.find(rule);
            if (existing == alerts_.end()) {
                log::write(log::Level::warning, "monitor", "alert raised: " + alert.message);
                raised_[rule.substr(0, rule.find(':'))] += 1;
                alerts_.emplace(rule, alert);
            } else {
                existing->second.message = alert.message; // the figures move; the alert stays the same one
                existing->second.last_held = in.now;
            }
        }
        // An alert clears only once its rule has not held for clear_after: a figure that hovers around its
        // threshold does not raise and clear it at every evaluation.
        for (auto it = alerts_.begin(); it != alerts_.end();) {
            if (holding.count(it->first) || in.now - it->second.last_held < options_.clear_after) {
                ++it;
                continue;
            }
            log::write(log::Level::info, "monitor", "alert cleared: " + it->first);
            it = alerts_.erase(it);
        }
        health_ = alerts_.empty() ? Health::healthy : Health::degraded;
        for (const auto& [rule, alert] : alerts_)
            if (alert.critical) health_ = Health::unhealthy;
        if (alerts_.size() >= options_.unhealthy_at) health_ = Health::unhealthy;
        return health_;
    }
}

Health Monitor::health() const {
    std::lock_guard lock(mutex_);
    return health_;
}

std::vector<Alert> Monitor::alerts() const {
    std::lock_guard lock(mutex_);
    std::vector<Alert> out;
    for (const auto& [rule, a] : alerts_) out.push_back(a);
    return out;
}

std::map<std::string, std::uint64_t> Monitor::alerts_raised() const {
    std::lock_guard lock(mutex_);
    return raised_;
}

} // namespace jobhost::monitor
