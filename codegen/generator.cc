#include "codegen/generator.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/compiler/code_generator.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/io/printer.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "stella/router/v1/options.pb.h"

namespace stella::codegen {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;
using google::protobuf::io::Printer;
using Vars = std::map<std::string, std::string>;

// C++ keywords (and the alternative tokens) that a proto name may spell.
const std::set<std::string>& CppKeywords() {
  static const auto* const kKeywords =
      new std::set<std::string>{"alignas",       "alignof",     "and",
                                "and_eq",        "asm",         "auto",
                                "bitand",        "bitor",       "bool",
                                "break",         "case",        "catch",
                                "char",          "char8_t",     "char16_t",
                                "char32_t",      "class",       "compl",
                                "concept",       "const",       "consteval",
                                "constexpr",     "constinit",   "const_cast",
                                "continue",      "co_await",    "co_return",
                                "co_yield",      "decltype",    "default",
                                "delete",        "do",          "double",
                                "dynamic_cast",  "else",        "enum",
                                "explicit",      "export",      "extern",
                                "false",         "float",       "for",
                                "friend",        "goto",        "if",
                                "inline",        "int",         "long",
                                "mutable",       "namespace",   "new",
                                "noexcept",      "not",         "not_eq",
                                "nullptr",       "operator",    "or",
                                "or_eq",         "private",     "protected",
                                "public",        "register",    "reinterpret_cast",
                                "requires",      "return",      "short",
                                "signed",        "sizeof",      "static",
                                "static_assert", "static_cast", "struct",
                                "switch",        "template",    "this",
                                "thread_local",  "throw",       "true",
                                "try",           "typedef",     "typeid",
                                "typename",      "union",       "unsigned",
                                "using",         "virtual",     "void",
                                "volatile",      "wchar_t",     "while",
                                "xor",           "xor_eq"};
  return *kKeywords;
}

std::string StripProto(const std::string& filename) {
  const std::string suffix = ".proto";
  if (filename.size() >= suffix.size() &&
      filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return filename.substr(0, filename.size() - suffix.size());
  }
  return filename;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// "greeter.v1" → "::greeter::v1" ("" for no package), as protobuf's C++ generator names it.
std::string CppNamespace(const FileDescriptor* file) {
  return file->package().empty() ? "" : "::" + Replace(file->package(), ".", "::");
}

// The C++ class protobuf generates for a message: nested messages join with '_', a keyword gets
// a trailing '_'.
std::string QualifiedClassName(const Descriptor* message) {
  std::string relative = message->full_name();
  if (!message->file()->package().empty()) {
    relative = relative.substr(message->file()->package().size() + 1);
  }
  std::string name = Replace(relative, ".", "_");
  if (CppKeywords().count(name) > 0) {
    name += "_";
  }
  return CppNamespace(message->file()) + "::" + name;
}

// The C++ name of a method in a class called `enclosing`: a name that is a keyword, or that
// would be taken for the class's constructor, gets a trailing '_'.
std::string MemberName(const std::string& name, const std::string& enclosing) {
  if (CppKeywords().count(name) > 0 || name == enclosing) {
    return name + "_";
  }
  return name;
}

// Bytes as a C string literal, split into lines; octal escapes cannot swallow a following digit.
std::string CppStringLiteral(const std::string& bytes) {
  std::string out = "\"";
  int column = 0;
  for (const unsigned char c : bytes) {
    if (column >= 24) {
      out += "\"\n    \"";
      column = 0;
    }
    const char digits[] = {static_cast<char>('0' + ((c >> 6) & 7)),
                           static_cast<char>('0' + ((c >> 3) & 7)),
                           static_cast<char>('0' + (c & 7)), '\0'};
    out += "\\";
    out += digits;
    ++column;
  }
  return out + "\"";
}

// The files a service's schema needs: `file` and everything it imports, imports first.
void CollectFiles(const FileDescriptor* file, std::set<std::string>* seen,
                  google::protobuf::FileDescriptorSet* set) {
  if (!seen->insert(file->name()).second) {
    return;
  }
  for (int i = 0; i < file->dependency_count(); ++i) {
    CollectFiles(file->dependency(i), seen, set);
  }
  file->CopyTo(set->add_file());
}

enum class Kind { kUnary, kServerStreaming, kClientStreaming, kBidiStreaming };

Kind KindOf(const MethodDescriptor* method) {
  if (method->client_streaming()) {
    return method->server_streaming() ? Kind::kBidiStreaming : Kind::kClientStreaming;
  }
  return method->server_streaming() ? Kind::kServerStreaming : Kind::kUnary;
}

// One method: its line in the handler interface, the clients, the endpoint table and Register.
class MethodGenerator {
 public:
  MethodGenerator(const MethodDescriptor* method, int index) : method_(method), index_(index) {}

  Vars Variables(const std::string& enclosing) const {
    static const char* const kKinds[] = {"CALL_KIND_UNARY", "CALL_KIND_SERVER_STREAMING",
                                         "CALL_KIND_CLIENT_STREAMING", "CALL_KIND_BIDI_STREAMING"};
    static const char* const kServe[] = {"ServeUnary", "ServeServerStreaming",
                                         "ServeClientStreaming", "ServeBidiStreaming"};
    const int kind = static_cast<int>(KindOf(method_));
    return {
        {"name", MemberName(method_->name(), enclosing)},
        {"proto_name", method_->name()},
        {"full_method", method_->service()->full_name() + "/" + method_->name()},
        {"request", QualifiedClassName(method_->input_type())},
        {"response", QualifiedClassName(method_->output_type())},
        {"request_type", method_->input_type()->full_name()},
        {"response_type", method_->output_type()->full_name()},
        {"kind", kKinds[kind]},
        {"serve", kServe[kind]},
        {"index", std::to_string(index_)},
        {"timeout_ms",
         std::to_string(method_->options().GetExtension(::stella::router::v1::default_timeout_ms))},
    };
  }

  void HandlerDeclaration(Printer& out) const {
    const Vars vars = Variables("Handler");
    out.Print(vars, "// $full_method$\n");
    switch (KindOf(method_)) {
      case Kind::kUnary:
        out.Print(vars,
                  "virtual ::boost::asio::awaitable<::absl::StatusOr<$response$>> $name$(\n"
                  "    ::stella::sdk::CallContext& context, const $request$& request) = 0;\n");
        break;
      case Kind::kServerStreaming:
        out.Print(vars,
                  "virtual ::boost::asio::awaitable<::absl::Status> $name$(\n"
                  "    ::stella::sdk::CallContext& context, const $request$& request,\n"
                  "    ::stella::sdk::ServerWriter<$response$>& writer) = 0;\n");
        break;
      case Kind::kClientStreaming:
        out.Print(vars,
                  "virtual ::boost::asio::awaitable<::absl::StatusOr<$response$>> $name$(\n"
                  "    ::stella::sdk::CallContext& context,\n"
                  "    ::stella::sdk::ServerReader<$request$>& reader) = 0;\n");
        break;
      case Kind::kBidiStreaming:
        out.Print(vars,
                  "virtual ::boost::asio::awaitable<::absl::Status> $name$(\n"
                  "    ::stella::sdk::CallContext& context,\n"
                  "    ::stella::sdk::ServerReader<$request$>& reader,\n"
                  "    ::stella::sdk::ServerWriter<$response$>& writer) = 0;\n");
        break;
    }
  }

  void ClientDeclaration(Printer& out) const {
    const Vars vars = Variables("Client");
    out.Print(vars, "// $full_method$\n");
    switch (KindOf(method_)) {
      case Kind::kUnary:
        out.Print(vars,
                  "::boost::asio::awaitable<::absl::StatusOr<$response$>> $name$(\n"
                  "    const $request$& request, ::stella::sdk::CallOptions options = {});\n");
        break;
      case Kind::kServerStreaming:
        out.Print(
            vars,
            "::absl::StatusOr<::stella::sdk::ClientStream<$request$, $response$>> $name$(\n"
            "    const $request$& request, const ::stella::sdk::CallOptions& options = {});\n");
        break;
      case Kind::kClientStreaming:
      case Kind::kBidiStreaming:
        out.Print(vars,
                  "::absl::StatusOr<::stella::sdk::ClientStream<$request$, $response$>> $name$(\n"
                  "    const ::stella::sdk::CallOptions& options = {});\n");
        break;
    }
  }

  void ClientDefinition(Printer& out, const Vars& service) const {
    Vars vars = Variables("Client");
    vars.insert(service.begin(), service.end());
    switch (KindOf(method_)) {
      case Kind::kUnary:
        out.Print(
            vars,
            "::boost::asio::awaitable<::absl::StatusOr<$response$>> $service$::Client::$name$(\n"
            "    const $request$& request, ::stella::sdk::CallOptions options) {\n"
            "  return ::stella::sdk::CallUnary<$response$>(\n"
            "      ::stella::sdk::ClientBase::channel(), \"$full_method$\",\n"
            "      request.SerializeAsString(), std::move(options));\n"
            "}\n\n");
        break;
      case Kind::kServerStreaming:
        out.Print(vars,
                  "::absl::StatusOr<::stella::sdk::ClientStream<$request$, $response$>>\n"
                  "$service$::Client::$name$(const $request$& request,\n"
                  "    const ::stella::sdk::CallOptions& options) {\n"
                  "  return ::stella::sdk::OpenStream<$request$, $response$>(\n"
                  "      ::stella::sdk::ClientBase::channel(), \"$full_method$\",\n"
                  "      request.SerializeAsString(), /*close_send=*/true, options);\n"
                  "}\n\n");
        break;
      case Kind::kClientStreaming:
      case Kind::kBidiStreaming:
        out.Print(vars,
                  "::absl::StatusOr<::stella::sdk::ClientStream<$request$, $response$>>\n"
                  "$service$::Client::$name$(const ::stella::sdk::CallOptions& options) {\n"
                  "  return ::stella::sdk::OpenStream<$request$, $response$>(\n"
                  "      ::stella::sdk::ClientBase::channel(), \"$full_method$\", std::nullopt,\n"
                  "      /*close_send=*/false, options);\n"
                  "}\n\n");
        break;
    }
  }

  // Blocking clients cover unary methods only.
  bool HasBlockingVersion() const { return KindOf(method_) == Kind::kUnary; }

  void BlockingDeclaration(Printer& out) const {
    out.Print(Variables("BlockingClient"),
              "// $full_method$; waits for the answer.\n"
              "::absl::StatusOr<$response$> $name$(const $request$& request,\n"
              "    ::stella::sdk::CallOptions options = {});\n");
  }

  void BlockingDefinition(Printer& out, const Vars& service) const {
    Vars vars = Variables("BlockingClient");
    vars.insert(service.begin(), service.end());
    out.Print(vars,
              "::absl::StatusOr<$response$> $service$::BlockingClient::$name$(\n"
              "    const $request$& request, ::stella::sdk::CallOptions options) {\n"
              "  return ::stella::sdk::CallUnaryBlocking<$response$>(\n"
              "      ::stella::sdk::ClientBase::channel(), \"$full_method$\",\n"
              "      request.SerializeAsString(), std::move(options));\n"
              "}\n\n");
  }

  void EndpointEntry(Printer& out) const {
    const Vars vars = Variables("");
    out.Print(vars,
              "endpoints[$index$].set_method(\"$full_method$\");\n"
              "endpoints[$index$].set_request_type(\"$request_type$\");\n"
              "endpoints[$index$].set_response_type(\"$response_type$\");\n"
              "endpoints[$index$].set_kind(::stella::router::v1::$kind$);\n");
    if (vars.at("timeout_ms") != "0") {
      out.Print(vars, "endpoints[$index$].set_default_timeout_ms($timeout_ms$);\n");
    }
  }

  void Registration(Printer& out) const {
    out.Print(Variables("Handler"),
              "if (::absl::Status status = host.Register(\n"
              "        endpoints[$index$],\n"
              "        ::stella::sdk::BindHandler(&handler, &Handler::$name$,\n"
              "                                   &::stella::sdk::$serve$<Handler, $request$, "
              "$response$>));\n"
              "    !status.ok()) {\n"
              "  return status;\n"
              "}\n");
  }

 private:
  const MethodDescriptor* method_;
  int index_;
};

// One service: the class that holds its Handler, Client, BlockingClient and tables.
class ServiceGenerator {
 public:
  explicit ServiceGenerator(const ServiceDescriptor* service) : service_(service) {
    for (int i = 0; i < service->method_count(); ++i) {
      methods_.emplace_back(service->method(i), i);
    }
  }

  Vars Variables() const {
    return {{"service", service_->name()},
            {"full_service", service_->full_name()},
            {"method_count", std::to_string(service_->method_count())}};
  }

  void Declaration(Printer& out) const {
    const Vars vars = Variables();
    out.Print(vars,
              "// The $full_service$ service: implement Handler and Register it with a\n"
              "// ServiceHost; call it through Client (coroutines) or BlockingClient.\n"
              "class $service$ final {\n"
              " public:\n"
              "  $service$() = delete;\n\n"
              "  class Handler {\n"
              "   public:\n"
              "    virtual ~Handler() = default;\n\n");
    out.Indent();
    out.Indent();
    for (const MethodGenerator& method : methods_) {
      method.HandlerDeclaration(out);
    }
    out.Outdent();
    out.Outdent();
    out.Print(vars,
              "  };\n\n"
              "  class Client : private ::stella::sdk::ClientBase {\n"
              "   public:\n"
              "    explicit Client(std::shared_ptr<::stella::sdk::Channel> channel);\n\n");
    out.Indent();
    out.Indent();
    for (const MethodGenerator& method : methods_) {
      method.ClientDeclaration(out);
    }
    out.Outdent();
    out.Outdent();
    out.Print(
        vars,
        "  };\n\n"
        "  // Unary methods, for code that is not a coroutine. The channel's io_context must\n"
        "  // run on another thread.\n"
        "  class BlockingClient : private ::stella::sdk::ClientBase {\n"
        "   public:\n"
        "    explicit BlockingClient(std::shared_ptr<::stella::sdk::Channel> channel);\n");
    out.Indent();
    out.Indent();
    for (const MethodGenerator& method : methods_) {
      if (method.HasBlockingVersion()) {
        method.BlockingDeclaration(out);
      }
    }
    out.Outdent();
    out.Outdent();
    out.Print(
        vars,
        "  };\n\n"
        "  // What a ServiceHost sends in HELLO for these methods.\n"
        "  static std::vector<::stella::router::v1::Endpoint> Endpoints();\n"
        "  // The serialized google.protobuf.FileDescriptorSet of this file and its imports.\n"
        "  static ::absl::string_view FileDescriptorSet();\n"
        "  // Registers every method of `handler` (which must outlive `host`) and the schema.\n"
        "  static ::absl::Status Register(::stella::sdk::ServiceHost& host, Handler& handler);\n"
        "};\n\n");
  }

  void Definition(Printer& out, const std::string& schema_literal) const {
    const Vars vars = Variables();
    out.Print(vars,
              "// --- $full_service$ ---\n\n"
              "$service$::Client::Client(std::shared_ptr<::stella::sdk::Channel> channel)\n"
              "    : ::stella::sdk::ClientBase(std::move(channel)) {}\n\n");
    for (const MethodGenerator& method : methods_) {
      method.ClientDefinition(out, vars);
    }
    out.Print(vars,
              "$service$::BlockingClient::BlockingClient(\n"
              "    std::shared_ptr<::stella::sdk::Channel> channel)\n"
              "    : ::stella::sdk::ClientBase(std::move(channel)) {}\n\n");
    for (const MethodGenerator& method : methods_) {
      if (method.HasBlockingVersion()) {
        method.BlockingDefinition(out, vars);
      }
    }
    out.Print(vars,
              "std::vector<::stella::router::v1::Endpoint> $service$::Endpoints() {\n"
              "  std::vector<::stella::router::v1::Endpoint> endpoints($method_count$);\n");
    out.Indent();
    for (const MethodGenerator& method : methods_) {
      method.EndpointEntry(out);
    }
    out.Outdent();
    out.Print(vars,
              "  return endpoints;\n"
              "}\n\n"
              "::absl::string_view $service$::FileDescriptorSet() {\n"
              "  static constexpr char kSchema[] =\n"
              "      ");
    out.PrintRaw(schema_literal);
    out.Print(vars,
              ";\n"
              "  return ::absl::string_view(kSchema, sizeof(kSchema) - 1);\n"
              "}\n\n"
              "::absl::Status $service$::Register(::stella::sdk::ServiceHost& host, Handler& "
              "handler) {\n"
              "  const std::vector<::stella::router::v1::Endpoint> endpoints = Endpoints();\n");
    out.Indent();
    for (const MethodGenerator& method : methods_) {
      method.Registration(out);
    }
    out.Outdent();
    out.Print(vars,
              "  return host.AddFileDescriptorSet(FileDescriptorSet());\n"
              "}\n\n");
  }

 private:
  const ServiceDescriptor* service_;
  std::vector<MethodGenerator> methods_;
};

// One .proto file: the two outputs around its services.
class FileGenerator {
 public:
  explicit FileGenerator(const FileDescriptor* file) : file_(file) {
    for (int i = 0; i < file->service_count(); ++i) {
      services_.emplace_back(file->service(i));
    }
  }

  Vars Variables() const {
    const std::string base = StripProto(file_->name());
    std::string guard = "STELLA_GENERATED_" + base + "_STELLA_H_";
    for (char& c : guard) {
      c = std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c)) : '_';
    }
    const std::string ns = CppNamespace(file_);
    return {{"proto", file_->name()},
            {"base", base},
            {"guard", guard},
            {"namespace", ns.empty() ? "" : ns.substr(2)}};
  }

  void Header(Printer& out) const {
    const Vars vars = Variables();
    out.Print(vars,
              "// Generated by protoc-gen-stella from $proto$. Do not edit.\n"
              "#ifndef $guard$\n"
              "#define $guard$\n\n"
              "#include <boost/asio/awaitable.hpp>\n"
              "#include <memory>\n"
              "#include <vector>\n\n"
              "#include \"absl/status/statusor.h\"\n"
              "#include \"absl/strings/string_view.h\"\n"
              "#include \"$base$.pb.h\"\n"
              "#include \"service_sdk/typed.h\"\n"
              "#include \"stella/router/v1/frames.pb.h\"\n\n");
    OpenNamespace(out, vars);
    for (const ServiceGenerator& service : services_) {
      service.Declaration(out);
    }
    CloseNamespace(out, vars);
    out.Print(vars, "#endif  // $guard$\n");
  }

  void Source(Printer& out) const {
    const Vars vars = Variables();
    out.Print(vars,
              "// Generated by protoc-gen-stella from $proto$. Do not edit.\n"
              "#include \"$base$.stella.h\"\n\n"
              "#include <optional>\n"
              "#include <utility>\n\n");
    OpenNamespace(out, vars);
    if (!services_.empty()) {
      google::protobuf::FileDescriptorSet set;
      std::set<std::string> seen;
      CollectFiles(file_, &seen, &set);
      const std::string literal = CppStringLiteral(set.SerializeAsString());
      for (const ServiceGenerator& service : services_) {
        service.Definition(out, literal);
      }
    }
    CloseNamespace(out, vars);
  }

 private:
  static void OpenNamespace(Printer& out, const Vars& vars) {
    if (!vars.at("namespace").empty()) {
      out.Print(vars, "namespace $namespace$ {\n\n");
    }
  }
  static void CloseNamespace(Printer& out, const Vars& vars) {
    if (!vars.at("namespace").empty()) {
      out.Print(vars, "}  // namespace $namespace$\n\n");
    }
  }

  const FileDescriptor* file_;
  std::vector<ServiceGenerator> services_;
};

}  // namespace

bool StellaGenerator::Generate(const FileDescriptor* file, const std::string& parameter,
                               google::protobuf::compiler::GeneratorContext* context,
                               std::string* error) const {
  if (!parameter.empty()) {
    *error = "protoc-gen-stella takes no options (got \"" + parameter + "\")";
    return false;
  }
  const FileGenerator generator(file);
  const std::string base = StripProto(file->name());
  {
    std::unique_ptr<google::protobuf::io::ZeroCopyOutputStream> stream(
        context->Open(base + ".stella.h"));
    Printer out(stream.get(), '$');
    generator.Header(out);
  }
  {
    std::unique_ptr<google::protobuf::io::ZeroCopyOutputStream> stream(
        context->Open(base + ".stella.cc"));
    Printer out(stream.get(), '$');
    generator.Source(out);
  }
  return true;
}

}  // namespace stella::codegen
