#include "tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <ostream>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace peel {

Tensor::Tensor(StoragePtr storage, Shape shape, Strides strides, int64_t offset)
    : storage_(std::move(storage)), shape_(std::move(shape)), strides_(std::move(strides)), offset_(offset) {}

// ---- Factories -------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape) {
  for (int64_t d : shape) PEEL_CHECK(d >= 0, "empty: negative dimension in shape {}", peel::to_string(shape));
  return Tensor(std::make_shared<Storage>(numel_of(shape)), shape, contiguous_strides(shape), 0);
}

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.f); }
Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(float value) { return full({}, value); }

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  PEEL_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape),
             "from_vector: {} values cannot fill shape {} ({} elements)", values.size(), peel::to_string(shape),
             numel_of(shape));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::arange(int64_t n) {
  Tensor t = empty({n});
  float* p = t.data();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i);
  return t;
}

Tensor Tensor::empty_channels_last(const Shape& shape) {
  PEEL_CHECK(shape.size() == 4, "empty_channels_last: needs a 4-d shape (N,C,H,W), got {}", peel::to_string(shape));
  const int64_t C = shape[1], H = shape[2], W = shape[3];
  return Tensor(std::make_shared<Storage>(numel_of(shape)), shape, {H * W * C, 1, W * C, C}, 0);
}

Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset) {
  PEEL_CHECK(base.defined(), "make_view: base tensor is undefined");
  PEEL_CHECK(shape.size() == strides.size(), "make_view: shape {} and strides {} differ in rank", to_string(shape),
             to_string(strides));
  int64_t lo = offset, hi = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) {
      lo = hi = offset;
      break;
    }
    const int64_t reach = (shape[i] - 1) * strides[i];
    (reach < 0 ? lo : hi) += reach;
  }
  PEEL_CHECK(lo >= 0 && (numel_of(shape) == 0 || hi < base.storage()->size()),
             "make_view: shape {} with strides {} at offset {} reaches outside a storage of {} elements",
             to_string(shape), to_string(strides), offset, base.storage()->size());
  return Tensor(base.storage(), std::move(shape), std::move(strides), offset);
}

// ---- Layout ----------------------------------------------------------------------------------

int64_t Tensor::size(int64_t axis) const { return shape_[normalize_axis(axis, dim(), "size")]; }
int64_t Tensor::stride(int64_t axis) const { return strides_[normalize_axis(axis, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

bool Tensor::is_channels_last() const {
  if (dim() != 4) return false;
  const int64_t C = shape_[1], H = shape_[2], W = shape_[3];
  auto ok = [&](int axis, int64_t want) { return shape_[axis] == 1 || strides_[axis] == want; };
  return ok(1, 1) && ok(3, C) && ok(2, W * C) && ok(0, H * W * C);
}

float* Tensor::data() {
  PEEL_CHECK(defined(), "data: tensor is undefined");
  return storage_->data() + offset_;
}

const float* Tensor::data() const {
  PEEL_CHECK(defined(), "data: tensor is undefined");
  return storage_->data() + offset_;
}

// ---- Views and copies ------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  PEEL_CHECK(defined(), "contiguous: tensor is undefined");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_);
  out.copy_(*this);
  return out;
}

Tensor Tensor::channels_last() const {
  PEEL_CHECK(dim() == 4, "channels_last: needs a 4-d tensor (N,C,H,W), got shape {}", peel::to_string(shape_));
  if (is_channels_last()) return *this;
  Tensor out = empty_channels_last(shape_);
  out.copy_(*this);
  return out;
}

namespace {

// Resolves a single -1 in a requested shape against `numel`.
Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from, const char* op) {
  Shape out = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      PEEL_CHECK(infer_at < 0, "{}: shape {} has more than one -1", op, to_string(requested));
      infer_at = static_cast<int64_t>(i);
    } else {
      PEEL_CHECK(out[i] >= 0, "{}: negative dimension in shape {}", op, to_string(requested));
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    PEEL_CHECK(known != 0 && numel % known == 0, "{}: cannot reshape {} into {}", op, to_string(from),
               to_string(requested));
    out[static_cast<size_t>(infer_at)] = numel / known;
  }
  PEEL_CHECK(numel_of(out) == numel, "{}: cannot reshape {} ({} elements) into {} ({} elements)", op, to_string(from),
             numel, to_string(requested), numel_of(out));
  return out;
}

// Strides that view (shape, strides) as `target` without copying, or an empty vector when the
// memory layout does not allow it (the algorithm of NumPy's _attempt_nocopy_reshape).
Strides view_strides(const Shape& shape, const Strides& strides, const Shape& target) {
  Shape old_shape;
  Strides old_strides;
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != 1) old_shape.push_back(shape[i]), old_strides.push_back(strides[i]);
  Strides out(target.size(), 0);
  size_t oi = 0, oj = 1, ni = 0, nj = 1;
  const size_t old_n = old_shape.size(), new_n = target.size();
  while (ni < new_n && oi < old_n) {
    int64_t np = target[ni], op = old_shape[oi];
    while (np != op) {
      if (np < op)
        np *= target[nj++];
      else
        op *= old_shape[oj++];
    }
    for (size_t k = oi; k + 1 < oj; ++k)
      if (old_strides[k] != old_shape[k + 1] * old_strides[k + 1]) return {};
    out[nj - 1] = old_strides[oj - 1];
    for (size_t k = nj - 1; k > ni; --k) out[k - 1] = out[k] * target[k];
    ni = nj++;
    oi = oj++;
  }
  int64_t last = ni > 0 ? out[ni - 1] : 1;
  for (size_t k = ni; k < new_n; ++k) out[k] = last;  // trailing ones
  (void)last;
  return out;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  PEEL_CHECK(defined(), "view: tensor is undefined");
  Shape target = infer_shape(shape, numel(), shape_, "view");
  if (numel() == 0) return Tensor(storage_, target, contiguous_strides(target), offset_);
  Strides s = view_strides(shape_, strides_, target);
  PEEL_CHECK(!s.empty() || target.empty(),
             "view: a tensor of shape {} with strides {} cannot be viewed as {} without a copy; use reshape",
             peel::to_string(shape_), peel::to_string(strides_), peel::to_string(target));
  return Tensor(storage_, target, s, offset_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  PEEL_CHECK(defined(), "reshape: tensor is undefined");
  Shape target = infer_shape(shape, numel(), shape_, "reshape");
  if (numel() == 0) return Tensor(storage_, target, contiguous_strides(target), offset_);
  Strides s = view_strides(shape_, strides_, target);
  if (!s.empty() || target.empty()) return Tensor(storage_, target, s, offset_);
  return contiguous().view(target);
}

Tensor Tensor::flatten(int64_t start_axis, int64_t end_axis) const {
  if (dim() == 0) return reshape({1});
  const int64_t a = normalize_axis(start_axis, dim(), "flatten");
  const int64_t b = normalize_axis(end_axis, dim(), "flatten");
  PEEL_CHECK(a <= b, "flatten: start axis {} is after end axis {}", start_axis, end_axis);
  Shape target(shape_.begin(), shape_.begin() + a);
  int64_t merged = 1;
  for (int64_t i = a; i <= b; ++i) merged *= shape_[static_cast<size_t>(i)];
  target.push_back(merged);
  target.insert(target.end(), shape_.begin() + b + 1, shape_.end());
  return reshape(target);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  PEEL_CHECK(static_cast<int64_t>(order.size()) == dim(), "permute: order [{}] has {} axes but the tensor has {}",
             fmt::join(order, ", "), order.size(), dim());
  Shape shape(order.size());
  Strides strides(order.size());
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t a = normalize_axis(order[i], dim(), "permute");
    PEEL_CHECK(!seen[static_cast<size_t>(a)], "permute: axis {} repeated in [{}]", a, fmt::join(order, ", "));
    seen[static_cast<size_t>(a)] = true;
    shape[i] = shape_[static_cast<size_t>(a)];
    strides[i] = strides_[static_cast<size_t>(a)];
  }
  return Tensor(storage_, shape, strides, offset_);
}

Tensor Tensor::transpose(int64_t axis_a, int64_t axis_b) const {
  const int64_t a = normalize_axis(axis_a, dim(), "transpose");
  const int64_t b = normalize_axis(axis_b, dim(), "transpose");
  std::vector<int64_t> order(static_cast<size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<size_t>(a)], order[static_cast<size_t>(b)]);
  return permute(order);
}

Tensor Tensor::t() const {
  PEEL_CHECK(dim() == 2, "t: needs a 2-d tensor, got shape {}", peel::to_string(shape_));
  return transpose(0, 1);
}

Tensor Tensor::slice(int64_t axis, int64_t start, int64_t end, int64_t step) const {
  const int64_t a = normalize_axis(axis, dim(), "slice");
  const int64_t n = shape_[static_cast<size_t>(a)];
  PEEL_CHECK(step > 0, "slice: step must be positive, got {}", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = shape_;
  Strides strides = strides_;
  shape[static_cast<size_t>(a)] = (end - start + step - 1) / step;
  strides[static_cast<size_t>(a)] *= step;
  return Tensor(storage_, shape, strides, offset_ + start * strides_[static_cast<size_t>(a)]);
}

Tensor Tensor::select(int64_t axis, int64_t index) const {
  const int64_t a = normalize_axis(axis, dim(), "select");
  const int64_t n = shape_[static_cast<size_t>(a)];
  PEEL_CHECK(index >= -n && index < n, "select: index {} is out of range for axis {} of size {} (shape {})", index, a,
             n, peel::to_string(shape_));
  if (index < 0) index += n;
  Shape shape = shape_;
  Strides strides = strides_;
  shape.erase(shape.begin() + a);
  strides.erase(strides.begin() + a);
  return Tensor(storage_, shape, strides, offset_ + index * strides_[static_cast<size_t>(a)]);
}

Tensor Tensor::expand(const Shape& shape) const {
  PEEL_CHECK(shape.size() >= shape_.size(), "expand: cannot expand shape {} to fewer dimensions {}",
             peel::to_string(shape_), peel::to_string(shape));
  Shape target = shape;
  const size_t lead = shape.size() - shape_.size();
  for (size_t i = 0; i < shape_.size(); ++i)
    if (target[lead + i] == -1) target[lead + i] = shape_[i];
  PEEL_CHECK(broadcast_shapes(shape_, target, "expand") == target, "expand: cannot expand shape {} to {}",
             peel::to_string(shape_), peel::to_string(shape));
  return Tensor(storage_, target, broadcast_strides(shape_, strides_, target), offset_);
}

Tensor Tensor::unsqueeze(int64_t axis) const {
  const int64_t a = normalize_axis(axis, dim() + 1, "unsqueeze");
  Shape shape = shape_;
  Strides strides = strides_;
  const int64_t s = a < dim() ? strides_[static_cast<size_t>(a)] * shape_[static_cast<size_t>(a)] : 1;
  shape.insert(shape.begin() + a, 1);
  strides.insert(strides.begin() + a, s);
  return Tensor(storage_, shape, strides, offset_);
}

Tensor Tensor::squeeze(int64_t axis) const {
  const int64_t a = normalize_axis(axis, dim(), "squeeze");
  PEEL_CHECK(shape_[static_cast<size_t>(a)] == 1, "squeeze: axis {} has size {} (shape {}), not 1", a,
             shape_[static_cast<size_t>(a)], peel::to_string(shape_));
  Shape shape = shape_;
  Strides strides = strides_;
  shape.erase(shape.begin() + a);
  strides.erase(strides.begin() + a);
  return Tensor(storage_, shape, strides, offset_);
}

// ---- Element access --------------------------------------------------------------------------

int64_t Tensor::element_offset(std::initializer_list<int64_t> index, const char* op) const {
  PEEL_CHECK(defined(), "{}: tensor is undefined", op);
  PEEL_CHECK(static_cast<int64_t>(index.size()) == dim(), "{}: index of {} values for a tensor of shape {}", op,
             index.size(), peel::to_string(shape_));
  int64_t off = offset_;
  size_t i = 0;
  for (int64_t v : index) {
    PEEL_CHECK(v >= 0 && v < shape_[i], "{}: index {} is out of range for axis {} of size {} (shape {})", op, v, i,
               shape_[i], peel::to_string(shape_));
    off += v * strides_[i];
    ++i;
  }
  return off;
}

float Tensor::item() const {
  PEEL_CHECK(defined(), "item: tensor is undefined");
  PEEL_CHECK(numel() == 1, "item: needs a tensor with one element, got shape {}", peel::to_string(shape_));
  return storage_->data()[offset_];
}

float Tensor::at(std::initializer_list<int64_t> index) const { return storage_->data()[element_offset(index, "at")]; }

void Tensor::set(std::initializer_list<int64_t> index, float value) {
  storage_->data()[element_offset(index, "set")] = value;
}

std::vector<float> Tensor::to_vector() const {
  Tensor c = contiguous();
  return std::vector<float>(c.data(), c.data() + c.numel());
}

// ---- In-place updates ------------------------------------------------------------------------

Tensor& Tensor::fill_(float value) {
  PEEL_CHECK(defined(), "fill_: tensor is undefined");
  fill_into(*this, value);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& source) {
  PEEL_CHECK(defined() && source.defined(), "copy_: tensor is undefined");
  copy_into(*this, source);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, float alpha) {
  PEEL_CHECK(defined() && other.defined(), "add_: tensor is undefined");
  axpy_into(*this, alpha, other);
  return *this;
}

Tensor& Tensor::mul_(float factor) {
  PEEL_CHECK(defined(), "mul_: tensor is undefined");
  scale_into(*this, factor);
  return *this;
}

}  // namespace peel
