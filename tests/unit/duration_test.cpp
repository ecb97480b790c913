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

TEST_CASE("a duration beyond 3650 days is refused in every form, and the error says the limit") {
    CHECK(parse_duration("3650d") == Duration(3650LL * 86'400'000));
    for (const char* too_long : {"3651d", "100000d", "50000000d", "315360001", "87601h", "999999999999"}) {
        CAPTURE(too_long);
        CHECK_FALSE(parse_duration(too_long).has_value());
        REQUIRE(jobhost::core::duration_error(too_long));
        CHECK(jobhost::core::duration_error(too_long)->find("at most 3650d") != std::string::npos);
    }
    CHECK_FALSE(jobhost::core::duration_error("30s"));
}
