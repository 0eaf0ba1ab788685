#include "experiments/normalization/training_probe.h"

#include <fmt/format.h>

#include "experiments/normalization/elimination.h"

namespace peel {

Tensor training_elimination_probe(const TrainConfig& c, const TrainingData& data) {
  if (c.elimination_probe == 0) return {};
  return probe_images(data.train, c.elimination_probe, c.seed);
}

void add_elimination_measurement(EpochMeasurement& m, nn::Network& model, const Tensor& probe) {
  if (!probe.defined()) return;
  const EliminationMetrics es = measure_elimination(model, probe);
  const MetricColumns columns = es.to_columns();
  m.columns.insert(m.columns.end(), columns.begin(), columns.end());
  m.line += fmt::format("  eliminated {:.1f}%", 100 * columns.front().second);
}

}  // namespace peel
