// Routed unary throughput: caller → gateway → service over loopback mutual TLS, each on its own
// thread and io_context, 64-byte bodies, N calls kept in flight for a fixed time after a warm-up.
// Prints one line: case=... qps=... p50_us=... p99_us=... p999_us=...
//
//   ./build/bin/routed_unary_bench [concurrency=64] [seconds=3] [body_bytes=64]
#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gateway/gateway.h"
#include "runtime/async.h"
#include "runtime/tls/cert_builder.h"
#include "service_sdk/channel.h"
#include "service_sdk/service_host.h"
#include "spdlog/spdlog.h"

namespace stella {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::tls::CertSpec;
using runtime::tls::Credentials;
using runtime::tls::MintedCert;
using runtime::tls::TlsContext;
using runtime::tls::TlsOptions;
using runtime::tls::TlsRole;
using runtime::tls::TrustBundle;

asio::awaitable<absl::Status> Echo(sdk::ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  call.SetResponse(request->value_or(""));
  co_return absl::OkStatus();
}

struct Pki {
  MintedCert ca;
  MintedCert server;
  MintedCert service;
  MintedCert caller;
};

MintedCert Mint(const std::string& cn, bool server, const MintedCert* issuer) {
  CertSpec spec;
  spec.common_name = cn;
  spec.is_ca = issuer == nullptr;
  spec.server_auth = server;
  spec.client_auth = !server && issuer != nullptr;
  if (server) {
    spec.dns_names = {"localhost"};
  }
  if (!server && issuer != nullptr) {
    spec.dns_names = {cn};
  }
  auto cert = runtime::tls::MintCertificate(spec, issuer);
  if (!cert.ok()) {
    std::fprintf(stderr, "cannot mint: %s\n", std::string(cert.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(cert);
}

std::shared_ptr<const TlsContext> Context(const MintedCert& cert, const MintedCert& ca,
                                          TlsRole role) {
  Credentials creds;
  creds.chain.push_back(bssl::UpRef(cert.cert));
  creds.key = bssl::UpRef(cert.key);
  creds.leaf = runtime::tls::IdentityOf(cert.cert.get());
  creds.origin = "benchmark";
  TrustBundle trust;
  trust.ca_origin = "benchmark CA";
  trust.store.reset(X509_STORE_new());
  X509_STORE_add_cert(trust.store.get(), ca.cert.get());
  TlsOptions options;
  options.role = role;
  options.expected_server_name = role == TlsRole::kClient ? "localhost" : "";
  auto context = TlsContext::Create(options, std::move(creds), std::move(trust));
  if (!context.ok()) {
    std::fprintf(stderr, "%s\n", std::string(context.status().message()).c_str());
    std::exit(1);
  }
  return *context;
}

struct Stats {
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::vector<std::vector<std::int64_t>> latencies_us;  // per worker, while measuring
  std::atomic<std::int64_t> errors{0};
};

asio::awaitable<void> Worker(std::shared_ptr<sdk::Channel> channel, Stats* stats, int index,
                             std::string body) {
  while (!stats->stop.load()) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> reply = co_await channel->Call("bench.v1.Echo/Echo", body);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    if (!reply.ok()) {
      stats->errors.fetch_add(1);
      continue;
    }
    if (stats->measuring.load()) {
      stats->latencies_us[index].push_back(us);
    }
  }
}

int Run(int concurrency, double seconds, std::size_t body_bytes) {
  spdlog::set_level(spdlog::level::warn);
  Pki pki;
  pki.ca = Mint("Bench CA", false, nullptr);
  pki.server = Mint("localhost", true, &pki.ca);
  pki.service = Mint("bench", false, &pki.ca);
  pki.caller = Mint("caller", false, &pki.ca);

  asio::io_context gateway_io;
  asio::io_context service_io;
  asio::io_context caller_io;
  auto guard_gateway = asio::make_work_guard(gateway_io);
  auto guard_service = asio::make_work_guard(service_io);
  auto guard_caller = asio::make_work_guard(caller_io);

  gateway::GatewayConfig config;
  config.gateway_id = "bench";
  config.services.listen_address = "127.0.0.1";
  config.services.port = 0;
  config.callers = config.services;
  gateway::GatewayOptions options;
  options.config = config;
  auto server_tls = Context(pki.server, pki.ca, TlsRole::kServer);
  options.service_tls = [server_tls] { return server_tls; };
  options.caller_tls = [server_tls] { return server_tls; };
  auto gateway = gateway::Gateway::Start(gateway_io, std::move(options));
  if (!gateway.ok()) {
    std::fprintf(stderr, "%s\n", std::string(gateway.status().message()).c_str());
    return 1;
  }
  std::thread gateway_thread([&] { gateway_io.run(); });

  sdk::ServiceHostOptions host_options;
  host_options.service_name = "bench";
  host_options.gateways = {{"127.0.0.1", (*gateway)->service_port()}};
  auto service_tls = Context(pki.service, pki.ca, TlsRole::kClient);
  host_options.tls = [service_tls] { return service_tls; };
  auto host = sdk::ServiceHost::Create(service_io.get_executor(), host_options);
  v1::Endpoint endpoint;
  endpoint.set_method("bench.v1.Echo/Echo");
  (void)host->Register(endpoint, Echo);
  asio::post(service_io, [&] { host->Start(); });
  std::thread service_thread([&] { service_io.run(); });
  // Asks the service's thread (which owns the host) whether it has registered.
  auto registered = [&] {
    std::promise<std::size_t> answer;
    asio::post(service_io, [&] { answer.set_value(host->registered_gateways()); });
    return answer.get_future().get();
  };
  for (int i = 0; i < 500 && registered() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  sdk::ChannelOptions channel_options;
  channel_options.gateways = {{"127.0.0.1", (*gateway)->caller_port()}};
  channel_options.tls = [tls = Context(pki.caller, pki.ca, TlsRole::kClient)] { return tls; };
  std::promise<absl::StatusOr<std::shared_ptr<sdk::Channel>>> connected;
  asio::co_spawn(caller_io, sdk::Channel::Connect(caller_io.get_executor(), channel_options),
                 [&](const std::exception_ptr&, absl::StatusOr<std::shared_ptr<sdk::Channel>> c) {
                   connected.set_value(std::move(c));
                 });
  std::thread caller_thread([&] { caller_io.run(); });
  std::optional<absl::StatusOr<std::shared_ptr<sdk::Channel>>> channel =
      connected.get_future().get();
  if (!channel->ok()) {
    std::fprintf(stderr, "%s\n", std::string(channel->status().message()).c_str());
    return 1;
  }

  Stats stats;
  stats.latencies_us.resize(static_cast<std::size_t>(concurrency));
  const std::string body(body_bytes, 'b');
  for (int i = 0; i < concurrency; ++i) {
    asio::co_spawn(caller_io, Worker(**channel, &stats, i, body),
                   runtime::LogCoroutineFailure("bench worker"));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up
  stats.measuring = true;
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  stats.measuring = false;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.stop = true;
  // Stop every thread before reading what the workers recorded.
  caller_io.stop();
  service_io.stop();
  gateway_io.stop();
  caller_thread.join();
  service_thread.join();
  gateway_thread.join();

  std::vector<std::int64_t> all;
  for (auto& latencies : stats.latencies_us) {
    all.insert(all.end(), latencies.begin(), latencies.end());
  }
  std::sort(all.begin(), all.end());
  auto percentile = [&all](double p) {
    const auto count = static_cast<double>(all.size());
    return all.empty() ? 0 : all[std::min(all.size() - 1, static_cast<std::size_t>(p * count))];
  };
  std::printf(
      "case=unary_%zuB_c%d qps=%.0f p50_us=%lld p99_us=%lld p999_us=%lld errors=%lld "
      "threads=caller,gateway,service cores=%u\n",
      body_bytes, concurrency, static_cast<double>(all.size()) / elapsed,
      static_cast<long long>(percentile(0.50)), static_cast<long long>(percentile(0.99)),
      static_cast<long long>(percentile(0.999)), static_cast<long long>(stats.errors.load()),
      std::thread::hardware_concurrency());
  return 0;
}

}  // namespace
}  // namespace stella

int main(int argc, char** argv) {
  // Positional numbers; flags meant for Google Benchmark binaries (./run bench) are ignored.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] != '-') {
      args.emplace_back(argv[i]);
    }
  }
  const int concurrency = args.size() > 0 ? std::atoi(args[0].c_str()) : 64;
  const double seconds = args.size() > 1 ? std::atof(args[1].c_str()) : 3.0;
  const std::size_t body = args.size() > 2 ? std::strtoul(args[2].c_str(), nullptr, 10) : 64;
  return stella::Run(concurrency, seconds, body);
}
