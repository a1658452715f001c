// libFuzzer target for SplitRequestBody, the gateway's zero-copy read of a REQUEST envelope,
// checked against protobuf's own parser on the same bytes: the split must accept exactly what
// Request::ParseFromArray accepts, and the envelope it yields plus the body field it points at
// must be the message protobuf parsed.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "runtime/frame_codec.h"
#include "runtime/request_envelope.h"
#include "stella/router/v1/frames.pb.h"

namespace {

namespace v1 = stella::router::v1;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);  // protobuf's parse warnings are expected here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> payload(data, size);
  v1::Request reference;
  const bool protobuf_ok = reference.ParseFromArray(data, static_cast<int>(size));

  v1::Request head;
  std::span<const std::uint8_t> body_field;
  const absl::Status split = stella::runtime::SplitRequestBody(payload, &head, &body_field);
  Check(split.ok() == protobuf_ok, "SplitRequestBody accepts exactly what protobuf accepts");
  if (!split.ok()) {
    Check(split.code() == absl::StatusCode::kInvalidArgument, "a bad envelope is INVALID_ARGUMENT");
    return 0;
  }
  Check(!head.has_body(), "the envelope leaves the body out");
  if (!body_field.empty()) {
    Check(body_field.data() >= data && body_field.data() + body_field.size() <= data + size,
          "the body field points into the payload");
  }

  // The envelope re-serialized with the body field appended, as the gateway forwards it, parses
  // to the message protobuf read from the original bytes.
  std::string frame;
  const absl::Status appended = stella::runtime::AppendFrame(
      stella::runtime::FrameType::kRequest, 0, stella::runtime::CorrelationIdFromCounter(1), head,
      body_field, 1u << 30, &frame);
  Check(appended.ok(), "AppendFrame takes the envelope and its body");
  v1::Request forwarded;
  Check(
      forwarded.ParseFromArray(frame.data() + stella::runtime::kFrameHeaderSize,
                               static_cast<int>(frame.size() - stella::runtime::kFrameHeaderSize)),
      "the forwarded payload parses");
  Check(forwarded.has_body() == reference.has_body(), "a body is present iff it was");
  Check(forwarded.body() == reference.body(), "the body arrives unchanged");
  Check(forwarded.method() == reference.method(), "the method is kept");
  Check(forwarded.timeout_us() == reference.timeout_us(), "the timeout is kept");
  Check(forwarded.metadata_size() == reference.metadata_size(), "the metadata is kept");
  return 0;
}
