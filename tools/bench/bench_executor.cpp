// Executor benchmark: no-op jobs through the full path (enqueue, dispatch, execute through the plugin ABI, outcome
// into the store) with 2 workers and the memory store, next to a bare asio::post loop on a 2-thread pool measured
// in the same run. Prints medians of several rounds and the ratios.
//
//   bench_executor [jobs per round, default 200000] [rounds, default 5]
#include "bench_host.hpp"
#include "log/log.hpp"
#include "store/memory_store.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

using namespace jobhost;
using namespace jobhost::bench;

namespace {

// Bare limit: post N no-ops to a 2-thread pool and wait for all of them.
double bare_post_rate(std::size_t n) {
    boost::asio::thread_pool pool(2);
    std::atomic<std::size_t> done{0};
    auto start = Clock::now();
    for (std::size_t i = 0; i < n; ++i) boost::asio::post(pool, [&] { done.fetch_add(1, std::memory_order_relaxed); });
    pool.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    return static_cast<double>(n) / secs;
}

// Bare latency: post one no-op to an idle 2-thread pool, time until it starts.
std::vector<double> bare_post_latency_us(std::size_t samples) {
    boost::asio::thread_pool pool(2);
    std::vector<double> out;
    for (std::size_t i = 0; i < samples; ++i) {
        std::atomic<std::int64_t> started{0};
        auto t0 = Clock::now();
        boost::asio::post(pool, [&] { started = Clock::now().time_since_epoch().count(); });
        while (started.load() == 0) std::this_thread::yield();
        out.push_back(static_cast<double>(started.load() - t0.time_since_epoch().count()) / 1000.0);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    pool.join();
    return out;
}

std::vector<double> jobhost_latency_us(Host& host, std::size_t samples) {
    std::vector<double> out;
    executor::EnqueueRequest r;
    r.type = "bench.00";
    for (std::size_t i = 0; i < samples; ++i) {
        std::uint64_t before = host.runs();
        auto t0 = Clock::now().time_since_epoch().count();
        host.ex->enqueue(r);
        while (host.runs() == before) std::this_thread::yield();
        out.push_back(static_cast<double>(host.last_start() - t0) / 1000.0);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    std::size_t n = argc > 1 ? std::stoul(argv[1]) : 200000;
    int rounds = argc > 2 ? std::stoi(argv[2]) : 5;
    log::configure({log::Level::error, log::Format::text, std::nullopt});
    store::MemoryStore store;
    Host host(store);
    std::vector<double> bare, one, fifty, one_batched, fifty_batched;
    for (int i = 0; i < rounds; ++i) {
        bare.push_back(bare_post_rate(n));
        one.push_back(host.run_jobs(n, 1, 1));
        fifty.push_back(host.run_jobs(n, 50, 1));
        one_batched.push_back(host.run_jobs(n, 1, 100));
        fifty_batched.push_back(host.run_jobs(n, 50, 100));
    }
    auto bare_lat = bare_post_latency_us(2000);
    auto jh_lat = jobhost_latency_us(host, 2000);

    std::printf("executor benchmark: %zu no-op jobs per round, %d rounds, 2 workers, memory store (medians)\n", n,
                rounds);
    std::printf("%-44s %14s %14s %8s\n", "measure", "jobhost", "bare limit", "ratio");
    std::printf("%-44s %14.0f %14.0f %8.3f\n", "throughput, 1 type (jobs/s)", median(one), median(bare),
                median(one) / median(bare));
    std::printf("%-44s %14.0f %14.0f %8.3f\n", "throughput, 50 types (jobs/s)", median(fifty), median(bare),
                median(fifty) / median(bare));
    std::printf("%-44s %14.0f %14.0f %8.3f\n", "throughput, 1 type, enqueue by 100 (jobs/s)", median(one_batched),
                median(bare), median(one_batched) / median(bare));
    std::printf("%-44s %14.0f %14.0f %8.3f\n", "throughput, 50 types, enqueue by 100 (jobs/s)", median(fifty_batched),
                median(bare), median(fifty_batched) / median(bare));
    std::printf("%-44s %14.1f %14.1f %8.1f\n", "enqueue-to-start latency p50, idle (us)", percentile(jh_lat, 0.5),
                percentile(bare_lat, 0.5), percentile(jh_lat, 0.5) / percentile(bare_lat, 0.5));
    std::printf("%-44s %14.1f %14.1f %8.1f\n", "enqueue-to-start latency p99, idle (us)", percentile(jh_lat, 0.99),
                percentile(bare_lat, 0.99), percentile(jh_lat, 0.99) / percentile(bare_lat, 0.99));
    std::printf("bare limit: boost::asio::post of a no-op on a 2-thread thread_pool, same process, same run\n");
    return 0;
}
