// The in-memory engine: fastest, and nothing survives the process. It keeps the contract in store.hpp where it can
// apply: with nothing to survive and no other host, a claimed job is running at once (it has no reserved state),
// and close() has nothing to give back. One mutex guards everything; each call holds it for O(types + jobs
// touched), and counts are kept as jobs change state.
#pragma once

#include "store/store.hpp"

#include <array>
#include <deque>
#include <mutex>
#include <queue>
#include <unordered_map>

namespace jobhost::store {

class MemoryStore final : public JobStore {
public:
    std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) override;
    TypeRef intern(std::string_view type) override;
    ClaimResult claim(const ClaimRequest& request) override;
    void finish(std::span<const Outcome> outcomes, RunToken token = {}) override;
    std::optional<TimePoint> next_due(const std::set<std::string>& types, TimePoint now) override;
    std::optional<JobRecord> get(JobId id) override;
    std::vector<JobRecord> dead_letters(const DeadLetterFilter& filter) override;
    std::size_t replay(std::span<const JobId> ids, TimePoint now) override;
    void progress(JobId id, const Progress& progress) override;
    std::size_t purge(std::span<const JobId> ids) override;
    std::size_t purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) override;
    std::vector<JobRecord> list(const ListFilter& filter) override;
    std::map<std::string, TypeCounts> counts() override;

private:
    struct ReadyEntry {
        JobId id;
        TimePoint since;
    };
    struct Scheduled {
        TimePoint at;
        JobId id;
        bool operator>(const Scheduled& o) const { return at > o.at || (at == o.at && id > o.id); }
    };
    struct TypeQueues {
        std::array<std::deque<ReadyEntry>, 5> ready; // one FIFO per priority level
        std::priority_queue<Scheduled, std::vector<Scheduled>, std::greater<>> scheduled;
        TypeCounts counts; // oldest_ready is computed when asked
        std::optional<TimePoint> last_tick;
    };

    TypeQueues& queues(std::string_view type); // creates on first use; caller holds mutex_
    void set_state(JobRecord& job, TypeQueues& q, JobState to);
    void make_ready(JobRecord& job, TypeQueues& q, TimePoint since);
    void promote_due(TypeQueues& q, TimePoint now);
    void drop_unique(const JobRecord& job);
    void erase(std::unordered_map<JobId, JobRecord>::iterator it, TypeQueues& q);

    std::mutex mutex_;
    JobId next_id_ = 1;                         // never goes back: ids are not reused
    std::unordered_map<JobId, JobRecord> jobs_; // every job but the done ones
    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, TypeRef, StringHash, std::equal_to<>> refs_;
    std::deque<std::pair<std::string, TypeQueues>> types_;        // by TypeRef; a deque keeps references stable
    std::map<std::pair<std::string, std::string>, JobId> unique_; // (type, key) -> active job
};

} // namespace jobhost::store
