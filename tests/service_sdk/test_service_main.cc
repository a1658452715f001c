// stella-test-service: a real service process for the tests that kill one (kill -9) or stop one
// (SIGTERM). `stella-test-service --config service.yaml --name greeter [--instance ID]`
// registers test.v1.Texts/Echo (answers "<instance>: <request>") and test.v1.Texts/Hang (never
// answers until cancelled, at most 60 s).
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "service_sdk/service_config.h"
#include "service_sdk/service_host.h"

ABSL_FLAG(std::string, config, "", "The service's YAML file (TlsClient section).");
ABSL_FLAG(std::string, name, "greeter", "The service name to register.");
ABSL_FLAG(std::string, instance, "", "The instance id (random when empty).");

namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using stella::sdk::ServerCall;

std::string g_instance;  // NOLINT: set once in main before any handler runs

asio::awaitable<absl::Status> Echo(ServerCall& call) {
  auto request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  call.SetResponse(g_instance + ": " + request->value_or(""));
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> Hang(ServerCall& call) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (int i = 0; i < 6000 && !call.context().cancelled(); ++i) {
    tick.expires_after(std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::use_awaitable);
  }
  co_return call.context().cancelled() ? call.context().cancel_reason() : absl::OkStatus();
}

v1::Endpoint Unary(const std::string& method) {
  v1::Endpoint endpoint;
  endpoint.set_method(method);
  endpoint.set_request_type("test.v1.Text");
  endpoint.set_response_type("test.v1.Text");
  endpoint.set_kind(v1::CALL_KIND_UNARY);
  return endpoint;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto setup =
      stella::sdk::LoadServiceConfig(absl::GetFlag(FLAGS_config), absl::GetFlag(FLAGS_name));
  if (!setup.ok()) {
    std::fprintf(stderr, "stella-test-service: %s\n",
                 std::string(setup.status().message()).c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_instance).empty()) {
    setup->options.instance_id = absl::GetFlag(FLAGS_instance);
  }
  asio::io_context io(1);
  auto host = stella::sdk::ServiceHost::Create(io.get_executor(), setup->options);
  g_instance = setup->options.instance_id.empty() ? "service" : setup->options.instance_id;
  if (!host->Register(Unary("test.v1.Texts/Echo"), Echo).ok() ||
      !host->Register(Unary("test.v1.Texts/Hang"), Hang).ok()) {
    return 2;
  }
  host->Start();
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) {
      host->Shutdown(absl::Seconds(5), [&io] { io.stop(); });
    }
  });
  io.run();
  return 0;
}
