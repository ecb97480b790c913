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

void Reader::end() const {
    if (!rest_.empty())
        throw ProtocolError("a message has " + std::to_string(rest_.size()) + " bytes beyond its last field");
}

InitMessage decode_init(std::string_view body) {
    Reader r(body);
    InitMessage m;
    m.type = r.str();
    m.settings_json = r.str();
    m.library = r.str();
    r.end();
    return m;
}

RunMessage decode_run(std::string_view body) {
    Reader r(body);
    RunMessage m;
    std::uint32_t count = r.u32();
    m.deadline_unix_ms = r.i64();
    constexpr std::size_t kLeast = 3 * sizeof(std::uint32_t) + 2 * sizeof(std::uint32_t); // three sizes, two numbers
    if (count > r.left() / kLeast)
        throw ProtocolError("a run of " + std::to_string(count) + " jobs in a message of " +
                            std::to_string(body.size()) + " bytes");
    m.jobs.resize(count);
    for (auto& j : m.jobs) {
        j.id = r.str();
        j.type = r.str();
        j.payload = r.str();
        j.attempt = r.u32();
        j.max_retries = r.u32();
    }
    r.end();
    return m;
}

EnqueueReplyMessage decode_enqueue_reply(std::string_view body) {
    Reader r(body);
    EnqueueReplyMessage m;
    m.status = r.i32();
    m.id = r.str();
    m.error = r.str();
    r.end();
    return m;
}

InitFailedMessage decode_init_failed(std::string_view body) {
    Reader r(body);
    InitFailedMessage m{r.str()};
    r.end();
    return m;
}

namespace {

LogMessage decode_log(std::string_view body) {
    Reader r(body);
    LogMessage m;
    m.job = r.i32();
    m.level = r.i32();
    m.message = r.str();
    r.end();
    return m;
}

void check_index(std::int32_t job, std::size_t jobs, bool type_allowed) {
    if (type_allowed && job == -1) return;
    if (job < 0 || static_cast<std::size_t>(job) >= jobs)
        throw ProtocolError("a job index is out of range (" + std::to_string(job) + " of " + std::to_string(jobs) +
                            ")");
}

void empty(std::string_view body) {
    Reader(body).end();
}

} // namespace

RunReport decode_run_report(const Frame& f, std::size_t jobs) {
    Reader r(f.body);
    switch (f.kind) {
    case kDone: empty(f.body); return DoneMessage{};
    case kLog: {
        auto m = decode_log(f.body);
        check_index(m.job, jobs, true);
        return m;
    }
    case kProgress: {
        ProgressMessage m;
        m.job = r.i32();
        m.percent = r.i32();
        m.message = r.str();
        r.end();
        check_index(m.job, jobs, false);
        return m;
    }
    case kResult: {
        ResultMessage m;
        m.job = r.i32();
        m.status = r.i32();
        m.flags = r.u32();
        m.message = r.str();
        m.output = r.str();
        r.end();
        check_index(m.job, jobs, false);
        return m;
    }
    case kEnqueue: {
        EnqueueMessage m;
        m.job = r.i32();
        m.type = r.str();
        m.payload = r.str();
        m.priority = r.i32();
        m.delay_ms = r.i64();
        m.run_at_unix_ms = r.i64();
        m.unique_key = r.str();
        r.end();
        check_index(m.job, jobs, false);
        return m;
    }
    default: throw ProtocolError("unexpected message kind " + std::to_string(int(f.kind)) + " during a run");
    }
}

StartReport decode_start_report(const Frame& f) {
    switch (f.kind) {
    case kReady: empty(f.body); return ReadyMessage{};
    case kInitFailed: return decode_init_failed(f.body);
    case kLog: {
        auto m = decode_log(f.body);
        check_index(m.job, 0, true);
        return m;
    }
    default: throw ProtocolError("unexpected message kind " + std::to_string(int(f.kind)) + " while starting");
    }
}

void encode(std::string& out, const InitMessage& m) {
    Writer(out).begin(kInit).str(m.type).str(m.settings_json).str(m.library).end();
}

void encode(std::string& out, const RunMessage& m) {
    Writer w(out);
    w.begin(kRun).u32(static_cast<std::uint32_t>(m.jobs.size())).i64(m.deadline_unix_ms);
    for (const auto& j : m.jobs) w.str(j.id).str(j.type).str(j.payload).u32(j.attempt).u32(j.max_retries);
    w.end();
}

void encode(std::string& out, const EnqueueReplyMessage& m) {
    Writer(out).begin(kEnqueueReply).i32(m.status).str(m.id).str(m.error).end();
}

void encode(std::string& out, const LogMessage& m) {
    Writer(out).begin(kLog).i32(m.job).i32(m.level).str(m.message).end();
}

void encode(std::string& out, const ProgressMessage& m) {
    Writer(out).begin(kProgress).i32(m.job).i32(m.percent).str(m.message).end();
}

void encode(std::string& out, const ResultMessage& m) {
    Writer(out).begin(kResult).i32(m.job).i32(m.status).u32(m.flags).str(m.message).str(m.output).end();
}

void encode(std::string& out, const EnqueueMessage& m) {
    Writer(out)
        .begin(kEnqueue)
        .i32(m.job)
        .str(m.type)
        .str(m.payload)
        .i32(m.priority)
        .i64(m.delay_ms)
        .i64(m.run_at_unix_ms)
        .str(m.unique_key)
        .end();
}

void encode(std::string& out, const DoneMessage&) {
    Writer(out).begin(kDone).end();
}

void encode(std::string& out, const InitFailedMessage& m) {
    Writer(out).begin(kInitFailed).str(m.message).end();
}

void encode(std::string& out, const ReadyMessage&) {
    Writer(out).begin(kReady).end();
}

void FrameReader::feed(std::string_view bytes) {
    if (pos_ > 0 && pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    }
    buf_.append(bytes);
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
