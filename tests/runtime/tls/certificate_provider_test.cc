// Hot rotation over real files, real inotify and real loopback TLS: the gateway side's
// certificate, its CA bundle and its CRLs are replaced the ways deploy tools do it, and new
// handshakes must see the change while old connections keep working.
#include "runtime/tls/certificate_provider.h"

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/framed_connection.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::runtime::tls {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;
using ConnectionOr = absl::StatusOr<std::shared_ptr<FramedConnection>>;

// How long a change may take to be served: the bound, far above the 100 ms debounce.
constexpr absl::Duration kRotationBound = absl::Seconds(2);

// Records reload events from the provider's thread; the test thread waits on them.
// (std::mutex rather than absl::Mutex: Debian's Abseil is not built with TSan, which would then
// not see the synchronisation.)
class ReloadLog {
 public:
  void Add(const ReloadEvent& event) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(event);
    }
    added_.notify_all();
  }
  // Waits until an event satisfies `pred`; returns it, or nullopt after `timeout`.
  std::optional<ReloadEvent> WaitFor(std::function<bool(const ReloadEvent&)> pred,
                                     absl::Duration timeout = kRotationBound) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::optional<ReloadEvent> found;
    added_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] {
      for (const ReloadEvent& e : events_) {
        if (pred(e)) {
          found = e;
          return true;
        }
      }
      return false;
    });
    return found;
  }

 private:
  std::mutex mutex_;
  std::condition_variable added_;
  std::vector<ReloadEvent> events_;  // guarded by mutex_
};

// Writes `content` to `path` in place: truncate, write, close (what `cp` or an editor does).
void WriteInPlace(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// Writes to a temporary file in the same directory, then renames it over `path`.
void WriteByRename(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  WriteInPlace(tmp, content);
  fs::rename(tmp, path);
}

class CertificateProviderTest : public ::testing::Test {
 protected:
  CertificateProviderTest()
      : acceptor_(loop_.io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}

  // Starts a provider for the server side over `cert_path`/`key_path` and `ca_path`.
  std::unique_ptr<CertificateProvider> StartProvider(const std::string& cert_path,
                                                     const std::string& key_path, TrustSource trust,
                                                     bool use_inotify = true) {
    CertificateProvider::Options options;
    options.tls.role = TlsRole::kServer;
    options.certificate.certificate_path = cert_path;
    options.certificate.key_path = key_path;
    options.usage = CertificateUsage::kServer;
    options.trust = std::move(trust);
    options.debounce = absl::Milliseconds(100);
    options.poll_interval = use_inotify ? absl::ZeroDuration() : absl::Milliseconds(100);
    options.use_inotify = use_inotify;
    options.on_reload = [this](const ReloadEvent& e) { reloads_.Add(e); };
    absl::StatusOr<std::unique_ptr<CertificateProvider>> provider =
        CertificateProvider::Start(std::move(options));
    EXPECT_THAT(provider, IsOk());
    return provider.ok() ? *std::move(provider) : nullptr;
  }

  TrustSource RootTrust() {
    TrustSource trust;
    trust.ca_path = dir_.Write("ca/bundle.pem", TestPki::Pem(pki_.root));
    return trust;
  }

  std::shared_ptr<const TlsContext> ClientTls(const testing::MintedCert& cert) {
    CredentialSource source;
    source.certificate_path =
        dir_.Write("client/" + cert_counter(), TestPki::Pem(cert) + TestPki::KeyPem(cert));
    TrustSource trust;
    trust.ca_path = dir_.Write("client/ca.pem", TestPki::Pem(pki_.root));
    TlsOptions options;
    options.role = TlsRole::kClient;
    options.expected_server_name = "localhost";
    auto creds = LoadCredentials(source, CertificateUsage::kClient, absl::Now());
    auto loaded = LoadTrust(trust);
    EXPECT_THAT(creds, IsOk());
    EXPECT_THAT(loaded, IsOk());
    auto tls = TlsContext::Create(options, *std::move(creds), *std::move(loaded));
    EXPECT_THAT(tls, IsOk());
    return *tls;
  }

  std::string cert_counter() { return std::to_string(++files_) + ".pem"; }

  asio::awaitable<ConnectionOr> AcceptOne(CertificateProvider* provider) {
    tcp::socket socket = co_await acceptor_.async_accept(asio::use_awaitable);
    // Every new handshake takes the provider's current snapshot.
    auto connection = FramedConnection::FromAccepted(std::move(socket), provider->Current(), {});
    absl::Status status = co_await connection->Handshake();
    if (!status.ok()) {
      co_return status;
    }
    co_return connection;
  }

  // Connects a client; returns {server side, client side}.
  std::pair<ConnectionOr, ConnectionOr> Connect(CertificateProvider* provider,
                                                std::shared_ptr<const TlsContext> client_tls) {
    std::optional<ConnectionOr> server;
    loop_.Spawn(AcceptOne(provider), &server);
    ConnectionOr client = loop_.Run(FramedConnection::Connect(loop_.executor(), "127.0.0.1",
                                                              acceptor_.local_endpoint().port(),
                                                              std::move(client_tls), {}));
    EXPECT_TRUE(loop_.PumpUntil([&] { return server.has_value(); }));
    return {*std::move(server), std::move(client)};
  }

  // Starts an echo on `server` and a receiver on `client`; returns the client's receive count.
  static std::shared_ptr<int> StartEcho(const std::shared_ptr<FramedConnection>& server,
                                        const std::shared_ptr<FramedConnection>& client) {
    // The handler holds the connection weakly: a strong reference would keep it alive forever.
    server->Start(
        [weak = std::weak_ptr<FramedConnection>(server)](const FrameView& frame) {
          if (auto self = weak.lock()) {
            (void)self->SendBytes(FrameType::kResponse, kFlagFinal, frame.header.correlation_id,
                                  frame.payload);
          }
        },
        [](const absl::Status&) {});
    auto received = std::make_shared<int>(0);
    client->Start([received](const FrameView&) { ++*received; }, [](const absl::Status&) {});
    return received;
  }

  // Sends one request on `client` and waits for the echo.
  bool RoundTrip(FramedConnection& client, const std::shared_ptr<int>& received) {
    const int before = *received;
    router::v1::Request request;
    request.set_method("rotation.Test/Ping");
    CorrelationId id{};
    id[15] = static_cast<std::uint8_t>(before + 1);
    if (!client.Send(FrameType::kRequest, kFlagFinal, id, request).ok()) {
      return false;
    }
    return loop_.PumpUntil([&] { return *received > before; });
  }

  // A new server certificate for the same names, with a different serial.
  testing::MintedCert NewServerCert() {
    CertSpec spec = testing::LeafSpec("gateway.internal", true, false);
    spec.dns_names = {"gateway.internal", "localhost"};
    spec.ips = {"127.0.0.1"};
    return testing::MustMint(spec, &pki_.root);
  }

  // Checks that a rotation was served: the next connection presents `expected`, while `old_client`
  // (made before the rotation) still gets answers.
  void ExpectRotatedTo(CertificateProvider* provider, const testing::MintedCert& expected,
                       FramedConnection& old_client, const std::shared_ptr<int>& old_received) {
    const std::string serial = IdentityOf(expected.cert.get()).serial_hex;
    std::optional<ReloadEvent> event =
        reloads_.WaitFor([&](const ReloadEvent& e) { return e.leaf.serial_hex == serial; });
    ASSERT_TRUE(event.has_value()) << "the new certificate was not served within 2 s";
    EXPECT_THAT(event->status, IsOk());
    auto [server, client] = Connect(provider, ClientTls(pki_.client));
    ASSERT_THAT(client, IsOk());
    EXPECT_EQ((*client)->peer().serial_hex, serial);
    EXPECT_TRUE(RoundTrip(old_client, old_received)) << "the old connection stopped working";
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  tcp::acceptor acceptor_;
  ReloadLog reloads_;
  int files_ = 0;
};

TEST_F(CertificateProviderTest, InPlaceWriteIsServedToNewConnectionsOldOnesKeepWorking) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust());
  ASSERT_NE(provider, nullptr);
  EXPECT_TRUE(provider->watching());
  auto [server, client] = Connect(provider.get(), ClientTls(pki_.client));
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ((*client)->peer().serial_hex, IdentityOf(pki_.server.cert.get()).serial_hex);
  auto received = StartEcho(*server, *client);
  ASSERT_TRUE(RoundTrip(**client, received));

  testing::MintedCert next = NewServerCert();
  WriteInPlace(key, TestPki::KeyPem(next));
  WriteInPlace(cert, TestPki::Pem(next));
  ExpectRotatedTo(provider.get(), next, **client, received);
  EXPECT_EQ(provider->Current()->credentials().leaf.serial_hex,
            IdentityOf(next.cert.get()).serial_hex);
  EXPECT_EQ(provider->LeafNotAfter(), IdentityOf(next.cert.get()).not_after);
}

TEST_F(CertificateProviderTest, AtomicRenameIsServed) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust());
  ASSERT_NE(provider, nullptr);
  auto [server, client] = Connect(provider.get(), ClientTls(pki_.client));
  ASSERT_THAT(client, IsOk());
  auto received = StartEcho(*server, *client);

  testing::MintedCert next = NewServerCert();
  WriteByRename(key, TestPki::KeyPem(next));
  WriteByRename(cert, TestPki::Pem(next));
  ExpectRotatedTo(provider.get(), next, **client, received);
}

TEST_F(CertificateProviderTest, KubernetesDataSymlinkSwapIsServed) {
  // The layout a Kubernetes secret volume has: files are symlinks through ..data, which points at
  // a timestamped directory; an update writes a new directory and renames a new ..data over.
  const std::string mount = dir_.Path("secret");
  dir_.Write("secret/..2026_12_03_01/tls.crt", TestPki::Pem(pki_.server));
  dir_.Write("secret/..2026_12_03_01/tls.key", TestPki::KeyPem(pki_.server));
  fs::create_directory_symlink("..2026_12_03_01", mount + "/..data");
  fs::create_symlink("..data/tls.crt", mount + "/tls.crt");
  fs::create_symlink("..data/tls.key", mount + "/tls.key");
  auto provider = StartProvider(mount + "/tls.crt", mount + "/tls.key", RootTrust());
  ASSERT_NE(provider, nullptr);
  auto [server, client] = Connect(provider.get(), ClientTls(pki_.client));
  ASSERT_THAT(client, IsOk());
  auto received = StartEcho(*server, *client);

  testing::MintedCert next = NewServerCert();
  dir_.Write("secret/..2026_12_03_02/tls.crt", TestPki::Pem(next));
  dir_.Write("secret/..2026_12_03_02/tls.key", TestPki::KeyPem(next));
  fs::create_directory_symlink("..2026_12_03_02", mount + "/..data_tmp");
  fs::rename(mount + "/..data_tmp", mount + "/..data");
  fs::remove_all(mount + "/..2026_12_03_01");
  ExpectRotatedTo(provider.get(), next, **client, received);
}

TEST_F(CertificateProviderTest, CorruptReplacementIsRejectedAndTheOldCertificateKeepsServing) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust());
  ASSERT_NE(provider, nullptr);

  WriteInPlace(cert, "-----BEGIN CERTIFICATE-----\ntruncated");
  std::optional<ReloadEvent> event =
      reloads_.WaitFor([](const ReloadEvent& e) { return !e.status.ok(); });
  ASSERT_TRUE(event.has_value());
  EXPECT_THAT(event->status, StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("is not a valid PEM certificate")));
  EXPECT_EQ(event->generation, 1u);
  EXPECT_EQ(provider->Current()->generation(), 1u);
  auto [server, client] = Connect(provider.get(), ClientTls(pki_.client));
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ((*client)->peer().serial_hex, IdentityOf(pki_.server.cert.get()).serial_hex);
}

TEST_F(CertificateProviderTest, MismatchedKeyIsRejected) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust());
  ASSERT_NE(provider, nullptr);
  WriteByRename(key, TestPki::KeyPem(pki_.client));
  std::optional<ReloadEvent> event =
      reloads_.WaitFor([](const ReloadEvent& e) { return !e.status.ok(); });
  ASSERT_TRUE(event.has_value());
  EXPECT_THAT(event->status, StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("the private key does not match the certificate")));
  EXPECT_EQ(provider->Current()->generation(), 1u);
}

TEST_F(CertificateProviderTest, CaBundleRotationTakesEffectForNewHandshakes) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  TrustSource trust = RootTrust();
  auto provider = StartProvider(cert, key, trust);
  ASSERT_NE(provider, nullptr);
  auto before = Connect(provider.get(), ClientTls(pki_.client_other_ca));
  EXPECT_THAT(before.first, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("Other CA")));

  WriteByRename(trust.ca_path, TestPki::Pem(pki_.root) + TestPki::Pem(pki_.other_ca));
  ASSERT_TRUE(reloads_.WaitFor([](const ReloadEvent& e) { return e.generation == 2; }));
  auto after = Connect(provider.get(), ClientTls(pki_.client_other_ca));
  EXPECT_THAT(after.first, IsOk());
}

TEST_F(CertificateProviderTest, CrlRotationTakesEffectForNewHandshakes) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  absl::StatusOr<std::string> empty_crl =
      MintCrl(pki_.root, {}, absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
  ASSERT_THAT(empty_crl, IsOk());
  TrustSource trust = RootTrust();
  trust.crl_paths = {dir_.Write("crl/root.crl", *empty_crl)};
  trust.revocation_mode = RevocationMode::kOffline;
  auto provider = StartProvider(cert, key, trust);
  ASSERT_NE(provider, nullptr);
  EXPECT_THAT(Connect(provider.get(), ClientTls(pki_.client_revoked)).first, IsOk());

  WriteByRename(trust.crl_paths[0], pki_.crl_pem);
  ASSERT_TRUE(reloads_.WaitFor([](const ReloadEvent& e) { return e.generation == 2; }));
  EXPECT_THAT(Connect(provider.get(), ClientTls(pki_.client_revoked)).first,
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("was revoked at")));
}

TEST_F(CertificateProviderTest, PollingAloneSeesChanges) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust(), /*use_inotify=*/false);
  ASSERT_NE(provider, nullptr);
  EXPECT_FALSE(provider->watching());
  testing::MintedCert next = NewServerCert();
  WriteByRename(key, TestPki::KeyPem(next));
  WriteByRename(cert, TestPki::Pem(next));
  const std::string serial = IdentityOf(next.cert.get()).serial_hex;
  std::optional<ReloadEvent> event = reloads_.WaitFor(
      [&](const ReloadEvent& e) { return e.status.ok() && e.leaf.serial_hex == serial; });
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->trigger, "poll");
}

TEST_F(CertificateProviderTest, StartRefusesABadInitialSet) {
  CertificateProvider::Options options;
  options.tls.role = TlsRole::kServer;
  options.certificate.certificate_path = dir_.Write("gw.crt", TestPki::Pem(pki_.server));
  options.certificate.key_path = dir_.Write("gw.key", TestPki::KeyPem(pki_.client));
  options.trust = RootTrust();
  EXPECT_THAT(CertificateProvider::Start(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not match")));
}

TEST_F(CertificateProviderTest, ReloadNowForcesAReload) {
  const std::string cert = dir_.Write("certs/gw.crt", TestPki::Pem(pki_.server));
  const std::string key = dir_.Write("certs/gw.key", TestPki::KeyPem(pki_.server));
  auto provider = StartProvider(cert, key, RootTrust());
  ASSERT_NE(provider, nullptr);
  ReloadEvent event = provider->ReloadNow();
  EXPECT_THAT(event.status, IsOk());
  EXPECT_EQ(event.generation, 2u);
  EXPECT_EQ(event.trigger, "request");
}

}  // namespace
}  // namespace stella::runtime::tls
