// The REQUEST envelope without its body: how a relay reads and rewrites a request's method,
// metadata and timeout while the body (the caller's serialized message, up to the maximum payload
// size) passes through as the bytes that arrived, never copied into a message and out again.
#ifndef STELLA_RUNTIME_REQUEST_ENVELOPE_H_
#define STELLA_RUNTIME_REQUEST_ENVELOPE_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::runtime {

// SplitRequestBody parses the REQUEST payload `payload` into `*out_head` with every field but
// `body`, and sets `*out_body_field` to the body field's wire bytes (tag, length, bytes) inside
// `payload` — empty when the request has no body. If the field appears more than once, the last
// one is the body, as protobuf's parser would decide. INVALID_ARGUMENT when `payload` is not a
// valid Request message. `*out_body_field` points into `payload`.
absl::Status SplitRequestBody(std::span<const std::uint8_t> payload, router::v1::Request* out_head,
                              std::span<const std::uint8_t>* out_body_field);

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_REQUEST_ENVELOPE_H_
