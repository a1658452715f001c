#include "runtime/tls/tls_context.h"

#include <openssl/err.h>
#include <openssl/pool.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/tls/online_revocation.h"

namespace stella::runtime::tls {
namespace {

// TLS 1.2 suites: forward-secret (ECDHE) AEAD only. TLS 1.3 suites are all AEAD and forward
// secret, and BoringSSL does not let them be narrowed.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr char kCurves[] = "X25519:P-256:P-384";
constexpr uint8_t kAlpnWire[] = {8, 's', 't', 'e', 'l', 'l', 'a', '/', '1'};
constexpr char kSessionIdContext[] = "stella";
// BoringSSL's default verification preferences plus Ed25519, which it leaves out by default:
// Ed25519 certificates verify about three times faster than ECDSA P-256 ones.
constexpr uint16_t kVerifyAlgorithms[] = {
    SSL_SIGN_ECDSA_SECP256R1_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA256, SSL_SIGN_RSA_PKCS1_SHA256,
    SSL_SIGN_ECDSA_SECP384R1_SHA384, SSL_SIGN_RSA_PSS_RSAE_SHA384, SSL_SIGN_RSA_PKCS1_SHA384,
    SSL_SIGN_RSA_PSS_RSAE_SHA512,    SSL_SIGN_RSA_PKCS1_SHA512,    SSL_SIGN_ED25519,
};

int ContextIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int DiagnosticsIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

uint8_t AlertFor(VerifyFailureReason reason) {
  switch (reason) {
    case VerifyFailureReason::kNoPeerCertificate:
      return SSL_AD_CERTIFICATE_REQUIRED;
    case VerifyFailureReason::kUnknownIssuer:
      return SSL_AD_UNKNOWN_CA;
    case VerifyFailureReason::kExpired:
    case VerifyFailureReason::kNotYetValid:
      return SSL_AD_CERTIFICATE_EXPIRED;
    case VerifyFailureReason::kRevoked:
      return SSL_AD_CERTIFICATE_REVOKED;
    case VerifyFailureReason::kWrongUsage:
      return SSL_AD_UNSUPPORTED_CERTIFICATE;
    case VerifyFailureReason::kCrlMissing:
    case VerifyFailureReason::kCrlExpired:
    case VerifyFailureReason::kCrlInvalid:
      return SSL_AD_CERTIFICATE_UNKNOWN;
    default:
      return SSL_AD_BAD_CERTIFICATE;
  }
}

// The first error from the SSL library, which says what happened at the TLS level.
int FirstSslReason(const std::vector<uint32_t>& errors) {
  for (uint32_t packed : errors) {
    if (ERR_GET_LIB(packed) == ERR_LIB_SSL) {
      return ERR_GET_REASON(packed);
    }
  }
  return 0;
}

std::string ErrorsText(const std::vector<uint32_t>& errors) {
  std::vector<std::string> parts;
  for (uint32_t packed : errors) {
    const char* reason = ERR_reason_error_string(packed);
    parts.emplace_back(reason != nullptr ? reason : "unknown error");
  }
  return parts.empty() ? "no details from BoringSSL" : absl::StrJoin(parts, "; ");
}

}  // namespace

std::string AllowedProtocolsText(const TlsOptions& options) {
  std::vector<std::string> names;
  if (options.allow_tls12) {
    names.emplace_back("Tls12");
  }
  if (options.allow_tls13) {
    names.emplace_back("Tls13");
  }
  return absl::StrJoin(names, ", ");
}

TlsContext::TlsContext(const TlsOptions& options, Credentials credentials,
                       std::optional<TrustBundle> trust, std::uint64_t generation)
    : options_(options),
      credentials_(std::move(credentials)),
      trust_(std::move(trust)),
      generation_(generation) {}

TlsContext::~TlsContext() = default;

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::Create(
    const TlsOptions& options, Credentials credentials, std::optional<TrustBundle> trust,
    std::uint64_t generation) {
  if (!options.allow_tls12 && !options.allow_tls13) {
    return absl::InvalidArgumentError(
        "AllowedProtocols allows no protocol: list Tls12, Tls13 or both");
  }
  if (credentials.chain.empty() || credentials.key == nullptr) {
    return absl::InvalidArgumentError("no certificate and key to present in the handshake");
  }
  const bool needs_trust = options.role == TlsRole::kServer ? options.require_client_certificate
                                                            : !options.skip_server_validation;
  if (needs_trust && !trust.has_value()) {
    return absl::InvalidArgumentError(
        options.role == TlsRole::kServer
            ? "RequireClientCertificate is true but no ClientCaCertificatePath trust is loaded"
            : "no ServerCaCertificatePath trust is loaded to verify the gateway with");
  }
  TlsOptions effective = options;
  if (trust.has_value() && trust->revocation_mode == RevocationMode::kOnline &&
      effective.online_revocation == nullptr) {
    effective.online_revocation = std::make_shared<OnlineRevocation>(OnlineRevocation::Options{});
  }
  std::shared_ptr<TlsContext> context(
      new TlsContext(effective, std::move(credentials), std::move(trust), generation));
  if (absl::Status status = context->Configure(); !status.ok()) {
    return status;
  }
  return std::shared_ptr<const TlsContext>(std::move(context));
}

absl::Status TlsContext::Configure() {
  ctx_.reset(SSL_CTX_new(TLS_method()));
  if (ctx_ == nullptr) {
    return SslError(absl::StatusCode::kInternal, "cannot create an SSL_CTX");
  }
  SSL_CTX* ctx = ctx_.get();
  const uint16_t min_version = options_.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
  const uint16_t max_version = options_.allow_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, min_version) ||
      !SSL_CTX_set_max_proto_version(ctx, max_version) ||
      !SSL_CTX_set_strict_cipher_list(ctx, kTls12Ciphers) ||
      !SSL_CTX_set1_curves_list(ctx, kCurves) ||
      !SSL_CTX_set_verify_algorithm_prefs(
          ctx, kVerifyAlgorithms, sizeof(kVerifyAlgorithms) / sizeof(kVerifyAlgorithms[0]))) {
    return SslError(absl::StatusCode::kInternal, "cannot set TLS versions, ciphers or curves");
  }
  if (!SSL_CTX_use_certificate(ctx, credentials_.chain.front().get()) ||
      !SSL_CTX_use_PrivateKey(ctx, credentials_.key.get())) {
    return SslError(absl::StatusCode::kInvalidArgument,
                    absl::StrCat("cannot use the certificate and key of ", credentials_.origin));
  }
  for (std::size_t i = 1; i < credentials_.chain.size(); ++i) {
    if (!SSL_CTX_add1_chain_cert(ctx, credentials_.chain[i].get())) {
      return SslError(absl::StatusCode::kInternal,
                      absl::StrCat("cannot add the chain of ", credentials_.origin));
    }
  }
  if (!SSL_CTX_check_private_key(ctx)) {
    return SslError(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("the key does not match the certificate of ", credentials_.origin));
  }
  SSL_CTX_set_ex_data(ctx, ContextIndex(), this);
  if (!SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const uint8_t*>(kSessionIdContext),
                                      strlen(kSessionIdContext))) {
    return SslError(absl::StatusCode::kInternal, "cannot set the session id context");
  }

  if (options_.role == TlsRole::kServer) {
    int mode = SSL_VERIFY_NONE;
    if (options_.require_client_certificate) {
      mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    } else if (trust_.has_value()) {
      mode = SSL_VERIFY_PEER;  // ask for a certificate, verify it if one comes
    }
    SSL_CTX_set_custom_verify(ctx, mode, &TlsContext::VerifyPeer);
    SSL_CTX_set_alpn_select_cb(ctx, &TlsContext::SelectAlpn, nullptr);
  } else {
    SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, &TlsContext::VerifyPeer);
    if (SSL_CTX_set_alpn_protos(ctx, kAlpnWire, sizeof(kAlpnWire)) != 0) {
      return SslError(absl::StatusCode::kInternal, "cannot set ALPN");
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, &TlsContext::OnNewSession);
  }
  return absl::OkStatus();
}

absl::Status TlsContext::PrepareSsl(SSL* ssl, HandshakeDiagnostics* diagnostics) const {
  if (!SSL_set_ex_data(ssl, DiagnosticsIndex(), diagnostics)) {
    return SslError(absl::StatusCode::kInternal, "cannot attach handshake diagnostics");
  }
  if (options_.role == TlsRole::kClient && !options_.expected_server_name.empty()) {
    if (!SSL_set_tlsext_host_name(ssl, options_.expected_server_name.c_str())) {
      return SslError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat("cannot send ", options_.expected_server_name_setting, " \"",
                                   options_.expected_server_name, "\" as the TLS server name"));
    }
    if (options_.resume_sessions) {
      std::lock_guard<std::mutex> lock(sessions_mutex_);
      auto it = sessions_.find(options_.expected_server_name);
      if (it != sessions_.end()) {
        SSL_set_session(ssl, it->second.get());  // takes its own reference
      }
    }
  }
  return absl::OkStatus();
}

enum ssl_verify_result_t TlsContext::VerifyPeer(SSL* ssl, uint8_t* out_alert) {
  const auto* self =
      static_cast<const TlsContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ContextIndex()));
  auto* diagnostics = static_cast<HandshakeDiagnostics*>(SSL_get_ex_data(ssl, DiagnosticsIndex()));
  if (self == nullptr || diagnostics == nullptr) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  std::vector<bssl::UniquePtr<X509>> owned;
  std::vector<X509*> chain;
  const STACK_OF(CRYPTO_BUFFER)* buffers = SSL_get0_peer_certificates(ssl);
  // BoringSSL has already parsed the chain it received into X509 objects (this SSL_CTX is not
  // buffers-only); use them rather than parsing every certificate a second time.
  if (STACK_OF(X509)* parsed = SSL_get_peer_full_cert_chain(ssl);
      parsed != nullptr && buffers != nullptr &&
      sk_X509_num(parsed) == sk_CRYPTO_BUFFER_num(buffers)) {
    for (std::size_t i = 0; i < sk_X509_num(parsed); ++i) {
      chain.push_back(sk_X509_value(parsed, i));
    }
  } else if (buffers != nullptr) {
    for (std::size_t i = 0; i < sk_CRYPTO_BUFFER_num(buffers); ++i) {
      bssl::UniquePtr<X509> cert(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(buffers, i)));
      if (cert == nullptr) {
        ERR_clear_error();
        diagnostics->failure = VerifyFailure{VerifyFailureReason::kOther,
                                             "the peer sent a certificate that does not parse"};
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        return ssl_verify_invalid;
      }
      chain.push_back(cert.get());
      owned.push_back(std::move(cert));
    }
  }
  const TlsOptions& options = self->options_;
  if (options.role == TlsRole::kClient && options.skip_server_validation) {
    diagnostics->relied_on_dev_switch = "SkipServerCertificateValidation";
    if (!chain.empty()) {
      diagnostics->verified_peer = IdentityOf(chain.front());
    }
    return ssl_verify_ok;
  }
  VerifyOptions verify;
  verify.peer_usage =
      options.role == TlsRole::kServer ? CertificateUsage::kClient : CertificateUsage::kServer;
  if (options.role == TlsRole::kClient) {
    verify.expected_name = options.expected_server_name;
    verify.expected_name_setting = options.expected_server_name_setting;
  }
  verify.allow_untrusted_root = options.role == TlsRole::kServer && options.allow_untrusted_root;
  std::variant<VerifyResult, VerifyFailure> result = VerifyPeerChain(chain, *self->trust_, verify);
  if (auto* failure = std::get_if<VerifyFailure>(&result)) {
    *out_alert = AlertFor(failure->reason);
    diagnostics->failure = std::move(*failure);
    return ssl_verify_invalid;
  }
  auto& ok = std::get<VerifyResult>(result);
  if (ok.relied_on_untrusted_root) {
    diagnostics->relied_on_dev_switch = "AllowUntrustedRootCertificates";
  }
  diagnostics->verified_peer = std::move(ok.peer);
  return ssl_verify_ok;
}

int TlsContext::SelectAlpn(SSL* /*ssl*/, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                           unsigned in_len, void* /*arg*/) {
  // `in` is a list of length-prefixed protocol names; pick ours or refuse the handshake.
  for (unsigned i = 0; i < in_len;) {
    const unsigned len = in[i];
    if (i + 1 + len > in_len) {
      break;
    }
    if (len == sizeof(kAlpnWire) - 1 && std::memcmp(in + i + 1, kAlpnWire + 1, len) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<uint8_t>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int TlsContext::OnNewSession(SSL* ssl, SSL_SESSION* session) {
  const auto* self =
      static_cast<const TlsContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ContextIndex()));
  if (self == nullptr) {
    return 0;  // BoringSSL keeps ownership and frees it
  }
  std::lock_guard<std::mutex> lock(self->sessions_mutex_);
  self->sessions_[self->options_.expected_server_name].reset(session);
  return 1;  // we took ownership
}

TlsContext::Failure TlsContext::DescribeFailure(const std::vector<uint32_t>& errors,
                                                const HandshakeDiagnostics& diagnostics) const {
  if (diagnostics.failure.has_value()) {
    return {VerifyFailureReasonName(diagnostics.failure->reason), diagnostics.failure->sentence};
  }
  const std::string ours = absl::StrCat("this side's certificate is ", credentials_.leaf.Describe(),
                                        " from ", credentials_.origin);
  const char* peer_trust = options_.role == TlsRole::kClient
                               ? "the gateway's ClientCaCertificatePath"
                               : "the peer's ServerCaCertificatePath";
  switch (FirstSslReason(errors)) {
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return {"not_tls",
              "the peer sent plaintext HTTP to this TLS port: it must connect with mutual TLS "
              "(ALPN stella/1)"};
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_DATA_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
      return {"not_tls",
              "the peer sent bytes that are not TLS (plaintext or garbage) to this TLS port"};
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return {"protocol_version",
              absl::StrCat("no TLS version in common: AllowedProtocols here is ",
                           AllowedProtocolsText(options_),
                           ", and the peer offered or accepted none of them (TLS 1.1 and older "
                           "are never allowed)")};
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return {"no_certificate",
              absl::StrCat("client presented no certificate, but RequireClientCertificate is "
                           "true: the peer must present one issued by a CA in ",
                           trust_ ? trust_->ca_origin : std::string("the trust bundle"))};
    case SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED:
      return {"rejected_by_peer", "the peer requires a client certificate and this side sent none"};
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return {"rejected_by_peer",
              absl::StrCat("the peer rejected this side's certificate (TLS alert unknown_ca): it "
                           "does not trust the issuer \"",
                           credentials_.leaf.issuer, "\"; add that CA to ", peer_trust, " (", ours,
                           ")")};
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      return {"rejected_by_peer",
              absl::StrCat("the peer rejected this side's certificate (TLS alert "
                           "certificate_expired): it finds it expired or not yet valid; check "
                           "the dates and both clocks (",
                           ours, ")")};
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
      return {"rejected_by_peer",
              absl::StrCat("the peer rejected this side's certificate (TLS alert "
                           "certificate_revoked): a CRL it holds revokes it; issue a new one (",
                           ours, ")")};
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
      return {"rejected_by_peer",
              absl::StrCat("the peer rejected this side's certificate (TLS alert "
                           "unsupported_certificate): its extended key usage does not allow "
                           "this role (",
                           ours, ")")};
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
      return {"rejected_by_peer",
              absl::StrCat("the peer rejected this side's certificate (TLS alert ",
                           ErrorsText(errors), "); its log says why (", ours, ")")};
    case SSL_R_NO_APPLICATION_PROTOCOL:
    case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
      return {"no_alpn",
              "the peer did not offer the ALPN protocol stella/1: it is not a Stella peer, or "
              "speaks another protocol version"};
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    case SSL_R_NO_COMMON_SIGNATURE_ALGORITHMS:
      return {"no_common_cipher",
              absl::StrCat("no cipher suite, curve or signature algorithm in common with the "
                           "peer (Stella allows only forward-secret AEAD suites): ",
                           ErrorsText(errors))};
    default:
      return {"other", absl::StrCat("TLS failed: ", ErrorsText(errors))};
  }
}

}  // namespace stella::runtime::tls
