// What a real gateway's listeners accept at the TLS layer, probed from outside with clients that
// offer one thing at a time: only TLS 1.2 and 1.3, only forward-secret AEAD suites, no
// compression, no renegotiation. The clients run on their own thread with blocking sockets (as an
// attacker's would); the gateway runs on the test's loop.
#include <sys/socket.h>
#include <unistd.h>

// clang-format off
#include "runtime/boringssl.h"  // first among OpenSSL-API headers: refuses OpenSSL 3
// clang-format on

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/gateway.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/gateway/loopback_gateway.h"
#include "tests/support/blocking_peer.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::gateway {
namespace {

using runtime::tls::TlsRole;
using ::stella::testing::ConnectLoopback;
using ::stella::testing::IsOk;
using ::stella::testing::RunCommand;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;

struct Outcome {
  bool ok = false;
  std::uint16_t version = 0;  // negotiated, when ok
  std::string cipher;         // negotiated, when ok
  std::string error;          // BoringSSL's reason, when not
};

class TlsPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto gateway = StartLoopbackGateway(loop_.io(), "gw-tls",
                                        pki_.Context(pki_.server, TlsRole::kServer, dir_));
    ASSERT_THAT(gateway, IsOk());
    gateway_ = *std::move(gateway);
  }

  // A full handshake with the service listener by a BoringSSL client presenting the greeter
  // certificate, after `configure` has narrowed what the client offers.
  Outcome Handshake(const std::function<void(SSL_CTX*)>& configure) {
    const std::uint16_t port = gateway_->service_port();
    return loop_.RunOffLoop<Outcome>([this, port, configure] {
      Outcome outcome;
      bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
      SSL_CTX_use_certificate(ctx.get(), pki_.client.cert.get());
      SSL_CTX_use_PrivateKey(ctx.get(), pki_.client.key.get());
      X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), pki_.root.cert.get());
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
      SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
      static constexpr std::uint8_t kAlpn[] = {8, 's', 't', 'e', 'l', 'l', 'a', '/', '1'};
      SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof(kAlpn));
      configure(ctx.get());
      const int fd = ConnectLoopback(port);
      if (fd < 0) {
        outcome.error = "cannot connect";
        return outcome;
      }
      bssl::UniquePtr<SSL> ssl(SSL_new(ctx.get()));
      SSL_set_fd(ssl.get(), fd);
      SSL_set_tlsext_host_name(ssl.get(), "localhost");
      ERR_clear_error();
      if (SSL_connect(ssl.get()) == 1) {
        outcome.ok = true;
        outcome.version = SSL_version(ssl.get());
        outcome.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl.get()));
        SSL_shutdown(ssl.get());
      } else {
        const std::uint32_t packed = ERR_peek_last_error();
        outcome.error = packed == 0 ? "no reason" : ERR_reason_error_string(packed);
      }
      ERR_clear_error();
      ::close(fd);
      return outcome;
    });
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  std::unique_ptr<Gateway> gateway_;
};

TEST_F(TlsPolicyTest, OnlyTls12AndTls13AreAccepted) {
  struct Case {
    std::uint16_t version;
    const char* name;
    bool accepted;
  };
  for (const Case& c :
       {Case{TLS1_VERSION, "TLS 1.0", false}, Case{TLS1_1_VERSION, "TLS 1.1", false},
        Case{TLS1_2_VERSION, "TLS 1.2", true}, Case{TLS1_3_VERSION, "TLS 1.3", true}}) {
    const Outcome outcome = Handshake([&](SSL_CTX* ctx) {
      SSL_CTX_set_min_proto_version(ctx, c.version);
      SSL_CTX_set_max_proto_version(ctx, c.version);
    });
    EXPECT_EQ(outcome.ok, c.accepted) << c.name << ": " << outcome.error;
    if (outcome.ok) {
      EXPECT_EQ(outcome.version, c.version) << c.name;
    } else {
      // The gateway answers with protocol_version, not a dropped connection.
      EXPECT_THAT(outcome.error, HasSubstr("PROTOCOL_VERSION")) << c.name;
    }
  }
}

TEST_F(TlsPolicyTest, OnlyForwardSecretAeadSuitesAreAcceptedInTls12) {
  // Every TLS 1.2-capable suite this BoringSSL knows, offered alone.
  bssl::UniquePtr<SSL_CTX> all(SSL_CTX_new(TLS_method()));
  ASSERT_TRUE(SSL_CTX_set_strict_cipher_list(all.get(), "ALL"));
  std::vector<const SSL_CIPHER*> suites;
  const STACK_OF(SSL_CIPHER)* list = SSL_CTX_get_ciphers(all.get());
  for (std::size_t i = 0; i < sk_SSL_CIPHER_num(list); ++i) {
    const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(list, i);
    if (SSL_CIPHER_get_min_version(cipher) <= TLS1_2_VERSION) {
      suites.push_back(cipher);
    }
  }
  ASSERT_GE(suites.size(), 10u);

  std::set<std::string> accepted;
  for (const SSL_CIPHER* cipher : suites) {
    const std::string name = SSL_CIPHER_get_name(cipher);
    const Outcome outcome = Handshake([&](SSL_CTX* ctx) {
      SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
      ASSERT_TRUE(SSL_CTX_set_strict_cipher_list(ctx, name.c_str())) << name;
    });
    if (!outcome.ok) {
      continue;
    }
    accepted.insert(name);
    EXPECT_EQ(outcome.cipher, name);
    EXPECT_TRUE(SSL_CIPHER_is_aead(cipher)) << name << " is not an AEAD";
    EXPECT_EQ(SSL_CIPHER_get_kx_nid(cipher), NID_kx_ecdhe) << name << " is not forward secret";
  }
  // The gateway's certificate is ECDSA: exactly the ECDSA members of its list.
  EXPECT_EQ(accepted,
            (std::set<std::string>{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"}));
}

TEST_F(TlsPolicyTest, Tls13NegotiatesAnAeadSuite) {
  const Outcome outcome =
      Handshake([](SSL_CTX* ctx) { SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION); });
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_EQ(outcome.version, TLS1_3_VERSION);
  EXPECT_THAT(outcome.cipher, ::testing::AnyOf("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                               "TLS_CHACHA20_POLY1305_SHA256"));
}

// A TLS 1.2 ClientHello, built by hand so that it can offer what no TLS library offers any more:
// ECDHE-ECDSA-AES128-GCM-SHA256, X25519, ecdsa_secp256r1_sha256, and `compression` as the
// compression methods (1 = DEFLATE, 0 = null).
std::string ClientHello(const std::vector<std::uint8_t>& compression) {
  std::string body;
  auto u8 = [&body](unsigned v) { body.push_back(static_cast<char>(v & 0xff)); };
  auto u16 = [&u8](unsigned v) {
    u8(v >> 8);
    u8(v);
  };
  u16(0x0303);  // client_version TLS 1.2
  for (int i = 0; i < 32; ++i) {
    u8(0x40 + i);  // random
  }
  u8(0);  // session_id
  u16(2);
  u16(0xc02b);  // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
  u8(static_cast<unsigned>(compression.size()));
  for (std::uint8_t method : compression) {
    u8(method);
  }
  const std::vector<std::uint8_t> extensions = {
      0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d,  // supported_groups: x25519
      0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,              // ec_point_formats: uncompressed
      0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03,  // signature_algorithms: ecdsa_p256_sha256
  };
  u16(static_cast<unsigned>(extensions.size()));
  body.append(extensions.begin(), extensions.end());

  std::string handshake;
  handshake.push_back(0x01);  // client_hello
  handshake.push_back(static_cast<char>(body.size() >> 16));
  handshake.push_back(static_cast<char>(body.size() >> 8));
  handshake.push_back(static_cast<char>(body.size()));
  handshake += body;
  std::string record = {0x16, 0x03, 0x01, static_cast<char>(handshake.size() >> 8),
                        static_cast<char>(handshake.size() & 0xff)};
  return record + handshake;
}

// Sends `hello` and returns the first record the gateway answers with (at most 4 KiB), or "" if
// it closed without one.
std::string FirstRecord(std::uint16_t port, const std::string& hello) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) {
    return "";
  }
  std::string answer;
  if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(hello.size())) {
    std::array<char, 4096> buffer{};
    auto record_length = [&answer] {
      return std::size_t{5} + ((std::size_t{static_cast<std::uint8_t>(answer[3])} << 8) |
                               std::size_t{static_cast<std::uint8_t>(answer[4])});
    };
    while (answer.size() < 5 || answer.size() < record_length()) {
      const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) {
        break;
      }
      answer.append(buffer.data(), static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return answer;
}

TEST_F(TlsPolicyTest, CompressionIsNeverNegotiated) {
  const std::uint16_t port = gateway_->service_port();
  // DEFLATE preferred, null allowed: the ServerHello picks null.
  const std::string answer = loop_.RunOffLoop<std::string>([&] {
    return FirstRecord(port, ClientHello({1, 0}));
  });
  ASSERT_GE(answer.size(), 5u + 4 + 2 + 32 + 1);
  ASSERT_EQ(answer[0], 0x16) << "a handshake record";
  ASSERT_EQ(answer[5], 0x02) << "a ServerHello";
  const std::size_t session_id_at = 5 + 4 + 2 + 32;
  const std::size_t session_id_length = static_cast<std::uint8_t>(answer[session_id_at]);
  const std::size_t compression_at = session_id_at + 1 + session_id_length + 2;
  ASSERT_GT(answer.size(), compression_at);
  EXPECT_EQ(answer[compression_at], 0) << "the null compression method";

  // DEFLATE only: refused with an alert.
  const std::string refused =
      loop_.RunOffLoop<std::string>([&] { return FirstRecord(port, ClientHello({1})); });
  ASSERT_GE(refused.size(), 7u);
  EXPECT_EQ(refused[0], 0x15) << "an alert record";
  EXPECT_EQ(refused[5], 2) << "a fatal alert";
}

TEST_F(TlsPolicyTest, RenegotiationIsRefused) {
  // BoringSSL's client cannot start a renegotiation; OpenSSL's command-line client can ("R").
  // It runs as a separate process: OpenSSL 3 never enters this one.
  const std::string cert = dir_.Write("client.pem", TestPki::Pem(pki_.client));
  const std::string key = dir_.Write("client.key", TestPki::KeyPem(pki_.client));
  const std::string ca = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
  const std::uint16_t port = gateway_->service_port();
  const auto result = loop_.RunOffLoop<testing::CommandResult>([&] {
    return RunCommand(absl::StrCat(
        "(sleep 1; echo R; sleep 2) | timeout 20 openssl s_client -connect 127.0.0.1:", port,
        " -tls1_2 -cert ", cert, " -key ", key, " -CAfile ", ca,
        " -servername localhost -alpn stella/1 -brief -verify_return_error"));
  });
  // The handshake worked, the client asked to renegotiate, and the gateway's answer was the fatal
  // no_renegotiation alert (100).
  EXPECT_THAT(result.output, HasSubstr("CONNECTION ESTABLISHED"));
  EXPECT_THAT(result.output, HasSubstr("Verification: OK"));
  EXPECT_THAT(result.output, HasSubstr("RENEGOTIATING"));
  EXPECT_THAT(result.output, HasSubstr("alert no renegotiation"));
}

}  // namespace
}  // namespace stella::gateway
