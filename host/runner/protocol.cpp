#include "runner/protocol.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace jobhost::runner::wire {

namespace {
void put(std::string& out, const void* p, std::size_t n) {
    out.append(static_cast<const char*>(p), n);
}
} // namespace

Writer& Writer::begin(Kind kind) {
    start_ = out_.size();
    std::uint32_t zero = 0;
    put(out_, &zero, sizeof zero);
    out_.push_back(static_cast<char>(kind));
    return *this;
}

Writer& Writer::u32(std::uint32_t v) {
    put(out_, &v, sizeof v);
    return *this;
}

Writer& Writer::i64(std::int64_t v) {
    put(out_, &v, sizeof v);
    return *this;
}

Writer& Writer::str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
    return *this;
}

void Writer::end() {
    auto len = static_cast<std::uint32_t>(out_.size() - start_ - sizeof(std::uint32_t));
    std::memcpy(out_.data() + start_, &len, sizeof len);
}

template <class T>
T Reader::get() {
    T v;
    if (rest_.size() < sizeof v) throw ProtocolError("a message ended early");
    std::memcpy(&v, rest_.data(), sizeof v);
    rest_.remove_prefix(sizeof v);
    return v;
}

std::uint32_t Reader::u32() {
    return get<std::uint32_t>();
}

std::int64_t Reader::i64() {
    return get<std::int64_t>();
}

std::string_view Reader::str() {
    std::uint32_t n = u32();
    if (rest_.size() < n) throw ProtocolError("a string runs past the end of its message");
    auto s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return s;
}

std::optional<Frame> FrameReader::next() {
    if (buf_.size() - pos_ < sizeof(std::uint32_t)) return std::nullopt;
    std::uint32_t len;
    std::memcpy(&len, buf_.data() + pos_, sizeof len);
    if (len == 0 || len > kMaxFrame) throw ProtocolError("a message has an impossible length " + std::to_string(len));
    if (buf_.size() - pos_ - sizeof len < len) return std::nullopt;
    Frame f{static_cast<Kind>(buf_[pos_ + sizeof len]), std::string_view(buf_.data() + pos_ + sizeof len + 1, len - 1)};
    pos_ += sizeof len + len;
    return f;
}

bool FrameReader::fill(int fd, bool dont_wait) {
    if (pos_ > 0 && pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    } else if (pos_ > (1u << 16)) {
        buf_.erase(0, pos_);
        pos_ = 0;
    }
    std::size_t old = buf_.size();
    buf_.resize(old + (1u << 16));
    for (;;) {
        auto n = ::recv(fd, buf_.data() + old, 1u << 16, dont_wait ? MSG_DONTWAIT : 0);
        if (n > 0) {
            buf_.resize(old + static_cast<std::size_t>(n));
            return true;
        }
        buf_.resize(old);
        if (n < 0 && errno == EINTR) {
            buf_.resize(old + (1u << 16));
            continue;
        }
        if (n < 0 && dont_wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n == 0) errno = 0;
        return false;
    }
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

} // namespace jobhost::runner::wire
