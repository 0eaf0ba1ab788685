// The convolution dispatcher: shape checks, backend names and default, and the bias gradient.
// The backends live in conv/reference.cpp, conv/im2col.cpp, conv/direct*.cpp and conv/onednn.cpp.
#include <atomic>
#include <cstdlib>
#include <vector>

#include "tensor/conv/backends.h"
#include "tensor/conv/conv.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/simd/kernels.h"
#include "tensor/threads.h"

namespace peel {

using conv_detail::ConvProblem;

namespace {

std::string geometry_string(const Conv2dGeometry& g) {
  return fmt::format("stride ({}, {}), padding ({}, {}), dilation ({}, {})", g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                     g.dilation_h, g.dilation_w);
}

constexpr ConvBackend kAllBackends[] = {ConvBackend::kReference, ConvBackend::kIm2col, ConvBackend::kDirect,
                                        ConvBackend::kOneDnn};

// The fastest backend on small_cnn's layers at batch 128 and 2 threads, as measured by
// bench_conv (forward + backward-data + backward-weights summed over the five layers).
constexpr ConvBackend kMeasuredFastest = ConvBackend::kDirect;

ConvBackend initial_default() {
  if (const char* env = std::getenv("PEEL_CONV_BACKEND"); env != nullptr && *env != '\0')
    return parse_conv_backend(env);
  // The direct kernels need AVX2 (or AVX-512); without them (an old CPU, or PEEL_ISA=baseline)
  // im2col is the next fastest on these shapes.
  if (kMeasuredFastest == ConvBackend::kDirect && simd::active_isa() == simd::Isa::kBaseline)
    return ConvBackend::kIm2col;
  return kMeasuredFastest;
}

std::atomic<ConvBackend>& default_slot() {
  static std::atomic<ConvBackend> slot{initial_default()};
  return slot;
}

Tensor dense_weights(const Tensor& w) { return w.is_contiguous() ? w : w.contiguous(); }

void check_bias(const Tensor& bias, const ConvProblem& p) {
  if (!bias.defined()) return;
  PEEL_CHECK(bias.dim() == 1 && bias.size(0) == p.O, "conv2d_forward: bias has shape {}, expected ({}) for weights {}",
             to_string(bias.shape()), p.O, to_string(p.w_shape()));
}

void check_grad_y(const Tensor& grad_y, const ConvProblem& p, const char* op) {
  PEEL_CHECK(grad_y.defined(), "{}: grad_y is undefined", op);
  PEEL_CHECK(grad_y.shape() == p.y_shape(),
             "{}: grad_y has shape {}, but input {} and weights {} with {} give output {}", op,
             to_string(grad_y.shape()), to_string(p.x_shape()), to_string(p.w_shape()), geometry_string(p.g),
             to_string(p.y_shape()));
}

}  // namespace

namespace conv_detail {

ConvProblem make_problem(const Shape& x, const Shape& w, const Conv2dGeometry& g) {
  const Shape y = conv2d_output_shape(x, w, g);
  return ConvProblem{x[0], x[1], x[2], x[3], w[0], w[2], w[3], y[2], y[3], g};
}

}  // namespace conv_detail

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dGeometry& g) {
  PEEL_CHECK(x.size() == 4, "conv2d: input must be 4-d (N,C,H,W), got shape {}", to_string(x));
  PEEL_CHECK(w.size() == 4, "conv2d: weights must be 4-d (O,C,KH,KW), got shape {}", to_string(w));
  PEEL_CHECK(x[1] == w[1], "conv2d: input {} has {} channels but weights {} expect {} (groups=1)", to_string(x), x[1],
             to_string(w), w[1]);
  PEEL_CHECK(
      g.stride_h >= 1 && g.stride_w >= 1 && g.dilation_h >= 1 && g.dilation_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0,
      "conv2d: invalid geometry {} (strides and dilations must be >= 1, padding >= 0)", geometry_string(g));
  PEEL_CHECK(x[0] >= 1 && x[1] >= 1 && w[0] >= 1 && w[2] >= 1 && w[3] >= 1,
             "conv2d: empty operand: input {}, weights {}", to_string(x), to_string(w));
  const int64_t extent_h = (w[2] - 1) * g.dilation_h + 1, extent_w = (w[3] - 1) * g.dilation_w + 1;
  const int64_t padded_h = x[2] + 2 * g.pad_h, padded_w = x[3] + 2 * g.pad_w;
  PEEL_CHECK(extent_h <= padded_h && extent_w <= padded_w,
             "conv2d: kernel {}x{} (dilated extent {}x{}) does not fit input {} with {}", w[2], w[3], extent_h,
             extent_w, to_string(x), geometry_string(g));
  return {x[0], w[0], (padded_h - extent_h) / g.stride_h + 1, (padded_w - extent_w) / g.stride_w + 1};
}

ConvBackend parse_conv_backend(std::string_view name) {
  for (ConvBackend b : kAllBackends)
    if (name == conv_backend_name(b)) return b;
  PEEL_FAIL("conv backend '{}' is unknown; valid names: reference, im2col, direct, onednn", name);
}

const char* conv_backend_name(ConvBackend backend) {
  switch (backend) {
    case ConvBackend::kReference:
      return "reference";
    case ConvBackend::kIm2col:
      return "im2col";
    case ConvBackend::kDirect:
      return "direct";
    case ConvBackend::kOneDnn:
      return "onednn";
  }
  return "?";
}

ConvBackend default_conv_backend() { return default_slot().load(std::memory_order_relaxed); }

void set_default_conv_backend(ConvBackend backend) { default_slot().store(backend, std::memory_order_relaxed); }

Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dGeometry& g,
                      ConvBackend backend, ConvEpilogue epilogue) {
  PEEL_CHECK(x.defined() && w.defined(), "conv2d_forward: undefined input or weights");
  const bool relu = epilogue == ConvEpilogue::kRelu;
  const ConvProblem p = conv_detail::make_problem(x.shape(), w.shape(), g);
  check_bias(bias, p);
  const Tensor wd = dense_weights(w);
  const Tensor bd = bias.defined() ? bias.contiguous() : Tensor();
  switch (backend) {
    case ConvBackend::kReference:
      return conv_detail::reference_forward(x, wd, bd, p, relu);
    case ConvBackend::kIm2col:
      return conv_detail::im2col_forward(x, wd, bd, p, relu);
    case ConvBackend::kDirect:
      return conv_detail::direct_forward(x, wd, bd, p, conv_detail::direct_isa(), conv_detail::DirectMode::kAuto, relu);
    case ConvBackend::kOneDnn:
      return conv_detail::onednn_forward(x, wd, bd, p, relu);
  }
  PEEL_FAIL("conv2d_forward: bad backend {}", static_cast<int>(backend));
}

Tensor conv2d_backward_data(const Tensor& grad_y, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g,
                            ConvBackend backend) {
  PEEL_CHECK(w.defined(), "conv2d_backward_data: undefined weights");
  const ConvProblem p = conv_detail::make_problem(x_shape, w.shape(), g);
  check_grad_y(grad_y, p, "conv2d_backward_data");
  const Tensor wd = dense_weights(w);
  switch (backend) {
    case ConvBackend::kReference:
      return conv_detail::reference_backward_data(grad_y, wd, p);
    case ConvBackend::kIm2col:
      return conv_detail::im2col_backward_data(grad_y, wd, p);
    case ConvBackend::kDirect:
      return conv_detail::direct_backward_data(grad_y, wd, p, conv_detail::direct_isa());
    case ConvBackend::kOneDnn:
      return conv_detail::onednn_backward_data(grad_y, wd, p);
  }
  PEEL_FAIL("conv2d_backward_data: bad backend {}", static_cast<int>(backend));
}

Tensor conv2d_backward_weight(const Tensor& grad_y, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g,
                              ConvBackend backend) {
  PEEL_CHECK(x.defined(), "conv2d_backward_weight: undefined input");
  const ConvProblem p = conv_detail::make_problem(x.shape(), w_shape, g);
  check_grad_y(grad_y, p, "conv2d_backward_weight");
  switch (backend) {
    case ConvBackend::kReference:
      return conv_detail::reference_backward_weight(grad_y, x, p);
    case ConvBackend::kIm2col:
      return conv_detail::im2col_backward_weight(grad_y, x, p);
    case ConvBackend::kDirect:
      return conv_detail::direct_backward_weight(grad_y, x, p, conv_detail::direct_isa());
    case ConvBackend::kOneDnn:
      return conv_detail::onednn_backward_weight(grad_y, x, p);
  }
  PEEL_FAIL("conv2d_backward_weight: bad backend {}", static_cast<int>(backend));
}

Tensor conv2d_backward_bias(const Tensor& grad_y) {
  PEEL_CHECK(grad_y.defined() && grad_y.dim() == 4, "conv2d_backward_bias: grad_y must be 4-d (N,O,OH,OW), got {}",
             grad_y.defined() ? to_string(grad_y.shape()) : std::string("undefined"));
  if (!grad_y.is_channels_last()) return sum(grad_y, {0, 2, 3});
  // Channels-last: rows of O values, one per pixel. Each thread sums a fixed range of pixels in
  // double; the partial sums are then added in thread order, so the bits depend only on the
  // thread count.
  const int64_t O = grad_y.size(1), pixels = grad_y.numel() / std::max<int64_t>(O, 1);
  const int threads = std::max(1, std::min<int>(num_threads(), static_cast<int>(pixels / 1024)));
  std::vector<double> partial(static_cast<size_t>(threads * O), 0.0);  // small: O per thread
  const float* g = grad_y.data();
  parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      double* acc = partial.data() + t * O;
      const int64_t p0 = pixels * t / threads, p1 = pixels * (t + 1) / threads;
      for (int64_t px = p0; px < p1; ++px) {
        const float* row = g + px * O;
        for (int64_t o = 0; o < O; ++o) acc[o] += row[o];
      }
    }
  });
  Tensor out = Tensor::empty({O});
  for (int64_t o = 0; o < O; ++o) {
    double s = 0;
    for (int t = 0; t < threads; ++t) s += partial[static_cast<size_t>(t * O + o)];
    out.data()[o] = static_cast<float>(s);
  }
  return out;
}

}  // namespace peel
