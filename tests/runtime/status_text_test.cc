#include "runtime/status_text.h"

#include <gtest/gtest.h>

#include <string>

#include "stella/router/v1/frames.pb.h"

namespace stella::runtime {
namespace {

// What the receiver does with the text: parse it out of a proto3 string field.
bool ParsesAsProtoString(const std::string& text) {
  router::v1::Response response;
  response.set_message(text);
  router::v1::Response parsed;
  return parsed.ParseFromString(response.SerializeAsString()) && parsed.message() == text;
}

TEST(StatusTextTest, ValidTextIsUnchanged) {
  const std::string text =
      "instance \"eu-1\" of service \"greeter\" disconnected: Grüße, 世界 🙂";
  EXPECT_EQ(StatusText(text), text);
  EXPECT_EQ(StatusText(""), "");
}

TEST(StatusTextTest, EachInvalidByteBecomesOneReplacementCharacter) {
  EXPECT_EQ(StatusText("a\xFF"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(StatusText("\xC3"), "\xEF\xBF\xBD");                  // a truncated sequence
  EXPECT_EQ(StatusText("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(StatusText("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(StatusText("\xF4\x90\x80\x80").size(), 12u);  // past U+10FFFF: four bad bytes
  EXPECT_FALSE(ParsesAsProtoString("reason \xFF"));
  EXPECT_TRUE(ParsesAsProtoString(StatusText("reason \xFF")));
}

TEST(StatusTextTest, LongTextIsCutAtACharacterBoundaryWithAnEllipsis) {
  const std::string long_text = std::string(2000, 'x');
  const std::string cut = StatusText(long_text);
  EXPECT_EQ(cut.size(), kMaxStatusText);
  EXPECT_EQ(cut.substr(cut.size() - 3), "...");
  // Two-byte characters straddling the limit are never split.
  std::string umlauts;
  for (int i = 0; i < 600; ++i) {
    umlauts += "\xC3\xBC";  // ü
  }
  const std::string cut_umlauts = StatusText(umlauts, 10);
  EXPECT_EQ(cut_umlauts, "\xC3\xBC\xC3\xBC\xC3\xBC...");
  EXPECT_TRUE(ParsesAsProtoString(StatusText(umlauts, 11)));
  // Exactly the limit fits without an ellipsis.
  EXPECT_EQ(StatusText("abcdefghij", 10), "abcdefghij");
  EXPECT_EQ(StatusText("abcdefghijk", 10), "abcdefg...");
}

}  // namespace
}  // namespace stella::runtime
