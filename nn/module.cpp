#include "nn/module.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "tensor/error.h"

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

// ---- The state file format ------------------------------------------------------------------

namespace {
constexpr char kMagic[8] = {'P', 'E', 'E', 'L', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 1;

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

class Reader {
 public:
  Reader(std::string bytes, std::string path) : bytes_(std::move(bytes)), path_(std::move(path)) {}
  template <class T>
  T get(const char* what) {
    T value;
    read(&value, sizeof(T), what);
    return value;
  }
  void read(void* dst, size_t n, const char* what) {
    PEEL_CHECK(n <= bytes_.size() - pos_, "{}: truncated at byte {} while reading {} ({} bytes needed, {} left)", path_,
               pos_, what, n, bytes_.size() - pos_);
    std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
  }
  size_t pos() const { return pos_; }
  size_t size() const { return bytes_.size(); }

 private:
  std::string bytes_;
  std::string path_;
  size_t pos_ = 0;
};
}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    PEEL_CHECK(out.good(), "cannot open {} for writing: {}", tmp, std::strerror(errno));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    PEEL_CHECK(out.good(), "writing {} failed: {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    PEEL_FAIL("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
}

void write_state(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& state) {
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, kVersion);
  put<uint64_t>(out, state.size());
  for (const auto& [name, t] : state) {
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out += name;
    put<uint32_t>(out, static_cast<uint32_t>(t.dim()));
    for (int64_t d : t.shape()) put<int64_t>(out, d);
    const std::vector<float> values = t.to_vector();
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  write_file_atomically(path, out);
}

std::vector<std::pair<std::string, Tensor>> read_state(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PEEL_CHECK(in.good(), "cannot open state file {}: {}", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  Reader r(buffer.str(), path);
  char magic[8];
  r.read(magic, sizeof(magic), "the magic number");
  PEEL_CHECK(std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, "{}: not a peel state file (bad magic at byte 0)", path);
  const auto version = r.get<uint32_t>("the format version");
  PEEL_CHECK(version == kVersion, "{}: format version {} at byte 8 is not supported (this peel reads {})", path,
             version, kVersion);
  const auto count = r.get<uint64_t>("the entry count");
  PEEL_CHECK(count < (1u << 20), "{}: implausible entry count {} at byte 12", path, count);
  std::vector<std::pair<std::string, Tensor>> state;
  for (uint64_t e = 0; e < count; ++e) {
    const auto name_length = r.get<uint32_t>("a name length");
    PEEL_CHECK(name_length < 4096, "{}: implausible name length {} at byte {}", path, name_length, r.pos() - 4);
    std::string name(name_length, '\0');
    r.read(name.data(), name_length, "a name");
    const auto rank = r.get<uint32_t>("a rank");
    PEEL_CHECK(rank <= 8, "{}: entry '{}' has implausible rank {} at byte {}", path, name, rank, r.pos() - 4);
    Shape shape;
    int64_t numel = 1;
    for (uint32_t d = 0; d < rank; ++d) {
      shape.push_back(r.get<int64_t>("a dimension"));
      PEEL_CHECK(shape.back() >= 0 && shape.back() < (int64_t{1} << 31),
                 "{}: entry '{}' has bad dimension {} at byte {}", path, name, shape.back(), r.pos() - 8);
      numel *= shape.back();
    }
    PEEL_CHECK(static_cast<uint64_t>(numel) * 4 <= r.size() - r.pos(),
               "{}: truncated at byte {}: entry '{}' of shape {} needs {} bytes, {} left", path, r.pos(), name,
               to_string(shape), numel * 4, r.size() - r.pos());
    Tensor t = Tensor::empty(shape);
    r.read(t.data(), static_cast<size_t>(numel) * sizeof(float), "tensor values");
    state.emplace_back(std::move(name), std::move(t));
  }
  PEEL_CHECK(r.pos() == r.size(), "{}: {} unexpected bytes after the last entry (byte {})", path, r.size() - r.pos(),
             r.pos());
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
