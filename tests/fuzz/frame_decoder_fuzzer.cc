// libFuzzer target for FrameDecoder: arbitrary bytes, delivered in chunk sizes chosen by the
// input, must never crash, never reserve memory for bytes that were not sent, and every frame it
// yields must be exactly the bytes that were fed (checked by re-encoding its header).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "runtime/frame_codec.h"
#include "stella/router/v1/frames.pb.h"

namespace {

using stella::runtime::FrameDecoder;
using stella::runtime::FrameType;
using stella::runtime::FrameView;
using stella::runtime::kFrameHeaderSize;
namespace v1 = stella::router::v1;

constexpr std::uint32_t kMaxPayload = 64 * 1024;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// Parses the payload as the message of its frame type, as a connection would.
void ParsePayload(const FrameView& frame) {
  const void* data = frame.payload.data();
  const int size = static_cast<int>(frame.payload.size());
  switch (frame.header.type) {
    case FrameType::kHello:
      v1::Hello().ParseFromArray(data, size);
      break;
    case FrameType::kHelloAck:
      v1::HelloAck().ParseFromArray(data, size);
      break;
    case FrameType::kRequest:
      v1::Request().ParseFromArray(data, size);
      break;
    case FrameType::kResponse:
      v1::Response().ParseFromArray(data, size);
      break;
    case FrameType::kCancel:
      v1::Cancel().ParseFromArray(data, size);
      break;
    case FrameType::kHeartbeat:
      v1::Heartbeat().ParseFromArray(data, size);
      break;
    case FrameType::kGoaway:
      v1::Goaway().ParseFromArray(data, size);
      break;
    case FrameType::kWindowUpdate:
      v1::WindowUpdate().ParseFromArray(data, size);
      break;
  }
}

}  // namespace

// Protobuf logs every string field with invalid UTF-8 it rejects; random input makes thousands.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  // The first byte picks the read size, so that the corpus explores splits as well as contents.
  const std::size_t chunk = 1 + data[0] * 13;
  std::span<const std::uint8_t> input(data + 1, size - 1);

  FrameDecoder decoder(kMaxPayload);
  std::size_t fed = 0;
  std::size_t consumed = 0;  // bytes of input returned as whole frames
  std::size_t largest = 0;   // largest whole frame returned, whose buffer is kept for reuse
  while (fed < input.size()) {
    const std::size_t n = std::min(chunk, input.size() - fed);
    // Alternate the two ways in, so both are exercised.
    if ((fed / chunk) % 2 == 0) {
      decoder.Feed(input.subspan(fed, n));
    } else {
      std::span<std::uint8_t> room = decoder.PrepareWrite(n);
      Check(room.size() >= n, "PrepareWrite gave less room than asked");
      std::memcpy(room.data(), input.data() + fed, n);
      decoder.CommitWrite(n);
    }
    fed += n;
    while (true) {
      auto next = decoder.Next();
      if (!next.ok()) {
        Check(!next.status().message().empty(), "decode error without a message");
        return 0;
      }
      if (!next->has_value()) {
        break;
      }
      const FrameView& frame = **next;
      Check(frame.header.payload_length <= kMaxPayload, "payload over the maximum");
      Check(frame.payload.size() == frame.header.payload_length, "payload size != header length");
      std::array<std::uint8_t, kFrameHeaderSize> header{};
      stella::runtime::EncodeFrameHeader(frame.header, header);
      // Flags are re-encoded as received, so the whole header must match the input bytes.
      Check(std::memcmp(header.data(), input.data() + consumed, kFrameHeaderSize) == 0,
            "re-encoded header differs from the bytes received");
      Check(frame.payload.empty() ||
                std::memcmp(frame.payload.data(), input.data() + consumed + kFrameHeaderSize,
                            frame.payload.size()) == 0,
            "payload differs from the bytes received");
      consumed += kFrameHeaderSize + frame.payload.size();
      largest = std::max(largest, kFrameHeaderSize + frame.payload.size());
      ParsePayload(frame);
    }
    Check(decoder.buffered() == fed - consumed, "buffered bytes out of step with input");
    // Memory follows what was sent, never what a header announced.
    Check(decoder.capacity() <= 2 * std::max(largest, fed - consumed) + 2 * chunk,
          "decoder reserved memory for bytes never sent");
  }
  return 0;
}
