// Uses the installed SDK and the generated code: registers a handler with a ServiceHost and
// checks the endpoint table and the schema. Exits 0 when all is as expected.
#include <boost/asio/io_context.hpp>
#include <cstdio>

#include "google/protobuf/descriptor.pb.h"
#include "hello.stella.h"

namespace {

class HelloImpl final : public hello::v1::Hello::Handler {
 public:
  boost::asio::awaitable<absl::StatusOr<hello::v1::Greeting>> Say(
      stella::sdk::CallContext& /*context*/, const hello::v1::Greeting& request) override {
    co_return request;
  }
  boost::asio::awaitable<absl::Status> Repeat(
      stella::sdk::CallContext& /*context*/, const hello::v1::Greeting& request,
      stella::sdk::ServerWriter<hello::v1::Greeting>& writer) override {
    co_return co_await writer.Write(request);
  }
};

int Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "install test: %s\n", what);
  }
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  const auto endpoints = hello::v1::Hello::Endpoints();
  google::protobuf::FileDescriptorSet schema;
  const bool parsed = schema.ParseFromString(std::string(hello::v1::Hello::FileDescriptorSet()));

  boost::asio::io_context io;
  stella::sdk::ServiceHostOptions options;
  options.service_name = "hello";
  auto host = stella::sdk::ServiceHost::Create(io.get_executor(), options);
  HelloImpl impl;
  const absl::Status registered = hello::v1::Hello::Register(*host, impl);

  int failures = 0;
  failures += Check(endpoints.size() == 2, "two endpoints");
  failures += Check(endpoints[0].method() == "hello.v1.Hello/Say", "the Say method name");
  failures += Check(endpoints[0].default_timeout_ms() == 250, "Say's default timeout");
  failures += Check(parsed && schema.file_size() >= 2, "the schema with its imports");
  failures += Check(registered.ok(), "registration");
  std::printf("installed Stella SDK: %zu endpoints, %d schema files, registration %s\n",
              endpoints.size(), schema.file_size(), registered.ok() ? "ok" : "failed");
  return failures == 0 ? 0 : 1;
}
