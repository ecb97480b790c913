// The store interface and its contract. Every engine (memory, SQLite, and PostgreSQL next) keeps the rules below,
// and tests/unit/store_contract_test.cpp runs one conformance suite against each engine.
//
// THE STORE CONTRACT
//
// States. scheduled -> ready -> reserved -> running -> done | scheduled (a retry at t) | dead (with a reason).
//   - scheduled: waits for run_at. ready: may be claimed, by any host.
//   - reserved: held ahead by one host (an engine may fetch a few jobs per type before a worker is free). No attempt
//     is charged for it. It is visible as reserved, and it goes back to ready unchanged when its host stops or dies.
//   - running: its plugin has been called (begin_run). This is when the attempt is charged: a job is never charged
//     for being fetched, only for a run that started.
// Attempts. JobRecord::attempt counts attempts charged. A claimed job carries the attempt it is about to run
//   (charged + 1); finish() charges it with the outcome. A job whose host dies while it is running is charged that
//   attempt, with the error "the host died while this job was running" (and the signal, when it is known); once it
//   has used its attempts it goes to the dead-letter queue with the reason crashed_host. So a job that crashes its
//   host is retried exactly as configured and then stops, and no job is charged for another job's crash. A run
//   that is cancelled by a shutdown and returns goes back to ready uncharged (Outcome::Kind::released); a run that
//   never returns before the host stops is charged, with the reason host_stopped once out of attempts (close).
// Liveness. A host is alive while it holds a lock that the kernel drops when the process dies (never
//   `kill(pid, 0)`, which a zombie or a recycled pid fools). A dead host's jobs are recovered by the next host that
//   looks: at open, and then at least every second. Leases are renewed while a host lives; a lease that expires
//   (a host that stalled) is recovered too, and recovery wakes the hosts that can run the jobs. Every recovery
//   update is guarded by the state and owner it expects, so it never overwrites an outcome that landed meanwhile;
//   an outcome for a job whose lease was lost is ignored.
// Schedules. A tick of a schedule is queued once across every host that shares the store (NewJob::tick); whether
//   "the previous run is still pending or running" is read from the store (the schedule's unique key), not from
//   one host's memory.
// Ids. An id is never handed out twice by a store, whatever was deleted.
// Counts. Counts per type and state, and the number of jobs ever queued per type (by anyone: a host, the CLI, a
//   replay), are kept as the store changes; nothing the host calls periodically costs time that grows with the
//   backlog.
// Threads. Every call is thread-safe and is one state change of the engine (one transaction).
// Close. close() gives back what the host holds ahead of time without charging it, charges what is still running
//   (see above), and commits everything asked for before; the store answers nothing after it.
#pragma once

#include "store/host_record.hpp"
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

// The unique key that a schedule's jobs carry: at most one job from the schedule of a type is pending or running.
inline constexpr std::string_view kScheduleKey = "jobhost:schedule";

struct ClaimRequest {
    // Types that may be claimed now and how many jobs of each at most (a run, or a batch).
    std::vector<std::pair<TypeRef, std::uint32_t>> types;
    std::uint32_t max = 1; // total jobs at most; all of the same type (one run or one batch)
    TimePoint now;
    std::string owner; // lease owner, unique per host process
    TimePoint lease_expiry;
    // Priority aging: a waiting job's priority rises one level per `aging` of waiting; zero: off.
    std::chrono::milliseconds aging{0};
    // Asked, under the store's own lock, whether the best type found (its index in `types`) may still be taken: the
    // executor reserves a run slot of that type's lane here, so that concurrency limits hold without a lock of its
    // own. On false the store passes over that type and looks again. Unset: every type may be taken.
    std::function<bool(std::size_t)> take;
    // The claiming worker has just ended a run. A claim of such a worker that finds nothing while a refill is under
    // way means the host ends runs faster than its refills bring jobs (a burst of short jobs), so an engine that holds
    // jobs ahead may hold more; the first claims of idle workers do not (slots filling up with long jobs).
    bool after_run = false;
};

// How a run ended, as the executor reports it.
struct Outcome {
    JobId id = 0;
    std::string type;
    // released: a run cancelled by a shutdown that returned; back to ready, not charged, `error` kept in its history.
    enum class Kind { done, retry, dead, dropped, released } kind = Kind::done;
    TimePoint at;
    TimePoint retry_at; // for retry
    std::string error;  // for retry, dead and dropped: this attempt's error
    DeadReason reason = DeadReason::none;
    TimePoint started;               // when the run started
    std::optional<JobResult> result; // for done: what the run returned (already bounded)
};

struct ClaimResult {
    std::size_t index = 0; // which entry of ClaimRequest::types the jobs belong to
    std::vector<JobRecord> jobs;
    // Entries of ClaimRequest::types that have nothing claimable now; the store calls the wakeup (or the caller
    // enqueues) before they have again.
    std::vector<std::size_t> exhausted;
    // Entries with nothing claimable now but a refill under way (its wakeup comes when it lands). The executor keeps
    // asking about them (so the store can hold back a worse job of another type until the refill shows whether it
    // brings a better one) without counting them as work to wake a worker for.
    std::vector<std::size_t> waiting;
    // More is claimable right now beyond what was taken (another type in the request has a job, or this one has more):
    // the executor wakes one more worker only then.
    bool more = false;
    // Nothing was taken although some entry has a job: the store holds it back for a refill under way that may
    // bring a better one, and the refill's wakeup comes when it lands.
    bool held_back = false;
};

struct DeadLetterFilter {
    std::optional<std::string> type;
    std::size_t limit = 1000;
};

struct ListFilter {
    std::optional<std::string> type;
    std::optional<JobState> state;
    std::size_t limit = 100;
    std::optional<JobId> before; // only ids below this one: the next page of a newest-first listing
};

// What an enqueue that names neither gets, for a type (the SQL enqueue function of a shared database reads them).
struct TypeDefaults {
    registry::Priority priority = registry::Priority::normal;
    std::uint32_t max_attempts = 1;
};

struct TypeCounts {
    std::size_t scheduled = 0, ready = 0, reserved = 0, running = 0, done = 0, dead = 0;
    std::uint64_t enqueued = 0;            // jobs ever queued, by anyone, replays included
    std::optional<TimePoint> oldest_ready; // since when the longest-waiting ready job has been ready
    std::size_t pending() const { return scheduled + ready + reserved + running; }
};

class JobStore {
public:
    virtual ~JobStore() = default;

    // Adds jobs; for each, the new id, or the id of the job that holds the same (type, unique key) while it is
    // scheduled, ready, reserved or running, or tick_taken for a schedule's tick that was queued already.
    virtual std::vector<EnqueueOutcome> enqueue(std::span<const NewJob> jobs) = 0;

    // The store's handle for a type name; the same name always gives the same handle.
    virtual TypeRef intern(std::string_view type) = 0;

    // Takes the best ready jobs for this host: the highest (aged) priority across the requested types, oldest first
    // within one priority; up to request.max jobs of one type, and only jobs that would be next anyway (a batch
    // never passes over a better job of another type). Each returned job carries the attempt it is about to run.
    // The caller then calls begin_run just before it calls the plugin.
    virtual ClaimResult claim(const ClaimRequest& request) = 0;

    // Marks claimed jobs as running: from here on a crash of this process charges them an attempt. `jobs` are as
    // claim() returned them (each with the attempt it is about to run). Pass the token to finish() or release(). An
    // engine may write the mark without waiting for it: reads see it after flush().
    virtual RunToken begin_run(std::span<const JobRecord> jobs) {
        (void)jobs;
        return {};
    }

    // Records outcomes of running jobs and charges their attempt. A job whose lease was lost (recovered by another
    // host) is ignored. May commit asynchronously; the run's mark is cleared once the outcome is committed.
    virtual void finish(std::span<const Outcome> outcomes, RunToken token = {}) = 0;

    // Keeps the latest progress of a running job (ignored once it is no longer running). May be written
    // asynchronously; the executor calls it at most about once a second per job.
    virtual void progress(JobId id, const Progress& progress) = 0;

    // The earliest run_at after `now` of a scheduled job of these types, if any. (Jobs already due are claimable.)
    virtual std::optional<TimePoint> next_due(const std::set<std::string>& types, TimePoint now) = 0;

    virtual std::optional<JobRecord> get(JobId id) = 0;
    virtual std::vector<JobRecord> dead_letters(const DeadLetterFilter& filter) = 0;
    // Dead jobs back to ready with a fresh set of attempts (max_attempts grows by the set it had; see
    // JobRecord::attempts_before), history kept; counted as enqueued. Returns how many.
    virtual std::size_t replay(std::span<const JobId> ids, TimePoint now) = 0;
    // Deletes dead jobs. Returns how many.
    virtual std::size_t purge(std::span<const JobId> ids) = 0;
    // Deletes dead jobs by type (all types when empty) and age (all ages when empty). Returns how many.
    virtual std::size_t purge_dead(const std::optional<std::string>& type, std::optional<TimePoint> older_than) = 0;
    // Applies the retention limits now (an engine also does it on its own schedule).
    virtual void prune() {}

    // Jobs by type and state, newest first.
    virtual std::vector<JobRecord> list(const ListFilter& filter) = 0;

    // Bytes the store takes on disk, or nullopt where it has no disk (memory).
    virtual std::optional<std::uint64_t> size_on_disk() { return std::nullopt; }

    // Counts per type, kept as the store changes (no scan of the jobs).
    virtual std::map<std::string, TypeCounts> counts() = 0;

    // Returns once everything this object was asked to write so far is committed. Outcomes may be written
    // asynchronously; call this before reading them back.
    virtual void flush() {}

    // See "Close" above. Idempotent; the destructor of an engine does not call it (a destructor without close is
    // what a crash looks like to the other hosts).
    virtual void close() {}

    // This host's record of what it runs (null where nothing survives a crash, or for the command line): where
    // arm_crash_notes() writes what ended the process.
    virtual HostRecord* host_record() const noexcept { return nullptr; }

    // How many jobs of dead hosts were given back when the store opened (charged or not); each charged one is logged.
    virtual std::size_t recovered_at_open() const noexcept { return 0; }

    // Sets what the store calls (from any thread) when jobs may have become claimable without an enqueue through
    // this object: another process enqueued or replayed jobs, leases were recovered, prefetched jobs arrived. An
    // engine that never needs it ignores it. Passing an empty function waits for a running call to return.
    virtual void set_wakeup(std::function<void()> wakeup) { (void)wakeup; }

    // Publishes each type's configured priority and attempts, for enqueues that do not come through a host (the
    // PostgreSQL engine's SQL function). Engines without such enqueues ignore it.
    virtual void set_type_defaults(const std::map<std::string, TypeDefaults>& defaults) { (void)defaults; }
};

} // namespace jobhost::store
