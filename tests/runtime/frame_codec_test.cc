#include "runtime/frame_codec.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/support/status_matchers.h"

namespace stella::runtime {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;
namespace v1 = ::stella::router::v1;

CorrelationId MakeId(std::uint8_t seed) {
  CorrelationId id;
  for (std::size_t i = 0; i < id.size(); ++i) {
    id[i] = static_cast<std::uint8_t>(seed + i * 17);
  }
  return id;
}

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A decoded frame with its payload copied out of the decoder's buffer.
struct OwnedFrame {
  FrameHeader header;
  std::string payload;
};

// Pulls every complete frame out of `decoder`, failing the test on a decode error.
std::vector<OwnedFrame> DrainFrames(FrameDecoder& decoder) {
  std::vector<OwnedFrame> frames;
  while (true) {
    auto next = decoder.Next();
    EXPECT_THAT(next, IsOk());
    if (!next.ok() || !next->has_value()) {
      return frames;
    }
    const FrameView& view = **next;
    frames.push_back({view.header, std::string(view.payload.begin(), view.payload.end())});
  }
}

// One message of every payload type, with every field set, and the frame type it travels in.
struct Sample {
  FrameType type;
  std::uint16_t flags;
  std::unique_ptr<google::protobuf::Message> message;
};

std::vector<Sample> AllFrameTypes() {
  std::vector<Sample> samples;

  auto hello = std::make_unique<v1::Hello>();
  hello->set_role(v1::ROLE_SERVICE);
  hello->set_service_name("greeter");
  hello->set_instance_id("7d1c6a52-1b4e-4c55-9a0b-2b7c3f6f4e10");
  v1::Endpoint* endpoint = hello->add_endpoints();
  endpoint->set_method("greeter.v1.Greeter/SayHello");
  endpoint->set_request_type("greeter.v1.HelloRequest");
  endpoint->set_response_type("greeter.v1.HelloReply");
  endpoint->set_kind(v1::CALL_KIND_BIDI_STREAMING);
  endpoint->set_default_timeout_ms(2500);
  (*hello->mutable_metadata())["region"] = "eu-west";
  hello->set_file_descriptor_set(std::string("\x0a\x03\x66\x6f\x6f", 5));
  samples.push_back({FrameType::kHello, 0, std::move(hello)});

  auto ack = std::make_unique<v1::HelloAck>();
  ack->set_accepted(false);
  ack->set_code(7);
  ack->set_reason("certificate DNS:billing may not register service greeter");
  ack->set_heartbeat_interval_ms(5000);
  ack->set_max_payload_size(kDefaultMaxPayloadSize);
  ack->set_initial_stream_window(kDefaultMaxPayloadSize);
  ack->set_max_concurrent_streams(1024);
  ack->set_gateway_id("gw-1");
  samples.push_back({FrameType::kHelloAck, 0, std::move(ack)});

  auto request = std::make_unique<v1::Request>();
  request->set_method("greeter.v1.Greeter/SayHello");
  (*request->mutable_metadata())["traceparent"] =
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  request->set_timeout_us(1'500'000);
  request->set_body(std::string("\x0a\x05world\x00\xff", 9));
  samples.push_back({FrameType::kRequest, kFlagFinal, std::move(request)});

  auto response = std::make_unique<v1::Response>();
  response->set_code(5);
  response->set_message("no such greeting");
  (*response->mutable_metadata())["server-timing"] = "handler;dur=0.4";
  samples.push_back({FrameType::kResponse, kFlagFinal | kFlagError, std::move(response)});

  auto cancel = std::make_unique<v1::Cancel>();
  cancel->set_code(4);
  cancel->set_reason("caller deadline of 200 ms exceeded");
  samples.push_back({FrameType::kCancel, 0, std::move(cancel)});

  auto heartbeat = std::make_unique<v1::Heartbeat>();
  heartbeat->set_sequence(42);
  heartbeat->set_send_time_unix_us(1'796'000'000'000'000);
  heartbeat->set_ack(true);
  samples.push_back({FrameType::kHeartbeat, 0, std::move(heartbeat)});

  auto goaway = std::make_unique<v1::Goaway>();
  goaway->set_code(0);
  goaway->set_reason("gateway is shutting down");
  goaway->set_drain_timeout_ms(30'000);
  samples.push_back({FrameType::kGoaway, 0, std::move(goaway)});

  auto window = std::make_unique<v1::WindowUpdate>();
  window->set_bytes(65536);
  samples.push_back({FrameType::kWindowUpdate, 0, std::move(window)});
  return samples;
}

// Encodes several frames of different types and sizes back to back.
std::string EncodeMixedStream() {
  std::string wire;
  std::uint8_t seed = 1;
  for (const Sample& sample : AllFrameTypes()) {
    EXPECT_THAT(AppendFrame(sample.type, sample.flags, MakeId(seed++), *sample.message,
                            kDefaultMaxPayloadSize, &wire),
                IsOk());
  }
  // A zero-length payload and a payload larger than one typical read.
  EXPECT_THAT(AppendFrame(FrameType::kHeartbeat, 0, CorrelationId{}, v1::Heartbeat(),
                          kDefaultMaxPayloadSize, &wire),
              IsOk());
  v1::Request big;
  big.set_body(std::string(40'000, 'x'));
  EXPECT_THAT(
      AppendFrame(FrameType::kRequest, kFlagFinal, MakeId(99), big, kDefaultMaxPayloadSize, &wire),
      IsOk());
  return wire;
}

TEST(FrameCodecTest, EveryFrameTypeRoundTrips) {
  std::vector<Sample> samples = AllFrameTypes();
  ASSERT_THAT(samples, SizeIs(8));
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const Sample& sample = samples[i];
    SCOPED_TRACE(FrameTypeName(sample.type));
    std::string wire;
    const CorrelationId id = MakeId(static_cast<std::uint8_t>(i));
    ASSERT_THAT(
        AppendFrame(sample.type, sample.flags, id, *sample.message, kDefaultMaxPayloadSize, &wire),
        IsOk());
    ASSERT_EQ(wire.size(), kFrameHeaderSize + sample.message->ByteSizeLong());

    FrameDecoder decoder;
    decoder.Feed(Bytes(wire));
    std::vector<OwnedFrame> frames = DrainFrames(decoder);
    ASSERT_THAT(frames, SizeIs(1));
    EXPECT_EQ(frames[0].header.type, sample.type);
    EXPECT_EQ(frames[0].header.flags, sample.flags);
    EXPECT_EQ(frames[0].header.correlation_id, id);
    EXPECT_EQ(frames[0].header.payload_length, frames[0].payload.size());

    std::unique_ptr<google::protobuf::Message> decoded(sample.message->New());
    ASSERT_TRUE(decoded->ParseFromString(frames[0].payload));
    EXPECT_TRUE(MessageDifferencer::Equals(*decoded, *sample.message))
        << decoded->DebugString() << " vs " << sample.message->DebugString();
    EXPECT_EQ(decoder.buffered(), 0u);
  }
}

TEST(FrameCodecTest, HeaderLayoutIsBigEndianWithLengthAtOffsetFour) {
  FrameHeader header{.type = FrameType::kResponse,
                     .flags = kFlagFinal | kFlagError,
                     .payload_length = 0x01020304,
                     .correlation_id = MakeId(0xA0)};
  std::array<std::uint8_t, kFrameHeaderSize> out{};
  EncodeFrameHeader(header, out);
  EXPECT_EQ(out[0], 1);  // version
  EXPECT_EQ(out[1], 4);  // RESPONSE
  EXPECT_EQ(out[2], 0x00);
  EXPECT_EQ(out[3], 0x03);  // FINAL | ERROR
  EXPECT_EQ(out[4], 0x01);
  EXPECT_EQ(out[5], 0x02);
  EXPECT_EQ(out[6], 0x03);
  EXPECT_EQ(out[7], 0x04);
  EXPECT_TRUE(std::equal(header.correlation_id.begin(), header.correlation_id.end(), &out[8]));
}

TEST(FrameCodecTest, FrameSplitAtEveryByteBoundaryDecodesTheSame) {
  const std::string wire = EncodeMixedStream();
  FrameDecoder reference;
  reference.Feed(Bytes(wire));
  const std::vector<OwnedFrame> expected = DrainFrames(reference);
  ASSERT_THAT(expected, SizeIs(10));

  for (std::size_t split = 0; split <= wire.size(); ++split) {
    FrameDecoder decoder;
    decoder.Feed(Bytes(wire).first(split));
    std::vector<OwnedFrame> frames = DrainFrames(decoder);
    decoder.Feed(Bytes(wire).subspan(split));
    for (OwnedFrame& frame : DrainFrames(decoder)) {
      frames.push_back(std::move(frame));
    }
    ASSERT_EQ(frames.size(), expected.size()) << "split at byte " << split;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      ASSERT_EQ(frames[i].header.type, expected[i].header.type) << "split " << split;
      ASSERT_EQ(frames[i].header.correlation_id, expected[i].header.correlation_id);
      ASSERT_EQ(frames[i].payload, expected[i].payload) << "split " << split << " frame " << i;
    }
    ASSERT_EQ(decoder.buffered(), 0u);
  }
}

TEST(FrameCodecTest, OneByteAtATimeThroughPrepareAndCommit) {
  const std::string wire = EncodeMixedStream();
  FrameDecoder decoder;
  std::vector<OwnedFrame> frames;
  for (char c : wire) {
    std::span<std::uint8_t> room = decoder.PrepareWrite(1);
    ASSERT_GE(room.size(), 1u);
    room[0] = static_cast<std::uint8_t>(c);
    decoder.CommitWrite(1);
    for (OwnedFrame& frame : DrainFrames(decoder)) {
      frames.push_back(std::move(frame));
    }
  }
  EXPECT_THAT(frames, SizeIs(10));
  EXPECT_EQ(frames.back().payload.size(), 40'000u + 4u);  // tag + 3-byte varint length + body
}

TEST(FrameCodecTest, RandomReadSizesThroughPrepareAndCommit) {
  const std::string wire = EncodeMixedStream();
  std::mt19937 rng(20261203);
  for (int round = 0; round < 50; ++round) {
    FrameDecoder decoder;
    std::size_t sent = 0;
    std::size_t frames = 0;
    while (sent < wire.size()) {
      std::span<std::uint8_t> room = decoder.PrepareWrite(1 + rng() % 3000);
      const std::size_t n =
          std::min({room.size(), wire.size() - sent, static_cast<std::size_t>(1 + rng() % 5000)});
      std::memcpy(room.data(), wire.data() + sent, n);
      decoder.CommitWrite(n);
      sent += n;
      frames += DrainFrames(decoder).size();
    }
    EXPECT_EQ(frames, 10u) << "round " << round;
  }
}

TEST(FrameCodecTest, ManyFramesInOneRead) {
  std::string wire;
  for (std::uint32_t i = 0; i < 1000; ++i) {
    v1::Heartbeat heartbeat;
    heartbeat.set_sequence(i);
    ASSERT_THAT(AppendFrame(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat,
                            kDefaultMaxPayloadSize, &wire),
                IsOk());
  }
  FrameDecoder decoder;
  decoder.Feed(Bytes(wire));
  std::vector<OwnedFrame> frames = DrainFrames(decoder);
  ASSERT_THAT(frames, SizeIs(1000));
  for (std::uint32_t i = 0; i < 1000; ++i) {
    v1::Heartbeat heartbeat;
    ASSERT_TRUE(heartbeat.ParseFromString(frames[i].payload));
    EXPECT_EQ(heartbeat.sequence(), i);
  }
}

TEST(FrameCodecTest, ZeroLengthPayload) {
  std::string wire;
  ASSERT_THAT(AppendFrame(FrameType::kCancel, kFlagFinal, MakeId(5), v1::Cancel(),
                          kDefaultMaxPayloadSize, &wire),
              IsOk());
  ASSERT_EQ(wire.size(), kFrameHeaderSize);
  FrameDecoder decoder;
  decoder.Feed(Bytes(wire));
  auto next = decoder.Next();
  ASSERT_THAT(next, IsOk());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->header.type, FrameType::kCancel);
  EXPECT_TRUE((*next)->header.final());
  EXPECT_TRUE((*next)->payload.empty());
}

TEST(FrameCodecTest, PayloadOfExactlyTheMaximumIsAccepted) {
  constexpr std::uint32_t kMax = 1000;
  const std::string payload(kMax, 'p');
  std::string wire;
  ASSERT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(payload), kMax, &wire), IsOk());
  FrameDecoder decoder(kMax);
  decoder.Feed(Bytes(wire));
  std::vector<OwnedFrame> frames = DrainFrames(decoder);
  ASSERT_THAT(frames, SizeIs(1));
  EXPECT_EQ(frames[0].payload, payload);
}

TEST(FrameCodecTest, PayloadOneOverTheMaximumIsRefusedByTheEncoder) {
  constexpr std::uint32_t kMax = 1000;
  const std::string payload(kMax + 1, 'p');
  std::string wire = "already queued";
  EXPECT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(payload), kMax, &wire),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("REQUEST frame: payload is 1001 bytes, over the maximum payload "
                                 "size of 1000 bytes")));
  EXPECT_EQ(wire, "already queued");

  v1::Request request;
  request.set_body(std::string(kMax, 'b'));  // the body alone fits, the encoded message does not
  EXPECT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), request, kMax, &wire),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("1003 bytes")));
  EXPECT_EQ(wire, "already queued");
}

TEST(FrameCodecTest, PayloadOneOverTheMaximumIsRefusedByTheDecoderAtTheHeader) {
  constexpr std::uint32_t kMax = 1000;
  std::string wire;
  ASSERT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(std::string(kMax + 1, 'p')),
                          kMax + 1, &wire),
              IsOk());
  FrameDecoder decoder(kMax);
  decoder.Feed(Bytes(wire).first(kFrameHeaderSize));  // the header alone is enough to refuse
  EXPECT_THAT(decoder.Next(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("frame header field 'payload length' is 1001 bytes for a REQUEST "
                                 "frame; the maximum payload size is 1000 bytes")));
}

// Writes a raw header with the given first bytes; the rest is a zero length and zero id.
std::string RawHeader(std::uint8_t version, std::uint8_t type, std::uint32_t length = 0) {
  std::string header(kFrameHeaderSize, '\0');
  header[0] = static_cast<char>(version);
  header[1] = static_cast<char>(type);
  header[4] = static_cast<char>(length >> 24);
  header[5] = static_cast<char>(length >> 16);
  header[6] = static_cast<char>(length >> 8);
  header[7] = static_cast<char>(length);
  return header;
}

TEST(FrameCodecTest, BadVersionIsRefusedAndTheErrorIsSticky) {
  FrameDecoder decoder;
  decoder.Feed(Bytes(RawHeader(2, 3)));
  EXPECT_THAT(decoder.Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("frame header field 'version' is 2; this peer speaks protocol "
                                 "version 1")));
  // A valid frame after the bad one changes nothing: the stream cannot be resynchronised.
  std::string good;
  ASSERT_THAT(AppendFrame(FrameType::kHeartbeat, 0, CorrelationId{}, v1::Heartbeat(),
                          kDefaultMaxPayloadSize, &good),
              IsOk());
  decoder.Feed(Bytes(good));
  EXPECT_THAT(decoder.Next(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
}

TEST(FrameCodecTest, UnknownTypesAreRefused) {
  for (std::uint8_t type : {0, 9, 255}) {
    FrameDecoder decoder;
    decoder.Feed(Bytes(RawHeader(1, type)));
    EXPECT_THAT(decoder.Next(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("frame header field 'type' is " + std::to_string(type) +
                                   "; known types are 1 (HELLO) to 8 (WINDOW_UPDATE)")));
  }
}

TEST(FrameCodecTest, IncompleteHeaderIsNotJudgedEarly) {
  FrameDecoder decoder;
  std::string header = RawHeader(9, 99);
  decoder.Feed(Bytes(header).first(kFrameHeaderSize - 1));
  auto next = decoder.Next();
  ASSERT_THAT(next, IsOk());
  EXPECT_FALSE(next->has_value());
}

TEST(FrameCodecTest, HostileLengthDoesNotAllocate) {
  FrameDecoder decoder;
  decoder.Feed(Bytes(RawHeader(1, 3, 0xFFFFFFFF)));
  EXPECT_THAT(decoder.Next(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4294967295 bytes")));
  EXPECT_LE(decoder.capacity(), kFrameHeaderSize);
  // Asking for room to read into after the error does not size the buffer to the bad length.
  decoder.PrepareWrite(16);
  EXPECT_LE(decoder.capacity(), kFrameHeaderSize + 16);
}

TEST(FrameCodecTest, StalledLargeFrameReservesOnlyWhatWasSent) {
  // Even with a limit that allows the 4 GiB length, a peer that sends the header and then stalls
  // costs about what it sent, not what it announced.
  FrameDecoder decoder(0xFFFFFFFF);
  decoder.Feed(Bytes(RawHeader(1, 3, 0xFFFFFFFF)));
  auto next = decoder.Next();
  ASSERT_THAT(next, IsOk());
  EXPECT_FALSE(next->has_value());
  std::size_t sent = kFrameHeaderSize;
  for (int i = 0; i < 8; ++i) {
    std::span<std::uint8_t> room = decoder.PrepareWrite(4096);
    std::memset(room.data(), 'x', 4096);
    decoder.CommitWrite(4096);
    sent += 4096;
    ASSERT_THAT(decoder.Next(), IsOk());
  }
  decoder.PrepareWrite(4096);
  EXPECT_LE(decoder.capacity(), 2 * sent + 4096);
}

TEST(FrameCodecTest, BufferIsReusedAcrossFrames) {
  std::string frame;
  ASSERT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(std::string(16384, 'r')),
                          kDefaultMaxPayloadSize, &frame),
              IsOk());
  FrameDecoder decoder;
  std::size_t capacity_after_first = 0;
  for (int i = 0; i < 200; ++i) {
    std::span<std::uint8_t> room = decoder.PrepareWrite(frame.size());
    ASSERT_GE(room.size(), frame.size());
    std::memcpy(room.data(), frame.data(), frame.size());
    decoder.CommitWrite(frame.size());
    ASSERT_THAT(DrainFrames(decoder), SizeIs(1));
    if (i == 0) {
      capacity_after_first = decoder.capacity();
    }
    ASSERT_EQ(decoder.capacity(), capacity_after_first) << "frame " << i;
  }
  EXPECT_EQ(capacity_after_first, frame.size());
}

TEST(FrameCodecTest, ReleaseIdleMemoryKeepsPartialFrames) {
  std::string wire;
  ASSERT_THAT(AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(std::string(65536, 'r')),
                          kDefaultMaxPayloadSize, &wire),
              IsOk());
  FrameDecoder decoder;
  decoder.Feed(Bytes(wire).first(wire.size() - 1));
  ASSERT_THAT(DrainFrames(decoder), SizeIs(0));
  decoder.ReleaseIdleMemory();  // a partial frame is held: nothing may be freed
  decoder.Feed(Bytes(wire).last(1));
  ASSERT_THAT(DrainFrames(decoder), SizeIs(1));
  EXPECT_GE(decoder.capacity(), wire.size());
  decoder.ReleaseIdleMemory();
  EXPECT_EQ(decoder.capacity(), 0u);
  decoder.Feed(Bytes(wire));
  EXPECT_THAT(DrainFrames(decoder), SizeIs(1));
}

TEST(FrameCodecTest, UndefinedFlagBitsAreIgnored) {
  std::string wire;
  ASSERT_THAT(AppendFrame(FrameType::kResponse, 0xFFFF, MakeId(3), v1::Response(),
                          kDefaultMaxPayloadSize, &wire),
              IsOk());
  FrameDecoder decoder;
  decoder.Feed(Bytes(wire));
  std::vector<OwnedFrame> frames = DrainFrames(decoder);
  ASSERT_THAT(frames, SizeIs(1));
  EXPECT_TRUE(frames[0].header.final());
  EXPECT_TRUE(frames[0].header.error());
}

TEST(FrameCodecTest, MaximumCanBeRenegotiated) {
  FrameDecoder decoder(64);
  decoder.set_max_payload_size(128);
  std::string wire;
  ASSERT_THAT(
      AppendFrame(FrameType::kRequest, 0, MakeId(1), Bytes(std::string(100, 'r')), 128, &wire),
      IsOk());
  decoder.Feed(Bytes(wire));
  EXPECT_THAT(DrainFrames(decoder), SizeIs(1));
}

TEST(FrameCodecTest, ConnectionLevelIdIsAllZero) {
  EXPECT_TRUE(IsConnectionLevel(CorrelationId{}));
  CorrelationId id{};
  id[15] = 1;
  EXPECT_FALSE(IsConnectionLevel(id));
}

TEST(FrameCodecTest, CounterIdsRoundTripAndOtherIdsAreNotCounters) {
  const CorrelationId id = CorrelationIdFromCounter(0x0102030405060708ull);
  EXPECT_EQ(id[0], 0);
  EXPECT_EQ(id[8], 0x01);
  EXPECT_EQ(id[15], 0x08);
  EXPECT_EQ(CounterFromCorrelationId(id), 0x0102030405060708ull);
  CorrelationId other = id;
  other[3] = 0xFF;
  EXPECT_EQ(CounterFromCorrelationId(other), 0u);
  EXPECT_NE(CorrelationIdHash()(id), CorrelationIdHash()(other));
}

TEST(FrameCodecTest, FrameTypeNames) {
  EXPECT_STREQ(FrameTypeName(FrameType::kHelloAck), "HELLO_ACK");
  EXPECT_STREQ(FrameTypeName(FrameType::kWindowUpdate), "WINDOW_UPDATE");
  EXPECT_STREQ(FrameTypeName(static_cast<FrameType>(42)), "UNKNOWN");
}

}  // namespace
}  // namespace stella::runtime
