#include "runtime/tls/x509.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace stella::runtime::tls {
namespace {

std::string Asn1StringToString(const ASN1_STRING* s) {
  if (s == nullptr) {
    return "";
  }
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

std::string IpToString(const ASN1_OCTET_STRING* ip) {
  const std::string raw = Asn1StringToString(ip);
  char buf[INET6_ADDRSTRLEN] = {};
  if (raw.size() == 4 && inet_ntop(AF_INET, raw.data(), buf, sizeof(buf)) != nullptr) {
    return buf;
  }
  if (raw.size() == 16 && inet_ntop(AF_INET6, raw.data(), buf, sizeof(buf)) != nullptr) {
    return buf;
  }
  return absl::BytesToHexString(raw);
}

std::string LastCommonName(const X509_NAME* name) {
  int index = -1;
  int last = -1;
  while ((index = X509_NAME_get_index_by_NID(name, NID_commonName, index)) >= 0) {
    last = index;
  }
  if (last < 0) {
    return "";
  }
  return Asn1StringToString(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last)));
}

std::string SerialHex(X509* cert) {
  bssl::UniquePtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (bn == nullptr) {
    ERR_clear_error();
    return "";
  }
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) {
    ERR_clear_error();
    return "";
  }
  std::string out = absl::AsciiStrToUpper(hex);
  OPENSSL_free(hex);
  return out;
}

}  // namespace

BIO* MemoryBio(absl::string_view bytes) {
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return nullptr;
  }
  return BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
}

std::string NameToString(const X509_NAME* name) {
  if (name == nullptr) {
    return "";
  }
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr ||
      X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ERR_clear_error();
    return "";
  }
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(bio.get(), &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

absl::Time Asn1TimeToAbsl(const ASN1_TIME* time) {
  if (time == nullptr) {
    return absl::InfinitePast();
  }
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int seconds = 0;
  if (epoch == nullptr || !ASN1_TIME_diff(&days, &seconds, epoch.get(), time)) {
    ERR_clear_error();
    return absl::InfinitePast();
  }
  return absl::FromUnixSeconds(int64_t{days} * 86400 + seconds);
}

std::string FormatUtc(absl::Time t) {
  if (t == absl::InfinitePast()) {
    return "(unreadable time)";
  }
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string Thumbprint(X509* cert, const EVP_MD* md) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!X509_digest(cert, md, digest, &len)) {
    ERR_clear_error();
    return "";
  }
  return absl::AsciiStrToUpper(
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), len)));
}

absl::StatusOr<std::string> NormalizeThumbprint(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ':' || c == ' ' || c == '-') {
      continue;
    }
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat("thumbprint \"", text,
                                                     "\" has the character '", std::string(1, c),
                                                     "', which is not a hex digit"));
    }
    out.push_back(absl::ascii_toupper(static_cast<unsigned char>(c)));
  }
  if (out.size() != 40 && out.size() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("thumbprint \"", text, "\" has ", out.size(),
                     " hex digits; a SHA-1 thumbprint has 40 and a SHA-256 thumbprint has 64"));
  }
  return out;
}

std::string CertificateIdentity::DescribeNames() const {
  std::vector<std::string> names;
  for (const std::string& dns : dns_names) {
    names.push_back(absl::StrCat("DNS:", dns));
  }
  for (const std::string& ip : ips) {
    names.push_back(absl::StrCat("IP:", ip));
  }
  for (const std::string& uri : uris) {
    names.push_back(absl::StrCat("URI:", uri));
  }
  if (names.empty()) {
    return "no subject alternative names";
  }
  return absl::StrJoin(names, ", ");
}

std::string CertificateIdentity::Describe() const {
  return absl::StrCat("subject \"", subject, "\", issuer \"", issuer, "\", serial ", serial_hex,
                      ", valid ", FormatUtc(not_before), " to ", FormatUtc(not_after));
}

CertificateIdentity IdentityOf(X509* cert) {
  CertificateIdentity id;
  if (cert == nullptr) {
    return id;
  }
  id.subject = NameToString(X509_get_subject_name(cert));
  id.issuer = NameToString(X509_get_issuer_name(cert));
  id.common_name = LastCommonName(X509_get_subject_name(cert));
  id.serial_hex = SerialHex(cert);
  id.sha256_thumbprint = Thumbprint(cert, EVP_sha256());
  id.not_before = Asn1TimeToAbsl(X509_get0_notBefore(cert));
  id.not_after = Asn1TimeToAbsl(X509_get0_notAfter(cert));

  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  ERR_clear_error();
  if (names != nullptr) {
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
      switch (name->type) {
        case GEN_DNS:
          id.dns_names.push_back(Asn1StringToString(name->d.dNSName));
          break;
        case GEN_URI: {
          std::string uri = Asn1StringToString(name->d.uniformResourceIdentifier);
          if (id.spiffe_id.empty() && absl::StartsWith(uri, "spiffe://")) {
            id.spiffe_id = uri;
          }
          id.uris.push_back(std::move(uri));
          break;
        }
        case GEN_IPADD:
          id.ips.push_back(IpToString(name->d.iPAddress));
          break;
        default:
          break;
      }
    }
  }
  return id;
}

std::vector<uint32_t> TakeSslErrors() {
  std::vector<uint32_t> errors;
  uint32_t packed = 0;
  while ((packed = ERR_get_error()) != 0) {
    errors.push_back(packed);
  }
  return errors;
}

bool HasSslError(const std::vector<uint32_t>& errors, int lib, int reason) {
  for (uint32_t packed : errors) {
    if (ERR_GET_LIB(packed) == lib && ERR_GET_REASON(packed) == reason) {
      return true;
    }
  }
  return false;
}

absl::Status SslError(absl::StatusCode code, absl::string_view message) {
  return SslErrorFrom(code, message, TakeSslErrors());
}

absl::Status SslErrorFrom(absl::StatusCode code, absl::string_view message,
                          const std::vector<uint32_t>& errors) {
  std::vector<std::string> reasons;
  for (uint32_t packed : errors) {
    const char* lib = ERR_lib_error_string(packed);
    const char* reason = ERR_reason_error_string(packed);
    reasons.push_back(absl::StrCat(lib != nullptr ? lib : "unknown library", ": ",
                                   reason != nullptr ? reason : "unknown reason"));
  }
  if (reasons.empty()) {
    return absl::Status(code, message);
  }
  return absl::Status(code, absl::StrCat(message, " (", absl::StrJoin(reasons, "; "), ")"));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = std::strerror(err);
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", why));
    }
    if (err == EACCES) {
      return absl::PermissionDeniedError(absl::StrCat("cannot read ", path, ": ", why));
    }
    return absl::InternalError(absl::StrCat("cannot read ", path, ": ", why));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCertificates(absl::string_view text,
                                                                        absl::string_view what) {
  bssl::UniquePtr<BIO> bio(MemoryBio(text));
  if (bio == nullptr) {
    return SslError(absl::StatusCode::kInternal, "cannot allocate a memory BIO");
  }
  std::vector<bssl::UniquePtr<X509>> certs;
  while (true) {
    bssl::UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) {
      const uint32_t err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // the normal end of the file
        break;
      }
      return SslError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(what, ": certificate number ", certs.size() + 1,
                                   " is not a valid PEM certificate"));
    }
    certs.push_back(std::move(cert));
  }
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" block)"));
  }
  return certs;
}

absl::StatusOr<std::vector<bssl::UniquePtr<X509_CRL>>> ParseCrls(absl::string_view text,
                                                                 absl::string_view what) {
  if (!absl::StrContains(text, "-----BEGIN")) {
    // DER, as CRL distribution points usually serve it.
    const auto* der = reinterpret_cast<const uint8_t*>(text.data());
    bssl::UniquePtr<X509_CRL> crl(d2i_X509_CRL(nullptr, &der, static_cast<long>(text.size())));
    if (crl == nullptr) {
      return SslError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(what, " is neither a PEM nor a DER CRL"));
    }
    std::vector<bssl::UniquePtr<X509_CRL>> crls;
    crls.push_back(std::move(crl));
    return crls;
  }
  bssl::UniquePtr<BIO> bio(MemoryBio(text));
  if (bio == nullptr) {
    return SslError(absl::StatusCode::kInternal, "cannot allocate a memory BIO");
  }
  std::vector<bssl::UniquePtr<X509_CRL>> crls;
  while (true) {
    bssl::UniquePtr<X509_CRL> crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
    if (crl == nullptr) {
      const uint32_t err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return SslError(
          absl::StatusCode::kInvalidArgument,
          absl::StrCat(what, ": CRL number ", crls.size() + 1, " is not a valid PEM CRL"));
    }
    crls.push_back(std::move(crl));
  }
  if (crls.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " holds no PEM CRL (no \"-----BEGIN X509 CRL-----\" block)"));
  }
  return crls;
}

}  // namespace stella::runtime::tls
