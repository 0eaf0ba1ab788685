// Shared pieces of the normalisation kernels (kernels/batch_norm.cpp, kernels/group_norm.cpp): the
// two memory forms they run on, and the inner loops over them. Internal to tensor/ (namespace
// peel::kernels_detail); not part of the API, which is kernels/norm.h.
//
// Every normalisation sees its input as (N, C, S) with S = H*W (1 for an (N, C) input), stored in
// one of two forms:
//   rows    element (n, c, s) at (n*S + s)*C + c   channels-last (N,H,W,C) memory, or (N, C)
//   planes  element (n, c, s) at (n*C + c)*S + s   contiguous NCHW memory
// Other layouts are copied to the planes form first.
//
// A new normalisation kernel (a new file in tensor/kernels/, declared in kernels/norm.h) follows
// batch_norm.cpp: channel_layout() and to_layout() for its operands, check_channel_vector() for
// per-channel parameters, *_shifted_sums() for its statistics (in double, around a shift near the
// mean), *_affine() for the normalised output, backward_operands(), *_grad_sums() and
// *_input_grad() for the backward. Blocking the reductions with row_blocking() and adding the
// partial sums in block order keeps results independent of the thread count.
#pragma once

#include <cstdint>

#include "tensor/kernels/norm.h"
#include "tensor/tensor.h"

namespace peel::kernels_detail {

struct ChannelLayout {
  bool rows = false;
  int64_t N = 0, C = 0, S = 1;
  int64_t numel() const { return N * C * S; }
};

// The form `x` (2-d or more, axis 1 = channels) is processed in; throws naming `op` for < 2 dims.
ChannelLayout channel_layout(const Tensor& x, const char* op);
// `t` (of x's shape) in that form's memory: itself when it already is, otherwise a copy.
Tensor to_layout(const Tensor& t, const ChannelLayout& L);
// An uninitialised tensor of `shape` in that form's memory.
Tensor empty_in_layout(const Shape& shape, const ChannelLayout& L);

// Throws unless t is a (C) vector: "op: name has shape [..] but x has shape [..] (C channels)".
void check_channel_vector(const Tensor& t, int64_t C, const Tensor& x, const char* op, const char* name);
inline float value_at(const Tensor& t, int64_t c) { return t.data()[c * t.stride(0)]; }

// The operands of a normalisation backward, checked against x and put in x's memory form
// (y only when the ReLU mask needs it).
struct BackwardOperands {
  ChannelLayout L;
  Tensor x, g, y;
};
BackwardOperands backward_operands(const Tensor& grad_y, const Tensor& x, const Tensor& y, bool need_y, const char* op);

// A scratch buffer of n doubles from the caching allocator; `holder` keeps it alive.
double* scratch_doubles(Tensor& holder, int64_t n);
float* scratch_floats(Tensor& holder, int64_t n);

// Tasks of rows x channel-chunks for rows-form reductions. The blocking depends only on the
// shape, so partial sums (and results) are the same for any thread count.
struct RowBlocking {
  int64_t rows_per_block, channels_per_chunk, row_blocks, chunks;
  int64_t tasks() const { return row_blocks * chunks; }
};
RowBlocking row_blocking(int64_t rows, int64_t C);

// ---- Inner loops (x rows have leading dimension C; channel range [c0, c1)) -------------------
// s1[c] += sum_r (x[r,c] - shift[c]);  s2[c] += sum_r (x[r,c] - shift[c])^2
void rows_shifted_sums(const float* x, int64_t rows, int64_t C, int64_t c0, int64_t c1, const double* shift, double* s1,
                       double* s2);
// The same over one plane of S contiguous values with a scalar shift (s1, s2 are set, not added).
void plane_shifted_sums(const float* x, int64_t S, double shift, double& s1, double& s2);

// The masked gradient g' = (mask && y <= 0) ? 0 : g (ReLU's backward, PyTorch's threshold_backward,
// which lets a NaN y pass), then sg[c] += sum g', sgx[c] += sum g' * (x - center[c]).
// y is read only when mask is set.
void rows_grad_sums(const float* g, const float* x, const float* y, bool mask, int64_t rows, int64_t C, int64_t c0,
                    int64_t c1, const double* center, double* sg, double* sgx);
void plane_grad_sums(const float* g, const float* x, const float* y, bool mask, int64_t S, double center, double& sg,
                     double& sgx);

// The same sums with the fused ReLU's mask recomputed from x instead of read from y: g' = g where
// the forward's pre-activation (x - relu_of->center) * relu_of->a + relu_of->b is > 0 (so a NaN
// passes, as with y); relu_of null means no mask. This file is compiled without contracting
// a * b + c into one rounding, so the pre-activation here is bit for bit the one rows_affine /
// plane_affine computed, and the mask is exactly y's; the backward then reads two tensors (g, x)
// instead of three. Rows form: relu_of's arrays are per channel; planes form: they are read at
// `coefficient` (the plane's channel, or its sample and channel).
struct AffineCoefficients {
  const float *center, *a, *b;
};
void rows_grad_sums(const float* g, const float* x, const AffineCoefficients* relu_of, int64_t rows, int64_t C,
                    int64_t c0, int64_t c1, const double* center, double* sg, double* sgx);
void plane_grad_sums(const float* g, const float* x, const AffineCoefficients* relu_of, int64_t coefficient, int64_t S,
                     double center, double& sg, double& sgx);

// out = relu?((x - center) * a + b), per channel (rows form: arrays of C; planes form: scalars).
// Subtracting a centre near the mean first keeps y accurate when |mean| >> std, where a folded
// x * a + (b - mean * a) would round the large shift.
void rows_affine(const float* x, float* out, int64_t rows, int64_t C, const AffineCoefficients& k, bool relu);
void plane_affine(const float* x, float* out, int64_t S, float center, float a, float b, bool relu);

// The fused batch norm + ReLU + max pool's forward (kernels/norm.h) for the pooled output rows
// [t0, t1), t = n * OH + oh, of channels-last x (N, H, W, C) and k x k windows that do not overlap:
// y[t, ow, c] = the max over the window of relu((x - center) * a + b), computed as rows_affine
// computes it, and index = the flat h * W + w of the chosen input, chosen as max_pool2d_forward
// chooses (the first maximum; a NaN takes over). y and index are (N, OH, OW, C).
struct PoolRows {
  int64_t H, W, C, kernel, OH, OW;
};
void rows_affine_relu_max_pool(const float* x, const PoolRows& p, int64_t t0, int64_t t1, const AffineCoefficients& k,
                               float* y, int32_t* index);

// out = relu((x - center) * a + b + r), rounded as rows_affine (no ReLU), the add and relu round
// it one after the other: relu as peel::relu (v > 0 ? v : 0, so a NaN becomes 0). Rows form:
// arrays of C; planes form: scalars.
void rows_affine_add_relu(const float* x, const float* r, float* out, int64_t rows, int64_t C,
                          const AffineCoefficients& k);
void plane_affine_add_relu(const float* x, const float* r, float* out, int64_t S, float center, float a, float b);

// dx = A * g' + B * (x - center) + K, per channel coefficients, g' masked as in *_grad_sums.
struct BackwardCoefficients {
  const float *A, *B, *center, *K;
};
void rows_input_grad(const float* g, const float* x, const float* y, bool mask, float* dx, int64_t rows, int64_t C,
                     const BackwardCoefficients& k);
void plane_input_grad(const float* g, const float* x, const float* y, bool mask, float* dx, int64_t S, float A, float B,
                      float center, float K);
// The same with g' masked where the forward's pre-activation is <= 0, or not at all when relu_of
// is null (see rows_grad_sums above).
void rows_input_grad(const float* g, const float* x, const AffineCoefficients* relu_of, float* dx, int64_t rows,
                     int64_t C, const BackwardCoefficients& k);
void plane_input_grad(const float* g, const float* x, const AffineCoefficients* relu_of, int64_t coefficient, float* dx,
                      int64_t S, float A, float B, float center, float K);

// Batch norm's training forward up to its output (kernels/batch_norm.cpp): checks the operands,
// computes the batch statistics (the whole batch's with `across`), fills `saved` and updates the
// running statistics. Returns x in its memory form and the affine to apply,
// y = relu?((x - center) * a + b), whose arrays live in `saved`.
struct TrainStatistics {
  ChannelLayout L;
  Tensor x;
  AffineCoefficients affine;
};
TrainStatistics batch_norm_train_statistics(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                            Tensor& running_mean, Tensor& running_var, float momentum, float eps,
                                            BatchNormSaved& saved, const StatisticsSum& across, const char* op);

// Synchronised statistics: turns this shard's per-channel mean and m2 (sum of squared deviations,
// over local_M values) into the whole batch's, in place, and returns the batch's count.
int64_t combine_shard_moments(const StatisticsSum& across, int64_t local_M, int64_t C, double* mean, double* m2);

}  // namespace peel::kernels_detail
