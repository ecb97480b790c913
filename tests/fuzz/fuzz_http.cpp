// Raw HTTP request bytes through Boost.Beast's parser with the server's limits, then the API's router and handlers
// against an in-memory host (no plugins, the memory store). Properties: no exception escapes, every answer has a
// status from 200 to 599, a 5xx is 500 or 503, and no source path or file name of the host's reaches the client
// (an answer may quote what the request said).
#include "http/api.hpp"
#include "store/memory_store.hpp"
#include "fuzz_check.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>

#include <cstdint>
#include <string>

namespace {

struct World {
    jobhost::config::Config config;
    jobhost::registry::Registry registry;
    jobhost::store::MemoryStore store;
    boost::asio::io_context io;
    jobhost::executor::Executor executor{io, registry, store, [] {
                                             jobhost::executor::ExecutorOptions o;
                                             o.workers = 1;
                                             return o;
                                         }()};
    jobhost::monitor::Monitor monitor;
    jobhost::http::Services services{config, registry, executor, store, monitor, jobhost::store::Clock::now()};
};

World& world() {
    static World* w = new World; // never destroyed: the fuzzer exits without unwinding
    return *w;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace bhttp = boost::beast::http;
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    while (!bytes.empty()) {
        bhttp::request_parser<bhttp::string_body> parser;
        parser.header_limit(8192);
        parser.body_limit(65536);
        parser.eager(true);
        boost::beast::error_code ec;
        auto used = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
        if (!ec && !parser.is_done()) parser.put_eof(ec);
        if (ec || !parser.is_done()) return 0; // the server answers 400 for these itself
        auto& req = parser.get();
        jobhost::http::Request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        r.authorization = std::string(req[bhttp::field::authorization]);
        r.content_type = std::string(req[bhttp::field::content_type]);
        r.body = req.body();
        auto res = jobhost::http::handle(r, world().services);
        FUZZ_CHECK(res.status >= 200 && res.status <= 599, "status " + std::to_string(res.status));
        FUZZ_CHECK(res.status < 500 || res.status == 500 || res.status == 503, "status " + std::to_string(res.status));
        // an answer may quote the request (the path it does not know), never anything of the host's own
        auto leaked = [&](std::string_view what) {
            return res.body.find(what) != std::string::npos &&
                   std::string_view(reinterpret_cast<const char*>(data), size).find(what) == std::string_view::npos;
        };
        FUZZ_CHECK(!leaked("/usr/include"), "a source path in: " + res.body);
        FUZZ_CHECK(!leaked(".hpp"), "a header name in: " + res.body);
        FUZZ_CHECK(!leaked(".cpp"), "a source name in: " + res.body);
        if (used == 0 || used >= bytes.size()) break;
        bytes.remove_prefix(used); // pipelined requests
    }
    return 0;
}
