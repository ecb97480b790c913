// The store interface: every engine (memory now, SQLite and PostgreSQL later) implements it, and the executor knows
// no other. Written for a shared, durable engine from the start:
//   - enqueue and outcomes come in batches, so an engine can group-commit them;
//   - a claim carries a lease (owner and expiry); a host renews the leases of long jobs, and expired leases go back
//     to ready, so a crashed host's jobs are run again (at-least-once);
//   - every call is one state change of the engine (one transaction), and every call is thread-safe.
#pragma once

#include "store/job.hpp"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace jobhost::store {

// A job type's name as the store knows it, from JobStore::intern: lets the hot path skip hashing names.
using TypeRef = std::uint32_t;

struct ClaimRequest {
    // Types that may be claimed now and how many jobs of each at most (a run, or a batch).
    std::vector<std::pair<TypeRef, std::uint32_t>> types;
    std::uint32_t max = 1; // total jobs at most; all of the same type (one run or one batch)
    TimePoint now;
    std::string owner; // lease owner, unique per host process
    TimePoint lease_expiry;
    // Priority aging: a waiting job's priority rises one level per `aging` of waiting; zero: off.
    std::chrono::milliseconds aging{0};
};

// How a run ended, as the executor reports it.
struct Outcome {
    JobId id = 0;
    std::string type;
    enum class Kind { done, retry, dead, dropped } kind = Kind::done;
    TimePoint at;
    TimePoint retry_at; // for retry
    std::string error;  // for retry, dead and dropped: this attempt's error
    DeadReason reason = DeadReason::none;
};

struct ClaimResult {
    std::size_t index = 0; // which entry of ClaimRequest::types the jobs belong to
    std::vector<JobRecord> jobs;
    // Entries of ClaimRequest::types that have nothing claimable now; the store calls the wakeup (or the caller
    // enqueues) before they have again.
    std::vector<std::size_t> exhausted;
};

struct DeadLetterFilter {
    std::optional<std::string> type;
    std::size_t limit = 1000;
};

struct ListFilter {
    std::optional<std::string> type;
    std::optional<JobState> state;
    std::size_t limit = 100;
};

struct TypeCounts {
    std::size_t scheduled = 0, ready = 0, leased = 0, done = 0, dead = 0;
    std::optional<TimePoint> oldest_ready; // since when the longest-waiting ready job has been ready
};

class JobStore {
public:
    virtual ~JobStore() = default;

    // Adds jobs; for each, the new id, or the id of the job that holds the same (type, unique key) while it is
    // scheduled, ready or leased.
    virtual std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) = 0;

    // The store's handle for a type name; the same name always gives the same handle.
    virtual TypeRef intern(std::string_view type) = 0;

    // Leases the best ready jobs: the highest (aged) priority across the requested types, oldest first within one
    // priority; due scheduled jobs count as ready. Returns up to request.max jobs of one type, attempt incremented.
    virtual ClaimResult claim(const ClaimRequest& request) = 0;

    // Records outcomes of leased jobs. A job whose lease was lost (recovered by another host) is ignored.
    virtual void finish(std::span<const Outcome> outcomes) = 0;

    // Returns leased jobs to ready without counting an attempt against them beyond the one already started (used on
    // shutdown for jobs that were cancelled).
    virtual void release(std::span<const JobId> ids, const std::string& error, TimePoint now) = 0;

    // Lease upkeep is the engine's own: it renews the leases of this process while it lives and puts leases that
    // expired (a host that died or stalled) back to ready, their started attempt counted. SQLite does both on its
    // writer thread; the memory engine has no other process to lose jobs to.

    // The earliest run_at after `now` of a scheduled job of these types, if any. (Jobs already due are claimable.)
    virtual std::optional<TimePoint> next_due(const std::set<std::string>& types, TimePoint now) = 0;

    virtual std::optional<JobRecord> get(JobId id) = 0;
    virtual std::vector<JobRecord> dead_letters(const DeadLetterFilter& filter) = 0;
    // Dead jobs back to ready with attempts reset, history kept. Returns how many.
    virtual std::size_t replay(std::span<const JobId> ids, TimePoint now) = 0;
    // Deletes dead jobs. Returns how many.
    virtual std::size_t purge(std::span<const JobId> ids) = 0;

    // Jobs by type and state, newest first.
    virtual std::vector<JobRecord> list(const ListFilter& filter) = 0;

    virtual std::map<std::string, TypeCounts> counts() = 0;

    // Returns once everything this object was asked to write so far is committed. Outcomes may be written
    // asynchronously; call this before reading them back.
    virtual void flush() {}

    // Sets what the store calls (from any thread) when jobs may have become claimable without an enqueue through
    // this object: another process enqueued or replayed jobs, leases were recovered, prefetched jobs arrived. An
    // engine that never needs it ignores it. Passing an empty function waits for a running call to return.
    virtual void set_wakeup(std::function<void()> wakeup) { (void)wakeup; }
};

} // namespace jobhost::store
