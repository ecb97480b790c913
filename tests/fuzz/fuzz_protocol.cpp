// The worker protocol, as each side reads it: bytes from the socket are cut into frames (FrameReader), and each frame
// is decoded as the host decodes a worker's reports (while it starts and during a run of 3 jobs) and as a worker
// decodes the host's messages. Properties: only ProtocolError is thrown; a frame cut from bytes fed in two pieces
// (split where the first byte says) is the frame cut from them whole; what decodes re-encodes to the same bytes (a
// message is exactly its fields); a run report's job index is within the run.
#include "runner/protocol.hpp"
#include "fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace wire = jobhost::runner::wire;

namespace {

std::string frame_bytes(const wire::Frame& f) {
    std::string out;
    auto len = static_cast<std::uint32_t>(f.body.size() + 1);
    out.append(reinterpret_cast<const char*>(&len), sizeof len);
    out.push_back(static_cast<char>(f.kind));
    out.append(f.body);
    return out;
}

// Decodes `f` with `decode`; when it succeeds, the message must re-encode to the frame's own bytes.
template <class Decode>
void round_trip(const wire::Frame& f, Decode decode) {
    try {
        auto m = decode(f);
        std::string again;
        std::visit([&](const auto& x) { wire::encode(again, x); }, m);
        FUZZ_CHECK(again == frame_bytes(f), "a decoded message does not re-encode to its bytes");
    } catch (const wire::ProtocolError& e) {
        FUZZ_CHECK(std::string_view(e.what()).size() > 0, "a protocol error without a reason");
    }
}

std::vector<std::string> frames(wire::FrameReader& in) {
    std::vector<std::string> out;
    try {
        while (auto f = in.next()) out.push_back(frame_bytes(*f));
    } catch (const wire::ProtocolError&) {
        out.push_back("damaged");
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0 || size > 1 << 16) return 0;
    std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

    wire::FrameReader whole;
    whole.feed(bytes);
    auto cut_whole = frames(whole);
    wire::FrameReader pieces;
    std::size_t split = bytes.empty() ? 0 : data[0] % (bytes.size() + 1);
    pieces.feed(bytes.substr(0, split));
    auto cut_pieces = frames(pieces);
    if (cut_pieces.empty() || cut_pieces.back() != "damaged") {
        pieces.feed(bytes.substr(split));
        auto rest = frames(pieces);
        cut_pieces.insert(cut_pieces.end(), rest.begin(), rest.end());
    }
    FUZZ_CHECK(cut_whole == cut_pieces, "the frames depend on how the bytes arrived");

    std::size_t used = 0;
    for (const auto& fb : cut_whole) {
        if (fb == "damaged") break;
        used += fb.size();
        wire::Frame f{static_cast<wire::Kind>(fb[4]), std::string_view(fb).substr(5)};
        // the host, reading a worker
        round_trip(f, [](const wire::Frame& x) { return wire::decode_start_report(x); });
        round_trip(f, [](const wire::Frame& x) {
            auto r = wire::decode_run_report(x, 3);
            std::visit(
                [](const auto& m) {
                    if constexpr (requires { m.job; }) FUZZ_CHECK(m.job >= -1 && m.job < 3, "a job index out of range");
                },
                r);
            return r;
        });
        // a worker, reading the host
        using HostMessage = std::variant<wire::InitMessage, wire::RunMessage, wire::EnqueueReplyMessage>;
        round_trip(f, [](const wire::Frame& x) -> HostMessage {
            switch (x.kind) {
            case wire::kInit: return wire::decode_init(x.body);
            case wire::kRun: return wire::decode_run(x.body);
            case wire::kEnqueueReply: return wire::decode_enqueue_reply(x.body);
            default: throw wire::ProtocolError("not a host message");
            }
        });
    }
    FUZZ_CHECK(used <= bytes.size(), "frames longer than the bytes they came from");
    return 0;
}
