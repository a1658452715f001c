// The frame codec of wire protocol v1 (docs/protocol.md): the 24-byte header, an encoder that
// writes frames into caller-owned buffers, and an incremental decoder that turns bytes arriving in
// any chunking into whole frames.
//
// This header has no Asio and no TLS in it: it is included widely and stays cheap to compile.
#ifndef STELLA_RUNTIME_FRAME_CODEC_H_
#define STELLA_RUNTIME_FRAME_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace stella::runtime {

// The protocol version this code speaks, sent in byte 0 of every header.
inline constexpr std::uint8_t kProtocolVersion = 1;
// Size of the fixed frame header.
inline constexpr std::size_t kFrameHeaderSize = 24;
// Size of the correlation id in the header.
inline constexpr std::size_t kCorrelationIdSize = 16;
// Default for the negotiated maximum payload size (MaxPayloadSize), 4 MiB.
inline constexpr std::uint32_t kDefaultMaxPayloadSize = 4u << 20;

// Frame types (header byte 1). Any other value is a protocol violation.
enum class FrameType : std::uint8_t {
  kHello = 1,
  kHelloAck = 2,
  kRequest = 3,
  kResponse = 4,
  kCancel = 5,
  kHeartbeat = 6,
  kGoaway = 7,
  kWindowUpdate = 8,
};

// Returns the upper-case protocol name of `type` ("HELLO", "WINDOW_UPDATE"), or "UNKNOWN"; a
// static string.
const char* FrameTypeName(FrameType type);

// Header flags (bytes 2-3, big-endian). Undefined bits are sent as zero and ignored on receipt.
inline constexpr std::uint16_t kFlagFinal = 1u << 0;  // last frame of this stream direction
inline constexpr std::uint16_t kFlagError = 1u << 1;  // final RESPONSE with a non-OK status

// Opaque 16-byte stream identifier; all zero for connection-level frames.
using CorrelationId = std::array<std::uint8_t, kCorrelationIdSize>;

// Returns true if every byte of `id` is zero (the id of connection-level frames).
bool IsConnectionLevel(const CorrelationId& id);

// The recommended stream id: `n` big-endian in the last 8 bytes, the first 8 zero.
CorrelationId CorrelationIdFromCounter(std::uint64_t n);
// The counter of an id made by CorrelationIdFromCounter; 0 for any other id.
std::uint64_t CounterFromCorrelationId(const CorrelationId& id);

// Hash for CorrelationId keys in hash maps.
struct CorrelationIdHash {
  std::size_t operator()(const CorrelationId& id) const;
};

// The decoded fields of a frame header.
struct FrameHeader {
  FrameType type = FrameType::kHeartbeat;
  std::uint16_t flags = 0;
  std::uint32_t payload_length = 0;
  CorrelationId correlation_id{};

  bool final() const { return (flags & kFlagFinal) != 0; }
  bool error() const { return (flags & kFlagError) != 0; }
};

// EncodeFrameHeader writes `header` (with version kProtocolVersion) into `out`. It performs no
// limit checks: the caller has already checked `header.payload_length` against the negotiated
// maximum (AppendFrame does).
void EncodeFrameHeader(const FrameHeader& header, std::span<std::uint8_t, kFrameHeaderSize> out);

// AppendFrame appends one whole frame — header, then `payload` serialized — to `*out`, which the
// caller owns and reuses (clear() keeps its capacity), so that a writer can coalesce many frames
// into one buffer for a single TLS write. Fails with RESOURCE_EXHAUSTED, leaving `*out`
// unchanged, when the serialized payload exceeds `max_payload_size`; with INTERNAL if protobuf
// cannot serialize the message.
absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         const google::protobuf::MessageLite& payload,
                         std::uint32_t max_payload_size, std::string* out);

// As above, with `raw_tail` — wire bytes of further fields of the same message, such as a body
// field taken whole from another frame — appended after `payload` serialized. The size limit
// applies to the two together.
absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         const google::protobuf::MessageLite& payload,
                         std::span<const std::uint8_t> raw_tail, std::uint32_t max_payload_size,
                         std::string* out);

// As above with payload bytes that are already serialized.
absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         std::span<const std::uint8_t> payload, std::uint32_t max_payload_size,
                         std::string* out);

// A frame that the decoder produced. `payload` points into the decoder's buffer and is valid
// only until the next call to any non-const FrameDecoder method.
struct FrameView {
  FrameHeader header;
  std::span<const std::uint8_t> payload;
};

// FrameDecoder reassembles frames from a byte stream, in whatever chunks the bytes arrive.
//
// Bytes go in either by Feed() (a copy) or, to read straight from a socket without a copy, by
// PrepareWrite() + CommitWrite(). Next() returns the frames. The header is validated the moment
// its 24 bytes are present — version, type, and length against the maximum — before any memory
// is reserved for the payload, so a hostile length costs nothing. The first error is sticky:
// every later Next() returns it again, since a byte stream cannot be resynchronised.
//
// The buffer grows to the largest frame seen and is then reused; ReleaseIdleMemory() gives it
// back on an idle connection. Not thread-safe: one connection's reader owns one decoder.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint32_t max_payload_size = kDefaultMaxPayloadSize);

  FrameDecoder(const FrameDecoder&) = delete;
  FrameDecoder& operator=(const FrameDecoder&) = delete;
  FrameDecoder(FrameDecoder&&) = default;
  FrameDecoder& operator=(FrameDecoder&&) = default;

  // Changes the maximum payload size (after HELLO_ACK negotiates it). Applies to headers not yet
  // validated.
  void set_max_payload_size(std::uint32_t max_payload_size) {
    max_payload_size_ = max_payload_size;
  }
  std::uint32_t max_payload_size() const { return max_payload_size_; }

  // Copies `bytes` into the decoder.
  void Feed(std::span<const std::uint8_t> bytes);

  // Returns a writable span of at least `min_size` bytes at the end of the buffered data, for the
  // caller to read into; then call CommitWrite with the count actually written. The span is valid
  // until the next non-const call. While a large payload is arriving the span grows with it —
  // doubling, never past the frame's end — so it takes few reads, yet a peer that announces a
  // large payload and stalls makes the decoder reserve no more than about twice what it sent.
  std::span<std::uint8_t> PrepareWrite(std::size_t min_size);
  // Marks `n` bytes of the last PrepareWrite span as received. `n` must not exceed its size.
  void CommitWrite(std::size_t n);

  // Returns the next complete frame; std::nullopt if more bytes are needed; or an error —
  // INVALID_ARGUMENT for a bad version or unknown type, RESOURCE_EXHAUSTED for a payload length
  // over the maximum — whose message names the field, the value seen and what was allowed.
  absl::StatusOr<std::optional<FrameView>> Next();

  // Bytes received but not yet returned as frames.
  std::size_t buffered() const { return end_ - begin_; }
  // Bytes reserved by the buffer.
  std::size_t capacity() const { return buffer_.size(); }
  // Frees the buffer if no partial frame is held and it has grown past a few kilobytes; a no-op
  // otherwise. Call when a connection goes idle.
  void ReleaseIdleMemory();

 private:
  // Ensures `n` writable bytes after end_, compacting first and then growing to the exact need.
  void EnsureWritable(std::size_t n);

  std::uint32_t max_payload_size_;
  std::vector<std::uint8_t> buffer_;
  std::size_t begin_ = 0;  // first unconsumed byte
  std::size_t end_ = 0;    // one past the last received byte
  // Set once the header at begin_ has been validated; cleared when its frame is returned.
  std::optional<FrameHeader> pending_header_;
  absl::Status error_;
};

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_FRAME_CODEC_H_
