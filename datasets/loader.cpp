#include "datasets/loader.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tensor/error.h"
#include "tensor/random.h"

namespace peel::data {
namespace {

// Where element (c, y, x) of image i goes in the batch buffer.
struct Layout {
  int64_t image, channel, row, column;
};

Layout batch_layout(int64_t C, int64_t H, int64_t W, bool channels_last) {
  if (channels_last) return {H * W * C, 1, W * C, C};
  return {C * H * W, H * W, W, 1};
}

}  // namespace

Batch make_batch(const Dataset& data, std::span<const int64_t> indices, const LoaderOptions& o, int64_t epoch,
                 int64_t batch_index) {
  const int64_t whole = static_cast<int64_t>(indices.size());
  const int64_t first = shard_begin(whole, o.shard, o.shards), B = shard_begin(whole, o.shard + 1, o.shards) - first;
  const int64_t C = data.channels(), H = data.height(), W = data.width(), plane = H * W;
  const bool channels_last = o.channels_last && C > 1;  // for C = 1 both layouts are the same memory
  Batch batch;
  batch.epoch = epoch;
  batch.index = batch_index;
  batch.indices.assign(indices.begin() + first, indices.begin() + first + B);
  batch.labels.resize(static_cast<size_t>(B));
  batch.batch_labels.resize(static_cast<size_t>(whole));
  for (int64_t i = 0; i < whole; ++i) {
    PEEL_CHECK(indices[i] >= 0 && indices[i] < data.size(), "make_batch: index {} outside the data set [0, {})",
               indices[i], data.size());
    batch.batch_labels[i] = data.labels[indices[i]];
  }
  batch.images = channels_last ? Tensor::empty_channels_last({B, C, H, W}) : Tensor::empty({B, C, H, W});
  const Layout out = batch_layout(C, H, W, channels_last);
  float* dst = batch.images.data();
  const float* src = data.images.data();
  PEEL_CHECK(data.images.is_contiguous(), "make_batch: the data set's images must be contiguous");

  const bool augment = o.random_crop || o.horizontal_flip;
  const int64_t pad = o.random_crop ? o.crop_padding : 0;
  PEEL_CHECK(pad >= 0, "make_batch: crop padding must be >= 0, got {}", pad);
  Generator gen = Generator(o.seed).fork(static_cast<uint64_t>(epoch) << 32 | static_cast<uint64_t>(batch_index));
  // The images before this shard are drawn for too, so that each image gets the draws it gets in
  // the whole batch.
  for (int64_t k = augment ? 0 : first; k < first + B; ++k) {
    const int64_t i = k - first, j = indices[k];
    if (i >= 0) batch.labels[i] = data.labels[j];
    const float* image = src + j * C * plane;
    float* target = i >= 0 ? dst + i * out.image : nullptr;
    if (!augment) {
      if (!channels_last) {
        std::memcpy(target, image, static_cast<size_t>(C * plane) * sizeof(float));
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < plane; ++p) target[p * C + c] = image[c * plane + p];
      }
      continue;
    }
    // Draw order per image: crop row offset, crop column offset, then flip.
    const int64_t dy = o.random_crop ? gen.randint(2 * pad + 1) : pad;
    const int64_t dx = o.random_crop ? gen.randint(2 * pad + 1) : pad;
    const bool flip = o.horizontal_flip && gen.uniform() < 0.5f;
    if (i < 0) continue;
    for (int64_t c = 0; c < C; ++c) {
      const float fill = data.padding_value.empty() ? 0.f : data.padding_value[c];
      for (int64_t y = 0; y < H; ++y) {
        float* row = target + c * out.channel + y * out.row;
        const int64_t sy = y + dy - pad;
        if (sy < 0 || sy >= H) {
          for (int64_t x = 0; x < W; ++x) row[x * out.column] = fill;
          continue;
        }
        const float* source_row = image + c * plane + sy * W;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = (flip ? W - 1 - x : x) + dx - pad;
          row[x * out.column] = (sx >= 0 && sx < W) ? source_row[sx] : fill;
        }
      }
    }
  }
  return batch;
}

Loader::Loader(Dataset data, std::shared_ptr<const Sampler> sampler, LoaderOptions options)
    : data_(std::move(data)), sampler_(std::move(sampler)), options_(options) {
  PEEL_CHECK(sampler_ != nullptr, "Loader: no sampler");
  PEEL_CHECK(options_.batch_size >= 1, "Loader: batch size must be >= 1, got {}", options_.batch_size);
  PEEL_CHECK(options_.prefetch >= 0, "Loader: prefetch must be >= 0, got {}", options_.prefetch);
  PEEL_CHECK(options_.shards >= 1 && options_.shard >= 0 && options_.shard < options_.shards,
             "Loader: shard {} of {} does not exist", options_.shard, options_.shards);
  PEEL_CHECK(data_.images.defined() && data_.images.dim() == 4 && data_.images.size(0) == data_.size(),
             "Loader: the data set needs (N, C, H, W) images and N labels");
  if (!data_.images.is_contiguous()) data_.images = data_.images.contiguous();
}

Loader::~Loader() { stop_worker(); }

int64_t Loader::batches_per_epoch() const {
  const int64_t n = sampler_->epoch_size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::span<const int64_t> Loader::batch_indices(const std::vector<int64_t>& order, int64_t b) const {
  const int64_t begin = b * options_.batch_size;
  const int64_t end = std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(order.size()));
  return std::span<const int64_t>(order).subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
}

void Loader::stop_worker() {
  if (worker_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      cancel_ = true;
    }
    changed_.notify_all();
    worker_.join();
  }
  std::lock_guard lock(mutex_);
  queue_.clear();
  cancel_ = false;
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  PEEL_CHECK(epoch >= 0 && first_batch >= 0, "Loader::start_epoch: epoch {} and batch {} must be >= 0", epoch,
             first_batch);
  stop_worker();
  epoch_ = epoch;
  epoch_done_ = false;
  if (options_.prefetch == 0) {
    order_ = sampler_->epoch_indices(epoch);
    next_batch_ = first_batch;
    return;
  }
  worker_ = std::thread([this, epoch, first_batch] {
    // The error is queued after the catch block has ended, so that this thread holds no reference
    // to the exception once the consumer can see it: the consumer alone releases it.
    std::exception_ptr error;
    try {
      produce(sampler_->epoch_indices(epoch), epoch, first_batch);
    } catch (...) {
      error = std::current_exception();
    }
    if (error) push(Item{std::nullopt, std::move(error)});
  });
}

void Loader::push(Item item) {
  std::unique_lock lock(mutex_);
  // An end-of-epoch or error item may exceed the bound by one: it carries no data.
  const bool data = item.batch.has_value();
  changed_.wait(lock, [&] { return cancel_ || !data || static_cast<int64_t>(queue_.size()) < options_.prefetch; });
  if (cancel_) return;
  queue_.push_back(std::move(item));
  lock.unlock();
  changed_.notify_all();
}

void Loader::produce(const std::vector<int64_t>& order, int64_t epoch, int64_t first_batch) {
  const int64_t batches = batches_per_epoch();
  for (int64_t b = first_batch; b < batches; ++b) {
    {
      std::lock_guard lock(mutex_);
      if (cancel_) return;
    }
    push(Item{make_batch(data_, batch_indices(order, b), options_, epoch, b), nullptr});
  }
  push(Item{std::nullopt, nullptr});
}

std::optional<Batch> Loader::next() {
  PEEL_CHECK(epoch_ >= 0, "Loader::next: call start_epoch first");
  if (epoch_done_) return std::nullopt;
  if (options_.prefetch == 0) {
    if (next_batch_ >= batches_per_epoch()) {
      epoch_done_ = true;
      return std::nullopt;
    }
    const int64_t b = next_batch_++;
    return make_batch(data_, batch_indices(order_, b), options_, epoch_, b);
  }
  Item item;
  {
    std::unique_lock lock(mutex_);
    if (queue_.empty()) {
      const auto start = std::chrono::steady_clock::now();
      changed_.wait(lock, [&] { return !queue_.empty(); });
      wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    item = std::move(queue_.front());
    queue_.pop_front();
  }
  changed_.notify_all();
  if (item.error) {
    epoch_done_ = true;
    std::rethrow_exception(item.error);
  }
  if (!item.batch) epoch_done_ = true;
  return std::move(item.batch);
}

}  // namespace peel::data
