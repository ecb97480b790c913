#include "common/duration.hpp"

#include <doctest/doctest.h>

using jobhost::core::Duration;
using jobhost::core::format_duration;
using jobhost::core::parse_duration;

TEST_CASE("durations parse in every documented form") {
    CHECK(parse_duration("250ms") == Duration(250));
    CHECK(parse_duration("30s") == Duration(30'000));
    CHECK(parse_duration("5m") == Duration(300'000));
    CHECK(parse_duration("1h30m") == Duration(5'400'000));
    CHECK(parse_duration("2d") == Duration(172'800'000));
    CHECK(parse_duration("1m30s250ms") == Duration(90'250));
    CHECK(parse_duration("45") == Duration(45'000)); // bare integers are seconds
    CHECK(parse_duration("0s") == Duration(0));
}

TEST_CASE("malformed durations are rejected, not guessed") {
    for (const char* bad : {"", "s", "5", "-5s", "5x", "1.5s", "5m1h", "1s1s", "5 s", "ms", "99999999999999999d"}) {
        CAPTURE(bad);
        if (std::string(bad) == "5") continue; // "5" is five seconds, checked above
        CHECK_FALSE(parse_duration(bad).has_value());
    }
}

TEST_CASE("durations format to their shortest exact form and round-trip") {
    CHECK(format_duration(Duration(5'400'000)) == "1h30m");
    CHECK(format_duration(Duration(250)) == "250ms");
    CHECK(format_duration(Duration(0)) == "0s");
    CHECK(format_duration(Duration(90'250)) == "1m30s250ms");
    for (std::int64_t ms : {1, 999, 1000, 61'001, 86'400'000, 90'061'001}) {
        CAPTURE(ms);
        CHECK(parse_duration(format_duration(Duration(ms))) == Duration(ms));
    }
}
