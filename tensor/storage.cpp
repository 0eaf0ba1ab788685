#include "tensor/storage.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace peel {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kCacheThreshold = 4096;  // a page: smaller buffers go straight to malloc

struct Allocator {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // exact byte size -> cached buffer
  MemoryStats stats;

  void* allocate(size_t bytes) {
    if (bytes < kCacheThreshold) {
      std::lock_guard lock(mutex);
      ++stats.small_allocations;
      add_live(bytes);
      return system_allocate(bytes);
    }
    {
      std::lock_guard lock(mutex);
      add_live(bytes);
      auto it = free_blocks.find(bytes);
      if (it != free_blocks.end()) {
        void* p = it->second;
        free_blocks.erase(it);
        ++stats.cache_hits;
        stats.cached_bytes -= static_cast<int64_t>(bytes);
        return p;
      }
      ++stats.system_allocations;
    }
    return system_allocate(bytes);
  }

  void deallocate(void* p, size_t bytes) {
    std::lock_guard lock(mutex);
    stats.live_bytes -= static_cast<int64_t>(bytes);
    if (bytes < kCacheThreshold) {
      std::free(p);
      return;
    }
    free_blocks.emplace(bytes, p);
    stats.cached_bytes += static_cast<int64_t>(bytes);
  }

  void release() {
    std::lock_guard lock(mutex);
    for (auto& [bytes, p] : free_blocks) std::free(p);
    free_blocks.clear();
    stats.cached_bytes = 0;
  }

  void add_live(size_t bytes) {
    stats.live_bytes += static_cast<int64_t>(bytes);
    if (stats.live_bytes > stats.peak_live_bytes) stats.peak_live_bytes = stats.live_bytes;
  }

  static void* system_allocate(size_t bytes) {
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
};

Allocator& allocator() {
  static Allocator* instance = new Allocator();  // never destroyed: storages may outlive main()
  return *instance;
}

size_t rounded_bytes(int64_t num_floats) {
  const size_t bytes = static_cast<size_t>(num_floats < 1 ? 1 : num_floats) * sizeof(float);
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

}  // namespace

MemoryStats memory_stats() {
  std::lock_guard lock(allocator().mutex);
  return allocator().stats;
}

void release_cached_memory() { allocator().release(); }

Storage::Storage(int64_t num_floats) : data_(nullptr), size_(num_floats), bytes_(rounded_bytes(num_floats)) {
  data_ = static_cast<float*>(allocator().allocate(bytes_));
}

Storage::~Storage() { allocator().deallocate(data_, bytes_); }

}  // namespace peel
