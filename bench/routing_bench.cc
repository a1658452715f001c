// The gateway's routing choice per call (RoutingReader::Pick): the method lookup in the current
// snapshot, the region filter and the power-of-two-choices draw, for tables of growing size.
// Args: {methods, instances per method}. Half the instances are in the caller's region.
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "gateway/routing_table.h"

namespace stella::gateway {
namespace {

namespace v1 = ::stella::router::v1;

std::string MethodName(int service, int method) {
  return "bench.v1.Service" + std::to_string(service) + "/Method" + std::to_string(method);
}

void BM_Pick(benchmark::State& state) {
  const int services = static_cast<int>(state.range(0));
  const int instances = static_cast<int>(state.range(1));
  constexpr int kMethodsPerService = 8;
  RoutingTable table;
  std::uint64_t connection = 0;
  for (int s = 0; s < services; ++s) {
    for (int i = 0; i < instances; ++i) {
      auto instance = std::make_shared<Instance>();
      instance->connection_id = ++connection;
      instance->service_name = "service" + std::to_string(s);
      instance->instance_id = "i-" + std::to_string(connection);
      instance->region = i % 2 == 0 ? "eu" : "us";
      for (int m = 0; m < kMethodsPerService; ++m) {
        v1::Endpoint endpoint;
        endpoint.set_method(MethodName(s, m));
        endpoint.set_request_type("bench.v1.Request");
        endpoint.set_response_type("bench.v1.Response");
        instance->endpoints.push_back(endpoint);
      }
      if (!table.Add(instance).ok()) {
        state.SkipWithError("cannot build the routing table");
        return;
      }
    }
  }
  std::vector<std::string> methods;
  methods.reserve(static_cast<std::size_t>(services));
  for (int s = 0; s < services; ++s) {
    methods.push_back(MethodName(s, s % kMethodsPerService));
  }
  RoutingReader reader(table);
  std::size_t next = 0;
  for (auto _ : state) {
    absl::StatusOr<std::shared_ptr<Instance>> picked =
        reader.Pick(methods[next++ % methods.size()], "eu");
    benchmark::DoNotOptimize(picked);
  }
  state.counters["picks/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(services * kMethodsPerService) + " methods, " +
                 std::to_string(instances) + " instances each");
}
BENCHMARK(BM_Pick)->Args({1, 2})->Args({16, 4})->Args({256, 16})->Args({64, 256});

}  // namespace
}  // namespace stella::gateway

BENCHMARK_MAIN();
