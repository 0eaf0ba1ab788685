#include "experiments/distributed/comm.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "tensor/error.h"

#ifdef PEEL_HAVE_MPI
#include <mpi.h>
#endif

namespace peel::dist {

namespace {

bool joined_mpi = false;

// mpirun (Open MPI, or a PMI/PMIx launcher) tells its processes who they are in the environment.
bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

double timeout_from_environment() {
  const char* text = std::getenv("PEEL_RANK_TIMEOUT");
  if (text == nullptr) return 600;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  PEEL_CHECK(end != text && *end == '\0' && seconds > 0, "PEEL_RANK_TIMEOUT={}: expected a positive number of seconds",
             text);
  return seconds;
}

#ifdef PEEL_HAVE_MPI
// Waits for a non-blocking collective, polling, at most `timeout` seconds; then ends the job. The
// first polls spin (a gradient sum on one machine takes microseconds), later ones sleep briefly so
// that a rank waiting for a slow one (rank 0 evaluating) leaves the cores to it.
void wait_or_abort(MPI_Request& request, const Communicator& comm, const char* what, int64_t bytes) {
  const auto start = std::chrono::steady_clock::now();
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 20000 ? 1000 : 50));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > comm.timeout())
      comm.abort(
          fmt::format("rank {} of {}: no answer from the other ranks for {:.0f} s in {} ({} bytes); a rank "
                      "was lost or hangs, so the job stops (raise PEEL_RANK_TIMEOUT if a rank is merely slow)",
                      comm.rank(), comm.size(), waited, what, bytes));
  }
}
#endif

// Adds the time until its end to the traffic tally.
struct Timed {
  Communicator::Traffic& traffic;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  ~Timed() { traffic.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

// Counts one collective of `bytes` into the traffic tally and times it.
struct Tally {
  Tally(Communicator::Traffic& traffic, int64_t bytes) : timed{traffic} {
    ++traffic.calls;
    traffic.bytes += bytes;
  }
  Timed timed;
};

Communicator* active = nullptr;  // a LocalScope's communicator; null: the job's

}  // namespace

struct PendingSum::Request {
#ifdef PEEL_HAVE_MPI
  MPI_Request request = MPI_REQUEST_NULL;
#endif
  int64_t bytes = 0;
};

PendingSum::PendingSum() = default;
// A sum still pending here keeps MPI writing into its buffer; its owner waits for it first.
PendingSum::~PendingSum() = default;
PendingSum::PendingSum(PendingSum&&) noexcept = default;
PendingSum& PendingSum::operator=(PendingSum&&) noexcept = default;

Communicator& job() {
  static Communicator comm;
  return comm;
}

Communicator& world() { return active != nullptr ? *active : job(); }

LocalScope::LocalScope() : previous_(active) {
  static Communicator alone;  // rank 0 of 1
  active = &alone;
}

LocalScope::~LocalScope() { active = previous_; }

bool built_with_mpi() {
#ifdef PEEL_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
  Communicator& comm = job();
  comm.timeout_ = timeout_from_environment();
  if (!launched_by_mpirun()) return;
#ifdef PEEL_HAVE_MPI
  int provided = 0;
  // Only the main thread calls MPI (the loader's worker never does).
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  joined_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &comm.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &comm.size_);
#else
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "peel: warning: started by mpirun, but this build has no MPI; running as one process\n");
#endif
}

void finalize() {
#ifdef PEEL_HAVE_MPI
  if (joined_mpi) MPI_Finalize();
  joined_mpi = false;
#endif
}

void Communicator::set_timeout(double seconds) {
  PEEL_CHECK(seconds > 0, "the rank timeout must be > 0 seconds, got {}", seconds);
  timeout_ = seconds;
}

void Communicator::abort(const std::string& why, int code) const {
  std::fprintf(stderr, "peel: error: %s\n", why.c_str());
  std::fflush(stderr);
#ifdef PEEL_HAVE_MPI
  if (joined_mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

void Communicator::allreduce_sum(std::span<float> values) const {
  if (size_ == 1 || values.empty()) return;
#ifdef PEEL_HAVE_MPI
  const int64_t bytes = static_cast<int64_t>(values.size_bytes());
  Tally tally{traffic_, bytes};
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                 &request);
  wait_or_abort(request, *this, "a sum of floats", bytes);
#endif
}

void Communicator::allreduce_sum(std::span<double> values) const {
  if (size_ == 1 || values.empty()) return;
#ifdef PEEL_HAVE_MPI
  const int64_t bytes = static_cast<int64_t>(values.size_bytes());
  Tally tally{traffic_, bytes};
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD,
                 &request);
  wait_or_abort(request, *this, "a sum of doubles", bytes);
#endif
}

PendingSum Communicator::start_allreduce_sum(std::span<float> values) const {
  PendingSum sum;
  if (size_ == 1 || values.empty()) return sum;
#ifdef PEEL_HAVE_MPI
  sum.request_ = std::make_unique<PendingSum::Request>();
  sum.request_->bytes = static_cast<int64_t>(values.size_bytes());
  Tally tally{traffic_, sum.request_->bytes};
  MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                 &sum.request_->request);
#endif
  return sum;
}

bool Communicator::test(PendingSum& sum) const {
  if (!sum.pending()) return true;
#ifdef PEEL_HAVE_MPI
  Timed timed{traffic_};
  int done = 0;
  MPI_Test(&sum.request_->request, &done, MPI_STATUS_IGNORE);
  if (!done) return false;
#endif
  sum.request_.reset();
  return true;
}

void Communicator::wait(PendingSum& sum) const {
  if (!sum.pending()) return;
#ifdef PEEL_HAVE_MPI
  Timed timed{traffic_};
  wait_or_abort(sum.request_->request, *this, "a sum of floats started earlier", sum.request_->bytes);
#endif
  sum.request_.reset();
}

void Communicator::broadcast(std::span<std::byte> bytes, int root) const {
  PEEL_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of {}", root, size_);
  if (size_ == 1 || bytes.empty()) return;
#ifdef PEEL_HAVE_MPI
  Tally tally{traffic_, static_cast<int64_t>(bytes.size())};
  MPI_Request request;
  MPI_Ibcast(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, root, MPI_COMM_WORLD, &request);
  wait_or_abort(request, *this, "a broadcast", static_cast<int64_t>(bytes.size()));
#endif
}

void Communicator::broadcast(std::span<float> values, int root) const {
  broadcast(std::as_writable_bytes(values), root);
}

void Communicator::barrier() const {
  if (size_ == 1) return;
#ifdef PEEL_HAVE_MPI
  Tally tally{traffic_, 0};
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  wait_or_abort(request, *this, "a barrier", 0);
#endif
}

}  // namespace peel::dist
