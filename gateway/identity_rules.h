// Who may do what, decided from certificate identities: which certificates may register a service
// name (ServiceIdentities, identity binding) and which callers may call which methods
// (CallerPolicy). Pure logic over runtime::tls::CertificateIdentity; no I/O.
#ifndef STELLA_GATEWAY_IDENTITY_RULES_H_
#define STELLA_GATEWAY_IDENTITY_RULES_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tls/x509.h"

namespace stella::gateway {

// One certificate identity pattern, written as
//   "uri:spiffe://example.org/ns/prod/greeter"  (or any "scheme://..." alone) — a SAN URI
//   "dns:greeter.internal"                       — a SAN DNS name
//   "cn:greeter"                                  — the subject CN
// A `*` stands for exactly one label: the whole leftmost label of a DNS name or CN
// ("dns:*.prod.example.org"), or the whole last path segment of a URI
// ("uri:spiffe://example.org/ns/prod/*").
class IdentityPattern {
 public:
  enum class Kind { kUri, kDns, kCommonName };

  // INVALID_ARGUMENT naming the text when it has no known prefix or a misplaced `*`.
  static absl::StatusOr<IdentityPattern> Parse(absl::string_view text);

  // True if `identity` has a name of this pattern's kind that the pattern matches.
  bool Matches(const runtime::tls::CertificateIdentity& identity) const;

  Kind kind() const { return kind_; }
  // The text as written, for messages.
  const std::string& text() const { return text_; }

 private:
  IdentityPattern(Kind kind, std::string value, std::string text)
      : kind_(kind), value_(std::move(value)), text_(std::move(text)) {}
  bool MatchesName(absl::string_view name) const;

  Kind kind_;
  std::string value_;  // without the "uri:"/"dns:"/"cn:" prefix; DNS/CN lower-cased
  std::string text_;
};

// ServiceIdentities: service name → the identities allowed to register it.
class ServiceIdentityRules {
 public:
  ServiceIdentityRules() = default;

  // Adds the rule for `service`; INVALID_ARGUMENT if a pattern does not parse.
  absl::Status Add(const std::string& service, const std::vector<std::string>& patterns);

  // OK if `identity` may register `service`; else PERMISSION_DENIED with a sentence naming the
  // certificate and the service. A service with a rule accepts exactly the rule's identities; a
  // service without one accepts a certificate that names it: a SAN DNS entry equal to it, a SAN
  // URI whose last path segment equals it, or a subject CN equal to it.
  absl::Status Check(absl::string_view service,
                     const runtime::tls::CertificateIdentity& identity) const;

  bool empty() const { return rules_.empty(); }

 private:
  absl::flat_hash_map<std::string, std::vector<IdentityPattern>> rules_;
};

// A method pattern: "package.Service/Method", "package.Service/*" or "*".
bool MethodMatches(absl::string_view pattern, absl::string_view method);

// CallerPolicy: caller identities → the method patterns they may call. With no entries, every
// authenticated caller may call every method.
class CallerPolicy {
 public:
  CallerPolicy() = default;

  // Adds an entry; INVALID_ARGUMENT if the identity pattern does not parse or a method pattern is
  // malformed.
  absl::Status Add(const std::string& identity_pattern, const std::vector<std::string>& methods);

  // OK if some entry matching `caller` allows `method`; else PERMISSION_DENIED naming both.
  absl::Status Check(const runtime::tls::CertificateIdentity& caller,
                     absl::string_view method) const;

  // OK if the policy is empty or some entry matches `caller`; else PERMISSION_DENIED: a caller
  // no entry names may call nothing, so the gateway refuses its HELLO rather than every call.
  absl::Status Admit(const runtime::tls::CertificateIdentity& caller) const;

  bool allows_everyone() const { return entries_.empty(); }

 private:
  struct Entry {
    IdentityPattern identity;
    std::vector<std::string> methods;
  };
  std::vector<Entry> entries_;
};

// A short name for a certificate in messages: its SPIFFE ID, else its first SAN DNS name, else
// its subject.
std::string IdentityName(const runtime::tls::CertificateIdentity& identity);

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_IDENTITY_RULES_H_
