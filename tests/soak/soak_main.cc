// stella-soak: a gateway and two greeter services as real processes under steady mixed load (all
// four call kinds through the generated Greeter client), while the everyday faults happen on a
// schedule: the caller reconnects, a greeter restarts (SIGTERM, drain, start again), and the
// gateway's, the greeter's and the caller's certificates and the CA bundle rotate. Every second it
// samples the gateway's RSS and file descriptors, its own, the calls in flight and the gateway's
// outstanding count.
//
// It fails (exit 1) if any call fails or never ends, if a reconnect fails, if the gateway still
// counts a call outstanding afterwards, if a process does not stop cleanly, if the gateway did not
// reload (or rejected) a rotation, or if RSS or file descriptors keep growing: the median RSS of
// the last quarter may exceed that of the second quarter (after warm-up) by at most 10% + 2 MiB,
// the most file descriptors by at most 16.
//   stella-soak --minutes=10 --bin_dir=build/bin        (`./run soak [minutes]`)
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "greeter.stella.h"
#include "runtime/tls/cert_builder.h"
#include "service_sdk/service_config.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(double, minutes, 10, "How long the load runs.");
ABSL_FLAG(std::string, bin_dir, "build/bin", "Where stella-gateway and greeter-service are.");
ABSL_FLAG(int, workers, 16, "Calls kept in flight at once.");
ABSL_FLAG(std::string, keep_dir, "",
          "Work in this directory and keep it (logs, certificates) instead of a temporary one.");

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace tls = stella::runtime::tls;
using greeter::v1::Greeter;
using greeter::v1::HelloReply;
using greeter::v1::HelloRequest;
using stella::sdk::Channel;

// How often each fault happens, in seconds of the load.
constexpr int kReconnectEvery = 7;
constexpr int kRestartEvery = 13;
constexpr int kRotateEvery = 5;

void Say(const std::string& line) {
  std::printf("soak: %s\n", line.c_str());
  std::fflush(stdout);
}

// ---- files and certificates -------------------------------------------------------------------

// Writes `text` to `path` atomically (a temporary file, then rename), as a deployment would.
bool WriteAtomically(const fs::path& path, const std::string& text, bool secret) {
  const fs::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) {
      Say(absl::StrCat("cannot write ", temp.string()));
      return false;
    }
  }
  if (secret) {
    fs::permissions(temp, fs::perms::owner_read | fs::perms::owner_write);
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec) {
    Say(absl::StrCat("cannot rename ", temp.string(), ": ", ec.message()));
    return false;
  }
  return true;
}

// The development PKI of `stella certs dev`, kept in memory so that leaves can be re-minted.
class Pki {
 public:
  explicit Pki(fs::path dir) : dir_(std::move(dir)) {}

  bool Create() {
    tls::CertSpec ca;
    ca.common_name = "Stella Soak CA";
    ca.organization = "Stella Router (soak)";
    ca.is_ca = true;
    tls::CertSpec next = ca;
    next.common_name = "Stella Soak CA (next)";
    auto minted = tls::MintCertificate(ca, nullptr);
    auto minted_next = tls::MintCertificate(next, nullptr);
    if (!minted.ok() || !minted_next.ok()) {
      Say("cannot mint the CAs");
      return false;
    }
    ca_ = *std::move(minted);
    next_ca_ = *std::move(minted_next);
    return RotateBundle() && RotateLeaf("gateway") && RotateLeaf("greeter") && RotateLeaf("caller");
  }

  // Mints a new certificate and key for `name` ("gateway", "greeter" or "caller") and swaps both
  // files in: the key first, then the certificate (the reload debounce sees them together).
  bool RotateLeaf(const std::string& name) {
    tls::CertSpec spec;
    spec.common_name = name == "gateway" ? "stella-gateway" : name;
    spec.organization = "Stella Router (soak)";
    if (name == "gateway") {
      spec.dns_names = {"localhost"};
      spec.ips = {"127.0.0.1"};
      spec.server_auth = true;
    } else if (name == "greeter") {
      spec.dns_names = {"greeter"};
      spec.uris = {"spiffe://stella.dev/service/greeter"};
      spec.client_auth = true;
    } else {
      spec.uris = {"spiffe://stella.dev/caller/caller"};
      spec.client_auth = true;
    }
    auto cert = tls::MintCertificate(spec, &ca_);
    if (!cert.ok()) {
      Say(absl::StrCat("cannot mint ", name, ": ", cert.status().ToString()));
      return false;
    }
    auto pem = tls::CertificateToPem(cert->cert.get());
    auto key = tls::PrivateKeyToPem(cert->key.get());
    return pem.ok() && key.ok() && WriteAtomically(dir_ / (name + ".key"), *key, true) &&
           WriteAtomically(dir_ / (name + ".crt"), *pem, false);
  }

  // Swaps the CA bundle between the CA alone and the CA with the next one (how a CA rotation
  // starts: both are trusted for a while).
  bool RotateBundle() {
    auto pem = tls::CertificateToPem(ca_.cert.get());
    auto next = tls::CertificateToPem(next_ca_.cert.get());
    if (!pem.ok() || !next.ok()) {
      return false;
    }
    both_ = !both_;
    return WriteAtomically(dir_ / "ca.crt", both_ ? *pem + *next : *pem, false);
  }

 private:
  fs::path dir_;
  tls::MintedCert ca_;
  tls::MintedCert next_ca_;
  bool both_ = true;  // the first RotateBundle writes the CA alone
};

// ---- processes --------------------------------------------------------------------------------

struct Process {
  std::string name;
  std::vector<std::string> argv;
  fs::path log;
  pid_t pid = -1;
};

// Starts `process`, its stdout and stderr appended to its log. The child dies with the soak.
bool Start(Process& process) {
  std::vector<char*> argv;
  for (std::string& arg : process.argv) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  const std::string log = process.log.string();
  const pid_t pid = fork();
  if (pid < 0) {
    Say(absl::StrCat("cannot fork for ", process.name, ": ", std::strerror(errno)));
    return false;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  process.pid = pid;
  return true;
}

// Waits up to `timeout` for `process` to exit; its wait status, or nullopt if it is still running.
std::optional<int> WaitExit(Process& process, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(process.pid, &status, WNOHANG);
    if (done == process.pid) {
      process.pid = -1;
      return status;
    }
    if (done < 0 || absl::Now() >= deadline) {
      return std::nullopt;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// Sends SIGTERM and waits for a clean exit (status 0) within `timeout`; kills it otherwise.
bool Stop(Process& process, absl::Duration timeout, std::string* why) {
  if (process.pid <= 0) {
    return true;
  }
  kill(process.pid, SIGTERM);
  std::optional<int> status = WaitExit(process, timeout);
  if (!status) {
    kill(process.pid, SIGKILL);
    WaitExit(process, absl::Seconds(5));
    *why = absl::StrCat(process.name, " did not exit within ", absl::FormatDuration(timeout),
                        " of SIGTERM");
    return false;
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    *why = absl::StrCat(process.name, " ended with wait status ", *status, " after SIGTERM");
    return false;
  }
  return true;
}

std::string Tail(const fs::path& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) {
    all.push_back(line);
  }
  std::string out;
  for (std::size_t i = all.size() > static_cast<std::size_t>(lines) ? all.size() - lines : 0;
       i < all.size(); ++i) {
    absl::StrAppend(&out, "    ", all[i], "\n");
  }
  return out;
}

std::int64_t CountLines(const fs::path& path, const std::string& needle) {
  std::ifstream in(path);
  std::int64_t count = 0;
  for (std::string line; std::getline(in, line);) {
    count += line.find(needle) != std::string::npos ? 1 : 0;
  }
  return count;
}

// ---- /proc and the admin endpoint --------------------------------------------------------------

std::int64_t RssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::int64_t kib = 0;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) {
        return kib;
      }
    }
  }
  return -1;
}

std::int64_t OpenFds(pid_t pid) {
  std::error_code ec;
  std::int64_t count = 0;
  for (fs::directory_iterator it(absl::StrCat("/proc/", pid, "/fd"), ec), end; !ec && it != end;
       it.increment(ec)) {
    ++count;
  }
  return ec ? -1 : count;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = -1;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  if (fd >= 0) {
    close(fd);
  }
  return port;
}

// GET http://127.0.0.1:port/path; the body, or nullopt if the request failed.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return std::nullopt;
  }
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[16384];
      for (ssize_t n = 0; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) {
        reply.append(buffer, static_cast<std::size_t>(n));
      }
    }
  }
  close(fd);
  const std::size_t body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return std::nullopt;
  }
  return reply.substr(body + 4);
}

// What /routes says about the registered instances.
struct Routes {
  std::set<std::string> live;  // instance ids neither draining nor unhealthy
  std::int64_t outstanding = 0;
};

std::optional<Routes> ReadRoutes(int admin_port) {
  std::optional<std::string> json = HttpGet(admin_port, "/routes");
  if (!json) {
    return std::nullopt;
  }
  Routes routes;
  // One object per instance, each starting with "service"; the fields we read are flat.
  for (absl::string_view entry : absl::StrSplit(*json, "{\"service\":")) {
    const std::size_t id = entry.find("\"instance\":\"");
    if (id == absl::string_view::npos) {
      continue;
    }
    const std::size_t start = id + std::strlen("\"instance\":\"");
    const std::string instance(entry.substr(start, entry.find('"', start) - start));
    if (entry.find("\"draining\":false") != absl::string_view::npos &&
        entry.find("\"healthy\":true") != absl::string_view::npos) {
      routes.live.insert(instance);
    }
    const std::size_t count = entry.find("\"outstanding\":");
    std::int64_t outstanding = 0;
    if (count != absl::string_view::npos) {
      absl::string_view digits = entry.substr(count + std::strlen("\"outstanding\":"));
      digits = digits.substr(0, digits.find_first_not_of("0123456789"));
      if (absl::SimpleAtoi(digits, &outstanding)) {
        routes.outstanding += outstanding;
      }
    }
  }
  return routes;
}

// ---- the load --------------------------------------------------------------------------------

// A channel and how many calls use it; retired channels are closed once unused.
struct Slot {
  std::shared_ptr<Channel> channel;
  int active = 0;
};

// Everything the load touches lives on `io`'s one thread, except the atomic counters.
struct Load {
  asio::io_context io{1};
  stella::sdk::ChannelOptions options;
  std::shared_ptr<Slot> current;
  std::vector<std::shared_ptr<Slot>> retiring;
  std::atomic<bool> stop{false};
  std::atomic<int> workers_running{0};
  std::atomic<std::int64_t> started{0}, succeeded{0}, failed{0}, in_flight{0}, reconnects{0},
      failed_reconnects{0};
  std::atomic<std::int64_t> by_kind[4] = {};
  std::mutex mu;
  std::vector<std::string> failures;  // the first few, for the report

  // Counts one failure in `counter` and keeps its description if there is room.
  void Fail(std::atomic<std::int64_t>& counter, const std::string& what) {
    counter.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    if (failures.size() < 20) {
      failures.push_back(what);
    }
  }
};

HelloRequest Named(const std::string& name) {
  HelloRequest request;
  request.set_name(name);
  return request;
}

// A status for an answer that is not what the greeter says.
absl::Status Wrong(const std::string& what, const std::string& got) {
  return absl::InternalError(absl::StrCat(what, ": unexpected answer \"", got, "\""));
}

// One call of kind `kind` (0 unary, 1 server streaming, 2 client streaming, 3 bidirectional),
// checking the answer. Streams get a deadline, so that a stuck stream ends as a failure.
asio::awaitable<absl::Status> OneCall(Greeter::Client& client, int kind, const std::string& name) {
  stella::sdk::CallOptions options;
  options.timeout = absl::Seconds(10);
  switch (kind) {
    case 0: {
      absl::StatusOr<HelloReply> reply = co_await client.SayHello(Named(name), options);
      if (!reply.ok()) {
        co_return reply.status();
      }
      co_return reply->message() == "Hello, " + name + "!" ? absl::OkStatus()
                                                           : Wrong("SayHello", reply->message());
    }
    case 1: {
      auto stream = client.ListGreetings(Named(name), options);
      if (!stream.ok()) {
        co_return stream.status();
      }
      int count = 0;
      while (true) {
        absl::StatusOr<std::optional<HelloReply>> next = co_await stream->Read();
        if (!next.ok()) {
          co_return next.status();
        }
        if (!next->has_value()) {
          break;
        }
        if ((*next)->message().find(name) == std::string::npos) {
          co_return Wrong("ListGreetings", (*next)->message());
        }
        ++count;
      }
      co_return count == 4 ? absl::OkStatus()
                           : Wrong("ListGreetings", absl::StrCat(count, " greetings"));
    }
    case 2: {
      auto stream = client.CollectNames(options);
      if (!stream.ok()) {
        co_return stream.status();
      }
      for (int i = 0; i < 3; ++i) {
        if (absl::Status written = co_await stream->Write(Named(absl::StrCat(name, "-", i)));
            !written.ok()) {
          co_return written;
        }
      }
      absl::StatusOr<greeter::v1::NameCount> count = co_await stream->Finish();
      if (!count.ok()) {
        co_return count.status();
      }
      co_return count->count() == 3 ? absl::OkStatus()
                                    : Wrong("CollectNames", count->ShortDebugString());
    }
    default: {
      auto stream = client.Chat(options);
      if (!stream.ok()) {
        co_return stream.status();
      }
      for (int i = 0; i < 2; ++i) {
        const std::string said = absl::StrCat(name, "-", i);
        if (absl::Status written = co_await stream->Write(Named(said)); !written.ok()) {
          co_return written;
        }
        absl::StatusOr<std::optional<HelloReply>> answer = co_await stream->Read();
        if (!answer.ok()) {
          co_return answer.status();
        }
        if (!answer->has_value() || (*answer)->message() != "Nice to meet you, " + said + ".") {
          co_return Wrong("Chat", answer->has_value() ? (*answer)->message() : "end of stream");
        }
      }
      if (absl::Status closed = stream->CloseSend(); !closed.ok()) {
        co_return closed;
      }
      absl::StatusOr<std::optional<HelloReply>> end = co_await stream->Read();
      if (!end.ok()) {
        co_return end.status();
      }
      co_return end->has_value() ? Wrong("Chat", "a reply after CloseSend") : absl::OkStatus();
    }
  }
}

constexpr const char* kKinds[] = {"SayHello", "ListGreetings", "CollectNames", "Chat"};

asio::awaitable<void> Worker(Load* load, int index) {
  load->workers_running.fetch_add(1);
  for (std::uint64_t n = 0; !load->stop.load(); ++n) {
    std::shared_ptr<Slot> slot = load->current;
    ++slot->active;
    Greeter::Client client(slot->channel);
    const int kind = static_cast<int>((index + n) % 4);
    load->started.fetch_add(1);
    load->in_flight.fetch_add(1);
    const absl::Status status = co_await OneCall(client, kind, absl::StrCat("w", index, "n", n));
    load->in_flight.fetch_sub(1);
    --slot->active;
    if (status.ok()) {
      load->succeeded.fetch_add(1);
      load->by_kind[kind].fetch_add(1);
    } else {
      load->Fail(load->failed, absl::StrCat(kKinds[kind], ": ", status.ToString()));
    }
  }
  load->workers_running.fetch_sub(1);
}

// A new channel for new calls; the old one is closed once its calls are done.
asio::awaitable<void> Reconnect(Load* load) {
  absl::StatusOr<std::shared_ptr<Channel>> channel =
      co_await Channel::Connect(load->io.get_executor(), load->options);
  if (!channel.ok()) {
    load->Fail(load->failed_reconnects, absl::StrCat("reconnect: ", channel.status().ToString()));
    co_return;
  }
  load->retiring.push_back(std::exchange(load->current, std::make_shared<Slot>()));
  load->current->channel = *std::move(channel);
  load->reconnects.fetch_add(1);
}

void CloseUnused(Load* load) {
  std::erase_if(load->retiring, [](const std::shared_ptr<Slot>& slot) {
    if (slot->active > 0) {
      return false;
    }
    slot->channel->Close();
    return true;
  });
}

// ---- the verdict -----------------------------------------------------------------------------

struct Sample {
  double second;
  std::int64_t gateway_rss_kib, gateway_fds, own_rss_kib, own_fds, in_flight, outstanding;
};

double Median(std::vector<double> values) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Least-squares slope of `value` over time, per minute.
double SlopePerMinute(const std::vector<Sample>& samples, std::int64_t Sample::*value) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const Sample& s : samples) {
    const double x = s.second / 60.0, y = static_cast<double>(s.*value);
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double denominator = n * sxx - sx * sx;
  return n < 2 || denominator == 0 ? 0 : (n * sxy - sx * sy) / denominator;
}

// Compares the second quarter with the last; an error line, or empty.
std::string Growth(const std::vector<Sample>& samples, std::int64_t Sample::*rss,
                   std::int64_t Sample::*fds, const std::string& who) {
  const std::size_t quarter = samples.size() / 4;
  std::vector<double> early_rss, late_rss;
  std::int64_t early_fds = 0, late_fds = 0;
  for (std::size_t i = quarter; i < 2 * quarter; ++i) {
    early_rss.push_back(static_cast<double>(samples[i].*rss));
    early_fds = std::max(early_fds, samples[i].*fds);
  }
  for (std::size_t i = samples.size() - quarter; i < samples.size(); ++i) {
    late_rss.push_back(static_cast<double>(samples[i].*rss));
    late_fds = std::max(late_fds, samples[i].*fds);
  }
  const double early = Median(early_rss), late = Median(late_rss);
  std::string problems;
  if (late > early * 1.10 + 2048) {
    absl::StrAppend(&problems, who, " RSS grew from a median of ", early,
                    " KiB (second quarter) to ", late,
                    " KiB (last quarter), more than 10% + 2 MiB. ");
  }
  if (late_fds > early_fds + 16) {
    absl::StrAppend(&problems, who, " file descriptors grew from at most ", early_fds, " to ",
                    late_fds, ". ");
  }
  return problems;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  spdlog::set_level(spdlog::level::warn);  // the caller's own reload notices would drown the report
  const absl::Duration length = absl::Seconds(absl::GetFlag(FLAGS_minutes) * 60);
  if (length < absl::Seconds(20)) {
    Say("--minutes must be at least 0.34 (20 s): the verdict compares quarters of the run");
    return 2;
  }
  const fs::path bin = fs::absolute(absl::GetFlag(FLAGS_bin_dir));
  for (const char* binary : {"stella-gateway", "greeter-service"}) {
    if (!fs::exists(bin / binary)) {
      Say(absl::StrCat((bin / binary).string(), " does not exist: build first (./run build)"));
      return 2;
    }
  }
  fs::path dir = absl::GetFlag(FLAGS_keep_dir);
  if (dir.empty()) {
    char pattern[] = "/tmp/stella-soak.XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      Say("cannot create a temporary directory");
      return 2;
    }
    dir = pattern;
  }
  fs::create_directories(dir);
  Pki pki(dir);
  const int service_port = FreePort(), caller_port = FreePort(), admin_port = FreePort();
  if (!pki.Create() || service_port < 0 || caller_port < 0 || admin_port < 0) {
    return 2;
  }
  const std::string d = dir.string();
  // A listener section's body: `port` and the gateway's certificate, key and CA bundle.
  auto listener = [&d](int port) {
    return absl::StrCat("  ListenAddress: 127.0.0.1\n  Port: ", port, "\n  CertificatePath: ", d,
                        "/gateway.crt\n  CertificateKeyPath: ", d,
                        "/gateway.key\n  ClientCaCertificatePath: ", d, "/ca.crt\n");
  };
  std::ofstream(dir / "gateway.yaml")
      << absl::StrCat("GatewayId: soak-gateway\nTlsTransport:\n", listener(service_port),
                      "  HeartbeatIntervalMs: 1000\nCallers:\n", listener(caller_port),
                      "Admin:\n  ListenAddress: 127.0.0.1\n  Port: ", admin_port,
                      "\nLimits:\n  DrainTimeoutSeconds: 5\n");
  // A TlsClient section for `who` ("greeter" or "caller") dialling `port`.
  auto client_yaml = [&d](int port, const std::string& who) {
    return absl::StrCat("TlsClient:\n  Gateways: [\"127.0.0.1:", port,
                        "\"]\n  ExpectedServerName: localhost\n  ClientCertificatePath: ", d, "/",
                        who, ".crt\n  ClientCertificateKeyPath: ", d, "/", who,
                        ".key\n  ServerCaCertificatePath: ", d,
                        "/ca.crt\n  InitialReconnectDelayMs: 50\n  MaxReconnectDelayMs: 1000\n");
  };
  std::ofstream(dir / "service.yaml") << client_yaml(service_port, "greeter");
  std::ofstream(dir / "caller.yaml") << client_yaml(caller_port, "caller");

  Process gateway{"stella-gateway",
                  {(bin / "stella-gateway").string(), "--config", d + "/gateway.yaml"},
                  dir / "gateway.log"};
  std::vector<Process> greeters;
  for (const char* instance : {"greeter-a", "greeter-b"}) {
    greeters.push_back({instance,
                        {(bin / "greeter-service").string(), "--config", d + "/service.yaml",
                         "--instance", instance},
                        dir / (std::string(instance) + ".log")});
  }
  std::vector<std::string> problems;
  auto report_logs = [&] {
    for (const Process* process : {&gateway, &greeters[0], &greeters[1]}) {
      std::printf("--- last lines of %s\n%s", process->log.c_str(), Tail(process->log, 15).c_str());
    }
  };
  // Waits until /routes lists `want` as live.
  auto wait_live = [&](const std::set<std::string>& want, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::optional<Routes> routes = ReadRoutes(admin_port);
      if (routes &&
          std::includes(routes->live.begin(), routes->live.end(), want.begin(), want.end())) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  };

  Say(absl::StrFormat("working in %s; gateway ports %d (services) %d (callers) %d (admin)", d,
                      service_port, caller_port, admin_port));
  if (!Start(gateway) || !Start(greeters[0]) || !Start(greeters[1]) ||
      !wait_live({"greeter-a", "greeter-b"}, absl::Seconds(20))) {
    Say("the gateway and both greeters did not come up within 20 s");
    report_logs();
    return 1;
  }

  Load load;
  auto setup = stella::sdk::LoadChannelConfig(d + "/caller.yaml", "soak-caller");
  if (!setup.ok()) {
    Say(absl::StrCat("caller configuration: ", setup.status().ToString()));
    return 1;
  }
  load.options = setup->options;
  auto work = asio::make_work_guard(load.io);
  std::thread io_thread([&load] { load.io.run(); });
  auto first = asio::co_spawn(load.io, Channel::Connect(load.io.get_executor(), load.options),
                              asio::use_future)
                   .get();
  if (!first.ok()) {
    Say(absl::StrCat("the caller cannot connect: ", first.status().ToString()));
    load.stop = true;
    work.reset();
    io_thread.join();
    return 1;
  }
  asio::post(load.io, [&load, channel = *first] {
    load.current = std::make_shared<Slot>();
    load.current->channel = channel;
    for (int i = 0; i < absl::GetFlag(FLAGS_workers); ++i) {
      asio::co_spawn(load.io, Worker(&load, i), asio::detached);
    }
  });

  // The schedule: one tick per second.
  Say(
      absl::StrFormat("load: %d workers for %s; every %d s a caller reconnect, every %d s a "
                      "greeter restart, every %d s a certificate rotation",
                      absl::GetFlag(FLAGS_workers), absl::FormatDuration(length), kReconnectEvery,
                      kRestartEvery, kRotateEvery));
  std::vector<Sample> samples;
  int restarts = 0, rotations = 0, gateway_rotations = 0;
  const absl::Time begin = absl::Now();
  for (int tick = 1; absl::Now() - begin < length && problems.empty(); ++tick) {
    absl::SleepFor(begin + absl::Seconds(tick) - absl::Now());
    std::optional<Routes> routes = ReadRoutes(admin_port);
    Sample sample{absl::ToDoubleSeconds(absl::Now() - begin),
                  RssKib(gateway.pid),
                  OpenFds(gateway.pid),
                  RssKib(getpid()),
                  OpenFds(getpid()),
                  load.in_flight.load(),
                  routes ? routes->outstanding : -1};
    if (sample.gateway_rss_kib < 0 || !routes) {
      problems.push_back("the gateway is gone (no /proc entry or no /routes answer)");
      break;
    }
    samples.push_back(sample);
    if (tick % 10 == 0) {
      Say(absl::StrFormat(
          "t=%3ds calls=%d failed=%d in_flight=%d gateway_outstanding=%d gateway_rss_kib=%d "
          "gateway_fds=%d caller_rss_kib=%d caller_fds=%d",
          tick, load.succeeded.load(), load.failed.load(), sample.in_flight, sample.outstanding,
          sample.gateway_rss_kib, sample.gateway_fds, sample.own_rss_kib, sample.own_fds));
    }
    asio::post(load.io, [&load] { CloseUnused(&load); });
    if (absl::Now() - begin > length - absl::Seconds(3)) {
      continue;  // no fault in the last seconds: a rotation needs time to be reloaded
    }
    if (tick % kReconnectEvery == 0) {
      asio::co_spawn(load.io, Reconnect(&load), asio::detached);
    }
    if (tick % kRotateEvery == 0) {
      const int which = (tick / kRotateEvery) % 4;
      const bool rotated = which == 0   ? pki.RotateLeaf("gateway")
                           : which == 1 ? pki.RotateLeaf("greeter")
                           : which == 2 ? pki.RotateLeaf("caller")
                                        : pki.RotateBundle();
      if (!rotated) {
        problems.push_back("a certificate rotation could not be written");
      }
      ++rotations;
      gateway_rotations += which == 0 || which == 3 ? 1 : 0;
    }
    if (tick % kRestartEvery == 0) {
      Process& greeter = greeters[static_cast<std::size_t>(restarts % 2)];
      std::string why;
      const absl::Time stop_at = absl::Now();
      if (!Stop(greeter, absl::Seconds(15), &why)) {
        problems.push_back(why);
      } else if (!Start(greeter) || !wait_live({greeter.name}, absl::Seconds(15))) {
        problems.push_back(absl::StrCat(greeter.name, " did not re-register within 15 s"));
      } else {
        ++restarts;
        if (restarts <= 2) {
          Say(absl::StrCat(
              greeter.name, " restarted and re-registered in ",
              absl::FormatDuration(absl::Trunc(absl::Now() - stop_at, absl::Milliseconds(1)))));
        }
      }
    }
  }

  // Stop the load; every call must end.
  load.stop = true;
  const absl::Time stop_deadline = absl::Now() + absl::Seconds(30);
  while (load.workers_running.load() > 0 && absl::Now() < stop_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (load.workers_running.load() > 0) {
    problems.push_back(
        absl::StrCat(load.in_flight.load(), " call(s) never ended (30 s after the load stopped)"));
  }
  std::optional<Routes> routes = ReadRoutes(admin_port);
  if (!routes || routes->outstanding != 0) {
    problems.push_back(absl::StrCat("the gateway still counts ", routes ? routes->outstanding : -1,
                                    " call(s) outstanding after the load ended"));
  }
  asio::post(load.io, [&load] {
    for (auto& slot : load.retiring) {
      slot->channel->Close();
    }
    if (load.current) {
      load.current->channel->Close();
    }
    load.retiring.clear();
    load.current.reset();
  });
  work.reset();
  io_thread.join();
  for (Process* process : {&greeters[0], &greeters[1], &gateway}) {
    std::string why;
    if (!Stop(*process, absl::Seconds(15), &why)) {
      problems.push_back(why);
    }
  }

  const std::int64_t started = load.started.load(), succeeded = load.succeeded.load(),
                     failed = load.failed.load();
  if (failed > 0 || succeeded + failed != started) {
    problems.push_back(absl::StrCat(failed, " of ", started, " calls failed, ",
                                    started - succeeded - failed, " never ended"));
  }
  if (load.failed_reconnects.load() > 0) {
    problems.push_back(absl::StrCat(load.failed_reconnects.load(), " caller reconnect(s) failed"));
  }
  for (std::int64_t kind : {0, 1, 2, 3}) {
    if (load.by_kind[kind].load() == 0) {
      problems.push_back(absl::StrCat("no ", kKinds[kind], " call succeeded"));
    }
  }
  // Each rotation of the gateway's certificate or of the CA bundle is a reload of both listeners'
  // credentials; none may be rejected.
  const std::int64_t reloads = CountLines(gateway.log, "certificates reloaded");
  const std::int64_t rejected = CountLines(gateway.log, "certificate reload rejected");
  if (reloads < gateway_rotations || rejected > 0) {
    problems.push_back(absl::StrCat("the gateway logged ", reloads, " certificate reloads and ",
                                    rejected, " rejected ones for ", gateway_rotations,
                                    " rotations of its files"));
  }
  if (samples.size() >= 8) {
    for (const std::string& growth :
         {Growth(samples, &Sample::gateway_rss_kib, &Sample::gateway_fds, "gateway"),
          Growth(samples, &Sample::own_rss_kib, &Sample::own_fds, "caller")}) {
      if (!growth.empty()) {
        problems.push_back(growth);
      }
    }
  } else {
    problems.push_back(absl::StrCat("only ", samples.size(), " samples: too few to judge growth"));
  }
  // The slope after warm-up (the first quarter).
  const std::vector<Sample> settled(
      samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 4), samples.end());
  std::int64_t max_in_flight = 0;
  for (const Sample& s : samples) {
    max_in_flight = std::max(max_in_flight, s.in_flight);
  }
  Say(absl::StrFormat(
      "result: seconds=%d calls=%d failed=%d unary=%d server_stream=%d client_stream=%d bidi=%d "
      "reconnects=%d greeter_restarts=%d rotations=%d gateway_reloads=%d max_in_flight=%d",
      samples.size(), succeeded, failed, load.by_kind[0].load(), load.by_kind[1].load(),
      load.by_kind[2].load(), load.by_kind[3].load(), load.reconnects.load(), restarts, rotations,
      reloads, max_in_flight));
  if (!samples.empty()) {
    Say(absl::StrFormat(
        "memory: gateway_rss_kib first=%d last=%d slope_after_warmup=%.1f KiB/min, fds first=%d "
        "last=%d; caller_rss_kib first=%d last=%d slope_after_warmup=%.1f KiB/min, fds first=%d "
        "last=%d",
        samples.front().gateway_rss_kib, samples.back().gateway_rss_kib,
        SlopePerMinute(settled, &Sample::gateway_rss_kib), samples.front().gateway_fds,
        samples.back().gateway_fds, samples.front().own_rss_kib, samples.back().own_rss_kib,
        SlopePerMinute(settled, &Sample::own_rss_kib), samples.front().own_fds,
        samples.back().own_fds));
  }
  {
    std::lock_guard<std::mutex> lock(load.mu);
    for (const std::string& failure : load.failures) {
      Say(absl::StrCat("failed: ", failure));
    }
  }
  if (!problems.empty()) {
    for (const std::string& problem : problems) {
      Say(absl::StrCat("FAIL: ", problem));
    }
    report_logs();
    Say(absl::StrCat("logs and certificates kept in ", d));
    return 1;
  }
  Say("PASS: no call lost, no growth");
  if (absl::GetFlag(FLAGS_keep_dir).empty()) {
    fs::remove_all(dir);
  }
  return 0;
}
