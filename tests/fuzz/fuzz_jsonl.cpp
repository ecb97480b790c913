// `jobhost enqueue --jsonl` files (and the lines of an NDJSON batch over HTTP): never throws; either every
// non-blank line is one payload, valid JSON, without its newline or the CR before it, in order, or nothing is taken and
// the first bad line is named by its number, with a reason.
#include "executor/executor.hpp"
#include "fuzz_check.hpp"

#include <algorithm>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto lines = jobhost::executor::json_lines(text);
    auto newlines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
    std::size_t last = 0;
    for (const auto& l : lines) {
        FUZZ_CHECK(l.number > last && l.number <= newlines + 1, "line numbers out of order or past the end");
        last = l.number;
        FUZZ_CHECK(l.text.find('\n') == std::string_view::npos, "a line holds a newline");
        FUZZ_CHECK(l.text.find_first_not_of(" \t\r") != std::string_view::npos, "a blank line was kept");
        FUZZ_CHECK(l.text.data() >= text.data() && l.text.data() + l.text.size() <= text.data() + text.size(),
                   "a line outside the text");
        // what follows a line is its end: a newline, one CR and a newline, one CR and the end, or the end
        auto after = text.substr(static_cast<std::size_t>(l.text.data() - text.data()) + l.text.size());
        if (!after.empty() && after[0] == '\r') after.remove_prefix(1);
        FUZZ_CHECK(after.empty() || after[0] == '\n', "a line does not reach its newline");
    }
    auto p = jobhost::executor::payload_lines(text);
    if (p.bad_line == 0) {
        FUZZ_CHECK(p.payloads.size() == lines.size(), "a payload lost or added");
        for (std::size_t i = 0; i < lines.size(); ++i) {
            FUZZ_CHECK(p.payloads[i] == lines[i].text, "a payload is not its line");
            FUZZ_CHECK(!jobhost::executor::payload_error(p.payloads[i]), "an invalid payload taken");
        }
    } else {
        FUZZ_CHECK(p.payloads.empty(), "a refused file still gave payloads");
        FUZZ_CHECK(!p.why.empty(), "a refused line without a reason");
        auto bad = std::find_if(lines.begin(), lines.end(), [&](const auto& l) { return l.number == p.bad_line; });
        FUZZ_CHECK(bad != lines.end(), "the bad line is not a line");
        FUZZ_CHECK(jobhost::executor::payload_error(bad->text).has_value(), "a valid line called bad");
        for (auto it = lines.begin(); it != bad; ++it)
            FUZZ_CHECK(!jobhost::executor::payload_error(it->text), "an earlier bad line was not named");
    }
    return 0;
}
