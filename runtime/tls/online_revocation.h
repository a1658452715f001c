// RevocationMode: Online — CRLs fetched over HTTP from the peer certificate's CRL distribution
// point, cached until their nextUpdate, checked right after the handshake (before any frame is
// read). Whether an unreachable distribution point refuses the peer is a setting
// (RevocationFailureMode): soft-fail by default, so that a CRL server outage is not an outage.
#ifndef STELLA_RUNTIME_TLS_ONLINE_REVOCATION_H_
#define STELLA_RUNTIME_TLS_ONLINE_REVOCATION_H_

#include <openssl/x509.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers
#include "runtime/tls/trust.h"

namespace stella::runtime::tls {

class OnlineRevocation {
 public:
  struct Options {
    absl::Duration fetch_timeout = absl::Seconds(5);
    // true: HardFail — refuse a peer whose CRL cannot be fetched.
    bool hard_fail = false;
    // Upper bound on caching a CRL that has no nextUpdate (or a very distant one).
    absl::Duration max_cache_age = absl::Hours(24);
  };

  explicit OnlineRevocation(Options options) : options_(options) {}

  // Checks the peer's leaf against the CRL at its HTTP distribution point (fetched, or from the
  // cache), verifying the whole chain again with it under `options` (usage, dev switches).
  // Returns the failure — revoked, or (hard-fail only) no CRL to be had — or nullopt when the
  // peer may proceed. Soft-fail problems are logged. Thread-safe; `chain` and `trust` must stay
  // valid until it completes.
  boost::asio::awaitable<std::optional<VerifyFailure>> Check(boost::asio::any_io_executor executor,
                                                             std::vector<X509*> chain,
                                                             const TrustBundle& trust,
                                                             VerifyOptions options);

  // The HTTP(S) CRL distribution point URLs a certificate names, in order.
  static std::vector<std::string> DistributionPoints(X509* cert);

  // How many HTTP fetches have been made (for tests and metrics).
  int fetch_count() const;

 private:
  struct Cached {
    std::shared_ptr<X509_CRL> crl;
    absl::Time expires;
  };

  // Returns the cached CRL for `url` if still fresh, else fetches it.
  boost::asio::awaitable<absl::StatusOr<std::shared_ptr<X509_CRL>>> Get(
      boost::asio::any_io_executor executor, std::string url);

  Options options_;
  mutable std::mutex mutex_;
  absl::flat_hash_map<std::string, Cached> cache_ ABSL_GUARDED_BY(mutex_);
  int fetches_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_ONLINE_REVOCATION_H_
