// Durations as the config and the command line write them: "250ms", "30s", "5m", "1h30m", "2d", or whole seconds.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost::core {

using Duration = std::chrono::milliseconds;

// Parses "1h30m", "250ms", "45s", "2d" (units d, h, m, s, ms; each at most once, largest first) or a bare
// non-negative integer of seconds. Returns nullopt on anything else, including a negative value or overflow.
std::optional<Duration> parse_duration(std::string_view text);

// The shortest exact form: "1h30m", "250ms", "0s".
std::string format_duration(Duration d);

} // namespace jobhost::core
