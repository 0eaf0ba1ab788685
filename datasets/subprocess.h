// Runs an external program (curl, wget, npm, tar) without a shell: arguments are passed as they
// are, so paths with spaces or quotes need no escaping.
#pragma once

#include <string>
#include <vector>

namespace peel::data {

struct ProcessResult {
  bool started = false;  // false when the program could not be run (not installed)
  int exit_code = -1;    // the exit status, or 128 + signal number
  std::string output;    // stdout and stderr together, the last 16 KiB
};

ProcessResult run_process(const std::vector<std::string>& argv);

// "curl -fsSL ..." for logs.
std::string command_line(const std::vector<std::string>& argv);

}  // namespace peel::data
