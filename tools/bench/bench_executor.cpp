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
#include <functional>
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

    struct Row {
        std::string name;
        std::function<double(Host&)> measure;
        HostSetup setup;
        std::vector<double> rates;
    };
    using runner::Isolation;
    std::vector<Row> rows;
    auto add = [&](std::string name, std::function<double(Host&)> measure, HostSetup setup) {
        rows.push_back({std::move(name), std::move(measure), setup, {}});
    };
    for (std::size_t slots : {2, 50})
        for (std::size_t types : {1, 50}) {
            HostSetup s{slots, Isolation::thread, 1};
            std::string tag =
                std::to_string(types) + (types == 1 ? " type, " : " types, ") + std::to_string(slots) + " slots";
            add(
                "thread, " + tag + ", enqueued from outside", [=](Host& h) { return h.run_jobs(n, types, 1); }, s);
            add(
                "thread, " + tag + ", enqueued by 100 from outside", [=](Host& h) { return h.run_jobs(n, types, 100); },
                s);
            add(
                "thread, " + tag + ", ctx.enqueue from a job", [=](Host& h) { return h.run_fanned(n, types); }, s);
        }
    std::size_t pn = std::max<std::size_t>(n / 4, 1000);
    auto by_100 = [=](std::size_t count) { return [=](Host& h) { return h.run_jobs(count, 1, 100); }; };
    add("process, 1 type, 2 slots, enqueued by 100", by_100(pn), {2, Isolation::process, 1});
    add("process, 1 type, 8 slots, enqueued by 100", by_100(pn), {8, Isolation::process, 1});
    add("process, 1 type, 2 slots, batch_size 100", by_100(pn), {2, Isolation::process, 100});
    add("thread, 1 type, 2 slots, batch_size 100", by_100(n), {2, Isolation::thread, 100});

    std::vector<double> bare;
    for (int i = 0; i < rounds; ++i) {
        bare.push_back(bare_post_rate(n));
        for (auto& row : rows) {
            store::MemoryStore store;
            Host host(store, row.setup);
            row.rates.push_back(row.measure(host));
        }
    }
    std::vector<double> bare_lat, jh_lat;
    {
        store::MemoryStore store;
        Host host(store);
        bare_lat = bare_post_latency_us(2000);
        jh_lat = jobhost_latency_us(host, 2000);
    }

    std::printf("executor benchmark: %zu no-op jobs per round (%zu in process rows), %d rounds, memory store "
                "(medians); each row a fresh host\n",
                n, pn, rounds);
    std::printf("%-58s %12s %12s %7s\n", "measure (jobs/s)", "jobhost", "bare post", "ratio");
    for (const auto& row : rows)
        std::printf("%-58s %12.0f %12.0f %7.3f\n", row.name.c_str(), median(row.rates), median(bare),
                    median(row.rates) / median(bare));
    std::printf("%-58s %12.1f %12.1f %7.1f\n", "enqueue-to-start latency p50, idle (us)", percentile(jh_lat, 0.5),
                percentile(bare_lat, 0.5), percentile(jh_lat, 0.5) / percentile(bare_lat, 0.5));
    std::printf("%-58s %12.1f %12.1f %7.1f\n", "enqueue-to-start latency p99, idle (us)", percentile(jh_lat, 0.99),
                percentile(bare_lat, 0.99), percentile(jh_lat, 0.99) / percentile(bare_lat, 0.99));
    std::printf(
        "bare post: boost::asio::post of a no-op on a 2-thread thread_pool, same process, same run.\n"
        "slots: [host] workers. Counted: outcomes the executor applied (succeeded + failed), not plugin calls.\n");
    return 0;
}
