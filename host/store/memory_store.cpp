#include "store/memory_store.hpp"

#include "store/priority_levels.hpp"

#include <algorithm>

namespace jobhost::store {

namespace {
std::size_t& count_of(TypeCounts& c, JobState s) {
    switch (s) {
    case JobState::scheduled: return c.scheduled;
    case JobState::ready: return c.ready;
    case JobState::reserved: return c.reserved;
    case JobState::running: return c.running;
    case JobState::done: return c.done;
    case JobState::dead: break;
    }
    return c.dead;
}
} // namespace

MemoryStore::TypeQueues& MemoryStore::queues(std::string_view type) {
    auto it = refs_.find(type);
    if (it != refs_.end()) return types_[it->second].second;
    refs_.emplace(std::string(type), static_cast<TypeRef>(types_.size()));
    types_.emplace_back(std::string(type), TypeQueues{});
    return types_.back().second;
}

TypeRef MemoryStore::intern(std::string_view type) {
    std::lock_guard lock(mutex_);
    queues(type);
    return refs_.find(type)->second;
}

void MemoryStore::set_state(JobRecord& job, TypeQueues& q, JobState to) {
    count_of(q.counts, job.state) -= 1;
    count_of(q.counts, to) += 1;
    job.state = to;
}

void MemoryStore::make_ready(JobRecord& job, TypeQueues& q, TimePoint since) {
    set_state(job, q, JobState::ready);
    job.ready_since = since;
    q.ready[static_cast<std::size_t>(job.priority)].push_back({job.id, since});
}

void MemoryStore::promote_due(TypeQueues& q, TimePoint now) {
    while (!q.scheduled.empty() && q.scheduled.top().at <= now) {
        auto s = q.scheduled.top();
        q.scheduled.pop();
        auto it = jobs_.find(s.id);
        if (it == jobs_.end() || it->second.state != JobState::scheduled || it->second.run_at != s.at) continue;
        make_ready(it->second, q, s.at);
    }
}

void MemoryStore::drop_unique(const JobRecord& job) {
    if (job.unique_key.empty()) return;
    auto it = unique_.find({job.type, job.unique_key});
    if (it != unique_.end() && it->second == job.id) unique_.erase(it);
}

void MemoryStore::erase(std::unordered_map<JobId, JobRecord>::iterator it, TypeQueues& q) {
    count_of(q.counts, it->second.state) -= 1;
    drop_unique(it->second);
    jobs_.erase(it);
}

std::vector<EnqueueOutcome> MemoryStore::enqueue(std::span<const NewJob> jobs) {
    std::vector<EnqueueOutcome> out;
    out.reserve(jobs.size());
    auto now = Clock::now();
    std::lock_guard lock(mutex_);
    for (const auto& n : jobs) {
        auto& q = queues(n.type);
        if (n.tick) { // a schedule's tick: queued once
            if (q.last_tick && *q.last_tick >= *n.tick) {
                out.push_back({0, false, true});
                continue;
            }
            q.last_tick = n.tick;
        }
        if (!n.unique_key.empty()) {
            auto it = unique_.find({n.type, n.unique_key});
            if (it != unique_.end()) {
                out.push_back({it->second, false, false});
                continue;
            }
        }
        JobId id = next_id_++;
        JobRecord job;
        job.id = id;
        job.type = n.type;
        job.payload = n.payload;
        job.priority = n.priority;
        job.unique_key = n.unique_key;
        job.max_attempts = n.max_attempts;
        job.created_at = now;
        job.run_at = n.run_at == TimePoint{} ? now : n.run_at;
        job.from_schedule = n.from_schedule;
        job.state = JobState::scheduled;
        q.counts.scheduled += 1;
        q.counts.enqueued += 1;
        if (job.run_at > now)
            q.scheduled.push({job.run_at, id});
        else
            make_ready(job, q, job.run_at);
        if (!n.unique_key.empty()) unique_.emplace(std::make_pair(n.type, n.unique_key), id);
        jobs_.emplace(id, std::move(job));
        out.push_back({id, true, false});
    }
    return out;
}

ClaimResult MemoryStore::claim(const ClaimRequest& r) {
    ClaimResult result;
    std::lock_guard lock(mutex_);
    auto since_of = [](const ReadyEntry& e) { return e.since; };
    TypeQueues* best_q = nullptr;
    std::uint32_t best_cap = 0;
    std::optional<HeadChoice> best, runner_up;
    std::vector<std::size_t> refused; // types whose lane said no (ClaimRequest::take)
look_again:
    best_q = nullptr;
    best.reset();
    runner_up.reset();
    result.exhausted.clear();
    for (std::size_t i = 0; i < r.types.size(); ++i) {
        auto [ref, cap] = r.types[i];
        if (cap == 0 || ref >= types_.size()) continue;
        if (!refused.empty() && std::find(refused.begin(), refused.end(), i) != refused.end()) continue;
        auto& q = types_[ref].second;
        promote_due(q, r.now);
        auto head = best_head(q.ready, r.now, r.aging, since_of);
        if (!head) {
            result.exhausted.push_back(i);
            continue;
        }
        if (head->beats(best)) {
            if (best) runner_up = best;
            best = head;
            best_q = &q;
            best_cap = cap;
            result.index = i;
        } else if (head->beats(runner_up)) {
            runner_up = head;
        }
    }
    if (!best_q) return result;
    if (r.take && !r.take(result.index)) {
        refused.push_back(result.index);
        goto look_again;
    }
    std::uint32_t n = std::min(best_cap, r.max);
    while (result.jobs.size() < n) {
        auto head = best_head(best_q->ready, r.now, r.aging, since_of);
        if (!head) break;
        if (!result.jobs.empty() && runner_up && !head->beats(runner_up)) break; // only jobs that would be next
        auto& from = best_q->ready[head->level];
        JobId id = from.front().id;
        from.pop_front();
        auto it = jobs_.find(id);
        if (it == jobs_.end() || it->second.state != JobState::ready) continue;
        auto& job = it->second;
        set_state(job, *best_q, JobState::running);
        job.attempt += 1; // nothing survives a crash here, so it is charged at once
        job.started_at = r.now;
        job.lease_owner = r.owner;
        job.lease_expiry = r.lease_expiry;
        result.jobs.push_back(job);
    }
    result.more = runner_up.has_value() || best_head(best_q->ready, r.now, r.aging, since_of).has_value();
    return result;
}

void MemoryStore::finish(std::span<const Outcome> outcomes, RunToken) {
    std::lock_guard lock(mutex_);
    for (const auto& o : outcomes) {
        auto it = jobs_.find(o.id);
        if (it == jobs_.end() || it->second.state != JobState::running) continue;
        auto& job = it->second;
        auto& q = queues(job.type);
        job.lease_owner.clear();
        if (!o.error.empty()) job.errors.push_back({job.attempt, o.at, o.error});
        switch (o.kind) {
        case Outcome::Kind::done:
            q.counts.done += 1; // done jobs are not kept; the count is of jobs that finished
            erase(it, q);
            break;
        case Outcome::Kind::retry:
            set_state(job, q, JobState::scheduled);
            job.run_at = o.retry_at;
            q.scheduled.push({job.run_at, job.id});
            break;
        case Outcome::Kind::dead:
            set_state(job, q, JobState::dead);
            job.finished_at = o.at;
            job.dead_reason = o.reason;
            drop_unique(job);
            break;
        case Outcome::Kind::dropped: erase(it, q); break;
        case Outcome::Kind::released:
            job.attempt -= 1; // not charged
            make_ready(job, q, o.at);
            break;
        }
    }
}

std::optional<TimePoint> MemoryStore::next_due(const std::set<std::string>& types, TimePoint now) {
    std::lock_guard lock(mutex_);
    std::optional<TimePoint> best;
    for (const auto& t : types) {
        auto it = refs_.find(t);
        if (it == refs_.end()) continue;
        auto& q = types_[it->second].second;
        promote_due(q, now); // what is due is claimable now
        auto& sched = q.scheduled;
        // skip stale heap entries (replayed or purged jobs)
        while (!sched.empty()) {
            auto j = jobs_.find(sched.top().id);
            if (j != jobs_.end() && j->second.state == JobState::scheduled && j->second.run_at == sched.top().at) break;
            sched.pop();
        }
        if (!sched.empty() && (!best || sched.top().at < *best)) best = sched.top().at;
    }
    return best;
}

std::optional<JobRecord> MemoryStore::get(JobId id) {
    std::lock_guard lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::nullopt;
    return it->second;
}

std::vector<JobRecord> MemoryStore::dead_letters(const DeadLetterFilter& filter) {
    std::lock_guard lock(mutex_);
    std::vector<JobRecord> out;
    for (const auto& [id, job] : jobs_) {
        if (job.state != JobState::dead) continue;
        if (filter.type && job.type != *filter.type) continue;
        out.push_back(job);
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    if (out.size() > filter.limit) out.resize(filter.limit);
    return out;
}

std::size_t MemoryStore::replay(std::span<const JobId> ids, TimePoint now) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (JobId id : ids) {
        auto it = jobs_.find(id);
        if (it == jobs_.end() || it->second.state != JobState::dead) continue;
        auto& job = it->second;
        if (!job.unique_key.empty()) {
            auto [u, inserted] = unique_.emplace(std::make_pair(job.type, job.unique_key), id);
            if (!inserted) continue; // another job holds the key now
        }
        auto& q = queues(job.type);
        // a fresh set of attempts, the same size as the one it had; the count goes on
        job.max_attempts = job.attempt + (job.max_attempts - std::min(job.max_attempts, job.attempts_before));
        job.attempts_before = job.attempt;
        job.dead_reason = DeadReason::none;
        job.run_at = now;
        make_ready(job, q, now);
        q.counts.enqueued += 1;
        ++n;
    }
    return n;
}

void MemoryStore::progress(JobId id, const Progress& progress) {
    std::lock_guard lock(mutex_);
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second.state == JobState::running) it->second.progress = progress;
}

std::size_t MemoryStore::purge(std::span<const JobId> ids) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (JobId id : ids) {
        auto it = jobs_.find(id);
        if (it == jobs_.end() || it->second.state != JobState::dead) continue;
        erase(it, queues(it->second.type));
        ++n;
    }
    return n;
}

std::size_t MemoryStore::purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
        const auto& j = it->second;
        bool match =
            j.state == JobState::dead && (!type || j.type == *type) && (!older_than || j.finished_at < *older_than);
        auto next = std::next(it);
        if (match) {
            erase(it, queues(j.type));
            ++n;
        }
        it = next;
    }
    return n;
}

std::vector<JobRecord> MemoryStore::list(const ListFilter& filter) {
    std::lock_guard lock(mutex_);
    std::vector<JobRecord> out;
    for (const auto& [id, job] : jobs_) {
        if (filter.type && job.type != *filter.type) continue;
        if (filter.state && job.state != *filter.state) continue;
        if (filter.before && id >= *filter.before) continue;
        out.push_back(job);
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
    if (out.size() > filter.limit) out.resize(filter.limit);
    return out;
}

std::map<std::string, TypeCounts> MemoryStore::counts() {
    std::lock_guard lock(mutex_);
    std::map<std::string, TypeCounts> out;
    auto now = Clock::now();
    for (auto& [type, q] : types_) {
        promote_due(q, now);
        if (q.counts.enqueued == 0) continue; // interned but never used
        auto& c = out[type] = q.counts;
        for (const auto& level : q.ready)
            if (!level.empty() && (!c.oldest_ready || level.front().since < *c.oldest_ready))
                c.oldest_ready = level.front().since;
    }
    return out;
}

} // namespace jobhost::store
