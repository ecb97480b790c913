#include "common/duration.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <limits>

namespace jobhost::core {

namespace {
struct Unit {
    std::string_view suffix;
    std::int64_t ms;
};
// Order matters: "ms" before "m", and units must appear largest first.
constexpr std::array<Unit, 5> kUnits{{{"d", 86'400'000}, {"h", 3'600'000}, {"ms", 1}, {"m", 60'000}, {"s", 1'000}}};
int rank(std::string_view suffix) {
    if (suffix == "d") return 0;
    if (suffix == "h") return 1;
    if (suffix == "m") return 2;
    if (suffix == "s") return 3;
    return 4; // ms
}
} // namespace

std::optional<Duration> parse_duration(std::string_view text) {
    if (text.empty()) return std::nullopt;
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max() / 2;
    bool all_digits = true;
    for (char c : text) all_digits = all_digits && std::isdigit(static_cast<unsigned char>(c));
    if (all_digits) {
        if (text.size() > 12) return std::nullopt;
        auto d = Duration(std::stoll(std::string(text)) * 1000);
        if (d > kMaxDuration) return std::nullopt;
        return d;
    }
    std::int64_t total = 0;
    int last_rank = -1;
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t start = i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
        if (i == start || i - start > 12) return std::nullopt;
        std::int64_t n = std::stoll(std::string(text.substr(start, i - start)));
        const Unit* unit = nullptr;
        for (const auto& u : kUnits) {
            if (text.substr(i, u.suffix.size()) == u.suffix) {
                unit = &u;
                break;
            }
        }
        if (!unit) return std::nullopt;
        int r = rank(unit->suffix);
        if (r <= last_rank) return std::nullopt; // repeated or out of order: "5m1h", "1s1s"
        last_rank = r;
        i += unit->suffix.size();
        if (n > kMax / unit->ms) return std::nullopt;
        total += n * unit->ms;
        if (total > kMax) return std::nullopt;
    }
    if (Duration(total) > kMaxDuration) return std::nullopt;
    return Duration(total);
}

std::optional<std::string> duration_error(std::string_view text) {
    if (parse_duration(text)) return std::nullopt;
    return "is not a duration of at most " + format_duration(kMaxDuration) +
           " written as \"250ms\", \"30s\", \"5m\", \"1h30m\", \"2d\" or whole seconds";
}

std::string format_duration(Duration d) {
    std::int64_t ms = d.count();
    if (ms == 0) return "0s";
    std::string out;
    if (ms < 0) {
        out = "-";
        ms = -ms;
    }
    const std::array<std::pair<std::int64_t, const char*>, 5> parts{
        {{86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1'000, "s"}, {1, "ms"}}};
    for (const auto& [size, suffix] : parts) {
        if (ms >= size) {
            out += std::to_string(ms / size) + suffix;
            ms %= size;
        }
    }
    return out;
}

} // namespace jobhost::core
