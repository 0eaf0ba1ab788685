// The reference convolution: the definition, as plain loops with double accumulators, reading
// any strides. Slow on purpose; every other backend is tested against it.
//
// Each result element is computed by gathering its terms (never by scattering), so the three
// directions are three independent restatements of
//   y[n,o,oh,ow] = b[o] + sum_{c,kh,kw} x[n,c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] * w[o,c,kh,kw].
#include "tensor/conv/backends.h"
#include "tensor/threads.h"

namespace peel::conv_detail {
namespace {

// Element addressing for a 4-d strided tensor.
struct View4 {
  const float* data;
  int64_t s0, s1, s2, s3;
  explicit View4(const Tensor& t)
      : data(t.data()), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)), s3(t.stride(3)) {}
  float operator()(int64_t a, int64_t b, int64_t c, int64_t d) const { return data[a * s0 + b * s1 + c * s2 + d * s3]; }
};

float* element(Tensor& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t.data() + a * t.stride(0) + b * t.stride(1) + c * t.stride(2) + d * t.stride(3);
}

// The input coordinate that output coordinate `o` reads through tap `k`; may lie in the padding.
inline int64_t input_coord(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  return o * stride - pad + k * dilation;
}

}  // namespace

Tensor reference_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu) {
  const View4 X(x), Wt(w);
  const Conv2dGeometry& g = p.g;
  Tensor y = Tensor::empty_channels_last(p.y_shape());
  parallel_for(p.N * p.O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t no = begin; no < end; ++no) {
      const int64_t n = no / p.O, o = no % p.O;
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          double acc = bias.defined() ? bias.data()[o] : 0.0;
          for (int64_t c = 0; c < p.C; ++c)
            for (int64_t kh = 0; kh < p.KH; ++kh) {
              const int64_t ih = input_coord(oh, kh, g.stride_h, g.pad_h, g.dilation_h);
              if (ih < 0 || ih >= p.H) continue;
              for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t iw = input_coord(ow, kw, g.stride_w, g.pad_w, g.dilation_w);
                if (iw < 0 || iw >= p.W) continue;
                acc += static_cast<double>(X(n, c, ih, iw)) * Wt(o, c, kh, kw);
              }
            }
          *element(y, n, o, oh, ow) = static_cast<float>(relu && acc < 0 ? 0.0 : acc);
        }
    }
  });
  return y;
}

Tensor reference_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p) {
  const View4 G(gy), Wt(w);
  const Conv2dGeometry& g = p.g;
  Tensor dx = Tensor::empty_channels_last(p.x_shape());
  // Output coordinate that reads input coordinate i through tap k, or -1 if none does.
  auto output_coord = [](int64_t i, int64_t k, int64_t stride, int64_t pad, int64_t dilation, int64_t size) {
    const int64_t t = i + pad - k * dilation;
    if (t < 0 || t % stride != 0 || t / stride >= size) return int64_t{-1};
    return t / stride;
  };
  parallel_for(p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      for (int64_t ih = 0; ih < p.H; ++ih)
        for (int64_t iw = 0; iw < p.W; ++iw) {
          double acc = 0;
          for (int64_t kh = 0; kh < p.KH; ++kh) {
            const int64_t oh = output_coord(ih, kh, g.stride_h, g.pad_h, g.dilation_h, p.OH);
            if (oh < 0) continue;
            for (int64_t kw = 0; kw < p.KW; ++kw) {
              const int64_t ow = output_coord(iw, kw, g.stride_w, g.pad_w, g.dilation_w, p.OW);
              if (ow < 0) continue;
              for (int64_t o = 0; o < p.O; ++o) acc += static_cast<double>(G(n, o, oh, ow)) * Wt(o, c, kh, kw);
            }
          }
          *element(dx, n, c, ih, iw) = static_cast<float>(acc);
        }
    }
  });
  return dx;
}

Tensor reference_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p) {
  const View4 G(gy), X(x);
  const Conv2dGeometry& g = p.g;
  Tensor dw = Tensor::empty(p.w_shape());
  parallel_for(p.O * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      const int64_t o = oc / p.C, c = oc % p.C;
      for (int64_t kh = 0; kh < p.KH; ++kh)
        for (int64_t kw = 0; kw < p.KW; ++kw) {
          double acc = 0;
          for (int64_t n = 0; n < p.N; ++n)
            for (int64_t oh = 0; oh < p.OH; ++oh) {
              const int64_t ih = input_coord(oh, kh, g.stride_h, g.pad_h, g.dilation_h);
              if (ih < 0 || ih >= p.H) continue;
              for (int64_t ow = 0; ow < p.OW; ++ow) {
                const int64_t iw = input_coord(ow, kw, g.stride_w, g.pad_w, g.dilation_w);
                if (iw < 0 || iw >= p.W) continue;
                acc += static_cast<double>(G(n, o, oh, ow)) * X(n, c, ih, iw);
              }
            }
          *element(dw, o, c, kh, kw) = static_cast<float>(acc);
        }
    }
  });
  return dw;
}

}  // namespace peel::conv_detail
