// protoc-gen-stella: protoc runs it for `--stella_out=DIR`; cmake/StellaGenerate.cmake does that
// for you (stella_generate).
#include "codegen/generator.h"
#include "google/protobuf/compiler/plugin.h"

int main(int argc, char* argv[]) {
  stella::codegen::StellaGenerator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
