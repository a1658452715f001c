#include "runtime/request_envelope.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <string>

namespace stella::runtime {

using google::protobuf::internal::WireFormatLite;

absl::Status SplitRequestBody(std::span<const std::uint8_t> payload, router::v1::Request* out_head,
                              std::span<const std::uint8_t>* out_body_field) {
  static const std::uint32_t kBodyTag = WireFormatLite::MakeTag(
      router::v1::Request::kBodyFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  *out_body_field = {};
  google::protobuf::io::CodedInputStream in(payload.data(), static_cast<int>(payload.size()));
  std::string head;  // the other fields' wire bytes: method, metadata, timeout (small)
  while (true) {
    const int start = in.CurrentPosition();
    const std::uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (static_cast<std::size_t>(start) != payload.size()) {
        return absl::InvalidArgumentError(
            "REQUEST payload is not a valid Request message: bad field tag");
      }
      break;
    }
    if (!WireFormatLite::SkipField(&in, tag)) {
      return absl::InvalidArgumentError(
          "REQUEST payload is not a valid Request message: truncated field");
    }
    const auto field = payload.subspan(static_cast<std::size_t>(start),
                                       static_cast<std::size_t>(in.CurrentPosition() - start));
    if (tag == kBodyTag) {
      *out_body_field = field;
    } else {
      head.append(reinterpret_cast<const char*>(field.data()), field.size());
    }
  }
  if (!out_head->ParseFromString(head)) {
    return absl::InvalidArgumentError("REQUEST payload is not a valid Request message");
  }
  return absl::OkStatus();
}

}  // namespace stella::runtime
