// An executor over real fixture plugins, with its io_context on a thread of its own, for unit tests.
#pragma once

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
            executor::ExecutorOptions options = {})
        : work_(io_.get_executor()) {
        if (engine == Engine::memory) {
            store_ = std::make_unique<store::MemoryStore>();
        } else {
            store::SqliteOptions so;
            so.path = dir_.path() / "var" / "store.db";
            so.owner = "test:" + std::to_string(::getpid());
            auto s = store::SqliteStore::open(so);
            if (!s) throw std::runtime_error(s.error().message);
            store_ = std::move(*s);
        }
        copy_fixtures(dir_.path(), fixtures);
        auto parsed = config::parse(toml, "test.toml", dir_.path());
        if (!parsed.ok()) throw std::runtime_error(parsed.errors.front().to_string());
        config_ = parsed.config;
        discovery_ = loader::discover({dir_.path(), false});
        registry_.build(discovery_, config_);
        io_thread_ = std::thread([this] { io_.run(); });
        executor_ = std::make_unique<executor::Executor>(io_, registry_, *store_, options);
        executor_->poke();
    }
    ~Harness() {
        executor_->shutdown(std::chrono::seconds(5));
        work_.reset();
        io_.stop();
        io_thread_.join();
        io_.restart();
        io_.poll(); // run what the stopped loop still held (timer cancellations) while the executor exists
        scheduler_.reset();
        executor_.reset();
    }

    executor::Executor& ex() { return *executor_; }
    store::JobStore& store() { return *store_; }
    const registry::Registry& registry() const { return registry_; }
    boost::asio::io_context& io() { return io_; }

    executor::EnqueueResult enqueue(const std::string& type, const std::string& payload = "null",
                                    std::optional<registry::Priority> priority = std::nullopt,
                                    const std::string& unique_key = {}) {
        executor::EnqueueRequest r;
        r.type = type;
        r.payload = payload;
        r.priority = priority;
        r.unique_key = unique_key;
        return executor_->enqueue(r);
    }

    // Starts the schedules of every usable periodic type, on the io thread.
    void start_scheduler() {
        std::promise<void> done;
        boost::asio::post(io_, [&] {
            scheduler_ = std::make_unique<scheduler::Scheduler>(
                io_, [this](const std::string& t, scheduler::SystemTime at) { executor_->tick(t, at); });
            for (const auto& [name, t] : registry_.types())
                if (t.usable()) scheduler_->set(name, t.effective, true);
            done.set_value();
        });
        done.get_future().wait();
    }
    void stop_scheduler() {
        std::promise<void> done;
        boost::asio::post(io_, [&] {
            if (scheduler_) scheduler_->stop();
            done.set_value();
        });
        done.get_future().wait();
    }

    // A function exported by a fixture library (the library is already loaded; dlopen only finds it).
    template <class F>
    F* hook(const char* library, const char* name) {
        void* h = ::dlopen((dir_.path() / library).c_str(), RTLD_NOW | RTLD_NOLOAD);
        if (!h) throw std::runtime_error(std::string("fixture not loaded: ") + library);
        void* f = ::dlsym(h, name);
        ::dlclose(h);
        if (!f) throw std::runtime_error(std::string("no hook ") + name);
        return reinterpret_cast<F*>(f);
    }

private:
    TempDir dir_;
    config::Config config_;
    loader::Discovery discovery_;
    registry::Registry registry_;
    std::unique_ptr<store::JobStore> store_;
    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::thread io_thread_;
    std::unique_ptr<executor::Executor> executor_;
    std::unique_ptr<scheduler::Scheduler> scheduler_;
};

struct MemoryEngine {
    static constexpr auto kind = Harness::Engine::memory;
};
struct SqliteEngine {
    static constexpr auto kind = Harness::Engine::sqlite;
};

} // namespace jobhost::test
