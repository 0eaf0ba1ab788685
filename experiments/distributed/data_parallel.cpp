#include "experiments/distributed/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "datasets/loader.h"
#include "tensor/error.h"

namespace peel::dist {

namespace {

// A tensor whose numel elements lie one after another from data() (row-major or channels-last).
bool dense(const Tensor& t) { return t.is_contiguous() || t.is_channels_last(); }

// Broadcasts t from rank 0 in place.
void broadcast_tensor(const Communicator& comm, Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  if (dense(t)) {
    comm.broadcast(std::span<float>(t.data(), static_cast<size_t>(t.numel())));
    return;
  }
  Tensor copy = t.contiguous();
  comm.broadcast(std::span<float>(copy.data(), static_cast<size_t>(copy.numel())));
  t.copy_(copy);
}

// Where `rank`'s shard of a batch begins (datasets/loader.h's split).
int64_t data_shard_begin(int64_t batch_size, const Communicator& comm, int rank = -1) {
  return data::shard_begin(batch_size, rank < 0 ? comm.rank() : rank, comm.size());
}

}  // namespace

double shard_loss_share(const std::vector<int64_t>& shard_labels, const std::vector<int64_t>& batch_labels,
                        const std::vector<float>& class_weights) {
  PEEL_CHECK(!batch_labels.empty(), "shard_loss_share: the batch is empty");
  if (class_weights.empty()) return static_cast<double>(shard_labels.size()) / static_cast<double>(batch_labels.size());
  auto weight_of = [&](const std::vector<int64_t>& labels) {
    double sum = 0;
    for (int64_t y : labels) sum += class_weights.at(static_cast<size_t>(y));
    return sum;
  };
  return weight_of(shard_labels) / weight_of(batch_labels);
}

GradientBuckets::GradientBuckets(std::vector<ag::Variable> parameters, GradientSum mode, int64_t bucket_floats)
    : parameters_(std::move(parameters)), mode_(mode), bucket_of_(parameters_.size()), ready_(parameters_.size(), 0) {
  PEEL_CHECK(bucket_floats > 0, "GradientBuckets: a bucket must hold at least one float, got {}", bucket_floats);
  int64_t filled = 0;
  for (size_t k = parameters_.size(); k-- > 0;) {
    const int64_t n = parameters_[k].value().numel();
    if (buckets_.empty() || filled + n > bucket_floats) {
      buckets_.emplace_back();
      filled = 0;
    }
    buckets_.back().push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    filled += n;
    PEEL_CHECK(index_of_.emplace(parameters_[k].state(), k).second,
               "GradientBuckets: parameter {} ('{}') is listed twice", k, parameters_[k].name());
  }
  buffers_.resize(buckets_.size());
  pending_.resize(buckets_.size());
  for (const std::vector<size_t>& bucket : buckets_) missing_.push_back(bucket.size());
}

ag::LeafReady GradientBuckets::ready_hook(const Communicator& comm) {
  if (mode_ != GradientSum::overlap || !comm.distributed()) return {};
  return [this, &comm](const ag::VariableState& leaf) {
    const auto found = index_of_.find(&leaf);
    if (found != index_of_.end()) parameter_ready(comm, found->second);  // other leaves are not ours to sum
  };
}

void GradientBuckets::parameter_ready(const Communicator& comm, size_t k) {
  PEEL_CHECK(!ready_[k], "GradientBuckets: parameter '{}' was reported complete twice in one backward",
             parameters_[k].name());
  ready_[k] = 1;
  schedule_.push_back(static_cast<int64_t>(k));
  --missing_[bucket_of_[k]];
  // In bucket order only, so that every rank starts the same sums in the same order.
  for (; next_start_ < buckets_.size() && missing_[next_start_] == 0; ++next_start_) {
    start(comm, next_start_);
    ++cost_.started_in_backward;
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (first_unfinished_ < next_start_ && comm.test(pending_[first_unfinished_])) ++first_unfinished_;
  cost_.mpi_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GradientBuckets::start(const Communicator& comm, size_t b) {
  std::vector<float>& buffer = buffers_[b];
  buffer.clear();
  for (size_t k : buckets_[b]) {
    const Tensor& g = parameters_[k].grad();
    if (!g.defined()) continue;
    const Tensor dense_g = dense(g) ? g : g.contiguous();
    buffer.insert(buffer.end(), dense_g.data(), dense_g.data() + dense_g.numel());
  }
  schedule_.push_back(-1 - static_cast<int64_t>(b));
  cost_.bytes += static_cast<int64_t>(buffer.size() * sizeof(float));
  const auto t0 = std::chrono::steady_clock::now();
  pending_[b] = comm.start_allreduce_sum(buffer);
  cost_.mpi_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GradientBuckets::finish(const Communicator& comm, size_t b) {
  const auto t0 = std::chrono::steady_clock::now();
  comm.wait(pending_[b]);
  cost_.mpi_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<float>& buffer = buffers_[b];
  size_t at = 0;
  for (size_t k : buckets_[b]) {
    Tensor& g = parameters_[k].grad();
    if (!g.defined()) continue;
    if (dense(g)) {
      std::memcpy(g.data(), buffer.data() + at, static_cast<size_t>(g.numel()) * sizeof(float));
    } else {
      Tensor summed = Tensor::empty(g.shape());
      std::memcpy(summed.data(), buffer.data() + at, static_cast<size_t>(g.numel()) * sizeof(float));
      g.copy_(summed);
    }
    at += static_cast<size_t>(g.numel());
  }
}

void GradientBuckets::sum(const Communicator& comm) {
  if (!comm.distributed()) return;
  const auto t0 = std::chrono::steady_clock::now();
  if (mode_ == GradientSum::after) {
    for (size_t b = 0; b < buckets_.size(); ++b) {
      start(comm, b);
      finish(comm, b);
    }
  } else {
    while (next_start_ < buckets_.size()) start(comm, next_start_++);  // parameters backward did not reach
    for (size_t b = 0; b < buckets_.size(); ++b) finish(comm, b);
    if (!schedule_checked_) check_same_schedule(comm);
  }
  std::fill(ready_.begin(), ready_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) missing_[b] = buckets_[b].size();
  next_start_ = first_unfinished_ = 0;
  schedule_.clear();
  ++cost_.steps;
  cost_.exposed_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// MPI matches collectives by the order they start in, so a rank that started a bucket before a
// synchronised batch norm's sum while another started it after would pair unrelated buffers. The
// ranks run the same graph, so this does not happen; the first step checks it (64-bit FNV-1a of
// the schedule, compared with rank 0's), all ranks throwing together if any differs.
void GradientBuckets::check_same_schedule(const Communicator& comm) {
  uint64_t hash = 14695981039346656037ull;
  for (int64_t entry : schedule_)
    for (int byte = 0; byte < 8; ++byte)
      hash = (hash ^ ((static_cast<uint64_t>(entry) >> (8 * byte)) & 0xff)) * 1099511628211ull;
  uint64_t root = hash;
  comm.broadcast(std::as_writable_bytes(std::span<uint64_t>(&root, 1)));
  double differs = root != hash;
  comm.allreduce_sum(std::span<double>(&differs, 1));
  PEEL_CHECK(differs == 0,
             "data-parallel training: the parameters completed in a different order on {} of {} ranks during "
             "backward, so the gradient sums cannot start in the same order on every rank",
             differs, comm.size());
  schedule_checked_ = true;
}

WholeBatch whole_batch(const Communicator& comm, const ag::Variable& scaled_loss, const ag::Variable& shard_logits,
                       int64_t batch_size) {
  if (!comm.distributed()) return {scaled_loss.item(), shard_logits.value()};
  const Tensor mine = shard_logits.value().contiguous();
  const int64_t K = mine.size(1), first = data_shard_begin(batch_size, comm);
  PEEL_CHECK(mine.size(0) == data_shard_begin(batch_size, comm, comm.rank() + 1) - first,
             "whole_batch: rank {} has {} logits rows for its shard of a batch of {}", comm.rank(), mine.size(0),
             batch_size);
  // Each rank fills its own rows of a zeroed (B, K) buffer, and the sum puts every rank's rows in
  // place (x + 0 is x, so the rows arrive bit for bit); the last float carries the loss.
  std::vector<float> buffer(static_cast<size_t>(batch_size * K + 1), 0.f);
  std::memcpy(buffer.data() + first * K, mine.data(), static_cast<size_t>(mine.numel()) * sizeof(float));
  buffer.back() = scaled_loss.item();
  comm.allreduce_sum(buffer);
  WholeBatch whole{buffer.back(), Tensor::empty({batch_size, K})};
  std::memcpy(whole.logits.data(), buffer.data(), static_cast<size_t>(batch_size * K) * sizeof(float));
  return whole;
}

void broadcast_state(const Communicator& comm, nn::Module& model, optim::Optimizer* optimizer) {
  if (!comm.distributed()) return;
  for (auto& [name, p] : model.named_parameters()) {
    Tensor value = p.value();
    broadcast_tensor(comm, value);
  }
  broadcast_buffers(comm, model);
  if (optimizer != nullptr)
    for (Tensor t : optimizer->state()) broadcast_tensor(comm, t);
}

void broadcast_buffers(const Communicator& comm, nn::Module& model) {
  if (!comm.distributed()) return;
  for (auto& [name, b] : model.named_buffers()) {
    Tensor t = b;
    broadcast_tensor(comm, t);
  }
}

void check_same_parameters(const Communicator& comm, const nn::Module& model) {
  if (!comm.distributed()) return;
  for (const auto& [name, p] : model.named_parameters()) {
    const Tensor mine = p.value().contiguous();
    Tensor root = mine.clone();
    broadcast_tensor(comm, root);
    int differs = std::memcmp(mine.data(), root.data(), static_cast<size_t>(mine.numel()) * sizeof(float)) != 0;
    double flag = differs;
    comm.allreduce_sum(std::span<double>(&flag, 1));
    PEEL_CHECK(flag == 0,
               "data-parallel training: parameter {} differs between ranks (on {} of {} ranks); the ranks "
               "did not take identical steps",
               name, flag, comm.size());
  }
}

}  // namespace peel::dist
