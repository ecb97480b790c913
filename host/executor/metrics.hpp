// Per-type counters the executor keeps. Each outcome is counted as what it is: a failed run is never a success.
#pragma once

#include <cstdint>

namespace jobhost::executor {

struct TypeMetrics {
    std::uint64_t enqueued = 0;
    std::uint64_t refused = 0; // enqueues refused (unique key held, invalid payload, ...)
    std::uint64_t started = 0; // jobs started (one per attempt)
    std::uint64_t runs = 0;    // calls into the plugin (a batch is one run)
    std::uint64_t succeeded = 0;
    std::uint64_t failed = 0; // every failed attempt, timed-out ones included
    std::uint64_t timed_out = 0;
    std::uint64_t retried = 0; // failed attempts scheduled to run again
    std::uint64_t dead_lettered = 0;
    std::uint64_t dropped = 0;     // would have been dead-lettered, but the type has dead_letter = false
    std::uint64_t coalesced = 0;   // periodic ticks skipped because the previous run was pending or running
    std::uint64_t stuck = 0;       // runs still going stuck_grace after their timeout
    std::uint64_t released = 0;    // cancelled by shutdown and left to be retried
    std::uint32_t running = 0;     // jobs running now
    std::uint32_t max_running = 0; // the most ever at once
};

} // namespace jobhost::executor
