// protoc-gen-stella's generator: for every `.proto` file, `<file>.stella.h` and `<file>.stella.cc`
// with, per service, a typed handler interface, typed clients, the endpoint descriptors and the
// schema. docs/codegen.md shows the output.
#ifndef STELLA_CODEGEN_GENERATOR_H_
#define STELLA_CODEGEN_GENERATOR_H_

#include <cstdint>
#include <string>

#include "google/protobuf/compiler/code_generator.h"

namespace stella::codegen {

class StellaGenerator : public google::protobuf::compiler::CodeGenerator {
 public:
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;

  std::uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace stella::codegen

#endif  // STELLA_CODEGEN_GENERATOR_H_
