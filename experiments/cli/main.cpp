// peel: train, measure and reproduce. `peel --help` lists the subcommands.
#include <cstdio>
#include <exception>

#include "experiments/cli/commands.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  CLI::App app{"peel: neural-collapse experiments on a CPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  peel::cli::register_fetch_command(app);
  peel::cli::register_train_command(app);
  peel::cli::register_reproduce_command(app);
  peel::cli::register_demo_command(app);
  peel::cli::register_lpm_command(app);
  peel::cli::register_bench_command(app);
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
