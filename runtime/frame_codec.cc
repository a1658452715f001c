#include "runtime/frame_codec.h"

#include <algorithm>
#include <cstring>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/message_lite.h"

namespace stella::runtime {
namespace {

// Offsets inside the header (docs/protocol.md, "Frame header").
constexpr std::size_t kVersionOffset = 0;
constexpr std::size_t kTypeOffset = 1;
constexpr std::size_t kFlagsOffset = 2;
constexpr std::size_t kLengthOffset = 4;
constexpr std::size_t kCorrelationOffset = 8;

constexpr std::uint8_t kMinFrameType = static_cast<std::uint8_t>(FrameType::kHello);
constexpr std::uint8_t kMaxFrameType = static_cast<std::uint8_t>(FrameType::kWindowUpdate);

// A decoder whose buffer is at most this big keeps it when idle: a small buffer is cheaper to
// keep than to reallocate on the next frame.
constexpr std::size_t kIdleKeepBytes = 4096;

std::uint16_t LoadBigEndian16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

std::uint32_t LoadBigEndian32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

void StoreBigEndian16(std::uint16_t v, std::uint8_t* p) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

void StoreBigEndian32(std::uint32_t v, std::uint8_t* p) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

absl::Status PayloadTooLarge(FrameType type, std::size_t size, std::uint32_t max) {
  return absl::ResourceExhaustedError(
      absl::StrCat("cannot send ", FrameTypeName(type), " frame: payload is ", size,
                   " bytes, over the maximum payload size of ", max, " bytes"));
}

// Appends the header for a payload of `payload_size` bytes to `out` and returns the offset of
// the first payload byte.
// Appends the header of a frame whose payload is `payload_size` bytes and makes room for the
// first `filled_size` of them (to be written in place, e.g. by protobuf's serializer); the rest
// the caller appends. Returns the offset of the payload in `*out`. Only the room made is
// zero-filled: a large body is copied in once, never cleared first.
std::size_t AppendHeader(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         std::size_t payload_size, std::size_t filled_size, std::string* out) {
  const std::size_t start = out->size();
  out->reserve(start + kFrameHeaderSize + payload_size);
  out->resize(start + kFrameHeaderSize + filled_size);
  FrameHeader header{.type = type,
                     .flags = flags,
                     .payload_length = static_cast<std::uint32_t>(payload_size),
                     .correlation_id = correlation_id};
  auto* p = reinterpret_cast<std::uint8_t*>(out->data() + start);
  EncodeFrameHeader(header, std::span<std::uint8_t, kFrameHeaderSize>(p, kFrameHeaderSize));
  return start + kFrameHeaderSize;
}

}  // namespace

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kHelloAck:
      return "HELLO_ACK";
    case FrameType::kRequest:
      return "REQUEST";
    case FrameType::kResponse:
      return "RESPONSE";
    case FrameType::kCancel:
      return "CANCEL";
    case FrameType::kHeartbeat:
      return "HEARTBEAT";
    case FrameType::kGoaway:
      return "GOAWAY";
    case FrameType::kWindowUpdate:
      return "WINDOW_UPDATE";
  }
  return "UNKNOWN";
}

bool IsConnectionLevel(const CorrelationId& id) {
  return std::all_of(id.begin(), id.end(), [](std::uint8_t b) { return b == 0; });
}

CorrelationId CorrelationIdFromCounter(std::uint64_t n) {
  CorrelationId id{};
  for (int i = 0; i < 8; ++i) {
    id[15 - i] = static_cast<std::uint8_t>(n >> (8 * i));
  }
  return id;
}

std::uint64_t CounterFromCorrelationId(const CorrelationId& id) {
  for (int i = 0; i < 8; ++i) {
    if (id[i] != 0) {
      return 0;
    }
  }
  std::uint64_t n = 0;
  for (int i = 8; i < 16; ++i) {
    n = (n << 8) | id[i];
  }
  return n;
}

std::size_t CorrelationIdHash::operator()(const CorrelationId& id) const {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::memcpy(&a, id.data(), 8);
  std::memcpy(&b, id.data() + 8, 8);
  return absl::Hash<std::pair<std::uint64_t, std::uint64_t>>()({a, b});
}

void EncodeFrameHeader(const FrameHeader& header, std::span<std::uint8_t, kFrameHeaderSize> out) {
  std::uint8_t* p = out.data();
  p[kVersionOffset] = kProtocolVersion;
  p[kTypeOffset] = static_cast<std::uint8_t>(header.type);
  StoreBigEndian16(header.flags, p + kFlagsOffset);
  StoreBigEndian32(header.payload_length, p + kLengthOffset);
  std::memcpy(p + kCorrelationOffset, header.correlation_id.data(), kCorrelationIdSize);
}

absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         const google::protobuf::MessageLite& payload,
                         std::uint32_t max_payload_size, std::string* out) {
  return AppendFrame(type, flags, correlation_id, payload, {}, max_payload_size, out);
}

absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         const google::protobuf::MessageLite& payload,
                         std::span<const std::uint8_t> raw_tail, std::uint32_t max_payload_size,
                         std::string* out) {
  const std::size_t head = payload.ByteSizeLong();
  const std::size_t size = head + raw_tail.size();
  if (size > max_payload_size) {
    return PayloadTooLarge(type, size, max_payload_size);
  }
  const std::size_t start = out->size();
  const std::size_t body = AppendHeader(type, flags, correlation_id, size, head, out);
  auto* p = reinterpret_cast<std::uint8_t*>(out->data() + body);
  // ByteSizeLong() above cached the sizes, which the serializer relies on.
  if (head > 0 && payload.SerializeWithCachedSizesToArray(p) != p + head) {
    out->resize(start);
    return absl::InternalError(absl::StrCat("protobuf could not serialize the ",
                                            FrameTypeName(type), " payload (",
                                            payload.GetTypeName(), ")"));
  }
  out->append(reinterpret_cast<const char*>(raw_tail.data()), raw_tail.size());
  return absl::OkStatus();
}

absl::Status AppendFrame(FrameType type, std::uint16_t flags, const CorrelationId& correlation_id,
                         std::span<const std::uint8_t> payload, std::uint32_t max_payload_size,
                         std::string* out) {
  if (payload.size() > max_payload_size) {
    return PayloadTooLarge(type, payload.size(), max_payload_size);
  }
  AppendHeader(type, flags, correlation_id, payload.size(), 0, out);
  out->append(reinterpret_cast<const char*>(payload.data()), payload.size());
  return absl::OkStatus();
}

FrameDecoder::FrameDecoder(std::uint32_t max_payload_size) : max_payload_size_(max_payload_size) {}

void FrameDecoder::EnsureWritable(std::size_t n) {
  if (buffer_.size() - end_ >= n) {
    return;
  }
  // Compact: move the unconsumed bytes to the front, which is all the room most reads need.
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buffer_.size() - end_ < n) {
    // reserve() first so the buffer is exactly as large as needed: resize() alone may double it.
    buffer_.reserve(end_ + n);
    buffer_.resize(end_ + n);
  }
}

void FrameDecoder::Feed(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) {
    return;
  }
  EnsureWritable(bytes.size());
  std::memcpy(buffer_.data() + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

std::span<std::uint8_t> FrameDecoder::PrepareWrite(std::size_t min_size) {
  std::size_t want = min_size;
  if (pending_header_.has_value()) {
    // Make room for the rest of the pending frame, but grow by at most what the peer has already
    // sent: a header that announces a large payload and then stalls reserves little.
    const std::size_t frame_size = kFrameHeaderSize + pending_header_->payload_length;
    const std::size_t remaining = frame_size - buffered();
    want = std::max(want, std::min(remaining, buffered()));
  }
  EnsureWritable(want);
  return {buffer_.data() + end_, buffer_.size() - end_};
}

void FrameDecoder::CommitWrite(std::size_t n) { end_ += std::min(n, buffer_.size() - end_); }

absl::StatusOr<std::optional<FrameView>> FrameDecoder::Next() {
  if (!error_.ok()) {
    return error_;
  }
  if (!pending_header_.has_value()) {
    if (buffered() < kFrameHeaderSize) {
      return std::nullopt;
    }
    const std::uint8_t* p = buffer_.data() + begin_;
    if (p[kVersionOffset] != kProtocolVersion) {
      error_ = absl::InvalidArgumentError(
          absl::StrCat("frame header field 'version' is ", int{p[kVersionOffset]},
                       "; this peer speaks protocol version ", int{kProtocolVersion}));
      return error_;
    }
    const std::uint8_t type = p[kTypeOffset];
    if (type < kMinFrameType || type > kMaxFrameType) {
      error_ = absl::InvalidArgumentError(
          absl::StrCat("frame header field 'type' is ", int{type}, "; known types are ",
                       int{kMinFrameType}, " (HELLO) to ", int{kMaxFrameType}, " (WINDOW_UPDATE)"));
      return error_;
    }
    FrameHeader header;
    header.type = static_cast<FrameType>(type);
    header.flags = LoadBigEndian16(p + kFlagsOffset);
    header.payload_length = LoadBigEndian32(p + kLengthOffset);
    std::memcpy(header.correlation_id.data(), p + kCorrelationOffset, kCorrelationIdSize);
    if (header.payload_length > max_payload_size_) {
      error_ = absl::ResourceExhaustedError(
          absl::StrCat("frame header field 'payload length' is ", header.payload_length,
                       " bytes for a ", FrameTypeName(header.type),
                       " frame; the maximum payload size is ", max_payload_size_, " bytes"));
      return error_;
    }
    pending_header_ = header;
  }
  const std::size_t frame_size = kFrameHeaderSize + pending_header_->payload_length;
  if (buffered() < frame_size) {
    return std::nullopt;
  }
  FrameView frame{
      .header = *pending_header_,
      .payload = {buffer_.data() + begin_ + kFrameHeaderSize, pending_header_->payload_length}};
  pending_header_.reset();
  begin_ += frame_size;
  if (begin_ == end_) {
    // Nothing left: rewind so the next read lands at the front without a memmove. The bytes of
    // `frame` stay where they are until the caller writes again.
    begin_ = end_ = 0;
  }
  return frame;
}

void FrameDecoder::ReleaseIdleMemory() {
  if (buffered() == 0 && buffer_.capacity() > kIdleKeepBytes) {
    std::vector<std::uint8_t>().swap(buffer_);
    begin_ = end_ = 0;
  }
}

}  // namespace stella::runtime
