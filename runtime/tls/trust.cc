#include "runtime/tls/trust.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace stella::runtime::tls {
namespace {

namespace fs = std::filesystem;

bool IsBundleFile(const fs::path& path) {
  const std::string ext = absl::AsciiStrToLower(path.extension().string());
  return (ext == ".pem" || ext == ".crt" || ext == ".cer") &&
         !absl::StartsWith(path.filename().string(), ".");
}

// The files a CA path names: itself, or the bundle files in the directory (sorted).
absl::StatusOr<std::vector<std::string>> CaFiles(const TrustSource& source) {
  std::error_code ec;
  if (!fs::is_directory(source.ca_path, ec)) {
    return std::vector<std::string>{source.ca_path};
  }
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(source.ca_path, ec)) {
    if (entry.is_regular_file(ec) && IsBundleFile(entry.path())) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("cannot list ", source.ca_setting, "=", source.ca_path, ": ", ec.message()));
  }
  if (files.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source.ca_setting, "=", source.ca_path,
                                                   " is a directory with no .pem, .crt or .cer "
                                                   "file in it"));
  }
  std::sort(files.begin(), files.end());
  return files;
}

bool IsIpAddress(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

const char* PeerCertName(const VerifyOptions& options) {
  return options.peer_usage == CertificateUsage::kClient ? "client certificate"
                                                         : "server certificate";
}

bool IsUntrustedRootError(int err) {
  return err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
         err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
         err == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
         err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
         err == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE;
}

// What the verify callback needs; lives on VerifyPeerChain's stack.
struct CallbackState {
  bool allow_untrusted_root = false;
  bool relied_on_untrusted_root = false;
};

int g_callback_state_index = -1;

int VerifyCallback(int ok, X509_STORE_CTX* ctx) {
  if (ok) {
    return 1;
  }
  auto* state =
      static_cast<CallbackState*>(X509_STORE_CTX_get_ex_data(ctx, g_callback_state_index));
  if (state != nullptr && state->allow_untrusted_root &&
      IsUntrustedRootError(X509_STORE_CTX_get_error(ctx))) {
    state->relied_on_untrusted_root = true;
    return 1;  // keep going: expiry, usage and names are still checked
  }
  return 0;
}

// Finds when `cert` was revoked according to the CRLs given.
std::string RevocationTime(X509* cert, const std::vector<X509_CRL*>& crls) {
  for (X509_CRL* crl : crls) {
    X509_REVOKED* revoked = nullptr;
    if (X509_CRL_get0_by_cert(crl, &revoked, cert) == 1 && revoked != nullptr) {
      return FormatUtc(Asn1TimeToAbsl(X509_REVOKED_get0_revocationDate(revoked)));
    }
  }
  return "an unknown time";
}

std::string UsageWords(CertificateUsage usage) {
  return usage == CertificateUsage::kClient ? "TLS client authentication (clientAuth)"
                                            : "TLS server authentication (serverAuth)";
}

VerifyFailure Expired(const std::string& who, const std::string& which,
                      const CertificateIdentity& cert, absl::Time now) {
  return {VerifyFailureReason::kExpired,
          absl::StrCat(who, which, " expired at ", FormatUtc(cert.not_after), " (it is now ",
                       FormatUtc(now), "): ", cert.Describe(), "; the peer must renew it")};
}

VerifyFailure NotYetValid(const std::string& who, const std::string& which,
                          const CertificateIdentity& cert, absl::Time now) {
  return {
      VerifyFailureReason::kNotYetValid,
      absl::StrCat(who, which, " is not valid until ", FormatUtc(cert.not_before), " (it is now ",
                   FormatUtc(now), "): ", cert.Describe(), "; check the clocks of both machines")};
}

// With an untrusted root accepted, BoringSSL stops at the missing issuer without checking the
// validity periods; check them here so the dev switch waives trust and nothing else.
std::optional<VerifyFailure> CheckValidityPeriods(const std::vector<X509*>& chain,
                                                  const VerifyOptions& options) {
  const std::string who = absl::StrCat(PeerCertName(options), " rejected: ");
  for (X509* x : chain) {
    const CertificateIdentity cert = IdentityOf(x);
    const std::string which = x == chain.front()
                                  ? std::string("it")
                                  : absl::StrCat("its chain certificate \"", cert.subject, "\"");
    if (options.now > cert.not_after) {
      return Expired(who, which, cert, options.now);
    }
    if (options.now < cert.not_before) {
      return NotYetValid(who, which, cert, options.now);
    }
  }
  return std::nullopt;
}

VerifyFailure Explain(X509_STORE_CTX* ctx, X509* leaf, const TrustBundle& trust,
                      const VerifyOptions& options, const std::vector<X509_CRL*>& crls,
                      const std::string& crl_origin) {
  const int err = X509_STORE_CTX_get_error(ctx);
  X509* current = X509_STORE_CTX_get_current_cert(ctx);
  if (current == nullptr) {
    current = leaf;
  }
  const CertificateIdentity peer = IdentityOf(leaf);
  const CertificateIdentity cert = IdentityOf(current);
  const std::string who = absl::StrCat(PeerCertName(options), " rejected: ");
  const std::string which = current == leaf
                                ? std::string("it")
                                : absl::StrCat("its chain certificate \"", cert.subject, "\"");
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return {
          VerifyFailureReason::kUnknownIssuer,
          absl::StrCat(who, "issued by \"", cert.issuer, "\", which is not in the trust bundle ",
                       trust.ca_origin, " (", peer.Describe(), ")")};
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      return {VerifyFailureReason::kUnknownIssuer,
              absl::StrCat(who, "its chain ends at the self-signed \"", cert.subject,
                           "\", which is not in the trust bundle ", trust.ca_origin, " (",
                           peer.Describe(), ")")};
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return Expired(who, which, cert, options.now);
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return NotYetValid(who, which, cert, options.now);
    case X509_V_ERR_CERT_REVOKED:
      return {VerifyFailureReason::kRevoked,
              absl::StrCat(who, which, " was revoked at ", RevocationTime(current, crls),
                           " according to the CRL of \"", cert.issuer, "\" (", crl_origin,
                           "): ", cert.Describe())};
    case X509_V_ERR_UNABLE_TO_GET_CRL:
      return {VerifyFailureReason::kCrlMissing,
              absl::StrCat(who, "no CRL from \"", cert.issuer, "\", which issued \"", cert.subject,
                           "\", is loaded (", crl_origin.empty() ? "no CRL source" : crl_origin,
                           "); RevocationMode is ", RevocationModeName(trust.revocation_mode),
                           ", so add that CA's CRL to CrlPaths or set RevocationMode: NoCheck")};
    case X509_V_ERR_CRL_HAS_EXPIRED: {
      X509_CRL* crl = X509_STORE_CTX_get0_current_crl(ctx);
      return {VerifyFailureReason::kCrlExpired,
              absl::StrCat(who, "the CRL of \"", cert.issuer, "\" (", crl_origin,
                           ") expired at its nextUpdate ",
                           crl != nullptr ? FormatUtc(Asn1TimeToAbsl(X509_CRL_get0_nextUpdate(crl)))
                                          : std::string("(unknown)"),
                           " (it is now ", FormatUtc(options.now),
                           "): publish a fresh CRL from that CA")};
    }
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
      return {VerifyFailureReason::kCrlInvalid,
              absl::StrCat(who, "the CRL of \"", cert.issuer, "\" (", crl_origin,
                           ") cannot be used: ", X509_verify_cert_error_string(err))};
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return {VerifyFailureReason::kNameMismatch,
              absl::StrCat(PeerCertName(options), " does not match ", options.expected_name_setting,
                           " \"", options.expected_name, "\": it names ", peer.DescribeNames(),
                           " (", peer.Describe(), ")")};
    case X509_V_ERR_INVALID_PURPOSE:
      return {VerifyFailureReason::kWrongUsage,
              absl::StrCat(
                  who, which, " is not allowed for ", UsageWords(options.peer_usage),
                  " by its extended key usage: ", cert.Describe(),
                  "; the peer needs a certificate issued with ",
                  options.peer_usage == CertificateUsage::kClient ? "clientAuth" : "serverAuth")};
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
      return {VerifyFailureReason::kBadSignature,
              absl::StrCat(who, "the signature on ", which, " does not verify against \"",
                           cert.issuer, "\" in ", trust.ca_origin,
                           ": the certificate was not issued by that CA, or was altered (",
                           cert.Describe(), ")")};
    default:
      return {VerifyFailureReason::kOther, absl::StrCat(who, X509_verify_cert_error_string(err),
                                                        " at ", which, " (", cert.Describe(), ")")};
  }
}

}  // namespace

const char* RevocationModeName(RevocationMode mode) {
  switch (mode) {
    case RevocationMode::kNoCheck:
      return "NoCheck";
    case RevocationMode::kOffline:
      return "Offline";
    case RevocationMode::kOnline:
      return "Online";
  }
  return "NoCheck";
}

const char* VerifyFailureReasonName(VerifyFailureReason reason) {
  switch (reason) {
    case VerifyFailureReason::kNoPeerCertificate:
      return "no_certificate";
    case VerifyFailureReason::kUnknownIssuer:
      return "unknown_ca";
    case VerifyFailureReason::kExpired:
      return "expired";
    case VerifyFailureReason::kNotYetValid:
      return "not_yet_valid";
    case VerifyFailureReason::kRevoked:
      return "revoked";
    case VerifyFailureReason::kCrlMissing:
      return "crl_missing";
    case VerifyFailureReason::kCrlExpired:
      return "crl_expired";
    case VerifyFailureReason::kCrlInvalid:
      return "crl_invalid";
    case VerifyFailureReason::kNameMismatch:
      return "name_mismatch";
    case VerifyFailureReason::kWrongUsage:
      return "wrong_usage";
    case VerifyFailureReason::kBadSignature:
      return "bad_signature";
    case VerifyFailureReason::kOther:
      return "other";
  }
  return "other";
}

absl::StatusOr<TrustBundle> LoadTrust(const TrustSource& source) {
  TrustBundle trust;
  trust.revocation_mode = source.revocation_mode;
  if (source.ca_path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source.ca_setting,
                     " is not set: set it to the CA bundle (file or directory) that issued "
                     "the peers' certificates"));
  }
  trust.ca_origin = absl::StrCat(source.ca_setting, "=", source.ca_path);
  absl::StatusOr<std::vector<std::string>> files = CaFiles(source);
  if (!files.ok()) {
    return files.status();
  }
  for (const std::string& file : *files) {
    const std::string where =
        file == source.ca_path ? trust.ca_origin : absl::StrCat(source.ca_setting, " file ", file);
    absl::StatusOr<std::string> text = ReadFile(file);
    if (!text.ok()) {
      return absl::Status(text.status().code(), absl::StrCat(where, ": ", text.status().message()));
    }
    absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs = ParsePemCertificates(*text, where);
    if (!certs.ok()) {
      return certs.status();
    }
    for (auto& cert : *certs) {
      trust.cas.push_back(std::move(cert));
    }
  }
  if (source.revocation_mode == RevocationMode::kOffline && source.crl_paths.empty()) {
    return absl::InvalidArgumentError(
        "RevocationMode is Offline but CrlPaths is empty: list the CRL files of the CAs in " +
        trust.ca_origin + ", or set RevocationMode: NoCheck");
  }
  trust.crl_origin = absl::StrCat("CrlPaths=", absl::StrJoin(source.crl_paths, ", "));
  for (const std::string& path : source.crl_paths) {
    const std::string where = absl::StrCat("CrlPaths entry ", path);
    absl::StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) {
      return absl::Status(text.status().code(), absl::StrCat(where, ": ", text.status().message()));
    }
    absl::StatusOr<std::vector<bssl::UniquePtr<X509_CRL>>> crls = ParseCrls(*text, where);
    if (!crls.ok()) {
      return crls.status();
    }
    for (auto& crl : *crls) {
      trust.crls.push_back(std::move(crl));
    }
  }

  trust.store.reset(X509_STORE_new());
  if (trust.store == nullptr) {
    return SslError(absl::StatusCode::kInternal, "cannot allocate an X509_STORE");
  }
  for (const auto& ca : trust.cas) {
    if (!X509_STORE_add_cert(trust.store.get(), ca.get())) {
      const uint32_t err = ERR_peek_last_error();
      if (ERR_GET_REASON(err) == X509_R_CERT_ALREADY_IN_HASH_TABLE) {
        ERR_clear_error();  // the same CA twice in a bundle is harmless
        continue;
      }
      return SslError(
          absl::StatusCode::kInternal,
          absl::StrCat("cannot add a CA from ", trust.ca_origin, " to the trust store"));
    }
  }
  if (source.revocation_mode == RevocationMode::kOffline) {
    for (const auto& crl : trust.crls) {
      if (!X509_STORE_add_crl(trust.store.get(), crl.get())) {
        ERR_clear_error();  // a duplicate CRL is harmless
      }
    }
  }
  return trust;
}

std::vector<std::string> TrustFiles(const TrustSource& source) {
  std::vector<std::string> files;
  if (!source.ca_path.empty()) {
    files.push_back(source.ca_path);
  }
  files.insert(files.end(), source.crl_paths.begin(), source.crl_paths.end());
  return files;
}

std::variant<VerifyResult, VerifyFailure> VerifyPeerChain(const std::vector<X509*>& chain,
                                                          const TrustBundle& trust,
                                                          const VerifyOptions& options) {
  if (chain.empty() || chain.front() == nullptr) {
    return VerifyFailure{
        VerifyFailureReason::kNoPeerCertificate,
        options.peer_usage == CertificateUsage::kClient
            ? absl::StrCat("client presented no certificate, but RequireClientCertificate is "
                           "true: the peer must present one issued by a CA in ",
                           trust.ca_origin)
            : std::string("server presented no certificate")};
  }
  static const int index = [] {
    g_callback_state_index = X509_STORE_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return g_callback_state_index;
  }();
  if (trust.store == nullptr) {
    return VerifyFailure{VerifyFailureReason::kOther,
                         "no trust bundle is loaded, so no peer certificate can be verified"};
  }
  X509* leaf = chain.front();
  bssl::UniquePtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < chain.size(); ++i) {
    // The stack's deleter frees its items, so it holds references of its own.
    if (!bssl::PushToStack(untrusted.get(), bssl::UpRef(chain[i]))) {
      return VerifyFailure{VerifyFailureReason::kOther, "out of memory building the peer chain"};
    }
  }
  bssl::UniquePtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || !X509_STORE_CTX_init(ctx.get(), trust.store.get(), leaf, untrusted.get())) {
    ERR_clear_error();
    return VerifyFailure{VerifyFailureReason::kOther, "cannot set up certificate verification"};
  }
  X509_STORE_CTX_set_purpose(ctx.get(), options.peer_usage == CertificateUsage::kClient
                                            ? X509_PURPOSE_SSL_CLIENT
                                            : X509_PURPOSE_SSL_SERVER);
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(options.now));
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  if (!options.expected_name.empty()) {
    const bool set = IsIpAddress(options.expected_name)
                         ? X509_VERIFY_PARAM_set1_ip_asc(param, options.expected_name.c_str())
                         : X509_VERIFY_PARAM_set1_host(param, options.expected_name.data(),
                                                       options.expected_name.size());
    if (!set) {
      ERR_clear_error();
      return VerifyFailure{VerifyFailureReason::kOther,
                           absl::StrCat(options.expected_name_setting, " \"", options.expected_name,
                                        "\" is not a valid host name or IP address")};
    }
  }
  // CRLs in force for this verification, for the revocation-time lookup in messages.
  std::vector<X509_CRL*> crls;
  std::string crl_origin = trust.crl_origin;
  bssl::UniquePtr<STACK_OF(X509_CRL)> extra(sk_X509_CRL_new_null());
  if (!options.extra_crls.empty()) {
    for (X509_CRL* crl : options.extra_crls) {
      if (!bssl::PushToStack(extra.get(), bssl::UpRef(crl))) {
        return VerifyFailure{VerifyFailureReason::kOther, "out of memory building the CRL list"};
      }
      crls.push_back(crl);
    }
    X509_STORE_CTX_set0_crls(ctx.get(), extra.get());
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK);
    crl_origin = options.extra_crl_origin;
  } else if (trust.revocation_mode == RevocationMode::kOffline) {
    for (const auto& crl : trust.crls) {
      crls.push_back(crl.get());
    }
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK);
  }
  CallbackState state{.allow_untrusted_root = options.allow_untrusted_root};
  X509_STORE_CTX_set_ex_data(ctx.get(), index, &state);
  X509_STORE_CTX_set_verify_cb(ctx.get(), VerifyCallback);

  const int ok = X509_verify_cert(ctx.get());
  if (ok == 1) {
    ERR_clear_error();
    if (state.relied_on_untrusted_root) {
      if (std::optional<VerifyFailure> failure = CheckValidityPeriods(chain, options)) {
        return *failure;
      }
    }
    return VerifyResult{IdentityOf(leaf), state.relied_on_untrusted_root};
  }
  VerifyFailure failure = Explain(ctx.get(), leaf, trust, options, crls, crl_origin);
  ERR_clear_error();
  return failure;
}

}  // namespace stella::runtime::tls
