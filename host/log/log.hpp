// Structured logging through Boost.Log. Every record carries a severity, a UTC timestamp and a component; records
// about a job also carry its type and id. Sinks write text for a terminal or JSON lines for machines.
#pragma once

#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_logger.hpp>
#include <boost/log/utility/manipulators/add_value.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost::log {

enum class Level { trace = 0, debug = 1, info = 2, warning = 3, error = 4 };

std::optional<Level> parse_level(std::string_view name);
std::string_view level_name(Level level);

enum class Format { text, json };

struct Options {
    Level level = Level::info;
    Format format = Format::text;
    std::optional<std::filesystem::path> file; // in addition to stderr
};

// Replaces the sinks. Safe to call again (the CLI calls it once with defaults, then with the config's settings).
// Returns false with a message when the log file cannot be opened; stderr logging is set up regardless.
bool configure(const Options& options, std::string* error = nullptr);

using Logger = boost::log::sources::severity_logger_mt<Level>;
Logger& logger();

// One record. Thread-safe.
void write(Level level, std::string_view component, std::string_view message, std::string_view job_type = {},
           std::string_view job_id = {});

} // namespace jobhost::log

// Streams one record: JH_LOG(info, "loader") << "loaded " << n << " types";
#define JH_LOG(level, component)                                                                                       \
    BOOST_LOG_SEV(::jobhost::log::logger(), ::jobhost::log::Level::level)                                              \
        << ::boost::log::add_value("Component", std::string_view(component))
