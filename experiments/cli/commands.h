// The peel command's subcommands. Each registers itself on the CLI11 app and runs when chosen;
// errors are thrown as peel::Error and reported by main() with a non-zero exit.
#pragma once

#include <CLI/CLI.hpp>

namespace peel::cli {

void register_demo_command(CLI::App& app);
void register_lpm_command(CLI::App& app);
void register_bench_command(CLI::App& app);
void register_bench_infer_command(CLI::App* bench);  // `peel bench infer`, under `peel bench`
void register_train_command(CLI::App& app);
void register_fetch_command(CLI::App& app);
void register_reproduce_command(CLI::App& app);

}  // namespace peel::cli
