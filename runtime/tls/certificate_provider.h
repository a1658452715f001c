// Hot certificate rotation. A CertificateProvider owns the current TlsContext snapshot and
// replaces it, without a restart, when the files behind it change: it watches the directories of
// every configured file (certificate, key, CA bundle, CRLs) with inotify — which sees in-place
// writes, atomic renames and Kubernetes-style `..data` symlink swaps — debounces bursts, builds
// and fully validates the new set, and only then swaps it in. A bad or half-written set is
// rejected and the last good one keeps serving. Polling covers file systems without inotify.
#ifndef STELLA_RUNTIME_TLS_CERTIFICATE_PROVIDER_H_
#define STELLA_RUNTIME_TLS_CERTIFICATE_PROVIDER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/tls_context.h"
#include "runtime/tls/trust.h"

namespace stella::runtime::tls {

// What happened at one reload attempt.
struct ReloadEvent {
  // OK when a new snapshot was swapped in; otherwise why the files were rejected (the previous
  // snapshot keeps serving).
  absl::Status status;
  // The generation now serving (unchanged when rejected).
  std::uint64_t generation = 0;
  // The leaf now serving.
  CertificateIdentity leaf;
  // What triggered the attempt: "file change", "poll", or "request".
  std::string trigger;
};

class CertificateProvider {
 public:
  struct Options {
    TlsOptions tls;
    CredentialSource certificate;
    CertificateUsage usage = CertificateUsage::kServer;
    // Absent only for a client that skips server validation (dev mode).
    std::optional<TrustSource> trust;
    absl::Duration debounce = absl::Milliseconds(500);
    // 0 disables polling.
    absl::Duration poll_interval = absl::Seconds(60);
    // False: rely on polling alone (for file systems where inotify misses changes, e.g. some
    // network mounts).
    bool use_inotify = true;
    // Called on the provider's watcher thread after every reload attempt but the first; must not
    // block for long.
    std::function<void(const ReloadEvent&)> on_reload;
  };

  // Loads the initial set — failing, with the loader's sentence, if it is not usable: a process
  // must not start with a bad certificate — and starts watching for changes.
  static absl::StatusOr<std::unique_ptr<CertificateProvider>> Start(Options options);

  // Stops the watcher thread.
  ~CertificateProvider();
  CertificateProvider(const CertificateProvider&) = delete;
  CertificateProvider& operator=(const CertificateProvider&) = delete;

  // The snapshot new handshakes must use. Thread-safe and cheap (an atomic shared_ptr load).
  std::shared_ptr<const TlsContext> Current() const;

  // The serving leaf's notAfter, for "seconds until certificate expiry" metrics.
  absl::Time LeafNotAfter() const;

  // Reloads now, on the calling thread (e.g. on SIGHUP), and reports like a watched change.
  ReloadEvent ReloadNow();

  // Whether inotify watches are active (false: only polling sees changes).
  bool watching() const { return inotify_fd_ >= 0; }

 private:
  explicit CertificateProvider(Options options);

  // Builds a snapshot from the files; does not swap it in.
  absl::StatusOr<std::shared_ptr<const TlsContext>> Build(std::uint64_t generation) const;
  // Reloads if the files' contents changed since the last attempt (or `force`).
  ReloadEvent Reload(const std::string& trigger, bool force);
  // SHA-256 over the contents of every watched file, to skip reloads that change nothing.
  std::string Fingerprint() const;
  void SetUpWatches();
  void WatchLoop();

  Options options_;
  std::atomic<std::shared_ptr<const TlsContext>> current_;
  std::atomic<std::uint64_t> generation_{0};
  std::string last_fingerprint_;  // guarded by reload_mutex_
  std::mutex reload_mutex_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the watcher to stop
  std::thread watcher_;
};

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_CERTIFICATE_PROVIDER_H_
