// The messages between the host and a `jobhost worker` process, over a stream socket: frames of
// [u32 length][u8 kind][body], little-endian, strings as [u32 size][bytes]. One run is one kRun frame carrying every
// job of the batch; the worker answers with buffered kLog/kProgress/kResult frames and one kDone, written together,
// so a run of no-op jobs costs one round trip. Only kEnqueue waits for an answer (kEnqueueReply).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace jobhost::runner::wire {

enum Kind : std::uint8_t {
    // host -> worker
    kInit = 1,         // type, settings_json, library path
    kRun = 2,          // u32 count, i64 deadline_unix_ms, then per job: id, type, payload, u32 attempt, u32 max_retries
    kCancel = 3,       // the current run should stop
    kEnqueueReply = 4, // i32 status, id, error
    // worker -> host
    kReady = 10,      // the task was created; runs may come
    kInitFailed = 11, // message
    kLog = 12,        // i32 job index (-1: the type), i32 level, message
    kProgress = 13,   // i32 job index, i32 percent, message
    kEnqueue = 14,    // i32 job index, type, payload, i32 priority, i64 delay_ms, i64 run_at_unix_ms, unique_key
    kResult = 15,     // i32 job index, i32 status, u32 flags, message, output
    kDone = 16,       // the run returned
};

constexpr std::uint32_t kMaxFrame = 256u << 20; // a larger length is a damaged stream

struct ProtocolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Appends one frame to `out`: begin(), put...(), end().
class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}
    Writer& begin(Kind kind);
    Writer& u32(std::uint32_t v);
    Writer& i32(std::int32_t v) { return u32(static_cast<std::uint32_t>(v)); }
    Writer& i64(std::int64_t v);
    Writer& str(std::string_view s);
    void end();

private:
    std::string& out_;
    std::size_t start_ = 0;
};

// Reads one frame's body; throws ProtocolError when it runs short.
class Reader {
public:
    explicit Reader(std::string_view body) : rest_(body) {}
    std::uint32_t u32();
    std::int32_t i32() { return static_cast<std::int32_t>(u32()); }
    std::int64_t i64();
    std::string_view str();

private:
    template <class T>
    T get();
    std::string_view rest_;
};

struct Frame {
    Kind kind;
    std::string_view body; // valid until the next read
};

// Buffers what a socket delivers and cuts it into frames.
class FrameReader {
public:
    // The next whole frame already buffered, if any. Throws ProtocolError on a damaged length.
    std::optional<Frame> next();
    // Reads what the socket has (blocking unless `dont_wait`). Returns false at end of stream or on an error
    // (errno kept); with dont_wait, true when nothing was there.
    bool fill(int fd, bool dont_wait = false);

private:
    std::string buf_;
    std::size_t pos_ = 0;
};

// Writes all of `data`, retrying short writes and EINTR. False on error (the peer is gone).
bool send_all(int fd, std::string_view data);

} // namespace jobhost::runner::wire
