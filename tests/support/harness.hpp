// An executor over real fixture plugins, with its io_context on a thread of its own, for unit tests.
#pragma once

#include "app/host.hpp"
#include "config/config.hpp"
#include "executor/executor.hpp"
#include "loader/plugin_loader.hpp"
#include "registry/registry.hpp"
#include "scheduler/scheduler.hpp"
#include "store/memory_store.hpp"
#include "store/sqlite_store.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <dlfcn.h>
#include <unistd.h>

#include <future>
#include <thread>

namespace jobhost::test {

class Harness {
public:
    // The executor suite runs against each engine: TEST_CASE_TEMPLATE(..., E, MemoryEngine, SqliteEngine).
    // Loads the named fixture libraries with `toml` as the config ([jobs.x] overrides), and starts an executor.
    enum class Engine { memory, sqlite };

    Harness(Engine engine, std::initializer_list<const char*> fixtures, const std::string& toml = {},
            executor::ExecutorOptions options = {}) {
        copy_fixtures(dir_.path(), fixtures);
        auto parsed = config::parse(toml, "test.toml", dir_.path());
        if (!parsed.ok()) throw std::runtime_error(parsed.errors.front().to_string());
        config_ = parsed.config;
        if (engine == Engine::memory) {
            config_.store.kind = config::StoreSection::Kind::memory;
        } else {
            config_.store.kind = config::StoreSection::Kind::sqlite;
            config_.store.path = dir_.path() / "var" / "store.db";
        }
        discovery_ = loader::discover({dir_.path(), false});
        registry_.build(discovery_, config_, {JOBHOST_BINARY}); // process-isolated types run in jobhost workers
        app::HostOptions ho;
        ho.http = false;
        ho.schedules = false; // start_scheduler() starts them
        ho.executor = options;
        ho.worker_exe = JOBHOST_BINARY;
        host_ = std::make_unique<app::Host>(config_, discovery_, registry_, ho);
        if (auto error = host_->open()) throw std::runtime_error(error->message);
        host_->start();
    }
    ~Harness() {
        host_->drain(std::chrono::seconds(5));
        host_->close();
        host_.reset();
    }

    executor::Executor& ex() { return host_->executor(); }
    store::JobStore& store() { return host_->store(); }
    const registry::Registry& registry() const { return registry_; }
    boost::asio::io_context& io() { return host_->io(); }

    executor::EnqueueResult enqueue(const std::string& type, const std::string& payload = "null",
                                    std::optional<registry::Priority> priority = std::nullopt,
                                    const std::string& unique_key = {}) {
        executor::EnqueueRequest r;
        r.type = type;
        r.payload = payload;
        r.priority = priority;
        r.unique_key = unique_key;
        return ex().enqueue(r);
    }

    // Starts the schedules of every usable periodic type, on the io thread.
    void start_scheduler() {
        std::promise<void> done;
        boost::asio::post(io(), [&] {
            for (const auto& [name, t] : registry_.types())
                if (t.usable()) host_->scheduler().set(name, t.effective, true);
            done.set_value();
        });
        done.get_future().wait();
    }
    void stop_scheduler() {
        std::promise<void> done;
        boost::asio::post(io(), [&] {
            host_->scheduler().stop();
            done.set_value();
        });
        done.get_future().wait();
    }

    // A function exported by a fixture library, from the private copy the host loaded.
    template <class F>
    F* hook(const char* library, const char* name) {
        for (const auto& t : discovery_.types) {
            if (t.file.filename() != library) continue;
            void* f = ::dlsym(t.library->library.native(), name);
            if (!f) throw std::runtime_error(std::string("no hook ") + name);
            return reinterpret_cast<F*>(f);
        }
        throw std::runtime_error(std::string("fixture not loaded: ") + library);
    }

private:
    TempDir dir_;
    config::Config config_;
    loader::Discovery discovery_;
    registry::Registry registry_;
    std::unique_ptr<app::Host> host_; // declared last: goes first, before the registry unloads the plugins
};

struct MemoryEngine {
    static constexpr auto kind = Harness::Engine::memory;
};
struct SqliteEngine {
    static constexpr auto kind = Harness::Engine::sqlite;
};

} // namespace jobhost::test
