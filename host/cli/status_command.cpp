// jobhost status: asks a running host over HTTP and prints its health, alerts and a table of job types.
#include "cli/commands.hpp"
#include "http/server.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace jobhost::cli {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using tcp = boost::asio::ip::tcp;

namespace {

std::string fmt(double v, int precision = 1) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(precision) << v;
    return o.str();
}

// Where a running host listens, from --url ("http://HOST:PORT"). False, with the message printed, when it is not
// an http:// address.
struct Endpoint {
    std::string hostport, host, port;
};
bool parse_url(const std::string& url, Endpoint& e) {
    std::string rest = url;
    if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else if (url.find("://") != std::string::npos) {
        std::cerr << "jobhost: --url must be http://HOST:PORT or HOST:PORT, got '" << url << "'\n";
        return false;
    }
    e.hostport = rest.substr(0, rest.find('/'));
    auto colon = e.hostport.rfind(':');
    e.host = colon == std::string::npos ? e.hostport : e.hostport.substr(0, colon);
    e.port = colon == std::string::npos ? "80" : e.hostport.substr(colon + 1);
    return true;
}

} // namespace

int status_command(const CommonOptions& o, const std::string& url_in) {
    config::Config config;
    if (int code = load_config(o, config); code >= 0) return code;
    std::string url = url_in.empty() ? "http://" + config.http.listen : url_in;
    // a host with [http] read_token_file wants a token for reads: the read token, else the mutating one
    std::string token;
    if (auto t = http::load_read_token(config.http); t && !t->empty()) token = *t;
    if (token.empty())
        if (auto t = http::load_token(config.http)) token = *t;
    Endpoint ep;
    if (!parse_url(url, ep)) return kExitUsage;
    const auto& [hostport, host, port] = ep;
    json::value doc;
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        beast::tcp_stream stream(io);
        stream.expires_after(std::chrono::seconds(5));
        stream.connect(resolver.resolve(host, port));
        bhttp::request<bhttp::empty_body> req{bhttp::verb::get, "/api/v1/status", 11};
        req.set(bhttp::field::host, hostport);
        if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
        bhttp::write(stream, req);
        beast::flat_buffer buffer;
        bhttp::response<bhttp::string_body> res;
        bhttp::read(stream, buffer, res);
        if (res.result_int() != 200) {
            std::cerr << "jobhost: " << url << "/api/v1/status answered " << res.result_int() << ": " << res.body();
            return kExitRuntime;
        }
        doc = json::parse(res.body());
    } catch (const boost::system::system_error& e) { // its what() names a Boost source file: say only the cause
        std::cerr << "jobhost: cannot reach a host at " << url << " (" << e.code().message()
                  << "); is 'jobhost run' serving there? see [http] listen\n";
        return kExitRuntime;
    } catch (const std::exception& e) {
        std::cerr << "jobhost: cannot read the answer of the host at " << url << " (" << e.what() << ")\n";
        return kExitRuntime;
    }
    if (o.json) {
        std::cout << json::serialize(doc) << "\n";
        return kExitOk;
    }
    const auto& s = doc.as_object();
    std::cout << "health: " << std::string(s.at("health").as_string()) << "   uptime "
              << fmt(s.at("uptime_seconds").to_number<double>(), 0) << "s   workers "
              << s.at("workers_busy").to_number<std::int64_t>() << "/" << s.at("workers").to_number<std::int64_t>()
              << " busy   " << fmt(s.at("jobs_per_second").to_number<double>(), 2) << " jobs/s (last minute)\n";
    const auto& alerts = s.at("alerts").as_array();
    std::cout << "alerts: " << alerts.size() << "\n";
    for (const auto& a : alerts)
        std::cout << "  [" << std::string(a.as_object().at("severity").as_string()) << "] "
                  << std::string(a.as_object().at("message").as_string()) << "\n";
    // the type column as wide as the longest name (a column never runs into the next)
    int type_width = 6;
    for (const auto& tv : s.at("types").as_array())
        type_width = std::max(type_width, static_cast<int>(tv.as_object().at("type").as_string().size()) + 2);
    std::cout << "\n"
              << std::left << std::setw(type_width) << "TYPE" << std::right << std::setw(8) << "OK" << std::setw(8)
              << "FAILED" << std::setw(7) << "DEAD" << std::setw(6) << "DLQ" << std::setw(8) << "RUNNING"
              << std::setw(7) << "READY" << std::setw(7) << "SCHED" << std::setw(10) << "WAIT p50" << std::setw(10)
              << "RUN p50" << std::setw(10) << "RUN p99"
              << "  LAST ERROR\n";
    for (const auto& tv : s.at("types").as_array()) {
        const auto& t = tv.as_object();
        const auto& c = t.at("counts").as_object();
        const auto& q = t.at("queue").as_object();
        auto ms = [](const json::value& v, const char* key) {
            return fmt(v.as_object().at(key).to_number<double>()) + "ms";
        };
        std::string err(t.at("last_error").as_string());
        if (auto nl = err.find('\n'); nl != std::string::npos) err = err.substr(0, nl);
        if (err.size() > 40) err = err.substr(0, 37) + "...";
        std::cout << std::left << std::setw(type_width) << std::string(t.at("type").as_string()) << std::right
                  << std::setw(8) << c.at("succeeded").to_number<std::int64_t>() << std::setw(8)
                  << c.at("failed").to_number<std::int64_t>() << std::setw(7)
                  << c.at("dead_lettered").to_number<std::int64_t>() << std::setw(6)
                  << q.at("dead").to_number<std::int64_t>() << std::setw(8) << c.at("running").to_number<std::int64_t>()
                  << std::setw(7) << q.at("ready").to_number<std::int64_t>() << std::setw(7)
                  << q.at("scheduled").to_number<std::int64_t>() << std::setw(10) << ms(t.at("wait"), "p50_ms")
                  << std::setw(10) << ms(t.at("run"), "p50_ms") << std::setw(10) << ms(t.at("run"), "p99_ms") << "  "
                  << err << "\n";
    }
    return kExitOk;
}

} // namespace jobhost::cli

namespace jobhost::cli {

int reload_command(const CommonOptions& o, const std::string& url_in) {
    config::Config config;
    if (int code = load_config(o, config); code >= 0) return code;
    std::string url = url_in.empty() ? "http://" + config.http.listen : url_in;
    Endpoint ep;
    if (!parse_url(url, ep)) return kExitUsage;
    const auto& [hostport, host, port] = ep;
    std::string token;
    if (auto t = http::load_token(config.http)) token = *t;
    try {
        boost::asio::io_context io;
        tcp::resolver resolver(io);
        beast::tcp_stream stream(io);
        stream.expires_after(std::chrono::seconds(60));
        stream.connect(resolver.resolve(host, port));
        bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/api/v1/plugins/reload", 11};
        req.set(bhttp::field::host, hostport);
        if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
        req.prepare_payload();
        bhttp::write(stream, req);
        beast::flat_buffer buffer;
        bhttp::response<bhttp::string_body> res;
        bhttp::read(stream, buffer, res);
        if (res.result_int() != 200) {
            std::cerr << "jobhost: " << url << " answered " << res.result_int() << ": " << res.body() << "\n";
            return kExitRuntime;
        }
        auto doc = json::parse(res.body()).as_object();
        std::size_t n = 0;
        for (const char* key : {"added", "replaced", "removed", "refused"}) {
            const auto& list = doc.at(key).as_array();
            for (const auto& v : list) std::cout << key << "  " << v.as_string().c_str() << "\n";
            n += list.size();
        }
        if (n == 0) std::cout << "no change in the plugin folder\n";
        return doc.at("refused").as_array().empty() ? kExitOk : kExitRuntime;
    } catch (const boost::system::system_error& e) {
        std::cerr << "jobhost: cannot reach a host at " << url << " (" << e.code().message()
                  << "); is it running with [http] enabled? Or send it SIGHUP\n";
        return kExitRuntime;
    } catch (const std::exception& e) {
        std::cerr << "jobhost: cannot read the answer of the host at " << url << " (" << e.what() << ")\n";
        return kExitRuntime;
    }
}

} // namespace jobhost::cli
