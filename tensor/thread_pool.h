// peel's own thread pool, under parallel_for (tensor/threads.h). OpenMP's parallel region ends in a
// barrier that waits for every thread of the team, including one the operating system (or, on a
// virtual machine, the host) has not scheduled yet: a region of 50 us then costs the whole wake-up
// of a sleeping thread. Here the caller runs chunks too and claims every chunk no worker has taken,
// so it waits only for chunks a worker has actually started. A late worker finds nothing left and
// goes back to waiting.
//
// The chunks are the same whoever runs them, so results do not depend on which thread ran what.
#pragma once

#include <cstdint>

namespace peel::pool {

// Calls body(context, chunk) once for each chunk in [0, chunks), on the calling thread and up to
// chunks - 1 pool workers, and returns when all have finished. The first exception a chunk throws
// is rethrown here once every chunk has finished. Runs everything on the calling thread when that
// thread is already inside run() (nested parallelism) or when another thread holds the pool.
void run(int64_t chunks, void (*body)(void* context, int64_t chunk), void* context);

// True on a thread that is executing a chunk of run().
bool in_parallel();

// How long an idle worker keeps polling for the next job before it sleeps in the kernel. Long
// enough to bridge the gaps between the parallel regions of one training step (microseconds at
// batch 128, tens of microseconds at batch 2), short enough that on a machine busy with other work
// an idle worker gives its core back almost at once.
inline constexpr int64_t kSpinMicroseconds = 100;

}  // namespace peel::pool
