// Finite-difference gradient checking: compares backward() with central differences.
//
// The one gradient checker of peel, tuned per op through GradcheckOptions: the step and the
// tolerances, which elements to check (all, or a spread subset of a large input), and which to
// skip (points within a step of a kink, where the derivative jumps: ReLU at 0, a max-pool tie).
// The perturbed loss is accumulated in double and divided by the step the float input actually
// took, so float32 rounding of x +- eps does not bias the difference.
#pragma once

#include <cstdint>
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
  // At most this many elements of each input are checked, spread evenly over it (0: all of them).
  int64_t max_elements_per_input = 0;
  // skip(input, element) true: that element is not checked (e.g. it lies within eps of a kink).
  std::function<bool(size_t input, int64_t element)> skip;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatch: input, element, analytic and numeric values
  double max_abs_error = 0;
  int64_t checked = 0;  // elements compared (after max_elements_per_input and skip)
};

// f maps the inputs to one output. A non-scalar output is reduced to L = sum(out * R) with a fixed
// random R, so every output element's gradient is exercised. Checks dL/d(input) for every input.
GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace peel::ag
