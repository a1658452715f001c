// X.509 helpers over BoringSSL: reading PEM files, describing certificates in words an operator
// can act on, and the identity a certificate carries. No Asio here.
#ifndef STELLA_RUNTIME_TLS_X509_H_
#define STELLA_RUNTIME_TLS_X509_H_

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers

namespace stella::runtime::tls {

// Who a certificate says it is. Used for peer identity after a handshake (identity binding,
// logs, metrics) and in every error sentence about a certificate.
struct CertificateIdentity {
  std::string subject;  // RFC 2253 form, e.g. "CN=greeter,O=Example"
  std::string issuer;
  std::string common_name;             // the subject's last CN, or empty
  std::string serial_hex;              // upper-case hex, no separators
  std::vector<std::string> dns_names;  // SAN dNSName entries
  std::vector<std::string> uris;       // SAN URI entries
  std::vector<std::string> ips;        // SAN iPAddress entries, printed
  std::string spiffe_id;               // the first SAN URI beginning with "spiffe://", or empty
  std::string sha256_thumbprint;       // upper-case hex of SHA-256 over the DER certificate
  absl::Time not_before;
  absl::Time not_after;

  // "subject "CN=x", issuer "CN=y", serial 0A1B, valid 2026-01-01T00:00:00Z to ..."
  std::string Describe() const;
  // The SAN entries as "DNS:localhost, IP:127.0.0.1, URI:spiffe://..."; "no subject alternative
  // names" when there are none.
  std::string DescribeNames() const;
};

// Reads the identity of `cert`. Never fails: fields that cannot be read are left empty.
CertificateIdentity IdentityOf(X509* cert);

// Returns the RFC 2253 text of `name` ("CN=x,O=y").
std::string NameToString(const X509_NAME* name);

// Converts an ASN.1 time to absl::Time; absl::InfinitePast() if it cannot be read.
absl::Time Asn1TimeToAbsl(const ASN1_TIME* time);

// Formats `t` as RFC 3339 UTC, e.g. "2026-12-03T16:50:00Z".
std::string FormatUtc(absl::Time t);

// Upper-case hex of the digest (`md`, e.g. EVP_sha256()) of the certificate's DER encoding.
std::string Thumbprint(X509* cert, const EVP_MD* md);

// Normalises a thumbprint typed by a person: drops colons, spaces and dashes, upper-cases.
// INVALID_ARGUMENT if what remains is not 40 (SHA-1) or 64 (SHA-256) hex digits.
absl::StatusOr<std::string> NormalizeThumbprint(absl::string_view text);

// Returns a status with `code` and `message`, followed by the reasons in BoringSSL's error queue
// (which it drains), e.g. "... (PEM routines: BAD_DECRYPT)".
absl::Status SslError(absl::StatusCode code, absl::string_view message);

// Takes every packed error from BoringSSL's queue, oldest first, for callers that must look at
// them before choosing a message.
std::vector<uint32_t> TakeSslErrors();

// Returns true if `errors` holds one from library `lib` with reason `reason`.
bool HasSslError(const std::vector<uint32_t>& errors, int lib, int reason);

// As SslError, with errors already taken from the queue.
absl::Status SslErrorFrom(absl::StatusCode code, absl::string_view message,
                          const std::vector<uint32_t>& errors);

// A read-only memory BIO over `bytes` (which must outlive it); null if too large or out of
// memory.
BIO* MemoryBio(absl::string_view bytes);

// Reads a whole file. NOT_FOUND / PERMISSION_DENIED / INTERNAL with the path in the message.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Parses every certificate in PEM `text` (in order). INVALID_ARGUMENT naming `what` (e.g.
// "CertificatePath=/etc/stella/gw.crt") if there is none or one does not parse.
absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCertificates(absl::string_view text,
                                                                        absl::string_view what);

// Parses the CRLs in `text`: every PEM block, or one DER CRL. INVALID_ARGUMENT naming `what` if
// there is none or one does not parse.
absl::StatusOr<std::vector<bssl::UniquePtr<X509_CRL>>> ParseCrls(absl::string_view text,
                                                                 absl::string_view what);

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_X509_H_
