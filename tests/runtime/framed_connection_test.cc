// Real mutual TLS over loopback between FramedConnections (and a few deliberately broken raw
// clients), with certificates from the in-process test PKI.
#include "runtime/framed_connection.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/boringssl.h"  // must come first among OpenSSL-API headers
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::runtime {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using tcp = asio::ip::tcp;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::AllOf;
using ::testing::HasSubstr;
using tls::CertificateUsage;
using tls::CertSpec;
using tls::Credentials;
using tls::TlsContext;
using tls::TlsOptions;
using tls::TlsRole;

using ConnectionOr = absl::StatusOr<std::shared_ptr<FramedConnection>>;

class FramedConnectionTest : public ::testing::Test {
 protected:
  FramedConnectionTest()
      : acceptor_(loop_.io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
  }

  Credentials Creds(const testing::MintedCert& cert, CertificateUsage usage) {
    tls::CredentialSource source;
    source.certificate_path = dir_.Write("c.pem", TestPki::Pem(cert) + TestPki::KeyPem(cert));
    absl::StatusOr<Credentials> creds = tls::LoadCredentials(source, usage, absl::Now());
    EXPECT_THAT(creds, IsOk());
    return *std::move(creds);
  }

  tls::TrustBundle Trust(const testing::MintedCert& ca) {
    tls::TrustSource source;
    source.ca_path = dir_.Write("ca.pem", TestPki::Pem(ca));
    absl::StatusOr<tls::TrustBundle> trust = tls::LoadTrust(source);
    EXPECT_THAT(trust, IsOk());
    return *std::move(trust);
  }

  std::shared_ptr<const TlsContext> ServerTls(TlsOptions options = {}) {
    options.role = TlsRole::kServer;
    auto tls = TlsContext::Create(options, Creds(pki_.server, CertificateUsage::kServer),
                                  Trust(pki_.root));
    EXPECT_THAT(tls, IsOk());
    return *tls;
  }

  std::shared_ptr<const TlsContext> ClientTls(const testing::MintedCert& cert,
                                              TlsOptions options = {}) {
    options.role = TlsRole::kClient;
    if (options.expected_server_name.empty()) {
      options.expected_server_name = "localhost";
    }
    auto tls =
        TlsContext::Create(options, Creds(cert, CertificateUsage::kClient), Trust(pki_.root));
    EXPECT_THAT(tls, IsOk());
    return *tls;
  }

  // Accepts one connection and runs the server handshake on it.
  asio::awaitable<ConnectionOr> AcceptOne(std::shared_ptr<const TlsContext> tls,
                                          ConnectionOptions options) {
    tcp::socket socket = co_await acceptor_.async_accept(asio::use_awaitable);
    auto connection = FramedConnection::FromAccepted(std::move(socket), tls, options);
    absl::Status status = co_await connection->Handshake();
    if (!status.ok()) {
      co_return status;
    }
    co_return connection;
  }

  // Runs a server accept and a client connect against each other.
  std::pair<ConnectionOr, ConnectionOr> Pair(std::shared_ptr<const TlsContext> server_tls,
                                             std::shared_ptr<const TlsContext> client_tls,
                                             ConnectionOptions server_options = {},
                                             ConnectionOptions client_options = {}) {
    std::optional<ConnectionOr> server;
    loop_.Spawn(AcceptOne(std::move(server_tls), server_options), &server);
    ConnectionOr client = loop_.Run(FramedConnection::Connect(
        loop_.executor(), "127.0.0.1", port_, std::move(client_tls), client_options));
    EXPECT_TRUE(loop_.PumpUntil([&] { return server.has_value(); }));
    return {*std::move(server), std::move(client)};
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
};

// Collects what a started connection receives and how it closes.
struct Recorder {
  std::vector<std::string> payloads;
  std::vector<FrameType> types;
  std::optional<absl::Status> closed;

  FramedConnection::FrameHandler OnFrame() {
    return [this](const FrameView& frame) {
      types.push_back(frame.header.type);
      payloads.emplace_back(frame.payload.begin(), frame.payload.end());
    };
  }
  FramedConnection::CloseHandler OnClosed() {
    return [this](const absl::Status& status) { closed = status; };
  }
};

CorrelationId Id(std::uint8_t n) {
  CorrelationId id{};
  id[15] = n;
  return id;
}

TEST_F(FramedConnectionTest, MutualTls13HandshakeAndIdentities) {
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client));
  ASSERT_THAT(server, IsOk());
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ((*server)->tls_version(), "TLSv1.3");
  EXPECT_EQ((*server)->peer().common_name, "greeter");
  EXPECT_EQ((*server)->peer().spiffe_id, "spiffe://example.org/ns/prod/greeter");
  EXPECT_EQ((*client)->peer().common_name, "gateway.internal");
  EXPECT_FALSE((*client)->session_resumed());
}

TEST_F(FramedConnectionTest, MutualTls12Handshake) {
  TlsOptions only12;
  only12.allow_tls13 = false;
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client, only12));
  ASSERT_THAT(server, IsOk());
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ((*client)->tls_version(), "TLSv1.2");
  EXPECT_EQ((*server)->peer().common_name, "greeter");
}

TEST_F(FramedConnectionTest, Ed25519CertificatesWorkEndToEnd) {
  auto ed = [](CertSpec spec) {
    spec.key_type = tls::KeyType::kEd25519;
    return spec;
  };
  CertSpec ca_spec = testing::LeafSpec("Ed25519 CA", false, false);
  ca_spec.is_ca = true;
  testing::MintedCert ca = testing::MustMint(ed(ca_spec), nullptr);
  CertSpec server_spec = testing::LeafSpec("localhost", true, false);
  server_spec.dns_names = {"localhost"};
  testing::MintedCert server_cert = testing::MustMint(ed(server_spec), &ca);
  testing::MintedCert client_cert =
      testing::MustMint(ed(testing::LeafSpec("ed-client", false, true)), &ca);

  TlsOptions server_options;
  server_options.role = TlsRole::kServer;
  auto server_tls =
      TlsContext::Create(server_options, Creds(server_cert, CertificateUsage::kServer), Trust(ca));
  ASSERT_THAT(server_tls, IsOk());
  TlsOptions client_options;
  client_options.role = TlsRole::kClient;
  client_options.expected_server_name = "localhost";
  auto client_tls =
      TlsContext::Create(client_options, Creds(client_cert, CertificateUsage::kClient), Trust(ca));
  ASSERT_THAT(client_tls, IsOk());
  auto [server, client] = Pair(*server_tls, *client_tls);
  ASSERT_THAT(server, IsOk());
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ((*server)->peer().common_name, "ed-client");
}

TEST_F(FramedConnectionTest, FramesFlowBothWaysAndCloseIsGraceful) {
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client));
  ASSERT_THAT(server, IsOk());
  ASSERT_THAT(client, IsOk());
  Recorder at_server;
  Recorder at_client;
  std::shared_ptr<FramedConnection> server_conn = *server;
  // The server echoes every REQUEST as a RESPONSE with the same payload.
  server_conn->Start(
      [&at_server, raw = server_conn.get()](const FrameView& frame) {
        at_server.types.push_back(frame.header.type);
        EXPECT_THAT(raw->SendBytes(FrameType::kResponse, kFlagFinal, frame.header.correlation_id,
                                   frame.payload),
                    IsOk());
      },
      at_server.OnClosed());
  (*client)->Start(at_client.OnFrame(), at_client.OnClosed());

  constexpr int kFrames = 500;
  for (int i = 0; i < kFrames; ++i) {
    v1::Request request;
    request.set_method("test.Echo/Echo");
    request.set_body(std::string(static_cast<std::size_t>(i), 'x'));
    ASSERT_THAT(
        (*client)->Send(FrameType::kRequest, kFlagFinal, Id(static_cast<std::uint8_t>(i)), request),
        IsOk());
  }
  ASSERT_TRUE(loop_.PumpUntil([&] { return at_client.payloads.size() == kFrames; }));
  for (int i = 0; i < kFrames; ++i) {
    v1::Request echoed;
    ASSERT_TRUE(echoed.ParseFromString(at_client.payloads[i]));
    EXPECT_EQ(echoed.body().size(), static_cast<std::size_t>(i));
  }

  (*client)->Close(absl::OkStatus());
  ASSERT_TRUE(loop_.PumpUntil([&] { return at_client.closed && at_server.closed; }));
  EXPECT_THAT(*at_client.closed, IsOk());
  EXPECT_THAT(*at_server.closed,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed the connection")));
}

TEST_F(FramedConnectionTest, SessionIsResumedOnReconnect) {
  auto server_tls = ServerTls();
  auto client_tls = ClientTls(pki_.client);
  {
    auto [server, client] = Pair(server_tls, client_tls);
    ASSERT_THAT(client, IsOk());
    ASSERT_THAT(server, IsOk());
    // TLS 1.3 tickets arrive after the handshake: exchange a frame so the client reads them.
    Recorder at_client;
    Recorder at_server;
    (*server)->Start(at_server.OnFrame(), at_server.OnClosed());
    (*client)->Start(at_client.OnFrame(), at_client.OnClosed());
    ASSERT_THAT((*server)->Send(FrameType::kHeartbeat, 0, CorrelationId{}, v1::Heartbeat()),
                IsOk());
    ASSERT_TRUE(loop_.PumpUntil([&] { return !at_client.types.empty(); }));
    (*client)->Close(absl::OkStatus());
    ASSERT_TRUE(loop_.PumpUntil([&] { return at_client.closed && at_server.closed; }));
  }
  auto [server, client] = Pair(server_tls, client_tls);
  ASSERT_THAT(client, IsOk());
  ASSERT_THAT(server, IsOk());
  EXPECT_TRUE((*client)->session_resumed());
  // A resumed session still knows who the peer is.
  EXPECT_EQ((*server)->peer().common_name, "greeter");
}

TEST_F(FramedConnectionTest, ClientFromAnotherCaIsRefusedWithReadableReasonsOnBothSides) {
  auto client_tls = [&] {
    TlsOptions options;
    options.role = TlsRole::kClient;
    options.expected_server_name = "localhost";
    return *TlsContext::Create(options, Creds(pki_.client_other_ca, CertificateUsage::kClient),
                               Trust(pki_.root));
  }();
  auto [server, client] = Pair(ServerTls(), client_tls);
  EXPECT_THAT(server, StatusIs(absl::StatusCode::kUnauthenticated,
                               HasSubstr("client certificate rejected: issued by \"CN=Other "
                                         "CA,O=Stella Tests\", which is not in the trust bundle "
                                         "ClientCaCertificatePath=")));
  EXPECT_EQ(FailureLabelOf(server.status()), "unknown_ca");
  // TLS 1.3: the client's handshake finished before the server refused it; it learns on its
  // first read, and gets the same kind of sentence, not "connection reset".
  ASSERT_THAT(client, IsOk());
  Recorder at_client;
  (*client)->Start(at_client.OnFrame(), at_client.OnClosed());
  ASSERT_TRUE(loop_.PumpUntil([&] { return at_client.closed.has_value(); }));
  EXPECT_THAT(*at_client.closed,
              StatusIs(absl::StatusCode::kUnauthenticated,
                       AllOf(HasSubstr("the peer rejected this side's certificate (TLS alert "
                                       "unknown_ca): it does not trust the issuer \"CN=Other "
                                       "CA,O=Stella Tests\""),
                             HasSubstr("ClientCaCertificatePath"))));
}

TEST_F(FramedConnectionTest, ClientFromAnotherCaIsRefusedInTls12DuringTheHandshake) {
  TlsOptions options;
  options.role = TlsRole::kClient;
  options.expected_server_name = "localhost";
  options.allow_tls13 = false;
  auto client_tls = *TlsContext::Create(
      options, Creds(pki_.client_other_ca, CertificateUsage::kClient), Trust(pki_.root));
  auto [server, client] = Pair(ServerTls(), client_tls);
  EXPECT_THAT(server, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("Other CA")));
  EXPECT_THAT(client,
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("TLS alert unknown_ca")));
}

TEST_F(FramedConnectionTest, ExpiredAndWrongUsageClientsAreRefused) {
  // Loading refuses these certificates, so present them through a raw BoringSSL client.
  for (const testing::MintedCert* cert : {&pki_.client_expired, &pki_.client_server_auth_only}) {
    std::optional<ConnectionOr> server;
    loop_.Spawn(AcceptOne(ServerTls(), {}), &server);
    asio::ssl::context raw(asio::ssl::context::tls_client);
    SSL_CTX_use_certificate(raw.native_handle(), cert->cert.get());
    SSL_CTX_use_PrivateKey(raw.native_handle(), cert->key.get());
    raw.set_verify_mode(asio::ssl::verify_none);
    asio::ssl::stream<tcp::socket> stream(loop_.io(), raw);
    stream.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    boost::system::error_code ec;
    stream.async_handshake(asio::ssl::stream_base::client, [&ec](auto e) { ec = e; });
    ASSERT_TRUE(loop_.PumpUntil([&] { return server.has_value(); }));
    const std::string expected = cert == &pki_.client_expired ? "expired at" : "clientAuth";
    EXPECT_THAT(*server, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr(expected)));
  }
}

TEST_F(FramedConnectionTest, HostnameMismatchIsRefusedByTheClient) {
  TlsOptions options;
  options.expected_server_name = "wrong.internal";
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client, options));
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnauthenticated,
                               HasSubstr("server certificate does not match ExpectedServerName "
                                         "\"wrong.internal\": it names DNS:gateway.internal, "
                                         "DNS:localhost, IP:127.0.0.1")));
  EXPECT_EQ(FailureLabelOf(client.status()), "name_mismatch");
  EXPECT_FALSE(server.ok());
}

TEST_F(FramedConnectionTest, SkipServerValidationConnectsAndWarns) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  spdlog::default_logger()->sinks().push_back(sink);
  TlsOptions options;
  options.role = TlsRole::kClient;
  options.expected_server_name = "wrong.internal";
  options.skip_server_validation = true;
  auto client_tls =
      *TlsContext::Create(options, Creds(pki_.client, CertificateUsage::kClient), std::nullopt);
  auto [server, client] = Pair(ServerTls(), client_tls);
  spdlog::default_logger()->sinks().pop_back();
  EXPECT_THAT(client, IsOk());
  EXPECT_THAT(log.str(), HasSubstr("DEV MODE: the TLS connection with 127.0.0.1:"));
  EXPECT_THAT(log.str(), HasSubstr("only because SkipServerCertificateValidation is set"));
}

TEST_F(FramedConnectionTest, ClientWithoutCertificateIsRefused) {
  std::optional<ConnectionOr> server;
  loop_.Spawn(AcceptOne(ServerTls(), {}), &server);
  asio::ssl::context raw(asio::ssl::context::tls_client);
  raw.set_verify_mode(asio::ssl::verify_none);
  SSL_CTX_set_alpn_protos(raw.native_handle(), reinterpret_cast<const uint8_t*>("\x08stella/1"), 9);
  asio::ssl::stream<tcp::socket> stream(loop_.io(), raw);
  stream.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  stream.async_handshake(asio::ssl::stream_base::client, [](auto) {});
  ASSERT_TRUE(loop_.PumpUntil([&] { return server.has_value(); }));
  EXPECT_THAT(*server, StatusIs(absl::StatusCode::kUnauthenticated,
                                HasSubstr("client presented no certificate, but "
                                          "RequireClientCertificate is true")));
}

TEST_F(FramedConnectionTest, Tls11OnlyClientIsRefused) {
  std::optional<ConnectionOr> server;
  loop_.Spawn(AcceptOne(ServerTls(), {}), &server);
  asio::ssl::context raw(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(raw.native_handle(), TLS1_VERSION);
  SSL_CTX_set_max_proto_version(raw.native_handle(), TLS1_1_VERSION);
  raw.set_verify_mode(asio::ssl::verify_none);
  asio::ssl::stream<tcp::socket> stream(loop_.io(), raw);
  stream.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  boost::system::error_code client_ec;
  bool client_done = false;
  stream.async_handshake(asio::ssl::stream_base::client, [&](auto e) {
    client_ec = e;
    client_done = true;
  });
  ASSERT_TRUE(loop_.PumpUntil([&] { return server.has_value() && client_done; }));
  EXPECT_THAT(*server, StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr("no TLS version in common: AllowedProtocols here is "
                                          "Tls12, Tls13")));
  EXPECT_EQ(FailureLabelOf(server->status()), "protocol_version");
  EXPECT_TRUE(client_ec);
}

// Sends raw bytes to the TLS port and returns the server's handshake result.
class RawBytesTest : public FramedConnectionTest {
 protected:
  ConnectionOr SendRaw(const std::string& bytes, ConnectionOptions options = {}) {
    std::optional<ConnectionOr> server;
    loop_.Spawn(AcceptOne(ServerTls(), options), &server);
    tcp::socket socket(loop_.io());
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    if (!bytes.empty()) {
      asio::write(socket, asio::buffer(bytes));
    }
    EXPECT_TRUE(loop_.PumpUntil([&] { return server.has_value(); }));
    return server.has_value() ? *std::move(server) : absl::InternalError("no result");
  }
};

TEST_F(RawBytesTest, PlaintextHttpIsNamed) {
  EXPECT_THAT(SendRaw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the peer sent plaintext HTTP to this TLS port")));
}

TEST_F(RawBytesTest, GarbageIsNamed) {
  // An SSH client pointed at the wrong port. (Garbage that happens to look like the start of a TLS
  // record waits for the rest of the record and ends at the handshake timeout instead.)
  EXPECT_THAT(SendRaw("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("bytes that are not TLS (plaintext or garbage)")));
}

TEST_F(RawBytesTest, SilentPeerTimesOut) {
  ConnectionOptions options;
  options.handshake_timeout = absl::Milliseconds(200);
  ConnectionOr result = SendRaw("", options);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kDeadlineExceeded,
                               HasSubstr("did not finish within HandshakeTimeoutSeconds=0.2 s")));
  EXPECT_EQ(FailureLabelOf(result.status()), "handshake_timeout");
}

TEST_F(FramedConnectionTest, OversizeFrameGetsGoawayAndClose) {
  ConnectionOptions small;
  small.max_payload_size = 1024;
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client), small, {});
  ASSERT_THAT(server, IsOk());
  ASSERT_THAT(client, IsOk());
  Recorder at_server;
  Recorder at_client;
  (*server)->Start(at_server.OnFrame(), at_server.OnClosed());
  (*client)->Start(at_client.OnFrame(), at_client.OnClosed());
  const std::string big(2000, 'b');
  ASSERT_THAT((*client)->SendBytes(FrameType::kRequest, kFlagFinal, Id(1),
                                   {reinterpret_cast<const std::uint8_t*>(big.data()), big.size()}),
              IsOk());
  ASSERT_TRUE(loop_.PumpUntil([&] { return at_server.closed && at_client.closed; }));
  EXPECT_TRUE(at_server.payloads.empty());
  EXPECT_THAT(*at_server.closed,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("broke the protocol: frame header field 'payload length' is "
                                 "2000 bytes")));
  ASSERT_EQ(at_client.types.size(), 1u);
  EXPECT_EQ(at_client.types[0], FrameType::kGoaway);
  v1::Goaway goaway;
  ASSERT_TRUE(goaway.ParseFromString(at_client.payloads[0]));
  EXPECT_EQ(goaway.code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(goaway.reason(), HasSubstr("maximum payload size is 1024 bytes"));
}

TEST_F(FramedConnectionTest, WriterQueueIsBounded) {
  ConnectionOptions tiny;
  tiny.max_queued_bytes = 4096;
  auto [server, client] = Pair(ServerTls(), ClientTls(pki_.client), {}, tiny);
  ASSERT_THAT(client, IsOk());
  // Not started: nothing drains the queue.
  v1::Request request;
  request.set_body(std::string(3000, 'q'));
  EXPECT_THAT((*client)->Send(FrameType::kRequest, 0, Id(1), request), IsOk());
  EXPECT_THAT((*client)->Send(FrameType::kRequest, 0, Id(2), request), IsOk());
  EXPECT_THAT(
      (*client)->Send(FrameType::kRequest, 0, Id(3), request),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("over its limit of 4096 bytes")));
}

}  // namespace
}  // namespace stella::runtime
