// Variable: a tensor that remembers how it was made, for reverse-mode automatic differentiation.
//
// The graph is built as the program runs (define-by-run). Every op that takes Variables computes
// its value with tensor/ and, when some input requires a gradient, records a Node holding the
// inputs and a backward function: given dL/d(output), it returns dL/d(input) for each input.
// backward() walks the graph in reverse topological order without recursion, accumulates the
// gradients of leaves into .grad(), and frees the graph it consumed. It can tell its caller as soon
// as each leaf's gradient is complete (LeafReady), so that a data-parallel trainer starts summing
// that gradient over processes while backward goes on with the layers below.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace peel::ag {

struct Node;
struct VariableState;

// Called by backward once for each leaf that requires a gradient and that the backward reaches,
// right after the sum of every path's contribution has been added into its .grad(): the walk
// reaches a value only after all the values made from it, so nothing more arrives for that leaf in
// this backward. The calls come in the walk's order (reverse topological: the parameters of the
// last layers first), which is the same for the same graph. The hook must not change the leaf's
// gradient; if it throws, backward stops there and the graph is left half consumed.
using LeafReady = std::function<void(const VariableState& leaf)>;

// The shared state behind a Variable; copies of a Variable refer to the same state.
//
// The graph refers to the states of its values (Node::inputs) but holds no handle to them. When
// the last Variable handle of a value an op made goes, nothing can read that value any more (each
// op's backward captured the tensors it needs), so the value is released at once rather than when
// the next backward frees the graph: as in PyTorch, an output that no backward saved (a residual
// sum, a batch norm's output without ReLU) does not stay alive until the end of the step.
struct VariableState {
  Tensor value;  // undefined once released (a non-leaf with no handle left)
  Shape shape;   // the value's shape, kept for backward's checks after the value is released
  Tensor grad;   // accumulated gradient (leaves only); undefined until a backward reaches it
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // the op that made this value; null for leaves
  std::string name;               // for error messages and debugging
  int handles = 0;                // Variables that refer to this state
  ~VariableState();               // tears down long chains without recursion
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor value, bool requires_grad = false, std::string name = {});
  // Copies count as handles of the state (VariableState); moves carry the handle along.
  Variable(const Variable& other) : state_(other.state_) { acquire(); }
  Variable(Variable&& other) noexcept : state_(std::move(other.state_)) {}
  Variable& operator=(const Variable& other);
  Variable& operator=(Variable&& other) noexcept;
  ~Variable() { release(); }

  bool defined() const { return state_ != nullptr; }
  const Tensor& value() const { return state_->value; }
  Tensor& value() { return state_->value; }  // in-place updates (optimizers) are not recorded
  const Shape& shape() const { return state_->value.shape(); }
  int64_t dim() const { return state_->value.dim(); }
  int64_t size(int64_t axis) const { return state_->value.size(axis); }
  int64_t numel() const { return state_->value.numel(); }
  float item() const { return state_->value.item(); }

  bool requires_grad() const { return state_ && state_->requires_grad; }
  Variable& set_requires_grad(bool on);
  bool is_leaf() const { return state_->grad_fn == nullptr; }
  const Tensor& grad() const { return state_->grad; }
  Tensor& grad() { return state_->grad; }
  void zero_grad();  // fills an existing gradient with zeros (keeps the buffer for reuse)
  const std::string& name() const { return state_->name; }
  const std::shared_ptr<Node>& grad_fn() const { return state_->grad_fn; }

  // The same value, cut from the graph.
  Variable detach() const;

  // Back-propagates from this value. Without an argument the value must have one element and the
  // upstream gradient is 1. The graph is freed afterwards (a second backward through it throws).
  // `on_leaf_ready`, when not empty, is told as each leaf's gradient becomes complete (LeafReady).
  void backward(const LeafReady& on_leaf_ready = {}) const;
  void backward(const Tensor& upstream, const LeafReady& on_leaf_ready = {}) const;

  VariableState* state() const { return state_.get(); }

 private:
  void acquire() {
    if (state_) ++state_->handles;
  }
  void release() noexcept;  // drops this handle (and the value, when it was a non-leaf's last)
  std::shared_ptr<VariableState> state_;
  friend Variable make_result(Tensor, std::vector<Variable>, const char*,
                              std::function<std::vector<Tensor>(const Tensor&, const std::vector<bool>&)>);
};

// The gradients an op's backward returns, one per input (undefined = no gradient for it).
using Grads = std::vector<Tensor>;
// Backward function: (dL/d output, which inputs need a gradient) -> one gradient per input.
using BackwardFn = std::function<Grads(const Tensor& grad_output, const std::vector<bool>& needs_grad)>;

struct Node {
  const char* op;                                      // e.g. "matmul"
  std::vector<std::shared_ptr<VariableState>> inputs;  // only inputs that require a gradient
  std::vector<bool> needs_grad;                        // per original input position
  std::vector<int> slot;                               // per original input: index into inputs or -1
  BackwardFn backward;                                 // empty once consumed
};

// Wraps the result of an op. Records a Node when gradients are enabled and some input requires
// one; otherwise returns a plain value. This is the only way ops enter the graph.
Variable make_result(Tensor value, std::vector<Variable> inputs, const char* op, BackwardFn backward);

// While alive, ops record nothing (evaluation, optimizer updates, metrics).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

}  // namespace peel::ag
