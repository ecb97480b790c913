// Cron expressions: never throws; an accepted one has a next firing after any time, and the firing after that is
// later still (no loop that stands still).
#include "scheduler/cron.hpp"
#include "fuzz_check.hpp"

#include <chrono>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 4096) return 0;
    std::string text(reinterpret_cast<const char*>(data), size);
    auto c = jobhost::scheduler::CronExpression::parse(text);
    if (!c) {
        FUZZ_CHECK(!c.error().message.empty(), "a refused cron without a reason");
        return 0;
    }
    auto from = std::chrono::system_clock::time_point(std::chrono::seconds(1'764'000'000)); // late 2025
    auto a = c->next_after(from);
    if (!a) return 0; // a date that never comes (30 2 31 2 *): allowed, said by nullopt
    FUZZ_CHECK(*a > from, "next_after went back in time");
    auto b = c->next_after(*a);
    if (b) FUZZ_CHECK(*b > *a, "next_after stood still");
    return 0;
}
