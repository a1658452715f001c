#include "runtime/tls/online_revocation.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "spdlog/spdlog.h"

namespace stella::runtime::tls {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Bound on a CRL body: large CAs publish CRLs of a few MB; anything far beyond is not a CRL.
constexpr std::uint64_t kMaxCrlBytes = 32u << 20;

struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url,
                     "\" is not an http:// URL (CRLs are fetched over plain HTTP: they "
                     "are signed, and https would need revocation checks of its own)"));
  }
  HttpUrl out;
  const std::size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  if (slash != absl::string_view::npos) {
    out.target = std::string(rest.substr(slash));
  }
  const std::size_t colon = authority.rfind(':');
  if (colon != absl::string_view::npos && authority.find(']') == absl::string_view::npos) {
    out.port = std::string(authority.substr(colon + 1));
    authority = authority.substr(0, colon);
  }
  out.host = std::string(absl::StripPrefix(absl::StripSuffix(authority, "]"), "["));
  if (out.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" names no host"));
  }
  return out;
}

asio::awaitable<absl::StatusOr<std::string>> HttpGet(asio::any_io_executor executor,
                                                     std::string url, absl::Duration timeout) {
  absl::StatusOr<HttpUrl> parsed = ParseHttpUrl(url);
  if (!parsed.ok()) {
    co_return parsed.status();
  }
  beast::error_code ec;
  tcp::resolver resolver(executor);
  auto endpoints = co_await resolver.async_resolve(parsed->host, parsed->port,
                                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return absl::UnavailableError(
        absl::StrCat("cannot resolve ", parsed->host, ": ", ec.message()));
  }
  beast::tcp_stream stream(executor);
  // One deadline for the whole exchange: connect, request and response.
  stream.expires_after(absl::ToChronoMilliseconds(timeout));
  co_await stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) {
    http::request<http::empty_body> request(http::verb::get, parsed->target, 11);
    request.set(http::field::host, parsed->host);
    request.set(http::field::user_agent, "stella-router");
    co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, ec));
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxCrlBytes);
  beast::flat_buffer buffer;
  if (!ec) {
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec == beast::error::timeout) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("no answer within CrlFetchTimeoutMs=", absl::ToInt64Milliseconds(timeout)));
  }
  if (ec) {
    co_return absl::UnavailableError(ec.message());
  }
  const auto& response = parser.get();
  if (response.result() != http::status::ok) {
    co_return absl::UnavailableError(absl::StrCat("HTTP status ", response.result_int()));
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return response.body();
}

}  // namespace

std::vector<std::string> OnlineRevocation::DistributionPoints(X509* cert) {
  std::vector<std::string> urls;
  bssl::UniquePtr<CRL_DIST_POINTS> points(static_cast<CRL_DIST_POINTS*>(
      X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr)));
  ERR_clear_error();
  if (points == nullptr) {
    return urls;
  }
  for (size_t i = 0; i < sk_DIST_POINT_num(points.get()); ++i) {
    const DIST_POINT* point = sk_DIST_POINT_value(points.get(), i);
    if (point->distpoint == nullptr || point->distpoint->type != 0) {
      continue;  // only full names
    }
    const GENERAL_NAMES* names = point->distpoint->name.fullname;
    for (size_t j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, j);
      if (name->type != GEN_URI) {
        continue;
      }
      const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
      std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                       static_cast<size_t>(ASN1_STRING_length(uri)));
      if (absl::StartsWithIgnoreCase(text, "http://") ||
          absl::StartsWithIgnoreCase(text, "https://")) {
        urls.push_back(std::move(text));
      }
    }
  }
  return urls;
}

int OnlineRevocation::fetch_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fetches_;
}

asio::awaitable<absl::StatusOr<std::shared_ptr<X509_CRL>>> OnlineRevocation::Get(
    asio::any_io_executor executor, std::string url) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(url);
    if (it != cache_.end() && absl::Now() < it->second.expires) {
      co_return it->second.crl;
    }
    ++fetches_;
  }
  absl::StatusOr<std::string> body = co_await HttpGet(executor, url, options_.fetch_timeout);
  if (!body.ok()) {
    co_return absl::Status(body.status().code(), absl::StrCat("cannot fetch the CRL from ", url,
                                                              ": ", body.status().message()));
  }
  absl::StatusOr<std::vector<bssl::UniquePtr<X509_CRL>>> crls =
      ParseCrls(*body, absl::StrCat("the CRL from ", url));
  if (!crls.ok()) {
    co_return crls.status();
  }
  std::shared_ptr<X509_CRL> crl((*crls)[0].release(), X509_CRL_free);
  const absl::Time next_update = Asn1TimeToAbsl(X509_CRL_get0_nextUpdate(crl.get()));
  const absl::Time cap = absl::Now() + options_.max_cache_age;
  std::lock_guard<std::mutex> lock(mutex_);
  cache_[url] = Cached{crl, next_update == absl::InfinitePast() ? cap : std::min(next_update, cap)};
  co_return crl;
}

asio::awaitable<std::optional<VerifyFailure>> OnlineRevocation::Check(
    asio::any_io_executor executor, std::vector<X509*> chain, const TrustBundle& trust,
    VerifyOptions options) {
  if (chain.empty()) {
    co_return std::nullopt;
  }
  const CertificateIdentity leaf = IdentityOf(chain.front());
  const std::vector<std::string> urls = DistributionPoints(chain.front());
  std::vector<std::shared_ptr<X509_CRL>> crls;
  std::string problems;
  for (const std::string& url : urls) {
    absl::StatusOr<std::shared_ptr<X509_CRL>> crl = co_await Get(executor, url);
    if (crl.ok()) {
      crls.push_back(*std::move(crl));
      break;  // one current CRL from the issuer is enough
    }
    absl::StrAppend(&problems, problems.empty() ? "" : "; ", crl.status().message());
  }
  if (crls.empty()) {
    const std::string why =
        urls.empty() ? std::string("it names no HTTP CRL distribution point") : problems;
    if (options_.hard_fail) {
      co_return VerifyFailure{VerifyFailureReason::kCrlMissing,
                              absl::StrCat("certificate rejected: RevocationMode is Online with "
                                           "RevocationFailureMode HardFail, and no CRL could be "
                                           "had for ",
                                           leaf.Describe(), ": ", why)};
    }
    spdlog::warn(
        "revocation not checked for {} (RevocationMode Online, soft-fail): {}; the peer is "
        "accepted",
        leaf.Describe(), why);
    co_return std::nullopt;
  }
  options.now = absl::Now();
  for (const auto& crl : crls) {
    options.extra_crls.push_back(crl.get());
  }
  options.extra_crl_origin = absl::StrCat("fetched from ", urls.front());
  std::variant<VerifyResult, VerifyFailure> result = VerifyPeerChain(chain, trust, options);
  if (auto* failure = std::get_if<VerifyFailure>(&result)) {
    co_return *failure;
  }
  co_return std::nullopt;
}

}  // namespace stella::runtime::tls
