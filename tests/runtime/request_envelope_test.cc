#include "runtime/request_envelope.h"

#include <cstdint>
#include <span>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "runtime/frame_codec.h"
#include "tests/support/status_matchers.h"

namespace stella::runtime {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::HasSubstr;
namespace v1 = ::stella::router::v1;

std::span<const std::uint8_t> Bytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// Splits `request`, puts the head and the body field back together in a frame as the gateway
// does, decodes that frame and parses it again.
v1::Request RoundTrip(const v1::Request& request, v1::Request* head) {
  const std::string wire = request.SerializeAsString();
  std::span<const std::uint8_t> body_field;
  EXPECT_THAT(SplitRequestBody(Bytes(wire), head, &body_field), IsOk());
  EXPECT_FALSE(head->has_body());
  std::string frame;
  EXPECT_THAT(AppendFrame(FrameType::kRequest, kFlagFinal, CorrelationId{}, *head, body_field,
                          kDefaultMaxPayloadSize, &frame),
              IsOk());
  FrameDecoder decoder(kDefaultMaxPayloadSize);
  decoder.Feed(Bytes(frame));
  absl::StatusOr<std::optional<FrameView>> decoded = decoder.Next();
  EXPECT_THAT(decoded, IsOk());
  v1::Request again;
  EXPECT_TRUE(decoded.ok() && decoded->has_value() &&
              again.ParseFromArray((*decoded)->payload.data(),
                                   static_cast<int>((*decoded)->payload.size())));
  return again;
}

TEST(RequestEnvelopeTest, BodyPassesThroughAndTheEnvelopeCanBeRewritten) {
  v1::Request request;
  request.set_method("greeter.v1.Greeter/SayHello");
  (*request.mutable_metadata())["traceparent"] = "00-abc-def-01";
  request.set_timeout_us(250000);
  std::string body(1 << 20, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) {
    body[i] = static_cast<char>(i * 7 + i / 251);
  }
  request.set_body(body);
  v1::Request head;
  v1::Request again = RoundTrip(request, &head);
  EXPECT_EQ(head.method(), "greeter.v1.Greeter/SayHello");
  EXPECT_EQ(head.timeout_us(), 250000u);
  EXPECT_EQ(head.metadata().at("traceparent"), "00-abc-def-01");
  EXPECT_TRUE(MessageDifferencer::Equals(again, request));

  // What the gateway does: rewrite the envelope, keep the body bytes.
  const std::string wire = request.SerializeAsString();
  std::span<const std::uint8_t> body_field;
  ASSERT_THAT(SplitRequestBody(Bytes(wire), &head, &body_field), IsOk());
  head.set_timeout_us(1000);
  (*head.mutable_metadata())["stella-caller-identity"] = "spiffe://example.org/caller";
  std::string out = head.SerializeAsString();
  out.append(reinterpret_cast<const char*>(body_field.data()), body_field.size());
  v1::Request rewritten;
  ASSERT_TRUE(rewritten.ParseFromString(out));
  EXPECT_EQ(rewritten.timeout_us(), 1000u);
  EXPECT_EQ(rewritten.metadata().at("stella-caller-identity"), "spiffe://example.org/caller");
  EXPECT_EQ(rewritten.body(), body);
}

TEST(RequestEnvelopeTest, AbsentAndEmptyBodiesStayDistinct) {
  v1::Request no_body;
  no_body.set_method("a.B/C");
  v1::Request head;
  v1::Request again = RoundTrip(no_body, &head);
  EXPECT_FALSE(again.has_body());

  v1::Request empty_body = no_body;
  empty_body.set_body("");
  again = RoundTrip(empty_body, &head);
  EXPECT_TRUE(again.has_body());
  EXPECT_EQ(again.body(), "");
}

TEST(RequestEnvelopeTest, TheLastBodyFieldWinsAsInProtobuf) {
  v1::Request first;
  first.set_method("a.B/C");
  first.set_body("first");
  v1::Request second;
  second.set_body("second");
  const std::string wire = first.SerializeAsString() + second.SerializeAsString();
  v1::Request parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  v1::Request head;
  std::span<const std::uint8_t> body_field;
  ASSERT_THAT(SplitRequestBody(Bytes(wire), &head, &body_field), IsOk());
  std::string reassembled = head.SerializeAsString();
  reassembled.append(reinterpret_cast<const char*>(body_field.data()), body_field.size());
  v1::Request again;
  ASSERT_TRUE(again.ParseFromString(reassembled));
  EXPECT_EQ(again.body(), parsed.body());
  EXPECT_EQ(again.body(), "second");
}

TEST(RequestEnvelopeTest, MalformedPayloadsAreInvalidArgument) {
  v1::Request request;
  request.set_method("a.B/C");
  request.set_body(std::string(100, 'x'));
  const std::string wire = request.SerializeAsString();
  v1::Request head;
  std::span<const std::uint8_t> body_field;
  // Cut inside the body: its length says more than there is.
  EXPECT_THAT(SplitRequestBody(Bytes(wire.substr(0, wire.size() - 10)), &head, &body_field),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid Request")));
  // A tag of field number 0 is never valid.
  EXPECT_THAT(SplitRequestBody(Bytes(std::string("\x00\x01", 2)), &head, &body_field),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid Request")));
  // The method field with a string that is not UTF-8 fails the envelope's own parse.
  EXPECT_THAT(SplitRequestBody(Bytes(std::string("\x0a\x02\xff\xfe", 4)), &head, &body_field),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid Request")));
}

}  // namespace
}  // namespace stella::runtime
