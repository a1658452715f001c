#include "runtime/status_text.h"

#include <cstdint>

namespace stella::runtime {
namespace {

// Length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF), or 0 if there is none.
std::size_t SequenceLength(absl::string_view s) {
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(s[i]); };
  const auto continuation = [&](std::size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  const std::uint8_t b0 = byte(0);
  if (b0 < 0x80) {
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    return continuation(1) ? 2 : 0;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!continuation(1) || !continuation(2)) {
      return 0;
    }
    const std::uint8_t b1 = byte(1);
    if ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 >= 0xA0)) {
      return 0;  // overlong, or a UTF-16 surrogate
    }
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!continuation(1) || !continuation(2) || !continuation(3)) {
      return 0;
    }
    const std::uint8_t b1 = byte(1);
    if ((b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 >= 0x90)) {
      return 0;  // overlong, or past U+10FFFF
    }
    return 4;
  }
  return 0;
}

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr absl::string_view kEllipsis = "...";

}  // namespace

std::string StatusText(absl::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  // Room kept for the ellipsis once the text turns out too long.
  const std::size_t body_limit = max_bytes > kEllipsis.size() ? max_bytes - kEllipsis.size() : 0;
  std::size_t body_end = 0;  // out's length when it last fit within body_limit
  while (!text.empty()) {
    const std::size_t n = SequenceLength(text);
    const absl::string_view piece = n == 0 ? kReplacement : text.substr(0, n);
    text.remove_prefix(n == 0 ? 1 : n);
    if (out.size() + piece.size() > max_bytes) {
      out.resize(body_end);
      if (max_bytes >= kEllipsis.size()) {
        out.append(kEllipsis.data(), kEllipsis.size());
      }
      return out;
    }
    out.append(piece.data(), piece.size());
    if (out.size() <= body_limit) {
      body_end = out.size();
    }
  }
  return out;
}

}  // namespace stella::runtime
