// A real gateway against peers that misbehave below the level any Stella component would: half a
// ClientHello and then silence, a 4 GiB length prefix, a revoked certificate, a service that stops
// reading its socket. Each must end with that peer closed or refused, the other peers unaffected
// and the gateway's memory bounded. The peers are blocking clients (tests/support/blocking_peer)
// run off the gateway's loop.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gateway/gateway.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/tls_context.h"
#include "runtime/tls/trust.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/gateway/loopback_gateway.h"
#include "tests/support/blocking_peer.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::gateway {
namespace {

namespace v1 = ::stella::router::v1;
using runtime::CorrelationIdFromCounter;
using runtime::FrameType;
using runtime::kFlagFinal;
using ::stella::testing::BlockingTlsPeer;
using ::stella::testing::ConnectLoopback;
using ::stella::testing::IsOk;
using ::stella::testing::RawFrame;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSayHello[] = "greeter.v1.Greeter/SayHello";

class HostilePeersTest : public ::testing::Test {
 protected:
  HostilePeersTest() {
    frontend_ = testing::MustMint(testing::LeafSpec("frontend", false, true), &pki_.root);
  }

  // A gateway whose listeners check the test CA's CRL (which revokes pki_.client_revoked).
  void StartGateway(const std::function<void(GatewayConfig&)>& adjust = nullptr) {
    runtime::tls::CredentialSource source;
    source.certificate_path =
        dir_.Write("gw.pem", TestPki::Pem(pki_.server) + TestPki::KeyPem(pki_.server));
    runtime::tls::TrustSource trust;
    trust.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    trust.crl_paths = {dir_.Write("ca.crl", pki_.crl_pem)};
    trust.revocation_mode = runtime::tls::RevocationMode::kOffline;
    runtime::tls::TlsOptions options;
    options.role = runtime::tls::TlsRole::kServer;
    auto credentials =
        runtime::tls::LoadCredentials(source, runtime::tls::CertificateUsage::kServer, absl::Now());
    auto bundle = runtime::tls::LoadTrust(trust);
    ASSERT_THAT(credentials, IsOk());
    ASSERT_THAT(bundle, IsOk());
    auto tls =
        runtime::tls::TlsContext::Create(options, *std::move(credentials), *std::move(bundle));
    ASSERT_THAT(tls, IsOk());
    auto gateway = StartLoopbackGateway(loop_.io(), "gw-hostile", *std::move(tls), adjust);
    ASSERT_THAT(gateway, IsOk());
    gateway_ = *std::move(gateway);
  }

  // Connects `cert` to a listener off the loop; nullptr (and the reason in *error) if refused.
  std::unique_ptr<BlockingTlsPeer> Dial(const testing::MintedCert& cert, bool service,
                                        std::string* error, int timeout_ms = 10000) {
    const std::uint16_t port = service ? gateway_->service_port() : gateway_->caller_port();
    return loop_.RunOffLoop<std::unique_ptr<BlockingTlsPeer>>(
        [&] { return BlockingTlsPeer::Connect(port, cert, pki_.root, error, timeout_ms); });
  }

  static v1::Hello ServiceHello(const std::string& instance) {
    v1::Hello hello;
    hello.set_role(v1::ROLE_SERVICE);
    hello.set_service_name("greeter");
    hello.set_instance_id(instance);
    v1::Endpoint* endpoint = hello.add_endpoints();
    endpoint->set_method(kSayHello);
    endpoint->set_request_type("greeter.v1.HelloRequest");
    endpoint->set_response_type("greeter.v1.HelloReply");
    endpoint->set_kind(v1::CALL_KIND_UNARY);
    return hello;
  }

  // Sends `hello` and reads the HELLO_ACK, off the loop.
  v1::HelloAck Hello(BlockingTlsPeer& peer, const v1::Hello& hello) {
    return loop_.RunOffLoop<v1::HelloAck>([&] {
      v1::HelloAck ack;
      if (!peer.WriteFrame(FrameType::kHello, 0, runtime::CorrelationId{}, hello)) {
        ack.set_reason("HELLO could not be written");
        return ack;
      }
      std::optional<RawFrame> frame = peer.ReadFrame();
      if (!frame.has_value() || frame->type != FrameType::kHelloAck ||
          !ack.ParseFromString(frame->payload)) {
        ack.set_reason("no HELLO_ACK");
      }
      return ack;
    });
  }

  std::string Metrics() { return gateway_->metrics().Serialize(); }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  testing::MintedCert frontend_;
  std::unique_ptr<Gateway> gateway_;
};

TEST_F(HostilePeersTest, HalfAClientHelloThenSilenceIsClosedAtTheHandshakeTimeout) {
  StartGateway([](GatewayConfig& config) {
    config.services.tls.handshake_timeout = absl::Milliseconds(300);
  });
  const std::uint16_t port = gateway_->service_port();
  struct Result {
    bool closed = false;
    std::chrono::milliseconds after{0};
  };
  const Result result = loop_.RunOffLoop<Result>([port] {
    Result out;
    const int fd = ConnectLoopback(port);
    if (fd < 0) {
      return out;
    }
    // A handshake record header promising 512 bytes, and the first few of a ClientHello.
    constexpr std::array<std::uint8_t, 11> kPartial = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01,
                                                       0x00, 0x01, 0xfc, 0x03, 0x03};
    const auto start = std::chrono::steady_clock::now();
    if (::send(fd, kPartial.data(), kPartial.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(kPartial.size())) {
      out.closed = testing::WaitForClose(fd);
    }
    out.after = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    ::close(fd);
    return out;
  });
  EXPECT_TRUE(result.closed) << "still open after " << result.after.count() << " ms";
  EXPECT_GE(result.after, std::chrono::milliseconds(250)) << "closed before the timeout";
  // The gateway counts the failure once its handshake coroutine has seen the timeout.
  EXPECT_TRUE(loop_.PumpUntil([&] {
    return absl::StrContains(
        Metrics(), "stella_gateway_handshake_failures_total{reason=\"handshake_timeout\"} 1");
  })) << Metrics();
}

TEST_F(HostilePeersTest, RevokedCertificateIsRefusedAndNamed) {
  StartGateway();
  std::string error;
  auto peer = Dial(pki_.client_revoked, /*service=*/true, &error);
  if (peer != nullptr) {
    // TLS 1.3: the client finishes before the server has checked it; the refusal comes next.
    EXPECT_TRUE(loop_.RunOffLoop<bool>([&] { return peer->WaitForClose(); }));
  }
  ASSERT_TRUE(loop_.PumpUntil([&] { return absl::StrContains(Metrics(), "reason=\"revoked\""); }))
      << Metrics();
  EXPECT_TRUE(gateway_->routes().Snapshot()->instances.empty());
}

TEST_F(HostilePeersTest, FourGibLengthPrefixGetsGoawayAndOnlyThatConnectionCloses) {
  StartGateway();
  std::string error;
  auto good = Dial(pki_.client, /*service=*/true, &error);
  ASSERT_NE(good, nullptr) << error;
  ASSERT_TRUE(Hello(*good, ServiceHello("good")).accepted());
  auto bad = Dial(pki_.client, /*service=*/true, &error);
  ASSERT_NE(bad, nullptr) << error;
  ASSERT_TRUE(Hello(*bad, ServiceHello("bad")).accepted());
  ASSERT_TRUE(
      loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.size() == 2; }));

  runtime::FrameHeader header;
  header.type = FrameType::kResponse;
  header.payload_length = 0xFFFFFFFFu;
  header.correlation_id = CorrelationIdFromCounter(1);
  std::array<std::uint8_t, runtime::kFrameHeaderSize> bytes{};
  runtime::EncodeFrameHeader(header, bytes);
  struct Result {
    std::optional<RawFrame> goaway;
    bool closed = false;
  };
  const Result result = loop_.RunOffLoop<Result>([&] {
    Result out;
    if (bad->WriteRaw({reinterpret_cast<const char*>(bytes.data()), bytes.size()})) {
      out.goaway = bad->ReadFrame();
      out.closed = bad->WaitForClose();
    }
    return out;
  });
  ASSERT_TRUE(result.goaway.has_value());
  EXPECT_EQ(result.goaway->type, FrameType::kGoaway);
  v1::Goaway goaway;
  ASSERT_TRUE(goaway.ParseFromString(result.goaway->payload));
  EXPECT_THAT(goaway.reason(), HasSubstr("4294967295"));
  EXPECT_EQ(goaway.code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(result.closed);

  // The other service is still registered, and its connection still answers.
  ASSERT_TRUE(
      loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.size() == 1; }));
  EXPECT_EQ(gateway_->routes().Snapshot()->instances.front()->instance_id, "good");
}

TEST_F(HostilePeersTest, ServiceThatStopsReadingGetsResourceExhaustedNeverUnboundedMemory) {
  constexpr std::uint64_t kQueueLimit = std::uint64_t{1} << 20;
  StartGateway(
      [](GatewayConfig& config) { config.limits.max_queued_bytes_per_connection = kQueueLimit; });
  std::string error;
  // The service registers, then never reads its socket again.
  auto stalled = Dial(pki_.client, /*service=*/true, &error);
  ASSERT_NE(stalled, nullptr) << error;
  ASSERT_TRUE(Hello(*stalled, ServiceHello("stalled")).accepted());
  auto caller = Dial(frontend_, /*service=*/false, &error);
  ASSERT_NE(caller, nullptr) << error;
  v1::Hello hello;
  hello.set_role(v1::ROLE_CALLER);
  ASSERT_TRUE(Hello(*caller, hello).accepted());

  // 400 calls of 64 KiB (25 MiB: far more than the socket buffers and the 1 MiB queue hold),
  // each allowed 3 s. Every one must end: RESOURCE_EXHAUSTED when the service's queue is full,
  // DEADLINE_EXCEEDED for the ones that reached a service that never answers.
  constexpr int kCalls = 400;
  struct Result {
    int written = 0;
    std::map<int, int> codes;  // status code -> calls that ended with it
  };
  const Result result = loop_.RunOffLoop<Result>(
      [&] {
        Result out;
        v1::Request request;
        request.set_method(kSayHello);
        request.set_body(std::string(std::size_t{64} * 1024, 'x'));
        request.set_timeout_us(3'000'000);
        for (int i = 0; i < kCalls; ++i) {
          if (!caller->WriteFrame(FrameType::kRequest, kFlagFinal, CorrelationIdFromCounter(i + 1),
                                  request)) {
            break;
          }
          ++out.written;
        }
        int ended = 0;
        while (ended < out.written) {
          std::optional<RawFrame> frame = caller->ReadFrame();
          if (!frame.has_value()) {
            break;
          }
          if (frame->type == FrameType::kResponse && (frame->flags & kFlagFinal)) {
            v1::Response response;
            response.ParseFromString(frame->payload);
            ++out.codes[response.code()];
            ++ended;
          }
        }
        return out;
      },
      std::chrono::seconds(60));
  EXPECT_EQ(result.written, kCalls);
  int ended = 0;
  for (const auto& [code, count] : result.codes) {
    ended += count;
    EXPECT_THAT(code, ::testing::AnyOf(static_cast<int>(absl::StatusCode::kResourceExhausted),
                                       static_cast<int>(absl::StatusCode::kDeadlineExceeded)))
        << count << " calls ended with code " << code;
  }
  EXPECT_EQ(ended, kCalls) << "every call ends with a definite status";
  EXPECT_TRUE(result.codes.contains(static_cast<int>(absl::StatusCode::kResourceExhausted)));
}

// The base64 body of a PEM block, without line breaks or armour: what a leaked key or certificate
// would look like in a log, whichever way it was wrapped.
std::string PemBody(const std::string& pem) {
  std::string body;
  std::istringstream lines(pem);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.rfind("-----", 0) != 0 && line.find(':') == std::string::npos) {
      body += line;
    }
  }
  return body;
}

TEST_F(HostilePeersTest, FailureLogsNeverCarryKeysPasswordsOrCertificates) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  spdlog::default_logger()->sinks().push_back(sink);
  StartGateway();

  // Every kind of refused client certificate, plus a credential file with the wrong password.
  const std::vector<const testing::MintedCert*> refused = {
      &pki_.client_other_ca, &pki_.client_expired, &pki_.client_server_auth_only,
      &pki_.client_revoked};
  for (const testing::MintedCert* cert : refused) {
    std::string error;
    auto peer = Dial(*cert, /*service=*/true, &error);
    if (peer != nullptr) {
      EXPECT_TRUE(loop_.RunOffLoop<bool>([&] { return peer->WaitForClose(); }));
    }
  }
  ASSERT_TRUE(loop_.PumpUntil([&] {
    return absl::StrContains(log.str(), "intruder") && absl::StrContains(log.str(), "expired") &&
           absl::StrContains(log.str(), "wrong-usage") && absl::StrContains(log.str(), "revoked");
  })) << log.str();
  constexpr char kPassword[] = "correct horse battery staple";
  runtime::tls::CredentialSource source;
  source.certificate_path =
      dir_.Write("locked.pem", TestPki::Pem(pki_.client) + TestPki::KeyPem(pki_.client, kPassword));
  source.password = "wrong password 12345";
  auto loaded =
      runtime::tls::LoadCredentials(source, runtime::tls::CertificateUsage::kClient, absl::Now());
  ASSERT_FALSE(loaded.ok());
  const std::string refusal(loaded.status().message());
  spdlog::default_logger()->sinks().pop_back();

  const std::string text = log.str() + refusal;
  EXPECT_THAT(text, Not(HasSubstr("-----BEGIN")));
  EXPECT_THAT(text, Not(HasSubstr("PRIVATE KEY")));
  EXPECT_THAT(text, Not(HasSubstr(kPassword)));
  EXPECT_THAT(text, Not(HasSubstr(source.password)));
  for (const testing::MintedCert* cert : refused) {
    // No key, and no certificate beyond its names: not even 40 characters of either in base64.
    EXPECT_THAT(text, Not(HasSubstr(PemBody(TestPki::KeyPem(*cert)).substr(20, 40))));
    EXPECT_THAT(text, Not(HasSubstr(PemBody(TestPki::Pem(*cert)).substr(40, 40))));
  }
  EXPECT_THAT(text, Not(HasSubstr(PemBody(TestPki::KeyPem(pki_.server)).substr(20, 40))));
}

}  // namespace
}  // namespace stella::gateway
