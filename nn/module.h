// Module: the unit networks are built from. It owns named parameters (Variables that require a
// gradient), named buffers (tensors such as running statistics) and named child modules, and it
// knows whether it is training. Names are dotted paths, as in PyTorch's state_dict, so a peel
// model and its PyTorch twin have the same names.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"

namespace peel::nn {

using ag::Variable;

class Module {
 public:
  virtual ~Module() = default;
  virtual Variable forward(const Variable& x) = 0;
  Variable operator()(const Variable& x) { return forward(x); }

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  std::vector<std::pair<std::string, Variable>> named_parameters() const;
  std::vector<Variable> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  // Parameters then buffers: everything save() writes.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void zero_grad();
  int64_t parameter_count() const;
  // This module (named "") and every module below it with its dotted path, parents first, in
  // registration order (PyTorch's named_modules).
  std::vector<std::pair<std::string, Module*>> named_modules();

  // Writes the state in peel's versioned binary format, atomically (temporary file + rename).
  void save(const std::string& path) const;
  // Loads a state written by save(). Names and shapes must match exactly; every mismatch
  // (missing, unexpected, wrong shape) is listed in the error, and nothing is changed on error.
  void load(const std::string& path);

 protected:
  Variable register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Variable>>* params,
               std::vector<std::pair<std::string, Tensor>>* buffers) const;

  bool training_ = true;
  std::vector<std::pair<std::string, Variable>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

using ModulePtr = std::shared_ptr<Module>;

// State files (checkpoints, saved models), little-endian:
//
//   "PEELSTAT"                 8 bytes, at byte 0
//   format version             uint32, at byte 8: 2 (written), 1 (still read)
//   entry count                uint64, at byte 12
//   header CRC-32              uint32, at byte 20: zlib crc32 of bytes 0..19        (version 2 only)
//   then per entry:
//     name length (uint32), name bytes, rank (uint32), dims (int64 each), values (float32 each)
//     CRC-32                   uint32: crc32 of the entry's bytes above, name length to last value
//                                                                                   (version 2 only)
//
// read_state refuses, with the file, the entry and what was expected, any file that fails a CRC,
// is truncated, has bytes after the last entry, or has an implausible length, rank or dimension.
// Version 1 files (peel before the CRCs) are read with the structural checks only.
inline constexpr uint32_t kStateFormatVersion = 2;
void write_state(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& state);
std::vector<std::pair<std::string, Tensor>> read_state(const std::string& path);
// The same, on a state file's bytes; `path` names the file in errors (any name will do).
std::vector<std::pair<std::string, Tensor>> parse_state(std::span<const uint8_t> bytes, const std::string& path);
// Copies `loaded` into `target` by name, after checking that names and shapes match.
void assign_state(const std::vector<std::pair<std::string, Tensor>>& target,
                  const std::vector<std::pair<std::string, Tensor>>& loaded, const std::string& source);

}  // namespace peel::nn
