#include "scheduler/scheduler.hpp"

#include "log/log.hpp"

#include <boost/asio/post.hpp>

#include <random>

namespace jobhost::scheduler {

using namespace std::chrono;

std::optional<SystemTime> tick_after(const std::optional<CronExpression>& cron, milliseconds interval,
                                     SystemTime after) {
    if (cron) return cron->next_after(after);
    if (interval.count() <= 0) return std::nullopt;
    auto since_epoch = duration_cast<milliseconds>(after.time_since_epoch());
    auto n = since_epoch.count() / interval.count() + 1; // strictly after
    return SystemTime(duration_cast<SystemTime::duration>(interval * n));
}

SystemTime tick_at_or_before(const std::optional<CronExpression>& cron, milliseconds interval, SystemTime now) {
    auto step = cron || interval.count() <= 0 ? milliseconds(60'000) : interval;
    auto since_epoch = duration_cast<milliseconds>(now.time_since_epoch());
    return SystemTime(duration_cast<SystemTime::duration>(step * (since_epoch.count() / step.count())));
}

Scheduler::Scheduler(boost::asio::io_context& io, std::function<void(const std::string&, SystemTime)> tick,
                     std::function<SystemTime()> now)
    : io_(io), tick_(std::move(tick)), now_(std::move(now)) {}

namespace {
bool same_schedule(const registry::JobSettings& a, const registry::JobSettings& b) {
    return a.enabled == b.enabled && a.interval == b.interval && a.cron == b.cron &&
           a.schedule_jitter == b.schedule_jitter;
}
} // namespace

void Scheduler::set(const std::string& type, const registry::JobSettings& settings, bool at_start) {
    if (auto it = entries_.find(type); it != entries_.end()) {
        if (same_schedule(it->second->settings, settings)) { // unchanged: keep the timer and its phase
            it->second->settings = settings;
            return;
        }
        it->second->timer->cancel();
        entries_.erase(it);
    }
    if (stopped_ || !settings.enabled || !settings.periodic()) return;
    auto e = std::make_shared<Entry>();
    e->type = type;
    e->settings = settings;
    e->timer = std::make_unique<boost::asio::steady_timer>(io_);
    if (!settings.cron.empty()) {
        auto c = CronExpression::parse(settings.cron);
        if (!c) return; // validated before; a bad expression never gets here
        e->cron = std::move(*c);
    }
    entries_[type] = e;
    auto now = now_();
    if (at_start && settings.run_on_start) {
        auto tick_at = tick_at_or_before(e->cron, settings.interval, now);
        boost::asio::post(io_, [this, e, tick_at] {
            if (!stopped_ && entries_.count(e->type) && entries_[e->type] == e) tick_(e->type, tick_at);
        });
    }
    plan(e, now);
}

void Scheduler::plan(const std::shared_ptr<Entry>& e, SystemTime after) {
    auto next = tick_after(e->cron, e->settings.interval, after);
    if (!next) {
        log::write(log::Level::warning, "scheduler", "cron '" + e->cron->text() + "' never fires again", e->type);
        return;
    }
    e->next = *next;
    e->fire_at = *next;
    if (e->settings.schedule_jitter.count() > 0) {
        thread_local std::mt19937_64 rng{std::random_device{}()};
        e->fire_at +=
            milliseconds(std::uniform_int_distribution<std::int64_t>(0, e->settings.schedule_jitter.count())(rng));
    }
    arm(e);
}

void Scheduler::arm(const std::shared_ptr<Entry>& e) {
    auto delay = std::max(e->fire_at - now_(), SystemTime::duration(0));
    e->timer->expires_after(duration_cast<steady_clock::duration>(delay)); // full precision: no early truncation
    std::weak_ptr<Entry> weak = e;
    e->timer->async_wait([this, weak](const boost::system::error_code& ec) {
        auto e = weak.lock();
        if (ec || !e || stopped_) return;
        auto now = now_();
        if (now < e->fire_at) { // woke early: wait again for the same tick
            arm(e);
            return;
        }
        tick_(e->type, e->next);
        plan(e, std::max(e->next, now)); // late: the next tick after now, not every missed one
    });
}

void Scheduler::stop() {
    stopped_ = true;
    for (auto& [type, e] : entries_) e->timer->cancel();
    entries_.clear();
}

std::optional<SystemTime> Scheduler::next_tick(const std::string& type) const {
    auto it = entries_.find(type);
    if (it == entries_.end()) return std::nullopt;
    return it->second->next;
}

} // namespace jobhost::scheduler
