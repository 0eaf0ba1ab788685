#include "nn/module.h"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <span>
#include <string_view>

#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel::nn {

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

Variable Module::register_parameter(const std::string& name, Tensor value) {
  Variable v(std::move(value), true, name);
  parameters_.emplace_back(name, v);
  return v;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, value);
  return value;
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Variable>>* params,
                     std::vector<std::pair<std::string, Tensor>>* buffers) const {
  if (params)
    for (const auto& [name, v] : parameters_) params->emplace_back(prefix + name, v);
  if (buffers)
    for (const auto& [name, t] : buffers_) buffers->emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, buffers);
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Variable>> out;
  collect("", &out, nullptr);
  return out;
}

std::vector<Variable> Module::parameters() const {
  std::vector<Variable> out;
  for (auto& [name, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", nullptr, &out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, v] : named_parameters()) out.emplace_back(name, v.value());
  for (auto& b : named_buffers()) out.push_back(b);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [name, child] : children_)
    for (auto& [path, m] : child->named_modules()) out.emplace_back(path.empty() ? name : name + "." + path, m);
  return out;
}

void Module::zero_grad() {
  for (auto& [name, v] : named_parameters()) v.zero_grad();
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, v] : named_parameters()) n += v.numel();
  return n;
}

void Module::save(const std::string& path) const { write_state(path, state()); }
void Module::load(const std::string& path) { assign_state(state(), read_state(path), path); }

// ---- The state file format (described in module.h and docs/files.md) ----------------------------

namespace {
constexpr char kMagic[8] = {'P', 'E', 'E', 'L', 'S', 'T', 'A', 'T'};
constexpr size_t kHeaderBytes = 8 + 4 + 8;  // magic, version, entry count (then the header CRC)
constexpr uint32_t kMaxNameLength = 4096;
constexpr uint32_t kMaxRank = 8;
constexpr uint64_t kMaxElements = uint64_t{1} << 60;

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

uint32_t crc_of(std::string_view bytes) {
  return io::crc32(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

// Reads fixed-size fields in order; every read past the end is an error naming the file, the
// byte and what was being read.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <class T>
  T get(const std::string& what) {
    T value;
    PEEL_CHECK(sizeof(T) <= left(), "{}: truncated at byte {} while reading {} ({} bytes needed, {} left)", path_, pos_,
               what, sizeof(T), left());
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::span<const uint8_t> take(size_t n, const std::string& what) {
    PEEL_CHECK(n <= left(), "{}: truncated at byte {} while reading {} ({} bytes needed, {} left)", path_, pos_, what,
               n, left());
    pos_ += n;
    return bytes_.subspan(pos_ - n, n);
  }
  size_t pos() const { return pos_; }
  size_t left() const { return bytes_.size() - pos_; }
  uint32_t crc_from(size_t begin) const { return io::crc32(bytes_.subspan(begin, pos_ - begin)); }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& path_;
  size_t pos_ = 0;
};
}  // namespace

void write_state(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& state) {
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, kStateFormatVersion);
  put<uint64_t>(out, state.size());
  put<uint32_t>(out, crc_of(out));
  for (const auto& [name, t] : state) {
    PEEL_CHECK(name.size() <= kMaxNameLength && static_cast<uint32_t>(t.dim()) <= kMaxRank,
               "write_state {}: entry '{}' (rank {}) exceeds what state files hold (names up to {} bytes, rank up to "
               "{})",
               path, name, t.dim(), kMaxNameLength, kMaxRank);
    const size_t begin = out.size();
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out += name;
    put<uint32_t>(out, static_cast<uint32_t>(t.dim()));
    for (int64_t d : t.shape()) put<int64_t>(out, d);
    const std::vector<float> values = t.to_vector();
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    put<uint32_t>(out, crc_of(std::string_view(out).substr(begin)));
  }
  io::write_file_atomic(path, out);
}

std::vector<std::pair<std::string, Tensor>> read_state(const std::string& path) {
  return parse_state(io::read_file(path), path);
}

std::vector<std::pair<std::string, Tensor>> parse_state(std::span<const uint8_t> bytes, const std::string& path) {
  Reader r(bytes, path);
  const std::span<const uint8_t> magic = r.take(sizeof(kMagic), "the magic number");
  PEEL_CHECK(std::memcmp(magic.data(), kMagic, sizeof(kMagic)) == 0,
             "{}: not a peel state file (bytes 0..7 are not \"PEELSTAT\")", path);
  const auto version = r.get<uint32_t>("the format version");
  PEEL_CHECK(version == 1 || version == kStateFormatVersion,
             "{}: format version {} at byte 8 is not one this peel reads (1 and {}): the file is corrupt or was "
             "written by a newer peel",
             path, version, kStateFormatVersion);
  const bool checksummed = version >= 2;
  const auto count = r.get<uint64_t>("the entry count");
  if (checksummed) {
    const uint32_t computed = r.crc_from(0);
    const auto stored = r.get<uint32_t>("the header CRC-32");
    PEEL_CHECK(stored == computed,
               "{}: the header (bytes 0..{}) fails its CRC-32 check: stored {:#010x}, computed {:#010x}; the file is "
               "corrupt",
               path, kHeaderBytes + 3, stored, computed);
  }
  // The smallest entry: name length, rank, and (version 2) its CRC.
  const size_t smallest_entry = checksummed ? 12 : 8;
  PEEL_CHECK(count <= r.left() / smallest_entry,
             "{}: entry count {} at byte 12 cannot fit in the {} bytes that follow the header; the file is truncated "
             "or corrupt",
             path, count, r.left());

  std::vector<std::pair<std::string, Tensor>> state;
  for (uint64_t e = 0; e < count; ++e) {
    const size_t begin = r.pos();
    const std::string entry = fmt::format("entry {} of {} (from byte {})", e + 1, count, begin);
    const auto name_length = r.get<uint32_t>(entry + ": its name length");
    PEEL_CHECK(name_length <= kMaxNameLength, "{}: {}: name length {} is implausible (at most {}); the file is corrupt",
               path, entry, name_length, kMaxNameLength);
    const std::span<const uint8_t> name_bytes = r.take(name_length, entry + ": its name");
    const std::string name(name_bytes.begin(), name_bytes.end());
    const std::string named = fmt::format("entry {} of {} '{}' (from byte {})", e + 1, count, name, begin);
    const auto rank = r.get<uint32_t>(named + ": its rank");
    PEEL_CHECK(rank <= kMaxRank, "{}: {}: rank {} at byte {} is implausible (at most {}); the file is corrupt", path,
               named, rank, r.pos() - 4, kMaxRank);
    Shape shape;
    uint64_t numel = 1;
    // The product of the dimensions with a 0 counted as 1: it bounds every stride. Bounding only
    // the element count let [0, 2^62, 2^62] through, whose strides overflow int64 (found by
    // tests/fuzz/fuzz_state).
    uint64_t extent = 1;
    for (uint32_t d = 0; d < rank; ++d) {
      const auto dim = r.get<int64_t>(named + ": a dimension");
      // Bounding the extent keeps every product from overflowing; whether the file holds the
      // values is checked when they are read.
      const uint64_t counted = dim > 0 ? static_cast<uint64_t>(dim) : 1;
      PEEL_CHECK(dim >= 0 && extent <= kMaxElements / counted,
                 "{}: {}: dimension {} at byte {} is implausible (negative, or the dimensions multiply to over 2^60); "
                 "the file is corrupt",
                 path, named, dim, r.pos() - 8);
      shape.push_back(dim);
      numel *= static_cast<uint64_t>(dim);
      extent *= counted;
    }
    const std::span<const uint8_t> values =
        r.take(numel * sizeof(float), named + ": the values of shape " + to_string(shape));
    if (checksummed) {
      const uint32_t computed = r.crc_from(begin);
      const auto stored = r.get<uint32_t>(named + ": its CRC-32");
      PEEL_CHECK(stored == computed,
                 "{}: entry {} of {} '{}' (bytes {}..{}) fails its CRC-32 check: stored {:#010x}, computed {:#010x}; "
                 "the file is corrupt",
                 path, e + 1, count, name, begin, r.pos() - 1, stored, computed);
    }
    Tensor t = Tensor::empty(shape);
    if (!values.empty()) std::memcpy(t.data(), values.data(), values.size());
    state.emplace_back(name, std::move(t));
  }
  PEEL_CHECK(r.left() == 0, "{}: {} unexpected bytes after the last entry, from byte {}; the file is corrupt", path,
             r.left(), r.pos());
  return state;
}

void assign_state(const std::vector<std::pair<std::string, Tensor>>& target,
                  const std::vector<std::pair<std::string, Tensor>>& loaded, const std::string& source) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : loaded) by_name[name] = &t;
  std::vector<std::string> problems;
  for (const auto& [name, t] : target) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back(fmt::format("missing '{}' (expected shape {})", name, to_string(t.shape())));
      continue;
    }
    if (it->second->shape() != t.shape())
      problems.push_back(fmt::format("'{}' has shape {} in the file, the model expects {}", name,
                                     to_string(it->second->shape()), to_string(t.shape())));
    by_name.erase(it);
  }
  for (const auto& [name, t] : by_name)
    problems.push_back(fmt::format("unexpected '{}' {}", name, to_string(t->shape())));
  if (!problems.empty())
    PEEL_FAIL("{}: state does not match the model ({} problem(s)): {}", source, problems.size(),
              fmt::format("{}", fmt::join(problems, "; ")));
  std::map<std::string, const Tensor*> source_of;
  for (const auto& [name, t] : loaded) source_of[name] = &t;
  for (const auto& [name, t] : target) {
    Tensor dst = t;
    dst.copy_(*source_of[name]);
  }
}

}  // namespace peel::nn
