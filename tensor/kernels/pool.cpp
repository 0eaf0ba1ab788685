// Max, average and global average pooling, forward and backward, on channels-last or NCHW memory.
// Each output is computed by one thread from its own window, and each backward task owns whole
// (n) blocks or (n, c) planes of the input gradient, so results do not depend on threads.
#include "tensor/kernels/pool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "tensor/error.h"
#include "tensor/simd/vector.h"
#include "tensor/threads.h"

namespace peel {

namespace {

constexpr int64_t kElementsPerTask = 16384;

// The channels-last max pool works on 16 channels per vector.
using vf16 = simd::Vector<float, 16>;
using vi16 = simd::Vector<int32_t, 16>;

struct PoolShape {
  int64_t N, C, H, W, OH, OW;
};

// One output window clipped to the input: rows [h0, h1), columns [w0, w1), and PyTorch's
// count_include_pad divisor (the window clipped to the padded input).
struct Window {
  int64_t h0, h1, w0, w1, divisor;
};

Window window(const PoolShape& s, const Pool2dGeometry& g, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.stride - g.padding, w0 = ow * g.stride - g.padding;
  int64_t h1 = std::min(h0 + g.kernel, s.H + g.padding), w1 = std::min(w0 + g.kernel, s.W + g.padding);
  const int64_t divisor = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H);
  w1 = std::min(w1, s.W);
  return {h0, h1, w0, w1, divisor};
}

PoolShape pool_shape(const Shape& x, const Pool2dGeometry& g, const char* op) {
  PEEL_CHECK(x.size() == 4, "{}: needs a 4-d input (N,C,H,W), got shape {}", op, to_string(x));
  PEEL_CHECK(g.kernel > 0 && g.stride > 0 && g.padding >= 0,
             "{}: kernel and stride must be positive and padding non-negative, got kernel={} stride={} padding={}", op,
             g.kernel, g.stride, g.padding);
  PEEL_CHECK(2 * g.padding <= g.kernel, "{}: padding must be at most half the kernel, got kernel={} padding={}", op,
             g.kernel, g.padding);
  PEEL_CHECK(x[2] + 2 * g.padding >= g.kernel && x[3] + 2 * g.padding >= g.kernel,
             "{}: input shape {} is smaller than the kernel {} (padding {})", op, to_string(x), g.kernel, g.padding);
  PoolShape s{x[0], x[1], x[2], x[3], 0, 0};
  s.OH = (s.H + 2 * g.padding - g.kernel) / g.stride + 1;
  s.OW = (s.W + 2 * g.padding - g.kernel) / g.stride + 1;
  return s;
}

Shape output_shape(const PoolShape& s) { return {s.N, s.C, s.OH, s.OW}; }

bool use_channels_last(const Tensor& t) { return t.is_channels_last() && !(t.size(1) == 1 && t.is_contiguous()); }

}  // namespace

// ---- Max pooling -----------------------------------------------------------------------------

int32_t MaxPoolArgmax::at(int64_t n, int64_t c, int64_t oh, int64_t ow) const {
  const int64_t C = output_shape[1], OH = output_shape[2], OW = output_shape[3];
  const int64_t offset = channels_last ? ((n * OH + oh) * OW + ow) * C + c : ((n * C + c) * OH + oh) * OW + ow;
  return index[static_cast<size_t>(offset)];
}

std::vector<int32_t> MaxPoolArgmax::logical_order() const {
  std::vector<int32_t> logical;
  logical.reserve(index.size());
  for (int64_t n = 0; n < output_shape[0]; ++n)
    for (int64_t c = 0; c < output_shape[1]; ++c)
      for (int64_t oh = 0; oh < output_shape[2]; ++oh)
        for (int64_t ow = 0; ow < output_shape[3]; ++ow) logical.push_back(at(n, c, oh, ow));
  return logical;
}

Tensor max_pool2d_forward(const Tensor& x, const Pool2dGeometry& g, MaxPoolArgmax& argmax) {
  const char* op = "max_pool2d_forward";
  PEEL_CHECK(x.defined(), "{}: input is undefined", op);
  const PoolShape s = pool_shape(x.shape(), g, op);
  PEEL_CHECK(s.H * s.W <= std::numeric_limits<int32_t>::max(), "{}: input plane {}x{} too large for int32 indices", op,
             s.H, s.W);
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  argmax.index.resize(static_cast<size_t>(N * C * OH * OW));
  argmax.output_shape = output_shape(s);
  argmax.channels_last = use_channels_last(x);
  int32_t* idx_out = argmax.index.data();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  if (argmax.channels_last) {
    Tensor y = Tensor::empty_channels_last(output_shape(s));
    const float* xd = x.data();
    float* yd = y.data();
    // One task per output row (n, oh); 16 channels per vector, the rest one by one. The indices go
    // where the outputs go, so both are stored a vector at a time.
    parallel_for(N * OH, std::max<int64_t>(1, kElementsPerTask / (OW * C * g.kernel * g.kernel)),
                 [&](int64_t t0, int64_t t1) {
                   for (int64_t t = t0; t < t1; ++t) {
                     const int64_t n = t / OH, oh = t % OH;
                     const float* xn = xd + n * H * W * C;
                     for (int64_t ow = 0; ow < OW; ++ow) {
                       const Window w = window(s, g, oh, ow);
                       const int64_t out = ((n * OH + oh) * OW + ow) * C;
                       float* yo = yd + out;
                       int32_t* io = idx_out + out;
                       const int32_t first = static_cast<int32_t>(w.h0 * W + w.w0);
                       int64_t c = 0;
                       for (; c + 16 <= C; c += 16) {
                         vf16 best = simd::splat<vf16>(kNegInf);
                         vi16 idx = simd::splat<vi16>(first);
                         for (int64_t ih = w.h0; ih < w.h1; ++ih)
                           for (int64_t iw = w.w0; iw < w.w1; ++iw) {
                             const vf16 v = simd::load<vf16>(xn + (ih * W + iw) * C + c);
                             // Strictly greater keeps the first maximum; a NaN always takes over.
                             const vi16 take = (v > best) | (v != v);
                             best = take ? v : best;
                             idx = take ? simd::splat<vi16>(static_cast<int32_t>(ih * W + iw)) : idx;
                           }
                         simd::store(yo + c, best);
                         simd::store(io + c, idx);
                       }
                       for (; c < C; ++c) {
                         float best = kNegInf;
                         int32_t idx = first;
                         for (int64_t ih = w.h0; ih < w.h1; ++ih)
                           for (int64_t iw = w.w0; iw < w.w1; ++iw) {
                             const float v = xn[(ih * W + iw) * C + c];
                             if (v > best || std::isnan(v)) {
                               best = v;
                               idx = static_cast<int32_t>(ih * W + iw);
                             }
                           }
                         yo[c] = best;
                         io[c] = idx;
                       }
                     }
                   }
                 });
    return y;
  }

  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(output_shape(s));
  const float* xd = xc.data();
  float* yd = y.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / (OH * OW * g.kernel * g.kernel)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) {
                   const float* xp = xd + p * H * W;
                   for (int64_t oh = 0; oh < OH; ++oh) {
                     for (int64_t ow = 0; ow < OW; ++ow) {
                       const Window w = window(s, g, oh, ow);
                       float best = kNegInf;
                       int64_t best_k = w.h0 * W + w.w0;
                       for (int64_t ih = w.h0; ih < w.h1; ++ih) {
                         for (int64_t iw = w.w0; iw < w.w1; ++iw) {
                           const float v = xp[ih * W + iw];
                           if (v > best || std::isnan(v)) {
                             best = v;
                             best_k = ih * W + iw;
                           }
                         }
                       }
                       yd[(p * OH + oh) * OW + ow] = best;
                       idx_out[(p * OH + oh) * OW + ow] = static_cast<int32_t>(best_k);
                     }
                   }
                 }
               });
  return y;
}

Tensor max_pool2d_backward(const Tensor& grad_y, const MaxPoolArgmax& argmax, const Shape& x_shape) {
  const char* op = "max_pool2d_backward";
  PEEL_CHECK(grad_y.defined() && grad_y.dim() == 4 && x_shape.size() == 4 && grad_y.size(0) == x_shape[0] &&
                 grad_y.size(1) == x_shape[1],
             "{}: grad_y shape {} does not fit input shape {}", op,
             grad_y.defined() ? to_string(grad_y.shape()) : "undefined", to_string(x_shape));
  PEEL_CHECK(grad_y.shape() == argmax.output_shape && static_cast<int64_t>(argmax.index.size()) == grad_y.numel(),
             "{}: argmax holds {} entries for an output of shape {}, but grad_y has shape {}", op, argmax.index.size(),
             to_string(argmax.output_shape), to_string(grad_y.shape()));
  const int64_t N = x_shape[0], C = x_shape[1], H = x_shape[2], W = x_shape[3];
  const int64_t OH = grad_y.size(2), OW = grad_y.size(3), HW = H * W;
  const int32_t* idx = argmax.index.data();
  std::atomic<bool> bad{false};

  if (argmax.channels_last) {
    const Tensor gyc = grad_y.channels_last();
    Tensor gx = Tensor::empty_channels_last(x_shape);
    const float* gy = gyc.data();
    float* gxd = gx.data();
    // One task per sample: windows may overlap, and all outputs of a sample stay in its task.
    parallel_for(N, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, HW * C)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        float* gxn = gxd + n * HW * C;
        std::fill(gxn, gxn + HW * C, 0.f);
        for (int64_t o = 0; o < OH * OW; ++o) {
          const float* gyo = gy + (n * OH * OW + o) * C;
          const int32_t* io = idx + (n * OH * OW + o) * C;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t k = io[c];
            if (k < 0 || k >= HW) {
              bad.store(true, std::memory_order_relaxed);
              continue;
            }
            gxn[k * C + c] += gyo[c];
          }
        }
      }
    });
    PEEL_CHECK(!bad.load(), "{}: argmax holds an index outside the {}x{} input plane", op, H, W);
    return gx;
  }

  const Tensor gyc = grad_y.contiguous();
  Tensor gx = Tensor::empty(x_shape);
  const float* gy = gyc.data();
  float* gxd = gx.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, HW)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* gxp = gxd + p * HW;
      std::fill(gxp, gxp + HW, 0.f);
      for (int64_t o = 0; o < OH * OW; ++o) {
        const int64_t k = idx[p * OH * OW + o];
        if (k < 0 || k >= HW) {
          bad.store(true, std::memory_order_relaxed);
          continue;
        }
        gxp[k] += gy[p * OH * OW + o];
      }
    }
  });
  PEEL_CHECK(!bad.load(), "{}: argmax holds an index outside the {}x{} input plane", op, H, W);
  return gx;
}

bool max_pool2d_windows_disjoint(const Pool2dGeometry& g) { return g.stride == g.kernel && g.padding == 0; }

void max_pool2d_backward_rows(const float* grad_y, const MaxPoolArgmax& argmax, int64_t H, int64_t W, int64_t kernel,
                              int64_t r0, int64_t rows, float* out) {
  PEEL_CHECK(argmax.channels_last && argmax.output_shape.size() == 4,
             "max_pool2d_backward_rows: needs the argmax of a channels-last max pool");
  const int64_t C = argmax.output_shape[1], OH = argmax.output_shape[2], OW = argmax.output_shape[3];
  const int32_t* index = argmax.index.data();
  const vf16 zero{};
  // Position r0 as (n, h, w) and its window (oh, ow), stepped along without dividing: h = oh *
  // kernel + kh, w = ow * kernel + kw.
  int64_t n = r0 / (H * W), h = r0 / W % H, w = r0 % W;
  int64_t oh = h / kernel, kh = h % kernel, ow = w / kernel, kw = w % kernel;
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * C;
    if (oh < OH && ow < OW) {
      const int64_t window = ((n * OH + oh) * OW + ow) * C;
      const float* gy = grad_y + window;
      const int32_t* io = index + window;
      const int32_t here = static_cast<int32_t>(h * W + w);
      // max_pool2d_backward adds each gradient to a zero-filled plane: 0 + g, which turns -0 into +0.
      int64_t c = 0;
      for (; c + 16 <= C; c += 16) {
        const vi16 chosen = simd::load<vi16>(io + c) == simd::splat<vi16>(here);
        simd::store(o + c, chosen ? zero + simd::load<vf16>(gy + c) : zero);
      }
      for (; c < C; ++c) o[c] = io[c] == here ? 0.f + gy[c] : 0.f;
    } else {
      std::fill(o, o + C, 0.f);  // a row or column no window covers
    }
    if (++kw == kernel) {
      kw = 0;
      ++ow;
    }
    if (++w < W) continue;
    w = ow = kw = 0;
    if (++kh == kernel) {
      kh = 0;
      ++oh;
    }
    if (++h < H) continue;
    h = oh = kh = 0;
    ++n;
  }
}

// ---- Average pooling -------------------------------------------------------------------------

Tensor avg_pool2d_forward(const Tensor& x, const Pool2dGeometry& g) {
  const char* op = "avg_pool2d_forward";
  PEEL_CHECK(x.defined(), "{}: input is undefined", op);
  const PoolShape s = pool_shape(x.shape(), g, op);
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;

  if (use_channels_last(x)) {
    Tensor y = Tensor::empty_channels_last(output_shape(s));
    const float* xd = x.data();
    float* yd = y.data();
    parallel_for(N * OH, std::max<int64_t>(1, kElementsPerTask / (OW * C * g.kernel * g.kernel)),
                 [&](int64_t t0, int64_t t1) {
                   for (int64_t t = t0; t < t1; ++t) {
                     const int64_t n = t / OH, oh = t % OH;
                     for (int64_t ow = 0; ow < OW; ++ow) {
                       const Window w = window(s, g, oh, ow);
                       float* __restrict yo = yd + ((n * OH + oh) * OW + ow) * C;
                       std::fill(yo, yo + C, 0.f);
                       for (int64_t ih = w.h0; ih < w.h1; ++ih)
                         for (int64_t iw = w.w0; iw < w.w1; ++iw) {
                           const float* __restrict p = xd + ((n * H + ih) * W + iw) * C;
                           for (int64_t c = 0; c < C; ++c) yo[c] += p[c];
                         }
                       const float divisor = static_cast<float>(w.divisor);
                       for (int64_t c = 0; c < C; ++c) yo[c] /= divisor;
                     }
                   }
                 });
    return y;
  }

  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(output_shape(s));
  const float* xd = xc.data();
  float* yd = y.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / (OH * OW * g.kernel * g.kernel)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) {
                   const float* xp = xd + p * H * W;
                   for (int64_t oh = 0; oh < OH; ++oh)
                     for (int64_t ow = 0; ow < OW; ++ow) {
                       const Window w = window(s, g, oh, ow);
                       float sum = 0.f;
                       for (int64_t ih = w.h0; ih < w.h1; ++ih)
                         for (int64_t iw = w.w0; iw < w.w1; ++iw) sum += xp[ih * W + iw];
                       yd[(p * OH + oh) * OW + ow] = sum / static_cast<float>(w.divisor);
                     }
                 }
               });
  return y;
}

Tensor avg_pool2d_backward(const Tensor& grad_y, const Shape& x_shape, const Pool2dGeometry& g) {
  const char* op = "avg_pool2d_backward";
  const PoolShape s = pool_shape(x_shape, g, op);
  PEEL_CHECK(
      grad_y.defined() && grad_y.shape() == output_shape(s), "{}: grad_y has shape {} but input shape {} pools to {}",
      op, grad_y.defined() ? to_string(grad_y.shape()) : "undefined", to_string(x_shape), to_string(output_shape(s)));
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;

  if (use_channels_last(grad_y)) {
    Tensor gx = Tensor::empty_channels_last(x_shape);
    const float* gy = grad_y.data();
    float* gxd = gx.data();
    parallel_for(N, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, H * W * C)),
                 [&](int64_t n0, int64_t n1) {
                   for (int64_t n = n0; n < n1; ++n) {
                     float* gxn = gxd + n * H * W * C;
                     std::fill(gxn, gxn + H * W * C, 0.f);
                     for (int64_t oh = 0; oh < OH; ++oh)
                       for (int64_t ow = 0; ow < OW; ++ow) {
                         const Window w = window(s, g, oh, ow);
                         const float divisor = static_cast<float>(w.divisor);
                         const float* __restrict gyo = gy + ((n * OH + oh) * OW + ow) * C;
                         for (int64_t ih = w.h0; ih < w.h1; ++ih)
                           for (int64_t iw = w.w0; iw < w.w1; ++iw) {
                             float* __restrict p = gxn + (ih * W + iw) * C;
                             for (int64_t c = 0; c < C; ++c) p[c] += gyo[c] / divisor;
                           }
                       }
                   }
                 });
    return gx;
  }

  const Tensor gyc = grad_y.contiguous();
  Tensor gx = Tensor::empty(x_shape);
  const float* gy = gyc.data();
  float* gxd = gx.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, H * W)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) {
                   float* gxp = gxd + p * H * W;
                   std::fill(gxp, gxp + H * W, 0.f);
                   for (int64_t oh = 0; oh < OH; ++oh)
                     for (int64_t ow = 0; ow < OW; ++ow) {
                       const Window w = window(s, g, oh, ow);
                       const float delta = gy[(p * OH + oh) * OW + ow] / static_cast<float>(w.divisor);
                       for (int64_t ih = w.h0; ih < w.h1; ++ih)
                         for (int64_t iw = w.w0; iw < w.w1; ++iw) gxp[ih * W + iw] += delta;
                     }
                 }
               });
  return gx;
}

// ---- Global average pooling --------------------------------------------------------------------

Tensor global_avg_pool_forward(const Tensor& x) {
  const char* op = "global_avg_pool_forward";
  PEEL_CHECK(x.defined() && x.dim() == 4, "{}: needs a 4-d input (N,C,H,W), got shape {}", op,
             x.defined() ? to_string(x.shape()) : "undefined");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  PEEL_CHECK(HW > 0, "{}: input shape {} has an empty plane", op, to_string(x.shape()));
  Tensor y = Tensor::empty({N, C});
  float* yd = y.data();
  const double inv = 1.0 / static_cast<double>(HW);

  if (use_channels_last(x)) {
    const float* xd = x.data();
    parallel_for(N, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, HW * C)), [&](int64_t n0, int64_t n1) {
      Tensor hold = Tensor::empty({2 * C});  // C doubles
      double* __restrict acc = reinterpret_cast<double*>(hold.data());
      for (int64_t n = n0; n < n1; ++n) {
        std::fill(acc, acc + C, 0.0);
        for (int64_t s = 0; s < HW; ++s) {
          const float* __restrict p = xd + (n * HW + s) * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += p[c];
        }
        for (int64_t c = 0; c < C; ++c) yd[n * C + c] = static_cast<float>(acc[c] * inv);
      }
    });
    return y;
  }

  const Tensor xc = x.contiguous();
  const float* xd = xc.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / HW), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* __restrict xp = xd + p * HW;
      double lanes[16] = {};
      int64_t s = 0;
      for (; s + 16 <= HW; s += 16)
        for (int l = 0; l < 16; ++l) lanes[l] += xp[s + l];
      for (; s < HW; ++s) lanes[0] += xp[s];
      double total = 0;
      for (double v : lanes) total += v;
      yd[p] = static_cast<float>(total * inv);
    }
  });
  return y;
}

Tensor global_avg_pool_backward(const Tensor& grad_y, const Shape& x_shape, bool channels_last) {
  const char* op = "global_avg_pool_backward";
  PEEL_CHECK(x_shape.size() == 4, "{}: needs a 4-d input shape (N,C,H,W), got {}", op, to_string(x_shape));
  const int64_t N = x_shape[0], C = x_shape[1], HW = x_shape[2] * x_shape[3];
  PEEL_CHECK(grad_y.defined() && grad_y.numel() == N * C &&
                 (grad_y.shape() == Shape({N, C}) || grad_y.shape() == Shape({N, C, 1, 1})),
             "{}: grad_y has shape {} but input shape {} pools to [{}, {}]", op,
             grad_y.defined() ? to_string(grad_y.shape()) : "undefined", to_string(x_shape), N, C);
  const Tensor gyc = grad_y.contiguous();
  const float* gy = gyc.data();
  const float count = static_cast<float>(HW);
  if (channels_last) {
    Tensor gx = Tensor::empty_channels_last(x_shape);
    float* gxd = gx.data();
    parallel_for(N, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, HW * C)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t s = 0; s < HW; ++s) {
          float* __restrict p = gxd + (n * HW + s) * C;
          for (int64_t c = 0; c < C; ++c) p[c] = gy[n * C + c] / count;
        }
    });
    return gx;
  }
  Tensor gx = Tensor::empty(x_shape);
  float* gxd = gx.data();
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, HW)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) std::fill(gxd + p * HW, gxd + (p + 1) * HW, gy[p] / count);
  });
  return gx;
}

}  // namespace peel
