// Options several subcommands share, declared once: where the data is, how many threads, which
// model, which convolution backend, the seed, and the enums of experiments/run/config.h.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "experiments/run/config.h"

namespace peel::cli {

// --data DIR: default $PEEL_DATA, else data/.
CLI::Option* add_data_option(CLI::App* cmd, std::string& data_dir);
// --threads N: 0 = all cores; more than the cores there are is capped, with a warning, when the
// command runs (oversubscribed threads only wait on each other).
CLI::Option* add_threads_option(CLI::App* cmd, int& threads);
// --model NAME, one of nn::model_names().
CLI::Option* add_model_option(CLI::App* cmd, std::string& model);
// --dataset NAME, one of data::dataset_names().
CLI::Option* add_dataset_option(CLI::App* cmd, std::string& dataset);
// --seed N: a non-negative integer (a negative one would wrap around to 2^64 - 1).
CLI::Option* add_seed_option(CLI::App* cmd, uint64_t& seed);
// --conv-backend NAME.
CLI::Option* add_conv_backend_option(CLI::App* cmd, ConvBackend& backend);

// The cores there are, and `requested` capped to them (0 = all) with a warning on stderr.
int capped_threads(int requested);

// An option taking one of an enum's JSON names (config.h), listed in the help; anything else is
// refused naming the choices.
template <class E>
CLI::Option* add_enum_option(CLI::App* cmd, const std::string& name, E& value, const std::string& help) {
  const std::map<std::string, E> names = enum_names<E>();
  std::string choices;
  for (const auto& [text, v] : names) choices += (choices.empty() ? "" : ", ") + text;
  CLI::Validator to_enum(
      [names, choices](std::string& text) -> std::string {
        const auto it = names.find(text);
        if (it == names.end()) return "'" + text + "' is not one of " + choices;
        text = std::to_string(static_cast<int>(it->second));  // what CLI11 reads into the enum
        return {};
      },
      "{" + choices + "}");
  return cmd->add_option(name, value, help)->transform(to_enum)->type_name("TEXT")->default_str(enum_name(value));
}

}  // namespace peel::cli
