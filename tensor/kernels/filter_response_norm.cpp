// Filter response normalisation with its thresholded linear unit (Singh & Krishnan 2019), and TLU
// alone. Per (n, c): nu2 = mean_s x^2, y = a x + beta with a = gamma / sqrt(nu2 + |eps|), z =
// max(y, tau). The backward recomputes y from x (instead of keeping it) with the same rounding as
// the forward, so TLU's ties are decided the same way in both passes.
#include <cmath>

#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/kernels/norm_extra_detail.h"

namespace peel {

using namespace norm_extra_detail;

namespace {

// y = x * a + b, rounded once where the CPU fuses multiply-adds, so that every loop (vectorised or
// not, forward or backward) gets the same bits whatever the compiler contracts.
inline float response(float x, float a, float b) {
#ifdef __FMA__
  return std::fma(x, a, b);
#else
  return x * a + b;
#endif
}

// torch.max(y, tau): NaN propagates; the gradient shares of y and of tau (half each on a tie, and
// both full for a NaN y, as PyTorch's maximum backward).
// The shares are products with 0, 1/2 or 1 made from the comparisons, not branches: y against tau
// is a coin toss per element, and the branches compilers make of selects cost 15 times the time.
// (So an infinite or NaN upstream gradient gives NaN on the clipped side, where PyTorch gives 0.)
inline float tlu(float y, float tau) { return y < tau ? tau : y; }
inline float share_to_input(float g, float y, float tau) {
  return g * (1.f - static_cast<float>(y < tau) - 0.5f * static_cast<float>(y == tau));
}
inline float share_to_tau(float g, float y, float tau) {
  return g * (1.f - static_cast<float>(y > tau) - 0.5f * static_cast<float>(y == tau));
}

// The per-(n, c) scale gamma * inv_rms, from the float inv_rms both passes see.
inline float frn_scale(float gamma, float inv_rms) { return static_cast<float>(static_cast<double>(gamma) * inv_rms); }

struct FrnOperands {
  ChannelLayout L;
  Tensor x, hold_gamma, hold_beta, hold_eps, hold_tau;
  const float *gamma = nullptr, *beta = nullptr, *eps = nullptr, *tau = nullptr;  // tau null: no TLU
};

FrnOperands frn_operands(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& eps, const Tensor& tau,
                         const char* op) {
  FrnOperands o;
  o.L = shared::channel_layout(x, op);
  const int64_t C = o.L.C;
  shared::check_channel_vector(gamma, C, x, op, "gamma");
  shared::check_channel_vector(beta, C, x, op, "beta");
  shared::check_channel_vector(eps, C, x, op, "eps");
  o.x = shared::to_layout(x, o.L);
  o.gamma = channel_values(gamma, o.hold_gamma);
  o.beta = channel_values(beta, o.hold_beta);
  o.eps = channel_values(eps, o.hold_eps);
  if (tau.defined()) {
    shared::check_channel_vector(tau, C, x, op, "tau");
    o.tau = channel_values(tau, o.hold_tau);
  }
  return o;
}

// z = max(x * a + b, tau) (or without the max) on rows of C channels / on one plane.
template <bool kTlu>
void rows_response(const float* __restrict x, float* __restrict z, int64_t rows, int64_t C, const float* __restrict a,
                   const float* __restrict b, const float* __restrict tau) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float y = response(x[r * C + c], a[c], b[c]);
      z[r * C + c] = kTlu ? tlu(y, tau[c]) : y;
    }
}

template <bool kTlu>
void plane_response(const float* __restrict x, float* __restrict z, int64_t S, float a, float b, float tau) {
  for (int64_t s = 0; s < S; ++s) {
    const float y = response(x[s], a, b);
    z[s] = kTlu ? tlu(y, tau) : y;
  }
}

// Per (n, c) sums of the backward: gy = TLU's share of grad_z to y; acc[0] += gy, acc[1] += gy * x,
// acc[2] += the share to tau.
template <bool kTlu>
void rows_backward_sums(const float* __restrict g, const float* __restrict x, int64_t rows, int64_t C, int64_t c0,
                        int64_t c1, const float* __restrict a, const float* __restrict b, const float* __restrict tau,
                        double* __restrict sgy, double* __restrict sgyx, double* __restrict sgt) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i = r * C + c;
      float gy = g[i];
      if constexpr (kTlu) {
        const float y = response(x[i], a[c], b[c]);
        gy = share_to_input(g[i], y, tau[c]);
        sgt[c] += share_to_tau(g[i], y, tau[c]);
      }
      sgy[c] += gy;
      sgyx[c] += static_cast<double>(gy) * x[i];
    }
}

template <bool kTlu>
void plane_backward_sums(const float* __restrict g, const float* __restrict x, int64_t S, float a, float b, float tau,
                         std::array<double, 3>& sums) {
  double sgy = 0, sgyx = 0, sgt = 0;
  for (int64_t s = 0; s < S; ++s) {
    float gy = g[s];
    if constexpr (kTlu) {
      const float y = response(x[s], a, b);
      gy = share_to_input(g[s], y, tau);
      sgt += share_to_tau(g[s], y, tau);
    }
    sgy += gy;
    sgyx += static_cast<double>(gy) * x[s];
  }
  sums = {sgy, sgyx, sgt};
}

// dx = A gy + B x, gy recomputed as in the sums.
template <bool kTlu>
void rows_input_grad(const float* __restrict g, const float* __restrict x, float* __restrict dx, int64_t rows,
                     int64_t C, const float* __restrict a, const float* __restrict b, const float* __restrict tau,
                     const float* __restrict A, const float* __restrict B) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const float gy = kTlu ? share_to_input(g[i], response(x[i], a[c], b[c]), tau[c]) : g[i];
      dx[i] = A[c] * gy + B[c] * x[i];
    }
}

template <bool kTlu>
void plane_input_grad(const float* __restrict g, const float* __restrict x, float* __restrict dx, int64_t S, float a,
                      float b, float tau, float A, float B) {
  for (int64_t s = 0; s < S; ++s) {
    const float gy = kTlu ? share_to_input(g[s], response(x[s], a, b), tau) : g[s];
    dx[s] = A * gy + B * x[s];
  }
}

}  // namespace

Tensor filter_response_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& eps,
                                    const Tensor& tau, FrnSaved& saved) {
  const char* op = "filter_response_norm_forward";
  const FrnOperands o = frn_operands(x, gamma, beta, eps, tau, op);
  const ChannelLayout& L = o.L;
  const int64_t N = L.N, C = L.C, S = L.S;
  saved.inv_rms = Tensor::empty({N, C});
  Tensor y = shared::empty_in_layout(x.shape(), L);
  if (L.numel() == 0) return y;
  const float* xd = o.x.data();

  // Per (n, c): the sum of squares (rows_shifted_sums about 0 also gives the plain sum, unused).
  Tensor hold_d, hold_f;
  double* zero = shared::scratch_doubles(hold_d, C + 2 * N * C);
  double* s1 = zero + C;
  double* s2 = s1 + N * C;
  std::fill(zero, zero + C, 0.0);
  sample_channel_sums<2>(
      L, {s1, s2},
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<2> acc) {
        shared::rows_shifted_sums(xd + (n * S + r0) * C, rows, C, c0, c1, zero, acc[0], acc[1]);
      },
      [&](int64_t p, std::array<double, 2>& sums) {
        shared::plane_shifted_sums(xd + p * S, S, 0.0, sums[0], sums[1]);
      });
  float* inv_rms = saved.inv_rms.data();
  float* a = shared::scratch_floats(hold_f, N * C);
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    inv_rms[p] = static_cast<float>(1.0 / std::sqrt(s2[p] / S + std::abs(static_cast<double>(o.eps[c]))));
    a[p] = frn_scale(o.gamma[c], inv_rms[p]);
  }
  float* yd = y.data();
  for_each_chunk(
      L,
      [&](int64_t n, int64_t r0, int64_t r1) {
        if (o.tau) return rows_response<true>(xd + r0 * C, yd + r0 * C, r1 - r0, C, a + n * C, o.beta, o.tau);
        rows_response<false>(xd + r0 * C, yd + r0 * C, r1 - r0, C, a + n * C, o.beta, nullptr);
      },
      [&](int64_t p) {
        const int64_t c = p % C;
        if (o.tau) return plane_response<true>(xd + p * S, yd + p * S, S, a[p], o.beta[c], o.tau[c]);
        plane_response<false>(xd + p * S, yd + p * S, S, a[p], o.beta[c], 0.f);
      });
  return y;
}

FrnGrads filter_response_norm_backward(const Tensor& grad_z, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                       const Tensor& eps, const Tensor& tau, const FrnSaved& saved) {
  const char* op = "filter_response_norm_backward";
  const FrnOperands o = frn_operands(x, gamma, beta, eps, tau, op);
  const ChannelLayout& L = o.L;
  const int64_t N = L.N, C = L.C, S = L.S;
  PEEL_CHECK(grad_z.defined() && grad_z.shape() == x.shape(), "{}: grad_z has shape {} but x has shape {}", op,
             grad_z.defined() ? to_string(grad_z.shape()) : "undefined", to_string(x.shape()));
  PEEL_CHECK(saved.inv_rms.defined() && saved.inv_rms.shape() == Shape({N, C}),
             "{}: saved inv_rms must have shape [{}, {}] for x of shape {}, got {}", op, N, C, to_string(x.shape()),
             saved.inv_rms.defined() ? to_string(saved.inv_rms.shape()) : "undefined");
  const Tensor g = shared::to_layout(grad_z, L);
  Tensor hold_inv;
  const float* inv_rms = channel_values(saved.inv_rms, hold_inv);
  const float* gd = g.data();
  const float* xd = o.x.data();

  FrnGrads grads;
  grads.x = shared::empty_in_layout(x.shape(), L);
  grads.gamma = Tensor::zeros({C});
  grads.beta = Tensor::zeros({C});
  grads.eps = Tensor::zeros({C});
  if (o.tau) grads.tau = Tensor::zeros({C});
  if (L.numel() == 0) return grads;

  Tensor hold_d, hold_f;
  double* sgy = shared::scratch_doubles(hold_d, 3 * N * C);
  double* sgyx = sgy + N * C;
  double* sgt = sgyx + N * C;
  float* a = shared::scratch_floats(hold_f, 3 * N * C);
  float* A = a + N * C;
  float* B = A + N * C;
  for (int64_t p = 0; p < N * C; ++p) a[p] = frn_scale(o.gamma[p % C], inv_rms[p]);
  sample_channel_sums<3>(
      L, {sgy, sgyx, sgt},
      [&](int64_t n, int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<3> acc) {
        const int64_t at = (n * S + r0) * C;
        if (o.tau)
          return rows_backward_sums<true>(gd + at, xd + at, rows, C, c0, c1, a + n * C, o.beta, o.tau, acc[0], acc[1],
                                          acc[2]);
        rows_backward_sums<false>(gd + at, xd + at, rows, C, c0, c1, a + n * C, o.beta, nullptr, acc[0], acc[1],
                                  acc[2]);
      },
      [&](int64_t p, std::array<double, 3>& sums) {
        const int64_t c = p % C;
        if (o.tau) return plane_backward_sums<true>(gd + p * S, xd + p * S, S, a[p], o.beta[c], o.tau[c], sums);
        plane_backward_sums<false>(gd + p * S, xd + p * S, S, a[p], o.beta[c], 0.f, sums);
      });

  // With xhat = x inv_rms and d xhat = gamma gy: dx = gamma inv_rms gy - gamma inv_rms^3 x sum(gy x) / S,
  // d nu2 = -gamma inv_rms^3 sum(gy x) / 2, which reaches eps through |eps|.
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    const double is = inv_rms[p], gm = o.gamma[c];
    A[p] = a[p];
    B[p] = static_cast<float>(-gm * is * is * is * sgyx[p] / S);
  }
  float* dx = grads.x.data();
  for_each_chunk(
      L,
      [&](int64_t n, int64_t r0, int64_t r1) {
        const int64_t off = n * C;
        if (o.tau)
          return rows_input_grad<true>(gd + r0 * C, xd + r0 * C, dx + r0 * C, r1 - r0, C, a + off, o.beta, o.tau,
                                       A + off, B + off);
        rows_input_grad<false>(gd + r0 * C, xd + r0 * C, dx + r0 * C, r1 - r0, C, a + off, o.beta, nullptr, A + off,
                               B + off);
      },
      [&](int64_t p) {
        const int64_t c = p % C;
        if (o.tau)
          return plane_input_grad<true>(gd + p * S, xd + p * S, dx + p * S, S, a[p], o.beta[c], o.tau[c], A[p], B[p]);
        plane_input_grad<false>(gd + p * S, xd + p * S, dx + p * S, S, a[p], o.beta[c], 0.f, A[p], B[p]);
      });
  for (int64_t c = 0; c < C; ++c) {
    double dgamma = 0, dbeta = 0, dtau = 0, dnu2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t p = n * C + c;
      const double is = inv_rms[p];
      dgamma += is * sgyx[p];
      dbeta += sgy[p];
      dtau += sgt[p];
      dnu2 += -0.5 * o.gamma[c] * is * is * is * sgyx[p];
    }
    const double sign = o.eps[c] > 0 ? 1.0 : (o.eps[c] < 0 ? -1.0 : 0.0);
    grads.gamma.data()[c] = static_cast<float>(dgamma);
    grads.beta.data()[c] = static_cast<float>(dbeta);
    grads.eps.data()[c] = static_cast<float>(sign * dnu2);
    if (o.tau) grads.tau.data()[c] = static_cast<float>(dtau);
  }
  return grads;
}

Tensor tlu_forward(const Tensor& x, const Tensor& tau) {
  const char* op = "tlu_forward";
  const ChannelLayout L = shared::channel_layout(x, op);
  const int64_t C = L.C, S = L.S;
  shared::check_channel_vector(tau, C, x, op, "tau");
  const Tensor xc = shared::to_layout(x, L);
  Tensor hold;
  const float* t = channel_values(tau, hold);
  Tensor z = shared::empty_in_layout(x.shape(), L);
  const float* xd = xc.data();
  float* zd = z.data();
  for_each_chunk(
      L,
      [&](int64_t, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < C; ++c) zd[r * C + c] = tlu(xd[r * C + c], t[c]);
      },
      [&](int64_t p) {
        for (int64_t s = 0; s < S; ++s) zd[p * S + s] = tlu(xd[p * S + s], t[p % C]);
      });
  return z;
}

TluGrads tlu_backward(const Tensor& grad_z, const Tensor& x, const Tensor& tau) {
  const char* op = "tlu_backward";
  const shared::BackwardOperands o = shared::backward_operands(grad_z, x, Tensor(), false, op);
  const int64_t C = o.L.C, S = o.L.S;
  shared::check_channel_vector(tau, C, x, op, "tau");
  Tensor hold;
  const float* t = channel_values(tau, hold);
  TluGrads grads;
  grads.x = shared::empty_in_layout(x.shape(), o.L);
  grads.tau = Tensor::empty({C});
  const float* gd = o.g.data();
  const float* xd = o.x.data();
  float* dx = grads.x.data();
  // One pass: each task writes its part of dx and sums the tau shares of its block.
  Tensor hold_d;
  double* dtau = shared::scratch_doubles(hold_d, C);
  channel_sums<1>(
      o.L, {dtau},
      [&](int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<1> acc) {
        for (int64_t r = r0; r < r0 + rows; ++r)
          for (int64_t c = c0; c < c1; ++c) {
            const int64_t i = r * C + c;
            dx[i] = share_to_input(gd[i], xd[i], t[c]);
            acc[0][c] += share_to_tau(gd[i], xd[i], t[c]);
          }
      },
      [&](int64_t p, std::array<double, 1>& sums) {
        const float tc = t[p % C];
        double s = 0;
        for (int64_t i = p * S; i < (p + 1) * S; ++i) {
          dx[i] = share_to_input(gd[i], xd[i], tc);
          s += share_to_tau(gd[i], xd[i], tc);
        }
        sums[0] = s;
      });
  for (int64_t c = 0; c < C; ++c) grads.tau.data()[c] = static_cast<float>(dtau[c]);
  return grads;
}

}  // namespace peel
