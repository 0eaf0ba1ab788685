// Seeded random numbers. The generator is std::mt19937_64 with our own transforms to uniform and
// normal values (the standard library's distributions are not specified bit for bit), so a seed
// gives the same numbers with any compiler and any thread count.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace peel {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : engine_(seed) {}
  uint64_t next_u64() { return engine_(); }
  float uniform();                              // [0, 1)
  float uniform(float lo, float hi);            // [lo, hi)
  float normal();                               // standard normal (Box-Muller)
  int64_t randint(int64_t n);                   // uniform on [0, n), unbiased
  std::vector<int64_t> permutation(int64_t n);  // Fisher-Yates
  // Fresh generator whose stream depends on this one's seed and `stream` (for workers, layers).
  Generator fork(uint64_t stream);
  // The whole state, for checkpoints.
  std::string state() const;
  void set_state(const std::string& state);

 private:
  std::mt19937_64 engine_;
  bool has_spare_normal_ = false;
  float spare_normal_ = 0.f;
};

Tensor uniform(const Shape& shape, float lo, float hi, Generator& gen);
Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen);
void uniform_(Tensor& t, float lo, float hi, Generator& gen);
void normal_(Tensor& t, float mean, float stddev, Generator& gen);

}  // namespace peel
