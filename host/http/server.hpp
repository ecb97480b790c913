// The HTTP server: Boost.Beast on an io_context of its own, served by [http] threads threads, one strand per
// connection. A request's headers must arrive within header_timeout and a connection silent for idle_timeout between
// requests is closed; bodies and headers are bounded. The number of connections is bounded too, and when it is
// reached a connection that closes anyway (refused, or answered for a malformed request), else the one that has waited
// longest for its headers, is closed to make room, so that a crowd of slow or erring clients cannot shut out a health
// probe. A malformed request gets a 4xx and the connection is closed.
//
// Handlers that read the registry (whose plugins change on the host's thread) run on the host's io_context; the
// others (enqueue, jobs, dead letters, events, the dashboard's files) run on the server's threads, so that a store
// that takes its time never delays the host's timers. Handlers are in api.hpp.
#pragma once

#include "common/error.hpp"
#include "config/config.hpp"
#include "http/api.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace jobhost::http {

class Session;

class Server {
public:
    // `host_io` runs the handlers that must run on the host's thread (see above).
    Server(boost::asio::io_context& host_io, Services& services, const config::HttpSection& options);
    ~Server();

    // Binds, listens and starts the server's threads; returns the bound endpoint (port 0 picks a free port).
    core::Expected<boost::asio::ip::tcp::endpoint> start();
    // Stops the server's threads and closes the acceptor and every connection. Idempotent.
    void stop();

    // Connections open now (for tests and metrics).
    std::size_t connections() const;

private:
    friend class Session;
    void accept();
    void admit(std::shared_ptr<Session> session);
    void forget(Session* session);

    boost::asio::io_context io_; // first: destroyed last, after everything that belongs to it
    boost::asio::io_context& host_io_;
    Services& services_;
    config::HttpSection options_;
    boost::asio::ip::tcp::acceptor acceptor_;
    mutable std::mutex mutex_;
    std::map<Session*, std::shared_ptr<Session>> sessions_; // under mutex_
    std::vector<std::thread> threads_;
    std::atomic<bool> stopped_{false};
};

// Parses "host:port" (host numeric, "localhost" or empty for all addresses).
core::Expected<boost::asio::ip::tcp::endpoint> parse_listen(const std::string& listen);

// The bearer token for mutating requests from [http] token_file or the environment; empty when neither is set.
// Refuses a non-loopback listen address without a token, and a token shorter than 16 bytes there.
core::Expected<std::string> load_token(const config::HttpSection& options);
// The bearer token for reads from [http] read_token_file or the environment; empty when neither is set.
core::Expected<std::string> load_read_token(const config::HttpSection& options);

} // namespace jobhost::http
