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
#include <variant>
#include <vector>

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
    std::size_t left() const noexcept { return rest_.size(); }
    // Throws ProtocolError when bytes are left over: a message is exactly its fields.
    void end() const;

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
    // Appends bytes as if the socket had delivered them.
    void feed(std::string_view bytes);

private:
    std::string buf_;
    std::size_t pos_ = 0;
};

// ---- the messages, decoded (string views point into the frame's body) ----
// Every decode_* throws ProtocolError when the body is not exactly the message's fields; encode(out, m) appends the
// frame that decodes to m. Both sides of the socket use these, and tests/fuzz/fuzz_protocol.cpp holds them to it.

struct InitMessage { // host -> worker
    std::string_view type, settings_json, library;
};
struct RunJob {
    std::string_view id, type, payload;
    std::uint32_t attempt = 0, max_retries = 0;
};
struct RunMessage { // host -> worker
    std::int64_t deadline_unix_ms = 0;
    std::vector<RunJob> jobs;
};
struct EnqueueReplyMessage { // host -> worker
    std::int32_t status = 0;
    std::string_view id, error;
};
struct LogMessage { // worker -> host; job -1: the type
    std::int32_t job = -1, level = 0;
    std::string_view message;
};
struct ProgressMessage {
    std::int32_t job = 0, percent = 0;
    std::string_view message;
};
struct ResultMessage {
    std::int32_t job = 0, status = 0;
    std::uint32_t flags = 0;
    std::string_view message, output;
};
struct EnqueueMessage {
    std::int32_t job = 0;
    std::string_view type, payload;
    std::int32_t priority = -1;
    std::int64_t delay_ms = 0, run_at_unix_ms = 0;
    std::string_view unique_key;
};
struct DoneMessage {};
struct InitFailedMessage {
    std::string_view message;
};
struct ReadyMessage {};

InitMessage decode_init(std::string_view body);
RunMessage decode_run(std::string_view body);
EnqueueReplyMessage decode_enqueue_reply(std::string_view body);
InitFailedMessage decode_init_failed(std::string_view body);

// What a worker may send during a run of `jobs` jobs; a job index outside 0..jobs-1 (or -1 for a log line) and any
// other kind are ProtocolErrors.
using RunReport = std::variant<DoneMessage, LogMessage, ProgressMessage, ResultMessage, EnqueueMessage>;
RunReport decode_run_report(const Frame& frame, std::size_t jobs);
// What a worker may send while it starts: kReady, kInitFailed, or a kLog of the type (job -1).
using StartReport = std::variant<ReadyMessage, InitFailedMessage, LogMessage>;
StartReport decode_start_report(const Frame& frame);

void encode(std::string& out, const InitMessage& m);
void encode(std::string& out, const RunMessage& m);
void encode(std::string& out, const EnqueueReplyMessage& m);
void encode(std::string& out, const LogMessage& m);
void encode(std::string& out, const ProgressMessage& m);
void encode(std::string& out, const ResultMessage& m);
void encode(std::string& out, const EnqueueMessage& m);
void encode(std::string& out, const DoneMessage& m);
void encode(std::string& out, const InitFailedMessage& m);
void encode(std::string& out, const ReadyMessage& m);

// Writes all of `data`, retrying short writes and EINTR. False on error (the peer is gone).
bool send_all(int fd, std::string_view data);

} // namespace jobhost::runner::wire
