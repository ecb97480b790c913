// The TOML config: any text gives a config or errors with a line, never an exception; an accepted config's
// durations are within their bounds.
#include "config/config.hpp"
#include "fuzz_check.hpp"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 65536) return 0;
    std::string text(reinterpret_cast<const char*>(data), size);
    auto r = jobhost::config::parse(text, "fuzz.toml", "/");
    if (!r.ok()) {
        for (const auto& e : r.errors) FUZZ_CHECK(!e.message.empty(), "an error without a message");
        return 0;
    }
    const auto& c = r.config;
    using jobhost::core::kMaxDuration;
    FUZZ_CHECK(c.host.shutdown_grace.count() >= 0 && c.host.shutdown_grace <= kMaxDuration, "shutdown_grace");
    FUZZ_CHECK(c.http.idle_timeout.count() >= 0 && c.http.idle_timeout <= kMaxDuration, "idle_timeout");
    FUZZ_CHECK(c.store.lease.count() >= 1000 && c.store.lease <= kMaxDuration, "lease");
    for (const auto& [type, job] : c.jobs) {
        if (job.overrides.interval) FUZZ_CHECK(job.overrides.interval->count() > 0, "interval of " + type);
        if (job.overrides.timeout) FUZZ_CHECK(*job.overrides.timeout <= kMaxDuration, "timeout of " + type);
    }
    return 0;
}
