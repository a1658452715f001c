// Reading YAML configuration files the way operators need: `${VAR}` / `${VAR:-default}` expanded
// from the environment, and every mistake — unknown key, wrong type, value out of range, unset
// variable — reported with the file, the line and the full key, plus the nearest valid key for a
// typo. yaml-cpp stays inside config.cc.
#ifndef STELLA_RUNTIME_CONFIG_H_
#define STELLA_RUNTIME_CONFIG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace stella::runtime {

// Looks up an environment variable; std::nullopt when unset. Tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment (getenv).
EnvLookup ProcessEnvironment();

// Expands `${VAR}` and `${VAR:-default}` in `text`. INVALID_ARGUMENT naming the variable when one
// is unset and has no default, or when a `${` is not closed.
absl::StatusOr<std::string> ExpandEnvironment(absl::string_view text, const EnvLookup& env);

// One YAML mapping of a configuration file, e.g. the `TlsTransport:` section. Reads record which
// keys the program knows, so that Finish() can name any other key as unknown.
class ConfigSection {
 public:
  // The dotted path of this section ("TlsTransport"; "" for the root) and "file:line" of it.
  const std::string& path() const { return path_; }

  bool Has(absl::string_view key);

  // Each Read leaves `*out` unchanged when the key is absent, and fails with INVALID_ARGUMENT
  // naming file, line and key when the value has the wrong type or is out of range.
  absl::Status Read(absl::string_view key, std::string* out);
  absl::Status Read(absl::string_view key, bool* out);
  absl::Status Read(absl::string_view key, std::int64_t min, std::int64_t max, std::int64_t* out);
  // A list of strings: a YAML sequence, or one string of comma-separated items.
  absl::Status Read(absl::string_view key, std::vector<std::string>* out);

  // Convenience for integers of other widths, with their range checked.
  template <typename Int>
  absl::Status ReadInt(absl::string_view key, std::int64_t min, std::int64_t max, Int* out) {
    std::int64_t value = static_cast<std::int64_t>(*out);
    absl::Status status = Read(key, min, max, &value);
    if (status.ok()) {
      *out = static_cast<Int>(value);
    }
    return status;
  }

  // A nested mapping; std::nullopt when absent; INVALID_ARGUMENT when not a mapping.
  absl::StatusOr<std::optional<ConfigSection>> Section(absl::string_view key);
  // The keys present in this mapping, in file order (for sections whose keys are names, such as
  // a map from service name to identities).
  std::vector<std::string> Keys() const;

  // "gateway.yaml:12: TlsTransport.Port" — for messages about a value that parsed but is wrong.
  std::string Where(absl::string_view key) const;
  // An INVALID_ARGUMENT error "<Where(key)>: <message>".
  absl::Status Error(absl::string_view key, absl::string_view message) const;

  // Fails if the section holds a key that no Read/Has/Section asked about, naming it and the
  // nearest known key ("did you mean CertificatePath?").
  absl::Status Finish() const;

  struct Node;  // opaque: the yaml-cpp node and what was read of it

 private:
  friend class ConfigFile;
  ConfigSection(std::shared_ptr<Node> node, std::string path, std::string file,
                std::shared_ptr<const EnvLookup> env);

  absl::StatusOr<std::optional<std::string>> Scalar(absl::string_view key);

  std::shared_ptr<Node> node_;
  std::string path_;
  std::string file_;
  std::shared_ptr<const EnvLookup> env_;
};

// A parsed configuration file.
class ConfigFile {
 public:
  // Reads and parses `path`. NOT_FOUND / INVALID_ARGUMENT (with line and column for YAML syntax
  // errors) naming the file.
  static absl::StatusOr<ConfigFile> Load(const std::string& path,
                                         EnvLookup env = ProcessEnvironment());
  // Parses `text`; `name` stands for the file in messages.
  static absl::StatusOr<ConfigFile> Parse(absl::string_view text, const std::string& name,
                                          EnvLookup env = ProcessEnvironment());

  // The top-level mapping.
  ConfigSection& root() { return root_; }
  const std::string& name() const { return name_; }

 private:
  ConfigFile(ConfigSection root, std::string name)
      : root_(std::move(root)), name_(std::move(name)) {}

  ConfigSection root_;
  std::string name_;
};

// Reads a duration given in whole units of `unit` (e.g. HeartbeatIntervalMs) within [min, max].
absl::Status ReadDuration(ConfigSection& section, absl::string_view key, absl::Duration unit,
                          std::int64_t min, std::int64_t max, absl::Duration* out);

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_CONFIG_H_
