#include "experiments/cli/options.h"

#include <fmt/format.h>

#include <thread>

#include "datasets/dataset.h"
#include "datasets/fetch.h"
#include "nn/models.h"

namespace peel::cli {

CLI::Option* add_data_option(CLI::App* cmd, std::string& data_dir) {
  data_dir = data::default_data_dir();
  return cmd->add_option("--data", data_dir, "Data directory (default: $PEEL_DATA, else data/)");
}

CLI::Option* add_threads_option(CLI::App* cmd, int& threads) {
  return cmd->add_option("--threads", threads, "Threads (0 = all cores)")->check(CLI::NonNegativeNumber);
}

CLI::Option* add_model_option(CLI::App* cmd, std::string& model) {
  return cmd->add_option("--model", model, fmt::format("{}", fmt::join(nn::model_names(), " | ")))
      ->check(CLI::IsMember(nn::model_names()))
      ->capture_default_str();
}

CLI::Option* add_dataset_option(CLI::App* cmd, std::string& dataset) {
  return cmd->add_option("--dataset", dataset, fmt::format("{}", fmt::join(data::dataset_names(), " | ")))
      ->check(CLI::IsMember(data::dataset_names()))
      ->capture_default_str();
}

CLI::Option* add_seed_option(CLI::App* cmd, uint64_t& seed) {
  // The check sees the text before it is converted, so "-1" is refused instead of wrapping.
  return cmd->add_option("--seed", seed, "Seed for data subsets, shuffling and initial weights")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

CLI::Option* add_conv_backend_option(CLI::App* cmd, ConvBackend& backend) {
  return add_enum_option(cmd, "--conv-backend", backend, "Convolution backend (default: the fastest here)");
}

int capped_threads(int requested) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (requested <= cores) return requested;
  fmt::print(stderr, "peel: --threads {} is more than the {} cores here; using {}\n", requested, cores, cores);
  return cores;
}

}  // namespace peel::cli
