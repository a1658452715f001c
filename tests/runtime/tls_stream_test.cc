// TlsStream over real loopback TCP: large writes arrive intact, a TLS 1.3 KeyUpdate the peer
// requests is honoured, close_notify and a bare TCP close are told apart.
#include "runtime/tls_stream.h"

#include <openssl/ssl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/loopback.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::runtime {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using testing::TempDir;
using testing::TestLoop;
using testing::TestPki;

// Reads until `want` plaintext bytes have arrived or the stream fails.
asio::awaitable<error_code> ReadExactly(TlsStream* stream, std::size_t want, std::string* out) {
  std::vector<std::uint8_t> chunk(std::size_t{16} * 1024);
  while (out->size() < want) {
    std::size_t n = 0;
    error_code ec = stream->ReadNow(chunk, &n);
    if (ec == asio::error::would_block) {
      if (stream->HasPendingOutput()) {
        if (error_code flushed = co_await stream->Flush(); flushed) {
          co_return flushed;
        }
      }
      if (error_code waited = co_await stream->WaitReadable(); waited) {
        co_return waited;
      }
      continue;
    }
    if (ec) {
      co_return ec;
    }
    out->append(reinterpret_cast<const char*>(chunk.data()), n);
  }
  co_return error_code{};
}

asio::awaitable<error_code> WriteString(TlsStream* stream, std::string data) {
  co_return co_await stream->Write(
      std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}

// Reads until the stream ends; returns how it ended.
asio::awaitable<error_code> ReadToEnd(TlsStream* stream) {
  std::string ignored;
  co_return co_await ReadExactly(stream, std::size_t{1} << 40, &ignored);
}

class TlsStreamTest : public ::testing::Test {
 protected:
  TlsStreamTest()
      : server_tls_(pki_.Context(pki_.server, tls::TlsRole::kServer, dir_)),
        client_tls_(pki_.Context(pki_.client, tls::TlsRole::kClient, dir_)) {
    tcp::acceptor acceptor(loop_.io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    tcp::socket client_socket(loop_.io());
    client_socket.connect(acceptor.local_endpoint());
    tcp::socket server_socket = acceptor.accept();
    server_ = std::make_unique<TlsStream>(std::move(server_socket), server_tls_->native_handle());
    client_ = std::make_unique<TlsStream>(std::move(client_socket), client_tls_->native_handle());
  }

  // Runs both handshakes against each other; true if both succeed.
  bool Handshake() {
    tls::HandshakeDiagnostics server_diag;
    tls::HandshakeDiagnostics client_diag;
    EXPECT_TRUE(server_tls_->PrepareSsl(server_->native_handle(), &server_diag).ok());
    EXPECT_TRUE(client_tls_->PrepareSsl(client_->native_handle(), &client_diag).ok());
    std::optional<error_code> server_done;
    loop_.Spawn(server_->Handshake(TlsStream::Role::kServer), &server_done);
    error_code client_done = loop_.Run(client_->Handshake(TlsStream::Role::kClient));
    EXPECT_TRUE(loop_.PumpUntil([&] { return server_done.has_value(); }));
    EXPECT_FALSE(client_done) << client_done.message();
    EXPECT_FALSE(server_done.value_or(asio::error::timed_out))
        << server_done.value_or(asio::error::timed_out).message();
    return !client_done && server_done.has_value() && !*server_done;
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  std::shared_ptr<const tls::TlsContext> server_tls_;
  std::shared_ptr<const tls::TlsContext> client_tls_;
  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<TlsStream> client_;
};

TEST_F(TlsStreamTest, LargeWritesArriveIntactInOrder) {
  ASSERT_TRUE(Handshake());
  // 5 MiB of a pattern that no record boundary or batch boundary lines up with.
  std::string sent(5 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < sent.size(); ++i) {
    sent[i] = static_cast<char>((i * 131 + i / 7919) & 0xff);
  }
  std::string received;
  std::optional<error_code> read;
  loop_.Spawn(ReadExactly(server_.get(), sent.size() + 5, &received), &read);
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), sent)));
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), "tail!")));
  ASSERT_TRUE(loop_.PumpUntil([&] { return read.has_value(); }));
  EXPECT_FALSE(*read) << read->message();
  ASSERT_EQ(received.size(), sent.size() + 5);
  EXPECT_TRUE(received.compare(0, sent.size(), sent) == 0);
  EXPECT_EQ(received.substr(sent.size()), "tail!");
}

TEST_F(TlsStreamTest, KeyUpdateRequestedByThePeerIsAnsweredByTheReader) {
  ASSERT_TRUE(Handshake());
  ASSERT_EQ(SSL_version(client_->native_handle()), TLS1_3_VERSION);
  ASSERT_EQ(SSL_key_update(client_->native_handle(), SSL_KEY_UPDATE_REQUESTED), 1);
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), "ping")));

  // The server's read consumes the KeyUpdate and owes one of its own: BoringSSL queues it and
  // sends it before its next application data (or whatever output reading produced is flushed).
  std::string at_server;
  EXPECT_FALSE(loop_.Run(ReadExactly(server_.get(), 4, &at_server)));
  EXPECT_EQ(at_server, "ping");
  if (server_->HasPendingOutput()) {
    EXPECT_FALSE(loop_.Run(server_->Flush()));
  }
  EXPECT_FALSE(server_->HasPendingOutput());

  // Traffic continues both ways after the key change (the client now sends under new keys, and
  // reads the server's answer and "pong" in order).
  EXPECT_FALSE(loop_.Run(WriteString(server_.get(), "pong")));
  std::string at_client;
  EXPECT_FALSE(loop_.Run(ReadExactly(client_.get(), 4, &at_client)));
  EXPECT_EQ(at_client, "pong");
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), "again")));
  at_server.clear();
  EXPECT_FALSE(loop_.Run(ReadExactly(server_.get(), 5, &at_server)));
  EXPECT_EQ(at_server, "again");
}

TEST_F(TlsStreamTest, CloseNotifyIsEofAndABareTcpCloseIsTruncation) {
  ASSERT_TRUE(Handshake());
  std::optional<error_code> server_end;
  loop_.Spawn(ReadToEnd(server_.get()), &server_end);
  std::optional<error_code> client_shutdown;
  loop_.Spawn(client_->Shutdown(), &client_shutdown);
  ASSERT_TRUE(loop_.PumpUntil([&] { return server_end.has_value(); }));
  EXPECT_EQ(*server_end, asio::error::eof);
  // The server answers with its close_notify, which completes the client's shutdown.
  EXPECT_FALSE(loop_.Run(server_->Shutdown()));
  ASSERT_TRUE(loop_.PumpUntil([&] { return client_shutdown.has_value(); }));
  EXPECT_FALSE(*client_shutdown) << client_shutdown->message();
}

TEST_F(TlsStreamTest, PeerClosingTcpWithoutCloseNotifyIsTruncation) {
  ASSERT_TRUE(Handshake());
  std::optional<error_code> server_end;
  loop_.Spawn(ReadToEnd(server_.get()), &server_end);
  loop_.Poll();
  client_->socket().close();
  ASSERT_TRUE(loop_.PumpUntil([&] { return server_end.has_value(); }));
  EXPECT_EQ(*server_end, asio::ssl::error::stream_truncated);
}

TEST_F(TlsStreamTest, IdleStreamsReleaseTheirBuffersAndStillWork) {
  ASSERT_TRUE(Handshake());
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), std::string(std::size_t{300} * 1024, 'a'))));
  std::string received;
  EXPECT_FALSE(loop_.Run(ReadExactly(server_.get(), std::size_t{300} * 1024, &received)));
  server_->ReleaseIdleMemory();
  client_->ReleaseIdleMemory();
  // Released buffers come back on demand.
  received.clear();
  EXPECT_FALSE(loop_.Run(WriteString(client_.get(), "after idle")));
  EXPECT_FALSE(loop_.Run(ReadExactly(server_.get(), 10, &received)));
  EXPECT_EQ(received, "after idle");
}

}  // namespace
}  // namespace stella::runtime
