// Storage: a reference-counted, 64-byte-aligned float buffer shared by tensors and their views.
//
// Buffers of a page or more come from a caching allocator: a freed buffer is kept and handed
// to the next request of the same size. A training step allocates the same shapes every time,
// so after the first step it reuses buffers instead of asking the system for new ones.
// memory_stats() counts both, which is how tests check that the hot path does not allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace peel {

struct MemoryStats {
  int64_t system_allocations = 0;  // large buffers obtained from the system
  int64_t cache_hits = 0;          // large buffers served from the cache
  int64_t small_allocations = 0;   // buffers under a page (not cached)
  int64_t live_bytes = 0;          // bytes held by live storages
  int64_t peak_live_bytes = 0;
  int64_t cached_bytes = 0;  // bytes parked in the cache, ready for reuse
};

MemoryStats memory_stats();
// Returns every cached buffer to the system.
void release_cached_memory();

class Storage {
 public:
  explicit Storage(int64_t num_floats);  // uninitialised
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  float* data_;
  int64_t size_;
  size_t bytes_;
};

using StoragePtr = std::shared_ptr<Storage>;

}  // namespace peel
