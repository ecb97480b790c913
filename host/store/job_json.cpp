#include "store/job_json.hpp"

#include "registry/job_settings.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <ctime>

namespace jobhost::store {

std::string iso(TimePoint t) {
    if (t == TimePoint{}) return "-";
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

boost::json::object to_json(const store::JobRecord& j) {
    boost::json::object o;
    o["id"] = j.id;
    o["type"] = j.type;
    o["state"] = std::string(store::state_name(j.state));
    o["priority"] = std::string(registry::priority_name(j.priority));
    boost::system::error_code ec;
    auto payload = boost::json::parse(j.payload, ec);
    o["payload"] = ec ? boost::json::value(j.payload) : payload;
    if (!j.unique_key.empty()) o["unique_key"] = j.unique_key;
    o["attempt"] = j.attempt;
    o["max_attempts"] = j.max_attempts;
    o["run_at"] = iso(j.run_at);
    o["created_at"] = iso(j.created_at);
    o["started_at"] = iso(j.started_at);
    o["finished_at"] = iso(j.finished_at);
    if (!j.lease_owner.empty()) o["lease_owner"] = j.lease_owner;
    if (j.dead_reason != store::DeadReason::none)
        o["dead_reason"] = std::string(store::dead_reason_name(j.dead_reason));
    boost::json::array errors;
    for (const auto& e : j.errors) errors.push_back({{"attempt", e.attempt}, {"at", iso(e.at)}, {"error", e.message}});
    o["errors"] = std::move(errors);
    if (j.attempts_before) o["attempts_before_retry"] = j.attempts_before;
    if (j.result) {
        boost::json::object r{{"message", j.result->message}};
        if (!j.result->output.empty()) {
            auto out = boost::json::parse(j.result->output, ec);
            r["output"] = ec ? boost::json::value(j.result->output) : out;
        }
        if (!j.result->note.empty()) r["note"] = j.result->note;
        o["result"] = std::move(r);
    }
    if (j.progress)
        o["progress"] = {
            {"percent", j.progress->percent}, {"message", j.progress->message}, {"at", iso(j.progress->at)}};
    return o;
}

namespace {
std::int64_t ms_of(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
} // namespace

std::string result_json(const JobResult& r) {
    boost::json::object o{{"message", r.message}};
    if (!r.output.empty()) o["output"] = r.output; // kept as text: it is stored and shown as it came
    if (!r.note.empty()) o["note"] = r.note;
    return boost::json::serialize(o);
}

JobResult result_from_json(std::string_view text) {
    JobResult r;
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object()) {
        r.note = "(the result of this job could not be read)";
        return r;
    }
    const auto& o = v.as_object();
    if (auto* m = o.if_contains("message"); m && m->is_string()) r.message = std::string(m->as_string());
    if (auto* m = o.if_contains("output"); m && m->is_string()) r.output = std::string(m->as_string());
    if (auto* m = o.if_contains("note"); m && m->is_string()) r.note = std::string(m->as_string());
    return r;
}

std::string progress_json(const Progress& p) {
    return boost::json::serialize(
        boost::json::object{{"percent", p.percent}, {"message", p.message}, {"at", ms_of(p.at)}});
}

Progress progress_from_json(std::string_view text) {
    Progress p;
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object()) {
        p.message = "(the progress of this job could not be read)";
        return p;
    }
    const auto& o = v.as_object();
    if (auto* m = o.if_contains("percent"); m && m->is_int64()) p.percent = static_cast<int>(m->as_int64());
    if (auto* m = o.if_contains("message"); m && m->is_string()) p.message = std::string(m->as_string());
    if (auto* m = o.if_contains("at"); m && m->is_int64()) p.at = TimePoint(std::chrono::milliseconds(m->as_int64()));
    return p;
}

} // namespace jobhost::store
