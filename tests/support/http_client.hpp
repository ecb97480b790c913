// A raw HTTP/1.1 client over a plain socket, so tests can send exactly the bytes they mean, malformed ones included.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace jobhost::test {

struct HttpReply {
    int status = 0; // 0: no status line (the server closed or timed out)
    std::string head;
    std::string body;
    bool closed = false; // the server closed the connection
};

// Sends `raw` to 127.0.0.1:port and reads until the server closes or `limit` passes.
HttpReply exchange(int port, const std::string& raw, std::chrono::milliseconds limit = std::chrono::seconds(10));

// A well-formed request with Connection: close.
HttpReply request(int port, const std::string& method, const std::string& target, const std::string& body = {},
                  const std::vector<std::string>& headers = {});

// An open connection that sends nothing, to hold a slot.
class IdleConnection {
public:
    explicit IdleConnection(int port);
    ~IdleConnection();
    IdleConnection(const IdleConnection&) = delete;
    IdleConnection& operator=(const IdleConnection&) = delete;
    // Sends bytes and reads what comes back within `limit`.
    std::string send_and_read(const std::string& bytes, std::chrono::milliseconds limit);
    // Whether the server closed it within `limit`.
    bool closed_within(std::chrono::milliseconds limit);

private:
    int fd_ = -1;
};

} // namespace jobhost::test
