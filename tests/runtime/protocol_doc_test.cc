// Keeps docs/protocol.md honest: its hex example, its frame-type table and its decoder error
// sentences must be what the code produces.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/frame_codec.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/support/status_matchers.h"

namespace stella::runtime {
namespace {

using ::stella::testing::IsOk;
using ::testing::HasSubstr;

std::string ReadProtocolDoc() {
  std::ifstream in(std::string(STELLA_SOURCE_DIR) + "/docs/protocol.md");
  EXPECT_TRUE(in.good()) << "docs/protocol.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Formats bytes as the doc does: offset, then 16 bytes per line in two groups of 8.
std::string HexDump(const std::string& bytes) {
  std::string out;
  for (std::size_t line = 0; line < bytes.size(); line += 16) {
    out += absl::StrFormat("%08x ", line);
    for (std::size_t i = line; i < std::min(bytes.size(), line + 16); ++i) {
      out += (i - line) == 8 ? "  " : " ";
      out += absl::StrFormat("%02x", static_cast<std::uint8_t>(bytes[i]));
    }
    out += "\n";
  }
  return out;
}

TEST(ProtocolDocTest, HexExampleIsWhatTheEncoderWrites) {
  CorrelationId id;
  for (std::size_t i = 0; i < id.size(); ++i) {
    id[i] = static_cast<std::uint8_t>(i * 0x11);
  }
  router::v1::Request request;
  request.set_method("a.B/C");
  request.set_body("hi");
  std::string wire;
  ASSERT_THAT(
      AppendFrame(FrameType::kRequest, kFlagFinal, id, request, kDefaultMaxPayloadSize, &wire),
      IsOk());
  EXPECT_THAT(ReadProtocolDoc(), HasSubstr(HexDump(wire)));
}

TEST(ProtocolDocTest, FrameTypeTableMatchesTheCode) {
  const std::string doc = ReadProtocolDoc();
  for (int type = 1; type <= 8; ++type) {
    const std::string row =
        absl::StrFormat("| %d | %s |", type, FrameTypeName(static_cast<FrameType>(type)));
    EXPECT_THAT(doc, HasSubstr(row));
  }
}

TEST(ProtocolDocTest, DecoderErrorSentencesAreDocumented) {
  const std::string doc = ReadProtocolDoc();
  EXPECT_THAT(doc, HasSubstr("`frame header field 'version' is N; this peer speaks protocol "
                             "version 1`"));
  EXPECT_THAT(doc, HasSubstr("`frame header field 'type' is N; known types are 1 (HELLO) to 8 "
                             "(WINDOW_UPDATE)`"));
  EXPECT_THAT(doc, HasSubstr("`frame header field 'payload length' is N bytes for a T frame; the "
                             "maximum payload size is M bytes`"));
  EXPECT_THAT(doc, HasSubstr(absl::StrFormat("| 4 MiB |")));
  static_assert(kDefaultMaxPayloadSize == 4u << 20, "docs/protocol.md says 4 MiB");
}

}  // namespace
}  // namespace stella::runtime
