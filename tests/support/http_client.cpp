#include "support/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace jobhost::test {

namespace {

int connect_to(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot connect to port " + std::to_string(port));
    }
    return fd;
}

void send_all(int fd, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return; // the server may close early (413, 431): what it answered is still readable
        sent += static_cast<std::size_t>(n);
    }
}

// Reads until EOF or the limit; returns whether EOF was seen.
bool read_all(int fd, std::string& out, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    char buf[65536];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return true;
        out.append(buf, static_cast<std::size_t>(n));
    }
}

HttpReply parse(const std::string& raw, bool closed) {
    HttpReply r;
    r.closed = closed;
    if (raw.rfind("HTTP/1.", 0) == 0 && raw.size() > 12) r.status = std::stoi(raw.substr(9, 3));
    auto split = raw.find("\r\n\r\n");
    r.head = raw.substr(0, split);
    if (split != std::string::npos) r.body = raw.substr(split + 4);
    return r;
}

} // namespace

HttpReply exchange(int port, const std::string& raw, std::chrono::milliseconds limit) {
    int fd = connect_to(port);
    send_all(fd, raw);
    std::string out;
    bool closed = read_all(fd, out, limit);
    ::close(fd);
    return parse(out, closed);
}

HttpReply request(int port, const std::string& method, const std::string& target, const std::string& body,
                  const std::vector<std::string>& headers) {
    std::string raw = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    for (const auto& h : headers) raw += h + "\r\n";
    if (!body.empty() || method == "POST")
        raw += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    raw += "\r\n" + body;
    return exchange(port, raw);
}

IdleConnection::IdleConnection(int port) : fd_(connect_to(port)) {}
IdleConnection::~IdleConnection() {
    ::close(fd_);
}

std::string IdleConnection::send_and_read(const std::string& bytes, std::chrono::milliseconds limit) {
    send_all(fd_, bytes);
    std::string out;
    read_all(fd_, out, limit);
    return out;
}

bool IdleConnection::closed_within(std::chrono::milliseconds limit) {
    std::string out;
    return read_all(fd_, out, limit);
}

} // namespace jobhost::test
