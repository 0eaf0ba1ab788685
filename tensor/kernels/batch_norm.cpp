// Batch normalisation over (N, H, W) per channel, forward and backward, on channels-last or NCHW
// memory. Statistics are accumulated in double around a per-channel shift (the first sample), in
// fixed blocks whose partial sums are added in a fixed order, so results do not depend on threads.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/norm_detail.h"
#include "tensor/threads.h"

namespace peel {

using namespace kernels_detail;

namespace {

constexpr int64_t kElementsPerTask = 16384;  // elementwise passes: work per parallel chunk

// Per-channel mean and sum of squared deviations over all N*S positions.
void batch_moments(const float* x, const ChannelLayout& L, double* mean, double* m2) {
  const int64_t C = L.C, S = L.S;
  Tensor hold;
  if (L.rows) {
    const int64_t M = L.N * S;
    const RowBlocking b = row_blocking(M, C);
    double* s1 = scratch_doubles(hold, 2 * b.row_blocks * C + C);
    double* s2 = s1 + b.row_blocks * C;
    double* shift = s2 + b.row_blocks * C;
    for (int64_t c = 0; c < C; ++c) shift[c] = x[c];
    parallel_for(b.tasks(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t rb = t / b.chunks, c0 = (t % b.chunks) * b.channels_per_chunk;
        const int64_t c1 = std::min(C, c0 + b.channels_per_chunk);
        const int64_t r0 = rb * b.rows_per_block, rows = std::min(b.rows_per_block, M - r0);
        std::fill(s1 + rb * C + c0, s1 + rb * C + c1, 0.0);
        std::fill(s2 + rb * C + c0, s2 + rb * C + c1, 0.0);
        rows_shifted_sums(x + r0 * C, rows, C, c0, c1, shift, s1 + rb * C, s2 + rb * C);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      double t1 = 0, t2 = 0;
      for (int64_t rb = 0; rb < b.row_blocks; ++rb) {
        t1 += s1[rb * C + c];
        t2 += s2[rb * C + c];
      }
      mean[c] = shift[c] + t1 / M;
      m2[c] = std::max(0.0, t2 - t1 * t1 / M);
    }
    return;
  }
  // Planes: moments of each (n, c) plane, then combined over n (Chan et al.'s pairwise update).
  double* part = scratch_doubles(hold, 2 * L.N * C);
  parallel_for(L.N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* xp = x + p * S;
      double a1, a2;
      plane_shifted_sums(xp, S, xp[0], a1, a2);
      part[2 * p] = xp[0] + a1 / S;
      part[2 * p + 1] = std::max(0.0, a2 - a1 * a1 / S);
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double mu = 0;
    for (int64_t n = 0; n < L.N; ++n) mu += part[2 * (n * C + c)];
    mu /= L.N;
    double q = 0;
    for (int64_t n = 0; n < L.N; ++n) {
      const double d = part[2 * (n * C + c)] - mu;
      q += part[2 * (n * C + c) + 1] + S * d * d;
    }
    mean[c] = mu;
    m2[c] = q;
  }
}

// grad_y as the backward's two passes read it: a whole tensor in x's form, or (rows form only) rows
// rebuilt a block at a time into a scratch buffer that stays in cache (the fused max pool's input
// gradient, which is never stored whole).
struct GradientRows {
  const float* whole = nullptr;
  std::function<void(int64_t r0, int64_t rows, float* out)> rebuild;

  // Rows [r0, r0 + rows) of C channels: in `whole`, or rebuilt into `scratch`.
  const float* rows(int64_t r0, int64_t rows, int64_t C, float* scratch) const {
    if (whole != nullptr) return whole + r0 * C;
    rebuild(r0, rows, scratch);
    return scratch;
  }
};

// parallel_for(n, grain, body) with `floats` of scratch per chunk (null when 0), sliced from one
// buffer allocated before the threads start: the same buffers every call, which the caching
// allocator then serves without the system (a buffer allocated inside each chunk would be one or
// two depending on how the threads happened to overlap). The chunks are parallel_for's.
template <class Body>
void parallel_for_with_scratch(int64_t n, int64_t grain, int64_t floats, Body&& body) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(num_threads(), std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  Tensor holder;
  float* scratch = floats > 0 ? scratch_floats(holder, chunks * floats) : nullptr;
  parallel_for(chunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      body(n * k / chunks, n * (k + 1) / chunks, scratch == nullptr ? nullptr : scratch + k * floats);
  });
}

// Per-channel sg = sum g' and sgx = sum g' * (x - center), g' masked where the forward's
// pre-activation was <= 0 when `relu_of` (the forward's affine coefficients) is given.
void batch_grad_sums(const GradientRows& g, const float* x, const AffineCoefficients* relu_of, const ChannelLayout& L,
                     const double* center, double* sg, double* sgx) {
  const int64_t C = L.C, S = L.S;
  Tensor hold;
  if (L.rows) {
    const int64_t M = L.N * S;
    const RowBlocking b = row_blocking(M, C);
    double* p1 = scratch_doubles(hold, 2 * b.row_blocks * C);
    double* p2 = p1 + b.row_blocks * C;
    const int64_t rebuilt_floats = g.whole != nullptr ? 0 : b.rows_per_block * C;
    parallel_for_with_scratch(b.tasks(), 1, rebuilt_floats, [&](int64_t t0, int64_t t1, float* scratch) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t rb = t / b.chunks, c0 = (t % b.chunks) * b.channels_per_chunk;
        const int64_t c1 = std::min(C, c0 + b.channels_per_chunk);
        const int64_t r0 = rb * b.rows_per_block, rows = std::min(b.rows_per_block, M - r0);
        std::fill(p1 + rb * C + c0, p1 + rb * C + c1, 0.0);
        std::fill(p2 + rb * C + c0, p2 + rb * C + c1, 0.0);
        rows_grad_sums(g.rows(r0, rows, C, scratch), x + r0 * C, relu_of, rows, C, c0, c1, center, p1 + rb * C,
                       p2 + rb * C);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      double t1 = 0, t2 = 0;
      for (int64_t rb = 0; rb < b.row_blocks; ++rb) {
        t1 += p1[rb * C + c];
        t2 += p2[rb * C + c];
      }
      sg[c] = t1;
      sgx[c] = t2;
    }
    return;
  }
  PEEL_CHECK(g.whole != nullptr, "batch norm backward: the planes form needs grad_y whole");
  double* part = scratch_doubles(hold, 2 * L.N * C);
  parallel_for(L.N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t q0, int64_t q1) {
    for (int64_t p = q0; p < q1; ++p) {
      const int64_t c = p % C;
      plane_grad_sums(g.whole + p * S, x + p * S, relu_of, c, S, center[c], part[2 * p], part[2 * p + 1]);
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double t1 = 0, t2 = 0;
    for (int64_t n = 0; n < L.N; ++n) {
      t1 += part[2 * (n * C + c)];
      t2 += part[2 * (n * C + c) + 1];
    }
    sg[c] = t1;
    sgx[c] = t2;
  }
}

// out = relu?((x - center[c]) * scale[c] + shift[c]).
void apply_affine(const float* x, float* out, const ChannelLayout& L, const AffineCoefficients& k, bool relu) {
  const int64_t C = L.C, S = L.S;
  if (L.rows) {
    parallel_for(L.N * S, std::max<int64_t>(1, kElementsPerTask / C),
                 [&](int64_t r0, int64_t r1) { rows_affine(x + r0 * C, out + r0 * C, r1 - r0, C, k, relu); });
    return;
  }
  parallel_for(L.N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      plane_affine(x + p * S, out + p * S, S, k.center[c], k.a[c], k.b[c], relu);
    }
  });
}

// dx = A[c] * g' + B[c] * (x - center[c]) + K[c], g' masked as in batch_grad_sums.
void apply_input_grad(const GradientRows& g, const float* x, const AffineCoefficients* relu_of, float* dx,
                      const ChannelLayout& L, const BackwardCoefficients& k) {
  const int64_t C = L.C, S = L.S;
  if (L.rows) {
    // Element by element, so rebuilding in blocks gives the same bits as one call over the chunk.
    const int64_t block = std::max<int64_t>(1, kElementsPerTask / C);
    const int64_t rebuilt_floats = g.whole != nullptr ? 0 : block * C;
    parallel_for_with_scratch(L.N * S, block, rebuilt_floats, [&](int64_t r0, int64_t r1, float* scratch) {
      if (g.whole != nullptr) return rows_input_grad(g.whole + r0 * C, x + r0 * C, relu_of, dx + r0 * C, r1 - r0, C, k);
      for (int64_t r = r0; r < r1; r += block) {
        const int64_t rows = std::min(block, r1 - r);
        rows_input_grad(g.rows(r, rows, C, scratch), x + r * C, relu_of, dx + r * C, rows, C, k);
      }
    });
    return;
  }
  PEEL_CHECK(g.whole != nullptr, "batch norm backward: the planes form needs grad_y whole");
  parallel_for(L.N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      plane_input_grad(g.whole + p * S, x + p * S, relu_of, c, dx + p * S, S, k.A[c], k.B[c], k.center[c], k.K[c]);
    }
  });
}

// Eval mode's affine map per channel: center = running_mean, a = gamma / sqrt(running_var + eps),
// b = beta, in a scratch buffer that `hold` keeps. The forward and the fused ReLU's backward both
// take it from here, so the backward's mask sees the forward's pre-activation bit for bit.
AffineCoefficients eval_affine(const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                               const Tensor& running_var, float eps, int64_t C, Tensor& hold) {
  float* center = scratch_floats(hold, 3 * C);
  float* scale = center + C;
  float* shift = scale + C;
  for (int64_t c = 0; c < C; ++c) {
    center[c] = value_at(running_mean, c);
    scale[c] = static_cast<float>((gamma.defined() ? value_at(gamma, c) : 1.f) /
                                  std::sqrt(static_cast<double>(value_at(running_var, c)) + eps));
    shift[c] = beta.defined() ? value_at(beta, c) : 0.f;
  }
  return {center, scale, shift};
}

// The backward shared by train and eval mode: dgamma = inv_std * sgx, dbeta = sg, and
// dx = A * g' + B * (x - center) + K from the coefficients `make_coefficients` fills; g' is grad_y
// masked by the fused ReLU when `relu_of` (the forward's affine) is given.
// With `across`, the coefficients come from the sums over all shards, dgamma and dbeta from this one's.
// x is in L's form.
template <class MakeCoefficients>
BatchNormGrads backward_with(const ChannelLayout& L, const Tensor& x, const GradientRows& g, const Tensor& gamma,
                             const AffineCoefficients* relu_of, const double* center, const float* inv_std,
                             MakeCoefficients&& make_coefficients, const StatisticsSum& across = {}) {
  const int64_t C = L.C;
  Tensor hold_d, hold_f;
  double* sg = scratch_doubles(hold_d, 4 * C);
  double* sgx = sg + C;
  batch_grad_sums(g, x.data(), relu_of, L, center, sg, sgx);
  double* all_sg = sg;
  double* all_sgx = sgx;
  if (across) {
    all_sg = sg + 2 * C;
    all_sgx = all_sg + C;
    std::copy(sg, sg + 2 * C, all_sg);
    across(all_sg, 2 * C);
  }

  float* A = scratch_floats(hold_f, 4 * C);
  BackwardCoefficients k{A, A + C, A + 2 * C, A + 3 * C};
  make_coefficients(all_sg, all_sgx, A, A + C, A + 2 * C, A + 3 * C);

  BatchNormGrads grads;
  grads.x = empty_in_layout(x.shape(), L);
  apply_input_grad(g, x.data(), relu_of, grads.x.data(), L, k);
  if (gamma.defined()) {
    grads.gamma = Tensor::empty({C});
    grads.beta = Tensor::empty({C});
    for (int64_t c = 0; c < C; ++c) {
      grads.gamma.data()[c] = static_cast<float>(sgx[c] * inv_std[c]);
      grads.beta.data()[c] = static_cast<float>(sg[c]);
    }
  }
  return grads;
}

}  // namespace

TrainStatistics kernels_detail::batch_norm_train_statistics(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                            Tensor& running_mean, Tensor& running_var, float momentum,
                                                            float eps, BatchNormSaved& saved,
                                                            const StatisticsSum& across, const char* op) {
  const ChannelLayout L = channel_layout(x, op);
  const int64_t C = L.C, local_M = L.N * L.S;
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  if (beta.defined()) check_channel_vector(beta, C, x, op, "beta");
  PEEL_CHECK(running_mean.defined() == running_var.defined(),
             "{}: running_mean and running_var must both be defined or both undefined", op);
  if (running_mean.defined()) {
    check_channel_vector(running_mean, C, x, op, "running_mean");
    check_channel_vector(running_var, C, x, op, "running_var");
  }
  PEEL_CHECK(eps >= 0.f, "{}: eps must be >= 0, got {}", op, eps);

  const Tensor xc = to_layout(x, L);
  Tensor hold_d;
  double* mean = scratch_doubles(hold_d, 2 * C + 1);
  double* m2 = mean + C;
  if (local_M > 0) {
    batch_moments(xc.data(), L, mean, m2);
  } else {
    std::fill(mean, mean + 2 * C, 0.0);
  }
  const int64_t M = across ? combine_shard_moments(across, local_M, C, mean, m2) : local_M;
  PEEL_CHECK(M > 1, "{}: expected more than 1 value per channel when training, got input shape {}", op,
             to_string(x.shape()));
  saved.count = M;

  saved.mean = Tensor::empty({C});
  saved.inv_std = Tensor::empty({C});
  saved.scale = Tensor::empty({C});
  saved.shift = Tensor::empty({C});
  float* center = saved.mean.data();
  float* scale = saved.scale.data();
  float* shift = saved.shift.data();
  for (int64_t c = 0; c < C; ++c) {
    const double inv_std = 1.0 / std::sqrt(m2[c] / M + eps);
    const double a = inv_std * (gamma.defined() ? value_at(gamma, c) : 1.f);
    center[c] = static_cast<float>(mean[c]);
    saved.inv_std.data()[c] = static_cast<float>(inv_std);
    scale[c] = static_cast<float>(a);
    // The part of the mean that float `center` could not hold moves into the shift.
    shift[c] = static_cast<float>((beta.defined() ? value_at(beta, c) : 0.f) - (mean[c] - center[c]) * a);
  }
  if (running_mean.defined()) {
    const double m = momentum;
    for (int64_t c = 0; c < C; ++c) {
      float& rm = running_mean.data()[c * running_mean.stride(0)];
      float& rv = running_var.data()[c * running_var.stride(0)];
      rm = static_cast<float>((1 - m) * rm + m * mean[c]);
      rv = static_cast<float>((1 - m) * rv + m * (m2[c] / (M - 1)));
    }
  }
  return {L, xc, {center, scale, shift}};
}

namespace {

// The training backward from x in its memory form and grad_y as `g` reads it.
BatchNormGrads train_backward(const ChannelLayout& L, const Tensor& x, const GradientRows& g, const Tensor& gamma,
                              const BatchNormSaved& saved, bool fuse_relu, const StatisticsSum& across,
                              const char* op) {
  const int64_t C = L.C, M = across ? saved.count : L.N * L.S;
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  PEEL_CHECK(saved.mean.defined() && saved.inv_std.defined(), "{}: the saved batch statistics are undefined", op);
  check_channel_vector(saved.mean, C, x, op, "saved.mean");
  check_channel_vector(saved.inv_std, C, x, op, "saved.inv_std");
  if (fuse_relu) {
    PEEL_CHECK(saved.scale.defined() && saved.shift.defined(),
               "{}: fused ReLU needs the forward's saved scale and shift, which are undefined", op);
    check_channel_vector(saved.scale, C, x, op, "saved.scale");
    check_channel_vector(saved.shift, C, x, op, "saved.shift");
  }
  const AffineCoefficients forward{saved.mean.data(), saved.scale.data(), saved.shift.data()};

  Tensor hold_d, hold_f;
  double* center = scratch_doubles(hold_d, C);
  float* inv_std = scratch_floats(hold_f, C);
  for (int64_t c = 0; c < C; ++c) {
    center[c] = value_at(saved.mean, c);
    inv_std[c] = value_at(saved.inv_std, c);
  }
  // dx = gamma*inv_std/M * (M g' - sum g' - xhat * sum(g' xhat)), with xhat = (x - mean) inv_std.
  return backward_with(
      L, x, g, gamma, fuse_relu ? &forward : nullptr, center, inv_std,
      [&](const double* sg, const double* sgx, float* A, float* B, float* ctr, float* K) {
        for (int64_t c = 0; c < C; ++c) {
          const double is = inv_std[c];
          const double a = (gamma.defined() ? value_at(gamma, c) : 1.f) * is;
          A[c] = static_cast<float>(a);
          B[c] = static_cast<float>(-a * is * is * sgx[c] / M);
          ctr[c] = static_cast<float>(center[c]);
          K[c] = static_cast<float>(-a * sg[c] / M);
        }
      },
      across);
}

}  // namespace

Tensor batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                Tensor& running_var, float momentum, float eps, BatchNormSaved& saved, bool fuse_relu,
                                const StatisticsSum& across) {
  const TrainStatistics t = batch_norm_train_statistics(x, gamma, beta, running_mean, running_var, momentum, eps, saved,
                                                        across, "batch_norm_train_forward");
  Tensor y = empty_in_layout(x.shape(), t.L);
  apply_affine(t.x.data(), y.data(), t.L, t.affine, fuse_relu);
  return y;
}

Tensor batch_norm_eval_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                               const Tensor& running_var, float eps, bool fuse_relu) {
  const char* op = "batch_norm_eval_forward";
  const ChannelLayout L = channel_layout(x, op);
  const int64_t C = L.C;
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  if (beta.defined()) check_channel_vector(beta, C, x, op, "beta");
  PEEL_CHECK(running_mean.defined() && running_var.defined(), "{}: eval mode needs running_mean and running_var", op);
  check_channel_vector(running_mean, C, x, op, "running_mean");
  check_channel_vector(running_var, C, x, op, "running_var");

  const Tensor xc = to_layout(x, L);
  Tensor hold;
  Tensor y = empty_in_layout(x.shape(), L);
  apply_affine(xc.data(), y.data(), L, eval_affine(gamma, beta, running_mean, running_var, eps, C, hold), fuse_relu);
  return y;
}

BatchNormGrads batch_norm_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma,
                                         const BatchNormSaved& saved, bool fuse_relu, const StatisticsSum& across) {
  const char* op = "batch_norm_train_backward";
  const BackwardOperands o = backward_operands(grad_y, x, Tensor(), false, op);
  return train_backward(o.L, o.x, GradientRows{o.g.data(), {}}, gamma, saved, fuse_relu, across, op);
}

BatchNormGrads batch_norm_eval_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                        const Tensor& running_mean, const Tensor& running_var, float eps,
                                        bool fuse_relu) {
  const char* op = "batch_norm_eval_backward";
  const BackwardOperands o = backward_operands(grad_y, x, Tensor(), false, op);
  const int64_t C = o.L.C;
  if (gamma.defined()) check_channel_vector(gamma, C, x, op, "gamma");
  if (beta.defined()) check_channel_vector(beta, C, x, op, "beta");
  PEEL_CHECK(running_mean.defined() && running_var.defined(), "{}: eval mode needs running_mean and running_var", op);
  check_channel_vector(running_mean, C, x, op, "running_mean");
  check_channel_vector(running_var, C, x, op, "running_var");

  Tensor hold_d, hold_f, hold_forward;
  double* center = scratch_doubles(hold_d, C);
  float* inv_std = scratch_floats(hold_f, C);
  for (int64_t c = 0; c < C; ++c) {
    center[c] = value_at(running_mean, c);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(value_at(running_var, c)) + eps));
  }
  // The forward's affine, recomputed by the same function from the same values, for the fused
  // ReLU's mask: the sign of the pre-activation must come out as the forward's did.
  const AffineCoefficients forward =
      fuse_relu ? eval_affine(gamma, beta, running_mean, running_var, eps, C, hold_forward) : AffineCoefficients{};
  // The statistics are constants here: dx = gamma * inv_std * g'.
  return backward_with(o.L, o.x, GradientRows{o.g.data(), {}}, gamma, fuse_relu ? &forward : nullptr, center, inv_std,
                       [&](const double*, const double*, float* A, float* B, float* ctr, float* K) {
                         for (int64_t c = 0; c < C; ++c) {
                           A[c] = (gamma.defined() ? value_at(gamma, c) : 1.f) * inv_std[c];
                           B[c] = 0.f;
                           ctr[c] = static_cast<float>(center[c]);
                           K[c] = 0.f;
                         }
                       });
}

// ---- Batch norm, its ReLU and a max pool (training mode) ---------------------------------------

bool batch_norm_pool_fuses(const Tensor& x, const Pool2dGeometry& pool) {
  return x.defined() && x.dim() == 4 && x.is_channels_last() && !(x.size(1) == 1 && x.is_contiguous()) &&
         max_pool2d_windows_disjoint(pool) && pool.kernel > 0 && x.size(2) >= pool.kernel && x.size(3) >= pool.kernel;
}

Tensor batch_norm_relu_max_pool_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                              Tensor& running_mean, Tensor& running_var, float momentum, float eps,
                                              const Pool2dGeometry& pool, BatchNormSaved& saved, MaxPoolArgmax& argmax,
                                              const StatisticsSum& across) {
  if (!batch_norm_pool_fuses(x, pool)) {
    const Tensor z =
        batch_norm_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, saved, true, across);
    return max_pool2d_forward(z, pool, argmax);
  }
  const char* op = "batch_norm_relu_max_pool_train_forward";
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = pool.kernel;
  PEEL_CHECK(H * W <= std::numeric_limits<int32_t>::max(), "{}: input plane {}x{} too large for int32 indices", op, H,
             W);
  const TrainStatistics t =
      batch_norm_train_statistics(x, gamma, beta, running_mean, running_var, momentum, eps, saved, across, op);
  const PoolRows p{H, W, C, K, H / K, W / K};
  argmax.output_shape = {N, C, p.OH, p.OW};
  argmax.index.resize(static_cast<size_t>(N * C * p.OH * p.OW));
  argmax.channels_last = true;
  Tensor y = Tensor::empty_channels_last(argmax.output_shape);
  // One task per pooled row (n, oh): it normalises its K input rows as it pools them.
  parallel_for(N * p.OH, std::max<int64_t>(1, kElementsPerTask / (p.OW * C * K * K)), [&](int64_t t0, int64_t t1) {
    rows_affine_relu_max_pool(t.x.data(), p, t0, t1, t.affine, y.data(), argmax.index.data());
  });
  return y;
}

BatchNormGrads batch_norm_relu_max_pool_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& gamma,
                                                       const BatchNormSaved& saved, const Pool2dGeometry& pool,
                                                       const MaxPoolArgmax& argmax, const StatisticsSum& across) {
  if (!batch_norm_pool_fuses(x, pool) || !argmax.channels_last)
    return batch_norm_train_backward(max_pool2d_backward(grad_y, argmax, x.shape()), x, gamma, saved, true, across);
  const char* op = "batch_norm_relu_max_pool_train_backward";
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = pool.kernel;
  const Shape pooled{N, C, H / K, W / K};
  PEEL_CHECK(argmax.output_shape == pooled && static_cast<int64_t>(argmax.index.size()) == N * C * (H / K) * (W / K),
             "{}: argmax is for a pooled output of shape {}, but x of shape {} pools to {}", op,
             to_string(argmax.output_shape), to_string(x.shape()), to_string(pooled));
  PEEL_CHECK(grad_y.defined() && grad_y.shape() == pooled, "{}: grad_y has shape {} but the pooled output has shape {}",
             op, grad_y.defined() ? to_string(grad_y.shape()) : "undefined", to_string(pooled));
  const Tensor gy = grad_y.channels_last();
  const GradientRows g{nullptr, [&](int64_t r0, int64_t rows, float* out) {
                         max_pool2d_backward_rows(gy.data(), argmax, H, W, K, r0, rows, out);
                       }};
  return train_backward(channel_layout(x, op), x.channels_last(), g, gamma, saved, true, across, op);
}

}  // namespace peel
