// Five-field cron expressions, evaluated in UTC.
//
//   minute hour day-of-month month day-of-week
//
// Each field takes `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and comma lists; months take JAN..DEC and
// weekdays SUN..SAT (0 and 7 are both Sunday), case-insensitive. Aliases: @yearly @annually @monthly @weekly @daily
// @midnight @hourly. When both day-of-month and day-of-week are restricted (neither starts with `*`), a day matches if
// either matches, as in Vixie cron.
#pragma once

#include "common/error.hpp"

#include <bitset>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost::scheduler {

class CronExpression {
public:
    using TimePoint = std::chrono::system_clock::time_point;

    // Parses an expression; the error names the field and what is wrong with it.
    static core::Expected<CronExpression> parse(std::string_view text);

    // The first matching minute strictly after `after`, or nullopt if none within the next eight years (for
    // example "0 0 30 2 *").
    std::optional<TimePoint> next_after(TimePoint after) const;

    const std::string& text() const noexcept { return text_; }

private:
    std::string text_;
    std::bitset<60> minutes_;
    std::bitset<24> hours_;
    std::bitset<32> days_;    // 1..31
    std::bitset<13> months_;  // 1..12
    std::bitset<7> weekdays_; // 0..6, Sunday = 0
    bool dom_restricted_ = false;
    bool dow_restricted_ = false;

    bool day_matches(int mday, int wday) const;
};

} // namespace jobhost::scheduler
