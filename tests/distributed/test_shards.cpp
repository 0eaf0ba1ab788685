// The pieces of data-parallel training that need no MPI: a batch's shards are the batch (images,
// augmentation draws, labels), synchronised batch norm on shards computes the whole batch's
// forward and backward, and a shard's loss share weights the batch's mean loss as one process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <barrier>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "datasets/loader.h"
#include "datasets/synthetic.h"
#include "experiments/distributed/data_parallel.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/random.h"

namespace peel {
namespace {

using ::testing::ElementsAreArray;

// The floats of a dense tensor in memory order.
std::vector<float> floats(const Tensor& t) {
  const Tensor c = t.is_channels_last() ? t : t.contiguous();
  return std::vector<float>(c.data(), c.data() + c.numel());
}

TEST(BatchShards, ConcatenatedShardsAreTheWholeBatchWithItsAugmentation) {
  const data::Dataset train =
      data::make_synthetic({.num_classes = 3, .channels = 3, .height = 8, .width = 8, .train_per_class = 10}, "train");
  const std::vector<int64_t> indices{7, 2, 29, 11, 0, 5, 18, 23, 3, 14, 9};  // 11 images, 3 shards of 3, 4, 4
  data::LoaderOptions whole_options{.random_crop = true, .crop_padding = 2, .horizontal_flip = true, .seed = 9};
  const data::Batch whole = data::make_batch(train, indices, whole_options, 3, 5);
  std::vector<float> pixels;
  std::vector<int64_t> labels, picked;
  for (int64_t shard = 0; shard < 3; ++shard) {
    data::LoaderOptions o = whole_options;
    o.shard = shard;
    o.shards = 3;
    const data::Batch part = data::make_batch(train, indices, o, 3, 5);
    EXPECT_EQ(part.size(), data::shard_begin(11, shard + 1, 3) - data::shard_begin(11, shard, 3));
    EXPECT_EQ(part.batch_labels, whole.labels);
    const std::vector<float> p = floats(part.images);
    pixels.insert(pixels.end(), p.begin(), p.end());
    labels.insert(labels.end(), part.labels.begin(), part.labels.end());
    picked.insert(picked.end(), part.indices.begin(), part.indices.end());
  }
  EXPECT_THAT(picked, ElementsAreArray(indices));
  EXPECT_EQ(labels, whole.labels);
  EXPECT_EQ(pixels, floats(whole.images));  // bit for bit: the same draws per image
}

TEST(BatchShards, AShardThatDoesNotExistIsRefused) {
  const data::Dataset train = data::make_synthetic({.num_classes = 2, .train_per_class = 4}, "train");
  EXPECT_THROW(data::Loader(train, std::make_shared<data::SequentialSampler>(train.size()), {.shard = 2, .shards = 2}),
               Error);
}

// Two threads stand for two ranks: each call sums the two threads' values, the same on both.
class TwoWaySum {
 public:
  StatisticsSum of(int who) {
    return [this, who](double* values, int64_t count) {
      slots_[who].assign(values, values + count);
      sync_.arrive_and_wait();
      for (int64_t i = 0; i < count; ++i) values[i] = slots_[0][i] + slots_[1][i];
      sync_.arrive_and_wait();
    };
  }

 private:
  std::barrier<> sync_{2};
  std::vector<double> slots_[2];
};

// Runs shard(0) here and shard(1) on a second thread: two ranks at once.
template <class Shard>
void run_two_ranks(Shard&& shard) {
  std::thread other(shard, 1);
  shard(0);
  other.join();
}

// The images [begin, end) of rank r when a batch of N is split at `split`.
std::pair<int64_t, int64_t> shard_rows(int r, int64_t split, int64_t N) {
  return r == 0 ? std::pair<int64_t, int64_t>{0, split} : std::pair<int64_t, int64_t>{split, N};
}

// Rank r's rows of the input (in the batch's layout) and of grad_y.
std::pair<Tensor, Tensor> rows_of_rank(const Tensor& x, const Tensor& gy, int r, int64_t split, bool channels_last) {
  const auto [b, e] = shard_rows(r, split, x.size(0));
  const Tensor xs = x.slice(0, b, e);
  return {channels_last ? xs.channels_last() : xs.contiguous(), gy.slice(0, b, e).contiguous()};
}

// What a synchronised norm computes: the output and input gradient of its rows of the batch, and
// the whole batch's running statistics.
struct NormResults {
  const Tensor *y, *dx, *mean, *var;  // one per rank
};
struct WholeBatch {
  const Tensor &y, &dx, &mean, &var;
};
void expect_ranks_compute_the_batch(const NormResults& ranks, const WholeBatch& whole, int64_t split, int64_t N) {
  for (int r = 0; r < 2; ++r) {
    const auto [b, e] = shard_rows(r, split, N);
    EXPECT_THAT(floats(ranks.y[r].contiguous()),
                testing::Pointwise(testing::FloatNear(1e-5f), floats(whole.y.slice(0, b, e).contiguous())));
    EXPECT_THAT(floats(ranks.dx[r].contiguous()),
                testing::Pointwise(testing::FloatNear(1e-5f), floats(whole.dx.slice(0, b, e).contiguous())));
    EXPECT_THAT(floats(ranks.mean[r]), testing::Pointwise(testing::FloatNear(1e-6f), floats(whole.mean)));
    EXPECT_THAT(floats(ranks.var[r]), testing::Pointwise(testing::FloatNear(1e-5f), floats(whole.var)));
  }
}

TEST(SyncBatchNorm, ShardsComputeTheWholeBatchsForwardAndBackward) {
  for (const bool channels_last : {false, true})
    for (const bool relu : {false, true}) {
      Generator gen(31);
      const int64_t N = 7, C = 5, H = 3, W = 4, split = 3;
      Tensor x = normal({N, C, H, W}, 0.5f, 2.f, gen), gy = normal({N, C, H, W}, 0.f, 1.f, gen);
      if (channels_last) x = x.channels_last();
      const Tensor gamma = normal({C}, 1.f, 0.3f, gen), beta = normal({C}, 0.f, 0.3f, gen);
      Tensor whole_mean = Tensor::zeros({C}), whole_var = Tensor::ones({C});
      BatchNormSaved saved;
      const Tensor y = batch_norm_train_forward(x, gamma, beta, whole_mean, whole_var, 0.1f, 1e-5f, saved, relu);
      const BatchNormGrads g = batch_norm_train_backward(gy, x, gamma, saved, relu);

      TwoWaySum sum;
      Tensor y_part[2], dx_part[2], dgamma[2], dbeta[2], mean[2], var[2];
      auto shard = [&](int r) {
        const auto [xs, gys] = rows_of_rank(x, gy, r, split, channels_last);
        mean[r] = Tensor::zeros({C});
        var[r] = Tensor::ones({C});
        BatchNormSaved s;
        const StatisticsSum across = sum.of(r);
        y_part[r] = batch_norm_train_forward(xs, gamma, beta, mean[r], var[r], 0.1f, 1e-5f, s, relu, across);
        const BatchNormGrads d = batch_norm_train_backward(gys, xs, gamma, s, relu, across);
        dx_part[r] = d.x;
        dgamma[r] = d.gamma;
        dbeta[r] = d.beta;
      };
      run_two_ranks(shard);

      expect_ranks_compute_the_batch({y_part, dx_part, mean, var}, {y, g.x, whole_mean, whole_var}, split, N);
      // The affine gradients stay each shard's; their sum (the gradient sum over ranks) is the batch's.
      Tensor dgamma_sum = dgamma[0].clone().add_(dgamma[1]), dbeta_sum = dbeta[0].clone().add_(dbeta[1]);
      EXPECT_THAT(floats(dgamma_sum), testing::Pointwise(testing::FloatNear(1e-4f), floats(g.gamma)));
      EXPECT_THAT(floats(dbeta_sum), testing::Pointwise(testing::FloatNear(1e-4f), floats(g.beta)));
    }
}

TEST(SyncBatchNorm, ShardsComputeTheWholeBatchsFusedBatchChannelNorm) {
  for (const bool channels_last : {false, true}) {
    Generator gen(32);
    const int64_t N = 7, C = 8, H = 3, W = 4, G = 4, split = 4;
    Tensor x = normal({N, C, H, W}, 0.5f, 2.f, gen), gy = normal({N, C, H, W}, 0.f, 1.f, gen);
    if (channels_last) x = x.channels_last();
    BcnParameters p;
    p.bn_gamma = normal({C}, 1.f, 0.3f, gen);
    p.bn_beta = normal({C}, 0.f, 0.3f, gen);
    p.group_weight = normal({1, G, 1}, 1.f, 0.3f, gen);
    p.group_bias = normal({1, G, 1}, 0.f, 0.3f, gen);
    p.groups = G;
    p.relu = true;
    Tensor whole_mean = Tensor::zeros({C}), whole_var = Tensor::ones({C});
    BcnSaved saved;
    const Tensor y = batch_channel_norm_forward(x, p, whole_mean, whole_var, BcnStatistics::kBatch, 0.1f, saved);
    const BcnGrads g = batch_channel_norm_backward(gy, x, y, p, saved);

    TwoWaySum sum;
    Tensor y_part[2], dx_part[2], dgamma[2], dweight[2], mean[2], var[2];
    auto shard = [&](int r) {
      const auto [xs, gys] = rows_of_rank(x, gy, r, split, channels_last);
      mean[r] = Tensor::zeros({C});
      var[r] = Tensor::ones({C});
      BcnSaved s;
      const StatisticsSum across = sum.of(r);
      y_part[r] = batch_channel_norm_forward(xs, p, mean[r], var[r], BcnStatistics::kBatch, 0.1f, s, across);
      const BcnGrads d = batch_channel_norm_backward(gys, xs, y_part[r], p, s, across);
      dx_part[r] = d.x;
      dgamma[r] = d.bn_gamma;
      dweight[r] = d.group_weight;
    };
    run_two_ranks(shard);

    expect_ranks_compute_the_batch({y_part, dx_part, mean, var}, {y, g.x, whole_mean, whole_var}, split, N);
    // The parameter gradients stay each shard's; their sums are the batch's.
    EXPECT_THAT(floats(dgamma[0].clone().add_(dgamma[1])),
                testing::Pointwise(testing::FloatNear(1e-4f), floats(g.bn_gamma)));
    EXPECT_THAT(floats(dweight[0].clone().add_(dweight[1])),
                testing::Pointwise(testing::FloatNear(1e-4f), floats(g.group_weight)));
  }
}

TEST(LossShare, SharesWeightTheShardsMeanLossesIntoTheBatchs) {
  const std::vector<int64_t> batch{0, 1, 1, 2, 0, 2, 2};
  const std::vector<int64_t> a{0, 1, 1}, b{2, 0, 2, 2};
  EXPECT_DOUBLE_EQ(dist::shard_loss_share(a, batch, {}), 3.0 / 7.0);
  const std::vector<float> w{1.f, 2.f, 4.f};
  EXPECT_DOUBLE_EQ(dist::shard_loss_share(a, batch, w), 5.0 / 18.0);
  EXPECT_DOUBLE_EQ(dist::shard_loss_share(a, batch, w) + dist::shard_loss_share(b, batch, w), 1.0);
}

}  // namespace
}  // namespace peel
