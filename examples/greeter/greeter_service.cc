// The greeter service: implements greeter.v1.Greeter (generated Greeter::Handler) and serves it
// through the gateways its YAML file names.
//   greeter-service --config service.yaml [--instance greeter-eu-1] [--region eu]
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "greeter.stella.h"
#include "service_sdk/service_config.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "service.yaml", "The service's YAML file (a TlsClient section).");
ABSL_FLAG(std::string, instance, "", "This instance's id, shown in answers (random if empty).");
ABSL_FLAG(std::string, region, "", "Overrides the file's TlsClient.Region.");

namespace {

using greeter::v1::HelloReply;
using greeter::v1::HelloRequest;
using greeter::v1::NameCount;
using stella::sdk::CallContext;

class GreeterImpl final : public greeter::v1::Greeter::Handler {
 public:
  explicit GreeterImpl(std::string instance) : instance_(std::move(instance)) {}

  boost::asio::awaitable<absl::StatusOr<HelloReply>> SayHello(
      CallContext& /*context*/, const HelloRequest& request) override {
    if (request.name().empty()) {
      co_return absl::InvalidArgumentError("HelloRequest.name is empty: whom should I greet?");
    }
    co_return Reply("Hello, " + request.name() + "!");
  }

  boost::asio::awaitable<absl::Status> ListGreetings(
      CallContext& /*context*/, const HelloRequest& request,
      stella::sdk::ServerWriter<HelloReply>& writer) override {
    for (const char* greeting : {"Hello", "Bonjour", "Hallo", "Hola"}) {
      if (absl::Status written =
              co_await writer.Write(Reply(absl::StrCat(greeting, ", ", request.name(), "!")));
          !written.ok()) {
        co_return written;
      }
    }
    co_return absl::OkStatus();
  }

  boost::asio::awaitable<absl::StatusOr<NameCount>> CollectNames(
      CallContext& /*context*/, stella::sdk::ServerReader<HelloRequest>& reader) override {
    NameCount count;
    count.set_served_by(instance_);
    while (true) {
      absl::StatusOr<std::optional<HelloRequest>> next = co_await reader.Read();
      if (!next.ok()) {
        co_return next.status();
      }
      if (!next->has_value()) {
        break;
      }
      count.set_count(count.count() + 1);
      count.set_names(count.names().empty() ? (*next)->name()
                                            : count.names() + ", " + (*next)->name());
    }
    co_return count;
  }

  boost::asio::awaitable<absl::Status> Chat(
      CallContext& /*context*/, stella::sdk::ServerReader<HelloRequest>& reader,
      stella::sdk::ServerWriter<HelloReply>& writer) override {
    while (true) {
      absl::StatusOr<std::optional<HelloRequest>> next = co_await reader.Read();
      if (!next.ok()) {
        co_return next.status();
      }
      if (!next->has_value()) {
        co_return absl::OkStatus();
      }
      if (absl::Status written =
              co_await writer.Write(Reply("Nice to meet you, " + (*next)->name() + "."));
          !written.ok()) {
        co_return written;
      }
    }
  }

 private:
  HelloReply Reply(std::string message) const {
    HelloReply reply;
    reply.set_message(std::move(message));
    reply.set_served_by(instance_);
    return reply;
  }

  std::string instance_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto setup = stella::sdk::LoadServiceConfig(absl::GetFlag(FLAGS_config), "greeter");
  if (!setup.ok()) {
    std::fprintf(stderr, "greeter-service: %s\n", std::string(setup.status().message()).c_str());
    return 2;
  }
  if (!absl::GetFlag(FLAGS_instance).empty()) {
    setup->options.instance_id = absl::GetFlag(FLAGS_instance);
  }
  if (!absl::GetFlag(FLAGS_region).empty()) {
    setup->options.region = absl::GetFlag(FLAGS_region);
  }
  boost::asio::io_context io(1);
  auto host = stella::sdk::ServiceHost::Create(io.get_executor(), setup->options);
  GreeterImpl greeter(setup->options.instance_id.empty() ? "greeter" : setup->options.instance_id);
  if (absl::Status registered = greeter::v1::Greeter::Register(*host, greeter); !registered.ok()) {
    std::fprintf(stderr, "greeter-service: %s\n", std::string(registered.message()).c_str());
    return 2;
  }
  host->Start();
  spdlog::info("greeter-service {} started", setup->options.instance_id);
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) {
      spdlog::info("greeter-service: stopping; in-flight calls get 5 s");
      host->Shutdown(absl::Seconds(5), [&io] { io.stop(); });
    }
  });
  io.run();
  return 0;
}
