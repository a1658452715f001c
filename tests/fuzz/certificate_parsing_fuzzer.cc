// libFuzzer target for what the runtime parses out of certificate files an operator points it
// at: PEM certificate chains, CRLs (PEM or DER), and whole credential files — PEM with an
// (optionally encrypted) key, or PKCS#12 — through LoadCredentials. Every input must end in a
// result or an error with a message, never a crash or a leak; a success must hold what it
// promises (a non-empty chain, a key, a readable identity).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/x509.h"

namespace {

namespace tls = stella::runtime::tls;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// The credential loader reads files: one per process, rewritten for each input.
const std::string& ScratchFile() {
  static const std::string path = [] {
    char name[] = "/tmp/stella-fuzz-credentials.XXXXXX";
    const int fd = mkstemp(name);
    Check(fd >= 0, "a scratch file can be made");
    close(fd);
    return std::string(name);
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);

  auto certs = tls::ParsePemCertificates(text, "fuzz.pem");
  if (certs.ok()) {
    Check(!certs->empty(), "a parsed chain is not empty");
    for (const auto& cert : *certs) {
      Check(cert != nullptr, "every parsed certificate exists");
      (void)tls::IdentityOf(cert.get()).DescribeNames();
    }
  } else {
    Check(!certs.status().message().empty(), "a refused chain says why");
  }

  auto crls = tls::ParseCrls(text, "fuzz.crl");
  if (crls.ok()) {
    Check(!crls->empty(), "a parsed CRL list is not empty");
  } else {
    Check(!crls.status().message().empty(), "a refused CRL says why");
  }

  FILE* file = std::fopen(ScratchFile().c_str(), "wb");
  Check(file != nullptr, "the scratch file opens");
  Check(std::fwrite(data, 1, size, file) == size, "the scratch file takes the input");
  std::fclose(file);
  tls::CredentialSource source;
  source.certificate_path = ScratchFile();
  source.password = "fuzz";
  auto creds = tls::LoadCredentials(source, tls::CertificateUsage::kClient, absl::Now());
  if (creds.ok()) {
    Check(!creds->chain.empty() && creds->key != nullptr, "loaded credentials are whole");
  } else {
    Check(!creds.status().message().empty(), "refused credentials say why");
  }
  return 0;
}
