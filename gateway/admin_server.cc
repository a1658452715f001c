#include "gateway/admin_server.h"

#include <fcntl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/identity_rules.h"
#include "runtime/async.h"
#include "spdlog/spdlog.h"

namespace stella::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Bounds on one admin request: it is small, and it must not hold a connection open forever.
constexpr auto kRequestTimeout = std::chrono::seconds(10);
constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace

std::string RoutesJson(const RoutingSnapshot& snapshot) {
  std::string out = "{\"version\":" + std::to_string(snapshot.version) + ",\"instances\":[";
  bool first = true;
  for (const auto& instance : snapshot.instances) {
    absl::StrAppend(&out, first ? "" : ",", "{\"service\":", JsonString(instance->service_name),
                    ",\"instance\":", JsonString(instance->instance_id),
                    ",\"region\":", JsonString(instance->region),
                    ",\"version\":", JsonString(instance->version),
                    ",\"identity\":", JsonString(IdentityName(instance->identity)),
                    ",\"outstanding\":", instance->outstanding.load(),
                    ",\"draining\":", instance->draining.load() ? "true" : "false",
                    ",\"healthy\":", instance->healthy.load() ? "true" : "false",
                    ",\"schema_bytes\":", instance->file_descriptor_set.size(), ",\"endpoints\":[");
    bool first_endpoint = true;
    for (const auto& endpoint : instance->endpoints) {
      absl::StrAppend(&out, first_endpoint ? "" : ",",
                      "{\"method\":", JsonString(endpoint.method()),
                      ",\"kind\":", JsonString(router::v1::CallKind_Name(endpoint.kind())), "}");
      first_endpoint = false;
    }
    out += "]}";
    first = false;
  }
  return out + "]}";
}

struct AdminServer::State {
  State(asio::io_context& io, AdminSources sources_in)
      : acceptor(io), sources(std::move(sources_in)) {}
  tcp::acceptor acceptor;
  AdminSources sources;
};

std::optional<std::string> SchemaOf(const RoutingSnapshot& snapshot, const std::string& service) {
  for (const auto& instance : snapshot.instances) {
    if (instance->service_name == service && !instance->file_descriptor_set.empty()) {
      return instance->file_descriptor_set;
    }
  }
  return std::nullopt;
}

namespace {

http::response<http::string_body> Answer(const AdminServer::State& state,
                                         const http::request<http::string_body>& request) {
  http::response<http::string_body> response;
  response.version(request.version());
  response.keep_alive(false);
  response.set(http::field::server, "stella-gateway");
  auto reply = [&](http::status status, const char* type, std::string body) {
    response.result(status);
    response.set(http::field::content_type, type);
    response.body() = std::move(body);
  };
  const std::string target(request.target());
  if (request.method() != http::verb::get) {
    reply(http::status::method_not_allowed, "text/plain", "only GET is served here\n");
  } else if (target == "/healthz") {
    reply(http::status::ok, "text/plain", "ok\n");
  } else if (target == "/readyz") {
    absl::Status ready = state.sources.ready ? state.sources.ready() : absl::OkStatus();
    if (ready.ok()) {
      reply(http::status::ok, "text/plain", "ready\n");
    } else {
      reply(http::status::service_unavailable, "text/plain",
            absl::StrCat("not ready: ", ready.message(), "\n"));
    }
  } else if (target == "/metrics") {
    reply(http::status::ok, "text/plain; version=0.0.4",
          state.sources.metrics ? state.sources.metrics() : std::string());
  } else if (target == "/routes") {
    reply(http::status::ok, "application/json",
          state.sources.routes ? state.sources.routes() : std::string("{}"));
  } else if (absl::StartsWith(target, "/schema/")) {
    const std::string service = target.substr(std::string("/schema/").size());
    std::optional<std::string> schema =
        state.sources.schema ? state.sources.schema(service) : std::nullopt;
    if (schema.has_value()) {
      reply(http::status::ok, "application/x-protobuf", *std::move(schema));
    } else {
      reply(http::status::not_found, "text/plain",
            absl::StrCat("no registered instance of service \"", service, "\" sent a schema\n"));
    }
  } else {
    reply(http::status::not_found, "text/plain",
          "not found; try /healthz, /readyz, /metrics, /routes or /schema/<service>\n");
  }
  response.prepare_payload();
  return response;
}

asio::awaitable<void> Serve(std::shared_ptr<AdminServer::State> state, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(kRequestTimeout);
  beast::flat_buffer buffer;
  http::request_parser<http::string_body> parser;
  parser.header_limit(kMaxHeaderBytes);
  parser.body_limit(kMaxHeaderBytes);
  beast::error_code ec;
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return;
  }
  http::response<http::string_body> response = Answer(*state, parser.get());
  co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<AdminServer::State> state) {
  while (state->acceptor.is_open()) {
    beast::error_code ec;
    tcp::socket socket =
        co_await state->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!state->acceptor.is_open() || ec == asio::error::operation_aborted) {
        co_return;
      }
      continue;
    }
    asio::co_spawn(state->acceptor.get_executor(), Serve(state, std::move(socket)),
                   runtime::LogCoroutineFailure("admin request"));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(asio::io_context& io,
                                                                const AdminConfig& config,
                                                                AdminSources sources) {
  auto state = std::make_shared<State>(io, std::move(sources));
  beast::error_code ec;
  const auto address = asio::ip::make_address(config.listen_address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("Admin.ListenAddress \"", config.listen_address, "\" is not an IP address"));
  }
  const tcp::endpoint endpoint(address, config.port);
  state->acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    // Not inherited by a process this one starts: a child holding the listener would keep the
    // port bound after this process is gone.
    ::fcntl(state->acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
    state->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    state->acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    state->acceptor.listen(64, ec);
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen for admin HTTP on ",
                                               config.listen_address, ":", config.port, ": ",
                                               ec.message()));
  }
  asio::co_spawn(io, AcceptLoop(state), runtime::LogCoroutineFailure("admin listener"));
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(state)));
}

AdminServer::~AdminServer() {
  beast::error_code ignored;
  state_->acceptor.close(ignored);
}

std::uint16_t AdminServer::port() const {
  beast::error_code ec;
  return state_->acceptor.local_endpoint(ec).port();
}

}  // namespace stella::gateway
