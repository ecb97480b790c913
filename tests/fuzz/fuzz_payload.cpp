// Payloads, as enqueues and --jsonl lines check them: payload_error accepts exactly what Boost.JSON parses as one
// whole value, and never throws.
#include "executor/executor.hpp"
#include "fuzz_check.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto why = jobhost::executor::payload_error(text);
    boost::system::error_code ec;
    boost::json::parse(text, ec);
    FUZZ_CHECK(why.has_value() == static_cast<bool>(ec), "payload_error disagrees with Boost.JSON");
    if (why) FUZZ_CHECK(!why->empty(), "a refused payload without a reason");
    return 0;
}
