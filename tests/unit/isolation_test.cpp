// Process isolation: plugin code in `jobhost worker` processes. A crash, abort, exit, a run that ignores
// cancellation and a memory hog each cost one attempt and one worker, never the host; the other types keep running.
#include "support/harness.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

using namespace jobhost;
using namespace std::chrono_literals;
using jobhost::test::Harness;
using jobhost::test::MemoryEngine;
using jobhost::test::SqliteEngine;

namespace {

store::JobRecord only_dead(Harness& h, const std::string& type) {
    auto dead = h.store().dead_letters({type, 100});
    REQUIRE(dead.size() == 1);
    return dead.front();
}

const std::string kProcess = "[host]\nisolation = \"process\"\n";

} // namespace

TEST_CASE_TEMPLATE("process isolation: a crash in plugin code fails that attempt, names the signal, is retried as "
                   "configured, and the host keeps serving",
                   E, MemoryEngine, SqliteEngine) {
    Harness h(E::kind, {"fx_good.so"},
              kProcess + "[jobs.\"fx.crash\"]\nbackoff = { initial = \"10ms\", multiplier = 1.0, jitter = 0.0 }\n");
    const pid_t me = ::getpid();
    auto r = h.enqueue("fx.crash", "\"segv\"");
    REQUIRE(r.ok);
    REQUIRE(h.enqueue("fx.ok", "1").ok); // another type, served meanwhile
    REQUIRE(h.ex().wait_idle(30s));
    auto dead = only_dead(h, "fx.crash");
    CHECK(dead.id == r.id);
    CHECK(dead.attempt == 3); // max_retries = 2: each crash charged one attempt, no more
    CHECK(dead.dead_reason == store::DeadReason::retries_exhausted);
    REQUIRE(dead.errors.size() == 3);
    for (const auto& e : dead.errors) CHECK(e.message == "worker crashed: SIGSEGV (signal 11) while running the job");
    CHECK(::getpid() == me);
    CHECK(h.ex().metrics("fx.ok").succeeded == 1);
    // Still serving, in a fresh worker.
    REQUIRE(h.enqueue("fx.crash", "\"fine\"").ok);
    REQUIRE(h.ex().wait_idle(30s));
    CHECK(h.ex().metrics("fx.crash").succeeded == 1);
    const auto* crash = h.registry().find("fx.crash");
    REQUIRE(crash != nullptr);
    CHECK(crash->task->workers_lost() == 3);
    CHECK(crash->task->workers_started() == 4); // the first one, then one after each loss
}

TEST_CASE("process isolation: abort, exit(3) and exit(0) in plugin code each fail the attempt with how the worker "
          "ended") {
    Harness h(Harness::Engine::memory, {"fx_good.so"}, kProcess + "[jobs.\"fx.crash\"]\nmax_retries = 0\n");
    struct Case {
        const char* payload;
        const char* reason;
    };
    for (Case c : {Case{"\"abort\"", "worker crashed: SIGABRT (signal 6) while running the job"},
                   Case{"\"exit3\"", "worker exited with code 3 while running the job"},
                   Case{"\"exit0\"", "worker exited with code 0 while running the job"}}) {
        CAPTURE(c.payload);
        auto r = h.enqueue("fx.crash", c.payload);
        REQUIRE(r.ok);
        REQUIRE(h.ex().wait_idle(30s));
        auto dead = h.store().dead_letters({"fx.crash", 100});
        auto it = std::find_if(dead.begin(), dead.end(), [&](const auto& j) { return j.id == r.id; });
        REQUIRE(it != dead.end());
        REQUIRE(it->errors.size() == 1);
        CHECK(it->errors[0].message == c.reason);
    }
    CHECK(h.ex().metrics("fx.crash").dead_lettered == 3);
}

TEST_CASE("process isolation: a run that ignores cancellation is killed stuck_grace after its timeout, counted as "
          "timed out, and its slot serves again") {
    executor::ExecutorOptions o;
    o.workers = 2;
    o.stuck_grace = 200ms;
    Harness h(Harness::Engine::memory, {"fx_good.so"}, kProcess + "[jobs.\"fx.stuck\"]\nmax_retries = 1\n", o);
    auto started = std::chrono::steady_clock::now();
    auto r = h.enqueue("fx.stuck", "{\"ms\": 60000}");
    REQUIRE(r.ok);
    REQUIRE(h.ex().wait_idle(20s));
    // two attempts of 100ms timeout + 200ms grace each, plus the worker restart back-off: far less than 60s
    CHECK(std::chrono::steady_clock::now() - started < 10s);
    auto m = h.ex().metrics("fx.stuck");
    CHECK(m.timed_out == 2);
    CHECK(m.stuck == 2);
    CHECK(m.dead_lettered == 1);
    auto dead = only_dead(h, "fx.stuck");
    CHECK(dead.dead_reason == store::DeadReason::timed_out);
    REQUIRE(dead.errors.size() == 2);
    CHECK(dead.errors[0].message == "timed out after 100ms; the worker was killed: the run was still going 200ms "
                                    "after it was asked to stop");
    // the slot is free: other work runs
    REQUIRE(h.enqueue("fx.ok").ok);
    REQUIRE(h.ex().wait_idle(10s));
    CHECK(h.ex().metrics("fx.ok").succeeded == 1);
}

TEST_CASE("process isolation: a worker over memory_limit is killed and the attempt fails as out of memory") {
    Harness h(Harness::Engine::memory, {"fx_good.so"},
              kProcess + "[jobs.\"fx.hog\"]\nmemory_limit = \"512MiB\"\n"); // room for a sanitizer shadow
    auto r = h.enqueue("fx.hog", "{\"mb\": 4096}");
    REQUIRE(r.ok);
    REQUIRE(h.ex().wait_idle(60s));
    auto dead = only_dead(h, "fx.hog");
    REQUIRE(dead.errors.size() == 2); // max_retries = 1
    for (const auto& e : dead.errors) {
        CHECK(e.message.find("out of memory: the worker used ") != std::string::npos);
        CHECK(e.message.find("over memory_limit 512 MiB") != std::string::npos);
    }
    // under the limit it succeeds
    REQUIRE(h.enqueue("fx.hog", "{\"mb\": 16}").ok);
    REQUIRE(h.ex().wait_idle(30s));
    CHECK(h.ex().metrics("fx.hog").succeeded == 1);
}

TEST_CASE_TEMPLATE("process isolation: batches, ctx.enqueue, results and retries behave as in thread mode", E,
                   MemoryEngine, SqliteEngine) {
    Harness h(E::kind, {"fx_good.so"}, kProcess);
    // a batch with one bad job: the others succeed, that one alone fails
    std::vector<executor::EnqueueRequest> batch;
    for (int i = 0; i < 8; ++i) {
        executor::EnqueueRequest q;
        q.type = "fx.batch";
        q.payload = i == 3 ? "false" : "true";
        batch.push_back(q);
    }
    for (const auto& r : h.ex().enqueue(batch)) REQUIRE(r.ok);
    // a chain: fx.chain queues fx.ok from inside the worker
    REQUIRE(h.enqueue("fx.chain", "{\"next\": \"fx.ok\"}").ok);
    REQUIRE(h.enqueue("fx.throw").ok);
    REQUIRE(h.ex().wait_idle(30s));
    auto b = h.ex().metrics("fx.batch");
    CHECK(b.succeeded == 7);
    CHECK(b.dead_lettered == 1);
    CHECK(h.ex().metrics("fx.chain").succeeded == 1);
    CHECK(h.ex().metrics("fx.ok").succeeded == 1);
    CHECK(h.ex().metrics("fx.ok").enqueued == 1);
    auto t = only_dead(h, "fx.throw");
    REQUIRE(t.errors.size() == 3);
    CHECK(t.errors[0].message == "exception: boom on attempt 1"); // the exception's text, through the worker
}

TEST_CASE("process isolation: a task that cannot be created in its worker leaves the type unusable with the reason") {
    Harness h(Harness::Engine::memory, {"config_rejects.so"}, kProcess);
    const auto* t = h.registry().find("fx.config_rejects");
    REQUIRE(t != nullptr);
    CHECK_FALSE(t->usable());
    CHECK(t->error == "the task could not be created (in a worker process): the task could not be created: "
                      "validate_config: settings.url is required");
}

TEST_CASE("process isolation: a run that honours cancellation stops at its timeout through the worker, unkilled") {
    executor::ExecutorOptions o;
    o.stuck_grace = 5s;
    Harness h(Harness::Engine::memory, {"fx_good.so"},
              kProcess + "[jobs.\"fx.slow\"]\ntimeout = \"100ms\"\nmax_retries = 0\n", o);
    auto started = std::chrono::steady_clock::now();
    REQUIRE(h.enqueue("fx.slow", "{\"ms\": 30000}").ok);
    REQUIRE(h.ex().wait_idle(20s));
    CHECK(std::chrono::steady_clock::now() - started < 3s); // it saw the cancellation, long before stuck_grace
    auto m = h.ex().metrics("fx.slow");
    CHECK(m.timed_out == 1);
    CHECK(m.stuck == 0);
    CHECK(only_dead(h, "fx.slow").errors.at(0).message == "timed out after 100ms");
    const auto* t = h.registry().find("fx.slow");
    REQUIRE(t != nullptr);
    CHECK(t->task->workers_lost() == 0); // the worker returned and serves again
}

TEST_CASE("isolation is chosen per type: [jobs.<type>] isolation overrides [host] isolation") {
    Harness h(Harness::Engine::memory, {"fx_good.so"},
              "[jobs.\"fx.crash\"]\nisolation = \"process\"\nmax_retries = 0\n[jobs.\"fx.ok\"]\n");
    CHECK(h.registry().find("fx.crash")->task->isolation() == runner::Isolation::process);
    CHECK(h.registry().find("fx.ok")->task->isolation() == runner::Isolation::thread);
    REQUIRE(h.enqueue("fx.crash", "\"abort\"").ok); // would end this test process in thread mode
    REQUIRE(h.enqueue("fx.ok").ok);
    REQUIRE(h.ex().wait_idle(20s));
    CHECK(h.ex().metrics("fx.crash").dead_lettered == 1);
    CHECK(h.ex().metrics("fx.ok").succeeded == 1);
}

TEST_CASE("memory_limit without process isolation, and a bad isolation value, are configuration errors") {
    auto a = config::parse("[jobs.x]\nmemory_limit = \"64MiB\"\n", "t.toml", "/tmp");
    REQUIRE(a.ok()); // the overlay is validated once the type is known
    registry::JobSettings s;
    registry::Provenance p;
    registry::apply_override(s, a.config.jobs.at("x").overrides, "t.toml:1", p);
    CHECK(s.memory_limit == 64u << 20);
    auto errors = registry::validate_settings(s);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == "memory_limit needs isolation = \"process\": a thread in the host cannot be limited alone");
    auto b = config::parse("[host]\nisolation = \"fork\"\n", "t.toml", "/tmp");
    REQUIRE(b.errors.size() == 1);
    CHECK(b.errors[0].to_string() ==
          "t.toml:2:13: 'isolation' must be \"thread\" (plugin code runs in the host) or \"process\" (in supervised "
          "worker processes), got \"fork\"");
    auto c = config::parse("[jobs.x]\nmemory_limit = \"lots\"\n", "t.toml", "/tmp");
    REQUIRE(c.errors.size() == 1);
    CHECK(c.errors[0].message.find("'memory_limit' must be a size such as \"256MiB\"") == 0);
}
