// Full mutual-TLS handshakes per second on one core with the contexts Stella builds (TLS 1.3,
// X25519, client certificate required and verified by our callback), and TLS record round trips
// on an established connection. Client and server run in memory over a BIO pair on one thread,
// so the figures are pure CPU: no sockets, no scheduler. Reported: handshakes/s for both sides
// together, the server side alone (server CPU only), which is what a gateway core can accept,
// and bytes/s sealed and opened.
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <ctime>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "runtime/tls/cert_builder.h"
#include "runtime/tls/tls_context.h"
#include "runtime/tls/x509.h"

namespace stella::runtime::tls {
namespace {

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

Credentials ToCredentials(MintedCert cert, const MintedCert& issuer) {
  Credentials creds;
  creds.leaf = IdentityOf(cert.cert.get());
  creds.origin = "benchmark";
  creds.chain.push_back(std::move(cert.cert));
  creds.key = std::move(cert.key);
  (void)issuer;
  return creds;
}

struct Contexts {
  std::shared_ptr<const TlsContext> server;
  std::shared_ptr<const TlsContext> client;
};

// Mints a CA, a server and a client certificate with `key_type` and builds both contexts.
absl::StatusOr<Contexts> MakeContexts(KeyType key_type) {
  CertSpec ca_spec;
  ca_spec.common_name = "Bench CA";
  ca_spec.is_ca = true;
  ca_spec.key_type = key_type;
  absl::StatusOr<MintedCert> ca = MintCertificate(ca_spec, nullptr);
  if (!ca.ok()) {
    return ca.status();
  }
  CertSpec server_spec;
  server_spec.common_name = "localhost";
  server_spec.dns_names = {"localhost"};
  server_spec.server_auth = true;
  server_spec.key_type = key_type;
  CertSpec client_spec;
  client_spec.common_name = "bench-client";
  client_spec.client_auth = true;
  client_spec.key_type = key_type;
  absl::StatusOr<MintedCert> server_cert = MintCertificate(server_spec, &*ca);
  absl::StatusOr<MintedCert> client_cert = MintCertificate(client_spec, &*ca);
  if (!server_cert.ok() || !client_cert.ok()) {
    return absl::InternalError("cannot mint benchmark certificates");
  }
  auto trust = [&]() {
    TrustBundle bundle;
    bundle.ca_origin = "benchmark CA";
    bundle.store.reset(X509_STORE_new());
    X509_STORE_add_cert(bundle.store.get(), ca->cert.get());
    bundle.cas.push_back(bssl::UpRef(ca->cert));
    return bundle;
  };
  TlsOptions server_options;
  server_options.role = TlsRole::kServer;
  TlsOptions client_options;
  client_options.role = TlsRole::kClient;  // no expected name: no SNI, no session cache
  auto server =
      TlsContext::Create(server_options, ToCredentials(*std::move(server_cert), *ca), trust());
  auto client =
      TlsContext::Create(client_options, ToCredentials(*std::move(client_cert), *ca), trust());
  if (!server.ok()) {
    return server.status();
  }
  if (!client.ok()) {
    return client.status();
  }
  return Contexts{*server, *client};
}

// A client and a server SSL joined by an in-memory BIO pair, handshake done.
struct SslPair {
  bssl::UniquePtr<SSL> client;
  bssl::UniquePtr<SSL> server;
  HandshakeDiagnostics client_diag;
  HandshakeDiagnostics server_diag;
};

// Runs a full mutual handshake between new SSLs of `contexts`; adds the server side's CPU time
// to `*server_cpu`. The failure's sentence when it does not complete with a verified client.
absl::Status Handshake(const Contexts& contexts, SslPair& pair, double* server_cpu) {
  pair.client.reset(SSL_new(contexts.client->native_handle()));
  pair.server.reset(SSL_new(contexts.server->native_handle()));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  // 64 KiB each way: room for a whole 16 KiB record and its overhead in flight.
  if (!pair.client || !pair.server ||
      !BIO_new_bio_pair(&client_bio, 1 << 16, &server_bio, 1 << 16) ||
      !contexts.client->PrepareSsl(pair.client.get(), &pair.client_diag).ok() ||
      !contexts.server->PrepareSsl(pair.server.get(), &pair.server_diag).ok()) {
    return absl::InternalError("cannot set up the SSL pair");
  }
  SSL_set_bio(pair.client.get(), client_bio, client_bio);
  SSL_set_bio(pair.server.get(), server_bio, server_bio);
  SSL_set_connect_state(pair.client.get());
  SSL_set_accept_state(pair.server.get());
  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 20 && !(client_done && server_done); ++round) {
    if (!client_done) {
      const int rc = SSL_do_handshake(pair.client.get());
      client_done = rc == 1;
      if (rc != 1 && SSL_get_error(pair.client.get(), rc) != SSL_ERROR_WANT_READ) {
        return absl::InternalError("client handshake failed");
      }
    }
    if (!server_done) {
      const double start = ThreadCpuSeconds();
      const int rc = SSL_do_handshake(pair.server.get());
      *server_cpu += ThreadCpuSeconds() - start;
      server_done = rc == 1;
      if (rc != 1 && SSL_get_error(pair.server.get(), rc) != SSL_ERROR_WANT_READ) {
        return absl::InternalError(pair.server_diag.failure ? pair.server_diag.failure->sentence
                                                            : "server handshake failed");
      }
    }
  }
  if (!client_done || !server_done || !pair.server_diag.verified_peer.has_value()) {
    return absl::InternalError("handshake did not complete with a verified client");
  }
  return absl::OkStatus();
}

void BM_FullMutualHandshake(benchmark::State& state) {
  const KeyType key_type = state.range(0) == 0 ? KeyType::kEcdsaP256 : KeyType::kEd25519;
  absl::StatusOr<Contexts> contexts = MakeContexts(key_type);
  if (!contexts.ok()) {
    state.SkipWithError(std::string(contexts.status().message()).c_str());
    return;
  }
  double server_cpu = 0;
  for (auto _ : state) {
    SslPair pair;
    if (absl::Status done = Handshake(*contexts, pair, &server_cpu); !done.ok()) {
      state.SkipWithError(std::string(done.message()).c_str());
      return;
    }
  }
  state.counters["handshakes/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["server_handshakes/s/core"] =
      server_cpu > 0 ? static_cast<double>(state.iterations()) / server_cpu : 0;
  state.SetLabel(key_type == KeyType::kEcdsaP256 ? "ECDSA P-256, TLS 1.3, X25519"
                                                 : "Ed25519, TLS 1.3, X25519");
}
BENCHMARK(BM_FullMutualHandshake)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// A TLS record round trip on an established TLS 1.3 connection: the client seals `size` bytes
// (SSL_write), the server opens them (SSL_read), in memory. What one relay hop costs in TLS per
// message, without sockets: the gateway does one open and one seal per frame it forwards.
void BM_RecordRoundTrip(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  absl::StatusOr<Contexts> contexts = MakeContexts(KeyType::kEcdsaP256);
  if (!contexts.ok()) {
    state.SkipWithError(std::string(contexts.status().message()).c_str());
    return;
  }
  SslPair pair;
  double ignored = 0;
  if (absl::Status done = Handshake(*contexts, pair, &ignored); !done.ok()) {
    state.SkipWithError(std::string(done.message()).c_str());
    return;
  }
  std::string out(size, 'r');
  std::string in(size, '\0');
  for (auto _ : state) {
    if (SSL_write(pair.client.get(), out.data(), static_cast<int>(size)) !=
        static_cast<int>(size)) {
      state.SkipWithError("SSL_write failed");
      return;
    }
    std::size_t got = 0;
    while (got < size) {
      const int n = SSL_read(pair.server.get(), in.data() + got, static_cast<int>(size - got));
      if (n <= 0) {
        state.SkipWithError("SSL_read failed");
        return;
      }
      got += static_cast<std::size_t>(n);
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RecordRoundTrip)->Arg(64)->Arg(4096)->Arg(16384);

}  // namespace
}  // namespace stella::runtime::tls

BENCHMARK_MAIN();
