// readable_text: what the host keeps of a plugin's message is UTF-8 without NUL, and bounded.
#include "common/text.hpp"

#include <doctest/doctest.h>

#include <string>

using jobhost::common::readable_text;
using namespace std::string_literals;

namespace {
const std::string kFffd = "\xEF\xBF\xBD";
constexpr std::size_t kAny = 1 << 20;
} // namespace

TEST_CASE("readable_text keeps valid UTF-8 as it is") {
    CHECK(readable_text("plain text", kAny) == "plain text");
    CHECK(readable_text("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", kAny) ==
          "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
    CHECK(readable_text("tab\tnew\nline", kAny) == "tab\tnew\nline");
    CHECK(readable_text("", kAny).empty());
}

TEST_CASE("readable_text replaces each NUL and each byte of a bad sequence with U+FFFD") {
    CHECK(readable_text("a\0b"s, kAny) == "a" + kFffd + "b");
    CHECK(readable_text("\xFF\xFE", kAny) == kFffd + kFffd);
    CHECK(readable_text("\xC3", kAny) == kFffd);                         // cut short at the end
    CHECK(readable_text("\xC3x", kAny) == kFffd + "x");                  // a lead byte without its continuation
    CHECK(readable_text("\xC0\xAF", kAny) == kFffd + kFffd);             // overlong '/'
    CHECK(readable_text("\xE0\x80\xAF", kAny) == kFffd + kFffd + kFffd); // overlong, 3 bytes
    CHECK(readable_text("\xED\xA0\x80", kAny) == kFffd + kFffd + kFffd); // a surrogate
    CHECK(readable_text("\xF4\x90\x80\x80", kAny) == kFffd + kFffd + kFffd + kFffd); // above U+10FFFF
    CHECK(readable_text("\x80", kAny) == kFffd);                                     // a lone continuation byte
}

TEST_CASE("readable_text cuts at a character boundary and says how long the text was") {
    CHECK(readable_text("abcdef", 4) == "abcd [cut: 6 bytes in all]");
    CHECK(readable_text("ab\xC3\xA9", 3) == "ab [cut: 4 bytes in all]"); // not inside the two bytes of e-acute
    CHECK(readable_text("abcd", 4) == "abcd");
    bool cut = false;
    CHECK(readable_text("abcdef", 4, &cut) == "abcd");
    CHECK(cut);
    CHECK(readable_text("abc", 4, &cut) == "abc");
    CHECK_FALSE(cut);
    CHECK(readable_text("\xFF\xFF", 4, &cut) == kFffd); // the replacement counts toward the limit
    CHECK(cut);
}
