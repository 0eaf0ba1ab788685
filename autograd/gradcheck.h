// Finite-difference gradient checking: compares backward() with central differences.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace peel::ag {

struct GradcheckOptions {
  float eps = 1e-3f;   // finite-difference step
  float rtol = 1e-2f;  // float32 central differences are good to about 1e-3 relative
  float atol = 1e-3f;
  uint64_t seed = 0;  // for the random projection of a non-scalar output
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatch: input, element, analytic and numeric values
  double max_abs_error = 0;
};

// f maps the inputs to one output. A non-scalar output is reduced to L = sum(out * R) with a fixed
// random R, so every output element's gradient is exercised. Checks dL/d(input) for every input.
GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace peel::ag
