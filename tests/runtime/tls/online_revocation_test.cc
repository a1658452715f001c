// RevocationMode Online against a small HTTP server on loopback that plays the CRL distribution
// point: revoked peers refused, the cache honoured, soft-fail and hard-fail when the CRL cannot be
// fetched.
#include "runtime/tls/online_revocation.h"

#include <openssl/x509.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/async.h"
#include "runtime/framed_connection.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::runtime::tls {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;

// Serves fixed bodies by path; "/stall" accepts and never answers.
class CrlServer {
 public:
  explicit CrlServer(asio::io_context& io)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(io, Serve(), LogCoroutineFailure("test CRL server"));
  }
  ~CrlServer() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + path;
  }
  void Set(const std::string& path, std::string body) { bodies_[path] = std::move(body); }
  int requests() const { return requests_; }

 private:
  asio::awaitable<void> Serve() {
    while (true) {
      boost::system::error_code ec;
      tcp::socket socket =
          co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        co_return;
      }
      asio::co_spawn(acceptor_.get_executor(), Answer(std::move(socket)),
                     LogCoroutineFailure("test CRL request"));
    }
  }

  asio::awaitable<void> Answer(tcp::socket socket) {
    boost::system::error_code ec;
    asio::streambuf request;
    co_await asio::async_read_until(socket, request, "\r\n\r\n",
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;
    }
    ++requests_;
    std::string line(asio::buffers_begin(request.data()), asio::buffers_end(request.data()));
    const std::string path = line.substr(4, line.find(' ', 4) - 4);
    if (path == "/stall") {
      asio::steady_timer forever(socket.get_executor(), std::chrono::seconds(30));
      co_await forever.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_return;
    }
    auto it = bodies_.find(path);
    std::string response =
        it == bodies_.end()
            ? std::string(
                  "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            : "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: " +
                  std::to_string(it->second.size()) + "\r\nConnection: close\r\n\r\n" + it->second;
    co_await asio::async_write(socket, asio::buffer(response),
                               asio::redirect_error(asio::use_awaitable, ec));
  }

  tcp::acceptor acceptor_;
  std::map<std::string, std::string> bodies_;
  int requests_ = 0;
};

std::string ToDer(const std::string& pem) {
  auto crls = ParseCrls(pem, "test CRL");
  EXPECT_THAT(crls, IsOk());
  uint8_t* der = nullptr;
  const int len = i2d_X509_CRL((*crls)[0].get(), &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// Accepts one connection on `acceptor` and returns the server handshake's result.
asio::awaitable<absl::Status> AcceptAndHandshake(tcp::acceptor* acceptor,
                                                 std::shared_ptr<const TlsContext> tls) {
  tcp::socket socket = co_await acceptor->async_accept(asio::use_awaitable);
  auto connection = FramedConnection::FromAccepted(std::move(socket), tls, {});
  co_return co_await connection->Handshake();
}

OnlineRevocation::Options HardFail(absl::Duration timeout = absl::Seconds(5)) {
  OnlineRevocation::Options options;
  options.hard_fail = true;
  options.fetch_timeout = timeout;
  return options;
}

class OnlineRevocationTest : public ::testing::Test {
 protected:
  OnlineRevocationTest() : server_(loop_.io()) {
    CertSpec good = testing::LeafSpec("online-good", false, true);
    good.crl_url = server_.Url("/root.crl");
    good_ = testing::MustMint(good, &pki_.root);
    CertSpec revoked = testing::LeafSpec("online-revoked", false, true);
    revoked.crl_url = server_.Url("/root.crl");
    revoked_ = testing::MustMint(revoked, &pki_.root);
    auto crl = MintCrl(pki_.root, {{revoked_.cert.get(), absl::FromUnixSeconds(1'795'000'000)}},
                       absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
    EXPECT_THAT(crl, IsOk());
    server_.Set("/root.crl", ToDer(*crl));

    TrustSource source;
    source.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    source.revocation_mode = RevocationMode::kOnline;
    trust_ = *LoadTrust(source);
  }

  std::optional<VerifyFailure> Check(OnlineRevocation& online, const testing::MintedCert& cert) {
    return loop_.Run(online.Check(loop_.executor(), {cert.cert.get()}, trust_, VerifyOptions{}));
  }

  testing::MintedCert WithCrlUrl(const std::string& cn, const std::string& url) {
    CertSpec spec = testing::LeafSpec(cn, false, true);
    spec.crl_url = url;
    return testing::MustMint(spec, &pki_.root);
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  CrlServer server_;
  testing::MintedCert good_;
  testing::MintedCert revoked_;
  TrustBundle trust_;
};

TEST_F(OnlineRevocationTest, ReadsDistributionPoints) {
  EXPECT_THAT(OnlineRevocation::DistributionPoints(good_.cert.get()),
              ::testing::ElementsAre(server_.Url("/root.crl")));
  EXPECT_TRUE(OnlineRevocation::DistributionPoints(pki_.client.cert.get()).empty());
}

TEST_F(OnlineRevocationTest, RevokedIsRefusedAndTheCrlIsCached) {
  OnlineRevocation online({});
  std::optional<VerifyFailure> failure = Check(online, revoked_);
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->reason, VerifyFailureReason::kRevoked);
  EXPECT_THAT(failure->sentence, HasSubstr("was revoked at 2026-11-18T"));
  EXPECT_THAT(failure->sentence, HasSubstr("fetched from " + server_.Url("/root.crl")));
  EXPECT_FALSE(Check(online, good_).has_value());
  EXPECT_FALSE(Check(online, good_).has_value());
  EXPECT_EQ(online.fetch_count(), 1);  // cached until nextUpdate
  EXPECT_EQ(server_.requests(), 1);
}

TEST_F(OnlineRevocationTest, UnreachableCrlSoftFailAccepts) {
  OnlineRevocation online({});
  EXPECT_FALSE(Check(online, WithCrlUrl("a", server_.Url("/missing.crl"))).has_value());
  EXPECT_FALSE(Check(online, pki_.client).has_value());  // no distribution point at all
}

TEST_F(OnlineRevocationTest, UnreachableCrlHardFailRefuses) {
  OnlineRevocation online(HardFail());
  std::optional<VerifyFailure> failure =
      Check(online, WithCrlUrl("a", server_.Url("/missing.crl")));
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->reason, VerifyFailureReason::kCrlMissing);
  EXPECT_THAT(failure->sentence,
              HasSubstr("RevocationFailureMode HardFail, and no CRL could be had for subject "
                        "\"CN=a,O=Stella Tests\""));
  EXPECT_THAT(failure->sentence, HasSubstr("HTTP status 404"));

  failure = Check(online, pki_.client);
  ASSERT_TRUE(failure.has_value());
  EXPECT_THAT(failure->sentence, HasSubstr("it names no HTTP CRL distribution point"));
}

TEST_F(OnlineRevocationTest, StalledServerTimesOut) {
  OnlineRevocation online(HardFail(absl::Milliseconds(200)));
  std::optional<VerifyFailure> failure = Check(online, WithCrlUrl("s", server_.Url("/stall")));
  ASSERT_TRUE(failure.has_value());
  EXPECT_THAT(failure->sentence, HasSubstr("no answer within CrlFetchTimeoutMs=200"));
}

TEST_F(OnlineRevocationTest, HttpsDistributionPointIsExplained) {
  OnlineRevocation online(HardFail());
  std::optional<VerifyFailure> failure =
      Check(online, WithCrlUrl("h", "https://127.0.0.1:1/root.crl"));
  ASSERT_TRUE(failure.has_value());
  EXPECT_THAT(failure->sentence, HasSubstr("is not an http:// URL"));
}

TEST_F(OnlineRevocationTest, RevokedClientIsRefusedAfterARealHandshake) {
  tcp::acceptor acceptor(loop_.io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto creds = [&](const testing::MintedCert& cert, CertificateUsage usage) {
    CredentialSource source;
    source.certificate_path = dir_.Write("c.pem", TestPki::Pem(cert) + TestPki::KeyPem(cert));
    return *LoadCredentials(source, usage, absl::Now());
  };
  TlsOptions server_options;
  server_options.role = TlsRole::kServer;
  auto server_tls =
      *TlsContext::Create(server_options, creds(pki_.server, CertificateUsage::kServer), [&] {
        TrustSource source;
        source.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
        source.revocation_mode = RevocationMode::kOnline;
        return *LoadTrust(source);
      }());
  ASSERT_NE(server_tls->online_revocation(), nullptr);

  for (const testing::MintedCert* cert : {&good_, &revoked_}) {
    TlsOptions client_options;
    client_options.role = TlsRole::kClient;
    client_options.expected_server_name = "localhost";
    TrustSource client_trust;
    client_trust.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    auto client_tls = *TlsContext::Create(client_options, creds(*cert, CertificateUsage::kClient),
                                          *LoadTrust(client_trust));

    std::optional<absl::Status> server_result;
    loop_.Spawn(AcceptAndHandshake(&acceptor, server_tls), &server_result);
    auto client = loop_.Run(FramedConnection::Connect(
        loop_.executor(), "127.0.0.1", acceptor.local_endpoint().port(), client_tls, {}));
    ASSERT_TRUE(loop_.PumpUntil([&] { return server_result.has_value(); }));
    if (cert == &good_) {
      EXPECT_THAT(*server_result, IsOk());
    } else {
      EXPECT_THAT(*server_result,
                  StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("was revoked at")));
      EXPECT_EQ(FailureLabelOf(*server_result), "revoked");
    }
  }
}

}  // namespace
}  // namespace stella::runtime::tls
