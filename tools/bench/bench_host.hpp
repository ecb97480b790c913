// What the benchmarks share: an executor over the bench plugin (50 no-op types) and a store, and statistics.
#pragma once

#include "config/config.hpp"
#include "executor/executor.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"

#include <boost/asio/executor_work_guard.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

namespace jobhost::bench {

using Clock = std::chrono::steady_clock;

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

inline double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// An executor with 2 workers over `store`, running the bench plugin's types.
struct Host {
    loader::Discovery discovery;
    registry::Registry registry;
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
    std::thread io_thread;
    std::unique_ptr<executor::Executor> ex;
    std::uint64_t (*runs)() = nullptr;
    std::int64_t (*last_start)() = nullptr;

    explicit Host(store::JobStore& store) {
        discovery = loader::discover({JOBHOST_BENCH_PLUGIN_DIR, true});
        registry.build(discovery, config::Config{});
        io_thread = std::thread([this] { io.run(); });
        executor::ExecutorOptions o;
        o.workers = 2;
        ex = std::make_unique<executor::Executor>(io, registry, store, o);
        ex->poke();
        void* h =
            ::dlopen((std::string(JOBHOST_BENCH_PLUGIN_DIR) + "/bench_plugin.so").c_str(), RTLD_NOW | RTLD_NOLOAD);
        if (h) {
            runs = reinterpret_cast<std::uint64_t (*)()>(::dlsym(h, "bench_runs"));
            last_start = reinterpret_cast<std::int64_t (*)()>(::dlsym(h, "bench_last_start_ns"));
        }
        if (registry.types().size() != 50 || !runs) {
            std::fprintf(stderr, "bench plugin not found in %s\n", JOBHOST_BENCH_PLUGIN_DIR);
            std::exit(1);
        }
    }
    ~Host() {
        ex->shutdown(std::chrono::seconds(5));
        work.reset();
        io.stop();
        io_thread.join();
        io.restart();
        io.poll();
        ex.reset();
    }

    // Enqueues n no-op jobs over `types` types, `batch` per call, and waits until the plugin has run them all.
    // Returns jobs per second.
    double run_jobs(std::size_t n, std::size_t types, std::size_t batch) {
        std::vector<std::string> names;
        for (std::size_t t = 0; t < types; ++t) {
            char buf[16];
            std::snprintf(buf, sizeof buf, "bench.%02zu", t);
            names.emplace_back(buf);
        }
        std::uint64_t before = runs();
        std::vector<executor::EnqueueRequest> requests(batch);
        auto start = Clock::now();
        for (std::size_t i = 0; i < n; i += batch) {
            for (std::size_t k = 0; k < batch; ++k) requests[k].type = names[(i + k) % types];
            for (const auto& r : ex->enqueue(std::span<const executor::EnqueueRequest>(requests)))
                if (!r.ok) {
                    std::fprintf(stderr, "enqueue failed: %s\n", r.error.c_str());
                    std::exit(1);
                }
        }
        while (runs() - before < n) std::this_thread::yield();
        return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
    }
};

} // namespace jobhost::bench
