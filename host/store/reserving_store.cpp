#include "store/reserving_store.hpp"

#include "log/log.hpp"
#include "store/priority_levels.hpp"

#include <algorithm>
#include <optional>
#include <random>
#include <tuple>

namespace jobhost::store {

void ReservingStore::Waiter::finish(std::exception_ptr error) {
    {
        std::lock_guard lock(mutex_);
        error_ = std::move(error);
        done_ = true;
    }
    cv_.notify_one();
}

void ReservingStore::Waiter::wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
    auto error = std::move(error_);
    lock.unlock();
    if (error) std::rethrow_exception(std::move(error));
}

std::exception_ptr ReservingStore::copy_error(const std::exception_ptr& e) const {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return std::make_exception_ptr(std::runtime_error(x.what()));
    } catch (...) {
        return std::make_exception_ptr(std::runtime_error("unknown error"));
    }
}

void ReservingStore::submit(Op op, bool wait) {
    std::shared_ptr<Waiter> waiter;
    if (wait) op.done = waiter = std::make_shared<Waiter>();
    {
        std::lock_guard lock(queue_mutex_);
        if (stopping_) throw std::runtime_error("the store is closing");
        queue_.push_back(std::move(op));
    }
    queue_cv_.notify_one();
    if (wait) waiter->wait(); // rethrows the op's error
}

void ReservingStore::flush() {
    submit(Op{[] {}, {}, nullptr}, true);
}

void ReservingStore::start_writer() {
    writer_thread_ = std::thread([this] { writer_loop(); });
}

void ReservingStore::stop_writer() {
    {
        std::lock_guard lock(queue_mutex_);
        stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_thread_.joinable()) writer_thread_.join();
}

void ReservingStore::poke_writer() {
    {
        std::lock_guard lock(queue_mutex_);
        poked_ = true;
    }
    queue_cv_.notify_one();
}

void ReservingStore::writer_loop() {
    using Steady = std::chrono::steady_clock;
    std::deque<Op> keep;                  // ops to retry after a lost connection
    std::chrono::milliseconds backoff{0}; // before the next attempt after a lost connection
    // While backing off after a lost connection, when the next attempt may begin. (A plain time and a flag rather
    // than an optional: GCC 12's release build took the optional for maybe uninitialized.)
    bool backing_off = false;
    Steady::time_point retry_at{};
    std::exception_ptr outage; // the last error of the failures in a row (null: the last transaction did not fail so)
    Steady::time_point said{}; // when the outage was last logged
    std::minstd_rand rng{std::random_device{}()};
    bool stopping = false;
    for (;;) {
        std::deque<Op> batch, refused;
        {
            std::unique_lock lock(queue_mutex_);
            if (backing_off) {
                // Back-off: what is queued waits for the next attempt; while the database cannot be reached, what
                // waits for an answer (an enqueue) is refused at once instead.
                bool refuse = is_unreachable(outage);
                auto answer_awaited = [&] {
                    return std::any_of(queue_.begin(), queue_.end(), [](const Op& o) { return o.done != nullptr; });
                };
                queue_cv_.wait_until(lock, retry_at, [&] { return stopping_ || (refuse && answer_awaited()); });
                if (!stopping_ && Steady::now() < retry_at)
                    for (auto it = queue_.begin(); it != queue_.end();) {
                        if (it->done) {
                            refused.push_back(std::move(*it));
                            it = queue_.erase(it);
                        } else {
                            ++it;
                        }
                    }
            } else {
                queue_cv_.wait_for(lock, idle_wait(), [&] { return stopping_ || poked_ || !queue_.empty(); });
            }
            if (refused.empty()) {
                if (stopping_ && queue_.empty() && keep.empty()) break;
                stopping = stopping_;
                poked_ = false;
                batch.swap(keep);
                for (auto& op : queue_) batch.push_back(std::move(op));
                queue_.clear();
            }
        }
        if (!refused.empty()) {
            for (auto& op : refused) {
                if (op.after_failure) op.after_failure();
                op.done->finish(copy_error(outage));
            }
            continue;
        }
        auto error = run_batch(batch, keep);
        if (error && is_disconnect(error)) {
            if (stopping) { // nobody will retry them: fail what waits, drop the rest (the next host recovers them)
                for (auto& op : keep) {
                    if (op.after_failure) op.after_failure();
                    if (op.done) op.done->finish(std::make_exception_ptr(std::runtime_error("the store is closing")));
                }
                keep.clear();
                backing_off = false;
                continue;
            }
            auto now = Steady::now();
            std::string what = "unknown error";
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            // Said once when it begins, then every 30 s while it lasts (each attempt used to log an error).
            if (!outage) {
                outage_since_ = now;
                outage_attempts_ = 0;
                said = now;
                log::write(log::Level::error, "store",
                           "a transaction failed and is retried with back-off (50 ms doubling to 2 s, with jitter; " +
                               std::to_string(keep.size()) + " write(s) kept meanwhile" +
                               (is_unreachable(error) ? ", enqueues refused" : "") + "): " + what);
            } else if (now - said >= std::chrono::seconds(30)) {
                said = now;
                log::write(
                    log::Level::error, "store",
                    "still failing after " +
                        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - outage_since_).count()) +
                        " s and " + std::to_string(outage_attempts_ + 1) + " attempts, retrying: " + what);
            }
            outage = error;
            outage_attempts_ += 1;
            if (is_unreachable(error)) unreachable_ = true;
            // back-off with jitter, so that hosts that lost the database together do not come back in step
            backoff = std::clamp(backoff * 2, std::chrono::milliseconds(50), std::chrono::milliseconds(2000));
            backoff += std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 50)(rng));
            retry_at = now + backoff;
            backing_off = true;
        } else {
            backoff = std::chrono::milliseconds(0);
            backing_off = false;
            outage = nullptr;
            outage_attempts_ = 0;
            if (unreachable_.exchange(false)) wake_after_batch_ = true; // claims refused meanwhile may go on
        }
        // One wakeup for the whole batch, after every cache saw its refill: a claim then chooses among all of them
        // (waking after each one let a lower priority type's refill win the race).
        if (std::exchange(wake_after_batch_, false)) wake();
    }
}

std::exception_ptr ReservingStore::run_batch(std::deque<Op>& batch, std::deque<Op>& keep) {
    auto now = Clock::now();
    std::exception_ptr tx_error;
    std::vector<std::exception_ptr> errors(batch.size());
    bool op_failed = false;
    try {
        tx_begin();
        for (std::size_t i = 0; i < batch.size(); ++i) {
            try {
                batch[i].in_transaction();
            } catch (...) {
                errors[i] = std::current_exception();
                if (is_disconnect(errors[i])) throw;
                op_failed = true;
                if (op_error_aborts_transaction()) break;
            }
        }
        if (op_failed && op_error_aborts_transaction()) {
            tx_rollback();
            if (batch.size() > 1) {      // each on its own, so that one bad op fails alone
                std::exception_ptr lost; // a lost connection meanwhile, for the writer's back-off
                for (auto& op : batch) {
                    std::deque<Op> one;
                    one.push_back(std::move(op));
                    if (auto e = run_batch(one, keep); e && is_disconnect(e)) lost = e;
                }
                return lost;
            }
            tx_error = errors[0];
        } else {
            maintain(now);
            tx_commit();
        }
    } catch (...) {
        tx_error = std::current_exception();
        tx_rollback();
        if (!is_disconnect(tx_error)) { // (those the writer logs, once for failures in a row)
            try {
                std::rethrow_exception(tx_error);
            } catch (const std::exception& e) {
                log::write(log::Level::error, "store",
                           std::string("a transaction failed and was rolled back: ") + e.what());
            }
        }
    }
    bool disconnected = tx_error && is_disconnect(tx_error);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& op = batch[i];
        if (disconnected && op.keep_on_disconnect) {
            keep.push_back(std::move(op));
            continue;
        }
        auto err = tx_error ? tx_error : errors[i];
        if (!err && op.after_commit) op.after_commit();
        if (tx_error && op.after_failure) op.after_failure();
        if (op.done) op.done->finish(err ? copy_error(err) : nullptr);
    }
    return tx_error;
}

ReservingStore::Cache& ReservingStore::cache_locked(std::string_view type, TypeRef* ref) {
    auto it = refs_.find(std::string(type));
    TypeRef r;
    if (it != refs_.end()) {
        r = it->second;
    } else {
        r = static_cast<TypeRef>(names_.size());
        refs_.emplace(std::string(type), r);
        names_.emplace_back(type);
        caches_.emplace_back();
    }
    if (ref) *ref = r;
    return caches_[r];
}

TypeRef ReservingStore::intern(std::string_view type) {
    std::lock_guard lock(cache_mutex_);
    TypeRef r;
    cache_locked(type, &r);
    return r;
}

void ReservingStore::wake() {
    std::lock_guard lock(wakeup_mutex_);
    if (wakeup_) wakeup_();
}

void ReservingStore::set_wakeup(std::function<void()> wakeup) {
    std::lock_guard lock(wakeup_mutex_);
    wakeup_ = std::move(wakeup);
}

void ReservingStore::request_refill_locked(TypeRef ref, bool better_waiting) {
    auto& c = caches_[ref];
    if (c.refill_pending || !reserving_) return;
    // Follow demand: what this host started of the type in about 100 ms, measured since the last window.
    auto now = Clock::now();
    if (auto elapsed = now - c.window_start; elapsed >= std::chrono::milliseconds(50)) {
        double per_second = static_cast<double>(c.claimed) / std::chrono::duration<double>(elapsed).count();
        c.target = std::clamp<std::size_t>(static_cast<std::size_t>(per_second * 0.1), c.at_least,
                                           std::max<std::size_t>(prefetch_, c.at_least));
        c.claimed = 0;
        c.window_start = now;
    }
    if (c.starved) { // claims went without while a refill was under way, and the database had more: too few
        c.target = std::min(std::max(c.target * 2, c.at_least), std::max<std::size_t>(prefetch_, c.at_least));
        c.starved = false;
    }
    std::size_t want = c.target > c.size ? c.target - c.size : 0;
    if (better_waiting) want = std::max(want, c.target); // the file has a better job than the cache: fetch it
    if (want == 0) return;
    c.refill_pending = true;
    auto rows = std::make_shared<std::vector<JobRecord>>();
    auto head = std::make_shared<int>(-2); // the best level left in the file; -2: none
    std::string type = names_[ref];
    Op op;
    op.in_transaction = [this, rows, head, type, want] {
        *rows = reserve(type, want, aging_ms_.load(std::memory_order_relaxed) > 0, *head);
    };
    op.after_commit = [this, rows, head, ref] {
        // (an engine that gives jobs places in line, in the order they are to start, has them kept in that order)
        std::sort(rows->begin(), rows->end(), [](const JobRecord& a, const JobRecord& b) {
            return std::tie(a.mark_pos, a.run_at, a.id) < std::tie(b.mark_pos, b.run_at, b.id);
        });
        {
            std::lock_guard lock(cache_mutex_);
            auto& c = caches_[ref];
            for (auto& j : *rows) {
                c.ready[static_cast<std::size_t>(j.priority)].push_back(std::move(j));
                c.size += 1;
            }
            c.maybe_in_db = *head != -2;
            c.db_head_level = *head;
            c.refill_pending = false;
            c.last_refill_left_more = *head != -2;
        }
        wake_after_batch_ = true;
    };
    op.after_failure = [this, rows, ref] {
        refill_failed(*rows);
        std::lock_guard lock(cache_mutex_);
        caches_[ref].refill_pending = false;
    };
    // The refill runs on the writer thread; the caller (a claim) must not wait for it.
    std::lock_guard q(queue_mutex_);
    if (stopping_) {
        c.refill_pending = false;
        return;
    }
    queue_.push_back(std::move(op));
    queue_cv_.notify_one();
}

ClaimResult ReservingStore::claim(const ClaimRequest& r) {
    ClaimResult result;
    aging_ms_.store(r.aging.count(), std::memory_order_relaxed); // refills hold each level's oldest job when on
    std::lock_guard lock(cache_mutex_);
    auto since_of = [](const JobRecord& j) { return j.ready_since; };
    Cache* best_c = nullptr;
    std::uint32_t best_cap = 0;
    std::optional<HeadChoice> best, runner_up;
    int pending_level = -2; // the best level that a refill under way may bring, for a type with an empty cache
    std::vector<std::size_t> refused; // types whose lane said no (ClaimRequest::take)
look_again:
    best_c = nullptr;
    best.reset();
    runner_up.reset();
    pending_level = -2;
    result.exhausted.clear();
    result.waiting.clear();
    for (std::size_t i = 0; i < r.types.size(); ++i) {
        auto [ref, cap] = r.types[i];
        if (cap == 0 || ref >= caches_.size()) continue;
        if (!refused.empty() && std::find(refused.begin(), refused.end(), i) != refused.end()) continue;
        auto& c = caches_[ref];
        c.at_least = std::max<std::size_t>(c.at_least, cap); // hold at least a batch
        c.target = std::max(c.target, c.at_least);
        auto head = best_head(c.ready, r.now, r.aging, since_of);
        // the level of the best job the file may hold beyond the cache (4 when unknown), or -2 for none
        int in_db = c.maybe_in_db ? (c.db_head_level < 0 ? 4 : c.db_head_level) : -2;
        bool better_in_db = head && in_db > static_cast<int>(head->level);
        if (c.maybe_in_db && (c.size < c.target / 2 + 1 || better_in_db)) request_refill_locked(ref, better_in_db);
        if (c.refill_pending && (!head || better_in_db)) pending_level = std::max(pending_level, in_db);
        if (!head) { // a refill, if one is under way, wakes the executor when it brings jobs
            if (r.after_run && c.refill_pending && c.last_refill_left_more) c.starved = true;
            (c.refill_pending ? result.waiting : result.exhausted).push_back(i);
            continue;
        }
        if (head->beats(best)) {
            if (best) runner_up = best;
            best = head;
            best_c = &c;
            best_cap = cap;
            result.index = i;
        } else if (head->beats(runner_up)) {
            runner_up = head;
        }
    }
    if (!best_c) return result;
    // Do not pass over a job that a refill under way may bring, if it may be better: its wakeup claims again.
    if (pending_level >= 0 && static_cast<double>(pending_level) > best->score)
        return {{}, {}, result.exhausted, result.waiting, false, true};
    // A batch waits for the refill that completes it, rather than running part of one.
    if (best_cap > 1 && best_c->size < best_cap && best_c->maybe_in_db) {
        request_refill_locked(static_cast<TypeRef>(r.types[result.index].first));
        if (best_c->refill_pending) return {{}, {}, result.exhausted, result.waiting, false, true};
    }
    if (r.take && !r.take(result.index)) {
        refused.push_back(result.index);
        goto look_again;
    }
    std::uint32_t n = std::min(best_cap, r.max);
    while (result.jobs.size() < n) {
        auto head = best_head(best_c->ready, r.now, r.aging, since_of);
        if (!head) break;
        // a batch takes only jobs that would be next anyway
        if (!result.jobs.empty() && (runner_up && !head->beats(runner_up))) break;
        if (!result.jobs.empty() && pending_level >= 0 && static_cast<double>(pending_level) > head->score) break;
        auto& from = best_c->ready[head->level];
        JobRecord job = std::move(from.front());
        from.pop_front();
        best_c->size -= 1;
        best_c->claimed += 1;
        job.attempt += 1; // the attempt it is about to run; charged by finish() or by a crash
        job.state = JobState::running;
        job.started_at = r.now;
        taken_locked(job);
        result.jobs.push_back(std::move(job));
    }
    result.more = runner_up.has_value() || best_c->size > 0;
    return result;
}

void ReservingStore::set_db_heads(const std::vector<int>& heads) {
    std::lock_guard lock(cache_mutex_);
    for (std::size_t i = 0; i < heads.size() && i < caches_.size(); ++i) {
        auto& c = caches_[i];
        c.maybe_in_db = heads[i] != -2;
        c.db_head_level = heads[i];
    }
}

std::vector<std::string> ReservingStore::type_names() {
    std::lock_guard lock(cache_mutex_);
    return names_;
}

void ReservingStore::clear_caches() {
    std::lock_guard lock(cache_mutex_);
    for (auto& c : caches_) {
        for (auto& level : c.ready) level.clear();
        c.size = 0;
        c.maybe_in_db = true;
        c.db_head_level = -1;
    }
}

} // namespace jobhost::store
