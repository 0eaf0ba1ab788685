// Estimated batch norm's statistics update (Qiao et al., official README's EstBN): the batch mean
// and the mean squared deviation about the old running mean, per channel, blended into the running
// statistics at rate r. Sums are taken about the old running mean (the shift), in double; with
// `across`, over every shard of the batch.
#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/kernels/norm_extra_detail.h"

namespace peel {

using namespace norm_extra_detail;

void estimated_batch_norm_update(const Tensor& x, Tensor& running_mean, Tensor& running_var, float moving_speed,
                                 const StatisticsSum& across) {
  const char* op = "estimated_batch_norm_update";
  const ChannelLayout L = shared::channel_layout(x, op);
  const int64_t C = L.C, M = L.N * L.S;
  PEEL_CHECK(running_mean.defined() && running_var.defined(), "{}: needs running_mean and running_var", op);
  shared::check_channel_vector(running_mean, C, x, op, "running_mean");
  shared::check_channel_vector(running_var, C, x, op, "running_var");
  PEEL_CHECK(M > 0, "{}: input of shape {} has no values per channel", op, to_string(x.shape()));
  PEEL_CHECK(moving_speed >= 0.f && moving_speed <= 1.f, "{}: moving speed must be in [0, 1], got {}", op,
             moving_speed);

  const Tensor xc = shared::to_layout(x, L);
  const float* xd = xc.data();
  Tensor hold;
  double* shift = shared::scratch_doubles(hold, 3 * C + 1);
  double* s1 = shift + C;  // sum of (x - old running mean)
  double* s2 = s1 + C;     // sum of its square
  double* count = s2 + C;  // the values per channel these sums cover
  for (int64_t c = 0; c < C; ++c) shift[c] = shared::value_at(running_mean, c);
  channel_sums<2>(
      L, {s1, s2},
      [&](int64_t r0, int64_t rows, int64_t c0, int64_t c1, SumArrays<2> acc) {
        shared::rows_shifted_sums(xd + r0 * C, rows, C, c0, c1, shift, acc[0], acc[1]);
      },
      [&](int64_t p, std::array<double, 2>& sums) {
        shared::plane_shifted_sums(xd + p * L.S, L.S, shift[p % C], sums[0], sums[1]);
      });
  *count = static_cast<double>(M);
  if (across) across(s1, 2 * C + 1);  // s1, s2 and count lie one after another
  const double r = moving_speed, whole_M = *count;
  for (int64_t c = 0; c < C; ++c) {
    float& rm = running_mean.data()[c * running_mean.stride(0)];
    float& rv = running_var.data()[c * running_var.stride(0)];
    const double batch_mean = shift[c] + s1[c] / whole_M;
    const double deviation = s2[c] / whole_M;  // mean of (x - old running mean)^2
    rm = static_cast<float>((1 - r) * rm + r * batch_mean);
    rv = static_cast<float>((1 - r) * rv + r * deviation);
  }
}

}  // namespace peel
