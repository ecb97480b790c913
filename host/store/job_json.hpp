// Jobs as JSON and times as text, the same for the command line and the HTTP API.
#pragma once

#include "store/job.hpp"

#include <boost/json/object.hpp>

#include <string>

namespace jobhost::store {

// "2026-11-29T10:00:00Z", or "-" for an unset time.
std::string iso(TimePoint t);

// Every field of a job; the payload as parsed JSON when it parses.
boost::json::object to_json(const JobRecord& job);

// A result and a progress as the stores keep them (JSON text), and back. Reading never throws: what cannot be read
// comes back saying so.
std::string result_json(const JobResult& result);
JobResult result_from_json(std::string_view text);
std::string progress_json(const Progress& progress);
Progress progress_from_json(std::string_view text);

} // namespace jobhost::store
