// Status text carried in protocol messages (Response.message, Cancel.reason, HelloAck.reason,
// Goaway.reason) is a proto3 `string`: it must be valid UTF-8 or the receiver's parser rejects the
// whole frame, and it must fit the peer's maximum payload. Text from elsewhere (a handler's
// status, a peer's cancel reason) goes through StatusText first.
#ifndef STELLA_RUNTIME_STATUS_TEXT_H_
#define STELLA_RUNTIME_STATUS_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace stella::runtime {

// The longest status text Stella puts in a protocol message.
inline constexpr std::size_t kMaxStatusText = 1024;

// `text` as valid UTF-8 of at most `max_bytes` bytes: each byte that does not start a well-formed
// sequence becomes U+FFFD, and a longer text is cut at a character boundary and ends in "...".
std::string StatusText(absl::string_view text, std::size_t max_bytes = kMaxStatusText);

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_STATUS_TEXT_H_
