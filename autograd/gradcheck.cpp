#include "autograd/gradcheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "autograd/functional.h"
#include "tensor/random.h"

namespace peel::ag {

GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  // Fresh contiguous copies: the check perturbs them in place, element j in logical order. Each is
  // handed to f in the memory form its input had (channels-last stays channels-last), so the
  // kernel path that runs is the one the caller's tensors would take.
  std::vector<Tensor> values;
  std::vector<bool> channels_last;
  for (const Tensor& t : inputs) {
    values.push_back(t.clone());
    channels_last.push_back(t.is_channels_last() && !t.is_contiguous());
  }
  auto as_given = [&](size_t i, const Tensor& t) { return channels_last[i] ? t.channels_last() : t; };

  Tensor projection;
  auto loss_of = [&](const std::vector<Variable>& vars) -> Variable {
    Variable out = f(vars);
    if (!projection.defined()) {
      Generator gen(options.seed);
      projection = normal(out.shape(), 0.f, 1.f, gen);
    }
    return sum(mul(out, constant(projection)));
  };
  // The perturbed loss is summed in double: a float32 sum would round away most of the tiny
  // difference that central differences measure.
  auto evaluate = [&]() -> double {
    NoGradGuard no_grad;
    std::vector<Variable> vars;
    for (size_t i = 0; i < values.size(); ++i) vars.emplace_back(as_given(i, values[i]), false);
    const std::vector<float> out = f(vars).value().to_vector();
    const std::vector<float> r = projection.to_vector();
    double total = 0;
    for (size_t k = 0; k < out.size(); ++k) total += static_cast<double>(out[k]) * r[k];
    return total;
  };

  // Analytic gradients.
  std::vector<Variable> vars;
  for (size_t i = 0; i < values.size(); ++i) vars.emplace_back(as_given(i, values[i].clone()), true);
  loss_of(vars).backward();

  GradcheckResult result;
  for (size_t i = 0; i < values.size(); ++i) {
    const Tensor analytic = vars[i].grad().defined() ? vars[i].grad() : Tensor::zeros(values[i].shape());
    const std::vector<float> a = analytic.to_vector();
    float* x = values[i].data();
    const int64_t n = values[i].numel();
    const int64_t step =
        options.max_elements_per_input > 0 ? std::max<int64_t>(1, n / options.max_elements_per_input) : 1;
    for (int64_t j = 0; j < n; j += step) {
      if (options.skip && options.skip(i, j)) continue;
      const float original = x[j];
      const float up = original + options.eps, down = original - options.eps;
      x[j] = up;
      const double plus = evaluate();
      x[j] = down;
      const double minus = evaluate();
      x[j] = original;
      // The step the float input really took (x +- eps rounds to the nearest float).
      const double numeric = (plus - minus) / (static_cast<double>(up) - static_cast<double>(down));
      const double error = std::abs(numeric - a[static_cast<size_t>(j)]);
      ++result.checked;
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (result.ok && !(error <= options.atol + options.rtol * std::abs(numeric))) {
        result.ok = false;
        result.message = fmt::format("input {} element {}: analytic {:.6g}, numeric {:.6g}", i, j,
                                     a[static_cast<size_t>(j)], numeric);
      }
    }
  }
  return result;
}

}  // namespace peel::ag
