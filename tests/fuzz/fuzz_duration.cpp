// Durations as the config, the command line and HTTP read them: never throws, an accepted value is within
// [0, kMaxDuration], and formatting it gives text that parses back to the same value.
#include "common/duration.hpp"
#include "fuzz_check.hpp"

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto d = jobhost::core::parse_duration(text);
    auto why = jobhost::core::duration_error(text);
    FUZZ_CHECK(d.has_value() != why.has_value(), "parse_duration and duration_error disagree");
    if (!d) return 0;
    FUZZ_CHECK(d->count() >= 0 && *d <= jobhost::core::kMaxDuration, "an accepted duration out of bounds");
    auto again = jobhost::core::parse_duration(jobhost::core::format_duration(*d));
    FUZZ_CHECK(again && *again == *d, "format_duration does not round-trip: " + jobhost::core::format_duration(*d));
    return 0;
}
