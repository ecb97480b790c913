// The HTTP API through real sockets against the real binary: every endpoint, auth, hostile requests, Prometheus.
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <map>

using namespace jobhost::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

// A running host over fx_good.so with the HTTP server on a free port; fx.tick runs every 100ms meanwhile.
struct Host {
    TempDir dir;
    std::filesystem::path config;
    std::unique_ptr<Background> process;
    int port = 0;

    explicit Host(const std::string& http_extra = {}, const std::string& extra = {},
                  const std::string& store_extra = {}) {
        copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
        config =
            dir.write("jobhost.toml", "[host]\nplugin_dir = \"plugins\"\n\n[store]\npath = \"var/jobs.db\"\n" +
                                          store_extra + "\n[http]\nlisten = \"127.0.0.1:0\"\n" +
                                          (contains(http_extra, "idle_timeout") ? "" : "idle_timeout = \"500ms\"\n") +
                                          "max_connections = 6\n" + http_extra +
                                          "\n[jobs.\"fx.tick\"]\nenabled = true\ninterval = \"100ms\"\n" + extra);
        process =
            std::make_unique<Background>(std::vector<std::string>{JOBHOST_BINARY, "run", "--config", config.string()});
        REQUIRE(process->wait_for_output("http listening on 127.0.0.1:", 20s));
        auto log = process->err();
        auto at = log.find("http listening on 127.0.0.1:") + std::string("http listening on 127.0.0.1:").size();
        port = std::stoi(log.substr(at));
    }
    ~Host() {
        process->signal(SIGTERM);
        process->wait(20s);
    }
    json::value get_json(const std::string& target) {
        auto r = request(port, "GET", target);
        REQUIRE_MESSAGE(r.status == 200, target << " -> " << r.status << " " << r.body);
        return json::parse(r.body);
    }
    std::int64_t succeeded(const std::string& type) {
        return get_json("/api/v1/types/" + type)
            .as_object()
            .at("counts")
            .as_object()
            .at("succeeded")
            .to_number<std::int64_t>();
    }
};

} // namespace

TEST_CASE("every endpoint answers: health, readiness, status, types, jobs, events, alerts and dead letters") {
    Host h;
    auto healthz = request(h.port, "GET", "/healthz");
    CHECK(healthz.status == 200);
    CHECK(contains(healthz.body, "\"status\":\"up\""));
    auto readyz = request(h.port, "GET", "/readyz");
    CHECK(readyz.status == 200);
    CHECK(contains(readyz.body, "\"ready\":true"));

    auto status = h.get_json("/api/v1/status").as_object();
    CHECK(status.at("health") == "healthy");
    CHECK(status.at("types").as_array().size() == 20);

    auto types = h.get_json("/api/v1/types").as_array();
    CHECK(types.size() == 20);
    auto ok_type = h.get_json("/api/v1/types/fx.ok").as_object();
    CHECK(ok_type.at("settings").as_object().at("concurrency") == 1);
    CHECK(request(h.port, "GET", "/api/v1/types/fx.nope").status == 404);

    auto created = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok","payload":{"n":7},"priority":"high"})");
    REQUIRE(created.status == 201);
    auto id = json::parse(created.body).as_object().at("id").to_number<std::int64_t>();
    REQUIRE(eventually([&] { return h.succeeded("fx.ok") == 1; }));
    auto events = h.get_json("/api/v1/events?job=" + std::to_string(id)).as_array();
    REQUIRE(events.size() == 3); // enqueued, started, succeeded (newest first)
    CHECK(events[0].as_object().at("kind") == "succeeded");
    CHECK(events[2].as_object().at("kind") == "enqueued");
    CHECK(events[1].as_object().contains("wait_ms")); // a start says how long the job waited
    CHECK(events[0].as_object().contains("duration_ms"));
    CHECK(eventually(
        [&] { return h.get_json("/api/v1/events?type=fx.tick&kind=succeeded&limit=2").as_array().size() == 2; }));

    auto dup1 = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.slow","payload":{"ms":2000},"unique_key":"u"})");
    CHECK(dup1.status == 201);
    auto dup2 = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.slow","unique_key":"u"})");
    CHECK(dup2.status == 409);
    CHECK(contains(dup2.body, "already pending or running"));
    auto listed = h.get_json("/api/v1/jobs?type=fx.slow").as_array();
    CHECK(listed.size() == 1);
    auto one = h.get_json("/api/v1/jobs/" +
                          std::to_string(json::parse(dup1.body).as_object().at("id").to_number<std::int64_t>()));
    CHECK(one.as_object().at("unique_key") == "u");

    // dead letters: list, show, retry one, purge
    REQUIRE(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.permanent"})").status == 201);
    REQUIRE(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.permanent"})").status == 201);
    REQUIRE(eventually([&] { return h.get_json("/api/v1/dlq").as_array().size() == 2; }));
    auto dead = h.get_json("/api/v1/dlq").as_array();
    auto dead_id = std::to_string(dead[0].as_object().at("id").to_number<std::int64_t>());
    CHECK(h.get_json("/api/v1/dlq/" + dead_id).as_object().at("dead_reason") == "permanent failure");
    auto retried = request(h.port, "POST", "/api/v1/dlq/" + dead_id + "/retry");
    CHECK(retried.status == 200);
    CHECK(contains(retried.body, "\"retried\":1"));
    REQUIRE(eventually([&] { return h.get_json("/api/v1/dlq").as_array().size() == 2; })); // it failed again
    auto purged = request(h.port, "POST", "/api/v1/dlq/purge", R"({"all":true,"type":"fx.permanent"})");
    CHECK(purged.status == 200);
    CHECK(contains(purged.body, "\"purged\":2"));
    CHECK(request(h.port, "DELETE", "/api/v1/dlq/" + dead_id).status == 404);
    CHECK(h.get_json("/api/v1/alerts").is_array());
}

TEST_CASE("with a token, mutating requests need it and reads do not") {
    TempDir secret;
    auto token_file = secret.write("token", "s3cret-token\n");
    Host h("token_file = \"" + token_file.string() + "\"\n");
    CHECK(contains(h.process->err(), "mutating requests need the bearer token"));
    const std::string body = R"({"type":"fx.ok"})";
    auto none = request(h.port, "POST", "/api/v1/jobs", body);
    CHECK(none.status == 401);
    CHECK(contains(none.head, "WWW-Authenticate: Bearer"));
    CHECK(request(h.port, "POST", "/api/v1/jobs", body, {"Authorization: Bearer wrong"}).status == 401);
    CHECK(request(h.port, "POST", "/api/v1/jobs", body, {"Authorization: Basic czNjcmV0LXRva2Vu"}).status == 401);
    CHECK(request(h.port, "DELETE", "/api/v1/dlq/1").status == 401);
    CHECK(request(h.port, "POST", "/api/v1/jobs", body, {"Authorization: Bearer s3cret-token"}).status == 201);
    CHECK(request(h.port, "GET", "/api/v1/status").status == 200);
}

TEST_CASE("listening beyond loopback without a token is refused at start-up") {
    TempDir dir;
    copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
    auto cfg = dir.write("c.toml", "[host]\nplugin_dir = \"plugins\"\n[store]\nkind = \"memory\"\n"
                                   "[http]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"JOBHOST_TEST_NO_SUCH_TOKEN\"\n");
    auto r = run_jobhost({"run", "--config", cfg.string()}, 20s);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "is reachable from other machines, so mutating requests need a bearer token"));
}

TEST_CASE("malformed and hostile requests get a 4xx, and the host keeps running jobs") {
    Host h("max_body = 4096\nmax_header = 2048\n");
    auto before = h.succeeded("fx.tick");
    struct Case {
        const char* name;
        std::string raw;
        int status;
    };
    const std::string big_body(100000, 'x');
    const Case cases[] = {
        {"invalid JSON body", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"type\":}", 400},
        {"empty batch", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]", 400},
        {"body a number", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n5", 400},
        {"negative dead-letter id",
         "POST /api/v1/dlq/retry HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"ids\":[-1]}", 400},
        {"fractional dead-letter id",
         "POST /api/v1/dlq/purge HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"ids\":[1.5]}", 400},
        {"huge dead-letter id",
         "POST /api/v1/dlq/retry HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{\"ids\":[18446744073709551615]}",
         404},
        {"negative delay",
         "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\n{\"type\":\"fx.ok\",\"delay\":-5}", 400},
        {"delay beyond 3650 days",
         "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: "
         "34\r\n\r\n{\"type\":\"fx.ok\",\"delay\":\"100000d\"}",
         400},
        {"unknown field",
         "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\n{\"type\":\"fx.ok\",\"evil\":1}  ", 400},
        {"unknown type", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"type\":\"nope\"}", 404},
        {"body over max_body", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + big_body,
         413},
        {"headers over max_header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(5000, 'a') + "\r\n\r\n",
         431},
        {"unknown method", "BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405},
        {"method not allowed", "PUT /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405},
        {"dot-dot path", "GET /api/v1/../metrics HTTP/1.1\r\nHost: x\r\n\r\n", 404},
        {"encoded dot-dot id", "GET /api/v1/jobs/%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"absolute-form target", "GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"binary garbage", std::string("\x00\x01\x02\xff\xfe garbage\r\n\r\n", 17), 400},
        {"bad content-length", "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400},
        {"bad limit", "GET /api/v1/jobs?limit=0 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"bad event kind", "GET /api/v1/events?kind=exploded HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"unknown job id", "GET /api/v1/jobs/999999 HTTP/1.1\r\nHost: x\r\n\r\n", 404},
        {"job id too long", "GET /api/v1/jobs/12345678901234567890123 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"unknown path", "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404},
        {"bad dead letter id", "DELETE /api/v1/dlq/abc HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"bad HTTP version", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400},
    };
    for (const auto& c : cases) {
        std::string name = c.name;
        CAPTURE(name);
        auto r = exchange(h.port, c.raw, 5s);
        CHECK(r.status == c.status);
        if (r.status >= 400 && r.status != 405 && c.status != 400) CHECK(contains(r.body, "\"error\""));
        CHECK_FALSE(contains(r.body, "/usr/include")); // no internal source path reaches a client
        CHECK_FALSE(contains(r.body, ".hpp"));
    }
    // HTTP/1.0 without a Host header is fine
    CHECK(exchange(h.port, "GET /healthz HTTP/1.0\r\n\r\n").status == 200);

    // a slow client that never finishes its request is cut off at idle_timeout, and others are served meanwhile
    IdleConnection slow(h.port);
    slow.send_and_read("GET /api/v1/status HTTP/1.1\r\nHost: x\r\n", 100ms);
    CHECK(request(h.port, "GET", "/healthz").status == 200);
    CHECK(slow.closed_within(3s));

    // with max_connections idle connections open, a new request is still served: the connection that has waited
    // longest for its headers is closed to make room
    {
        std::vector<std::unique_ptr<IdleConnection>> held;
        for (int i = 0; i < 6; ++i) {
            held.push_back(std::make_unique<IdleConnection>(h.port));
            std::this_thread::sleep_for(20ms);
        }
        CHECK(request(h.port, "GET", "/healthz").status == 200);
        CHECK(held.front()->closed_within(2s));
    }

    // the host kept running its periodic job throughout
    REQUIRE(eventually([&] { return h.succeeded("fx.tick") > before + 3; }));
    CHECK(h.process->wait(10ms) == false); // still running
}

TEST_CASE("/metrics parses with the Prometheus text-format parser and carries the figures") {
    Host h;
    for (int i = 0; i < 3; ++i) REQUIRE(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok"})").status == 201);
    REQUIRE(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.permanent"})").status == 201);
    REQUIRE(eventually([&] { return h.succeeded("fx.ok") == 3; }));
    REQUIRE(eventually([&] { return h.get_json("/api/v1/dlq").as_array().size() == 1; }));
    auto metrics = request(h.port, "GET", "/metrics");
    REQUIRE(metrics.status == 200);
    CHECK(contains(metrics.head, "Content-Type: text/plain; version=0.0.4"));
    auto file = h.dir.write("metrics.txt", metrics.body);
    auto script = h.dir.write("parse.py", R"(import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
def value(family, sample, **labels):
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None
print("families", len(families))
print("succeeded", value("jobhost_jobs_succeeded", "jobhost_jobs_succeeded_total", job_type="fx.ok"))
print("dead", value("jobhost_jobs_dead_lettered", "jobhost_jobs_dead_lettered_total", job_type="fx.permanent"))
print("duration_count", value("jobhost_job_duration_seconds", "jobhost_job_duration_seconds_count", job_type="fx.ok"))
print("duration_inf", value("jobhost_job_duration_seconds", "jobhost_job_duration_seconds_bucket", job_type="fx.ok", le="+Inf"))
print("dead_depth", value("jobhost_queue_depth", "jobhost_queue_depth", job_type="fx.permanent", state="dead"))
print("healthy", value("jobhost_health", "jobhost_health", status="healthy"))
print("uptime_type", families["jobhost_uptime_seconds"].type)
import time
rss = value("process_resident_memory_bytes", "process_resident_memory_bytes")
print("rss_ok", 1 << 20 < rss < 4 << 30)
print("fds_ok", 3 < value("process_open_fds", "process_open_fds") <= value("process_max_fds", "process_max_fds"))
print("threads_ok", value("process_threads", "process_threads") >= 4)
print("cpu_ok", 0 < value("process_cpu_seconds", "process_cpu_seconds_total") < 600)
print("start_ok", abs(time.time() - value("process_start_time_seconds", "process_start_time_seconds")) < 600)
print("store_ok", value("jobhost_store_size_bytes", "jobhost_store_size_bytes") > 4096)
)");
    auto r = run({"/usr/bin/python3", script.string(), file.string()}, 30s);
    CAPTURE(r.err);
    CAPTURE(r.out);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "succeeded 3.0"));
    CHECK(contains(r.out, "dead 1.0"));
    CHECK(contains(r.out, "duration_count 3.0"));
    CHECK(contains(r.out, "duration_inf 3.0"));
    CHECK(contains(r.out, "dead_depth 1.0"));
    CHECK(contains(r.out, "healthy 1.0"));
    CHECK(contains(r.out, "uptime_type gauge"));
    for (const char* ok :
         {"rss_ok True", "fds_ok True", "threads_ok True", "cpu_ok True", "start_ok True", "store_ok True"})
        CHECK(contains(r.out, ok));
}

TEST_CASE("jobhost status prints the health, the alerts and a table of types from a running host") {
    Host h("", "\n[monitor]\ninterval = \"100ms\"\nfailure_min_runs = 2\n\n[jobs.\"fx.fail\"]\nmax_retries = 1\n"
               "backoff = { initial = \"10ms\", jitter = 0 }\n");
    REQUIRE(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.fail"})").status == 201);
    REQUIRE(eventually([&] { return !h.get_json("/api/v1/alerts").as_array().empty(); }));
    auto url = "http://127.0.0.1:" + std::to_string(h.port);
    auto r = run_jobhost({"status", "--url", url});
    CAPTURE(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "health: degraded"));
    CHECK(contains(r.out, "[warning] job type fx.fail: 2 of its last 2 runs failed (100%)"));
    CHECK(contains(r.out, "fx.tick"));
    CHECK(contains(r.out, "failed on attempt 2"));
    auto j = run_jobhost({"status", "--url", url, "--json"});
    CHECK(json::parse(j.out).as_object().at("health") == "degraded");
    CHECK(contains(h.process->err(), "alert raised: job type fx.fail"));

    auto bare = run_jobhost({"status", "--url", "127.0.0.1:" + std::to_string(h.port), "--json"}); // no http://
    CHECK(bare.exit_code == 0);
    auto down = run_jobhost({"status", "--url", "http://127.0.0.1:1"});
    CHECK(down.exit_code == 1);
    CHECK(contains(down.err, "cannot reach a host at http://127.0.0.1:1 (Connection refused)"));
    CHECK_FALSE(contains(down.err, "/usr/include")); // no Boost source location
    CHECK(run_jobhost({"status", "--url", "ftp://127.0.0.1:1"}).exit_code == 2);
}

TEST_CASE("counters mean what they say whoever queued: CLI enqueues and replays count, the DLQ size is current") {
    Host h;
    auto cli = [&](std::vector<std::string> args) {
        args.push_back("--config");
        args.push_back(h.config.string());
        return run_jobhost(args, 30s);
    };
    for (int i = 0; i < 3; ++i) REQUIRE(cli({"enqueue", "fx.ok"}).exit_code == 0);
    REQUIRE(cli({"enqueue", "fx.invalid"}).exit_code == 0); // dead at once (max_retries = 0, permanent)
    auto counts = [&](const std::string& type) { return h.get_json("/api/v1/types/" + type).as_object(); };
    auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until &&
           (counts("fx.ok").at("counts").as_object().at("succeeded").to_number<int>() < 3 ||
            counts("fx.invalid").at("queue").as_object().at("dead").to_number<int>() < 1))
        std::this_thread::sleep_for(50ms);
    auto ok = counts("fx.ok");
    CHECK(ok.at("counts").as_object().at("enqueued").to_number<int>() == 3); // queued by another process
    CHECK(ok.at("counts").as_object().at("enqueued_here").to_number<int>() == 0);
    auto invalid = counts("fx.invalid");
    CHECK(invalid.at("queue").as_object().at("dead").to_number<int>() == 1);
    CHECK(invalid.at("counts").as_object().at("dead_lettered").to_number<int>() == 1);
    auto id = json::parse(cli({"dlq", "list", "--json"}).out).as_array().at(0).as_object().at("id").to_number<int>();
    REQUIRE(cli({"dlq", "retry", std::to_string(id)}).exit_code == 0); // a replay is an enqueue
    until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until &&
           counts("fx.invalid").at("counts").as_object().at("dead_lettered").to_number<int>() < 2)
        std::this_thread::sleep_for(50ms);
    invalid = counts("fx.invalid");
    CHECK(invalid.at("counts").as_object().at("enqueued").to_number<int>() == 2);
    REQUIRE(cli({"dlq", "purge", "--all", "--type", "fx.invalid"}).exit_code == 0);
    CHECK(counts("fx.invalid").at("queue").as_object().at("dead").to_number<int>() == 0); // purged: the DLQ is empty
    CHECK(counts("fx.invalid").at("counts").as_object().at("dead_lettered").to_number<int>() == 2); // lifetime
}

TEST_CASE("a batch enqueue queues every job of a JSON array or NDJSON, or none when one is invalid") {
    Host h;
    // a JSON array: one id per job, in order
    auto ok = request(h.port, "POST", "/api/v1/jobs",
                      R"([{"type":"fx.ok","payload":1},{"type":"fx.ok","payload":2,"delay":3600},)"
                      R"({"type":"fx.slow","payload":{"ms":3000},"unique_key":"b"}])");
    REQUIRE(ok.status == 201);
    auto o = json::parse(ok.body).as_object();
    CHECK(o.at("queued") == 3);
    auto ids = o.at("ids").as_array();
    REQUIRE(ids.size() == 3);
    CHECK(ids[0].to_number<std::int64_t>() < ids[1].to_number<std::int64_t>());
    // an integer delay is seconds, as everywhere in jobhost
    auto delayed = h.get_json("/api/v1/jobs/" + std::to_string(ids[1].to_number<std::int64_t>())).as_object();
    CHECK(delayed.at("state") == "scheduled");

    // one invalid job: nothing is queued, and each bad job is named by its index
    // (counted by the type's lifetime enqueue counter: the rows listed shrink when the first job finishes)
    auto enqueued = [&] {
        return h.get_json("/api/v1/types/fx.ok").as_object().at("counts").as_object().at("enqueued").to_number<int>();
    };
    auto before = enqueued();
    REQUIRE(before == 2);
    REQUIRE(request(h.port, "POST", "/api/v1/types/fx.batch/disable").status == 200);
    auto bad =
        request(h.port, "POST", "/api/v1/jobs",
                R"([{"type":"fx.ok"},{"type":"fx.nope"},{"type":"fx.ok","priority":"urgent"},{"type":"fx.batch"}])");
    CHECK(bad.status == 400);
    auto b = json::parse(bad.body).as_object();
    CHECK(contains(std::string(b.at("error").as_string()), "3 of 4 jobs are invalid; nothing was queued"));
    auto errors = b.at("errors").as_array();
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].as_object().at("index") == 1);
    CHECK(contains(std::string(errors[0].as_object().at("error").as_string()), "unknown job type 'fx.nope'"));
    CHECK(errors[1].as_object().at("index") == 2);
    CHECK(errors[2].as_object().at("index") == 3); // disabled above
    CHECK(contains(std::string(errors[2].as_object().at("error").as_string()), "disabled"));
    CHECK(enqueued() == before);

    // a unique key that is held is reported for its job alone
    auto dup = request(h.port, "POST", "/api/v1/jobs", R"([{"type":"fx.ok"},{"type":"fx.slow","unique_key":"b"}])");
    CHECK(dup.status == 201);
    auto d = json::parse(dup.body).as_object();
    CHECK(d.at("queued") == 1);
    CHECK(d.at("ids").as_array()[1].is_null());
    CHECK(d.at("duplicates").as_array()[0].as_object().at("id") == ids[2]);

    // NDJSON: one job per line; a line that is not JSON is named
    std::string ndjson;
    for (int i = 0; i < 500; ++i) ndjson += R"({"type":"fx.ok","payload":)" + std::to_string(i) + "}\n";
    auto nd = request(h.port, "POST", "/api/v1/jobs", ndjson, {"Content-Type: application/x-ndjson"});
    REQUIRE(nd.status == 201);
    CHECK(json::parse(nd.body).as_object().at("queued") == 500);
    auto nd_bad = request(h.port, "POST", "/api/v1/jobs", "{\"type\":\"fx.ok\"}\n{oops\n",
                          {"Content-Type: application/x-ndjson"});
    CHECK(nd_bad.status == 400);
    CHECK(contains(nd_bad.body, "line 2 is not JSON"));
    REQUIRE(eventually([&] { return h.succeeded("fx.ok") == 502; }, 30s));

    // a body that is not JSON says so; the status comes from the kind of error
    auto garbage = request(h.port, "POST", "/api/v1/jobs", "type=fx.ok");
    CHECK(garbage.status == 400);
    CHECK(contains(garbage.body, "the body is not JSON"));
    CHECK(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.batch"})").status == 422); // disabled
    CHECK(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.nope"})").status == 404);
}

TEST_CASE("job types are enabled, disabled and run now through the API") {
    Host h;
    CHECK(request(h.port, "POST", "/api/v1/types/fx.ok/disable").status == 200);
    CHECK(h.get_json("/api/v1/types/fx.ok").as_object().at("settings").as_object().at("enabled") == false);
    CHECK(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok"})").status == 422);
    CHECK(request(h.port, "POST", "/api/v1/types/fx.ok/run").status == 422);
    CHECK(request(h.port, "POST", "/api/v1/types/fx.ok/enable").status == 200);
    auto run = request(h.port, "POST", "/api/v1/types/fx.ok/run", R"({"from":"run now"})");
    REQUIRE(run.status == 201);
    auto id = std::to_string(json::parse(run.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return h.succeeded("fx.ok") == 1; }));
    CHECK(request(h.port, "GET", "/api/v1/types/fx.ok/enable").status == 405);
    CHECK(request(h.port, "POST", "/api/v1/types/fx.nope/enable").status == 404);
    CHECK(request(h.port, "POST", "/api/v1/types/fx.ok/explode").status == 404);
    // a periodic type disabled through the API stops its schedule (no tick refused every period), and restarts it
    REQUIRE(eventually([&] { return h.succeeded("fx.tick") > 0; }));
    REQUIRE(request(h.port, "POST", "/api/v1/types/fx.tick/disable").status == 200);
    std::this_thread::sleep_for(300ms); // a run already queued may still finish
    auto ticks = h.succeeded("fx.tick");
    std::this_thread::sleep_for(500ms); // five periods
    CHECK(h.succeeded("fx.tick") == ticks);
    CHECK_FALSE(contains(h.process->err(), "tick not queued"));
    REQUIRE(request(h.port, "POST", "/api/v1/types/fx.tick/enable").status == 200);
    CHECK(eventually([&] { return h.succeeded("fx.tick") > ticks; }));
    auto provenance = h.get_json("/api/v1/types/fx.tick").as_object().at("provenance").as_object();
    CHECK(contains(std::string(provenance.at("interval").as_string()), "jobhost.toml:"));
}

TEST_CASE("with a read token, reads need a token too, but probes and the dashboard's files do not") {
    TempDir secret;
    auto token_file = secret.write("token", "admin-token-0123456789\n");
    auto read_file = secret.write("read", "reader-token-0123456789\n");
    Host h("token_file = \"" + token_file.string() + "\"\nread_token_file = \"" + read_file.string() + "\"\n");
    CHECK(request(h.port, "GET", "/api/v1/status").status == 401);
    CHECK(request(h.port, "GET", "/api/v1/jobs/1").status == 401);
    CHECK(request(h.port, "GET", "/api/v1/status", "", {"Authorization: Bearer wrong"}).status == 401);
    CHECK(request(h.port, "GET", "/api/v1/status", "", {"Authorization: Bearer reader-token-0123456789"}).status ==
          200);
    CHECK(request(h.port, "GET", "/api/v1/status", "", {"Authorization: Bearer admin-token-0123456789"}).status == 200);
    // the read token does not allow changes
    CHECK(request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok"})",
                  {"Authorization: Bearer reader-token-0123456789"})
              .status == 401);
    CHECK(request(h.port, "GET", "/healthz").status == 200);
    CHECK(request(h.port, "GET", "/readyz").status == 200);
    // jobhost status sends the read token from the same config
    auto status =
        run_jobhost({"status", "--config", h.config.string(), "--url", "127.0.0.1:" + std::to_string(h.port)});
    CHECK(status.exit_code == 0);
    CHECK(contains(status.out, "health:"));
    auto page = request(h.port, "GET", "/");
    CHECK(page.status == 200);
    CHECK(contains(page.head, "text/html"));
    CHECK(contains(page.body, "<script src=\"/ui/app.js\">"));
    CHECK(request(h.port, "GET", "/ui/app.js").status == 200);
    CHECK(request(h.port, "GET", "/ui/style.css").status == 200);
    CHECK(request(h.port, "GET", "/ui/nope.js").status == 401); // not one of the dashboard's files
    CHECK(request(h.port, "GET", "/ui/nope.js", "", {"Authorization: Bearer reader-token-0123456789"}).status == 404);
}

TEST_CASE("a short token is refused for a listener that other machines reach") {
    TempDir dir;
    copy_fixtures(dir.path() / "plugins", {"fx_good.so"});
    auto token = dir.write("token", "short\n");
    auto cfg = dir.write("c.toml", "[host]\nplugin_dir = \"plugins\"\n[store]\nkind = \"memory\"\n"
                                   "[http]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"" +
                                       token.string() + "\"\n");
    auto r = run_jobhost({"run", "--config", cfg.string()}, 20s);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "its token has 5 byte(s): use at least 16"));
}

TEST_CASE("health probes keep answering while hundreds of slow clients trickle one byte a second") {
    Host h("idle_timeout = \"10s\"\nheader_timeout = \"3s\"\n", "");
    // 300 connections, each sending a request one byte a second: far more than max_connections (6)
    std::vector<std::unique_ptr<IdleConnection>> slow;
    const std::string request_line = "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n";
    int probes = 0, answered = 0;
    auto until = std::chrono::steady_clock::now() + 8s;
    std::size_t step = 0;
    while (std::chrono::steady_clock::now() < until) {
        if (slow.size() < 300)
            for (int i = 0; i < 60; ++i) slow.push_back(std::make_unique<IdleConnection>(h.port));
        for (auto& c : slow) c->send_and_read(request_line.substr(step % request_line.size(), 1), 0ms);
        ++step;
        for (int i = 0; i < 5; ++i) {
            ++probes;
            auto r = request(h.port, "GET", "/healthz");
            if (r.status == 200) ++answered;
            std::this_thread::sleep_for(200ms);
        }
    }
    CAPTURE(probes);
    CHECK(answered == probes);
    CHECK(request(h.port, "GET", "/readyz").status == 200);
}

TEST_CASE("a probe is answered while every open connection is being refused for a malformed request") {
    // Six connections fill [http] max_connections; each then sends a malformed request and is answered 400 while a
    // probe connects. The connections being refused close anyway, so the probe takes the place of one of them: it must
    // not be refused for a full server (which it was, now and then, when hundreds of slow clients erred at once).
    Host h;
    int probes = 0, answered = 0;
    std::map<int, int> statuses;
    for (int round = 0; round < 1000; ++round) {
        std::vector<std::unique_ptr<IdleConnection>> held;
        for (int i = 0; i < 6; ++i) held.push_back(std::make_unique<IdleConnection>(h.port));
        for (auto& c : held) c->send_and_read(" \r\n\r\n", 0ms);
        ++probes;
        auto r = request(h.port, "GET", "/healthz");
        ++statuses[r.status];
        if (r.status == 200) ++answered;
    }
    for (const auto& [status, n] : statuses) MESSAGE("status " << status << ": " << n << " probe(s)");
    CHECK(answered == probes);
}

TEST_CASE("a job's result, its latest progress and each attempt's number are kept and shown") {
    Host h({}, {}, "retain_done = 100\nmax_result = 1024\n");
    // a result: the message and the JSON output of Result::success
    auto ok = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok","payload":{"n":7}})");
    REQUIRE(ok.status == 201);
    auto ok_id = std::to_string(json::parse(ok.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return h.get_json("/api/v1/jobs/" + ok_id).as_object().at("state") == "done"; }));
    auto result = h.get_json("/api/v1/jobs/" + ok_id).as_object().at("result").as_object();
    CHECK(result.at("message") == "ok");
    CHECK(json::serialize(result.at("output")) == R"({"n":7})");

    // an output beyond [store] max_result is not kept, and the job says why
    auto big =
        request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok","payload":")" + std::string(2000, 'x') + "\"}");
    REQUIRE(big.status == 201);
    auto big_id = std::to_string(json::parse(big.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return h.get_json("/api/v1/jobs/" + big_id).as_object().at("state") == "done"; }));
    auto cut = h.get_json("/api/v1/jobs/" + big_id).as_object().at("result").as_object();
    CHECK_FALSE(cut.contains("output"));
    CHECK(contains(std::string(cut.at("note").as_string()), "the output (2002 bytes) was not kept"));

    // progress: visible while the job runs, the latest one after it ended
    auto slow = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.slow","payload":{"ms":1500}})");
    REQUIRE(slow.status == 201);
    auto slow_id = std::to_string(json::parse(slow.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] {
        auto j = h.get_json("/api/v1/jobs/" + slow_id).as_object();
        return j.at("state") == "running" && j.contains("progress");
    }));
    REQUIRE(eventually([&] { return h.get_json("/api/v1/jobs/" + slow_id).as_object().at("state") == "done"; }));
    auto progress = h.get_json("/api/v1/jobs/" + slow_id).as_object().at("progress").as_object();
    CHECK(progress.at("percent") == 100);
    CHECK(progress.at("message") == "slept 1500 ms");
    auto shown = run_jobhost({"job", slow_id, "--config", h.config.string()}, 20s);
    CHECK(shown.exit_code == 0);
    CHECK(contains(shown.out, "progress     100% slept 1500 ms"));
    auto shown_ok = run_jobhost({"job", ok_id, "--config", h.config.string()}, 20s);
    CHECK(contains(shown_ok.out, "result       ok"));
    CHECK(contains(shown_ok.out, R"(output       {"n":7})"));

    // a dead letter retried and failed again: each attempt keeps its own number
    auto dead = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.permanent"})");
    auto dead_id = std::to_string(json::parse(dead.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return h.get_json("/api/v1/jobs/" + dead_id).as_object().at("state") == "dead"; }));
    REQUIRE(request(h.port, "POST", "/api/v1/dlq/" + dead_id + "/retry").status == 200);
    REQUIRE(eventually([&] {
        auto j = h.get_json("/api/v1/jobs/" + dead_id).as_object();
        return j.at("state") == "dead" && j.at("errors").as_array().size() == 2;
    }));
    auto errors = h.get_json("/api/v1/jobs/" + dead_id).as_object().at("errors").as_array();
    CHECK(errors[0].as_object().at("attempt") == 1);
    CHECK(errors[1].as_object().at("attempt") == 2);
}

TEST_CASE(
    "while the host drains after SIGTERM, HTTP still answers: readiness 503, reads and metrics 200, changes 503") {
    Host h;
    auto slow = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.slow","payload":{"ms":3000}})");
    REQUIRE(slow.status == 201);
    auto id = std::to_string(json::parse(slow.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return h.get_json("/api/v1/jobs/" + id).as_object().at("state") == "running"; }));
    h.process->signal(SIGTERM);
    REQUIRE(h.process->wait_for_output("received SIGTERM", 10s));
    auto ready = request(h.port, "GET", "/readyz");
    CHECK(ready.status == 503);
    CHECK(contains(ready.body, "draining"));
    CHECK(request(h.port, "GET", "/healthz").status == 200);
    auto metrics = request(h.port, "GET", "/metrics");
    CHECK(metrics.status == 200);
    CHECK(contains(metrics.body, "jobhost_jobs_running{job_type=\"fx.slow\"} 1"));
    CHECK(request(h.port, "GET", "/api/v1/status").status == 200);
    CHECK(h.get_json("/api/v1/jobs/" + id).as_object().at("state") == "running");
    auto refused = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.ok"})");
    CHECK(refused.status == 503);
    CHECK(contains(refused.body, "draining"));
    CHECK(request(h.port, "POST", "/api/v1/dlq/retry", R"({"all":true})").status == 503);
    // the running job finishes within the grace, then the host exits cleanly and HTTP goes with it
    REQUIRE(h.process->wait(20s));
    CHECK(h.process->exit_code() == 0);
    CHECK(contains(h.process->err(), "summary fx.slow: enqueued 1, started 1, succeeded 1"));
    CHECK_THROWS(request(h.port, "GET", "/healthz")); // nothing listens any more
}

TEST_CASE("a job that fails with bytes that are not UTF-8, a NUL and 200 kB of text is dead-lettered, readable") {
    // Before: the message went into the store, the events and the logs as it was, NUL, bad bytes and 200 kB.
    Host h;
    auto r = request(h.port, "POST", "/api/v1/jobs", R"({"type":"fx.garble","payload":{"size":200000}})");
    REQUIRE(r.status == 201);
    auto id = std::to_string(json::parse(r.body).as_object().at("id").to_number<std::int64_t>());
    REQUIRE(eventually([&] { return contains(request(h.port, "GET", "/api/v1/jobs/" + id).body, "\"dead\""); }, 10s));
    auto job = json::parse(request(h.port, "GET", "/api/v1/jobs/" + id).body).as_object(); // throws on bad UTF-8
    auto errors = job.at("errors").as_array();
    REQUIRE(errors.size() == 1);
    std::string error(errors[0].as_object().at("error").as_string());
    CHECK(error.starts_with("bad \xEF\xBF\xBD\xEF\xBF\xBD bytes, a NUL \xEF\xBF\xBD here, xxx"));
    CHECK(error.find('\0') == std::string::npos);
    CHECK(contains(error, " [cut: 200028 bytes in all]"));
    CHECK(error.size() <= 65'536 + 64); // [store] max_result, and the note
    auto dlq = request(h.port, "GET", "/api/v1/dlq");
    CHECK(dlq.status == 200);
    CHECK_NOTHROW(json::parse(dlq.body));
}
