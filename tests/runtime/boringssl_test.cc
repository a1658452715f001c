// Proves that the process links BoringSSL and not OpenSSL 3: the version string comes from the
// library actually loaded, so a build that picked up the wrong libssl fails here.
#include "runtime/boringssl.h"

#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/sha.h>

#include <array>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace stella::runtime {
namespace {

TEST(BoringSslTest, LinkedLibraryIsBoringSsl) {
  EXPECT_THAT(std::string(OpenSSL_version(OPENSSL_VERSION)), ::testing::HasSubstr("BoringSSL"));
}

TEST(BoringSslTest, Sha256OfAbcMatchesFips180Vector) {
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  const std::string input = "abc";
  SHA256(reinterpret_cast<const std::uint8_t*>(input.data()), input.size(), digest.data());
  EXPECT_EQ(digest[0], 0xba);
  EXPECT_EQ(digest[1], 0x78);
  EXPECT_EQ(digest[31], 0xad);
}

}  // namespace
}  // namespace stella::runtime
