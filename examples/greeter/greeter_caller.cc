// The greeter caller: makes one call of each kind through the gateway and prints the answers and
// which instance served each.
//   greeter-caller --config caller.yaml [--region us] [--name Ada]
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "greeter.stella.h"
#include "service_sdk/service_config.h"

ABSL_FLAG(std::string, config, "caller.yaml", "The caller's YAML file (a TlsClient section).");
ABSL_FLAG(std::string, region, "", "Overrides the file's TlsClient.Region (calls prefer it).");
ABSL_FLAG(std::string, name, "Ada", "Whom to greet.");

namespace {

namespace asio = boost::asio;
using greeter::v1::Greeter;
using greeter::v1::HelloReply;
using greeter::v1::HelloRequest;

HelloRequest Request(const std::string& name) {
  HelloRequest request;
  request.set_name(name);
  return request;
}

void Print(const std::string& what, const std::string& answer, const std::string& served_by) {
  std::printf("  %-14s %s  [served by %s]\n", what.c_str(), answer.c_str(), served_by.c_str());
}

// The three streaming kinds, as coroutines on the channel's io thread.
asio::awaitable<absl::Status> Streams(Greeter::Client* client, std::string name) {
  // Server streaming.
  auto greetings = client->ListGreetings(Request(name));
  if (!greetings.ok()) {
    co_return greetings.status();
  }
  std::vector<std::string> lines;
  std::string served_by;
  while (true) {
    absl::StatusOr<std::optional<HelloReply>> next = co_await greetings->Read();
    if (!next.ok()) {
      co_return next.status();
    }
    if (!next->has_value()) {
      break;
    }
    lines.push_back((*next)->message());
    served_by = (*next)->served_by();
  }
  Print("ListGreetings", absl::StrJoin(lines, " | "), served_by);

  // Client streaming.
  auto names = client->CollectNames();
  if (!names.ok()) {
    co_return names.status();
  }
  for (const char* other : {"Grace", "Linus", "Barbara"}) {
    if (absl::Status written = co_await names->Write(Request(other)); !written.ok()) {
      co_return written;
    }
  }
  absl::StatusOr<greeter::v1::NameCount> count = co_await names->Finish();
  if (!count.ok()) {
    co_return count.status();
  }
  Print("CollectNames", absl::StrCat(count->count(), " names: ", count->names()),
        count->served_by());

  // Bidirectional.
  auto chat = client->Chat();
  if (!chat.ok()) {
    co_return chat.status();
  }
  for (const char* other : {"Ken", "Dennis"}) {
    if (absl::Status written = co_await chat->Write(Request(other)); !written.ok()) {
      co_return written;
    }
    absl::StatusOr<std::optional<HelloReply>> answer = co_await chat->Read();
    if (!answer.ok()) {
      co_return answer.status();
    }
    if (answer->has_value()) {
      Print("Chat", (*answer)->message(), (*answer)->served_by());
    }
  }
  if (absl::Status closed = chat->CloseSend(); !closed.ok()) {
    co_return closed;
  }
  absl::StatusOr<std::optional<HelloReply>> end = co_await chat->Read();
  co_return end.ok() ? absl::OkStatus() : end.status();
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "greeter-caller: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto setup = stella::sdk::LoadChannelConfig(absl::GetFlag(FLAGS_config), "greeter-caller");
  if (!setup.ok()) {
    return Fail("configuration", setup.status());
  }
  if (!absl::GetFlag(FLAGS_region).empty()) {
    setup->options.region = absl::GetFlag(FLAGS_region);
  }
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  auto finish = [&](int code) {
    work.reset();
    io.stop();
    io_thread.join();
    return code;
  };

  absl::StatusOr<std::shared_ptr<stella::sdk::Channel>> channel =
      asio::co_spawn(io, stella::sdk::Channel::Connect(io.get_executor(), setup->options),
                     asio::use_future)
          .get();
  if (!channel.ok()) {
    return finish(Fail("connect", channel.status()));
  }
  std::printf("caller in region \"%s\", connected to gateway %s\n", setup->options.region.c_str(),
              (*channel)->gateway().c_str());

  // Unary, from this (non-io) thread with the blocking client.
  Greeter::BlockingClient blocking(*channel);
  absl::StatusOr<HelloReply> hello = blocking.SayHello(Request(absl::GetFlag(FLAGS_name)));
  if (!hello.ok()) {
    return finish(Fail("SayHello", hello.status()));
  }
  Print("SayHello", hello->message(), hello->served_by());
  // An error comes back as the handler's status.
  absl::StatusOr<HelloReply> nobody = blocking.SayHello(Request(""));
  Print("SayHello(\"\")", nobody.status().ToString(), "-");

  Greeter::Client client(*channel);
  absl::Status streams =
      asio::co_spawn(io, Streams(&client, absl::GetFlag(FLAGS_name)), asio::use_future).get();
  if (!streams.ok()) {
    return finish(Fail("streams", streams));
  }
  asio::post(io, [channel = *channel] { channel->Close(); });
  return finish(0);
}
