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

} // namespace jobhost::store
