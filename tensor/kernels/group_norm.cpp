// Group normalisation (LayerNorm is its G = 1 case): statistics per (n, group) over C/G channels
// and all positions, a per-channel affine. Both passes first reduce per (n, c), in fixed blocks
// added in a fixed order, then combine the channels of a group, so results do not depend on threads.
#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/norm_detail.h"
#include "tensor/threads.h"

namespace peel {

using namespace kernels_detail;

namespace {

constexpr int64_t kElementsPerTask = 16384;

void check_groups(const ChannelLayout& L, int64_t groups, const Tensor& x, const char* op) {
  PEEL_CHECK(groups > 0 && L.C % groups == 0,
             "{}: expected the number of channels of input shape {} to be divisible by groups={}", op,
             to_string(x.shape()), groups);
}

// Calls body(n, r0, r1) on the rows [r0, r1) of sample n, splitting [0, N*S) rows among threads.
template <class Body>
void for_rows_by_sample(const ChannelLayout& L, Body&& body) {
  parallel_for(L.N * L.S, std::max<int64_t>(1, kElementsPerTask / L.C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1;) {
      const int64_t n = r / L.S, end = std::min(r1, (n + 1) * L.S);
      body(n, r, end);
      r = end;
    }
  });
}

// Per (n, c) sums over the S positions of sample n; `rows_task(n, r0, rows, c0, c1, s1, s2)` adds
// the sums of rows [r0, r0 + rows) (sample-relative) and channels [c0, c1) into s1/s2 (rows form),
// `plane_task(p, s1, s2)` sets those of plane p = n*C + c (planes form). out1/out2: (N*C).
template <class RowsTask, class PlaneTask>
void per_sample_channel_sums(const ChannelLayout& L, double* out1, double* out2, RowsTask&& rows_task,
                             PlaneTask&& plane_task) {
  const int64_t N = L.N, C = L.C, S = L.S;
  if (!L.rows) {
    parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) plane_task(p, out1[p], out2[p]);
    });
    return;
  }
  const RowBlocking b = row_blocking(S, C);
  Tensor hold;
  double* part1 = scratch_doubles(hold, 2 * N * b.row_blocks * C);
  double* part2 = part1 + N * b.row_blocks * C;
  parallel_for(N * b.tasks(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / b.tasks(), rest = t % b.tasks();
      const int64_t rb = rest / b.chunks, c0 = (rest % b.chunks) * b.channels_per_chunk;
      const int64_t c1 = std::min(C, c0 + b.channels_per_chunk);
      const int64_t r0 = rb * b.rows_per_block, rows = std::min(b.rows_per_block, S - r0);
      double* p1 = part1 + (n * b.row_blocks + rb) * C;
      double* p2 = part2 + (n * b.row_blocks + rb) * C;
      std::fill(p1 + c0, p1 + c1, 0.0);
      std::fill(p2 + c0, p2 + c1, 0.0);
      rows_task(n, r0, rows, c0, c1, p1, p2);
    }
  });
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      double t1 = 0, t2 = 0;
      for (int64_t rb = 0; rb < b.row_blocks; ++rb) {
        t1 += part1[(n * b.row_blocks + rb) * C + c];
        t2 += part2[(n * b.row_blocks + rb) * C + c];
      }
      out1[n * C + c] = t1;
      out2[n * C + c] = t2;
    }
  }
}

}  // namespace

Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                          GroupNormSaved& saved, bool relu) {
  const char* op = "group_norm_forward";
  const ChannelLayout L = channel_layout(x, op);
  const int64_t N = L.N, C = L.C, S = L.S, G = groups;
  check_groups(L, groups, x, op);
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  if (beta.defined()) check_channel_vector(beta, C, x, op, "beta");
  PEEL_CHECK(eps >= 0.f, "{}: eps must be >= 0, got {}", op, eps);
  if (L.numel() == 0) {
    saved.mean = Tensor::zeros({N, G});
    saved.inv_std = Tensor::zeros({N, G});
    saved.scale = Tensor::zeros({N, C});
    saved.shift = Tensor::zeros({N, C});
    return empty_in_layout(x.shape(), L);
  }
  const Tensor xc = to_layout(x, L);
  const float* xd = xc.data();

  // Per (n, c): sums of (x - shift) and its square, shift = the channel's first value in sample n.
  Tensor hold_d, hold_f;
  double* s1 = scratch_doubles(hold_d, 3 * N * C);
  double* s2 = s1 + N * C;
  double* shift = s2 + N * C;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) shift[n * C + c] = L.rows ? xd[n * S * C + c] : xd[(n * C + c) * S];
  per_sample_channel_sums(
      L, s1, s2,
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, double* p1, double* p2) {
        rows_shifted_sums(xd + (n * S + r0) * C, rows, C, c0, c1, shift + n * C, p1, p2);
      },
      [&](int64_t p, double& a1, double& a2) { plane_shifted_sums(xd + p * S, S, shift[p], a1, a2); });

  // Per (n, g): combine the channels' means and squared deviations (Chan et al.), then the affine.
  saved.mean = Tensor::empty({N, G});
  saved.inv_std = Tensor::empty({N, G});
  saved.scale = Tensor::empty({N, C});
  saved.shift = Tensor::empty({N, C});
  float* center = scratch_floats(hold_f, N * C);
  float* a = saved.scale.data();
  float* b = saved.shift.data();
  const int64_t Cg = C / G;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t first = n * C + g * Cg;
      double mu = 0;
      for (int64_t i = first; i < first + Cg; ++i) mu += shift[i] + s1[i] / S;
      mu /= Cg;
      double m2 = 0;
      for (int64_t i = first; i < first + Cg; ++i) {
        const double d = shift[i] + s1[i] / S - mu;
        m2 += std::max(0.0, s2[i] - s1[i] * s1[i] / S) + S * d * d;
      }
      const double inv_std = 1.0 / std::sqrt(m2 / (Cg * S) + eps);
      saved.mean.data()[n * G + g] = static_cast<float>(mu);
      saved.inv_std.data()[n * G + g] = static_cast<float>(inv_std);
      const float mu_f = static_cast<float>(mu);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double ac = inv_std * (gamma.defined() ? value_at(gamma, c) : 1.f);
        center[n * C + c] = mu_f;
        a[n * C + c] = static_cast<float>(ac);
        b[n * C + c] = static_cast<float>((beta.defined() ? value_at(beta, c) : 0.f) - (mu - mu_f) * ac);
      }
    }
  }

  Tensor y = empty_in_layout(x.shape(), L);
  float* yd = y.data();
  if (L.rows) {
    for_rows_by_sample(L, [&](int64_t n, int64_t r0, int64_t r1) {
      rows_affine(xd + r0 * C, yd + r0 * C, r1 - r0, C, {center + n * C, a + n * C, b + n * C}, relu);
    });
  } else {
    parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) plane_affine(xd + p * S, yd + p * S, S, center[p], a[p], b[p], relu);
    });
  }
  return y;
}

BatchNormGrads group_norm_backward(const Tensor& grad_y, const Tensor& x, int64_t groups, const Tensor& gamma,
                                   const GroupNormSaved& saved, bool relu) {
  const char* op = "group_norm_backward";
  const BackwardOperands o = backward_operands(grad_y, x, Tensor(), false, op);
  const ChannelLayout& L = o.L;
  const int64_t N = L.N, C = L.C, S = L.S, G = groups;
  check_groups(L, groups, x, op);
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  PEEL_CHECK(saved.mean.defined() && saved.inv_std.defined() && saved.mean.shape() == Shape({N, G}) &&
                 saved.inv_std.shape() == Shape({N, G}),
             "{}: saved statistics must have shape [{}, {}] for x of shape {} and groups={}, got {} and {}", op, N, G,
             to_string(x.shape()), G, saved.mean.defined() ? to_string(saved.mean.shape()) : "undefined",
             saved.inv_std.defined() ? to_string(saved.inv_std.shape()) : "undefined");
  if (relu) {
    PEEL_CHECK(saved.scale.defined() && saved.shift.defined() && saved.scale.shape() == Shape({N, C}) &&
                   saved.shift.shape() == Shape({N, C}),
               "{}: fused ReLU needs the forward's saved scale and shift of shape [{}, {}], got {} and {}", op, N, C,
               saved.scale.defined() ? to_string(saved.scale.shape()) : "undefined",
               saved.shift.defined() ? to_string(saved.shift.shape()) : "undefined");
  }
  const Tensor mean_c = saved.mean.contiguous(), inv_std_c = saved.inv_std.contiguous();
  const float* mean = mean_c.data();
  const float* inv_std = inv_std_c.data();
  const int64_t Cg = C / G;

  BatchNormGrads grads;
  grads.x = empty_in_layout(x.shape(), L);
  if (gamma.defined()) {
    grads.gamma = Tensor::zeros({C});
    grads.beta = Tensor::zeros({C});
  }
  if (L.numel() == 0) return grads;
  const float* gd = o.g.data();
  const float* xd = o.x.data();

  // Per (n, c): sg = sum g', sgx = sum g' * (x - mean of the group), g' masked by the fused ReLU
  // where the forward's pre-activation (x - mean) * scale + shift was <= 0.
  Tensor hold_d, hold_f, hold_c;
  double* sg = scratch_doubles(hold_d, 3 * N * C);
  double* sgx = sg + N * C;
  double* center = sgx + N * C;
  float* center_f = scratch_floats(hold_c, N * C);  // the forward's float centre
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      center_f[n * C + c] = mean[n * G + c / Cg];
      center[n * C + c] = center_f[n * C + c];
    }
  const Tensor scale_c = relu ? saved.scale.contiguous() : Tensor(),
               shift_c = relu ? saved.shift.contiguous() : Tensor();
  const float* fa = relu ? scale_c.data() : nullptr;
  const float* fb = relu ? shift_c.data() : nullptr;
  // The forward's affine over all (sample, channel) pairs, and one sample's (only with the ReLU).
  const AffineCoefficients all_samples{center_f, fa, fb};
  const AffineCoefficients* relu_of = relu ? &all_samples : nullptr;
  auto sample_affine = [&](int64_t n) {
    return relu ? AffineCoefficients{center_f + n * C, fa + n * C, fb + n * C} : AffineCoefficients{};
  };
  per_sample_channel_sums(
      L, sg, sgx,
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, double* p1, double* p2) {
        const int64_t at = (n * S + r0) * C;
        const AffineCoefficients f = sample_affine(n);
        rows_grad_sums(gd + at, xd + at, relu ? &f : nullptr, rows, C, c0, c1, center + n * C, p1, p2);
      },
      [&](int64_t p, double& a1, double& a2) {
        plane_grad_sums(gd + p * S, xd + p * S, relu_of, p, S, center[p], a1, a2);
      });

  // Per (n, g), with g' = gamma * g and xhat = (x - mean) * inv_std over D = Cg * S values:
  // dx = inv_std * g' - inv_std/D * sum g' - inv_std/D * xhat * sum(g' xhat).
  float* A = scratch_floats(hold_f, 4 * N * C);
  float* B = A + N * C;
  float* ctr = B + N * C;
  float* K = ctr + N * C;
  const double D = static_cast<double>(Cg * S);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const double is = inv_std[n * G + g];
      double sum_g = 0, sum_gx = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const double w = gamma.defined() ? value_at(gamma, c) : 1.f;
        sum_g += w * sg[n * C + c];
        sum_gx += w * sgx[n * C + c];
      }
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        const int64_t i = n * C + c;
        A[i] = static_cast<float>((gamma.defined() ? value_at(gamma, c) : 1.f) * is);
        B[i] = static_cast<float>(-is * is * is * sum_gx / D);
        ctr[i] = mean[n * G + g];
        K[i] = static_cast<float>(-is * sum_g / D);
      }
    }
  }
  float* dx = grads.x.data();
  if (L.rows) {
    for_rows_by_sample(L, [&](int64_t n, int64_t r0, int64_t r1) {
      const int64_t off = n * C;
      const AffineCoefficients f = sample_affine(n);
      rows_input_grad(gd + r0 * C, xd + r0 * C, relu ? &f : nullptr, dx + r0 * C, r1 - r0, C,
                      {A + off, B + off, ctr + off, K + off});
    });
  } else {
    parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        plane_input_grad(gd + p * S, xd + p * S, relu_of, p, dx + p * S, S, A[p], B[p], ctr[p], K[p]);
    });
  }
  if (gamma.defined()) {
    for (int64_t c = 0; c < C; ++c) {
      double dg = 0, db = 0;
      for (int64_t n = 0; n < N; ++n) {
        dg += inv_std[n * G + c / Cg] * sgx[n * C + c];
        db += sg[n * C + c];
      }
      grads.gamma.data()[c] = static_cast<float>(dg);
      grads.beta.data()[c] = static_cast<float>(db);
    }
  }
  return grads;
}

}  // namespace peel
