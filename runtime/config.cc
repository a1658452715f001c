#include "runtime/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/tls/x509.h"

namespace stella::runtime {

struct ConfigSection::Node {
  YAML::Node yaml;
  std::set<std::string, std::less<>> known;  // keys the program asked about
  std::map<std::string, std::shared_ptr<Node>, std::less<>> children;
};

namespace {

// Levenshtein distance, for "did you mean".
std::size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      const bool same = absl::ascii_tolower(static_cast<unsigned char>(a[i - 1])) ==
                        absl::ascii_tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

int LineOf(const YAML::Node& node) { return node.Mark().line + 1; }

const char* TypeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing";
    default:
      return "a value";
  }
}

}  // namespace

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      return std::nullopt;
    }
    return std::string(value);
  };
}

absl::StatusOr<std::string> ExpandEnvironment(absl::string_view text, const EnvLookup& env) {
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t start = text.find("${", pos);
    if (start == absl::string_view::npos) {
      absl::StrAppend(&out, text.substr(pos));
      break;
    }
    absl::StrAppend(&out, text.substr(pos, start - pos));
    const std::size_t end = text.find('}', start);
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" has a \"${\" without a closing \"}\""));
    }
    absl::string_view inner = text.substr(start + 2, end - start - 2);
    std::optional<std::string> fallback;
    if (const std::size_t sep = inner.find(":-"); sep != absl::string_view::npos) {
      fallback = std::string(inner.substr(sep + 2));
      inner = inner.substr(0, sep);
    }
    const std::string name(inner);
    if (name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has an empty ${}"));
    }
    std::optional<std::string> value = env(name);
    if (!value.has_value() || (value->empty() && fallback.has_value())) {
      if (!fallback.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("environment variable ", name,
                                                       " is not set and has no default (write ${",
                                                       name, ":-default} to give one)"));
      }
      value = fallback;
    }
    out.append(*value);
    pos = end + 1;
  }
  return out;
}

ConfigSection::ConfigSection(std::shared_ptr<Node> node, std::string path, std::string file,
                             std::shared_ptr<const EnvLookup> env)
    : node_(std::move(node)),
      path_(std::move(path)),
      file_(std::move(file)),
      env_(std::move(env)) {}

bool ConfigSection::Has(absl::string_view key) {
  node_->known.emplace(key);
  return node_->yaml.IsMap() && std::as_const(node_->yaml)[std::string(key)].IsDefined();
}

std::string ConfigSection::Where(absl::string_view key) const {
  const std::string full = path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
  int line = LineOf(node_->yaml);
  if (node_->yaml.IsMap()) {
    for (const auto& entry : node_->yaml) {
      if (entry.first.Scalar() == key) {
        line = LineOf(entry.first);
        break;
      }
    }
  }
  return absl::StrCat(file_, ":", line, ": ", full);
}

absl::Status ConfigSection::Error(absl::string_view key, absl::string_view message) const {
  return absl::InvalidArgumentError(absl::StrCat(Where(key), ": ", message));
}

absl::StatusOr<std::optional<std::string>> ConfigSection::Scalar(absl::string_view key) {
  if (!Has(key)) {
    return std::nullopt;
  }
  const YAML::Node value = std::as_const(node_->yaml)[std::string(key)];
  if (value.IsNull()) {
    return std::nullopt;  // "Key:" with nothing after it means "not set"
  }
  if (!value.IsScalar()) {
    return Error(key, absl::StrCat("expected a single value, found ", TypeName(value)));
  }
  absl::StatusOr<std::string> expanded = ExpandEnvironment(value.Scalar(), *env_);
  if (!expanded.ok()) {
    return Error(key, expanded.status().message());
  }
  return *std::move(expanded);
}

absl::Status ConfigSection::Read(absl::string_view key, std::string* out) {
  absl::StatusOr<std::optional<std::string>> value = Scalar(key);
  if (!value.ok()) {
    return value.status();
  }
  if (value->has_value()) {
    *out = **value;
  }
  return absl::OkStatus();
}

absl::Status ConfigSection::Read(absl::string_view key, bool* out) {
  absl::StatusOr<std::optional<std::string>> value = Scalar(key);
  if (!value.ok() || !value->has_value()) {
    return value.status();
  }
  const std::string lower = absl::AsciiStrToLower(**value);
  if (lower == "true") {
    *out = true;
  } else if (lower == "false") {
    *out = false;
  } else {
    return Error(key, absl::StrCat("expected true or false, found \"", **value, "\""));
  }
  return absl::OkStatus();
}

absl::Status ConfigSection::Read(absl::string_view key, std::int64_t min, std::int64_t max,
                                 std::int64_t* out) {
  absl::StatusOr<std::optional<std::string>> value = Scalar(key);
  if (!value.ok() || !value->has_value()) {
    return value.status();
  }
  std::int64_t parsed = 0;
  if (!absl::SimpleAtoi(**value, &parsed)) {
    return Error(key, absl::StrCat("expected a whole number, found \"", **value, "\""));
  }
  if (parsed < min || parsed > max) {
    return Error(key,
                 absl::StrCat(parsed, " is out of range: it must be between ", min, " and ", max));
  }
  *out = parsed;
  return absl::OkStatus();
}

absl::Status ConfigSection::Read(absl::string_view key, std::vector<std::string>* out) {
  if (!Has(key)) {
    return absl::OkStatus();
  }
  const YAML::Node value = std::as_const(node_->yaml)[std::string(key)];
  if (value.IsNull()) {
    return absl::OkStatus();
  }
  std::vector<std::string> items;
  if (value.IsScalar()) {
    absl::StatusOr<std::optional<std::string>> text = Scalar(key);
    if (!text.ok()) {
      return text.status();
    }
    for (absl::string_view item : absl::StrSplit(**text, ',', absl::SkipWhitespace())) {
      items.emplace_back(absl::StripAsciiWhitespace(item));
    }
  } else if (value.IsSequence()) {
    for (const YAML::Node& item : value) {
      if (!item.IsScalar()) {
        return Error(key, absl::StrCat("expected a list of values, but item at line ", LineOf(item),
                                       " is ", TypeName(item)));
      }
      absl::StatusOr<std::string> expanded = ExpandEnvironment(item.Scalar(), *env_);
      if (!expanded.ok()) {
        return Error(key, expanded.status().message());
      }
      items.push_back(*std::move(expanded));
    }
  } else {
    return Error(key, absl::StrCat("expected a list, found ", TypeName(value)));
  }
  *out = std::move(items);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<ConfigSection>> ConfigSection::Section(absl::string_view key) {
  if (!Has(key)) {
    return std::nullopt;
  }
  const YAML::Node value = std::as_const(node_->yaml)[std::string(key)];
  if (value.IsNull()) {
    return std::nullopt;
  }
  if (!value.IsMap()) {
    return Error(key, absl::StrCat("expected a mapping of keys, found ", TypeName(value)));
  }
  std::shared_ptr<Node>& child = node_->children[std::string(key)];
  if (child == nullptr) {
    child = std::make_shared<Node>();
    child->yaml = value;
  }
  return ConfigSection(child, path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key),
                       file_, env_);
}

std::vector<std::string> ConfigSection::Keys() const {
  std::vector<std::string> keys;
  if (node_->yaml.IsMap()) {
    for (const auto& entry : node_->yaml) {
      keys.push_back(entry.first.Scalar());
    }
  }
  return keys;
}

absl::Status ConfigSection::Finish() const {
  if (!node_->yaml.IsMap()) {
    return absl::OkStatus();
  }
  for (const auto& entry : node_->yaml) {
    const std::string& key = entry.first.Scalar();
    if (node_->known.count(key) > 0) {
      continue;
    }
    std::string best;
    std::size_t best_distance = key.size();
    for (const std::string& candidate : node_->known) {
      const std::size_t d = EditDistance(key, candidate);
      if (d < best_distance) {
        best_distance = d;
        best = candidate;
      }
    }
    std::string message = "unknown key";
    if (!best.empty() && best_distance <= std::max<std::size_t>(2, key.size() / 3)) {
      absl::StrAppend(&message, "; did you mean ", best, "?");
    } else if (!node_->known.empty()) {
      absl::StrAppend(&message, "; valid keys here are ", absl::StrJoin(node_->known, ", "));
    }
    return Error(key, message);
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigFile> ConfigFile::Parse(absl::string_view text, const std::string& name,
                                             EnvLookup env) {
  auto node = std::make_shared<ConfigSection::Node>();
  try {
    node->yaml = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": not valid YAML: ", e.msg));
  }
  if (!node->yaml.IsMap() && !node->yaml.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected a mapping of sections at the top level, found ", TypeName(node->yaml)));
  }
  auto shared_env = std::make_shared<const EnvLookup>(std::move(env));
  return ConfigFile(ConfigSection(node, "", name, shared_env), name);
}

absl::StatusOr<ConfigFile> ConfigFile::Load(const std::string& path, EnvLookup env) {
  absl::StatusOr<std::string> text = tls::ReadFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("configuration file: ", text.status().message()));
  }
  return Parse(*text, path, std::move(env));
}

absl::Status ReadDuration(ConfigSection& section, absl::string_view key, absl::Duration unit,
                          std::int64_t min, std::int64_t max, absl::Duration* out) {
  std::int64_t count = *out / unit;
  absl::Status status = section.Read(key, min, max, &count);
  if (status.ok()) {
    *out = count * unit;
  }
  return status;
}

}  // namespace stella::runtime
