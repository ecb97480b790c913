// Durations as the config and the command line write them: "250ms", "30s", "5m", "1h30m", "2d", or whole seconds.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost::core {

using Duration = std::chrono::milliseconds;

// The longest duration jobhost accepts anywhere (config, command line, HTTP): 3650 days. Beyond it a delay would
// overflow the clock or never come, and a timeout or grace would never end.
inline constexpr Duration kMaxDuration{3650LL * 86'400'000};

// Parses "1h30m", "250ms", "45s", "2d" (units d, h, m, s, ms; each at most once, largest first) or a bare
// non-negative integer of seconds. Returns nullopt on anything else, including a negative value or one longer than
// kMaxDuration.
std::optional<Duration> parse_duration(std::string_view text);

// Why parse_duration refuses `text`, as the end of a sentence ("is not a duration of at most 3650d written as ..."),
// or nullopt when it accepts it.
std::optional<std::string> duration_error(std::string_view text);

// The shortest exact form: "1h30m", "250ms", "0s".
std::string format_duration(Duration d);

} // namespace jobhost::core
