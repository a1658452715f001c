// The stella-gateway executable: --check-config, and a real process that serves /healthz and
// exits 0 on SIGTERM.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/loopback.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

extern char** environ;

namespace stella::gateway {
namespace {

using ::stella::testing::FreeLoopbackPort;
using ::stella::testing::RunCommand;
using ::stella::testing::TempDir;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;

const std::string kBinary = std::string(STELLA_BINARY_DIR) + "/stella-gateway";

// A free loopback port (bound and released; good enough on a test machine's loopback).
class GatewayBinaryTest : public ::testing::Test {
 protected:
  std::string WriteConfig(std::uint16_t service_port, std::uint16_t admin_port,
                          const std::string& extra = "") {
    const std::string cert = dir_.Write("gw.pem", TestPki::Pem(pki_.server));
    const std::string key = dir_.Write("gw.key", TestPki::KeyPem(pki_.server));
    const std::string ca = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    return dir_.Write("gateway.yaml",
                      "TlsTransport:\n"
                      "  ListenAddress: 127.0.0.1\n"
                      "  Port: " +
                          std::to_string(service_port) +
                          "\n"
                          "  CertificatePath: " +
                          cert +
                          "\n"
                          "  CertificateKeyPath: " +
                          key +
                          "\n"
                          "  ClientCaCertificatePath: " +
                          ca + "\n" + extra +
                          "Admin:\n"
                          "  Port: " +
                          std::to_string(admin_port) +
                          "\n"
                          "Limits:\n"
                          "  DrainTimeoutSeconds: 2\n");
  }

  TestPki pki_;
  TempDir dir_;
};

TEST_F(GatewayBinaryTest, CheckConfigAcceptsAGoodFile) {
  const std::string config = WriteConfig(9601, 9603);
  auto [code, output] = RunCommand(kBinary + " --check-config --config " + config);
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("configuration OK; service listener 127.0.0.1:9601 serves "
                                "subject \"CN=gateway.internal,O=Stella Tests\""));
}

TEST_F(GatewayBinaryTest, CheckConfigNamesTheMistake) {
  const std::string config = WriteConfig(9601, 9603, "  RequireClientCertificat: true\n");
  auto [code, output] = RunCommand(kBinary + " --check-config --config " + config);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(output, HasSubstr("gateway.yaml:7: TlsTransport.RequireClientCertificat: unknown "
                                "key; did you mean RequireClientCertificate?"));
}

TEST_F(GatewayBinaryTest, CheckConfigLoadsTheCertificates) {
  const std::string config = WriteConfig(9601, 9603);
  dir_.Write("gw.key", TestPki::KeyPem(pki_.client));  // a key of another certificate
  auto [code, output] = RunCommand(kBinary + " --check-config --config " + config);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(output, HasSubstr("the private key does not match the certificate"));
}

TEST_F(GatewayBinaryTest, ServesHealthAndExitsZeroOnSigterm) {
  const std::uint16_t admin_port = FreeLoopbackPort();
  const std::string config = WriteConfig(FreeLoopbackPort(), admin_port);
  pid_t pid = 0;
  std::string config_arg = config;
  char* argv[] = {const_cast<char*>(kBinary.c_str()), const_cast<char*>("--config"),
                  config_arg.data(), nullptr};
  ASSERT_EQ(posix_spawn(&pid, kBinary.c_str(), nullptr, nullptr, argv, environ), 0);

  // Poll /healthz until it answers (bounded: 100 tries, 50 ms apart).
  std::string health;
  for (int attempt = 0; attempt < 100 && health.find("200 OK") == std::string::npos; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), admin_port}, ec);
    if (ec) {
      continue;
    }
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    boost::asio::write(socket, boost::asio::buffer(request), ec);
    health.clear();
    boost::asio::read(socket, boost::asio::dynamic_buffer(health), ec);
  }
  EXPECT_THAT(health, HasSubstr("200 OK"));

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t done = 0;
  for (int attempt = 0; attempt < 200 && done == 0; ++attempt) {  // at most 10 s
    done = waitpid(pid, &status, WNOHANG);
    if (done == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "stella-gateway did not exit within 10 s of SIGTERM";
  }
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace stella::gateway
