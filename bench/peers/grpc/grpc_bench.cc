// grpc-bench: the gRPC C++ side of the benchmark (bench/stella_bench.cc is the Stella side;
// `./run bench` runs both in alternation). It starts an echo server as a second process (itself,
// --mode=echo-server), drives it directly over mutual TLS (ECDSA P-256, client certificate
// required, the certificates `stella certs dev` minted) and prints one line per case in the same
// format as stella-bench:
//
//   case=<name> qps=<n> p50_us=<n> p99_us=<n> p999_us=<n> cpu_us_per_call_gateway=na
//   cpu_us_per_call_service=<n> cpu_us_per_call_client=<n> errors=<n>
//
// This binary links Debian's gRPC, which uses OpenSSL 3. It must never link BoringSSL or any
// Stella library: the two TLS libraries in one process resolve each other's symbols and crash.
// bench/peers/grpc/CMakeLists.txt is its own CMake project for that reason.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "echo.grpc.pb.h"

extern char** environ;

namespace stella::bench {
namespace {

using v1::Echo;
using v1::EchoMessage;
using v1::StreamRequest;

constexpr int kMaxMessage = 8 << 20;

struct Flags {
  std::string mode = "run";
  std::string certs;
  std::string cases = "unary_64B_c1,unary_64B_c64,unary_4KiB_c64,stream_64B,body_1MiB_c4,connect";
  double seconds = 5;
  double warmup = 1;
  int port = 0;
};

bool ParseFlags(int argc, char** argv, Flags* out) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "grpc-bench: expected --name=value, got \"%s\"\n", arg.c_str());
      return false;
    }
    const std::string name = arg.substr(2, eq - 2);
    const std::string value = arg.substr(eq + 1);
    if (name == "mode") {
      out->mode = value;
    } else if (name == "certs") {
      out->certs = value;
    } else if (name == "cases") {
      out->cases = value;
    } else if (name == "seconds") {
      out->seconds = std::stod(value);
    } else if (name == "warmup") {
      out->warmup = std::stod(value);
    } else if (name == "port") {
      out->port = std::stoi(value);
    } else {
      std::fprintf(stderr, "grpc-bench: unknown flag --%s\n", name.c_str());
      return false;
    }
  }
  if (out->certs.empty()) {
    std::fprintf(stderr, "grpc-bench: --certs=DIR (from `stella certs dev`) is required\n");
    return false;
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// --- The echo server ---------------------------------------------------------------------------

class StreamWriter final : public grpc::ServerWriteReactor<EchoMessage> {
 public:
  explicit StreamWriter(const StreamRequest& request) : remaining_(request.count()) {
    message_.set_body(std::string(static_cast<std::size_t>(request.size()), 'x'));
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    Next();
  }
  // gRPC's callback API hands ownership of the reactor back here.
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (remaining_-- > 0) {
      StartWrite(&message_);
    } else {
      Finish(grpc::Status::OK);
    }
  }
  int remaining_;
  EchoMessage message_;
};

class EchoServer final : public Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context, const EchoMessage* request,
                                 EchoMessage* response) override {
    *response = *request;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerWriteReactor<EchoMessage>* Stream(grpc::CallbackServerContext* /*context*/,
                                                const StreamRequest* request) override {
    return new StreamWriter(*request);
  }
};

int RunEchoServer(const Flags& flags) {
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = ReadFile(flags.certs + "/ca.crt");
  tls.pem_key_cert_pairs.push_back(
      {ReadFile(flags.certs + "/gateway.key"), ReadFile(flags.certs + "/gateway.crt")});
  EchoServer service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(flags.port),
                           grpc::SslServerCredentials(tls));
  builder.SetMaxReceiveMessageSize(kMaxMessage);
  builder.SetMaxSendMessageSize(kMaxMessage);
  builder.RegisterService(&service);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before gRPC starts its threads
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "grpc-bench: cannot listen on 127.0.0.1:%d\n", flags.port);
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

// --- The load ----------------------------------------------------------------------------------

std::shared_ptr<grpc::Channel> MakeChannel(const Flags& flags, int port, bool fresh) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadFile(flags.certs + "/ca.crt");
  tls.pem_private_key = ReadFile(flags.certs + "/caller.key");
  tls.pem_cert_chain = ReadFile(flags.certs + "/caller.crt");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetMaxReceiveMessageSize(kMaxMessage);
  args.SetMaxSendMessageSize(kMaxMessage);
  if (fresh) {
    // A subchannel of its own: a new TCP connection and a full handshake (gRPC has no TLS
    // session cache unless one is configured).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(tls),
                                   args);
}

struct Window {
  Clock::time_point measure_from;
  Clock::time_point until;
  bool measuring(Clock::time_point now) const { return now >= measure_from && now < until; }
};

// What one load loop saw; merged into the case's result when every loop is done.
struct LoopStats {
  std::uint64_t operations = 0;
  std::uint64_t errors = 0;
  std::uint64_t bytes = 0;
  std::vector<std::uint32_t> latencies;
};

// Waits until `count` loops have called Done().
class Latch {
 public:
  explicit Latch(int count) : count_(count) {}
  void Done() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--count_ == 0) {
      done_.notify_all();
    }
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return count_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  int count_;
};

// One outstanding unary call at a time, issued again from its own completion (the callback API:
// gRPC's threads run the completions, and one loop's completions never overlap).
class UnaryLoop {
 public:
  UnaryLoop(Echo::Stub* stub, std::size_t size, Window window, Latch* latch)
      : stub_(stub), window_(window), latch_(latch) {
    request_.set_body(std::string(size, 'b'));
  }
  void Issue() {
    context_ = std::make_unique<grpc::ClientContext>();
    start_ = Clock::now();
    stub_->async()->Echo(context_.get(), &request_, &response_,
                         [this](grpc::Status status) { Completed(status); });
  }
  LoopStats& stats() { return stats_; }

 private:
  void Completed(const grpc::Status& status) {
    const auto now = Clock::now();
    if (window_.measuring(now)) {
      if (status.ok()) {
        ++stats_.operations;
        stats_.latencies.push_back(MicrosSince(start_));
        stats_.bytes += 2 * request_.body().size();
      } else {
        ++stats_.errors;
      }
    }
    if (now < window_.until) {
      Issue();
    } else {
      latch_->Done();
    }
  }
  Echo::Stub* stub_;
  Window window_;
  Latch* latch_;
  EchoMessage request_;
  EchoMessage response_;
  std::unique_ptr<grpc::ClientContext> context_;
  Clock::time_point start_;
  LoopStats stats_;
};

void StreamLoop(Echo::Stub* stub, int size, Window window, LoopStats* stats) {
  StreamRequest request;
  request.set_count(1000);
  request.set_size(size);
  while (Clock::now() < window.until) {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<EchoMessage>> reader = stub->Stream(&context, request);
    EchoMessage message;
    auto last = Clock::now();
    while (reader->Read(&message)) {
      if (window.measuring(Clock::now())) {
        ++stats->operations;
        stats->latencies.push_back(MicrosSince(last));  // gap between messages
      }
      last = Clock::now();
    }
    if (!reader->Finish().ok()) {
      ++stats->errors;
    }
  }
}

void ConnectLoop(const Flags& flags, int port, Window window, LoopStats* stats) {
  EchoMessage request;
  request.set_body(std::string(64, 'c'));
  while (Clock::now() < window.until) {
    const auto start = Clock::now();
    auto stub = Echo::NewStub(MakeChannel(flags, port, /*fresh=*/true));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EchoMessage response;
    const bool ok = stub->Echo(&context, request, &response).ok();
    if (window.measuring(Clock::now())) {
      if (ok) {
        ++stats->operations;
        stats->latencies.push_back(MicrosSince(start));
      } else {
        ++stats->errors;
      }
    }
  }
}

CaseResult RunCase(const Flags& flags, const std::string& name, Echo::Stub* stub, int port,
                   pid_t server) {
  CaseResult result;
  result.name = name;
  const auto now = Clock::now();
  const auto warmup =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(flags.warmup));
  const auto measured =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(flags.seconds));
  const Window window{now + warmup, now + warmup + measured};
  std::vector<LoopStats> stats;
  std::vector<std::unique_ptr<UnaryLoop>> unary;
  std::vector<std::thread> threads;

  std::thread sampler([&] {
    std::this_thread::sleep_until(window.measure_from);
    const auto started = Clock::now();
    const std::int64_t server_start = ProcessCpuMicros(server);
    const std::int64_t client_start = ProcessCpuMicros(getpid());
    std::this_thread::sleep_until(window.until);
    result.service_cpu_us = ProcessCpuMicros(server) - server_start;
    result.client_cpu_us = ProcessCpuMicros(getpid()) - client_start;
    result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  });
  if (name == "unary_64B_c1" || name == "unary_64B_c64" || name == "unary_4KiB_c64" ||
      name == "body_1MiB_c4") {
    const int concurrency = name == "unary_64B_c1" ? 1 : name == "body_1MiB_c4" ? 4 : 64;
    const std::size_t size = name == "unary_4KiB_c64" ? 4096
                             : name == "body_1MiB_c4" ? 1 << 20
                                                      : 64;
    Latch latch(concurrency);
    for (int i = 0; i < concurrency; ++i) {
      unary.push_back(std::make_unique<UnaryLoop>(stub, size, window, &latch));
    }
    for (auto& loop : unary) {
      loop->Issue();
    }
    latch.Wait();
    for (auto& loop : unary) {
      stats.push_back(std::move(loop->stats()));
    }
  } else if (name == "stream_64B" || name == "connect") {
    const int loops = name == "connect" ? 8 : 4;
    stats.resize(static_cast<std::size_t>(loops));
    for (int i = 0; i < loops; ++i) {
      LoopStats* out = &stats[static_cast<std::size_t>(i)];
      if (name == "connect") {
        threads.emplace_back(
            [&flags, port, window, out] { ConnectLoop(flags, port, window, out); });
      } else {
        threads.emplace_back([stub, window, out] { StreamLoop(stub, 64, window, out); });
      }
    }
    for (std::thread& thread : threads) {
      thread.join();
    }
  } else {
    std::fprintf(stderr, "grpc-bench: unknown case %s\n", name.c_str());
  }
  sampler.join();
  for (LoopStats& loop : stats) {
    result.operations += loop.operations;
    result.errors += loop.errors;
    result.bytes += loop.bytes;
    result.latencies.insert(result.latencies.end(), loop.latencies.begin(), loop.latencies.end());
  }
  if (name != "body_1MiB_c4") {
    result.bytes = 0;
  }
  return result;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return -1;
  }
  close(fd);
  return ntohs(address.sin_port);
}

int RunLoad(const Flags& flags, const char* self) {
  const int port = FreePort();
  if (port < 0) {
    std::fprintf(stderr, "grpc-bench: no free loopback port\n");
    return 1;
  }
  std::vector<std::string> args = {self, "--mode=echo-server", "--certs=" + flags.certs,
                                   "--port=" + std::to_string(port)};
  std::vector<char*> argv;
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  pid_t server = -1;
  if (posix_spawn(&server, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    std::fprintf(stderr, "grpc-bench: cannot start the echo server\n");
    return 1;
  }
  auto channel = MakeChannel(flags, port, /*fresh=*/false);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "grpc-bench: the echo server on port %d did not answer\n", port);
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    return 1;
  }
  // Placement: with 3 or more cores, the cores stella-bench gives its service and load generator
  // (1 and 2); otherwise the scheduler shares them.
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores >= 3) {
    for (const auto& [pid, core] : {std::pair<pid_t, int>{server, 1}, {getpid(), 2}}) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(core, &set);
      sched_setaffinity(pid, sizeof(set), &set);
    }
    std::printf("# placement: echo server on cpu 1, load generator on cpu 2\n");
  } else {
    std::printf("# placement: %u cores for 2 processes (client, server): not pinned\n", cores);
  }
  auto stub = Echo::NewStub(channel);
  std::stringstream cases(flags.cases);
  std::string name;
  while (std::getline(cases, name, ',')) {
    if (!name.empty()) {
      PrintResult(RunCase(flags, name, stub.get(), port, server));
    }
  }
  kill(server, SIGTERM);
  int status = 0;
  waitpid(server, &status, 0);
  return 0;
}

}  // namespace
}  // namespace stella::bench

int main(int argc, char** argv) {
  stella::bench::Flags flags;
  if (!stella::bench::ParseFlags(argc, argv, &flags)) {
    return 2;
  }
  if (flags.mode == "echo-server") {
    return stella::bench::RunEchoServer(flags);
  }
  if (flags.mode != "run") {
    std::fprintf(stderr, "grpc-bench: --mode is run or echo-server\n");
    return 2;
  }
  return stella::bench::RunLoad(flags, argv[0]);
}
