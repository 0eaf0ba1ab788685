// `peel demo`: a two-layer network learns a synthetic 3-class problem with peel's autodiff,
// printing its loss going down. No data to fetch; it exercises tensor, autograd, nn and optim.
#include <fmt/format.h>

#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "nn/layers.h"
#include "optim/optimizer.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace peel::cli {

namespace {

void run_demo(int steps, uint64_t seed) {
  Generator gen(seed);
  // Three Gaussian blobs in 2-d, 64 points each.
  const int64_t per_class = 64, classes = 3, n = per_class * classes;
  const float centres[3][2] = {{2, 0}, {-1, 1.7f}, {-1, -1.7f}};
  Tensor x = Tensor::empty({n, 2});
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i % classes;
    x.set({i, 0}, centres[k][0] + 0.6f * gen.normal());
    x.set({i, 1}, centres[k][1] + 0.6f * gen.normal());
    y[static_cast<size_t>(i)] = k;
  }
  nn::seed_init_generator(seed);
  nn::Sequential model{std::make_shared<nn::Linear>(2, 32), std::make_shared<nn::ReLU>(),
                       std::make_shared<nn::Linear>(32, classes)};
  optim::Sgd sgd({{model.parameters(), 0.f, 1.f}}, {.lr = 0.1f, .momentum = 0.9f});
  ag::Variable input(x);
  for (int step = 0; step <= steps; ++step) {
    sgd.zero_grad();
    ag::Variable loss = nn::cross_entropy(model(input), y);
    loss.backward();
    sgd.step();
    if (step % std::max(1, steps / 10) == 0) fmt::print("step {:4d}  loss {:.4f}\n", step, loss.item());
  }
}

}  // namespace

void register_demo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "Train a tiny network on synthetic data and print its loss");
  auto steps = std::make_shared<int>(200);
  auto seed = std::make_shared<uint64_t>(0);
  auto threads = std::make_shared<int>(0);
  cmd->add_option("--steps", *steps, "Training steps")->check(CLI::Range(1, 1000000));
  add_seed_option(cmd, *seed);
  add_threads_option(cmd, *threads);
  cmd->callback([=] {
    set_num_threads(capped_threads(*threads));
    run_demo(*steps, *seed);
  });
}

}  // namespace peel::cli
