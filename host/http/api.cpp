#include "http/api.hpp"

#include "http/dashboard.hpp"
#include "log/log.hpp"
#include "store/job_json.hpp"

#include <boost/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <map>
#include <sstream>

namespace jobhost::http {

namespace json = boost::json;
using store::Clock;

namespace {

Response json_response(int status, const json::value& body) {
    Response r;
    r.status = status;
    r.body = json::serialize(body) + "\n";
    return r;
}

Response error(int status, const std::string& message) {
    return json_response(status, json::object{{"error", message}});
}

Response not_allowed(const char* allow) {
    auto r = error(405, std::string("method not allowed; this path takes ") + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
}

std::string decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') {
            out += ' ';
        } else if (s[i] == '%' && i + 2 < s.size()) {
            int v = 0;
            auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
            if (ec == std::errc() && p == s.data() + i + 3) {
                out += static_cast<char>(v);
                i += 2;
            } else {
                out += s[i];
            }
        } else {
            out += s[i];
        }
    }
    return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
    std::map<std::string, std::string> out;
    while (!q.empty()) {
        auto amp = q.find('&');
        auto part = q.substr(0, amp);
        auto eq = part.find('=');
        out[decode(part.substr(0, eq))] = eq == std::string_view::npos ? "" : decode(part.substr(eq + 1));
        if (amp == std::string_view::npos) break;
        q.remove_prefix(amp + 1);
    }
    return out;
}

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> parts;
    while (!path.empty()) {
        auto slash = path.find('/');
        if (slash != 0) parts.emplace_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return parts;
}

std::optional<std::size_t> parse_limit(const std::map<std::string, std::string>& q, std::size_t dflt) {
    auto it = q.find("limit");
    if (it == q.end()) return dflt;
    auto id = store::parse_job_id(it->second);
    if (!id || *id == 0 || *id > 100000) return std::nullopt;
    return static_cast<std::size_t>(*id);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) diff |= static_cast<unsigned>(a[i] ^ b[i]);
    return diff == 0;
}

json::object stats_json(const monitor::DurationStats& d) {
    return {{"count", d.count}, {"mean_ms", d.mean}, {"min_ms", d.min}, {"max_ms", d.max},
            {"p50_ms", d.p50},  {"p95_ms", d.p95},   {"p99_ms", d.p99}};
}

// Lifetime counters. "enqueued" is the store's (jobs ever queued for the type, by anyone: this host, the CLI,
// another host, a replay); the others count what this host did.
json::object counts_json(const executor::TypeMetrics& m, const store::TypeCounts& c) {
    return {{"enqueued", c.enqueued},
            {"enqueued_here", m.enqueued},
            {"started", m.started},
            {"succeeded", m.succeeded},
            {"failed", m.failed},
            {"timed_out", m.timed_out},
            {"retried", m.retried},
            {"dead_lettered", m.dead_lettered},
            {"dropped", m.dropped},
            {"coalesced", m.coalesced},
            {"stuck", m.stuck},
            {"running", m.running},
            {"max_running", m.max_running}};
}

json::object depth_json(const store::TypeCounts& c) {
    json::object o{{"scheduled", c.scheduled}, {"ready", c.ready}, {"reserved", c.reserved},
                   {"running", c.running},     {"done", c.done},   {"dead", c.dead}};
    if (c.oldest_ready) o["oldest_ready"] = store::iso(*c.oldest_ready);
    return o;
}

json::object settings_json(const registry::JobSettings& s) {
    return {{"name", s.name},
            {"description", s.description},
            {"enabled", s.enabled},
            {"interval", s.interval.count() ? core::format_duration(s.interval) : ""},
            {"cron", s.cron},
            {"priority", std::string(registry::priority_name(s.priority))},
            {"max_retries", s.max_retries},
            {"timeout", s.timeout.count() ? core::format_duration(s.timeout) : ""},
            {"concurrency", s.concurrency},
            {"batch_size", s.batch_size},
            {"dead_letter", s.dead_letter},
            {"isolation", std::string(runner::isolation_name(s.isolation))},
            {"memory_limit", s.memory_limit}};
}

json::object type_json(Services& sv, const std::string& type, const std::map<std::string, store::TypeCounts>& counts) {
    const auto* t = sv.registry.find(type);
    auto settings = sv.executor.settings(type);
    auto st = sv.monitor.stats(type);
    json::object o;
    o["type"] = type;
    o["file"] = t ? t->file.string() : "";
    o["usable"] = t && t->usable();
    if (t && !t->usable()) o["error"] = t->error;
    if (t) {
        o["generation"] = t->generation; // 1 at start, +1 for each version loaded while running
        o["loaded_at"] = store::iso(t->loaded_at);
        json::object from; // where each setting came from: the plugin, or a config line
        for (const auto& [field, where] : t->provenance.fields) from[field] = where;
        o["provenance"] = std::move(from);
        if (t->task) o["isolation"] = std::string(runner::isolation_name(t->task->isolation()));
        if (t->task && t->task->isolation() == runner::Isolation::process)
            o["workers"] = json::object{{"started", t->task->workers_started()}, {"lost", t->task->workers_lost()}};
    }
    if (settings) o["settings"] = settings_json(*settings);
    auto c = counts.find(type);
    const auto& queue = c == counts.end() ? store::TypeCounts{} : c->second;
    o["counts"] = counts_json(sv.executor.metrics(type), queue);
    o["queue"] = depth_json(queue);
    o["wait"] = stats_json(st.wait);
    o["run"] = stats_json(st.run);
    o["last_run"] = st.last_run ? store::iso(*st.last_run) : "";
    o["last_success"] = st.last_success ? store::iso(*st.last_success) : "";
    o["last_failure"] = st.last_failure ? store::iso(*st.last_failure) : "";
    o["last_error"] = st.last_error;
    return o;
}

json::array alerts_json(Services& sv) {
    json::array a;
    for (const auto& al : sv.monitor.alerts())
        a.push_back({{"rule", al.rule},
                     {"message", al.message},
                     {"since", store::iso(al.since)},
                     {"severity", al.critical ? "critical" : "warning"}});
    return a;
}

Response status(Services& sv) {
    auto counts = sv.store.counts();
    json::object o;
    o["health"] = std::string(monitor::health_name(sv.monitor.health()));
    o["alerts"] = alerts_json(sv);
    o["uptime_seconds"] = std::chrono::duration<double>(Clock::now() - sv.started).count();
    o["workers"] = sv.config.host.workers;
    o["workers_busy"] = sv.executor.running_runs();
    o["jobs_per_second"] = sv.monitor.jobs_per_second(Clock::now());
    o["plugins_skipped"] = sv.plugins_skipped;
    json::array types;
    for (const auto& [name, t] : sv.registry.types()) types.push_back(type_json(sv, name, counts));
    o["types"] = std::move(types);
    return json_response(200, o);
}

Response readyz(Services& sv) {
    json::array reasons;
    std::size_t usable = 0;
    for (const auto& [name, t] : sv.registry.types()) usable += t.usable() ? 1 : 0;
    if (usable == 0) reasons.push_back("no usable job type is loaded");
    try {
        sv.store.counts();
    } catch (const std::exception& e) {
        reasons.push_back(json::string(std::string("the store does not answer: ") + e.what()));
    }
    if ((sv.stopping && sv.stopping->load()) || !sv.executor.accepting())
        reasons.push_back("draining: the host is shutting down and takes no new work");
    if (reasons.empty()) return json_response(200, json::object{{"ready", true}});
    return json_response(503, json::object{{"ready", false}, {"reasons", reasons}});
}

// One job of an enqueue request, checked as the executor would take it; an error names the field.
std::optional<std::string> parse_enqueue(const json::value& v, executor::EnqueueRequest& r) {
    if (!v.is_object()) return "a job must be a JSON object such as {\"type\": \"shell\", \"payload\": {...}}";
    const auto& o = v.as_object();
    for (const auto& [k, x] : o)
        if (k != "type" && k != "payload" && k != "priority" && k != "delay" && k != "unique_key")
            return "unknown field '" + std::string(k) + "'; known: type, payload, priority, delay, unique_key";
    auto* type = o.if_contains("type");
    if (!type || !type->is_string()) return "'type' (a string) is required";
    r.type = std::string(type->as_string());
    if (auto* p = o.if_contains("payload")) r.payload = json::serialize(*p);
    if (auto* p = o.if_contains("priority")) {
        if (!p->is_string() || !registry::parse_priority(p->as_string()))
            return "'priority' must be low, normal, medium, high or critical";
        r.priority = registry::parse_priority(p->as_string());
    }
    if (auto* d = o.if_contains("delay")) {
        // A string duration, or whole seconds as everywhere else in jobhost.
        std::string text;
        if (d->is_string())
            text = std::string(d->as_string());
        else if (d->is_int64())
            text = std::to_string(d->as_int64());
        else if (d->is_uint64())
            text = std::to_string(d->as_uint64());
        else
            return "'delay' must be a duration string such as \"30s\" or a whole number of seconds";
        auto parsed = core::parse_duration(text);
        if (!parsed) return "'delay' " + *core::duration_error(text);
        r.delay = *parsed;
    }
    if (auto* u = o.if_contains("unique_key")) {
        if (!u->is_string()) return "'unique_key' must be a string";
        r.unique_key = std::string(u->as_string());
    }
    return std::nullopt;
}

Response enqueue_result(const executor::EnqueueResult& result) {
    if (result.duplicate) return json_response(409, json::object{{"error", result.error}, {"id", result.id}});
    if (!result.ok) return error(status_for(result.code), result.error);
    return json_response(201, json::object{{"id", result.id}});
}

// POST /api/v1/jobs: one job (a JSON object), or many (a JSON array, or NDJSON with Content-Type
// application/x-ndjson: one object per line). A batch is all or nothing: when any job is invalid, nothing is queued
// and each invalid job is named by its index. A job whose unique key is held is reported, and the others are queued.
Response enqueue(Services& sv, const Request& req) {
    bool ndjson =
        req.content_type.rfind("application/x-ndjson", 0) == 0 || req.content_type.rfind("application/jsonl", 0) == 0;
    std::vector<json::value> items;
    bool batch = ndjson;
    if (ndjson) {
        for (const auto& line : executor::json_lines(req.body)) {
            json::error_code ec;
            auto v = json::parse(line.text, ec);
            if (ec)
                return error(400, "line " + std::to_string(line.number) + " is not JSON (" + ec.message() +
                                      "); nothing was queued");
            items.push_back(std::move(v));
        }
    } else {
        json::error_code ec;
        auto body = json::parse(req.body, ec);
        if (ec)
            return error(400, "the body is not JSON (" + ec.message() +
                                  "); send {\"type\": \"...\", \"payload\": {...}} or an array of such objects");
        if (body.is_array()) {
            batch = true;
            for (auto& v : body.as_array()) items.push_back(std::move(v));
        } else {
            items.push_back(std::move(body));
        }
    }
    if (!batch) {
        executor::EnqueueRequest r;
        if (auto why = parse_enqueue(items.front(), r)) return error(400, *why);
        return enqueue_result(sv.executor.enqueue(r));
    }
    if (items.empty()) return error(400, "the batch is empty; nothing was queued");
    std::vector<executor::EnqueueRequest> requests(items.size());
    json::array errors;
    for (std::size_t i = 0; i < items.size(); ++i) {
        auto why = parse_enqueue(items[i], requests[i]);
        if (!why) {
            auto settings = sv.executor.settings(requests[i].type);
            if (!settings)
                why = "unknown job type '" + requests[i].type + "'";
            else if (!settings->enabled)
                why = "job type '" + requests[i].type + "' is disabled (enabled = false)";
        }
        if (why && errors.size() < 100)
            errors.push_back(json::object{{"index", i}, {"error", *why}});
        else if (why)
            errors.push_back(json::object{{"index", i}});
    }
    if (!errors.empty()) {
        auto r = json_response(
            400, json::object{{"error", std::to_string(errors.size()) + " of " + std::to_string(items.size()) +
                                            " jobs are invalid; nothing was queued"},
                              {"errors", std::move(errors)}});
        return r;
    }
    auto results = sv.executor.enqueue(requests);
    json::array ids, duplicates, failed;
    std::size_t queued = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        const auto& res = results[i];
        if (res.ok) {
            ++queued;
            ids.push_back(res.id);
        } else if (res.duplicate) {
            ids.push_back(nullptr);
            duplicates.push_back(json::object{{"index", i}, {"id", res.id}, {"error", res.error}});
        } else {
            if (res.code == core::Code::unavailable) return error(503, res.error);
            ids.push_back(nullptr);
            failed.push_back(json::object{{"index", i}, {"error", res.error}});
        }
    }
    json::object o{{"queued", queued}, {"ids", std::move(ids)}};
    if (!duplicates.empty()) o["duplicates"] = std::move(duplicates);
    if (!failed.empty()) o["errors"] = std::move(failed);
    return json_response(queued > 0 ? 201 : 409, o);
}

// ids from {"ids": [..]} or every dead letter (of "type") with {"all": true}
core::Expected<std::vector<store::JobId>> dead_ids(Services& sv, const std::string& body) {
    json::error_code ec;
    auto v = json::parse(body, ec);
    if (ec || !v.is_object())
        return core::Error{"the body must be {\"ids\": [1, 2]} or {\"all\": true, \"type\": \"...\"}",
                           core::Code::invalid};
    const auto& o = v.as_object();
    std::vector<store::JobId> ids;
    if (auto* all = o.if_contains("all"); all && all->is_bool() && all->as_bool()) {
        std::optional<std::string> type;
        if (auto* t = o.if_contains("type")) {
            if (!t->is_string()) return core::Error{"'type' must be a string", core::Code::invalid};
            type = std::string(t->as_string());
        }
        for (const auto& j : sv.store.dead_letters({type, std::numeric_limits<std::size_t>::max()}))
            ids.push_back(j.id);
        return ids;
    }
    auto* list = o.if_contains("ids");
    if (!list || !list->is_array() || list->as_array().empty())
        return core::Error{"give \"ids\": [..] or \"all\": true", core::Code::invalid};
    for (const auto& x : list->as_array()) {
        std::optional<store::JobId> id;
        if (x.is_int64() && x.as_int64() > 0) id = static_cast<store::JobId>(x.as_int64());
        if (x.is_uint64() && x.as_uint64() > 0) id = static_cast<store::JobId>(x.as_uint64());
        if (!id)
            return core::Error{"ids must be positive whole numbers, got " + json::serialize(x), core::Code::invalid};
        auto j = sv.store.get(*id);
        if (!j || j->state != store::JobState::dead)
            return core::Error{"no dead letter " + std::to_string(*id), core::Code::not_found};
        ids.push_back(*id);
    }
    return ids;
}

std::optional<executor::JobEventKind> parse_kind(const std::string& s) {
    using K = executor::JobEventKind;
    for (K k : {K::enqueued, K::started, K::succeeded, K::failed, K::timed_out, K::retried, K::dead_lettered,
                K::dropped, K::released, K::coalesced, K::stuck, K::plugin_loaded, K::plugin_replaced,
                K::plugin_removed, K::plugin_refused})
        if (executor::event_kind_name(k) == s) return k;
    return std::nullopt;
}

Response route(const Request& req, Services& sv) {
    std::string_view target(req.target);
    if (target.empty() || target[0] != '/') return error(400, "the request target must be a path starting with /");
    auto qpos = target.find('?');
    std::string_view path = target.substr(0, qpos);
    auto query = parse_query(qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1));
    auto parts = split_path(path);
    const std::string& m = req.method;
    bool get = m == "GET" || m == "HEAD";

    if (parts.size() == 1 && parts[0] == "healthz")
        return get ? json_response(200, json::object{{"status", "up"}}) : not_allowed("GET");
    if (parts.size() == 1 && parts[0] == "readyz") return get ? readyz(sv) : not_allowed("GET");
    if (parts.size() == 1 && parts[0] == "metrics") {
        if (!get) return not_allowed("GET");
        Response r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = prometheus_text(sv);
        return r;
    }
    if (parts.size() < 3 || parts[0] != "api" || parts[1] != "v1")
        return error(404, "no such path: " + std::string(path));
    const std::string& what = parts[2];
    std::size_t n = parts.size();

    if (what == "status" && n == 3) return get ? status(sv) : not_allowed("GET");
    if (what == "plugins" && n == 4 && parts[3] == "reload") {
        if (m != "POST") return not_allowed("POST");
        if (!sv.reload_plugins) return error(503, "this host cannot reload plugins");
        auto c = sv.reload_plugins();
        auto list = [](const std::vector<std::string>& v) {
            json::array a;
            for (const auto& x : v) a.push_back(json::string(x));
            return a;
        };
        return json_response(200, json::object{{"added", list(c.added)},
                                               {"replaced", list(c.replaced)},
                                               {"removed", list(c.removed)},
                                               {"refused", list(c.refused)}});
    }
    if (what == "alerts" && n == 3) return get ? json_response(200, alerts_json(sv)) : not_allowed("GET");
    if (what == "types" && (n == 3 || n == 4 || n == 5)) {
        if (n == 5 && (parts[4] == "enable" || parts[4] == "disable" || parts[4] == "run")) {
            if (m != "POST") return not_allowed("POST");
            auto settings = sv.executor.settings(parts[3]);
            if (!settings) return error(404, "unknown job type '" + parts[3] + "'");
            if (parts[4] == "run") { // a run now, with the body as its payload (empty: null)
                executor::EnqueueRequest r;
                r.type = parts[3];
                if (req.body.find_first_not_of(" \t\r\n") != std::string::npos) r.payload = req.body;
                return enqueue_result(sv.executor.enqueue(r));
            }
            if (!sv.set_enabled) return error(503, "this host cannot enable or disable job types");
            bool on = parts[4] == "enable";
            sv.set_enabled(parts[3], on);
            JH_LOG(info, "http") << "job type '" << parts[3] << "' " << (on ? "enabled" : "disabled")
                                 << " through the API (until the next reload or restart)";
            return json_response(200, json::object{{"type", parts[3]}, {"enabled", on}});
        }
        if (n == 5) return error(404, "no such path: " + std::string(path));
        if (!get) return not_allowed("GET");
        auto counts = sv.store.counts();
        if (n == 4) {
            if (!sv.registry.find(parts[3])) return error(404, "unknown job type '" + parts[3] + "'");
            return json_response(200, type_json(sv, parts[3], counts));
        }
        json::array a;
        for (const auto& [name, t] : sv.registry.types()) a.push_back(type_json(sv, name, counts));
        return json_response(200, a);
    }
    if (what == "events" && n == 3) {
        if (!get) return not_allowed("GET");
        monitor::EventFilter f;
        if (query.count("type")) f.type = query["type"];
        if (query.count("job")) {
            f.id = store::parse_job_id(query["job"]);
            if (!f.id) return error(400, "'job' must be a job id");
        }
        if (query.count("kind")) {
            f.kind = parse_kind(query["kind"]);
            if (!f.kind) return error(400, "unknown event kind '" + query["kind"] + "'");
        }
        auto limit = parse_limit(query, 100);
        if (!limit) return error(400, "'limit' must be a whole number from 1 to 100000");
        f.limit = *limit;
        json::array a;
        for (const auto& e : sv.monitor.events(f)) {
            json::object o{{"seq", e.seq},
                           {"at", store::iso(e.at)},
                           {"kind", std::string(executor::event_kind_name(e.kind))},
                           {"type", e.type},
                           {"attempt", e.attempt}};
            // a start carries how long the job waited; an end, how long it ran
            o[e.kind == executor::JobEventKind::started ? "wait_ms" : "duration_ms"] = e.duration.count();
            if (e.id) o["job"] = e.id;
            if (!e.error.empty()) o["error"] = e.error;
            a.push_back(std::move(o));
        }
        return json_response(200, a);
    }
    if (what == "jobs") {
        if (n == 3 && m == "POST") return enqueue(sv, req);
        if (n == 3 && get) {
            store::ListFilter f;
            if (query.count("type")) f.type = query["type"];
            if (query.count("state")) {
                f.state = store::parse_state(query["state"]);
                if (!f.state) return error(400, "'state' must be scheduled, ready, reserved, running, done or dead");
            }
            auto limit = parse_limit(query, 100);
            if (!limit) return error(400, "'limit' must be a whole number from 1 to 100000");
            f.limit = *limit;
            if (query.count("before")) {
                f.before = store::parse_job_id(query["before"]);
                if (!f.before) return error(400, "'before' must be a job id");
            }
            json::array a;
            for (const auto& j : sv.store.list(f)) a.push_back(store::to_json(j));
            return json_response(200, a);
        }
        if (n == 3) return not_allowed("GET, POST");
        if (n == 4) {
            if (!get) return not_allowed("GET");
            auto id = store::parse_job_id(parts[3]);
            if (!id) return error(400, "'" + parts[3] + "' is not a job id");
            auto j = sv.store.get(*id);
            if (!j) return error(404, "no job " + parts[3]);
            return json_response(200, store::to_json(*j));
        }
    }
    if (what == "dlq") {
        if (n == 3) {
            if (!get) return not_allowed("GET");
            std::optional<std::string> type;
            if (query.count("type")) type = query["type"];
            auto limit = parse_limit(query, 1000);
            if (!limit) return error(400, "'limit' must be a whole number from 1 to 100000");
            json::array a;
            for (const auto& j : sv.store.dead_letters({type, *limit})) a.push_back(store::to_json(j));
            return json_response(200, a);
        }
        if (n == 4 && (parts[3] == "retry" || parts[3] == "purge")) {
            if (m != "POST") return not_allowed("POST");
            auto ids = dead_ids(sv, req.body);
            if (!ids) return error(status_for(ids.error().code), ids.error().message);
            std::size_t count = parts[3] == "retry" ? sv.store.replay(*ids, Clock::now()) : sv.store.purge(*ids);
            if (parts[3] == "retry") sv.executor.poke();
            return json_response(200, json::object{{parts[3] == "retry" ? "retried" : "purged", count}});
        }
        auto id = n >= 4 ? store::parse_job_id(parts[3]) : std::nullopt;
        if (!id) return error(n >= 4 ? 400 : 404, n >= 4 ? "'" + parts[3] + "' is not a job id" : "no such path");
        auto j = sv.store.get(*id);
        bool dead = j && j->state == store::JobState::dead;
        if (n == 4) {
            if (m == "DELETE") {
                if (!dead) return error(404, "no dead letter " + parts[3]);
                return json_response(200, json::object{{"purged", sv.store.purge(std::vector{*id})}});
            }
            if (!get) return not_allowed("GET, DELETE");
            if (!dead) return error(404, "no dead letter " + parts[3]);
            return json_response(200, store::to_json(*j));
        }
        if (n == 5 && parts[4] == "retry") {
            if (m != "POST") return not_allowed("POST");
            if (!dead) return error(404, "no dead letter " + parts[3]);
            auto count = sv.store.replay(std::vector{*id}, Clock::now());
            sv.executor.poke();
            if (count == 0) return error(409, "job " + parts[3] + " was not retried: another job holds its unique key");
            return json_response(200, json::object{{"retried", count}});
        }
    }
    return error(404, "no such path: " + std::string(path));
}

struct ProcessFigures {
    double cpu_seconds = 0, resident_bytes = 0, virtual_bytes = 0, open_fds = 0, max_fds = 0, threads = 0,
           start_time = 0;
};

ProcessFigures read_process_figures() {
    ProcessFigures f;
    const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // The fields after the command's closing parenthesis: state is field 3; utime 14, stime 15, num_threads 20,
    // starttime 22, vsize 23, rss 24.
    if (auto close = text.rfind(')'); close != std::string::npos) {
        std::istringstream in(text.substr(close + 2));
        std::vector<std::string> v((std::istream_iterator<std::string>(in)), std::istream_iterator<std::string>());
        auto field = [&](std::size_t n) { return n - 3 < v.size() ? std::strtod(v[n - 3].c_str(), nullptr) : 0.0; };
        f.threads = field(20);
        f.virtual_bytes = field(23);
        f.resident_bytes = field(24) * page;
        std::ifstream boot("/proc/stat");
        for (std::string line; std::getline(boot, line);)
            if (line.rfind("btime ", 0) == 0) f.start_time = std::strtod(line.c_str() + 6, nullptr) + field(22) / tick;
    }
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        f.open_fds += 1;
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) f.max_fds = static_cast<double>(lim.rlim_cur);
    // CPU time from getrusage, to the microsecond (/proc/self/stat counts it in clock ticks, 10 ms here, and a host
    // scraped in its first tens of milliseconds reported 0)
    rusage u{};
    if (::getrusage(RUSAGE_SELF, &u) == 0)
        f.cpu_seconds = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
                        static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
    return f;
}

} // namespace

int status_for(core::Code code) {
    switch (code) {
    case core::Code::invalid: return 400;
    case core::Code::not_found: return 404;
    case core::Code::conflict: return 409;
    case core::Code::unprocessable: return 422;
    case core::Code::unavailable: return 503;
    case core::Code::failed: break;
    }
    return 500;
}

namespace {

bool is_probe(std::string_view path) {
    return path == "/healthz" || path == "/readyz";
}

std::string_view path_of(std::string_view target) {
    return target.substr(0, target.find('?'));
}

bool bearer_is(std::string_view authorization, const std::string& token) {
    constexpr std::string_view prefix = "Bearer ";
    return authorization.substr(0, prefix.size()) == prefix &&
           constant_time_equal(authorization.substr(prefix.size()), token);
}

Response unauthorized(const std::string& message) {
    auto r = error(401, message);
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
}

} // namespace

bool runs_on_host_thread(const Request& req) {
    auto path = path_of(req.target);
    // What reads the registry: status, types, readiness, metrics, plugin reloads.
    return path == "/readyz" || path == "/metrics" || path == "/api/v1/status" || path.rfind("/api/v1/types", 0) == 0 ||
           path.rfind("/api/v1/plugins", 0) == 0;
}

Response handle(const Request& req, Services& sv) {
    bool mutating = req.method != "GET" && req.method != "HEAD";
    static const std::set<std::string> known{"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"};
    if (!known.count(req.method)) return not_allowed("GET, POST, DELETE");
    auto path = path_of(req.target);
    if (mutating && !sv.token.empty() && !bearer_is(req.authorization, sv.token))
        return unauthorized(req.authorization.empty()
                                ? "this request changes state and needs 'Authorization: Bearer <token>'"
                                : "the bearer token is wrong; this request changes state and needs the [http] token");
    // Reads need the read token (or the mutating one) when one is set; probes and the dashboard's own files do not.
    if (!mutating && !sv.read_token.empty() && !is_probe(path) && !is_dashboard_asset(path) &&
        !bearer_is(req.authorization, sv.read_token) && !(sv.token.size() && bearer_is(req.authorization, sv.token)))
        return unauthorized(req.authorization.empty()
                                ? "reading needs 'Authorization: Bearer <token>' ([http] read_token_file is set)"
                                : "the bearer token is wrong; reading needs the [http] read token");
    // While the host drains it still answers reads (status, metrics, jobs) but changes nothing.
    if (mutating && sv.stopping && sv.stopping->load())
        return error(503, "the host is draining (shutting down): it takes no new work and changes nothing; send "
                          "this to another host, or again once this one has restarted");
    try {
        if (auto asset = dashboard_asset(path, req.method)) return std::move(*asset);
        return route(req, sv);
    } catch (const std::exception& e) {
        // The text may name a source file or a database's internals: it goes to the log, not to the client.
        JH_LOG(error, "http") << req.method << " " << path << " failed: " << e.what();
        return error(500, "internal error while answering " + req.method + " " + std::string(path) +
                              "; the host's log has the details");
    }
}

std::string prometheus_text(Services& sv) {
    using namespace prometheus;
    Registry reg;
    auto counter = [&](const char* name, const char* help) -> Family<Counter>& {
        return BuildCounter().Name(name).Help(help).Register(reg);
    };
    auto gauge = [&](const char* name, const char* help) -> Family<Gauge>& {
        return BuildGauge().Name(name).Help(help).Register(reg);
    };
    auto& enqueued =
        counter("jobhost_jobs_enqueued_total", "Jobs ever queued for the type, by anyone (the store's count).");
    auto& started = counter("jobhost_jobs_started_total", "Job attempts started.");
    auto& succeeded = counter("jobhost_jobs_succeeded_total", "Job attempts that succeeded.");
    auto& failed = counter("jobhost_jobs_failed_total", "Job attempts that failed, timed-out ones included.");
    auto& timed_out = counter("jobhost_jobs_timed_out_total", "Job attempts that ran past their timeout.");
    auto& retried = counter("jobhost_jobs_retried_total", "Failed attempts scheduled to run again.");
    auto& dead = counter("jobhost_jobs_dead_lettered_total", "Jobs moved to the dead-letter queue.");
    auto& dropped =
        counter("jobhost_jobs_dropped_total", "Jobs dropped after their last attempt (dead_letter = false).");
    auto& coalesced =
        counter("jobhost_ticks_coalesced_total", "Periodic ticks skipped while the previous run was pending.");
    auto& stuck = counter("jobhost_jobs_stuck_total", "Runs still going stuck_grace after their timeout.");
    auto& running = gauge("jobhost_jobs_running", "Jobs running now.");
    auto& running_max = gauge("jobhost_jobs_running_max", "The most jobs of the type ever running at once.");
    auto& depth = gauge("jobhost_queue_depth", "Jobs in the store by state.");
    auto& last_success = gauge("jobhost_last_success_timestamp_seconds", "When a job of the type last succeeded.");
    auto& last_failure = gauge("jobhost_last_failure_timestamp_seconds", "When a job of the type last failed.");
    auto& wait = BuildHistogram().Name("jobhost_job_wait_seconds").Help("Time from ready to started.").Register(reg);
    auto& run = BuildHistogram().Name("jobhost_job_duration_seconds").Help("Time a run took.").Register(reg);
    Histogram::BucketBoundaries bounds(monitor::kBuckets.begin(), monitor::kBuckets.end());

    auto counts = sv.store.counts();
    auto metrics = sv.executor.all_metrics();
    auto epoch = [](store::TimePoint t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); };
    for (const auto& [type, m] : metrics) {
        Labels l{{"job_type", type}};
        auto c = counts.count(type) ? counts.at(type) : store::TypeCounts{};
        enqueued.Add(l).Increment(static_cast<double>(c.enqueued));
        started.Add(l).Increment(static_cast<double>(m.started));
        succeeded.Add(l).Increment(static_cast<double>(m.succeeded));
        failed.Add(l).Increment(static_cast<double>(m.failed));
        timed_out.Add(l).Increment(static_cast<double>(m.timed_out));
        retried.Add(l).Increment(static_cast<double>(m.retried));
        dead.Add(l).Increment(static_cast<double>(m.dead_lettered));
        dropped.Add(l).Increment(static_cast<double>(m.dropped));
        coalesced.Add(l).Increment(static_cast<double>(m.coalesced));
        stuck.Add(l).Increment(static_cast<double>(m.stuck));
        running.Add(l).Set(m.running);
        running_max.Add(l).Set(m.max_running);
        for (const auto& [state, v] :
             std::initializer_list<std::pair<const char*, std::size_t>>{{"scheduled", c.scheduled},
                                                                        {"ready", c.ready},
                                                                        {"reserved", c.reserved},
                                                                        {"running", c.running},
                                                                        {"done", c.done},
                                                                        {"dead", c.dead}})
            depth.Add({{"job_type", type}, {"state", state}}).Set(static_cast<double>(v));
        auto st = sv.monitor.stats(type);
        if (st.last_success) last_success.Add(l).Set(epoch(*st.last_success));
        if (st.last_failure) last_failure.Add(l).Set(epoch(*st.last_failure));
        auto fill = [&](Family<Histogram>& fam, const monitor::Histogram& h) {
            std::vector<double> inc(h.counts.begin(), h.counts.end());
            fam.Add(l, bounds).ObserveMultiple(inc, h.sum);
        };
        fill(wait, st.wait_hist);
        fill(run, st.run_hist);
    }
    auto now = Clock::now();
    gauge("jobhost_uptime_seconds", "Seconds since the host started.")
        .Add({})
        .Set(std::chrono::duration<double>(now - sv.started).count());
    auto& workers = gauge("jobhost_workers", "Worker threads, by state.");
    auto busy = static_cast<double>(sv.executor.running_runs());
    workers.Add({{"state", "busy"}}).Set(busy);
    workers.Add({{"state", "idle"}}).Set(std::max(0.0, static_cast<double>(sv.config.host.workers) - busy));
    gauge("jobhost_jobs_per_second", "Jobs finished per second over the last minute.")
        .Add({})
        .Set(sv.monitor.jobs_per_second(now));
    auto t0 = std::chrono::steady_clock::now();
    sv.store.counts();
    gauge("jobhost_store_latency_seconds", "How long the store took to answer a count query, measured at this scrape.")
        .Add({})
        .Set(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::size_t usable = 0;
    for (const auto& [name, t] : sv.registry.types()) usable += t.usable() ? 1 : 0;
    auto& plugins = gauge("jobhost_job_types", "Job types, by whether they could be loaded.");
    plugins.Add({{"state", "loaded"}}).Set(static_cast<double>(usable));
    plugins.Add({{"state", "skipped"}})
        .Set(static_cast<double>(sv.plugins_skipped + sv.registry.types().size() - usable));
    auto& health = gauge("jobhost_health", "1 for the current health status.");
    auto h = sv.monitor.health();
    for (auto s : {monitor::Health::healthy, monitor::Health::degraded, monitor::Health::unhealthy})
        health.Add({{"status", std::string(monitor::health_name(s))}}).Set(s == h ? 1 : 0);
    gauge("jobhost_alerts_active", "Alerts holding now.").Add({}).Set(static_cast<double>(sv.monitor.alerts().size()));
    auto& raised = counter("jobhost_alerts_raised_total", "Alerts raised, by rule.");
    for (const auto& [rule, count] : sv.monitor.alerts_raised())
        raised.Add({{"rule", rule}}).Increment(static_cast<double>(count));

    // The process, read from /proc at scrape time (prometheus-cpp has no process collector).
    auto p = read_process_figures();
    counter("process_cpu_seconds_total", "User and system CPU time the process has spent, in seconds.")
        .Add({})
        .Increment(p.cpu_seconds);
    gauge("process_resident_memory_bytes", "Resident memory size in bytes.").Add({}).Set(p.resident_bytes);
    gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").Add({}).Set(p.virtual_bytes);
    gauge("process_open_fds", "Open file descriptors.").Add({}).Set(p.open_fds);
    gauge("process_max_fds", "The limit on open file descriptors.").Add({}).Set(p.max_fds);
    gauge("process_threads", "Threads in the process.").Add({}).Set(p.threads);
    gauge("process_start_time_seconds", "When the process started, in seconds since the Unix epoch.")
        .Add({})
        .Set(p.start_time);
    if (auto size = sv.store.size_on_disk())
        gauge("jobhost_store_size_bytes", "The store's size on disk (SQLite: the file and its WAL; PostgreSQL: the "
                                          "schema's tables and indexes).")
            .Add({})
            .Set(static_cast<double>(*size));

    std::ostringstream out;
    TextSerializer().Serialize(out, reg.Collect());
    return out.str();
}

monitor::Health evaluate_health(Services& sv) {
    monitor::HealthInputs in;
    in.now = Clock::now();
    in.started = sv.started;
    for (const auto& [name, t] : sv.registry.types())
        if (t.usable())
            if (auto s = sv.executor.settings(name)) in.types[name] = *s;
    auto t0 = std::chrono::steady_clock::now();
    try {
        in.counts = sv.store.counts();
        auto took = std::chrono::duration_cast<core::Duration>(std::chrono::steady_clock::now() - t0);
        if (took > sv.monitor.options().store_timeout)
            in.store_error = "a count query took " + core::format_duration(took) + ", longer than " +
                             core::format_duration(sv.monitor.options().store_timeout) + " ([monitor] store_timeout)";
    } catch (const std::exception& e) {
        in.store_error = e.what();
    }
    return sv.monitor.evaluate(in);
}

} // namespace jobhost::http
