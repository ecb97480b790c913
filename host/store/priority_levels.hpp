// The ordering both engines claim by: one FIFO per priority level, and among their heads the highest priority,
// raised by aging (one level per `aging` of waiting), then the one waiting longest.
#pragma once

#include "store/job.hpp"

#include <chrono>
#include <cstddef>
#include <optional>

namespace jobhost::store {

struct HeadChoice {
    std::size_t level = 0;
    double score = 0;
    TimePoint since;
    // Whether this head goes before `other`.
    bool beats(const std::optional<HeadChoice>& other) const {
        return !other || score > other->score || (score == other->score && since < other->since);
    }
};

// The level whose head goes next, or nullopt when every level is empty. `since_of(entry)` is when it became ready.
template <class Levels, class SinceOf>
std::optional<HeadChoice> best_head(const Levels& levels, TimePoint now, std::chrono::milliseconds aging,
                                    SinceOf since_of) {
    std::optional<HeadChoice> best;
    for (std::size_t level = 0; level < levels.size(); ++level) {
        if (levels[level].empty()) continue;
        TimePoint since = since_of(levels[level].front());
        double score = static_cast<double>(level);
        if (aging.count() > 0 && now > since)
            score += static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count()) /
                     static_cast<double>(aging.count());
        HeadChoice c{level, score, since};
        if (c.beats(best)) best = c;
    }
    return best;
}

} // namespace jobhost::store
