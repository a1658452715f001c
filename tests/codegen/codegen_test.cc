// protoc-gen-stella: its output against golden files, protoc's error for a broken proto, and the
// generated code of every call kind (and of names chosen to collide) run against a real gateway.
#include <sys/wait.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/admin_server.h"
#include "gateway/gateway.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "greeter.stella.h"
#include "gtest/gtest.h"
#include "stella/test/collisions.stella.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::codegen {
namespace {

namespace asio = boost::asio;
using greeter::v1::Greeter;
using greeter::v1::HelloReply;
using greeter::v1::HelloRequest;
using greeter::v1::NameCount;
using sdk::CallContext;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs a shell command; its exit code and everything it printed.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return {-1, "popen failed"};
  }
  std::array<char, 4096> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) {
    output += buffer.data();
  }
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Protoc(const std::string& out_dir, const std::string& proto) {
  return std::string(STELLA_PROTOC) + " -I" + STELLA_CODEGEN_DIR + "/protos -I" + STELLA_PROTO_DIR +
         " --plugin=protoc-gen-stella=" + STELLA_PLUGIN + " --stella_out=" + out_dir + " " +
         STELLA_CODEGEN_DIR + "/protos/" + proto;
}

// The generated files match tests/codegen/golden/. After an intended change to the generator,
// refresh them with: STELLA_UPDATE_GOLDEN=1 ./build/bin/codegen_test --gtest_filter='*Golden*'
TEST(CodegenGoldenTest, OutputMatchesTheGoldenFiles) {
  TempDir out;
  for (const char* proto : {"stella/test/common.proto", "stella/test/collisions.proto"}) {
    auto [code, output] = RunCommand(Protoc(out.path(), proto));
    ASSERT_EQ(code, 0) << output;
  }
  const bool update = std::getenv("STELLA_UPDATE_GOLDEN") != nullptr;
  for (const char* name : {"stella/test/common.stella.h", "stella/test/common.stella.cc",
                           "stella/test/collisions.stella.h", "stella/test/collisions.stella.cc"}) {
    const std::filesystem::path generated = std::filesystem::path(out.path()) / name;
    const std::filesystem::path golden = std::filesystem::path(STELLA_CODEGEN_DIR) / "golden" /
                                         std::filesystem::path(name).filename();
    ASSERT_TRUE(std::filesystem::exists(generated)) << name;
    if (update) {
      std::filesystem::copy_file(generated, golden,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    EXPECT_EQ(ReadText(generated), ReadText(golden))
        << name << " differs from " << golden
        << "; if the change is intended, run with STELLA_UPDATE_GOLDEN=1";
  }
}

TEST(CodegenGoldenTest, MissingImportIsProtocsErrorNotACrash) {
  TempDir out;
  auto [code, output] = RunCommand(Protoc(out.path(), "bad_import.proto"));
  EXPECT_NE(code, 0);
  EXPECT_THAT(output, HasSubstr("\"missing.v1.Nope\" is not defined"));
  EXPECT_THAT(output, ::testing::Not(HasSubstr("--stella_out: protoc-gen-stella: Plugin killed")));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(out.path()) / "bad_import.stella.h"));
}

TEST(CodegenGoldenTest, UnknownPluginOptionIsRefused) {
  TempDir out;
  std::string command = Protoc(out.path(), "stella/test/common.proto");
  command.replace(command.find("--stella_out="), std::string("--stella_out=").size(),
                  "--stella_out=fast_mode:");
  auto [code, output] = RunCommand(command);
  EXPECT_NE(code, 0);
  EXPECT_THAT(output, HasSubstr("protoc-gen-stella takes no options (got \"fast_mode\")"));
}

// --- The generated code at work ----------------------------------------------------------------

class GreeterImpl final : public Greeter::Handler {
 public:
  asio::awaitable<absl::StatusOr<HelloReply>> SayHello(CallContext& context,
                                                       const HelloRequest& request) override {
    if (request.name().empty()) {
      co_return absl::InvalidArgumentError("no name");
    }
    HelloReply reply;
    reply.set_message("Hello, " + request.name() + " (" + context.caller_identity() + ")");
    co_return reply;
  }
  asio::awaitable<absl::Status> ListGreetings(CallContext& /*context*/, const HelloRequest& request,
                                              sdk::ServerWriter<HelloReply>& writer) override {
    for (const char* word : {"Hello", "Bonjour"}) {
      HelloReply reply;
      reply.set_message(std::string(word) + ", " + request.name());
      if (absl::Status written = co_await writer.Write(reply); !written.ok()) {
        co_return written;
      }
    }
    co_return absl::OkStatus();
  }
  asio::awaitable<absl::StatusOr<NameCount>> CollectNames(
      CallContext& /*context*/, sdk::ServerReader<HelloRequest>& reader) override {
    NameCount count;
    while (true) {
      auto next = co_await reader.Read();
      if (!next.ok()) {
        co_return next.status();
      }
      if (!next->has_value()) {
        co_return count;
      }
      count.set_count(count.count() + 1);
      count.set_names(count.names() + (*next)->name());
    }
  }
  asio::awaitable<absl::Status> Chat(CallContext& /*context*/,
                                     sdk::ServerReader<HelloRequest>& reader,
                                     sdk::ServerWriter<HelloReply>& writer) override {
    while (true) {
      auto next = co_await reader.Read();
      if (!next.ok()) {
        co_return next.status();
      }
      if (!next->has_value()) {
        co_return absl::OkStatus();
      }
      HelloReply reply;
      reply.set_message("hi " + (*next)->name());
      if (absl::Status written = co_await writer.Write(reply); !written.ok()) {
        co_return written;
      }
    }
  }
};

namespace nested = ::stella::test::deep::nested::v1;
namespace common = ::stella::test::common;

// Every method of the service whose names collide with the generated ones.
class TrickyImpl final : public nested::Tricky::Handler {
 public:
  asio::awaitable<absl::StatusOr<common::Payload>> Context(
      CallContext& /*context*/, const nested::Outer_Inner& request) override {
    common::Payload payload;
    payload.set_delete_(request.text());
    payload.set_class_(7);
    co_return payload;
  }
  asio::awaitable<absl::StatusOr<nested::Outer_Inner>> Handler_(
      CallContext& /*context*/, const common::Payload& request) override {
    nested::Outer_Inner inner;
    inner.set_text(request.delete_());
    co_return inner;
  }
  asio::awaitable<absl::StatusOr<nested::class_>> Register(
      CallContext& /*context*/, sdk::ServerReader<nested::Outer>& /*reader*/) override {
    co_return nested::class_();
  }
  asio::awaitable<absl::Status> Client(CallContext& /*context*/, const nested::class_& /*request*/,
                                       sdk::ServerWriter<nested::class_>& /*writer*/) override {
    co_return absl::OkStatus();
  }
  asio::awaitable<absl::Status> delete_(CallContext& /*context*/,
                                        sdk::ServerReader<nested::Outer_Inner>& reader,
                                        sdk::ServerWriter<nested::Outer_Inner>& writer) override {
    while (true) {
      auto next = co_await reader.Read();
      if (!next.ok()) {
        co_return next.status();
      }
      if (!next->has_value()) {
        co_return absl::OkStatus();
      }
      if (absl::Status written = co_await writer.Write(**next); !written.ok()) {
        co_return written;
      }
    }
  }
  asio::awaitable<absl::StatusOr<nested::Outer>> Endpoints(CallContext& /*context*/,
                                                           const nested::Outer& request) override {
    co_return request;
  }
  asio::awaitable<absl::StatusOr<nested::Outer>> FileDescriptorSet(
      CallContext& /*context*/, const nested::Outer& request) override {
    co_return request;
  }
};

class TypedTest : public ::testing::Test {
 protected:
  TypedTest() {
    caller_ = testing::MustMint(testing::LeafSpec("frontend", false, true), &pki_.root);
    runtime::tls::CertSpec tricky = testing::LeafSpec("tricky", false, true);
    tricky.dns_names = {"tricky"};
    tricky_ = testing::MustMint(tricky, &pki_.root);
    auto server = pki_.Context(pki_.server, runtime::tls::TlsRole::kServer, dir_);
    gateway::GatewayConfig config;
    config.services.listen_address = "127.0.0.1";
    config.services.port = 0;
    config.callers = config.services;
    gateway::GatewayOptions options;
    options.config = std::move(config);
    options.service_tls = [server] { return server; };
    options.caller_tls = [server] { return server; };
    auto started = gateway::Gateway::Start(loop_.io(), std::move(options));
    EXPECT_THAT(started, IsOk());
    gateway_ = *std::move(started);
  }

  std::shared_ptr<sdk::ServiceHost> Host(const testing::MintedCert& cert, const std::string& name) {
    sdk::ServiceHostOptions options;
    options.service_name = name;
    options.gateways = {{"127.0.0.1", gateway_->service_port()}};
    auto tls = pki_.Context(cert, runtime::tls::TlsRole::kClient, dir_);
    options.tls = [tls] { return tls; };
    return sdk::ServiceHost::Create(loop_.executor(), std::move(options));
  }

  std::shared_ptr<sdk::Channel> Connect() {
    sdk::ChannelOptions options;
    options.gateways = {{"127.0.0.1", gateway_->caller_port()}};
    auto tls = pki_.Context(caller_, runtime::tls::TlsRole::kClient, dir_);
    options.tls = [tls] { return tls; };
    auto channel = loop_.Run(sdk::Channel::Connect(loop_.executor(), options));
    EXPECT_THAT(channel, IsOk());
    return channel.ok() ? *channel : nullptr;
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  testing::MintedCert caller_;
  testing::MintedCert tricky_;
  std::unique_ptr<gateway::Gateway> gateway_;
};

HelloRequest Named(const std::string& name) {
  HelloRequest request;
  request.set_name(name);
  return request;
}

// Reads a typed stream to its end.
template <typename Req, typename Resp>
asio::awaitable<std::pair<std::vector<std::string>, absl::Status>> Drain(
    sdk::ClientStream<Req, Resp>* stream) {
  std::vector<std::string> texts;
  while (true) {
    auto next = co_await stream->Read();
    if (!next.ok()) {
      co_return std::make_pair(texts, next.status());
    }
    if (!next->has_value()) {
      co_return std::make_pair(texts, absl::OkStatus());
    }
    texts.push_back((*next)->message());
  }
}

asio::awaitable<absl::StatusOr<NameCount>> Collect(Greeter::Client* client) {
  auto stream = client->CollectNames();
  if (!stream.ok()) {
    co_return stream.status();
  }
  for (const char* name : {"a", "b", "c"}) {
    if (absl::Status written = co_await stream->Write(Named(name)); !written.ok()) {
      co_return written;
    }
  }
  co_return co_await stream->Finish();
}

asio::awaitable<std::vector<std::string>> Converse(Greeter::Client* client) {
  std::vector<std::string> heard;
  auto stream = client->Chat();
  if (!stream.ok()) {
    co_return heard;
  }
  for (const char* name : {"x", "y"}) {
    (void)co_await stream->Write(Named(name));
    auto answer = co_await stream->Read();
    if (answer.ok() && answer->has_value()) {
      heard.push_back((*answer)->message());
    }
  }
  (void)stream->CloseSend();
  auto end = co_await stream->Read();
  heard.push_back(end.ok() && !end->has_value() ? "<end>" : "<error>");
  co_return heard;
}

TEST_F(TypedTest, EveryCallKindThroughTheGeneratedClient) {
  GreeterImpl impl;
  auto host = Host(pki_.client, "greeter");
  ASSERT_THAT(Greeter::Register(*host, impl), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  Greeter::Client client(channel);

  absl::StatusOr<HelloReply> reply = loop_.Run(client.SayHello(Named("Ada")));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->message(), "Hello, Ada (CN=frontend,O=Stella Tests)");
  EXPECT_THAT(loop_.Run(client.SayHello(Named(""))),
              StatusIs(absl::StatusCode::kInvalidArgument, "no name"));

  auto greetings = client.ListGreetings(Named("Bo"));
  ASSERT_THAT(greetings, IsOk());
  auto [texts, status] = loop_.Run(Drain(&*greetings));
  EXPECT_THAT(status, IsOk());
  EXPECT_THAT(texts, ElementsAre("Hello, Bo", "Bonjour, Bo"));

  absl::StatusOr<NameCount> count = loop_.Run(Collect(&client));
  ASSERT_THAT(count, IsOk());
  EXPECT_EQ(count->count(), 3);
  EXPECT_EQ(count->names(), "abc");

  EXPECT_THAT(loop_.Run(Converse(&client)), ElementsAre("hi x", "hi y", "<end>"));

  // The schema travelled in HELLO: the gateway serves it per service.
  std::optional<std::string> schema = gateway::SchemaOf(*gateway_->routes().Snapshot(), "greeter");
  ASSERT_TRUE(schema.has_value());
  google::protobuf::FileDescriptorSet set;
  ASSERT_TRUE(set.ParseFromString(*schema));
  EXPECT_EQ(set.file(set.file_size() - 1).name(), "greeter.proto");
  host->Shutdown();
}

TEST_F(TypedTest, BlockingClientFromAnotherThread) {
  GreeterImpl impl;
  auto host = Host(pki_.client, "greeter");
  ASSERT_THAT(Greeter::Register(*host, impl), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  Greeter::BlockingClient blocking(channel);

  // Called on the io thread itself it would deadlock: it refuses instead.
  std::promise<absl::Status> on_io;
  asio::post(loop_.io(), [&] { on_io.set_value(blocking.SayHello(Named("x")).status()); });
  loop_.PumpUntil([&] { return false; }, std::chrono::milliseconds(50));
  EXPECT_THAT(on_io.get_future().get(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("would deadlock")));

  // From another thread while the io thread runs: works.
  std::atomic<bool> done{false};
  absl::StatusOr<HelloReply> reply;
  std::thread worker([&] {
    reply = blocking.SayHello(Named("Cy"));
    done = true;
  });
  loop_.PumpUntil([&] { return done.load(); });
  worker.join();
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->message(), "Hello, Cy (CN=frontend,O=Stella Tests)");
  host->Shutdown();
}

asio::awaitable<std::vector<std::string>> Echoes(nested::Tricky::Client* client) {
  std::vector<std::string> heard;
  auto stream = client->delete_();
  if (!stream.ok()) {
    co_return heard;
  }
  nested::Outer_Inner inner;
  inner.set_text("kept");
  (void)co_await stream->Write(inner);
  (void)stream->CloseSend();
  while (true) {
    auto next = co_await stream->Read();
    if (!next.ok() || !next->has_value()) {
      co_return heard;
    }
    heard.push_back((*next)->text());
  }
}

TEST_F(TypedTest, NamesThatCollideWithGeneratedOnesStillWork) {
  const std::vector<router::v1::Endpoint> endpoints = nested::Tricky::Endpoints();
  ASSERT_EQ(endpoints.size(), 7u);
  EXPECT_EQ(endpoints[0].method(), "stella.test.deep.nested.v1.Tricky/Context");
  EXPECT_EQ(endpoints[0].request_type(), "stella.test.deep.nested.v1.Outer.Inner");
  EXPECT_EQ(endpoints[0].response_type(), "stella.test.common.Payload");
  EXPECT_EQ(endpoints[1].default_timeout_ms(), 1500u);
  EXPECT_EQ(endpoints[2].kind(), router::v1::CALL_KIND_CLIENT_STREAMING);
  EXPECT_EQ(endpoints[3].kind(), router::v1::CALL_KIND_SERVER_STREAMING);
  EXPECT_EQ(endpoints[4].kind(), router::v1::CALL_KIND_BIDI_STREAMING);
  google::protobuf::FileDescriptorSet set;
  ASSERT_TRUE(set.ParseFromString(std::string(nested::Tricky::FileDescriptorSet())));
  std::vector<std::string> files;
  for (const auto& file : set.file()) {
    files.push_back(file.name());
  }
  EXPECT_THAT(files, ::testing::Contains("stella/test/common.proto"));
  EXPECT_EQ(files.back(), "stella/test/collisions.proto");  // imports come first

  TrickyImpl impl;
  auto host = Host(tricky_, "tricky");
  ASSERT_THAT(nested::Tricky::Register(*host, impl), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  nested::Tricky::Client client(channel);
  nested::Outer_Inner inner;
  inner.set_text("payload");
  absl::StatusOr<common::Payload> payload = loop_.Run(client.Context(inner));
  ASSERT_THAT(payload, IsOk());
  EXPECT_EQ(payload->delete_(), "payload");
  absl::StatusOr<nested::Outer_Inner> back = loop_.Run(client.Handler(*payload));
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->text(), "payload");
  EXPECT_THAT(loop_.Run(Echoes(&client)), ElementsAre("kept"));
  host->Shutdown();
}

}  // namespace
}  // namespace stella::codegen
