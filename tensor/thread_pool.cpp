// The pool behind parallel_for (see thread_pool.h for why it is not OpenMP).
//
// One job at a time. The caller publishes it by bumping a generation in `claim_`, whose low 32 bits
// count the chunks handed out; every thread (the caller and the workers) takes chunks by
// compare-and-swap on that word, so a worker still holding a previous generation can never take a
// chunk of the current job. The caller then waits until `done_` counts every chunk finished. The
// job's fields are written only while no job is running (the previous one finished), and a claim
// succeeds only while its job is unfinished, so a worker that wins a claim has read its own job.
//
// Idle workers poll `epoch_` (bumped with every job) for kSpinMicroseconds, then sleep on it
// (std::atomic::wait, a futex); the caller wakes them only when one is asleep.
#include "tensor/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "tensor/threads.h"

namespace peel::pool {
namespace {

thread_local bool t_in_parallel = false;

using Clock = std::chrono::steady_clock;

// Marks the current thread as running chunks for the guard's lifetime (nested parallel_for calls
// then run inline) and restores what it was before.
class InParallel {
 public:
  InParallel() : outer_(t_in_parallel) { t_in_parallel = true; }
  ~InParallel() { t_in_parallel = outer_; }
  InParallel(const InParallel&) = delete;
  InParallel& operator=(const InParallel&) = delete;

 private:
  bool outer_;
};

void run_inline(int64_t chunks, void (*body)(void*, int64_t), void* context) {
  const InParallel mark;
  for (int64_t c = 0; c < chunks; ++c) body(context, c);
}

class Pool {
 public:
  // Lives until the process exits: workers sleep in the kernel when idle, and are never joined (a
  // static destructor that joined them could run while another static still needs the pool).
  static Pool& instance() {
    static Pool* pool = new Pool();
    return *pool;
  }

  void run(int64_t chunks, void (*body)(void*, int64_t), void* context) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread is using the pool: do this job alone
      run_inline(chunks, body, context);
      return;
    }
    ensure_workers(static_cast<int>(std::min<int64_t>(chunks, num_threads())) - 1);
    body_.store(body, std::memory_order_relaxed);
    context_.store(context, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    generation_ = (generation_ + 1) & 0xffffffffu;
    claim_.store(generation_ << 32, std::memory_order_release);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) epoch_.notify_all();

    work();
    // Chunks a worker has claimed may still be running; wait for them, briefly polling, then
    // yielding so that a worker descheduled on this core gets it back.
    const Clock::time_point start = Clock::now();
    for (int64_t polls = 0; done_.load(std::memory_order_acquire) != chunks; ++polls) {
      _mm_pause();
      if ((polls & 63) == 63 && Clock::now() - start > std::chrono::microseconds(kSpinMicroseconds))
        std::this_thread::yield();
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  Pool() = default;

  void ensure_workers(int wanted) {
    while (static_cast<int>(workers_.size()) < wanted) workers_.emplace_back([this] { worker_loop(); });
  }

  // Claims and runs chunks of the current job until none is left.
  void work() {
    const InParallel mark;
    for (;;) {
      uint64_t claim = claim_.load(std::memory_order_acquire);
      const uint64_t generation = claim >> 32;
      const int64_t chunk = static_cast<int64_t>(claim & 0xffffffffu);
      auto* body = body_.load(std::memory_order_relaxed);
      void* context = context_.load(std::memory_order_relaxed);
      const int64_t chunks = chunks_.load(std::memory_order_relaxed);
      if (body == nullptr || chunk >= chunks) break;
      if (!claim_.compare_exchange_weak(claim, (generation << 32) | static_cast<uint64_t>(chunk + 1),
                                        std::memory_order_acq_rel, std::memory_order_relaxed))
        continue;
      try {
        body(context, chunk);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void worker_loop() {
    uint32_t seen = epoch_.load(std::memory_order_acquire);
    for (;;) {
      const Clock::time_point start = Clock::now();
      for (int64_t polls = 0; epoch_.load(std::memory_order_acquire) == seen; ++polls) {
        _mm_pause();
        if ((polls & 63) == 63 && Clock::now() - start > std::chrono::microseconds(kSpinMicroseconds)) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          epoch_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        }
      }
      seen = epoch_.load(std::memory_order_acquire);
      work();
    }
  }

  std::mutex run_mutex_;  // one job at a time; held by the calling thread for the whole job
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;  // the caller's copy of claim_'s high half

  std::atomic<uint64_t> claim_{0};  // generation << 32 | chunks handed out
  std::atomic<void (*)(void*, int64_t)> body_{nullptr};
  std::atomic<void*> context_{nullptr};
  std::atomic<int64_t> chunks_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace

void run(int64_t chunks, void (*body)(void*, int64_t), void* context) {
  if (chunks <= 0) return;
  if (chunks == 1 || t_in_parallel) {
    run_inline(chunks, body, context);  // nothing to share, or already a chunk of an outer job
    return;
  }
  Pool::instance().run(chunks, body, context);
}

bool in_parallel() { return t_in_parallel; }

}  // namespace peel::pool
