// The processes of a data-parallel job and the few collectives training needs: rank, size, sums of
// float and double buffers over all ranks (blocking, or started now and waited for later),
// broadcast from one rank, barrier.
//
// Launched by `mpirun -np N peel ...` the world is MPI's; otherwise (or in a build without MPI) it
// is this one process, and every collective returns at once without touching the data, so a single
// process runs exactly as it would without this layer. MPI would wait forever for a rank that died
// or hangs; here every collective waits at most timeout() seconds and then ends the whole job with
// a message naming the operation (MPI_Abort), so a lost rank never leaves the others hanging.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace peel::dist {

// A sum over the ranks that Communicator::start_allreduce_sum started and nobody has waited for
// yet. Its buffer belongs to MPI until Communicator::wait returns: it must stay alive and
// untouched. Move-only; an empty one (default, or once waited for) is done.
class PendingSum {
 public:
  PendingSum();
  ~PendingSum();
  PendingSum(PendingSum&&) noexcept;
  PendingSum& operator=(PendingSum&&) noexcept;
  bool pending() const { return request_ != nullptr; }

 private:
  friend class Communicator;
  struct Request;  // MPI's request and what it moves (comm.cpp)
  std::unique_ptr<Request> request_;
};

class Communicator {
 public:
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }

  // In place: every rank ends with the element-wise sum over all ranks (the same bits on each).
  void allreduce_sum(std::span<float> values) const;
  void allreduce_sum(std::span<double> values) const;
  // The same sum, non-blocking: starts it and returns at once; once wait() has returned, `values`
  // holds the bits allreduce_sum gives. Every rank must start its collectives (these and the
  // blocking ones) in the same order, as MPI requires.
  [[nodiscard]] PendingSum start_allreduce_sum(std::span<float> values) const;
  // Lets MPI move started sums along (Open MPI progresses non-blocking collectives only inside MPI
  // calls, without a progress thread by default); true when `sum` is done (it is then empty).
  bool test(PendingSum& sum) const;
  // Waits for `sum` at most timeout() seconds from now, then ends the job as any collective does.
  void wait(PendingSum& sum) const;
  // In place: every rank ends with `root`'s bytes.
  void broadcast(std::span<std::byte> bytes, int root = 0) const;
  void broadcast(std::span<float> values, int root = 0) const;
  void barrier() const;
  // Ends every rank of the job with exit code `code` after printing `why` on this one.
  [[noreturn]] void abort(const std::string& why, int code = 1) const;

  // Seconds a collective may wait for the other ranks before the job is ended (default 600, or
  // the environment's PEEL_RANK_TIMEOUT).
  double timeout() const { return timeout_; }
  void set_timeout(double seconds);

  // What the collectives moved since the last reset: for the scaling figures (docs/scaling.md).
  struct Traffic {
    int64_t calls = 0, bytes = 0;
    double seconds = 0;  // spent inside collectives, waiting included (for a started sum: its start, tests and wait)
  };
  const Traffic& traffic() const { return traffic_; }
  void reset_traffic() const { traffic_ = {}; }

 private:
  friend Communicator& job();
  friend void init(int* argc, char*** argv);
  int rank_ = 0, size_ = 1;
  double timeout_ = 600;
  mutable Traffic traffic_;
};

// The communicator training uses: the job's (MPI's world after init() under mpirun, this process
// alone otherwise), or this process alone inside a LocalScope.
Communicator& world();
// The job's communicator, whatever the scope.
Communicator& job();

// Within its scope world() is this process alone: for a run that one rank trains by itself while
// the other ranks train others (a sweep spread over the ranks, experiments/reproduce/sweep.h).
class LocalScope {
 public:
  LocalScope();
  ~LocalScope();
  LocalScope(const LocalScope&) = delete;
  LocalScope& operator=(const LocalScope&) = delete;

 private:
  Communicator* previous_;
};

// Joins the MPI job when this process was started by mpirun (MPI_Init_thread); otherwise, or in a
// build without MPI, does nothing. Call once at the start of main.
void init(int* argc, char*** argv);
// Leaves the MPI job (MPI_Finalize) if init joined one.
void finalize();

// True when this build can join an MPI job.
bool built_with_mpi();

}  // namespace peel::dist
