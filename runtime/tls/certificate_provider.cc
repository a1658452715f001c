#include "runtime/tls/certificate_provider.h"

#include <openssl/sha.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace stella::runtime::tls {
namespace {

namespace fs = std::filesystem;

// A burst of events (an editor, a deploy tool) is one reload; but a writer that never pauses
// still gets a reload within this many debounce windows.
constexpr int kMaxDebounceWindows = 5;

constexpr uint32_t kWatchMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

// The files and directories whose contents make up a snapshot.
std::vector<std::string> SourcePaths(const CertificateProvider::Options& options) {
  std::vector<std::string> paths = CredentialFiles(options.certificate);
  if (options.trust.has_value()) {
    for (std::string& path : TrustFiles(*options.trust)) {
      paths.push_back(std::move(path));
    }
  }
  return paths;
}

// The directories to watch for `path`: its parent (where renames and ..data swaps happen), the
// directory itself if it is one, and the same for where a symlink finally points.
std::set<std::string> WatchDirectories(const std::vector<std::string>& paths) {
  std::set<std::string> dirs;
  for (const std::string& path : paths) {
    std::error_code ec;
    fs::path p = fs::absolute(path, ec);
    if (ec) {
      continue;
    }
    dirs.insert(p.parent_path().string());
    if (fs::is_directory(p, ec)) {
      dirs.insert(p.string());
    }
    fs::path target = fs::canonical(p, ec);
    if (!ec) {
      dirs.insert(fs::is_directory(target, ec) ? target.string() : target.parent_path().string());
    }
  }
  return dirs;
}

void HashFile(SHA256_CTX* sha, const fs::path& path) {
  absl::StatusOr<std::string> content = ReadFile(path.string());
  const std::string text = content.ok() ? *content : std::string(content.status().message());
  const std::string name = path.string();
  SHA256_Update(sha, name.data(), name.size() + 1);  // with the NUL: separates name from content
  SHA256_Update(sha, text.data(), text.size());
}

}  // namespace

CertificateProvider::CertificateProvider(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<CertificateProvider>> CertificateProvider::Start(Options options) {
  std::unique_ptr<CertificateProvider> provider(new CertificateProvider(std::move(options)));
  provider->last_fingerprint_ = provider->Fingerprint();
  absl::StatusOr<std::shared_ptr<const TlsContext>> initial = provider->Build(1);
  if (!initial.ok()) {
    return initial.status();
  }
  provider->current_.store(*std::move(initial));
  provider->generation_ = 1;

  provider->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (provider->stop_fd_ < 0) {
    return absl::InternalError(absl::StrCat("eventfd failed: ", std::strerror(errno)));
  }
  provider->inotify_fd_ =
      provider->options_.use_inotify ? inotify_init1(IN_NONBLOCK | IN_CLOEXEC) : -1;
  if (provider->inotify_fd_ < 0 && provider->options_.use_inotify) {
    spdlog::warn("inotify is unavailable ({}); certificate files are only polled every {}",
                 std::strerror(errno), absl::FormatDuration(provider->options_.poll_interval));
  } else {
    provider->SetUpWatches();
  }
  provider->watcher_ = std::thread([p = provider.get()] { p->WatchLoop(); });
  return provider;
}

CertificateProvider::~CertificateProvider() {
  if (watcher_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    watcher_.join();
  }
  if (inotify_fd_ >= 0) {
    close(inotify_fd_);
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
  }
}

std::shared_ptr<const TlsContext> CertificateProvider::Current() const { return current_.load(); }

absl::Time CertificateProvider::LeafNotAfter() const {
  return current_.load()->credentials().leaf.not_after;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> CertificateProvider::Build(
    std::uint64_t generation) const {
  absl::StatusOr<Credentials> credentials =
      LoadCredentials(options_.certificate, options_.usage, absl::Now());
  if (!credentials.ok()) {
    return credentials.status();
  }
  std::optional<TrustBundle> trust;
  if (options_.trust.has_value()) {
    absl::StatusOr<TrustBundle> loaded = LoadTrust(*options_.trust);
    if (!loaded.ok()) {
      return loaded.status();
    }
    trust = *std::move(loaded);
  }
  return TlsContext::Create(options_.tls, *std::move(credentials), std::move(trust), generation);
}

std::string CertificateProvider::Fingerprint() const {
  SHA256_CTX sha;
  SHA256_Init(&sha);
  for (const std::string& path : SourcePaths(options_)) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      std::vector<fs::path> entries;
      for (const fs::directory_entry& entry : fs::directory_iterator(path, ec)) {
        if (entry.is_regular_file(ec)) {
          entries.push_back(entry.path());
        }
      }
      std::sort(entries.begin(), entries.end());
      for (const fs::path& entry : entries) {
        HashFile(&sha, entry);
      }
    } else {
      HashFile(&sha, path);
    }
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &sha);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

void CertificateProvider::SetUpWatches() {
  if (inotify_fd_ < 0) {
    return;
  }
  // Adding a watch twice returns the same descriptor, so this is also how directories that were
  // deleted and recreated (a ..data swap of a whole mount) get watched again.
  for (const std::string& dir : WatchDirectories(SourcePaths(options_))) {
    if (inotify_add_watch(inotify_fd_, dir.c_str(), kWatchMask) < 0) {
      spdlog::warn("cannot watch {} for certificate changes: {}; relying on polling", dir,
                   std::strerror(errno));
    }
  }
}

ReloadEvent CertificateProvider::ReloadNow() { return Reload("request", /*force=*/true); }

ReloadEvent CertificateProvider::Reload(const std::string& trigger, bool force) {
  std::lock_guard<std::mutex> lock(reload_mutex_);
  ReloadEvent event;
  event.trigger = trigger;
  const std::string fingerprint = Fingerprint();
  if (!force && fingerprint == last_fingerprint_) {
    event.generation = generation_.load();
    event.leaf = current_.load()->credentials().leaf;
    event.status = absl::OkStatus();
    return event;  // nothing changed (e.g. a touch, or a poll after a watched change)
  }
  last_fingerprint_ = fingerprint;
  absl::StatusOr<std::shared_ptr<const TlsContext>> next = Build(generation_.load() + 1);
  if (next.ok()) {
    current_.store(*next);
    generation_.store((*next)->generation());
    event.status = absl::OkStatus();
    spdlog::info("certificates reloaded ({}): now serving generation {}, {}", trigger,
                 (*next)->generation(), (*next)->credentials().leaf.Describe());
  } else {
    event.status = next.status();
    spdlog::warn("certificate reload rejected ({}): {}; still serving generation {}, {}", trigger,
                 std::string(next.status().message()), generation_.load(),
                 current_.load()->credentials().leaf.Describe());
  }
  event.generation = generation_.load();
  event.leaf = current_.load()->credentials().leaf;
  if (options_.on_reload) {
    options_.on_reload(event);
  }
  return event;
}

void CertificateProvider::WatchLoop() {
  const bool polling = options_.poll_interval > absl::ZeroDuration();
  absl::Time next_poll = absl::Now() + options_.poll_interval;
  std::optional<absl::Time> reload_at;
  absl::Time first_event;
  while (true) {
    const absl::Time now = absl::Now();
    absl::Time wake = absl::InfiniteFuture();
    if (reload_at.has_value()) {
      wake = *reload_at;
    }
    if (polling) {
      wake = std::min(wake, next_poll);
    }
    int timeout_ms = -1;
    if (wake != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - now)));
    }
    pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int ready = poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      spdlog::error("certificate watcher poll failed: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents & POLLIN) {
      return;
    }
    if (inotify_fd_ >= 0 && (fds[1].revents & POLLIN)) {
      alignas(inotify_event) char buffer[16 * 1024];
      while (read(inotify_fd_, buffer, sizeof(buffer)) > 0) {
        // Which file changed does not matter: the fingerprint decides whether anything did.
      }
      const absl::Time event_time = absl::Now();
      if (!reload_at.has_value()) {
        first_event = event_time;
      }
      reload_at = std::min(event_time + options_.debounce,
                           first_event + kMaxDebounceWindows * options_.debounce);
    }
    const absl::Time after = absl::Now();
    if (reload_at.has_value() && after >= *reload_at) {
      reload_at.reset();
      Reload("file change", /*force=*/false);
      SetUpWatches();
    }
    if (polling && after >= next_poll) {
      next_poll = after + options_.poll_interval;
      Reload("poll", /*force=*/false);
      SetUpWatches();
    }
  }
}

}  // namespace stella::runtime::tls
