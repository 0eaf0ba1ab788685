// The kernels of tensor/kernels/norm_extra.h (weight standardisation, weight normalisation, EstBN's
// update, FRN + TLU, TLU) against double-precision loops written here from the definitions, in
// every memory layout, thread-count independence and buffer reuse in the steady state. Their
// backward passes are checked against finite differences through the nn ops, in
// tests/nn/test_norm_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

// ---- Weight reparametrisations ---------------------------------------------------------------

const Shape kWeightShapes[] = {Shape{4, 3, 3, 3}, Shape{16, 1, 3, 3}, Shape{5, 7}, Shape{3, 600}, Shape{32, 64, 3, 3}};

struct RowView {
  int64_t O, I;
};
RowView rows_of(const Shape& s) {
  int64_t I = 1;
  for (size_t i = 1; i < s.size(); ++i) I *= s[i];
  return {s[0], I};
}

// w_hat and dw of weight standardisation, dw from the full Jacobian
// d w_hat_k / d w_j = r (delta_jk - 1/I) - r^3 (w_k - mu)(w_j - mu) / (I - 1).
void weight_standardize_reference(const std::vector<double>& w, const std::vector<double>& g, RowView d, double eps,
                                  std::vector<double>& w_hat, std::vector<double>& dw) {
  w_hat.assign(w.size(), 0);
  dw.assign(w.size(), 0);
  for (int64_t i = 0; i < d.O; ++i) {
    const double* row = w.data() + i * d.I;
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d.I; ++j) mu += row[j];
    mu /= d.I;
    for (int64_t j = 0; j < d.I; ++j) var += (row[j] - mu) * (row[j] - mu);
    var /= d.I - 1;
    const double r = 1 / std::sqrt(var + eps);
    for (int64_t k = 0; k < d.I; ++k) w_hat[i * d.I + k] = (row[k] - mu) * r;
    for (int64_t j = 0; j < d.I; ++j) {
      double total = 0;
      for (int64_t k = 0; k < d.I; ++k) {
        const double jac =
            r * ((j == k ? 1.0 : 0.0) - 1.0 / d.I) - r * r * r * (row[k] - mu) * (row[j] - mu) / (d.I - 1);
        total += g[i * d.I + k] * jac;
      }
      dw[i * d.I + j] = total;
    }
  }
}

// w = g v / ||v|| and its gradients from d w_k / d v_j = g (delta_jk / n - v_k v_j / n^3), d w_k / d g = v_k / n.
void weight_norm_reference(const std::vector<double>& v, const std::vector<double>& gain,
                           const std::vector<double>& grad, RowView d, std::vector<double>& w, std::vector<double>& dv,
                           std::vector<double>& dg) {
  w.assign(v.size(), 0);
  dv.assign(v.size(), 0);
  dg.assign(d.O, 0);
  for (int64_t i = 0; i < d.O; ++i) {
    const double* row = v.data() + i * d.I;
    double n2 = 0;
    for (int64_t j = 0; j < d.I; ++j) n2 += row[j] * row[j];
    const double n = std::sqrt(n2);
    for (int64_t k = 0; k < d.I; ++k) {
      w[i * d.I + k] = gain[i] * row[k] / n;
      dg[i] += grad[i * d.I + k] * row[k] / n;
    }
    for (int64_t j = 0; j < d.I; ++j) {
      double total = 0;
      for (int64_t k = 0; k < d.I; ++k)
        total += grad[i * d.I + k] * gain[i] * ((j == k ? 1.0 : 0.0) / n - row[k] * row[j] / (n * n * n));
      dv[i * d.I + j] = total;
    }
  }
}

}  // namespace

TEST(WeightStandardize, ForwardAndBackwardMatchReference) {
  Generator gen(21);
  for (const Shape& shape : kWeightShapes) {
    const RowView d = rows_of(shape);
    // An offset mean and a small spread, as trained conv weights have.
    const Tensor w = random_tensor(shape, gen, 0.05f, 0.1f), g = random_tensor(shape, gen);
    std::vector<double> w_hat, dw;
    weight_standardize_reference(to_double(w), to_double(g), d, 1e-5, w_hat, dw);
    for (Layout l : kLayouts) {
      const std::string what = "weight_standardize " + to_string(shape) + " " + layout_name(l);
      WeightStandardizeSaved saved;
      const Tensor out = weight_standardize_forward(in_layout(w, l), 1e-5f, saved);
      expect_close(out, w_hat, 1e-5, 1e-5, what);
      EXPECT_TRUE(out.is_contiguous()) << what;
      const Tensor grad = weight_standardize_backward(in_layout(g, l), in_layout(w, l), saved);
      expect_close(grad, dw, 1e-4, 1e-4, what + " dw");
    }
  }
}

TEST(WeightNorm, ForwardAndBackwardMatchReference) {
  Generator gen(23);
  for (const Shape& shape : kWeightShapes) {
    const RowView d = rows_of(shape);
    const Tensor v = random_tensor(shape, gen), grad = random_tensor(shape, gen);
    Shape g_shape(shape.size(), 1);
    g_shape[0] = d.O;
    const Tensor gain = uniform(g_shape, 0.5f, 2.f, gen);
    std::vector<double> w, dv, dg;
    weight_norm_reference(to_double(v), to_double(gain), to_double(grad), d, w, dv, dg);
    for (Layout l : kLayouts) {
      const std::string what = "weight_norm " + to_string(shape) + " " + layout_name(l);
      Tensor inv_norm;
      const Tensor out = weight_norm_forward(in_layout(v, l), gain, inv_norm);
      expect_close(out, w, 1e-6, 1e-5, what);
      const WeightNormGrads grads = weight_norm_backward(in_layout(grad, l), in_layout(v, l), gain, inv_norm);
      expect_close(grads.v, dv, 1e-5, 1e-4, what + " dv");
      expect_close(grads.g, dg, 1e-5, 1e-5, what + " dg");
      EXPECT_EQ(grads.g.shape(), g_shape) << what;
    }
    std::vector<double> norms(d.O, 0);
    const std::vector<double> vv = to_double(v);
    for (int64_t i = 0; i < d.O * d.I; ++i) norms[i / d.I] += vv[i] * vv[i];
    for (double& n : norms) n = std::sqrt(n);
    expect_close(row_norms(v), norms, 0, 1e-6, "row_norms " + to_string(shape));
  }
}

// ---- Activation kernels: shapes and references ------------------------------------------------

namespace {

const Shape kActivationShapes[] = {Shape{4, 5, 3, 7}, Shape{3, 61, 5, 4}, Shape{2, 300, 2, 3}, Shape{8, 5, 30, 31},
                                   Shape{16, 7},      Shape{5, 6, 11},    Shape{6, 9, 1, 1},   Shape{2, 32, 1, 1}};

struct Dims {
  int64_t N, C, S;
  int64_t at(int64_t n, int64_t c, int64_t s) const { return (n * C + c) * S + s; }
};
Dims dims_of(const Shape& s) {
  Dims d{s[0], s[1], 1};
  for (size_t i = 2; i < s.size(); ++i) d.S *= s[i];
  return d;
}

// Inputs with exact zeros in a few positions: with beta = tau they make TLU ties (y == tau).
Tensor with_zeros(Tensor x, Generator& gen) {
  float* p = x.data();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (gen.uniform() < 0.1f) p[i] = 0.f;
  return x;
}

struct FrnReference {
  std::vector<double> z, dx, dgamma, dbeta, deps, dtau;
};

// FRN + TLU from the definition; gradients from d xhat_k / d x_i = r delta_ik - r^3 x_k x_i / S and
// torch.max's shares (half on a tie).
FrnReference frn_reference(const std::vector<double>& x, const std::vector<double>& gz, Dims d,
                           const std::vector<double>& gamma, const std::vector<double>& beta,
                           const std::vector<double>& eps, const std::vector<double>* tau) {
  FrnReference r;
  r.z.assign(x.size(), 0);
  r.dx.assign(x.size(), 0);
  r.dgamma.assign(d.C, 0);
  r.dbeta.assign(d.C, 0);
  r.deps.assign(d.C, 0);
  r.dtau.assign(d.C, 0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c) {
      double nu2 = 0;
      for (int64_t s = 0; s < d.S; ++s) nu2 += x[d.at(n, c, s)] * x[d.at(n, c, s)];
      nu2 /= d.S;
      const double rr = 1 / std::sqrt(nu2 + std::abs(eps[c]));
      std::vector<double> gy(d.S);
      for (int64_t s = 0; s < d.S; ++s) {
        const int64_t i = d.at(n, c, s);
        const double y = gamma[c] * x[i] * rr + beta[c];
        double share = 1;
        if (tau) {
          const double t = (*tau)[c];
          share = y > t ? 1.0 : (y == t ? 0.5 : 0.0);
          r.z[i] = std::max(y, t);
          r.dtau[c] += gz[i] * (1 - share);
        } else {
          r.z[i] = y;
        }
        gy[s] = gz[i] * share;
        r.dbeta[c] += gy[s];
        r.dgamma[c] += gy[s] * x[i] * rr;
      }
      double sum_gyx = 0;
      for (int64_t s = 0; s < d.S; ++s) sum_gyx += gy[s] * x[d.at(n, c, s)];
      for (int64_t s = 0; s < d.S; ++s) {
        double total = 0;
        for (int64_t k = 0; k < d.S; ++k) {
          const double jac = (s == k ? rr : 0.0) - rr * rr * rr * x[d.at(n, c, k)] * x[d.at(n, c, s)] / d.S;
          total += gamma[c] * gy[k] * jac;
        }
        r.dx[d.at(n, c, s)] = total;
      }
      const double sign = eps[c] > 0 ? 1 : (eps[c] < 0 ? -1 : 0);
      r.deps[c] += sign * -0.5 * gamma[c] * rr * rr * rr * sum_gyx;
    }
  return r;
}

}  // namespace

TEST(EstimatedBatchNorm, UpdateUsesDeviationsAboutTheOldRunningMean) {
  Generator gen(25);
  for (const Shape& shape : kActivationShapes) {
    const Dims d = dims_of(shape);
    const Tensor x = random_tensor(shape, gen, 0.7f, 2.f);
    const Tensor rm0 = random_tensor({d.C}, gen), rv0 = uniform({d.C}, 0.5f, 2.f, gen);
    for (float r : {0.f, 0.01f, 0.3f, 1.f}) {
      std::vector<double> rm(d.C), rv(d.C);
      const std::vector<double> xv = to_double(x), m0 = to_double(rm0), v0 = to_double(rv0);
      const double M = static_cast<double>(d.N * d.S);
      for (int64_t c = 0; c < d.C; ++c) {
        double mean = 0, dev = 0;
        for (int64_t n = 0; n < d.N; ++n)
          for (int64_t s = 0; s < d.S; ++s) {
            mean += xv[d.at(n, c, s)];
            dev += std::pow(xv[d.at(n, c, s)] - m0[c], 2);
          }
        rm[c] = (1 - r) * m0[c] + r * mean / M;
        rv[c] = (1 - r) * v0[c] + r * dev / M;
      }
      for (Layout l : kLayouts) {
        const std::string what = "estbn update " + to_string(shape) + " r=" + std::to_string(r) + " " + layout_name(l);
        Tensor running_mean = rm0.clone(), running_var = rv0.clone();
        estimated_batch_norm_update(in_layout(x, l), running_mean, running_var, r);
        expect_close(running_mean, rm, 1e-6, 1e-6, what + " mean");
        expect_close(running_var, rv, 1e-6, 1e-6, what + " var");
      }
    }
  }
}

TEST(EstimatedBatchNorm, UpdateWithAStatisticsSumUsesTheWholeBatchOnEveryShard) {
  // A batch of 6 split 2 + 4, the sum between the shards played by hand: each shard's sums are
  // recorded by a first call, then each shard updates with the other's added to its own.
  Generator gen(31);
  const Tensor x = random_tensor({6, 5, 3, 3}, gen, 0.7f, 2.f);
  const Tensor rm0 = random_tensor({5}, gen), rv0 = uniform({5}, 0.5f, 2.f, gen);
  const Tensor shards[2] = {x.slice(0, 0, 2).contiguous(), x.slice(0, 2, 6).contiguous()};
  std::vector<double> sums[2];
  for (int s = 0; s < 2; ++s) {
    Tensor rm = rm0.clone(), rv = rv0.clone();
    estimated_batch_norm_update(shards[s], rm, rv, 0.3f,
                                [&](double* values, int64_t count) { sums[s].assign(values, values + count); });
    ASSERT_EQ(sums[s].size(), 11u);                // 2C + 1: the two sums per channel and the count
    EXPECT_EQ(sums[s].back(), 9.0 * (2 + 2 * s));  // values per channel in this shard
  }
  Tensor whole_mean = rm0.clone(), whole_var = rv0.clone();
  estimated_batch_norm_update(x, whole_mean, whole_var, 0.3f);
  for (int s = 0; s < 2; ++s) {
    Tensor rm = rm0.clone(), rv = rv0.clone();
    estimated_batch_norm_update(shards[s], rm, rv, 0.3f, [&](double* values, int64_t count) {
      for (int64_t i = 0; i < count; ++i) values[i] += sums[1 - s][static_cast<size_t>(i)];
    });
    const std::string what = "shard " + std::to_string(s);
    expect_close(rm, to_double(whole_mean), 1e-6, 1e-6, what + " mean");
    expect_close(rv, to_double(whole_var), 1e-6, 1e-6, what + " var");
  }
}

TEST(FilterResponseNorm, ForwardAndBackwardMatchReference) {
  Generator gen(26);
  for (const Shape& shape : kActivationShapes) {
    const Dims d = dims_of(shape);
    for (bool with_tlu : {true, false}) {
      const Tensor x = with_zeros(random_tensor(shape, gen, 0.2f, 1.5f), gen);
      const Tensor gz = random_tensor(shape, gen);
      const Tensor gamma = random_tensor({d.C}, gen, 1.f, 0.5f);
      Tensor beta = random_tensor({d.C}, gen, 0.f, 0.5f);
      const Tensor tau = with_tlu ? random_tensor({d.C}, gen, 0.f, 0.5f) : Tensor();
      if (with_tlu) beta.data()[0] = tau.data()[0];  // channel 0: every zero input is a tie
      // Signed eps: the layer uses |eps|; one channel large, where eps matters.
      Tensor eps = random_tensor({d.C}, gen, 0.f, 1e-3f);
      eps.data()[d.C - 1] = -0.5f;
      const std::vector<double> tv = with_tlu ? to_double(tau) : std::vector<double>();
      const FrnReference ref = frn_reference(to_double(x), to_double(gz), d, to_double(gamma), to_double(beta),
                                             to_double(eps), with_tlu ? &tv : nullptr);
      for (Layout l : kLayouts) {
        const std::string what = "frn " + to_string(shape) + (with_tlu ? " tlu " : " ") + layout_name(l);
        FrnSaved saved;
        const Tensor xl = in_layout(x, l);
        const Tensor z = filter_response_norm_forward(xl, gamma, beta, eps, tau, saved);
        expect_close(z, ref.z, 1e-5, 1e-5, what);
        expect_layout_follows(z, l, what);
        const FrnGrads grads = filter_response_norm_backward(in_layout(gz, l), xl, gamma, beta, eps, tau, saved);
        expect_close(grads.x, ref.dx, 1e-4, 1e-4, what + " dx");
        expect_layout_follows(grads.x, l, what + " dx");
        expect_close(grads.gamma, ref.dgamma, 1e-4, 1e-4, what + " dgamma");
        expect_close(grads.beta, ref.dbeta, 1e-4, 1e-5, what + " dbeta");
        expect_close(grads.eps, ref.deps, 1e-4, 1e-4, what + " deps");
        ASSERT_EQ(grads.tau.defined(), with_tlu) << what;
        if (with_tlu) expect_close(grads.tau, ref.dtau, 1e-4, 1e-5, what + " dtau");
      }
    }
  }
}

TEST(FilterResponseNorm, TiesSplitTheGradientAsTorchMax) {
  // One sample, one channel, x = (0, 1, -1): with beta = tau = 0, y = (0, a, -a) and the tie at
  // position 0 sends half of its gradient to x's path and half to tau (torch.max's rule).
  const Tensor x = Tensor::from_vector({0.f, 1.f, -1.f}, {1, 1, 3});
  const Tensor gamma = Tensor::ones({1}), beta = Tensor::zeros({1}), tau = Tensor::zeros({1});
  const Tensor eps = Tensor::full({1}, 1e-6f);
  FrnSaved saved;
  const Tensor z = filter_response_norm_forward(x, gamma, beta, eps, tau, saved);
  EXPECT_THAT(z.to_vector(), ::testing::ElementsAre(0.f, ::testing::FloatNear(1.2247f, 1e-4f), 0.f));
  const FrnGrads g = filter_response_norm_backward(Tensor::ones({1, 1, 3}), x, gamma, beta, eps, tau, saved);
  EXPECT_FLOAT_EQ(g.tau.item(), 1.5f);   // the tie's half plus the clipped -a
  EXPECT_FLOAT_EQ(g.beta.item(), 1.5f);  // the tie's half plus the passed +a
}

TEST(Tlu, ForwardAndBackwardMatchReferenceWithTies) {
  Generator gen(28);
  for (const Shape& shape : kActivationShapes) {
    const Dims d = dims_of(shape);
    const Tensor x = with_zeros(random_tensor(shape, gen), gen), gz = random_tensor(shape, gen);
    Tensor tau = random_tensor({d.C}, gen, 0.f, 0.5f);
    tau.data()[0] = 0.f;  // ties at the zeros of channel 0
    std::vector<double> z(x.numel()), dx(x.numel()), dtau(d.C, 0);
    const std::vector<double> xv = to_double(x), gv = to_double(gz), tv = to_double(tau);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t c = (i / d.S) % d.C;
      z[i] = std::max(xv[i], tv[c]);
      const double share = xv[i] > tv[c] ? 1.0 : (xv[i] == tv[c] ? 0.5 : 0.0);
      dx[i] = gv[i] * share;
      dtau[c] += gv[i] * (1 - share);
    }
    for (Layout l : kLayouts) {
      const std::string what = "tlu " + to_string(shape) + " " + layout_name(l);
      const Tensor out = tlu_forward(in_layout(x, l), tau);
      expect_close(out, z, 0, 0, what);
      expect_layout_follows(out, l, what);
      const TluGrads g = tlu_backward(in_layout(gz, l), in_layout(x, l), tau);
      expect_close(g.x, dx, 0, 0, what + " dx");
      expect_close(g.tau, dtau, 1e-5, 1e-5, what + " dtau");
    }
  }
}

TEST(NormExtraKernels, ResultsDoNotDependOnThreadCount) {
  Generator gen(29);
  const Shape shape{16, 64, 14, 14};
  const Tensor x = with_zeros(random_tensor(shape, gen, 0.3f, 2.f), gen), gz = random_tensor(shape, gen);
  const Tensor gamma = random_tensor({64}, gen, 1.f, 0.2f), beta = Tensor::zeros({64}), tau = Tensor::zeros({64});
  const Tensor eps = Tensor::full({64}, 1e-6f);
  const Tensor w = random_tensor({128, 64, 3, 3}, gen, 0.f, 0.05f), gw = random_tensor({128, 64, 3, 3}, gen);
  for (Layout l : {Layout::kContiguous, Layout::kChannelsLast}) {
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      std::vector<float> all;
      auto append = [&](const Tensor& t) {
        const std::vector<float> v = t.to_vector();
        all.insert(all.end(), v.begin(), v.end());
      };
      const Tensor xl = in_layout(x, l);
      FrnSaved saved;
      append(filter_response_norm_forward(xl, gamma, beta, eps, tau, saved));
      const FrnGrads g = filter_response_norm_backward(in_layout(gz, l), xl, gamma, beta, eps, tau, saved);
      for (const Tensor& t : {g.x, g.gamma, g.beta, g.eps, g.tau}) append(t);
      Tensor rm = Tensor::zeros({64}), rv = Tensor::ones({64});
      estimated_batch_norm_update(xl, rm, rv, 0.1f);
      append(rm);
      append(rv);
      append(tlu_backward(in_layout(gz, l), xl, tau).tau);
      WeightStandardizeSaved ws;
      append(weight_standardize_forward(w, 1e-5f, ws));
      append(weight_standardize_backward(gw, w, ws));
      runs.push_back(all);
    }
    set_num_threads(0);
    EXPECT_EQ(runs[0], runs[1]) << layout_name(l);
    EXPECT_EQ(runs[0], runs[2]) << layout_name(l);
  }
}

TEST(NormExtraKernels, SteadyStateCallsReuseCachedBuffers) {
  Generator gen(30);
  const Shape shape{16, 32, 14, 14};
  const Tensor x = random_tensor(shape, gen).channels_last(), gz = random_tensor(shape, gen).channels_last();
  const Tensor gamma = random_tensor({32}, gen), beta = random_tensor({32}, gen), tau = Tensor::zeros({32});
  const Tensor eps = Tensor::full({32}, 1e-6f);
  const Tensor w = random_tensor({64, 32, 3, 3}, gen), gw = random_tensor({64, 32, 3, 3}, gen);
  const Tensor gain = Tensor::ones({64, 1, 1, 1});
  Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32});
  auto step = [&] {
    FrnSaved saved;
    const Tensor z = filter_response_norm_forward(x, gamma, beta, eps, tau, saved);
    const FrnGrads g = filter_response_norm_backward(gz, x, gamma, beta, eps, tau, saved);
    estimated_batch_norm_update(x, rm, rv, 0.01f);
    const TluGrads t = tlu_backward(gz, tlu_forward(x, tau), tau);
    WeightStandardizeSaved ws;
    const Tensor w_hat = weight_standardize_forward(w, 1e-5f, ws);
    const Tensor dw = weight_standardize_backward(gw, w, ws);
    Tensor inv_norm;
    const Tensor wn = weight_norm_forward(w, gain, inv_norm);
    const WeightNormGrads wg = weight_norm_backward(gw, w, gain, inv_norm);
  };
  step();
  step();
  const int64_t before = memory_stats().system_allocations;
  step();
  EXPECT_EQ(memory_stats().system_allocations, before);
}

TEST(NormExtraKernels, BadShapesAreNamed) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  const Tensor c3 = Tensor::ones({3}), c4 = Tensor::ones({4});
  FrnSaved saved;
  EXPECT_THAT([&] { filter_response_norm_forward(x, c4, c3, c3, Tensor(), saved); },
              ThrowsMessage<Error>(HasSubstr("filter_response_norm_forward: gamma has shape [4]")));
  EXPECT_THAT([&] { filter_response_norm_backward(x, x, c3, c3, c3, Tensor(), FrnSaved{}); },
              ThrowsMessage<Error>(HasSubstr("saved inv_rms must have shape [2, 3]")));
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  EXPECT_THAT([&] { estimated_batch_norm_update(x, rm, rv, 1.5f); },
              ThrowsMessage<Error>(HasSubstr("moving speed must be in [0, 1], got 1.5")));
  Tensor rm4 = Tensor::zeros({4});
  EXPECT_THAT([&] { estimated_batch_norm_update(x, rm4, rv, 0.1f); },
              ThrowsMessage<Error>(HasSubstr("running_mean has shape [4]")));
  WeightStandardizeSaved ws;
  EXPECT_THAT(
      [&] {
        weight_standardize_forward(Tensor::ones({4, 1, 1, 1}), 1e-5f, ws);
      },
      ThrowsMessage<Error>(HasSubstr("more than one value for an unbiased variance")));
  Tensor inv;
  EXPECT_THAT(
      [&] {
        weight_norm_forward(Tensor::ones({4, 3}), Tensor::ones({3, 1}), inv);
      },
      ThrowsMessage<Error>(HasSubstr("weight_norm_forward: g has shape [3, 1] but the weight [4, 3] has 4 rows")));
  EXPECT_THAT([&] { tlu_forward(x, c4); }, ThrowsMessage<Error>(HasSubstr("tlu_forward: tau has shape [4]")));
}
