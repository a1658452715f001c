#include "gateway/identity_rules.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace stella::gateway {
namespace {

using runtime::tls::CertificateIdentity;

// The last "/"-separated segment of a URI path ("greeter" of "spiffe://td/ns/prod/greeter").
absl::string_view LastSegment(absl::string_view uri) {
  const std::size_t scheme = uri.find("://");
  absl::string_view rest = scheme == absl::string_view::npos ? uri : uri.substr(scheme + 3);
  const std::size_t slash = rest.rfind('/');
  if (slash == absl::string_view::npos) {
    return "";  // authority only: no path segment
  }
  return rest.substr(slash + 1);
}

// Splits a DNS-style name into its leftmost label and the rest ("a", ".b.c").
std::pair<absl::string_view, absl::string_view> FirstLabel(absl::string_view name) {
  const std::size_t dot = name.find('.');
  if (dot == absl::string_view::npos) {
    return {name, ""};
  }
  return {name.substr(0, dot), name.substr(dot)};
}

}  // namespace

absl::StatusOr<IdentityPattern> IdentityPattern::Parse(absl::string_view text) {
  Kind kind = Kind::kUri;
  absl::string_view value;
  if (absl::StartsWithIgnoreCase(text, "uri:")) {
    kind = Kind::kUri;
    value = text.substr(4);
  } else if (absl::StartsWithIgnoreCase(text, "dns:")) {
    kind = Kind::kDns;
    value = text.substr(4);
  } else if (absl::StartsWithIgnoreCase(text, "cn:")) {
    kind = Kind::kCommonName;
    value = text.substr(3);
  } else if (absl::StrContains(text, "://")) {
    kind = Kind::kUri;
    value = text;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "identity pattern \"", text,
        "\" has no kind: write uri:<SAN URI> (or a spiffe:// URI), dns:<SAN DNS name> or "
        "cn:<subject common name>"));
  }
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("identity pattern \"", text, "\" is empty"));
  }
  const std::size_t star = value.find('*');
  if (star != absl::string_view::npos) {
    const bool ok = kind == Kind::kUri
                        ? LastSegment(value) == "*" && value.find('*') == value.size() - 1
                        : FirstLabel(value).first == "*" && value.rfind('*') == 0;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "identity pattern \"", text, "\" has a misplaced *: it may only stand for a whole ",
          kind == Kind::kUri ? "last path segment (uri:spiffe://td/ns/prod/*)"
                             : "leftmost label (dns:*.example.org)"));
    }
  }
  std::string stored(value);
  if (kind != Kind::kUri) {
    stored = absl::AsciiStrToLower(stored);
  }
  return IdentityPattern(kind, std::move(stored), std::string(text));
}

bool IdentityPattern::MatchesName(absl::string_view name) const {
  if (kind_ == Kind::kUri) {
    if (!absl::EndsWith(value_, "/*")) {
      return name == value_;
    }
    const absl::string_view prefix(value_.data(), value_.size() - 1);  // keeps the "/"
    return absl::StartsWith(name, prefix) && name.size() > prefix.size() &&
           name.substr(prefix.size()).find('/') == absl::string_view::npos;
  }
  const std::string lower = absl::AsciiStrToLower(name);
  if (!absl::StartsWith(value_, "*")) {
    return lower == value_;
  }
  auto [label, rest] = FirstLabel(lower);
  return !label.empty() && rest == absl::string_view(value_).substr(1);
}

bool IdentityPattern::Matches(const CertificateIdentity& identity) const {
  switch (kind_) {
    case Kind::kUri:
      for (const std::string& uri : identity.uris) {
        if (MatchesName(uri)) {
          return true;
        }
      }
      return false;
    case Kind::kDns:
      for (const std::string& dns : identity.dns_names) {
        if (MatchesName(dns)) {
          return true;
        }
      }
      return false;
    case Kind::kCommonName:
      return !identity.common_name.empty() && MatchesName(identity.common_name);
  }
  return false;
}

std::string IdentityName(const CertificateIdentity& identity) {
  if (!identity.spiffe_id.empty()) {
    return identity.spiffe_id;
  }
  if (!identity.dns_names.empty()) {
    return absl::StrCat("DNS:", identity.dns_names.front());
  }
  return identity.subject.empty() ? std::string("(no certificate)") : identity.subject;
}

absl::Status ServiceIdentityRules::Add(const std::string& service,
                                       const std::vector<std::string>& patterns) {
  std::vector<IdentityPattern>& rule = rules_[service];
  for (const std::string& text : patterns) {
    absl::StatusOr<IdentityPattern> pattern = IdentityPattern::Parse(text);
    if (!pattern.ok()) {
      return pattern.status();
    }
    rule.push_back(*std::move(pattern));
  }
  return absl::OkStatus();
}

absl::Status ServiceIdentityRules::Check(absl::string_view service,
                                         const CertificateIdentity& identity) const {
  auto it = rules_.find(service);
  if (it != rules_.end()) {
    for (const IdentityPattern& pattern : it->second) {
      if (pattern.Matches(identity)) {
        return absl::OkStatus();
      }
    }
    std::vector<std::string> allowed;
    for (const IdentityPattern& pattern : it->second) {
      allowed.push_back(pattern.text());
    }
    return absl::PermissionDeniedError(
        absl::StrCat("certificate ", IdentityName(identity), " (", identity.subject, "; ",
                     identity.DescribeNames(), ") may not register service \"", service,
                     "\": ServiceIdentities allows only ", absl::StrJoin(allowed, ", ")));
  }
  const std::string lower_service = absl::AsciiStrToLower(service);
  for (const std::string& dns : identity.dns_names) {
    if (absl::AsciiStrToLower(dns) == lower_service) {
      return absl::OkStatus();
    }
  }
  for (const std::string& uri : identity.uris) {
    if (LastSegment(uri) == service) {
      return absl::OkStatus();
    }
  }
  if (!identity.common_name.empty() && identity.common_name == service) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "certificate ", IdentityName(identity), " (", identity.subject, "; ",
      identity.DescribeNames(), ") may not register service \"", service,
      "\": no ServiceIdentities rule names that service, and by the default rule the certificate "
      "must name it itself (SAN DNS ",
      service, ", a SAN URI ending in /", service, ", or CN=", service, ")"));
}

bool MethodMatches(absl::string_view pattern, absl::string_view method) {
  if (pattern == "*") {
    return true;
  }
  if (absl::EndsWith(pattern, "/*")) {
    const absl::string_view service = pattern.substr(0, pattern.size() - 1);  // keeps the "/"
    return absl::StartsWith(method, service);
  }
  return pattern == method;
}

absl::Status CallerPolicy::Add(const std::string& identity_pattern,
                               const std::vector<std::string>& methods) {
  absl::StatusOr<IdentityPattern> identity = IdentityPattern::Parse(identity_pattern);
  if (!identity.ok()) {
    return identity.status();
  }
  for (const std::string& method : methods) {
    const bool valid =
        method == "*" ||
        (absl::StrContains(method, "/") && method.find('*') == absl::string_view::npos) ||
        (absl::EndsWith(method, "/*") && method.find('*') == method.size() - 1);
    if (!valid) {
      return absl::InvalidArgumentError(
          absl::StrCat("method pattern \"", method,
                       "\" is not \"package.Service/Method\", \"package.Service/*\" or \"*\""));
    }
  }
  entries_.push_back(Entry{*std::move(identity), methods});
  return absl::OkStatus();
}

absl::Status CallerPolicy::Admit(const CertificateIdentity& caller) const {
  if (entries_.empty() || std::any_of(entries_.begin(), entries_.end(), [&caller](const Entry& e) {
        return e.identity.Matches(caller);
      })) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "caller ", IdentityName(caller), " (", caller.subject,
      ") is named by no CallerPolicy entry, so it may call nothing; a service's certificate "
      "belongs on the service listener"));
}

absl::Status CallerPolicy::Check(const CertificateIdentity& caller,
                                 absl::string_view method) const {
  if (entries_.empty()) {
    return absl::OkStatus();
  }
  for (const Entry& entry : entries_) {
    if (!entry.identity.Matches(caller)) {
      continue;
    }
    for (const std::string& pattern : entry.methods) {
      if (MethodMatches(pattern, method)) {
        return absl::OkStatus();
      }
    }
  }
  return absl::PermissionDeniedError(absl::StrCat("caller ", IdentityName(caller), " (",
                                                  caller.subject, ") may not call ", method,
                                                  ": no CallerPolicy entry for it allows that "
                                                  "method"));
}

}  // namespace stella::gateway
