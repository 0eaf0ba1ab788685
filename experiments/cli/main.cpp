// peel: train, measure and reproduce. `peel --help` lists the subcommands.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "experiments/cli/commands.h"
#include "tensor/error.h"
#include "tensor/threads.h"

int main(int argc, char** argv) {
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peel: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
