// What stella-bench and the gRPC peer share: the load loop's statistics, CPU time from /proc and
// the output line. Header-only and free of Asio, TLS and gRPC, so both binaries include it.
#ifndef STELLA_BENCH_BENCH_COMMON_H_
#define STELLA_BENCH_BENCH_COMMON_H_

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace stella::bench {

// CPU time (user + system, every thread) a process has used, in microseconds; -1 if unknown.
inline std::int64_t ProcessCpuMicros(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) {
    return -1;
  }
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  std::int64_t utime = 0;
  std::int64_t stime = 0;
  // Fields after the name start at 3 (state); utime and stime are 14 and 15.
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index == 14) {
      utime = std::stoll(field);
    } else if (index == 15) {
      stime = std::stoll(field);
    }
  }
  return (utime + stime) * 1'000'000 / sysconf(_SC_CLK_TCK);
}

// One case's measurements over its measured window.
struct CaseResult {
  std::string name;
  std::uint64_t operations = 0;  // calls (or messages, or connections) completed
  std::uint64_t errors = 0;
  double seconds = 0;
  std::vector<std::uint32_t> latencies;  // microseconds, one per operation
  std::int64_t gateway_cpu_us = -1;      // over the window; -1 when there is no gateway
  std::int64_t service_cpu_us = -1;
  std::int64_t client_cpu_us = -1;  // the load generator itself
  std::uint64_t bytes = 0;          // payload bytes moved (for the 1 MiB case)
};

inline std::uint32_t Percentile(std::vector<std::uint32_t>& sorted, double fraction) {
  if (sorted.empty()) {
    return 0;
  }
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(sorted.size() - 1));
  return sorted[index];
}

// CPU microseconds per operation, or "na" for a process the case does not have.
inline std::string PerOperation(std::int64_t cpu_us, double operations) {
  if (cpu_us < 0) {
    return "na";
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.4g", static_cast<double>(cpu_us) / operations);
  return text;
}

// Prints the case's line:
// case=<name> qps=<n> p50_us=<n> p99_us=<n> p999_us=<n> cpu_us_per_call_gateway=<n|na>
// cpu_us_per_call_service=<n> cpu_us_per_call_client=<n> errors=<n> [cpu_s_per_gb_gateway=<x>
// cpu_s_per_gb_service=<x>]
inline void PrintResult(CaseResult result) {
  std::sort(result.latencies.begin(), result.latencies.end());
  const double ops = static_cast<double>(std::max<std::uint64_t>(result.operations, 1));
  const double qps = static_cast<double>(result.operations) / std::max(result.seconds, 1e-9);
  std::printf(
      "case=%s qps=%.0f p50_us=%u p99_us=%u p999_us=%u cpu_us_per_call_gateway=%s "
      "cpu_us_per_call_service=%s cpu_us_per_call_client=%s errors=%llu",
      result.name.c_str(), qps, Percentile(result.latencies, 0.50),
      Percentile(result.latencies, 0.99), Percentile(result.latencies, 0.999),
      PerOperation(result.gateway_cpu_us, ops).c_str(),
      PerOperation(result.service_cpu_us, ops).c_str(),
      PerOperation(result.client_cpu_us, ops).c_str(),
      static_cast<unsigned long long>(result.errors));
  if (result.bytes > 0 && result.name.rfind("body_", 0) == 0) {
    // Bytes routed: every request and response body once (what the gateway decrypts and
    // encrypts again).
    const double gigabytes = static_cast<double>(result.bytes) / 1e9;
    std::printf(" cpu_s_per_gb_gateway=%s cpu_s_per_gb_service=%s",
                PerOperation(result.gateway_cpu_us, gigabytes * 1e6).c_str(),
                PerOperation(result.service_cpu_us, gigabytes * 1e6).c_str());
  }
  if (result.name.rfind("connect", 0) == 0) {
    // Full handshakes per second of one core of the accepting side (the gateway, or the gRPC
    // server when there is no gateway).
    const std::int64_t server_cpu =
        result.gateway_cpu_us >= 0 ? result.gateway_cpu_us : result.service_cpu_us;
    if (server_cpu > 0) {
      std::printf(" connects_per_server_cpu_s=%.0f",
                  static_cast<double>(result.operations) / (static_cast<double>(server_cpu) / 1e6));
    }
  }
  std::printf("\n");
  std::fflush(stdout);
}

using Clock = std::chrono::steady_clock;

inline std::uint32_t MicrosSince(Clock::time_point start) {
  return static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
}

}  // namespace stella::bench

#endif  // STELLA_BENCH_BENCH_COMMON_H_
