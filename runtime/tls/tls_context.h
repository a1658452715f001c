// An immutable TLS configuration snapshot — credentials, trust, protocol settings — compiled into
// a BoringSSL SSL_CTX. New handshakes take the provider's current snapshot; live connections keep
// the one they started with. No Asio here.
#ifndef STELLA_RUNTIME_TLS_TLS_CONTEXT_H_
#define STELLA_RUNTIME_TLS_TLS_CONTEXT_H_

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers
#include "runtime/tls/credentials.h"
#include "runtime/tls/trust.h"

namespace stella::runtime::tls {

class OnlineRevocation;

// The ALPN protocol id every Stella connection negotiates.
inline constexpr char kAlpnProtocol[] = "stella/1";

enum class TlsRole { kServer, kClient };

// Protocol settings of one side, from the TlsTransport / TlsClient configuration sections.
struct TlsOptions {
  TlsRole role = TlsRole::kServer;
  // AllowedProtocols: at least one of the two.
  bool allow_tls12 = true;
  bool allow_tls13 = true;
  // Server: RequireClientCertificate. A client that sends no certificate is refused.
  bool require_client_certificate = true;
  // Client: the name sent as SNI and checked against the server certificate's SANs (a host name
  // or an IP address); and the setting it came from, for messages.
  std::string expected_server_name;
  std::string expected_server_name_setting = "ExpectedServerName";
  // Dev switches; the configuration refuses them unless DevMode is on. Each handshake that relies
  // on one records it (HandshakeDiagnostics) so that the connection logs a warning.
  bool allow_untrusted_root = false;    // server: AllowUntrustedRootCertificates
  bool skip_server_validation = false;  // client: SkipServerCertificateValidation
  // Client: offer the session of the last handshake with the same server name, so a reconnect
  // skips the certificate exchange. Off only to measure full handshakes (stella-bench).
  bool resume_sessions = true;
  // RevocationMode Online: the CRL cache and fetcher, shared by every snapshot of a provider so
  // that a reload keeps the cache. Created with defaults when the trust is Online and it is null.
  std::shared_ptr<OnlineRevocation> online_revocation;
};

// "Tls12, Tls13" — the allowed versions in the configuration's spelling.
std::string AllowedProtocolsText(const TlsOptions& options);

// What one handshake found out, filled in by the verification callback. One per connection;
// the connection owns it and points its SSL at it (AttachDiagnostics) before the handshake.
struct HandshakeDiagnostics {
  // Set when this side refused the peer's certificate.
  std::optional<VerifyFailure> failure;
  // Set when the peer's chain was verified (a resumed session skips verification).
  std::optional<CertificateIdentity> verified_peer;
  // The dev switch that let this handshake through, if one did ("SkipServerCertificateValidation"
  // or "AllowUntrustedRootCertificates"); the connection logs a warning naming it.
  std::string relied_on_dev_switch;
};

class TlsContext {
 public:
  // Compiles a snapshot. `trust` may be absent only for a client with skip_server_validation.
  // Fails with INVALID_ARGUMENT when the options contradict each other (no protocol allowed; a
  // server requiring client certificates without trust) and INTERNAL when BoringSSL refuses a
  // setting, with its reasons.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> Create(const TlsOptions& options,
                                                                  Credentials credentials,
                                                                  std::optional<TrustBundle> trust,
                                                                  std::uint64_t generation = 0);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // The SSL_CTX to make connections from; owned by this snapshot, which must outlive them.
  SSL_CTX* native_handle() const { return ctx_.get(); }

  // Prepares a fresh SSL made from native_handle(): points it at `diagnostics` (which must outlive
  // the handshake), and on a client sets SNI and offers a cached session for resumption.
  absl::Status PrepareSsl(SSL* ssl, HandshakeDiagnostics* diagnostics) const;

  const TlsOptions& options() const { return options_; }
  const Credentials& credentials() const { return credentials_; }
  const TrustBundle* trust() const { return trust_ ? &*trust_ : nullptr; }
  // Set when the trust's RevocationMode is Online: the connection checks the peer with it right
  // after the handshake.
  OnlineRevocation* online_revocation() const {
    return trust_ && trust_->revocation_mode == RevocationMode::kOnline
               ? options_.online_revocation.get()
               : nullptr;
  }
  // Increases with every reload; tells apart the snapshots a connection may hold.
  std::uint64_t generation() const { return generation_; }

  // A failed handshake or read explained: a metrics label and a sentence for the log.
  struct Failure {
    // A VerifyFailureReasonName, or "not_tls", "protocol_version", "rejected_by_peer",
    // "no_alpn", "no_common_cipher", "other".
    std::string label;
    std::string sentence;
  };

  // Explains the BoringSSL errors (`errors`, packed codes) of a failed handshake or read: the
  // verification failure recorded in `diagnostics` if there is one, else what the errors mean for
  // an operator — plaintext on the TLS port, no protocol version in common, the peer rejected
  // this side's certificate (which in TLS 1.3 a client learns only on its first read), ...
  Failure DescribeFailure(const std::vector<uint32_t>& errors,
                          const HandshakeDiagnostics& diagnostics) const;

 private:
  TlsContext(const TlsOptions& options, Credentials credentials, std::optional<TrustBundle> trust,
             std::uint64_t generation);

  absl::Status Configure();
  static enum ssl_verify_result_t VerifyPeer(SSL* ssl, uint8_t* out_alert);
  static int SelectAlpn(SSL* ssl, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                        unsigned in_len, void* arg);
  static int OnNewSession(SSL* ssl, SSL_SESSION* session);

  TlsOptions options_;
  Credentials credentials_;
  std::optional<TrustBundle> trust_;
  std::uint64_t generation_;
  bssl::UniquePtr<SSL_CTX> ctx_;

  // Client side: the latest session ticket per server name, offered on the next connection.
  mutable std::mutex sessions_mutex_;
  mutable absl::flat_hash_map<std::string, bssl::UniquePtr<SSL_SESSION>> sessions_
      ABSL_GUARDED_BY(sessions_mutex_);
};

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_TLS_CONTEXT_H_
