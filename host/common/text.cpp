#include "common/text.hpp"

#include <algorithm>

namespace jobhost::common {

namespace {

// The length of the valid UTF-8 sequence at the start of `s` (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF), or 0 when there is none.
std::size_t utf8_sequence(std::string_view s) {
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
    unsigned char c = b(0);
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (!cont(1) || !cont(2)) return 0;
        if (c == 0xE0 && b(1) < 0xA0) return 0; // overlong
        if (c == 0xED && b(1) > 0x9F) return 0; // a surrogate
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        if (c == 0xF0 && b(1) < 0x90) return 0; // overlong
        if (c == 0xF4 && b(1) > 0x8F) return 0; // above U+10FFFF
        return 4;
    }
    return 0;
}

} // namespace

std::string readable_text(std::string_view s, std::size_t limit, bool* cut) {
    static constexpr std::string_view kReplacement = "\xEF\xBF\xBD"; // U+FFFD
    std::string out;
    out.reserve(std::min(s.size(), limit));
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t n = utf8_sequence(s.substr(i));
        std::string_view piece = n == 0 || s[i] == '\0' ? kReplacement : s.substr(i, n);
        if (out.size() + piece.size() > limit) break;
        out += piece;
        i += n == 0 ? 1 : n;
    }
    if (cut)
        *cut = i < s.size();
    else if (i < s.size())
        out += " [cut: " + std::to_string(s.size()) + " bytes in all]";
    return out;
}

} // namespace jobhost::common
