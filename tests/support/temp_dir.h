// A temporary directory for one test, removed with everything in it when the object goes away.
#ifndef STELLA_TESTS_SUPPORT_TEMP_DIR_H_
#define STELLA_TESTS_SUPPORT_TEMP_DIR_H_

#include <string>

namespace stella::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Returns path()/name.
  std::string Path(const std::string& name) const;
  // Writes `content` to path()/name (creating parent directories) and returns the path.
  std::string Write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

}  // namespace stella::testing

#endif  // STELLA_TESTS_SUPPORT_TEMP_DIR_H_
