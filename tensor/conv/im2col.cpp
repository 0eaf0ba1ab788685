// Convolution as im2col + GEMM (OpenBLAS), in channels-last memory.
//
// With activations in (N,H,W,C) order, one output pixel's receptive field is KH*KW runs of C
// contiguous floats, so im2col writes a row of K = KH*KW*C values per output pixel (order kh, kw,
// c) and the convolution is one GEMM against the weights repacked as (O, KH, KW, C):
//   forward         Y (P x O)  = cols (P x K) * Wr^T
//   backward-data   dcols      = dY (P x O) * Wr, then col2im adds the rows back into dX
//   backward-weight dWr (O x K) = dY^T * cols, summed over the chunks
// P counts output pixels. A 1x1 kernel with stride 1 and no padding needs no im2col at all: the
// input already is the cols matrix.
//
// Threading: the batch is cut into chunks of whole images, and each OpenMP thread carries its
// chunks through im2col, a single-threaded GEMM and col2im on its own, in its own cols buffer
// (about 1 MB, so it stays in cache between im2col and GEMM). OpenBLAS is held at one thread for
// the duration of the call. The obvious alternative, an OpenMP im2col followed by a threaded
// OpenBLAS GEMM per chunk, hands the cores back and forth between libgomp's workers (which spin
// after each parallel region) and OpenBLAS's own pthreads; on 2 cores that measured 10-30x slower.
// The weight gradient is accumulated per thread and the partial sums are added in thread order.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "tensor/conv/backends.h"
#include "tensor/linalg.h"
#include "tensor/threads.h"

namespace peel::conv_detail {
namespace {

constexpr int64_t kTargetChunkFloats = int64_t{1} << 18;  // ~1 MB of cols per chunk

bool is_pointwise(const ConvProblem& p) {
  const Conv2dGeometry& g = p.g;
  return p.KH == 1 && p.KW == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
}

int64_t patch_size(const ConvProblem& p) { return p.KH * p.KW * p.C; }

// Holds OpenBLAS at one thread while OpenMP threads make their own GEMM calls (see top of file).
class OpenBlasSingleThreaded {
 public:
  OpenBlasSingleThreaded() { openblas_set_num_threads(1); }
  ~OpenBlasSingleThreaded() { openblas_set_num_threads(num_threads()); }
  OpenBlasSingleThreaded(const OpenBlasSingleThreaded&) = delete;
  OpenBlasSingleThreaded& operator=(const OpenBlasSingleThreaded&) = delete;
};

// Splits the chunks of the batch over `tasks` tasks (contiguous ranges, fixed by the counts) and
// calls body(task, n0, n1) for each chunk [n0, n1) of images.
template <class Body>
void for_each_chunk(const ConvProblem& p, int64_t chunk, int64_t tasks, Body&& body) {
  const int64_t chunks = (p.N + chunk - 1) / chunk;
  // An OpenMP region, not parallel_for's pool: Debian's OpenBLAS is its OpenMP build, whose GEMM
  // keeps its buffers per OpenMP thread, so concurrent calls are safe only from the threads of an
  // OpenMP team (from pool threads they share one buffer and the results come out garbled).
  const int team = static_cast<int>(std::max<int64_t>(1, tasks));
#pragma omp parallel for num_threads(team) schedule(static, 1)
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t c = chunks * t / tasks; c < chunks * (t + 1) / tasks; ++c)
      body(t, c * chunk, std::min(p.N, (c + 1) * chunk));
}

int64_t task_count(const ConvProblem& p, int64_t chunk) {
  return std::min<int64_t>(num_threads(), (p.N + chunk - 1) / chunk);
}

// (O,C,KH,KW) -> (O,KH,KW,C)
Tensor weights_ohwc(const Tensor& w, const ConvProblem& p) {
  Tensor out = Tensor::empty({p.O, patch_size(p)});
  const float* src = w.data();
  float* dst = out.data();
  const int64_t taps = p.KH * p.KW;
  for (int64_t o = 0; o < p.O; ++o)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t k = 0; k < taps; ++k) dst[(o * taps + k) * p.C + c] = src[(o * p.C + c) * taps + k];
  return out;
}

// The input coordinate of output coordinate o through tap k.
inline int64_t input_coord(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  return o * stride - pad + k * dilation;
}

// cols rows for images [n0, n1) of channels-last x; row r = ((n - n0) * OH + oh) * OW + ow.
void im2col(const float* x, const ConvProblem& p, int64_t n0, int64_t n1, float* cols) {
  const Conv2dGeometry& g = p.g;
  const int64_t K = patch_size(p), C = p.C;
  float* row = cols;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow, row += K)
        for (int64_t kh = 0; kh < p.KH; ++kh) {
          const int64_t ih = input_coord(oh, kh, g.stride_h, g.pad_h, g.dilation_h);
          float* dst = row + kh * p.KW * C;
          if (ih < 0 || ih >= p.H) {
            std::memset(dst, 0, sizeof(float) * p.KW * C);
            continue;
          }
          const float* src_row = x + ((n * p.H + ih) * p.W) * C;
          for (int64_t kw = 0; kw < p.KW; ++kw, dst += C) {
            const int64_t iw = input_coord(ow, kw, g.stride_w, g.pad_w, g.dilation_w);
            if (iw < 0 || iw >= p.W)
              std::memset(dst, 0, sizeof(float) * C);
            else
              std::memcpy(dst, src_row + iw * C, sizeof(float) * C);
          }
        }
}

// dx for images [n0, n1) = the rows of dcols folded back onto the pixels they came from.
void col2im(const float* dcols, const ConvProblem& p, int64_t n0, int64_t n1, float* dx) {
  const Conv2dGeometry& g = p.g;
  const int64_t K = patch_size(p), C = p.C;
  std::memset(dx + n0 * p.H * p.W * C, 0, sizeof(float) * (n1 - n0) * p.H * p.W * C);
  const float* row = dcols;
  for (int64_t n = n0; n < n1; ++n) {
    float* image = dx + n * p.H * p.W * C;
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow, row += K)
        for (int64_t kh = 0; kh < p.KH; ++kh) {
          const int64_t ih = input_coord(oh, kh, g.stride_h, g.pad_h, g.dilation_h);
          if (ih < 0 || ih >= p.H) continue;
          for (int64_t kw = 0; kw < p.KW; ++kw) {
            const int64_t iw = input_coord(ow, kw, g.stride_w, g.pad_w, g.dilation_w);
            if (iw < 0 || iw >= p.W) continue;
            float* dst = image + (ih * p.W + iw) * C;
            const float* src = row + (kh * p.KW + kw) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
          }
        }
  }
}

}  // namespace

// Whole images per chunk: about kTargetChunkFloats of cols, but at least one chunk per thread.
int64_t im2col_chunk_images(const ConvProblem& p) {
  const int64_t per_image = p.OH * p.OW * patch_size(p);
  const int64_t by_size = std::max<int64_t>(1, kTargetChunkFloats / std::max<int64_t>(per_image, 1));
  const int64_t by_threads = std::max<int64_t>(1, p.N / num_threads());
  return std::min(by_size, by_threads);
}

Tensor im2col_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu) {
  const Tensor xl = x.channels_last();
  const Tensor wr = weights_ohwc(w, p);
  Tensor y = Tensor::empty_channels_last(p.y_shape());
  const int64_t K = patch_size(p), pixels = p.OH * p.OW, chunk = im2col_chunk_images(p);
  const int64_t tasks = task_count(p, chunk);
  const bool pointwise = is_pointwise(p);
  Tensor cols = pointwise ? Tensor() : Tensor::empty({tasks, chunk * pixels * K});
  OpenBlasSingleThreaded single;
  for_each_chunk(p, chunk, tasks, [&](int64_t t, int64_t n0, int64_t n1) {
    const int64_t rows = (n1 - n0) * pixels;
    float* out = y.data() + n0 * pixels * p.O;
    if (bias.defined())
      for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * p.O, bias.data(), sizeof(float) * p.O);
    const float* a = xl.data() + n0 * pixels * K;  // pointwise: the input is the cols matrix
    if (!pointwise) {
      float* buf = cols.data() + t * chunk * pixels * K;
      im2col(xl.data(), p, n0, n1, buf);
      a = buf;
    }
    gemm(false, true, rows, p.O, K, 1.f, a, K, wr.data(), K, bias.defined() ? 1.f : 0.f, out, p.O);
    // The ReLU epilogue on the chunk while it is still in cache (OpenBLAS's GEMM has none).
    if (relu) simd::kernels().unary(simd::UnaryOp::kRelu, rows * p.O, out, 1, out, 1, 0.f, 0.f);
  });
  return y;
}

Tensor im2col_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p) {
  const Tensor gl = gy.channels_last();
  const Tensor wr = weights_ohwc(w, p);
  Tensor dx = Tensor::empty_channels_last(p.x_shape());
  const int64_t K = patch_size(p), pixels = p.OH * p.OW, chunk = im2col_chunk_images(p);
  const int64_t tasks = task_count(p, chunk);
  const bool pointwise = is_pointwise(p);
  Tensor dcols = pointwise ? Tensor() : Tensor::empty({tasks, chunk * pixels * K});
  OpenBlasSingleThreaded single;
  for_each_chunk(p, chunk, tasks, [&](int64_t t, int64_t n0, int64_t n1) {
    const int64_t rows = (n1 - n0) * pixels;
    const float* g = gl.data() + n0 * pixels * p.O;
    if (pointwise) {
      gemm(false, false, rows, K, p.O, 1.f, g, p.O, wr.data(), K, 0.f, dx.data() + n0 * pixels * K, K);
      return;
    }
    float* buf = dcols.data() + t * chunk * pixels * K;
    gemm(false, false, rows, K, p.O, 1.f, g, p.O, wr.data(), K, 0.f, buf, K);
    col2im(buf, p, n0, n1, dx.data());
  });
  return dx;
}

Tensor im2col_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p) {
  const Tensor gl = gy.channels_last();
  const Tensor xl = x.channels_last();
  const int64_t K = patch_size(p), pixels = p.OH * p.OW, chunk = im2col_chunk_images(p);
  const int64_t tasks = task_count(p, chunk);
  const bool pointwise = is_pointwise(p);
  Tensor cols = pointwise ? Tensor() : Tensor::empty({tasks, chunk * pixels * K});
  Tensor partial = Tensor::zeros({tasks, p.O * K});  // per task: (O, KH, KW, C)
  {
    OpenBlasSingleThreaded single;
    for_each_chunk(p, chunk, tasks, [&](int64_t t, int64_t n0, int64_t n1) {
      const int64_t rows = (n1 - n0) * pixels;
      const float* b = xl.data() + n0 * pixels * K;
      if (!pointwise) {
        float* buf = cols.data() + t * chunk * pixels * K;
        im2col(xl.data(), p, n0, n1, buf);
        b = buf;
      }
      gemm(true, false, p.O, K, rows, 1.f, gl.data() + n0 * pixels * p.O, p.O, b, K, 1.f, partial.data() + t * p.O * K,
           K);
    });
  }
  // dw[o][c][kh][kw] = sum over tasks, in task order, of partial[t][o][(kh, kw)][c].
  Tensor dw = Tensor::empty(p.w_shape());
  const int64_t taps = p.KH * p.KW;
  const float* src = partial.data();
  float* dst = dw.data();
  for (int64_t o = 0; o < p.O; ++o)
    for (int64_t k = 0; k < taps; ++k)
      for (int64_t c = 0; c < p.C; ++c) {
        const int64_t i = (o * taps + k) * p.C + c;
        float s = src[i];
        for (int64_t t = 1; t < tasks; ++t) s += src[t * p.O * K + i];
        dst[(o * p.C + c) * taps + k] = s;
      }
  return dw;
}

}  // namespace peel::conv_detail
