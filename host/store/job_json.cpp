#include "store/job_json.hpp"

#include "registry/job_settings.hpp"

#include <boost/json/parse.hpp>

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
    return o;
}

} // namespace jobhost::store
