// stella-bench: the load generator for the side-by-side benchmark against gRPC (bench/peers/grpc
// is the other side; `./run bench` runs both). It starts a gateway and one echo service as
// separate processes (or, with --mode=echo-service, is that service), drives the generated typed
// client of stella.bench.v1.Echo from this process, and prints one line per case:
//
//   case=<name> qps=<n> p50_us=<n> p99_us=<n> p999_us=<n> cpu_us_per_call_gateway=<n>
//   cpu_us_per_call_service=<n> errors=<n>
//
// CPU comes from /proc/<pid>/stat of each process over the measured window.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_common.h"
#include "bench/ceilings.h"
#include "echo.stella.h"
#include "runtime/async.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/trust.h"
#include "service_sdk/service_config.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, mode, "run",
          "run (the load generator), echo-service, or ceilings (print the crypto ceilings)");
ABSL_FLAG(std::string, config, "", "echo-service: the service's YAML file");
ABSL_FLAG(std::string, cases,
          "unary_64B_c1,unary_64B_c64,unary_4KiB_c64,stream_64B,body_1MiB_c4,connect,idle_5000",
          "Comma-separated cases to run");
ABSL_FLAG(int, idle_connections, 5000, "idle_5000: how many idle service connections to open");
ABSL_FLAG(double, seconds, 5, "Measured seconds per case");
ABSL_FLAG(double, warmup, 1, "Warm-up seconds per case (not measured)");
ABSL_FLAG(std::string, key_type, "ecdsa-p256", "Certificates: ecdsa-p256 or ed25519");

extern char** environ;

namespace stella::bench {
namespace {

namespace asio = boost::asio;
using v1::Echo;
using v1::EchoMessage;
using v1::StreamRequest;

// --- The echo service ---------------------------------------------------------------------------

class EchoImpl final : public Echo::Handler {
 public:
  asio::awaitable<absl::StatusOr<EchoMessage>> Echo(sdk::CallContext& /*context*/,
                                                    const EchoMessage& request) override {
    co_return request;
  }
  asio::awaitable<absl::Status> Stream(sdk::CallContext& /*context*/, const StreamRequest& request,
                                       sdk::ServerWriter<EchoMessage>& writer) override {
    EchoMessage message;
    message.set_body(std::string(static_cast<std::size_t>(request.size()), 'x'));
    for (int i = 0; i < request.count(); ++i) {
      if (absl::Status written = co_await writer.Write(message); !written.ok()) {
        co_return written;
      }
    }
    co_return absl::OkStatus();
  }
};

int RunEchoService() {
  auto setup = sdk::LoadServiceConfig(absl::GetFlag(FLAGS_config), "echo");
  if (!setup.ok()) {
    std::fprintf(stderr, "echo-service: %s\n", std::string(setup.status().message()).c_str());
    return 2;
  }
  asio::io_context io(1);
  auto host = sdk::ServiceHost::Create(io.get_executor(), setup->options);
  EchoImpl impl;
  if (!Echo::Register(*host, impl).ok()) {
    return 2;
  }
  host->Start();
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code&, int) {
    host->Shutdown(absl::Seconds(1), [&io] { io.stop(); });
  });
  io.run();
  return 0;
}

// --- Processes ---------------------------------------------------------------------------------

pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  argv.reserve(copy.size() + 1);
  for (std::string& arg : copy) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) {
    pid = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int RunAndWait(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = Spawn(args, log);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0) {
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::uint16_t FreePort() {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

// GET http://127.0.0.1:port/path; the whole response, or "" if it fails.
std::string HttpGet(std::uint16_t port, const std::string& path) {
  try {
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), port});
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
    asio::write(socket, asio::buffer(request));
    std::string response;
    boost::system::error_code ec;
    asio::read(socket, asio::dynamic_buffer(response), ec);
    return response;
  } catch (const std::exception&) {
    return "";
  }
}

// --- Load --------------------------------------------------------------------------------------

// When measuring starts and ends, and what happened in between.
struct Window {
  Clock::time_point measure_from;
  Clock::time_point until;
  CaseResult* result;
  int* running;

  bool measuring() const { return Clock::now() >= measure_from; }
};

asio::awaitable<void> UnaryWorker(Echo::Client* client, std::string body, Window window) {
  EchoMessage request;
  request.set_body(std::move(body));
  while (Clock::now() < window.until) {
    const auto start = Clock::now();
    absl::StatusOr<EchoMessage> reply = co_await client->Echo(request);
    if (window.measuring() && Clock::now() < window.until) {
      if (reply.ok()) {
        ++window.result->operations;
        window.result->latencies.push_back(MicrosSince(start));
        window.result->bytes += 2 * request.body().size();
      } else {
        ++window.result->errors;
      }
    }
  }
  --*window.running;
}

asio::awaitable<void> StreamWorker(Echo::Client* client, int size, Window window) {
  StreamRequest request;
  request.set_count(1000);
  request.set_size(size);
  while (Clock::now() < window.until) {
    auto stream = client->Stream(request);
    if (!stream.ok()) {
      ++window.result->errors;
      break;
    }
    auto last = Clock::now();
    while (true) {
      absl::StatusOr<std::optional<EchoMessage>> next = co_await stream->Read();
      if (!next.ok()) {
        ++window.result->errors;
        break;
      }
      if (!next->has_value()) {
        break;
      }
      if (window.measuring() && Clock::now() < window.until) {
        ++window.result->operations;
        window.result->latencies.push_back(MicrosSince(last));  // gap between messages
      }
      last = Clock::now();
    }
  }
  --*window.running;
}

asio::awaitable<void> ConnectWorker(sdk::ChannelOptions options, Window window) {
  EchoMessage request;
  request.set_body(std::string(64, 'c'));
  const auto executor = co_await asio::this_coro::executor;
  while (Clock::now() < window.until) {
    const auto start = Clock::now();
    absl::StatusOr<std::shared_ptr<sdk::Channel>> channel =
        co_await sdk::Channel::Connect(executor, options);
    bool ok = channel.ok();
    if (ok) {
      Echo::Client client(*channel);
      ok = (co_await client.Echo(request)).ok();
      (*channel)->Close();
    }
    if (window.measuring() && Clock::now() < window.until) {
      if (ok) {
        ++window.result->operations;
        window.result->latencies.push_back(MicrosSince(start));
      } else {
        ++window.result->errors;
      }
    }
  }
  --*window.running;
}

// Samples both processes' CPU when the measured window opens and closes.
asio::awaitable<void> SampleCpu(pid_t gateway, pid_t service, Window window) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_at(window.measure_from);
  co_await timer.async_wait(asio::use_awaitable);
  const auto started = Clock::now();
  const std::int64_t gateway_start = ProcessCpuMicros(gateway);
  const std::int64_t service_start = ProcessCpuMicros(service);
  const std::int64_t client_start = ProcessCpuMicros(getpid());
  timer.expires_at(window.until);
  co_await timer.async_wait(asio::use_awaitable);
  window.result->gateway_cpu_us = ProcessCpuMicros(gateway) - gateway_start;
  window.result->service_cpu_us = ProcessCpuMicros(service) - service_start;
  window.result->client_cpu_us = ProcessCpuMicros(getpid()) - client_start;
  window.result->seconds = std::chrono::duration<double>(Clock::now() - started).count();
}

// Resident memory of a process in KiB (VmRSS), or -1.
std::int64_t RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stoll(line.substr(6));
    }
  }
  return -1;
}

// Opens `count` service connections (each a ServiceHost that registers stella.bench.v1.Echo as
// its own instance, then stays idle), and reports the gateway's RSS growth per connection:
//   case=idle_<count> connections=<n> gateway_rss_kib_before=<n> gateway_rss_kib_after=<n>
//   gateway_kib_per_connection=<x> seconds_to_register=<x>
void RunIdleCase(asio::io_context& io, const std::string& name, const std::string& config,
                 pid_t gateway) {
  const int count = absl::GetFlag(FLAGS_idle_connections);
  auto setup = sdk::LoadServiceConfig(config, "echo");
  if (!setup.ok()) {
    std::fprintf(stderr, "stella-bench: %s\n", std::string(setup.status().message()).c_str());
    return;
  }
  const std::int64_t before = RssKib(gateway);
  EchoImpl impl;
  std::vector<std::shared_ptr<sdk::ServiceHost>> hosts;
  const auto start = Clock::now();
  const auto give_up = start + std::chrono::seconds(120);
  auto registered = [&] {
    std::size_t total = 0;
    for (const auto& host : hosts) {
      total += host->registered_gateways();
    }
    return total;
  };
  // In batches, as a fleet starting up would: each batch registers before the next dials.
  constexpr int kBatch = 250;
  for (int first = 0; first < count && Clock::now() < give_up; first += kBatch) {
    for (int i = first; i < std::min(count, first + kBatch); ++i) {
      sdk::ServiceHostOptions options = setup->options;
      options.instance_id = absl::StrCat("idle-", i);
      auto host = sdk::ServiceHost::Create(io.get_executor(), options);
      if (!Echo::Register(*host, impl).ok()) {
        return;
      }
      host->Start();
      hosts.push_back(std::move(host));
    }
    while (registered() < hosts.size() && Clock::now() < give_up) {
      io.run_one_for(std::chrono::milliseconds(20));
    }
  }
  const double register_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Let the connections settle into idleness (handshake and HELLO buffers released).
  const auto settle = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < settle) {
    io.run_one_for(std::chrono::milliseconds(20));
  }
  const std::size_t connections = registered();
  const std::int64_t after = RssKib(gateway);
  std::printf(
      "case=%s connections=%zu gateway_rss_kib_before=%lld gateway_rss_kib_after=%lld "
      "gateway_kib_per_connection=%.1f seconds_to_register=%.2f\n",
      name.c_str(), connections, static_cast<long long>(before), static_cast<long long>(after),
      connections == 0 ? 0.0
                       : static_cast<double>(after - before) / static_cast<double>(connections),
      register_seconds);
  std::fflush(stdout);
  int remaining = static_cast<int>(hosts.size());
  for (const auto& host : hosts) {
    host->Shutdown(absl::ZeroDuration(), [&remaining] { --remaining; });
  }
  const auto stop_by = Clock::now() + std::chrono::seconds(30);
  while (remaining > 0 && Clock::now() < stop_by) {
    io.run_one_for(std::chrono::milliseconds(20));
  }
}

struct Setup {
  std::shared_ptr<sdk::Channel> channel;
  sdk::ChannelOptions fresh_connection_options;  // no session resumption: full handshakes
  pid_t gateway = -1;
  pid_t service = -1;
  std::string idle_config;  // a service file for the idle case's hosts
};

CaseResult RunCase(asio::io_context& io, const std::string& name, Setup& setup) {
  CaseResult result;
  result.name = name;
  int running = 0;
  const auto warmup = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(absl::GetFlag(FLAGS_warmup)));
  const auto measured = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  Window window{Clock::now() + warmup, Clock::now() + warmup + measured, &result, &running};
  Echo::Client client(setup.channel);
  auto spawn = [&](asio::awaitable<void> worker) {
    ++running;
    asio::co_spawn(io, std::move(worker), runtime::LogCoroutineFailure("bench worker"));
  };
  if (name == "unary_64B_c1" || name == "unary_64B_c64" || name == "unary_4KiB_c64" ||
      name == "body_1MiB_c4") {
    const int concurrency = name == "unary_64B_c1" ? 1 : name == "body_1MiB_c4" ? 4 : 64;
    const std::size_t size = name == "unary_4KiB_c64" ? 4096
                             : name == "body_1MiB_c4" ? 1 << 20
                                                      : 64;
    for (int i = 0; i < concurrency; ++i) {
      spawn(UnaryWorker(&client, std::string(size, 'b'), window));
    }
  } else if (name == "stream_64B") {
    for (int i = 0; i < 4; ++i) {
      spawn(StreamWorker(&client, 64, window));
    }
  } else if (name == "connect") {
    for (int i = 0; i < 8; ++i) {
      spawn(ConnectWorker(setup.fresh_connection_options, window));
    }
  } else {
    std::fprintf(stderr, "stella-bench: unknown case %s\n", name.c_str());
    return result;
  }
  asio::co_spawn(io, SampleCpu(setup.gateway, setup.service, window),
                 runtime::LogCoroutineFailure("cpu sampler"));
  while (running > 0 || result.seconds == 0) {
    io.run_one_for(std::chrono::milliseconds(50));
  }
  return result;
}

int RunLoad() {
  const std::filesystem::path bin = std::filesystem::canonical("/proc/self/exe").parent_path();
  char dir_template[] = "/tmp/stella-bench.XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string certs = dir + "/certs";
  if (RunAndWait({(bin / "stella").string(), "certs", "dev", "--out", certs, "--services", "echo",
                  "--key-type", absl::GetFlag(FLAGS_key_type)},
                 dir + "/certs.log") != 0) {
    std::fprintf(stderr, "stella-bench: stella certs dev failed (see %s/certs.log)\n", dir.c_str());
    return 1;
  }
  const std::uint16_t service_port = FreePort();
  const std::uint16_t caller_port = FreePort();
  const std::uint16_t admin_port = FreePort();
  const std::string tls_keys =
      absl::StrCat("  CertificatePath: ", certs, "/gateway.crt\n  CertificateKeyPath: ", certs,
                   "/gateway.key\n  ClientCaCertificatePath: ", certs, "/ca.crt\n");
  std::ofstream(dir + "/gateway.yaml")
      << "TlsTransport:\n  ListenAddress: 127.0.0.1\n  Port: " << service_port << "\n"
      << tls_keys << "Callers:\n  ListenAddress: 127.0.0.1\n  Port: " << caller_port << "\n"
      << tls_keys << "Admin:\n  Port: " << admin_port << "\n";
  auto client_file = [&](const std::string& name, std::uint16_t port) {
    std::ofstream(dir + "/" + name + ".yaml")
        << "TlsClient:\n  Gateways: [\"127.0.0.1:" << port
        << "\"]\n  ExpectedServerName: localhost\n  ClientCertificatePath: " << certs << "/" << name
        << ".crt\n  ClientCertificateKeyPath: " << certs << "/" << name
        << ".key\n  ServerCaCertificatePath: " << certs << "/ca.crt\n"
        << "  InitialReconnectDelayMs: 50\n";
  };
  client_file("echo", service_port);
  client_file("caller", caller_port);

  // The idle case holds thousands of connections: lift the soft descriptor limit to the hard one
  // for this process and the gateway it starts.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  Setup setup;
  setup.gateway = Spawn({(bin / "stella-gateway").string(), "--config", dir + "/gateway.yaml"},
                        dir + "/gateway.log");
  setup.service = Spawn(
      {(bin / "stella-bench").string(), "--mode=echo-service", "--config=" + dir + "/echo.yaml"},
      dir + "/service.log");
  auto stop = [&](int code) {
    for (pid_t pid : {setup.service, setup.gateway}) {
      if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, nullptr, 0);
      }
    }
    std::filesystem::remove_all(dir);
    return code;
  };
  bool registered = false;
  for (int i = 0; i < 200 && !registered; ++i) {
    registered =
        HttpGet(admin_port, "/routes").find("stella.bench.v1.Echo/Echo") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!registered) {
    std::fprintf(stderr, "stella-bench: the echo service did not register (logs in %s)\n",
                 dir.c_str());
    return 1;
  }

  // Placement: a core each when there are enough; otherwise the scheduler shares them.
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores >= 3) {
    const std::vector<std::pair<pid_t, int>> placement = {
        {setup.gateway, 0}, {setup.service, 1}, {getpid(), 2}};
    for (const auto& [pid, core] : placement) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(core, &set);
      sched_setaffinity(pid, sizeof(set), &set);
    }
    std::printf("# placement: gateway on cpu 0, echo service on cpu 1, load generator on cpu 2\n");
  } else {
    std::printf("# placement: %u cores for 3 processes (caller, gateway, service): not pinned\n",
                cores);
  }

  auto channel_setup = sdk::LoadChannelConfig(dir + "/caller.yaml", "stella-bench");
  if (!channel_setup.ok()) {
    std::fprintf(stderr, "stella-bench: %s\n",
                 std::string(channel_setup.status().message()).c_str());
    return stop(1);
  }
  // A second TLS snapshot that never resumes a session: every connect case handshake is full.
  runtime::tls::CredentialSource source;
  source.certificate_path = certs + "/caller.crt";
  source.key_path = certs + "/caller.key";
  runtime::tls::TrustSource trust_source;
  trust_source.ca_path = certs + "/ca.crt";
  auto credentials =
      runtime::tls::LoadCredentials(source, runtime::tls::CertificateUsage::kClient, absl::Now());
  auto trust = runtime::tls::LoadTrust(trust_source);
  if (!credentials.ok() || !trust.ok()) {
    return stop(1);
  }
  runtime::tls::TlsOptions full;
  full.role = runtime::tls::TlsRole::kClient;
  full.expected_server_name = "localhost";
  full.resume_sessions = false;
  auto full_context =
      runtime::tls::TlsContext::Create(full, *std::move(credentials), *std::move(trust));
  if (!full_context.ok()) {
    return stop(1);
  }
  setup.fresh_connection_options = channel_setup->options;
  setup.fresh_connection_options.tls = [context = *full_context] { return context; };

  asio::io_context io(1);
  auto channel = asio::co_spawn(
      io, sdk::Channel::Connect(io.get_executor(), channel_setup->options), asio::use_future);
  while (channel.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    io.run_one_for(std::chrono::milliseconds(50));
  }
  absl::StatusOr<std::shared_ptr<sdk::Channel>> connected = channel.get();
  if (!connected.ok()) {
    std::fprintf(stderr, "stella-bench: %s\n", std::string(connected.status().message()).c_str());
    return stop(1);
  }
  setup.channel = *connected;
  setup.idle_config = dir + "/echo.yaml";
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_cases), ',', absl::SkipWhitespace())) {
    if (absl::StartsWith(name, "idle_")) {
      RunIdleCase(io, std::string(name), setup.idle_config, setup.gateway);
    } else {
      PrintResult(RunCase(io, std::string(name), setup));
    }
  }
  setup.channel->Close();
  io.poll();
  return stop(0);
}

}  // namespace
}  // namespace stella::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (absl::GetFlag(FLAGS_mode) == "echo-service") {
    return stella::bench::RunEchoService();
  }
  if (absl::GetFlag(FLAGS_mode) == "ceilings") {
    stella::bench::PrintCeilings(stella::bench::MeasureCeilings(0.5));
    return 0;
  }
  if (absl::GetFlag(FLAGS_mode) != "run") {
    std::fprintf(stderr, "stella-bench: --mode is run, echo-service or ceilings\n");
    return 2;
  }
  return stella::bench::RunLoad();
}
