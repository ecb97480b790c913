// The HTTP API's handlers, apart from the socket code: a request in, a response out. JSON under /api/v1, plus
// /healthz, /readyz and /metrics (Prometheus text). Errors are JSON {"error": "..."} with the right status code.
#pragma once

#include "config/config.hpp"
#include "executor/executor.hpp"
#include "monitor/monitor.hpp"
#include "registry/registry.hpp"
#include "store/store.hpp"

#include <atomic>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace jobhost::http {

// What the API reads and acts on. Everything outlives the server.
struct Services {
    const config::Config& config;
    const registry::Registry& registry;
    executor::Executor& executor;
    store::JobStore& store;
    monitor::Monitor& monitor;
    store::TimePoint started;
    std::size_t plugins_skipped = 0;
    std::string token;      // bearer token for mutating requests (and reads); empty: none required
    std::string read_token; // bearer token for reads ([http] read_token_file); empty: reads are open
    const std::atomic<bool>* stopping = nullptr;             // the host is shutting down
    std::function<registry::PluginChanges()> reload_plugins; // rescans the plugin folder (on the io thread)
    // Turns a known type on or off, its schedule with it, until the next reload (on the io thread).
    std::function<void(const std::string& type, bool enabled)> set_enabled;
};

struct Request {
    std::string method;
    std::string target;
    std::string authorization;
    std::string content_type;
    std::string body;
};

struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

// Answers a request. Thread-safe for the requests that runs_on_host_thread() says need not run on the host's thread;
// the others (those that read the registry) must run there.
Response handle(const Request& request, Services& services);
bool runs_on_host_thread(const Request& request);

// The HTTP status for an error of this kind.
int status_for(core::Code code);

// The Prometheus text exposition of every metric.
std::string prometheus_text(Services& services);

// Gathers what the health rules need, timing the store; then evaluates them.
monitor::Health evaluate_health(Services& services);

} // namespace jobhost::http
