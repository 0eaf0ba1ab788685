// Weight standardisation and weight normalisation of an (O, ...) weight, row by row. A weight is
// small next to the activations, so each row is one task (rows are independent: results do not
// depend on the thread count); the row loops are norm_detail's vectorised plane loops.
#include <cmath>

#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/kernels/norm_extra_detail.h"

namespace peel {

using namespace norm_extra_detail;

namespace {

constexpr int64_t kRowGrain = 1 << 16;  // values per parallel chunk of rows: the weights of small nets take one thread

struct Rows {
  int64_t O = 0, I = 0;
};

Rows weight_rows(const Tensor& w, const char* op) {
  PEEL_CHECK(w.defined() && w.dim() >= 2, "{}: needs a weight of 2 or more dimensions (O, ...), got {}", op,
             w.defined() ? to_string(w.shape()) : "undefined");
  return {w.size(0), w.numel() / std::max<int64_t>(w.size(0), 1)};
}

template <class Body>
void for_rows(const Rows& r, Body&& body) {
  parallel_for(r.O, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(r.I, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) body(i);
  });
}

void check_row_vector(const Tensor& t, const Rows& r, const Tensor& w, const char* op, const char* name) {
  PEEL_CHECK(t.defined() && t.numel() == r.O, "{}: {} has shape {} but the weight {} has {} rows", op, name,
             t.defined() ? to_string(t.shape()) : "undefined", to_string(w.shape()), r.O);
}

}  // namespace

Tensor weight_standardize_forward(const Tensor& w, float eps, WeightStandardizeSaved& saved) {
  const char* op = "weight_standardize_forward";
  const Rows r = weight_rows(w, op);
  PEEL_CHECK(r.I > 1, "{}: each row needs more than one value for an unbiased variance, weight {}", op,
             to_string(w.shape()));
  PEEL_CHECK(eps >= 0.f, "{}: eps must be >= 0, got {}", op, eps);
  const Tensor wc = w.contiguous();
  Tensor out = Tensor::empty(w.shape());
  saved.mean = Tensor::empty({r.O});
  saved.inv_std = Tensor::empty({r.O});
  const float* wd = wc.data();
  float* od = out.data();
  float* mean = saved.mean.data();
  float* inv_std = saved.inv_std.data();
  for_rows(r, [&](int64_t i) {
    const float* row = wd + i * r.I;
    double s1, s2;
    shared::plane_shifted_sums(row, r.I, row[0], s1, s2);
    const double mu = row[0] + s1 / r.I;
    const double var = std::max(0.0, s2 - s1 * s1 / r.I) / (r.I - 1);
    const double is = 1.0 / std::sqrt(var + eps);
    mean[i] = static_cast<float>(mu);
    inv_std[i] = static_cast<float>(is);
    // The part of the mean that float could not hold moves into the shift, as in batch norm.
    shared::plane_affine(row, od + i * r.I, r.I, mean[i], inv_std[i], static_cast<float>(-(mu - mean[i]) * is), false);
  });
  return out;
}

Tensor weight_standardize_backward(const Tensor& grad_w_hat, const Tensor& w, const WeightStandardizeSaved& saved) {
  const char* op = "weight_standardize_backward";
  const Rows r = weight_rows(w, op);
  PEEL_CHECK(grad_w_hat.defined() && grad_w_hat.shape() == w.shape(), "{}: grad has shape {} but the weight {}", op,
             grad_w_hat.defined() ? to_string(grad_w_hat.shape()) : "undefined", to_string(w.shape()));
  check_row_vector(saved.mean, r, w, op, "saved.mean");
  check_row_vector(saved.inv_std, r, w, op, "saved.inv_std");
  const Tensor wc = w.contiguous(), gc = grad_w_hat.contiguous();
  Tensor hold_m, hold_s;
  const float* mean = channel_values(saved.mean, hold_m);
  const float* inv_std = channel_values(saved.inv_std, hold_s);
  Tensor dw = Tensor::empty(w.shape());
  const float* wd = wc.data();
  const float* gd = gc.data();
  float* dd = dw.data();
  for_rows(r, [&](int64_t i) {
    const int64_t at = i * r.I;
    double sg, sgx;  // sum g and sum g (w - mean)
    shared::plane_grad_sums(gd + at, wd + at, nullptr, false, r.I, mean[i], sg, sgx);
    const double is = inv_std[i];
    shared::plane_input_grad(gd + at, wd + at, nullptr, false, dd + at, r.I, static_cast<float>(is),
                             static_cast<float>(-is * is * is * sgx / (r.I - 1)), mean[i],
                             static_cast<float>(-is * sg / r.I));
  });
  return dw;
}

Tensor weight_norm_forward(const Tensor& v, const Tensor& g, Tensor& inv_norm) {
  const char* op = "weight_norm_forward";
  const Rows r = weight_rows(v, op);
  check_row_vector(g, r, v, op, "g");
  const Tensor vc = v.contiguous();
  Tensor hold_g;
  const float* gd = channel_values(g, hold_g);
  Tensor w = Tensor::empty(v.shape());
  inv_norm = Tensor::empty({r.O});
  const float* vd = vc.data();
  float* wd = w.data();
  float* inv = inv_norm.data();
  for_rows(r, [&](int64_t i) {
    double s1, s2;
    shared::plane_shifted_sums(vd + i * r.I, r.I, 0.0, s1, s2);
    const double in = 1.0 / std::sqrt(s2);  // a zero row gives inf and then NaN, as in PyTorch
    inv[i] = static_cast<float>(in);
    shared::plane_affine(vd + i * r.I, wd + i * r.I, r.I, 0.f, static_cast<float>(gd[i] * in), 0.f, false);
  });
  return w;
}

WeightNormGrads weight_norm_backward(const Tensor& grad_w, const Tensor& v, const Tensor& g, const Tensor& inv_norm) {
  const char* op = "weight_norm_backward";
  const Rows r = weight_rows(v, op);
  PEEL_CHECK(grad_w.defined() && grad_w.shape() == v.shape(), "{}: grad has shape {} but v {}", op,
             grad_w.defined() ? to_string(grad_w.shape()) : "undefined", to_string(v.shape()));
  check_row_vector(g, r, v, op, "g");
  check_row_vector(inv_norm, r, v, op, "inv_norm");
  const Tensor vc = v.contiguous(), gc = grad_w.contiguous();
  Tensor hold_g, hold_n;
  const float* gain = channel_values(g, hold_g);
  const float* inv = channel_values(inv_norm, hold_n);
  WeightNormGrads grads;
  grads.v = Tensor::empty(v.shape());
  grads.g = Tensor::empty(g.shape());
  const float* vd = vc.data();
  const float* gd = gc.data();
  float* dv = grads.v.data();
  float* dg = grads.g.data();
  for_rows(r, [&](int64_t i) {
    const int64_t at = i * r.I;
    double sg, sgv;  // sum grad and grad . v
    shared::plane_grad_sums(gd + at, vd + at, nullptr, false, r.I, 0.0, sg, sgv);
    const double in = inv[i], a = gain[i] * in;
    dg[i] = static_cast<float>(sgv * in);
    shared::plane_input_grad(gd + at, vd + at, nullptr, false, dv + at, r.I, static_cast<float>(a),
                             static_cast<float>(-a * in * in * sgv), 0.f, 0.f);
  });
  return grads;
}

Tensor row_norms(const Tensor& v) {
  const Rows r = weight_rows(v, "row_norms");
  const Tensor vc = v.contiguous();
  Tensor norms = Tensor::empty({r.O});
  for_rows(r, [&](int64_t i) {
    double s1, s2;
    shared::plane_shifted_sums(vc.data() + i * r.I, r.I, 0.0, s1, s2);
    norms.data()[i] = static_cast<float>(std::sqrt(s2));
  });
  return norms;
}

}  // namespace peel
