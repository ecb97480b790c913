// Text that a plugin hands the host (a run's error or result message, a progress message) goes into logs, JSON and
// database text columns, which take only UTF-8 without NUL: readable_text makes it so, and bounds its size.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace jobhost::common {

// `s` with every byte that is not part of a valid UTF-8 sequence, and every NUL, replaced by U+FFFD; when the result
// is longer than `limit` bytes, it is cut at a character boundary, and a note after it says how long the text was
// (or, when `cut` is given, *cut says so and no note is added).
std::string readable_text(std::string_view s, std::size_t limit, bool* cut = nullptr);

} // namespace jobhost::common
