// Data-parallel training over the ranks of a Communicator (comm.h), in PyTorch DDP's manner: each
// rank runs forward and backward on its shard of every batch, the gradients are summed over the
// ranks bucket by bucket in a fixed order, and every rank then takes the same optimizer step.
//
// The sum equals the single-process gradient because each rank scales its loss by its shard's
// share of the batch's loss (shard_loss_share) before backward: the batch's mean loss is the sum of
// the shards' mean losses weighted by those shares, cross-entropy's class weights included.
#pragma once

#include <cstdint>
#include <exception>
#include <span>
#include <vector>

#include "autograd/variable.h"
#include "experiments/distributed/comm.h"
#include "nn/module.h"
#include "optim/optimizer.h"
#include "tensor/error.h"

namespace peel::dist {

// The share of the whole batch's mean loss that a shard carries: sum over the shard of w[y] over
// the sum over the batch (w = 1 for every class when class_weights is empty: the shard's size
// over the batch's).
double shard_loss_share(const std::vector<int64_t>& shard_labels, const std::vector<int64_t>& batch_labels,
                        const std::vector<float>& class_weights);

// The gradients of `parameters` in buckets of at most `bucket_floats` (one parameter larger than
// that is a bucket of its own), last parameter first, the order backward produces them in.
class GradientBuckets {
 public:
  GradientBuckets(std::vector<ag::Variable> parameters, int64_t bucket_floats = int64_t{1} << 18);
  // Sums every defined gradient over the ranks, in place. A parameter's gradient is defined on all
  // ranks or on none (they run one graph).
  void sum(const Communicator& comm);
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  std::vector<ag::Variable> parameters_;
  std::vector<std::vector<size_t>> buckets_;  // indices into parameters_
  std::vector<float> buffer_;
};

// What the whole batch's step measured, on every rank: the batch's mean loss (the sum of the
// shards' scaled losses) and the logits of all its images in batch order. With one process, the
// step's own loss and logits.
struct WholeBatch {
  double loss = 0;
  Tensor logits;  // (B, K)
};
WholeBatch whole_batch(const Communicator& comm, const ag::Variable& scaled_loss, const ag::Variable& shard_logits,
                       int64_t batch_size);

// Runs `decide` on rank 0 and returns its answer on every rank. When it throws, rank 0 rethrows and
// the others throw saying that rank 0 failed, so that no rank waits for a rank that gave up.
template <class Decide>
int64_t decided_by_root(const Communicator& comm, Decide&& decide) {
  int64_t answer = -1;
  std::exception_ptr error;
  if (comm.is_root()) try {
      answer = decide();
    } catch (...) {
      error = std::current_exception();
    }
  int64_t message[2] = {answer, error ? 1 : 0};
  comm.broadcast(std::as_writable_bytes(std::span<int64_t>(message)));
  if (error) std::rethrow_exception(error);
  PEEL_CHECK(message[1] == 0, "rank {}: rank 0 failed (its message says why)", comm.rank());
  return message[0];
}

// Makes every rank's parameters and buffers (and, given, optimizer state) rank 0's: at the start,
// after a resume, and before rank 0 measures or saves.
void broadcast_state(const Communicator& comm, nn::Module& model, optim::Optimizer* optimizer = nullptr);
// Buffers only (running statistics, which per-rank batch norm lets drift apart).
void broadcast_buffers(const Communicator& comm, nn::Module& model);

// Throws naming the first parameter whose bits differ from rank 0's: the check that the ranks took
// identical steps.
void check_same_parameters(const Communicator& comm, const nn::Module& model);

}  // namespace peel::dist
