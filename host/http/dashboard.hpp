// The web dashboard's files (HTML, CSS, JavaScript from host/http/dashboard/), compiled into the binary: served at
// / and /ui/..., with no build step and nothing fetched from the network. The pages read the JSON API.
#pragma once

#include "http/api.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace jobhost::http {

// Whether `path` names one of the dashboard's files (served without a token: they hold no data).
bool is_dashboard_asset(std::string_view path);

// The file for `path` (GET or HEAD), or nullopt when `path` is not the dashboard's.
std::optional<Response> dashboard_asset(std::string_view path, const std::string& method);

} // namespace jobhost::http
