#include "runtime/tls/credentials.h"

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace stella::runtime::tls {
namespace {

namespace fs = std::filesystem;

bool IsPem(absl::string_view text) { return absl::StrContains(text, "-----BEGIN"); }

bool IsWrongPassword(const std::vector<uint32_t>& errors) {
  // Depending on the format, a wrong password shows up as a failed PKCS#12 MAC or PKCS#8
  // decryption, or as bad padding after decryption.
  return HasSslError(errors, ERR_LIB_PKCS8, PKCS8_R_INCORRECT_PASSWORD) ||
         HasSslError(errors, ERR_LIB_CIPHER, CIPHER_R_BAD_DECRYPT) ||
         HasSslError(errors, ERR_LIB_PEM, PEM_R_BAD_DECRYPT) ||
         HasSslError(errors, ERR_LIB_PEM, PEM_R_BAD_PASSWORD_READ);
}

// Hands the configured password to BoringSSL's PEM reader. `userdata` is the std::string.
int PasswordCallback(char* buf, int size, int /*rwflag*/, void* userdata) {
  const auto* password = static_cast<const std::string*>(userdata);
  if (password == nullptr || password->empty() || password->size() > static_cast<size_t>(size)) {
    return 0;
  }
  // BoringSSL takes the length from the return value; the buffer needs no terminator.
  // NOLINTNEXTLINE(bugprone-not-null-terminated-result)
  std::memcpy(buf, password->data(), password->size());
  return static_cast<int>(password->size());
}

// Reads the private key from PEM `text` (from `where`, e.g. "CertificateKeyPath=/x.key").
absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParsePemKey(absl::string_view text,
                                                      const std::string& where,
                                                      const CredentialSource& source) {
  const bool encrypted = absl::StrContains(text, "ENCRYPTED");
  if (encrypted && source.password.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the private key in ", where,
                                                   " is encrypted, but ", source.password_setting,
                                                   " is empty: set it to the key's password"));
  }
  bssl::UniquePtr<BIO> bio(MemoryBio(text));
  if (bio == nullptr) {
    return SslError(absl::StatusCode::kInvalidArgument,
                    absl::StrCat(where, " is too large to be a private key"));
  }
  std::string password = source.password;
  bssl::UniquePtr<EVP_PKEY> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, PasswordCallback, &password));
  if (key != nullptr) {
    ERR_clear_error();
    return key;
  }
  const std::vector<uint32_t> errors = TakeSslErrors();
  if (encrypted && IsWrongPassword(errors)) {
    return absl::InvalidArgumentError(
        absl::StrCat("wrong password for the encrypted private key in ", where, ": check ",
                     source.password_setting));
  }
  return SslErrorFrom(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(where, " holds no readable PEM private key"), errors);
}

// The certificates of a PKCS#12 file, the leaf first.
absl::StatusOr<Credentials> ParsePkcs12(absl::string_view der, const std::string& where,
                                        const CredentialSource& source) {
  bssl::UniquePtr<STACK_OF(X509)> certs(sk_X509_new_null());
  EVP_PKEY* raw_key = nullptr;
  CBS cbs;
  CBS_init(&cbs, reinterpret_cast<const uint8_t*>(der.data()), der.size());
  if (!PKCS12_get_key_and_certs(&raw_key, certs.get(), &cbs, source.password.c_str())) {
    const std::vector<uint32_t> errors = TakeSslErrors();
    if (IsWrongPassword(errors)) {
      return absl::InvalidArgumentError(
          absl::StrCat("wrong password for the PKCS#12 file ", where, ": check ",
                       source.password_setting, source.password.empty() ? " (it is empty)" : ""));
    }
    return SslErrorFrom(absl::StatusCode::kInvalidArgument,
                        absl::StrCat(where, " is not a readable PKCS#12 file"), errors);
  }
  Credentials creds;
  creds.key.reset(raw_key);
  if (creds.key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("the PKCS#12 file ", where, " holds no private key"));
  }
  // The leaf is the certificate whose public key is the private key's.
  std::vector<bssl::UniquePtr<X509>> others;
  while (sk_X509_num(certs.get()) > 0) {
    bssl::UniquePtr<X509> cert(sk_X509_shift(certs.get()));
    if (creds.chain.empty() && X509_check_private_key(cert.get(), creds.key.get())) {
      creds.chain.push_back(std::move(cert));
    } else {
      others.push_back(std::move(cert));
    }
  }
  ERR_clear_error();
  if (creds.chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the PKCS#12 file ", where, " holds ", others.size(),
                     " certificate(s), but none of them matches its private key"));
  }
  for (auto& cert : others) {
    creds.chain.push_back(std::move(cert));
  }
  return creds;
}

// Loads from explicit paths: a PEM or PKCS#12 certificate file, and a PEM key (if separate).
absl::StatusOr<Credentials> LoadFromFiles(const std::string& cert_path, const std::string& key_path,
                                          const std::string& cert_where,
                                          const CredentialSource& source) {
  absl::StatusOr<std::string> cert_text = ReadFile(cert_path);
  if (!cert_text.ok()) {
    return absl::Status(cert_text.status().code(),
                        absl::StrCat(cert_where, ": ", cert_text.status().message()));
  }
  if (!IsPem(*cert_text)) {
    if (!key_path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cert_where, " is a PKCS#12 file, which holds its own key; leave ",
                       source.key_setting, " empty"));
    }
    return ParsePkcs12(*cert_text, cert_where, source);
  }
  Credentials creds;
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> chain =
      ParsePemCertificates(*cert_text, cert_where);
  if (!chain.ok()) {
    return chain.status();
  }
  creds.chain = *std::move(chain);
  if (key_path.empty()) {
    if (!absl::StrContains(*cert_text, "PRIVATE KEY-----")) {
      return absl::InvalidArgumentError(absl::StrCat(
          cert_where, " holds no private key and ", source.key_setting,
          " is not set: set it to the PEM key file, or append the key to the certificate file"));
    }
    absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = ParsePemKey(*cert_text, cert_where, source);
    if (!key.ok()) {
      return key.status();
    }
    creds.key = *std::move(key);
    return creds;
  }
  const std::string key_where = absl::StrCat(source.key_setting, "=", key_path);
  absl::StatusOr<std::string> key_text = ReadFile(key_path);
  if (!key_text.ok()) {
    return absl::Status(key_text.status().code(),
                        absl::StrCat(key_where, ": ", key_text.status().message()));
  }
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = ParsePemKey(*key_text, key_where, source);
  if (!key.ok()) {
    return key.status();
  }
  creds.key = *std::move(key);
  return creds;
}

bool HasCertificateExtension(const fs::path& path) {
  const std::string ext = absl::AsciiStrToLower(path.extension().string());
  return ext == ".pem" || ext == ".crt" || ext == ".cer" || ext == ".p12" || ext == ".pfx";
}

// Finds the file in the store whose leaf certificate has the thumbprint, and loads it.
absl::StatusOr<Credentials> LoadFromStore(const CredentialSource& source) {
  absl::StatusOr<std::string> wanted = NormalizeThumbprint(source.thumbprint);
  if (!wanted.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source.thumbprint_setting, ": ", wanted.status().message()));
  }
  const EVP_MD* md = wanted->size() == 40 ? EVP_sha1() : EVP_sha256();
  const char* md_name = wanted->size() == 40 ? "SHA-1" : "SHA-256";
  std::error_code ec;
  fs::directory_iterator it(source.store_path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot list ", source.store_setting, "=",
                                            source.store_path, ": ", ec.message()));
  }
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : it) {
    if (entry.is_regular_file(ec) && HasCertificateExtension(entry.path()) &&
        !absl::StartsWith(entry.path().filename().string(), ".")) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> skipped;
  for (const fs::path& file : files) {
    const std::string where = absl::StrCat(source.store_setting, " file ", file.string());
    std::string key_path;
    absl::StatusOr<std::string> text = ReadFile(file.string());
    if (!text.ok()) {
      skipped.push_back(absl::StrCat(file.filename().string(), " (", text.status().message(), ")"));
      continue;
    }
    X509* leaf = nullptr;
    absl::StatusOr<Credentials> p12;
    absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> pem;
    if (IsPem(*text)) {
      pem = ParsePemCertificates(*text, where);
      if (!pem.ok()) {
        skipped.push_back(absl::StrCat(file.filename().string(), " (not a certificate)"));
        continue;
      }
      leaf = pem->front().get();
    } else {
      p12 = ParsePkcs12(*text, where, source);
      if (!p12.ok()) {
        skipped.push_back(
            absl::StrCat(file.filename().string(), " (", p12.status().message(), ")"));
        continue;
      }
      leaf = p12->chain.front().get();
    }
    if (Thumbprint(leaf, md) != *wanted) {
      continue;
    }
    if (p12.ok() && !IsPem(*text)) {
      p12->origin = absl::StrCat(source.thumbprint_setting, "=", *wanted, " in ", file.string());
      return p12;
    }
    if (!absl::StrContains(*text, "PRIVATE KEY-----")) {
      fs::path sibling = file;
      sibling.replace_extension(".key");
      key_path = sibling.string();
    }
    absl::StatusOr<Credentials> creds = LoadFromFiles(file.string(), key_path, where, source);
    if (creds.ok()) {
      creds->origin = absl::StrCat(source.thumbprint_setting, "=", *wanted, " in ", file.string());
    }
    return creds;
  }
  std::string detail = absl::StrCat(files.size(), " certificate file(s) searched");
  if (!skipped.empty()) {
    absl::StrAppend(&detail, "; unreadable: ", absl::StrJoin(skipped, ", "));
  }
  return absl::NotFoundError(absl::StrCat(
      "no certificate with ", md_name, " thumbprint ", *wanted, " (", source.thumbprint_setting,
      ") in ", source.store_setting, "=", source.store_path, " (", detail, ")"));
}

const char* UsageName(CertificateUsage usage) {
  return usage == CertificateUsage::kServer ? "serverAuth" : "clientAuth";
}

std::string EkuList(X509* cert) {
  const uint32_t eku = X509_get_extended_key_usage(cert);
  std::vector<std::string> names;
  if (eku & XKU_SSL_SERVER) {
    names.emplace_back("serverAuth");
  }
  if (eku & XKU_SSL_CLIENT) {
    names.emplace_back("clientAuth");
  }
  if (eku & XKU_CODE_SIGN) {
    names.emplace_back("codeSigning");
  }
  if (eku & XKU_SMIME) {
    names.emplace_back("emailProtection");
  }
  return names.empty() ? "no TLS usage" : absl::StrJoin(names, ", ");
}

absl::Status CheckCredentials(Credentials& creds, CertificateUsage usage, absl::Time now) {
  X509* leaf = creds.chain.front().get();
  creds.leaf = IdentityOf(leaf);
  if (!X509_check_private_key(leaf, creds.key.get())) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "the private key does not match the certificate (", creds.leaf.Describe(), ") of ",
        creds.origin, ": the key and certificate files are from different pairs"));
  }
  if (now < creds.leaf.not_before) {
    return absl::FailedPreconditionError(
        absl::StrCat("the certificate of ", creds.origin, " is not valid until ",
                     FormatUtc(creds.leaf.not_before), " (it is now ", FormatUtc(now),
                     "): ", creds.leaf.Describe(), "; check the clock or the certificate's dates"));
  }
  if (now > creds.leaf.not_after) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the certificate of ", creds.origin, " expired at ", FormatUtc(creds.leaf.not_after),
        " (it is now ", FormatUtc(now), "): ", creds.leaf.Describe(), "; renew it"));
  }
  const uint32_t flags = X509_get_extension_flags(leaf);
  const uint32_t needed = usage == CertificateUsage::kServer ? XKU_SSL_SERVER : XKU_SSL_CLIENT;
  if ((flags & EXFLAG_XKUSAGE) != 0 && (X509_get_extended_key_usage(leaf) & needed) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the certificate of ", creds.origin,
        " cannot be used here: it needs the extended key "
        "usage ",
        UsageName(usage), " but lists ", EkuList(leaf), " (", creds.leaf.Describe(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Credentials> LoadCredentials(const CredentialSource& source, CertificateUsage usage,
                                            absl::Time now) {
  absl::StatusOr<Credentials> creds;
  if (!source.thumbprint.empty()) {
    if (source.store_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source.thumbprint_setting, " is set but ",
                                                     source.store_setting,
                                                     " is not: set the directory to search"));
    }
    creds = LoadFromStore(source);
  } else if (!source.certificate_path.empty()) {
    creds = LoadFromFiles(source.certificate_path, source.key_path,
                          absl::StrCat(source.certificate_setting, "=", source.certificate_path),
                          source);
    if (creds.ok()) {
      creds->origin = absl::StrCat(source.certificate_setting, "=", source.certificate_path);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("no certificate configured: set ",
                                                   source.certificate_setting, " or ",
                                                   source.thumbprint_setting));
  }
  if (!creds.ok()) {
    return creds.status();
  }
  if (absl::Status status = CheckCredentials(*creds, usage, now); !status.ok()) {
    return status;
  }
  return creds;
}

std::vector<std::string> CredentialFiles(const CredentialSource& source) {
  if (!source.thumbprint.empty()) {
    return {source.store_path};
  }
  std::vector<std::string> files;
  if (!source.certificate_path.empty()) {
    files.push_back(source.certificate_path);
  }
  if (!source.key_path.empty()) {
    files.push_back(source.key_path);
  }
  return files;
}

}  // namespace stella::runtime::tls
