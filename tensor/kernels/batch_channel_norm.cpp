// Batch-channel normalisation in one op (norm_extra.h): the batch part's output z is never stored.
// Forward: per-(n, c) moments of x give the batch part's statistics (Chan et al.'s combination over
// n) and, since z = a_c (x - mu_c) + beta_c is affine per channel, the moments of z and so the
// group statistics; y = relu?(A_nc (x - mu_c) + B_nc) in one pass. Backward: with g' the masked
// gradient and zhat = s_ng (z - m_ng), the group part's input gradient is
//   dz = P g' + Q (x - mu_c) + R,  P = s w_g,  Q = -s^2 a_c S2 / D,  R = -s S1 / D - s^2 (beta_c - m) S2 / D,
// with S1 = w_g sum g', S2 = w_g sum g' zhat over the D = C/G * H*W values of (n, g); the batch
// part's, dx = a_c (dz - mean dz - r_c^2 (x - mu_c) mean(dz (x - mu_c))) (batch statistics) or
// a_c dz (given statistics), is then affine in (g', x) per (n, c) too, and every sum in it follows
// from per-(n, c) sums of g' and g' (x - mu_c) and the forward's moments. Sums in double, in fixed
// blocks added in a fixed order: results do not depend on the thread count.
#include <cmath>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/kernels/norm_extra_detail.h"

namespace peel {

using namespace norm_extra_detail;

namespace {

void check_parameters(const BcnParameters& p, const ChannelLayout& L, const Tensor& x, const char* op) {
  PEEL_CHECK(p.groups > 0 && L.C % p.groups == 0,
             "{}: the {} channels of input shape {} cannot be split into {} groups", op, L.C, to_string(x.shape()),
             p.groups);
  PEEL_CHECK(p.bn_gamma.defined() == p.bn_beta.defined(),
             "{}: bn_gamma and bn_beta must both be defined or both undefined", op);
  if (p.bn_gamma.defined()) {
    shared::check_channel_vector(p.bn_gamma, L.C, x, op, "bn_gamma");
    shared::check_channel_vector(p.bn_beta, L.C, x, op, "bn_beta");
  }
  PEEL_CHECK(p.group_weight.defined() && p.group_bias.defined() && p.group_weight.numel() == p.groups &&
                 p.group_bias.numel() == p.groups,
             "{}: group_weight and group_bias must hold one value per group ({}), got shapes {} and {}", op, p.groups,
             p.group_weight.defined() ? to_string(p.group_weight.shape()) : "undefined",
             p.group_bias.defined() ? to_string(p.group_bias.shape()) : "undefined");
  PEEL_CHECK(p.eps >= 0.f && p.bn_eps >= 0.f, "{}: eps must be >= 0, got {} and {}", op, p.bn_eps, p.eps);
}

// The batch part's per-channel affine a_c = gamma_c * inv_std_c and shift beta_c.
struct BatchPart {
  std::vector<double> mean, inv_std, a, beta;
};

BatchPart batch_part_of(const BcnParameters& p, const Tensor& mean, const Tensor& inv_std) {
  const int64_t C = mean.numel();
  BatchPart b{std::vector<double>(C), std::vector<double>(C), std::vector<double>(C), std::vector<double>(C)};
  for (int64_t c = 0; c < C; ++c) {
    b.mean[c] = mean.data()[c];
    b.inv_std[c] = inv_std.data()[c];
    b.a[c] = b.inv_std[c] * (p.bn_gamma.defined() ? shared::value_at(p.bn_gamma, c) : 1.f);
    b.beta[c] = p.bn_beta.defined() ? shared::value_at(p.bn_beta, c) : 0.f;
  }
  return b;
}

// The x at which channel c of sample n meets its group's mean (z = m_ng), the centre both passes
// measure x from: terms taken about it stay small where the group's values are close together (a
// small group variance, a large 1/std), where about mu_c they would be large and cancel. mu_c
// where the channel's z does not depend on x (a_c = 0).
float group_centre(double mu, double a, double beta, double group_mean) {
  return static_cast<float>(a != 0 ? mu + (group_mean - beta) / a : mu);
}

// dx = A g' + B1 (x - c1) + B2 (x - c2) + K per (n, c): the group part's term about the group
// centre c1, the batch part's about its mean c2; g' = 0 where `kMask` and y <= 0 (a NaN y passes).
struct InputGradCoefficients {
  const float *A, *B1, *c1, *B2, *c2, *K;
};
template <bool kMask>
void rows_bcn_input_grad(const float* __restrict g, const float* __restrict x, const float* __restrict y,
                         float* __restrict dx, int64_t rows, int64_t C, const InputGradCoefficients& k) {
  const float* __restrict A = k.A, * __restrict B1 = k.B1, * __restrict c1 = k.c1;
  const float* __restrict B2 = k.B2, * __restrict c2 = k.c2, * __restrict K = k.K;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const float gm = kMask && y[i] <= 0.f ? 0.f : g[i];
      dx[i] = A[c] * gm + B1[c] * (x[i] - c1[c]) + B2[c] * (x[i] - c2[c]) + K[c];
    }
}
template <bool kMask>
void plane_bcn_input_grad(const float* __restrict g, const float* __restrict x, const float* __restrict y,
                          float* __restrict dx, int64_t S, float A, float B1, float c1, float B2, float c2, float K) {
  for (int64_t s = 0; s < S; ++s) {
    const float gm = kMask && y[s] <= 0.f ? 0.f : g[s];
    dx[s] = A * gm + B1 * (x[s] - c1) + B2 * (x[s] - c2) + K;
  }
}

}  // namespace

Tensor batch_channel_norm_forward(const Tensor& x, const BcnParameters& params, Tensor& running_mean,
                                  Tensor& running_var, BcnStatistics statistics, float momentum, BcnSaved& saved,
                                  const StatisticsSum& across) {
  const char* op = "batch_channel_norm_forward";
  const ChannelLayout L = shared::channel_layout(x, op);
  check_parameters(params, L, x, op);
  const int64_t N = L.N, C = L.C, S = L.S, G = params.groups, Cg = C / G;
  const bool batch = statistics == BcnStatistics::kBatch;
  PEEL_CHECK(N * S > 0, "{}: input of shape {} has no values per channel", op, to_string(x.shape()));
  PEEL_CHECK(running_mean.defined() == running_var.defined(),
             "{}: running_mean and running_var must both be defined or both undefined", op);
  PEEL_CHECK(batch || running_mean.defined(),
             "{}: normalising with given statistics needs running_mean and running_var", op);
  if (running_mean.defined()) {
    shared::check_channel_vector(running_mean, C, x, op, "running_mean");
    shared::check_channel_vector(running_var, C, x, op, "running_var");
  }
  const Tensor xc = shared::to_layout(x, L);
  const float* xd = xc.data();

  // Moments of x per (n, c), about the channel's first value in the sample.
  Tensor hold;
  double* shift = shared::scratch_doubles(hold, 3 * N * C);
  double* s1 = shift + N * C;
  double* s2 = s1 + N * C;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) shift[n * C + c] = L.rows ? xd[n * S * C + c] : xd[(n * C + c) * S];
  sample_channel_sums<2>(
      L, {s1, s2},
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<2> acc) {
        shared::rows_shifted_sums(xd + (n * S + r0) * C, rows, C, c0, c1, shift + n * C, acc[0], acc[1]);
      },
      [&](int64_t p, std::array<double, 2>& sums) {
        shared::plane_shifted_sums(xd + p * S, S, shift[p], sums[0], sums[1]);
      });
  saved.sample_mean = Tensor::empty({N, C});
  saved.sample_m2 = Tensor::empty({N, C});
  std::vector<double> sample_mean(N * C), sample_m2(N * C);
  for (int64_t i = 0; i < N * C; ++i) {
    sample_mean[i] = shift[i] + s1[i] / S;
    sample_m2[i] = std::max(0.0, s2[i] - s1[i] * s1[i] / S);
    saved.sample_mean.data()[i] = static_cast<float>(sample_mean[i]);
    saved.sample_m2.data()[i] = static_cast<float>(sample_m2[i]);
  }

  // The batch part's statistics: the batch's (over every shard's with `across`; then the running
  // estimates move), or the given ones.
  saved.mean = Tensor::empty({C});
  saved.inv_std = Tensor::empty({C});
  saved.batch_statistics = batch;
  saved.count = N * S;
  std::vector<double> mu(C, 0.0), var(C, 0.0);
  if (batch) {
    std::vector<double> m2(C, 0.0);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t n = 0; n < N; ++n) mu[c] += sample_mean[n * C + c];
      mu[c] /= N;
      for (int64_t n = 0; n < N; ++n) {
        const double d = sample_mean[n * C + c] - mu[c];
        m2[c] += sample_m2[n * C + c] + S * d * d;
      }
    }
    if (across) saved.count = shared::combine_shard_moments(across, N * S, C, mu.data(), m2.data());
    const int64_t M = saved.count;
    PEEL_CHECK(M > 1, "{}: expected more than 1 value per channel when training, got input shape {}", op,
               to_string(x.shape()));
    for (int64_t c = 0; c < C; ++c) {
      var[c] = m2[c] / M;
      if (running_mean.defined()) {
        float& rm = running_mean.data()[c * running_mean.stride(0)];
        float& rv = running_var.data()[c * running_var.stride(0)];
        rm = static_cast<float>((1 - momentum) * rm + momentum * mu[c]);
        rv = static_cast<float>((1 - momentum) * rv + momentum * (m2[c] / (M - 1)));
      }
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      mu[c] = shared::value_at(running_mean, c);
      var[c] = shared::value_at(running_var, c);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    saved.mean.data()[c] = static_cast<float>(mu[c]);
    saved.inv_std.data()[c] = static_cast<float>(1.0 / std::sqrt(var[c] + params.bn_eps));
  }
  const BatchPart bp = batch_part_of(params, saved.mean, saved.inv_std);

  // The group statistics of z, then y = relu?(A (x - mu_c) + B) per (n, c).
  const Tensor gw = params.group_weight.contiguous(), gb = params.group_bias.contiguous();
  saved.group_mean = Tensor::empty({N, G});
  saved.group_inv_std = Tensor::empty({N, G});
  Tensor hold_f;
  float* center = shared::scratch_floats(hold_f, 3 * N * C);
  float* A = center + N * C;
  float* B = A + N * C;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      auto z_mean = [&](int64_t c) { return bp.a[c] * (sample_mean[n * C + c] - bp.mean[c]) + bp.beta[c]; };
      double m = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) m += z_mean(c);
      m /= Cg;
      double m2 = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double d = z_mean(c) - m;
        m2 += bp.a[c] * bp.a[c] * sample_m2[n * C + c] + S * d * d;
      }
      const double s = 1.0 / std::sqrt(m2 / (Cg * S) + params.eps);
      saved.group_mean.data()[n * G + g] = static_cast<float>(m);
      saved.group_inv_std.data()[n * G + g] = static_cast<float>(s);
      const double w = gw.data()[g];
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        // y = w s (z - m) + b with z - m = a (x - centre) + e, e ~ 0 (what float centre could not hold).
        const int64_t i = n * C + c;
        center[i] = group_centre(bp.mean[c], bp.a[c], bp.beta[c], m);
        const double e = bp.a[c] * (center[i] - bp.mean[c]) + bp.beta[c] - m;
        A[i] = static_cast<float>(w * s * bp.a[c]);
        B[i] = static_cast<float>(w * s * e + gb.data()[g]);
      }
    }
  Tensor y = shared::empty_in_layout(x.shape(), L);
  float* yd = y.data();
  for_each_chunk(
      L,
      [&](int64_t n, int64_t r0, int64_t r1) {
        shared::rows_affine(xd + r0 * C, yd + r0 * C, r1 - r0, C, {center + n * C, A + n * C, B + n * C}, params.relu);
      },
      [&](int64_t p) { shared::plane_affine(xd + p * S, yd + p * S, S, center[p], A[p], B[p], params.relu); });
  return y;
}

BcnGrads batch_channel_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& y,
                                     const BcnParameters& params, const BcnSaved& saved, const StatisticsSum& across) {
  const char* op = "batch_channel_norm_backward";
  const shared::BackwardOperands o = shared::backward_operands(grad_y, x, y, params.relu, op);
  const ChannelLayout& L = o.L;
  check_parameters(params, L, x, op);
  const int64_t N = L.N, C = L.C, S = L.S, G = params.groups, Cg = C / G;
  PEEL_CHECK(saved.sample_mean.shape() == Shape({N, C}) && saved.sample_m2.shape() == Shape({N, C}) &&
                 saved.mean.shape() == Shape({C}) && saved.inv_std.shape() == Shape({C}) &&
                 saved.group_mean.shape() == Shape({N, G}) && saved.group_inv_std.shape() == Shape({N, G}),
             "{}: the saved statistics do not belong to input shape {} with {} groups", op, to_string(x.shape()), G);
  const bool mask = params.relu;
  const float* gd = o.g.data();
  const float* xd = o.x.data();
  const float* yd = mask ? o.y.data() : nullptr;
  const BatchPart bp = batch_part_of(params, saved.mean, saved.inv_std);

  // Per (n, c): SG = sum g', SGX = sum g' (x - mu_c).
  Tensor hold;
  double* sg = shared::scratch_doubles(hold, 2 * N * C);
  double* sgx = sg + N * C;
  sample_channel_sums<2>(
      L, {sg, sgx},
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<2> acc) {
        const int64_t at = (n * S + r0) * C;
        shared::rows_grad_sums(gd + at, xd + at, mask ? yd + at : nullptr, mask, rows, C, c0, c1, bp.mean.data(),
                               acc[0], acc[1]);
      },
      [&](int64_t p, std::array<double, 2>& sums) {
        shared::plane_grad_sums(gd + p * S, xd + p * S, mask ? yd + p * S : nullptr, mask, S, bp.mean[p % C], sums[0],
                                sums[1]);
      });

  // The group part: dz = P g' + Q (x - mu_c) + R per (n, c), and its parameters' gradients.
  const Tensor gw = params.group_weight.contiguous();
  BcnGrads grads;
  grads.group_weight = Tensor::zeros(params.group_weight.shape());
  grads.group_bias = Tensor::zeros(params.group_bias.shape());
  std::vector<double> P(N * C), Q(N * C), R(N * C), dw(G, 0.0), db(G, 0.0);
  std::vector<float> centre(N * C);  // the group centre of (n, c), as the forward had it
  const double D = static_cast<double>(Cg * S);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const double s = saved.group_inv_std.data()[n * G + g], m = saved.group_mean.data()[n * G + g];
      const double w = gw.data()[g];
      double sum_g = 0, sum_gz = 0;  // sum g', sum g' zhat over (n, g)
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const int64_t i = n * C + c;
        sum_g += sg[i];
        sum_gz += s * (bp.a[c] * sgx[i] + (bp.beta[c] - m) * sg[i]);
      }
      dw[g] += sum_gz;
      db[g] += sum_g;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        // dz = s w (g' - sum g' / D - zhat sum(g' zhat) / D), zhat = s (a (x - centre) + e).
        const int64_t i = n * C + c;
        centre[i] = group_centre(bp.mean[c], bp.a[c], bp.beta[c], m);
        const double e = bp.a[c] * (centre[i] - bp.mean[c]) + bp.beta[c] - m;
        P[i] = s * w;
        Q[i] = -s * s * bp.a[c] * w * sum_gz / D;
        R[i] = -s * w * sum_g / D - s * s * e * w * sum_gz / D;
      }
    }
  for (int64_t g = 0; g < G; ++g) {
    grads.group_weight.data()[g] = static_cast<float>(dw[g]);
    grads.group_bias.data()[g] = static_cast<float>(db[g]);
  }

  // The batch part: sums of dz and dz (x - mu_c) per channel from the per-(n, c) sums and moments,
  // then dx = a (dz - mean dz) - a r^2 mean(dz (x - mu_c)) (x - mu_c) per (n, c).
  Tensor hold_f;
  float* A = shared::scratch_floats(hold_f, 6 * N * C);
  float* B1 = A + N * C;
  float* c1 = B1 + N * C;
  float* B2 = c1 + N * C;
  float* c2 = B2 + N * C;
  float* K = c2 + N * C;
  if (params.bn_gamma.defined()) {
    grads.bn_gamma = Tensor::empty({C});
    grads.bn_beta = Tensor::empty({C});
  }
  // This shard's sums of dz and dz (x - mu_c) per channel; the input gradient takes the whole
  // batch's (all shards' with `across`), the affine gradients this shard's.
  std::vector<double> sums(2 * C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    double& sum_dz = sums[c];
    double& sum_dzx = sums[C + c];
    for (int64_t n = 0; n < N; ++n) {
      // dz = P g' + Q (x - centre) + R, and x - centre = (x - mu_c) - k with k = centre - mu_c.
      const int64_t i = n * C + c;
      const double k = centre[i] - bp.mean[c];
      const double d = saved.sample_mean.data()[i] - bp.mean[c];  // mean of (x - mu_c) over the sample
      const double q = saved.sample_m2.data()[i] + S * d * d;     // sum of (x - mu_c)^2
      sum_dz += P[i] * sg[i] + Q[i] * S * (d - k) + R[i] * S;
      sum_dzx += P[i] * sgx[i] + Q[i] * (q - k * S * d) + R[i] * S * d;
    }
  }
  std::vector<double> whole = sums;
  if (across && saved.batch_statistics) across(whole.data(), 2 * C);
  const double M = static_cast<double>(saved.batch_statistics ? saved.count : N * S);
  for (int64_t c = 0; c < C; ++c) {
    const double sum_dz = sums[c], sum_dzx = sums[C + c];
    const double a = bp.a[c], r = bp.inv_std[c];
    const double u = saved.batch_statistics ? whole[c] / M : 0.0;
    const double v = saved.batch_statistics ? r * r * whole[C + c] / M : 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t i = n * C + c;
      A[i] = static_cast<float>(a * P[i]);
      B1[i] = static_cast<float>(a * Q[i]);
      c1[i] = centre[i];
      B2[i] = static_cast<float>(-a * v);
      c2[i] = saved.mean.data()[c];
      K[i] = static_cast<float>(a * (R[i] - u));
    }
    if (params.bn_gamma.defined()) {
      grads.bn_gamma.data()[c] = static_cast<float>(r * sum_dzx);
      grads.bn_beta.data()[c] = static_cast<float>(sum_dz);
    }
  }
  grads.x = shared::empty_in_layout(x.shape(), L);
  float* dx = grads.x.data();
  for_each_chunk(
      L,
      [&](int64_t n, int64_t r0, int64_t r1) {
        const int64_t sample = n * C;
        const InputGradCoefficients k{A + sample, B1 + sample, c1 + sample, B2 + sample, c2 + sample, K + sample};
        const int64_t at = r0 * C;
        if (mask)
          rows_bcn_input_grad<true>(gd + at, xd + at, yd + at, dx + at, r1 - r0, C, k);
        else
          rows_bcn_input_grad<false>(gd + at, xd + at, nullptr, dx + at, r1 - r0, C, k);
      },
      [&](int64_t p) {
        const int64_t at = p * S;
        if (mask)
          plane_bcn_input_grad<true>(gd + at, xd + at, yd + at, dx + at, S, A[p], B1[p], c1[p], B2[p], c2[p], K[p]);
        else
          plane_bcn_input_grad<false>(gd + at, xd + at, nullptr, dx + at, S, A[p], B1[p], c1[p], B2[p], c2[p], K[p]);
      });
  return grads;
}

}  // namespace peel
