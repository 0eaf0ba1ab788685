// The Layer-Peeled Model fitted to a training run, epoch by epoch: for every measured row of the
// run's metrics.csv, the LPM solved with that epoch's budgets (lpm_e_w, lpm_e_h, lpm_e_h_centred)
// and the run's class counts and mitigation, beside the network's own minority cosine and the model
// at the authors' constants. `peel lpm --from-run DIR` prints it; the Minority Collapse report draws it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/lpm/fitted.h"

namespace peel {

struct LpmFitRow {
  int64_t epoch = 0;
  double network_minority_cosine = 0;  // the run's minority_cosine column
  NetworkBudgets budgets;
  double fitted_minority_cosine = 0;                                // E_H uncentred, as the LPM's constraint is written
  double fitted_centred_minority_cosine = 0;                        // E_H about the global mean (the bias absorbs it)
  bool fitted_collapsed = false, fitted_centred_collapsed = false;  // every minority row vanished
};

struct LpmRunFit {
  std::string dir;
  RunImbalance imbalance;
  double authors_minority_cosine = 0;  // E_H = 5, E_W = 1 at the run's R and minority weight
  std::vector<LpmFitRow> rows;         // one per measured epoch, in order
};

// Reads DIR/config.json and DIR/metrics.csv; every row when `last_only` is false, else the last.
// A run whose minority classes have no images has NaN predictions (the model needs n_B > 0).
// A folder without the budget columns (made before peel measured them) is refused, naming the file.
LpmRunFit fit_lpm_to_run(const std::string& dir, bool last_only = false);

}  // namespace peel
