// Running a command line from a test and collecting what it printed.
#ifndef STELLA_TESTS_SUPPORT_SUBPROCESS_H_
#define STELLA_TESTS_SUPPORT_SUBPROCESS_H_

#include <string>

namespace stella::testing {

struct CommandResult {
  int exit_code = -1;  // -1 if the command could not start or died from a signal
  std::string output;  // stdout and stderr, interleaved as written
};

// Runs `command` through /bin/sh and waits for it. Arguments are the caller's to quote.
CommandResult RunCommand(const std::string& command);

}  // namespace stella::testing

#endif  // STELLA_TESTS_SUPPORT_SUBPROCESS_H_
