#include "autograd/gradcheck.h"

#include <fmt/format.h>

#include <cmath>

#include "autograd/functional.h"
#include "tensor/random.h"

namespace peel::ag {

GradcheckResult gradcheck(const std::function<Variable(const std::vector<Variable>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  // Fresh contiguous copies: the check perturbs them in place.
  std::vector<Tensor> values;
  for (const Tensor& t : inputs) values.push_back(t.clone());

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
    for (const Tensor& t : values) vars.emplace_back(t, false);
    const std::vector<float> out = f(vars).value().to_vector();
    const std::vector<float> r = projection.to_vector();
    double total = 0;
    for (size_t k = 0; k < out.size(); ++k) total += static_cast<double>(out[k]) * r[k];
    return total;
  };

  // Analytic gradients.
  std::vector<Variable> vars;
  for (const Tensor& t : values) vars.emplace_back(t.clone(), true);
  loss_of(vars).backward();

  GradcheckResult result;
  for (size_t i = 0; i < values.size(); ++i) {
    const Tensor analytic = vars[i].grad().defined() ? vars[i].grad() : Tensor::zeros(values[i].shape());
    const std::vector<float> a = analytic.to_vector();
    float* x = values[i].data();
    for (int64_t j = 0; j < values[i].numel(); ++j) {
      const float original = x[j];
      x[j] = original + options.eps;
      const double plus = evaluate();
      x[j] = original - options.eps;
      const double minus = evaluate();
      x[j] = original;
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double error = std::abs(numeric - a[static_cast<size_t>(j)]);
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (result.ok && error > options.atol + options.rtol * std::abs(numeric)) {
        result.ok = false;
        result.message = fmt::format("input {} element {}: analytic {:.6g}, numeric {:.6g}", i, j,
                                     a[static_cast<size_t>(j)], numeric);
      }
    }
  }
  return result;
}

}  // namespace peel::ag
