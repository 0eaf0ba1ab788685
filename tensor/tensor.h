// Tensor: a float32 N-d array over shared storage, described by shape, strides and offset.
//
// Views (reshape of contiguous data, permute, transpose, slice, expand, select) share storage
// with their source; writes through one are seen through the other. Operations that need dense
// memory call contiguous(), which copies only when the layout requires it.
//
// This class knows nothing of gradients: autograd/ wraps it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <vector>

#include "tensor/shape.h"
#include "tensor/storage.h"

namespace peel {

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage

  // ---- Factories -----------------------------------------------------------------------------
  static Tensor empty(const Shape& shape);  // uninitialised
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor scalar(float value);  // 0-d
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor arange(int64_t n);  // [0, 1, ..., n-1]
  // A tensor of `shape` whose strides put channels last: logical (N,C,H,W), memory (N,H,W,C).
  static Tensor empty_channels_last(const Shape& shape);

  // ---- Layout --------------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t axis) const;  // negative axes count from the end
  int64_t stride(int64_t axis) const;
  int64_t numel() const { return numel_of(shape_); }
  bool is_contiguous() const;     // row-major, no gaps
  bool is_channels_last() const;  // 4-d, memory order (N,H,W,C), no gaps
  bool shares_storage_with(const Tensor& other) const { return storage_ == other.storage_; }
  const StoragePtr& storage() const { return storage_; }

  float* data();  // address of element [0, ..., 0]
  const float* data() const;

  // ---- Views and copies ----------------------------------------------------------------------
  Tensor contiguous() const;                 // this tensor if already contiguous, otherwise a row-major copy
  Tensor channels_last() const;              // this tensor if already channels-last, otherwise a copy
  Tensor clone() const;                      // always a fresh row-major copy
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy; one -1 allowed
  Tensor view(const Shape& shape) const;     // a view, or an error naming both shapes
  Tensor flatten(int64_t start_axis = 0, int64_t end_axis = -1) const;
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t axis_a, int64_t axis_b) const;
  Tensor t() const;  // 2-d transpose
  Tensor slice(int64_t axis, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t axis, int64_t index) const;  // drops `axis`
  Tensor expand(const Shape& shape) const;           // broadcast view, stride 0 on new axes
  Tensor unsqueeze(int64_t axis) const;
  Tensor squeeze(int64_t axis) const;

  // ---- Element access (for tests, printing and small bookkeeping; not for hot loops) ---------
  float item() const;  // the value of a one-element tensor
  float at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, float value);
  std::vector<float> to_vector() const;  // row-major order

  // ---- In-place updates (used by optimizers and initialisers; never recorded by autograd) ----
  Tensor& fill_(float value);
  Tensor& copy_(const Tensor& source);                   // source broadcast to this shape
  Tensor& add_(const Tensor& other, float alpha = 1.f);  // this += alpha * other (broadcast)
  Tensor& mul_(float factor);
  Tensor& zero_() { return fill_(0.f); }

  std::string to_string() const;

 private:
  Tensor(StoragePtr storage, Shape shape, Strides strides, int64_t offset);
  int64_t element_offset(std::initializer_list<int64_t> index, const char* op) const;

  StoragePtr storage_;
  Shape shape_;
  Strides strides_;
  int64_t offset_ = 0;

  friend Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset);
};

// A view of `base`'s storage with any layout; checked to stay inside the storage.
Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset);

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Integer tensors (labels, argmax results): a shape and row-major int64 values.
struct IndexTensor {
  Shape shape;
  std::vector<int64_t> values;
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
  int64_t operator[](int64_t i) const { return values[static_cast<size_t>(i)]; }
};

}  // namespace peel
