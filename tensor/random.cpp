#include "tensor/random.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "tensor/error.h"

namespace peel {

float Generator::uniform() {
  // The top 24 bits give every float in [0, 1) with spacing 2^-24.
  return static_cast<float>(engine_() >> 40) * (1.0f / 16777216.0f);
}

float Generator::uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

float Generator::normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  // Box-Muller in double; u1 in (0, 1] so log never sees 0.
  const double u1 = (static_cast<double>(engine_() >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_normal_ = static_cast<float>(r * std::sin(2.0 * std::numbers::pi * u2));
  has_spare_normal_ = true;
  return static_cast<float>(r * std::cos(2.0 * std::numbers::pi * u2));
}

int64_t Generator::randint(int64_t n) {
  PEEL_CHECK(n > 0, "randint: range must be positive, got {}", n);
  const uint64_t range = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;  // reject the biased tail
  uint64_t v;
  do v = engine_();
  while (v >= limit);
  return static_cast<int64_t>(v % range);
}

std::vector<int64_t> Generator::permutation(int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(randint(i + 1))]);
  return p;
}

Generator Generator::fork(uint64_t stream) {
  std::seed_seq seq{static_cast<uint32_t>(engine_() >> 32), static_cast<uint32_t>(stream),
                    static_cast<uint32_t>(stream >> 32)};
  Generator g;
  g.engine_.seed(seq);
  return g;
}

std::string Generator::state() const {
  std::ostringstream os;
  os << engine_ << ' ' << has_spare_normal_ << ' ' << std::hexfloat << spare_normal_;
  return os.str();
}

void Generator::set_state(const std::string& state) {
  std::istringstream is(state);
  std::string spare;
  is >> engine_ >> has_spare_normal_ >> spare;
  PEEL_CHECK(!is.fail(), "Generator::set_state: malformed state string");
  spare_normal_ = std::strtof(spare.c_str(), nullptr);
}

void uniform_(Tensor& t, float lo, float hi, Generator& gen) {
  PEEL_CHECK(t.is_contiguous(), "uniform_: needs a contiguous tensor, got shape {}", to_string(t.shape()));
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = gen.uniform(lo, hi);
}

void normal_(Tensor& t, float mean, float stddev, Generator& gen) {
  PEEL_CHECK(t.is_contiguous(), "normal_: needs a contiguous tensor, got shape {}", to_string(t.shape()));
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + stddev * gen.normal();
}

Tensor uniform(const Shape& shape, float lo, float hi, Generator& gen) {
  Tensor t = Tensor::empty(shape);
  uniform_(t, lo, hi, gen);
  return t;
}

Tensor normal(const Shape& shape, float mean, float stddev, Generator& gen) {
  Tensor t = Tensor::empty(shape);
  normal_(t, mean, stddev, gen);
  return t;
}

}  // namespace peel
