// The loader: batches of images and labels, prepared on a background thread while the training
// step runs.
//
//   Loader loader(train, std::make_shared<ShuffleSampler>(train.size(), seed), {.batch_size = 128});
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     while (std::optional<Batch> batch = loader.next()) { ... batch->images, batch->labels ... }
//   }
//
// Content is a pure function of (data set, sampler, options, epoch, batch number): a batch's
// augmentation draws come from Generator(options.seed).fork(epoch << 32 | batch), never from
// timing, so runs repeat bit for bit and a run resumes at an epoch (or batch) boundary from the
// epoch number alone. The worker builds one batch at a time on one thread and keeps at most
// `prefetch` finished batches queued; an exception on the worker reaches the caller from next().
//
// Data-parallel training shards each batch, not the data set: with options.shards = N, process
// `shard` gets images [B*shard/N, B*(shard+1)/N) of every batch of B, the same images, in the same
// order and with the same augmentation draws as one process would use for that batch.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/sampler.h"
#include "tensor/tensor.h"

namespace peel::data {

struct Batch {
  Tensor images;                 // (B, C, H, W) float32; memory (B, H, W, C) when options.channels_last
  std::vector<int64_t> labels;   // B labels
  std::vector<int64_t> indices;  // B data set indices
  int64_t epoch = 0;
  int64_t index = 0;  // the batch's number within its epoch
  // The labels of the whole batch this shard is part of (= labels unless sharded), for the share
  // of the batch's loss that this shard's images carry.
  std::vector<int64_t> batch_labels;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  IndexTensor label_tensor() const { return IndexTensor{{size()}, labels}; }
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool drop_last = false;         // drop the last batch of an epoch when it is short
  bool random_crop = false;       // torchvision RandomCrop(H, padding=crop_padding): pad, take a random HxW window
  int64_t crop_padding = 4;       // the pad is the data set's padding_value (a 0 pixel, normalised)
  bool horizontal_flip = false;   // torchvision RandomHorizontalFlip(0.5), applied after the crop
  uint64_t seed = 0;              // augmentation seed
  int64_t prefetch = 2;           // finished batches queued ahead; 0 builds batches in next() on the caller's thread
  bool channels_last = true;      // batch memory (B, H, W, C), the layout the network's activations use
  int64_t shard = 0, shards = 1;  // this process's part of each batch (data-parallel training)
};

// Where shard `shard` of `shards` begins in a batch of `batch_size` images (shard = shards: the end).
inline int64_t shard_begin(int64_t batch_size, int64_t shard, int64_t shards) { return batch_size * shard / shards; }

// Builds the batch of `indices` (batch `batch_index` of `epoch`): gathers, augments, lays out;
// with options.shards > 1, only this shard's images of it.
Batch make_batch(const Dataset& data, std::span<const int64_t> indices, const LoaderOptions& options, int64_t epoch,
                 int64_t batch_index);

class Loader {
 public:
  Loader(Dataset data, std::shared_ptr<const Sampler> sampler, LoaderOptions options = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts producing `epoch` from batch `first_batch`, abandoning any epoch in progress.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch of the current epoch, or nullopt once the epoch is done.
  std::optional<Batch> next();

  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  const Dataset& dataset() const { return data_; }
  const Sampler& sampler() const { return *sampler_; }
  const LoaderOptions& options() const { return options_; }
  // Total seconds next() has waited for the worker (a starving training step shows up here).
  double wait_seconds() const { return wait_seconds_; }

 private:
  struct Item {
    std::optional<Batch> batch;  // empty with no error: end of epoch
    std::exception_ptr error;
  };
  void stop_worker();
  void produce(const std::vector<int64_t>& order, int64_t epoch, int64_t first_batch);
  void push(Item item);
  std::span<const int64_t> batch_indices(const std::vector<int64_t>& order, int64_t b) const;

  Dataset data_;
  std::shared_ptr<const Sampler> sampler_;
  LoaderOptions options_;
  int64_t epoch_ = -1;
  bool epoch_done_ = true;
  double wait_seconds_ = 0;

  // Synchronous mode (prefetch == 0).
  std::vector<int64_t> order_;
  int64_t next_batch_ = 0;

  // Background mode.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Item> queue_;
  bool cancel_ = false;
};

}  // namespace peel::data
