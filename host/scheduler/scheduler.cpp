#include "scheduler/scheduler.hpp"

#include "log/log.hpp"

#include <boost/asio/post.hpp>

#include <random>

namespace jobhost::scheduler {

Scheduler::Scheduler(boost::asio::io_context& io, std::function<void(const std::string&)> tick)
    : io_(io), tick_(std::move(tick)) {}

void Scheduler::set(const std::string& type, const registry::JobSettings& settings, bool at_start) {
    if (auto it = entries_.find(type); it != entries_.end()) {
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
    if (at_start && settings.run_on_start) {
        boost::asio::post(io_, [this, e] {
            if (!stopped_ && entries_.count(e->type) && entries_[e->type] == e) tick_(e->type);
        });
    }
    arm(e);
}

void Scheduler::arm(const std::shared_ptr<Entry>& e) {
    using namespace std::chrono;
    auto now = system_clock::now();
    milliseconds delay{0};
    if (e->cron) {
        auto next = e->cron->next_after(now);
        if (!next) {
            log::write(log::Level::warning, "scheduler", "cron '" + e->cron->text() + "' never fires again", e->type);
            return;
        }
        delay = duration_cast<milliseconds>(*next - now);
    } else {
        delay = e->settings.interval;
    }
    if (e->settings.schedule_jitter.count() > 0) {
        thread_local std::mt19937_64 rng{std::random_device{}()};
        delay += milliseconds(std::uniform_int_distribution<std::int64_t>(0, e->settings.schedule_jitter.count())(rng));
    }
    e->next = now + delay;
    e->timer->expires_after(delay);
    std::weak_ptr<Entry> weak = e;
    e->timer->async_wait([this, weak](const boost::system::error_code& ec) {
        auto e = weak.lock();
        if (ec || !e || stopped_) return;
        tick_(e->type);
        arm(e);
    });
}

void Scheduler::stop() {
    stopped_ = true;
    for (auto& [type, e] : entries_) e->timer->cancel();
    entries_.clear();
}

std::optional<std::chrono::system_clock::time_point> Scheduler::next_tick(const std::string& type) const {
    auto it = entries_.find(type);
    if (it == entries_.end()) return std::nullopt;
    return it->second->next;
}

} // namespace jobhost::scheduler
