// peel: train, measure and reproduce. `peel --help` lists the subcommands.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "experiments/cli/commands.h"
#include "experiments/distributed/comm.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace {

int run_peel(int argc, char** argv) {
  peel::adopt_wait_policy(argv);  // may execute peel again, with a short OpenMP spin (tensor/threads.h)
  CLI::App app{"peel: neural-collapse experiments on a CPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  peel::cli::register_fetch_command(app);
  peel::cli::register_train_command(app);
  peel::cli::register_reproduce_command(app);
  peel::cli::register_demo_command(app);
  peel::cli::register_lpm_command(app);
  peel::cli::register_bench_command(app);
  // CLI11 would only say "A subcommand is required" for a mistyped one.
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    names.push_back(sub->get_name());
  if (argc > 1 && argv[1][0] != '-' && std::find(names.begin(), names.end(), argv[1]) == names.end()) {
    std::string list;
    for (const std::string& name : names) list += (list.empty() ? "" : ", ") + name;
    std::fprintf(stderr, "peel: error: unknown subcommand '%s'; the subcommands are %s (peel --help)\n", argv[1],
                 list.c_str());
    return 2;
  }
  // Under mpirun: join the job (experiments/distributed/comm.h). A rank that fails ends the whole
  // job, so that no other rank waits for it.
  peel::dist::init(&argc, &argv);
  const peel::dist::Communicator& ranks = peel::dist::world();
  int code = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    code = app.exit(e);
    if (ranks.distributed() && code != 0) ranks.abort("rank " + std::to_string(ranks.rank()) + ": bad command line");
  } catch (const std::exception& e) {
    if (ranks.distributed()) ranks.abort(std::string(e.what()));
    std::fprintf(stderr, "peel: error: %s\n", e.what());
    code = 1;
  }
  peel::dist::finalize();
  return code;
}

}  // namespace

// What escapes run_peel was thrown while the subcommands were being set up, before any work.
int main(int argc, char** argv) {
  try {
    return run_peel(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peel: error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "peel: error: an unknown exception\n");
  }
  return 1;
}
