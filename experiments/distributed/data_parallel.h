// Data-parallel training over the ranks of a Communicator (comm.h), in PyTorch DDP's manner: each
// rank runs forward and backward on its shard of every batch, the gradients are summed over the
// ranks bucket by bucket in a fixed order (each bucket as soon as backward has completed it, by
// default), and every rank then takes the same optimizer step.
//
// The sum equals the single-process gradient because each rank scales its loss by its shard's
// share of the batch's loss (shard_loss_share) before backward: the batch's mean loss is the sum of
// the shards' mean losses weighted by those shares, cross-entropy's class weights included.
#pragma once

#include <cstdint>
#include <exception>
#include <span>
#include <unordered_map>
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

// When the gradients travel: after backward, one bucket after another (`after`), or each bucket
// as soon as backward has completed all its gradients, overlapping the rest of backward (`overlap`,
// PyTorch DDP's and Horovod's way). The sums are the same bits either way.
enum class GradientSum { overlap, after };

// The gradients of `parameters` in buckets of at most `bucket_floats` (one parameter larger than
// that is a bucket of its own), last parameter first, the order backward produces them in. Each
// bucket is summed over the ranks in a buffer of its own, with one MPI_Iallreduce; the buckets are
// started in their fixed order (0, 1, ...) on every rank, whatever the mode.
//
// A step: `loss.backward(gradients.ready_hook(comm))`, then `gradients.sum(comm)` before the
// optimizer step. With `overlap` the hook copies bucket k into its buffer and starts its sum once
// every parameter of bucket k has its final gradient and buckets 0..k-1 have started; at each
// parameter it also tests the started sums, since Open MPI moves them along only inside MPI calls.
// sum() then starts the buckets that were not complete (parameters backward did not reach), waits
// for every bucket in order and copies the sums back. With `after` the hook is empty and sum()
// does the whole work. Collectives that backward makes itself (synchronised batch norm) then
// interleave with the bucket starts: the same way on every rank, because every rank runs the same
// graph and so sees its parameters complete in the same order (the first step checks this).
class GradientBuckets {
 public:
  GradientBuckets(std::vector<ag::Variable> parameters, GradientSum mode = GradientSum::overlap,
                  int64_t bucket_floats = int64_t{1} << 18);
  GradientBuckets(const GradientBuckets&) = delete;  // the hook refers to this object
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // For backward: empty unless the mode is `overlap` and comm has several ranks.
  ag::LeafReady ready_hook(const Communicator& comm);
  // Sums every defined gradient over the ranks, in place. A parameter's gradient is defined on all
  // ranks or on none (they run one graph).
  void sum(const Communicator& comm);

  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  GradientSum mode() const { return mode_; }
  // What the gradient sums cost this process since it started, for docs/scaling.md.
  struct Cost {
    int64_t steps = 0, bytes = 0;
    int64_t started_in_backward = 0;  // buckets started by the hook, before sum()
    double exposed_seconds = 0;       // inside sum(): what the step waited for after backward
    double mpi_seconds = 0;           // inside MPI calls for gradients: the starts and tests during backward, the waits
  };
  const Cost& cost() const { return cost_; }

 private:
  void parameter_ready(const Communicator& comm, size_t k);
  void start(const Communicator& comm, size_t b);
  void finish(const Communicator& comm, size_t b);
  void check_same_schedule(const Communicator& comm);

  std::vector<ag::Variable> parameters_;
  GradientSum mode_;
  std::vector<std::vector<size_t>> buckets_;  // indices into parameters_
  std::vector<size_t> bucket_of_;             // per parameter
  std::unordered_map<const ag::VariableState*, size_t> index_of_;
  std::vector<std::vector<float>> buffers_;  // per bucket
  std::vector<PendingSum> pending_;          // per bucket
  // This step's progress: which parameters are complete, how many each bucket still lacks, the
  // next bucket to start, the first started bucket not known to be done.
  std::vector<char> ready_;
  std::vector<size_t> missing_;
  size_t next_start_ = 0, first_unfinished_ = 0;
  // The step's schedule: the parameters in the order they completed, and after how many of them
  // each bucket started; the first step compares it with rank 0's.
  std::vector<int64_t> schedule_;
  bool schedule_checked_ = false;
  Cost cost_;
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
