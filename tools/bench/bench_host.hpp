// What the benchmarks share: an executor over the bench plugin (50 no-op types) and a store, and statistics.
#pragma once

#include "app/host.hpp"
#include "config/config.hpp"
#include "executor/executor.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"

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

struct HostSetup {
    std::size_t workers = 2;
    runner::Isolation isolation = runner::Isolation::thread;
    std::int64_t batch_size = 1; // for every bench type
    bool http = false;           // serve HTTP on 127.0.0.1, a free port (Host::host->http_port())
    std::int64_t http_threads = 2;
};

// A jobhost host (app::Host) with `workers` slots over `store`, running the bench plugin's types, its io_context on
// a thread of its own. `runs()` is the plugin's cumulative count of runs in this process (thread isolation only):
// take differences. `succeeded()` counts outcomes applied by the executor, in any isolation.
struct Host {
    loader::Discovery discovery;
    registry::Registry registry;
    std::unique_ptr<app::Host> host;
    executor::Executor* ex = nullptr;
    std::uint64_t (*runs)() = nullptr;
    std::int64_t (*last_start)() = nullptr;

    explicit Host(store::JobStore& store, HostSetup setup = {}) {
        discovery = loader::discover({JOBHOST_BENCH_PLUGIN_DIR, true});
        config::Config config;
        config.host.isolation = setup.isolation;
        for (const auto& t : discovery.types) config.jobs[t.type].overrides.batch_size = setup.batch_size;
        registry.build(discovery, config, {JOBHOST_WORKER_EXE});
        app::HostOptions o;
        o.store = &store;
        o.http = setup.http;
        config.http.listen = "127.0.0.1:0";
        config.http.threads = setup.http_threads;
        o.schedules = false;
        executor::ExecutorOptions eo;
        eo.workers = setup.workers;
        o.executor = eo;
        host = std::make_unique<app::Host>(config, discovery, registry, o);
        if (auto error = host->open()) {
            std::fprintf(stderr, "%s\n", error->message.c_str());
            std::exit(1);
        }
        host->start();
        ex = &host->executor();
        void* h = discovery.types.empty() ? nullptr : discovery.types.front().library->library.native();
        if (h) { // the private copy the host loaded
            runs = reinterpret_cast<std::uint64_t (*)()>(::dlsym(h, "bench_runs"));
            last_start = reinterpret_cast<std::int64_t (*)()>(::dlsym(h, "bench_last_start_ns"));
        }
        if (!registry.find("bench.49") || !registry.find("bench.fan") || !runs) {
            std::fprintf(stderr, "bench plugin not found in %s\n", JOBHOST_BENCH_PLUGIN_DIR);
            std::exit(1);
        }
    }
    ~Host() {
        host->drain(std::chrono::seconds(5));
        host->close();
        host.reset(); // before the registry unloads the plugin
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
        std::uint64_t before = succeeded();
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
        wait_for(before + n);
        return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
    }

    // One bench.fan job queues n no-op jobs over `types` types with ctx.enqueue, from inside its run, while the
    // other slots drain them. Returns jobs per second (the n, not the fan job).
    double run_fanned(std::size_t n, std::size_t types) {
        std::uint64_t before = succeeded();
        executor::EnqueueRequest r;
        r.type = "bench.fan";
        r.payload = "{\"n\":" + std::to_string(n) + ",\"types\":" + std::to_string(types) + "}";
        auto start = Clock::now();
        if (!ex->enqueue(r).ok) std::exit(1);
        wait_for(before + n + 1);
        return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
    }

    std::uint64_t succeeded() const {
        std::uint64_t sum = 0;
        for (const auto& [type, m] : ex->all_metrics()) sum += m.succeeded + m.failed;
        return sum;
    }
    void wait_for(std::uint64_t outcomes) const {
        while (succeeded() < outcomes) std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
};

} // namespace jobhost::bench
