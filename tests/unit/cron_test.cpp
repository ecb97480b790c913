#include "scheduler/cron.hpp"

#include <doctest/doctest.h>

#include <ctime>

using jobhost::scheduler::CronExpression;
using Clock = std::chrono::system_clock;

namespace {
Clock::time_point utc(int y, int mo, int d, int h, int mi, int s = 0) {
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return Clock::from_time_t(timegm(&tm));
}
std::string show(Clock::time_point t) {
    std::time_t tt = Clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M %a", &tm);
    return buf;
}
std::string next(const char* expr, Clock::time_point after) {
    auto c = CronExpression::parse(expr);
    REQUIRE_MESSAGE(c.ok(), c.error().message);
    auto n = c->next_after(after);
    return n ? show(*n) : "never";
}
} // namespace

TEST_CASE("cron next-fire times match a table of known answers (UTC)") {
    struct Row {
        const char* expr;
        Clock::time_point after;
        const char* expected;
    };
    const Row rows[] = {
        {"* * * * *", utc(2026, 1, 1, 0, 0, 30), "2026-01-01 00:01 Thu"},
        {"*/15 * * * *", utc(2026, 1, 1, 10, 14), "2026-01-01 10:15 Thu"},
        {"*/15 * * * *", utc(2026, 1, 1, 10, 15), "2026-01-01 10:30 Thu"},
        {"30 2 * * *", utc(2026, 3, 10, 3, 0), "2026-03-11 02:30 Wed"},
        {"0 0 1 * *", utc(2026, 1, 31, 12, 0), "2026-02-01 00:00 Sun"},
        {"0 12 31 * *", utc(2026, 2, 1, 0, 0), "2026-03-31 12:00 Tue"}, // skips 30-day months and February
        {"0 0 29 2 *", utc(2026, 3, 1, 0, 0), "2028-02-29 00:00 Tue"},  // next leap day
        {"0 0 29 2 *", utc(2028, 2, 28, 23, 59), "2028-02-29 00:00 Tue"},
        {"0 9 * * MON-FRI", utc(2026, 11, 27, 10, 0), "2026-11-30 09:00 Mon"}, // Friday after 9 -> Monday
        {"0 9 * * 1-5", utc(2026, 11, 28, 8, 0), "2026-11-30 09:00 Mon"},
        {"0 0 * * 7", utc(2026, 11, 28, 0, 0), "2026-11-29 00:00 Sun"}, // 7 is Sunday too
        {"0 0 * * sun", utc(2026, 11, 28, 0, 0), "2026-11-29 00:00 Sun"},
        {"0 0 1 jan *", utc(2026, 6, 1, 0, 0), "2027-01-01 00:00 Fri"},
        {"0 0 13 * 5", utc(2026, 11, 1, 0, 0), "2026-11-06 00:00 Fri"}, // dom OR dow when both restricted
        {"0 0 13 * 5", utc(2026, 11, 7, 0, 0), "2026-11-13 00:00 Fri"},
        {"0 0 13 * *", utc(2026, 11, 14, 0, 0), "2026-12-13 00:00 Sun"},
        {"5,10-12/2 * * * *", utc(2026, 1, 1, 0, 6), "2026-01-01 00:10 Thu"},
        {"5,10-12/2 * * * *", utc(2026, 1, 1, 0, 10), "2026-01-01 00:12 Thu"},
        {"0 */6 * * *", utc(2026, 1, 1, 19, 0), "2026-01-02 00:00 Fri"},
        {"59 23 31 12 *", utc(2026, 12, 31, 23, 58), "2026-12-31 23:59 Thu"}, // year end
        {"0 0 1 1 *", utc(2026, 12, 31, 23, 59), "2027-01-01 00:00 Fri"},
        // UTC has no daylight-saving change: 02:30 exists on the day Europe and the US skip it.
        {"30 2 * * *", utc(2026, 3, 29, 0, 0), "2026-03-29 02:30 Sun"},
        {"30 2 * * *", utc(2026, 3, 8, 0, 0), "2026-03-08 02:30 Sun"},
        {"@hourly", utc(2026, 1, 1, 0, 1), "2026-01-01 01:00 Thu"},
        {"@daily", utc(2026, 1, 1, 0, 0), "2026-01-02 00:00 Fri"},
        {"@weekly", utc(2026, 11, 29, 0, 0), "2026-12-06 00:00 Sun"},
        {"@monthly", utc(2026, 12, 15, 0, 0), "2027-01-01 00:00 Fri"},
        {"@yearly", utc(2026, 12, 15, 0, 0), "2027-01-01 00:00 Fri"},
        {"0 0 30 2 *", utc(2026, 1, 1, 0, 0), "never"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.expr);
        CAPTURE(show(r.after));
        CHECK(next(r.expr, r.after) == r.expected);
    }
}

TEST_CASE("invalid cron expressions say which field is wrong") {
    struct Row {
        const char* expr;
        const char* message_part;
    };
    const Row rows[] = {
        {"* * * *", "has 4"},
        {"* * * * * *", "has 6"},
        {"60 * * * *", "minute field '60' is outside 0-59"},
        {"* 24 * * *", "hour field '24' is outside 0-23"},
        {"* * 0 * *", "day-of-month field '0' is outside 1-31"},
        {"* * * 13 *", "month field '13' is outside 1-12"},
        {"* * * * 8", "day-of-week field '8' is outside 0-7"},
        {"*/0 * * * *", "bad step '0' in minute field"},
        {"* * * foo *", "bad value 'foo' in month field"},
        {"5-1 * * * *", "minute field '5-1' is outside 0-59"},
        {"1,,2 * * * *", "empty list item in minute field"},
        {"@sometimes", "unknown cron alias '@sometimes'"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.expr);
        auto c = CronExpression::parse(r.expr);
        REQUIRE_FALSE(c.ok());
        CHECK(c.error().message.find(r.message_part) != std::string::npos);
    }
}
