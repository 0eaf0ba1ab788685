// Running the peel program from tests: a fresh folder per test, a child process with its output
// captured, optional limits (a file-size cap that makes writes fail as on a full disk, a PATH
// without some program), and the files it leaves behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace peel::testing {

namespace fs = std::filesystem;

inline const std::string kPeel = std::string(PEEL_BINARY_DIR) + "/peel";

// An empty folder under the temporary directory, unique to this process and `name`.
inline fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("peel_cli_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

inline std::string read_file(const fs::path& p) {
  std::stringstream ss;
  ss << std::ifstream(p, std::ios::binary).rdbuf();
  return ss.str();
}

struct SpawnOptions {
  std::optional<rlim_t> file_size_limit;  // RLIMIT_FSIZE in bytes; SIGXFSZ ignored, so writes fail with EFBIG
  std::optional<std::string> path_env;    // replaces PATH
  std::vector<std::pair<std::string, std::string>> set_env;  // set in the child's environment
  std::vector<std::string> unset_env;                        // removed from it
};

// Starts `args` (args[0] is the program) with stdout and stderr going to `log`.
inline pid_t spawn(const std::vector<std::string>& args, const std::string& log, const SpawnOptions& options = {}) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (options.file_size_limit) {
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{*options.file_size_limit, *options.file_size_limit};
      ::setrlimit(RLIMIT_FSIZE, &limit);
    }
    if (options.path_env) ::setenv("PATH", options.path_env->c_str(), 1);
    for (const auto& [name, value] : options.set_env) ::setenv(name.c_str(), value.c_str(), 1);
    for (const auto& name : options.unset_env) ::unsetenv(name.c_str());
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string output;  // stdout and stderr
};

inline RunResult run(const std::vector<std::string>& args, const SpawnOptions& options = {}) {
  static int counter = 0;
  const std::string log =
      fs::temp_directory_path() / ("peel_cli_log_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const pid_t pid = spawn(args, log, options);
  int status = 0;
  ::waitpid(pid, &status, 0);
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(log)};
  fs::remove(log);
  return r;
}

// Waits (up to `seconds`) until `done()` holds; false on time-out.
template <class Condition>
bool wait_until(Condition done, double seconds = 120) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Every file of a folder (recursively), with its bytes: to show a command changed nothing.
inline std::vector<std::pair<std::string, std::string>> snapshot(const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  if (!fs::exists(dir)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename() != ".lock")  // its pid changes with each writer
      files.emplace_back(fs::relative(entry.path(), dir).string(), read_file(entry.path()));
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace peel::testing
