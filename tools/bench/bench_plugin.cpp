// No-op job types for the benchmarks: bench.00 .. bench.49. Each run counts itself and records when the most recent
// job started, so the benchmark can measure throughput and enqueue-to-start latency from inside the plugin.
#include <jobhost/sdk.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>

namespace {
std::atomic<std::uint64_t> g_runs{0};
std::atomic<std::int64_t> g_last_start_ns{0};
} // namespace

template <int I>
class Noop : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context&) override {
        g_last_start_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        g_runs.fetch_add(1, std::memory_order_relaxed);
        return jobhost::Result::success();
    }
};

#define BENCH_TYPE(I, NAME)                                                                                            \
    using Noop##I = Noop<I>;                                                                                           \
    JOBHOST_JOB(Noop##I, .type = NAME, .max_retries = 0, .concurrency = 64)
BENCH_TYPE(0, "bench.00");
BENCH_TYPE(1, "bench.01");
BENCH_TYPE(2, "bench.02");
BENCH_TYPE(3, "bench.03");
BENCH_TYPE(4, "bench.04");
BENCH_TYPE(5, "bench.05");
BENCH_TYPE(6, "bench.06");
BENCH_TYPE(7, "bench.07");
BENCH_TYPE(8, "bench.08");
BENCH_TYPE(9, "bench.09");
BENCH_TYPE(10, "bench.10");
BENCH_TYPE(11, "bench.11");
BENCH_TYPE(12, "bench.12");
BENCH_TYPE(13, "bench.13");
BENCH_TYPE(14, "bench.14");
BENCH_TYPE(15, "bench.15");
BENCH_TYPE(16, "bench.16");
BENCH_TYPE(17, "bench.17");
BENCH_TYPE(18, "bench.18");
BENCH_TYPE(19, "bench.19");
BENCH_TYPE(20, "bench.20");
BENCH_TYPE(21, "bench.21");
BENCH_TYPE(22, "bench.22");
BENCH_TYPE(23, "bench.23");
BENCH_TYPE(24, "bench.24");
BENCH_TYPE(25, "bench.25");
BENCH_TYPE(26, "bench.26");
BENCH_TYPE(27, "bench.27");
BENCH_TYPE(28, "bench.28");
BENCH_TYPE(29, "bench.29");
BENCH_TYPE(30, "bench.30");
BENCH_TYPE(31, "bench.31");
BENCH_TYPE(32, "bench.32");
BENCH_TYPE(33, "bench.33");
BENCH_TYPE(34, "bench.34");
BENCH_TYPE(35, "bench.35");
BENCH_TYPE(36, "bench.36");
BENCH_TYPE(37, "bench.37");
BENCH_TYPE(38, "bench.38");
BENCH_TYPE(39, "bench.39");
BENCH_TYPE(40, "bench.40");
BENCH_TYPE(41, "bench.41");
BENCH_TYPE(42, "bench.42");
BENCH_TYPE(43, "bench.43");
BENCH_TYPE(44, "bench.44");
BENCH_TYPE(45, "bench.45");
BENCH_TYPE(46, "bench.46");
BENCH_TYPE(47, "bench.47");
BENCH_TYPE(48, "bench.48");
BENCH_TYPE(49, "bench.49");

// Queues payload.n no-op jobs from inside a run, one ctx.enqueue each, round-robin over the first payload.types
// bench types: the benchmark of work that jobs queue themselves.
class FanOut : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context& ctx) override {
        const auto& p = ctx.payload().as_object();
        auto n = p.at("n").to_number<std::int64_t>();
        auto types = p.at("types").to_number<std::int64_t>();
        char name[16];
        for (std::int64_t i = 0; i < n; ++i) {
            std::snprintf(name, sizeof name, "bench.%02d", static_cast<int>(i % types));
            auto r = ctx.enqueue(name);
            if (!r.ok) return jobhost::Result::permanent("enqueue failed: " + r.error);
        }
        return jobhost::Result::success();
    }
};
JOBHOST_JOB(FanOut, .type = "bench.fan", .max_retries = 0);

extern "C" __attribute__((visibility("default"))) std::uint64_t bench_runs() {
    return g_runs.load();
}
extern "C" __attribute__((visibility("default"))) std::int64_t bench_last_start_ns() {
    return g_last_start_ns.load();
}
