#include "http/server.hpp"

#include "log/log.hpp"

#include <boost/asio/post.hpp>
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
using SteadyClock = std::chrono::steady_clock;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(Server& server, tcp::socket socket) : server_(server), stream_(std::move(socket)) {}

    void start(bool over_limit) {
        if (over_limit) return refuse(error_response(503, "too many connections; try again later"));
        read();
    }

    // From any thread: closes the connection on its own strand.
    void close_soon() {
        asio::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
    }

    // Only while no thread runs the server (after stop), or on the strand.
    void close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.close();
    }

    // The order in which a full server closes connections to make room (lowest first): kClosing for a connection
    // that is being refused or answered for a malformed request and will close anyway, else since when it has been
    // waiting for a request's headers (idle between requests included); zero while a request is being read, handled
    // or answered, which is never cut.
    static constexpr std::int64_t kClosing = 1;
    std::int64_t waiting_since() const noexcept { return waiting_since_.load(std::memory_order_relaxed); }
    void mark_closing() noexcept { waiting_since_.store(kClosing, std::memory_order_relaxed); }

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
        waiting_since_.store(SteadyClock::now().time_since_epoch().count(), std::memory_order_relaxed);
        if (buffer_.size() > 0) return read_header();
        // Idle until the first byte of the next request (idle_timeout), then header_timeout for the headers.
        stream_.expires_after(server_.options_.idle_timeout);
        stream_.async_read_some(buffer_.prepare(4096),
                                [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                                    if (ec) return self->on_read(ec);
                                    self->buffer_.commit(n);
                                    self->read_header();
                                });
    }

    void read_header() {
        stream_.expires_after(std::min(server_.options_.header_timeout, server_.options_.idle_timeout));
        bhttp::async_read_header(
            stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
                if (ec) return self->on_read(ec);
                self->waiting_since_.store(0, std::memory_order_relaxed);
                if (self->parser_->is_done()) return self->on_read(ec);
                self->stream_.expires_after(self->server_.options_.idle_timeout);
                bhttp::async_read(self->stream_, self->buffer_, *self->parser_,
                                  [self](beast::error_code ec2, std::size_t) { self->on_read(ec2); });
            });
    }

    void on_read(beast::error_code ec) {
        if (ec)
            mark_closing(); // whatever the error, this connection closes now
        else
            waiting_since_.store(0, std::memory_order_relaxed);
        if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted || ec == beast::error::timeout ||
            ec == asio::error::connection_reset || ec == asio::error::eof || ec == asio::error::bad_descriptor)
            return finish();
        if (ec == bhttp::error::body_limit)
            return refuse(error_response(413, "the request body is larger than [http] max_body = " +
                                                  std::to_string(server_.options_.max_body) + " bytes"));
        if (ec == bhttp::error::header_limit)
            return refuse(error_response(431, "the request headers are larger than [http] max_header = " +
                                                  std::to_string(server_.options_.max_header) + " bytes"));
        if (ec) return refuse(error_response(400, "malformed request: " + ec.message()));

        auto& req = parser_->get();
        Request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        r.authorization = std::string(req[bhttp::field::authorization]);
        r.content_type = std::string(req[bhttp::field::content_type]);
        r.body = std::move(req.body());
        bool head = req.method() == bhttp::verb::head;
        bool keep_alive = req.keep_alive();
        if (!runs_on_host_thread(r)) return respond(handle(r, server_.services_), keep_alive, head);
        // The registry is the host thread's: answer there, then write the response back on this strand.
        std::weak_ptr<Session> weak = shared_from_this();
        asio::post(server_.host_io_, [weak, r = std::move(r), keep_alive, head, &services = server_.services_] {
            auto self = weak.lock();
            if (!self) return;
            auto res = std::make_shared<Response>(handle(r, services));
            asio::post(self->stream_.get_executor(),
                       [self, res, keep_alive, head] { self->respond(std::move(*res), keep_alive, head); });
        });
    }

    // Answers with an error and closes; until it has closed, this connection is the first to make room for others.
    void refuse(Response r) {
        mark_closing();
        respond(std::move(r), false);
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
                               if (ec || !keep_alive) {
                                   self->mark_closing();
                                   return self->finish();
                               }
                               self->read();
                           });
    }

    void finish() {
        close();
        server_.forget(this);
    }

    Server& server_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    std::atomic<std::int64_t> waiting_since_{0};
};

Server::Server(asio::io_context& host_io, Services& services, const config::HttpSection& options)
    : host_io_(host_io), services_(services), options_(options), acceptor_(asio::make_strand(io_)) {}

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

namespace {

constexpr std::size_t kMinTokenBytes = 16;

core::Expected<std::string> read_token(const std::optional<std::filesystem::path>& file, const std::string& env,
                                       const char* key) {
    std::string token;
    if (file) {
        std::ifstream in(*file);
        if (!in) return core::Error{std::string("[http] ") + key + " " + file->string() + " cannot be read"};
        std::stringstream s;
        s << in.rdbuf();
        token = s.str();
        while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
            token.pop_back();
        if (token.empty()) return core::Error{std::string("[http] ") + key + " " + file->string() + " is empty"};
    } else if (const char* e = std::getenv(env.c_str()); e && *e) {
        token = e;
    }
    return token;
}

} // namespace

core::Expected<std::string> load_token(const config::HttpSection& o) {
    auto token = read_token(o.token_file, o.token_env, "token_file");
    if (!token) return token;
    auto ep = parse_listen(o.listen);
    if (!ep) return ep.error();
    if (!ep->address().is_loopback() && token->empty())
        return core::Error{"[http] listen = \"" + o.listen +
                           "\" is reachable from other machines, so mutating requests need a bearer token: set [http] "
                           "token_file or the environment variable " +
                           o.token_env + ", or listen on 127.0.0.1"};
    if (!ep->address().is_loopback() && token->size() < kMinTokenBytes)
        return core::Error{"[http] listen = \"" + o.listen + "\" is reachable from other machines, and its token has " +
                           std::to_string(token->size()) + " byte(s): use at least " + std::to_string(kMinTokenBytes) +
                           " (for example: head -c 24 /dev/urandom | base64)"};
    return token;
}

core::Expected<std::string> load_read_token(const config::HttpSection& o) {
    return read_token(o.read_token_file, o.read_token_env, "read_token_file");
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
    auto bound = acceptor_.local_endpoint();
    accept();
    for (std::int64_t i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { io_.run(); });
    return bound;
}

void Server::accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
        if (stopped_ || ec == asio::error::operation_aborted) return;
        if (!ec) admit(std::make_shared<Session>(*this, std::move(socket)));
        accept();
    });
}

void Server::admit(std::shared_ptr<Session> session) {
    bool over = false;
    std::shared_ptr<Session> evicted;
    {
        std::lock_guard lock(mutex_);
        if (sessions_.size() >= static_cast<std::size_t>(options_.max_connections)) {
            // Make room by closing a connection that is closing anyway (refused, or answered for a malformed
            // request), else the one that has waited longest for its headers; a request that is being handled is
            // never cut. Only when every connection is busy is the new one refused, and it closes first in turn.
            std::int64_t oldest = 0;
            for (const auto& [p, s] : sessions_) {
                auto since = s->waiting_since();
                if (since != 0 && (oldest == 0 || since < oldest)) {
                    oldest = since;
                    evicted = s;
                }
            }
            if (evicted)
                sessions_.erase(evicted.get());
            else
                over = true;
        }
        if (over) session->mark_closing();
        sessions_.emplace(session.get(), session);
    }
    if (evicted) evicted->close_soon();
    session->start(over);
}

void Server::forget(Session* session) {
    std::lock_guard lock(mutex_);
    sessions_.erase(session);
}

std::size_t Server::connections() const {
    std::lock_guard lock(mutex_);
    return sessions_.size();
}

void Server::stop() {
    if (stopped_.exchange(true)) return;
    io_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // No thread runs the server's io_context now: close everything directly.
    beast::error_code ec;
    acceptor_.close(ec);
    std::map<Session*, std::shared_ptr<Session>> sessions;
    {
        std::lock_guard lock(mutex_);
        sessions.swap(sessions_);
    }
    for (const auto& [p, s] : sessions) s->close();
}

} // namespace jobhost::http
