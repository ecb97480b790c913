#include "log/log.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <boost/log/attributes/clock.hpp>
#include <boost/log/attributes/value_extraction.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/log/sinks/text_ostream_backend.hpp>
#include <boost/log/sources/global_logger_storage.hpp>
#include <boost/log/utility/formatting_ostream.hpp>
#include <boost/core/null_deleter.hpp>

#include <array>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>

namespace jobhost::log {

namespace logging = boost::log;
namespace sinks = boost::log::sinks;
namespace attrs = boost::log::attributes;

namespace {

constexpr std::array<std::string_view, 5> kNames{"trace", "debug", "info", "warning", "error"};

std::string timestamp_now() {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
    return buf;
}

template <class T>
std::string_view extract_sv(const logging::record_view& rec, const char* name) {
    if (auto v = logging::extract<std::string_view>(name, rec)) return *v;
    if (auto v = logging::extract<std::string>(name, rec)) return *v;
    return {};
}

void format_text(const logging::record_view& rec, logging::formatting_ostream& out) {
    auto level = logging::extract<Level>("Severity", rec);
    std::string_view lvl = level ? level_name(*level) : "info";
    out << timestamp_now() << ' ';
    std::string upper(lvl);
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out << upper;
    for (std::size_t i = upper.size(); i < 8; ++i) out << ' ';
    auto component = extract_sv<void>(rec, "Component");
    if (!component.empty()) out << '[' << component << "] ";
    auto type = extract_sv<void>(rec, "JobType");
    auto id = extract_sv<void>(rec, "JobId");
    if (!type.empty()) {
        out << '{' << type;
        if (!id.empty()) out << ' ' << id;
        out << "} ";
    }
    if (auto msg = logging::extract<std::string>("Message", rec)) out << *msg;
}

void format_json(const logging::record_view& rec, logging::formatting_ostream& out) {
    auto level = logging::extract<Level>("Severity", rec);
    auto quoted = [](std::string_view s) { return boost::json::serialize(boost::json::string(s)); };
    out << "{\"ts\":\"" << timestamp_now() << "\",\"level\":\"" << (level ? level_name(*level) : "info") << '"';
    auto component = extract_sv<void>(rec, "Component");
    if (!component.empty()) out << ",\"component\":" << quoted(component);
    auto type = extract_sv<void>(rec, "JobType");
    if (!type.empty()) out << ",\"job_type\":" << quoted(type);
    auto id = extract_sv<void>(rec, "JobId");
    if (!id.empty()) out << ",\"job_id\":" << quoted(id);
    auto msg = logging::extract<std::string>("Message", rec);
    out << ",\"message\":" << quoted(msg ? *msg : std::string()) << '}';
}

} // namespace

std::optional<Level> parse_level(std::string_view name) {
    for (std::size_t i = 0; i < kNames.size(); ++i)
        if (kNames[i] == name) return static_cast<Level>(i);
    if (name == "warn") return Level::warning;
    return std::nullopt;
}

std::string_view level_name(Level level) {
    return kNames[static_cast<std::size_t>(level)];
}

Logger& logger() {
    static Logger instance;
    return instance;
}

bool configure(const Options& options, std::string* error) {
    auto core = logging::core::get();
    core->remove_all_sinks();
    using Sink = sinks::synchronous_sink<sinks::text_ostream_backend>;
    auto backend = boost::make_shared<sinks::text_ostream_backend>();
    backend->add_stream(boost::shared_ptr<std::ostream>(&std::clog, boost::null_deleter()));
    backend->auto_flush(true);
    bool ok = true;
    if (options.file) {
        auto file = boost::make_shared<std::ofstream>(*options.file, std::ios::app);
        if (*file) {
            backend->add_stream(file);
        } else {
            ok = false;
            if (error) *error = "cannot open log file " + options.file->string() + " for appending";
        }
    }
    auto sink = boost::make_shared<Sink>(backend);
    if (options.format == Format::json)
        sink->set_formatter(&format_json);
    else
        sink->set_formatter(&format_text);
    Level min = options.level;
    sink->set_filter([min](const logging::attribute_value_set& values) {
        auto level = logging::extract<Level>("Severity", values);
        return !level || *level >= min;
    });
    core->add_sink(sink);
    return ok;
}

void write(Level level, std::string_view component, std::string_view message, std::string_view job_type,
           std::string_view job_id) {
    BOOST_LOG_SEV(logger(), level) << logging::add_value("Component", component)
                                   << logging::add_value("JobType", job_type) << logging::add_value("JobId", job_id)
                                   << message;
}

} // namespace jobhost::log
