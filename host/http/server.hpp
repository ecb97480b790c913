// The HTTP server: Boost.Beast on the host's io_context. Each connection reads one request at a time with limits on
// header and body size and an idle deadline (a slow client is cut off), and the number of connections is bounded;
// a malformed request gets a 4xx and the connection is closed. Handlers are in api.hpp.
#pragma once

#include "common/error.hpp"
#include "config/config.hpp"
#include "http/api.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <set>

namespace jobhost::http {

class Session;

class Server {
public:
    Server(boost::asio::io_context& io, Services& services, const config::HttpSection& options);
    ~Server();

    // Binds and listens; returns the bound endpoint (port 0 picks a free port). Call from the io thread or before
    // it runs.
    core::Expected<boost::asio::ip::tcp::endpoint> start();
    // Closes the acceptor and every connection. Call from the io thread or after it stopped.
    void stop();

private:
    friend class Session;
    void accept();

    boost::asio::io_context& io_;
    Services& services_;
    config::HttpSection options_;
    boost::asio::ip::tcp::acceptor acceptor_;
    std::set<std::shared_ptr<Session>> sessions_;
    bool stopped_ = false;
};

// Parses "host:port" (host numeric, "localhost" or empty for all addresses).
core::Expected<boost::asio::ip::tcp::endpoint> parse_listen(const std::string& listen);

// The bearer token from [http] token_file or the environment; empty when neither is set. Refuses a non-loopback
// listen address without a token.
core::Expected<std::string> load_token(const config::HttpSection& options);

} // namespace jobhost::http
