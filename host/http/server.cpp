#include "http/server.hpp"

#include "log/log.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace jobhost::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(Server& server, tcp::socket socket) : server_(server), stream_(std::move(socket)) {}

    void start(bool over_limit) {
        if (over_limit) {
            respond(error_response(503, "too many connections; try again later"), false);
            return;
        }
        read();
    }

    void close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.close();
    }

private:
    static Response error_response(int status, const std::string& message) {
        Response r;
        r.status = status;
        r.body = "{\"error\":\"" + message + "\"}\n";
        return r;
    }

    void read() {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(server_.options_.max_header));
        parser_->body_limit(static_cast<std::uint64_t>(server_.options_.max_body));
        stream_.expires_after(server_.options_.idle_timeout);
        bhttp::async_read(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted || ec == beast::error::timeout ||
            ec == asio::error::connection_reset || ec == asio::error::eof)
            return finish();
        if (ec == bhttp::error::body_limit)
            return respond(error_response(413, "the request body is larger than [http] max_body = " +
                                                   std::to_string(server_.options_.max_body) + " bytes"),
                           false);
        if (ec == bhttp::error::header_limit)
            return respond(error_response(431, "the request headers are larger than [http] max_header = " +
                                                   std::to_string(server_.options_.max_header) + " bytes"),
                           false);
        if (ec) return respond(error_response(400, "malformed request: " + ec.message()), false);

        auto& req = parser_->get();
        Request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        r.authorization = std::string(req[bhttp::field::authorization]);
        r.body = std::move(req.body());
        bool head = req.method() == bhttp::verb::head;
        Response res = handle(r, server_.services_);
        respond(std::move(res), req.keep_alive(), head);
    }

    void respond(Response r, bool keep_alive, bool head = false) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
        res->version(11);
        res->result(static_cast<unsigned>(r.status));
        res->set(bhttp::field::server, "jobhost");
        res->set(bhttp::field::content_type, r.content_type);
        for (const auto& [k, v] : r.headers) res->set(k, v);
        res->keep_alive(keep_alive);
        std::size_t length = r.body.size();
        if (!head) res->body() = std::move(r.body);
        res->content_length(length);
        stream_.expires_after(server_.options_.idle_timeout);
        bhttp::async_write(stream_, *res,
                           [self = shared_from_this(), res, keep_alive](beast::error_code ec, std::size_t) {
                               if (ec || !keep_alive) return self->finish();
                               self->read();
                           });
    }

    void finish() {
        close();
        server_.sessions_.erase(shared_from_this());
    }

    Server& server_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
};

Server::Server(asio::io_context& io, Services& services, const config::HttpSection& options)
    : io_(io), services_(services), options_(options), acceptor_(io) {}

Server::~Server() {
    stop();
}

core::Expected<tcp::endpoint> parse_listen(const std::string& listen) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) return core::Error{"[http] listen must be host:port, got '" + listen + "'"};
    std::string host = listen.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    auto port = static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)));
    if (host.empty() || host == "*") return tcp::endpoint(tcp::v4(), port);
    if (host == "localhost") return tcp::endpoint(asio::ip::address_v4::loopback(), port);
    beast::error_code ec;
    auto addr = asio::ip::make_address(host, ec);
    if (ec) return core::Error{"[http] listen: '" + host + "' is not an IP address (use 127.0.0.1, ::1 or 0.0.0.0)"};
    return tcp::endpoint(addr, port);
}

core::Expected<std::string> load_token(const config::HttpSection& o) {
    std::string token;
    if (o.token_file) {
        std::ifstream in(*o.token_file);
        if (!in) return core::Error{"[http] token_file " + o.token_file->string() + " cannot be read"};
        std::stringstream s;
        s << in.rdbuf();
        token = s.str();
        while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
            token.pop_back();
        if (token.empty()) return core::Error{"[http] token_file " + o.token_file->string() + " is empty"};
    } else if (const char* env = std::getenv(o.token_env.c_str()); env && *env) {
        token = env;
    }
    auto ep = parse_listen(o.listen);
    if (!ep) return ep.error();
    if (!ep->address().is_loopback() && token.empty())
        return core::Error{"[http] listen = \"" + o.listen +
                           "\" is reachable from other machines, so mutating requests need a bearer token: set [http] "
                           "token_file or the environment variable " +
                           o.token_env + ", or listen on 127.0.0.1"};
    return token;
}

core::Expected<tcp::endpoint> Server::start() {
    auto ep = parse_listen(options_.listen);
    if (!ep) return ep.error();
    beast::error_code ec;
    acceptor_.open(ep->protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(*ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return core::Error{"cannot listen on " + options_.listen + ": " + ec.message() + " ([http] listen)"};
    accept();
    return acceptor_.local_endpoint();
}

void Server::accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (stopped_ || ec == asio::error::operation_aborted) return;
        if (!ec) {
            bool over = sessions_.size() >= static_cast<std::size_t>(options_.max_connections);
            auto s = std::make_shared<Session>(*this, std::move(socket));
            sessions_.insert(s);
            s->start(over);
        }
        accept();
    });
}

void Server::stop() {
    if (stopped_) return;
    stopped_ = true;
    beast::error_code ec;
    acceptor_.close(ec);
    auto sessions = sessions_;
    for (const auto& s : sessions) s->close();
    sessions_.clear();
}

} // namespace jobhost::http
