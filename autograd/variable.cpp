#include "autograd/variable.h"

#include <unordered_map>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace peel::ag {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

// A chain of 10,000 ops is 10,000 nested shared_ptr releases if left to the default destructor;
// instead, take ownership of the inputs of each dying node and release them in a loop.
VariableState::~VariableState() {
  std::vector<std::shared_ptr<Node>> pending;
  if (grad_fn && grad_fn.use_count() == 1) pending.push_back(std::move(grad_fn));
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    for (auto& input : node->inputs) {
      if (input.use_count() == 1 && input->grad_fn && input->grad_fn.use_count() == 1)
        pending.push_back(std::move(input->grad_fn));
      input.reset();
    }
  }
}

Variable::Variable(Tensor value, bool requires_grad, std::string name) : state_(std::make_shared<VariableState>()) {
  state_->value = std::move(value);
  state_->requires_grad = requires_grad;
  state_->name = std::move(name);
  state_->handles = 1;
}

Variable& Variable::operator=(const Variable& other) {
  if (this != &other && state_ != other.state_) {
    release();
    state_ = other.state_;
    acquire();
  }
  return *this;
}

Variable& Variable::operator=(Variable&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
  }
  return *this;
}

void Variable::release() noexcept {
  if (!state_) return;
  // A state the graph still refers to, with no handle left: only a backward can reach it, and
  // backward reads its shape, never its value.
  if (--state_->handles == 0 && state_->grad_fn && state_.use_count() > 1) {
    state_->shape = state_->value.shape();
    state_->value = Tensor();
  }
  state_.reset();
}

Variable& Variable::set_requires_grad(bool on) {
  PEEL_CHECK(is_leaf(), "set_requires_grad: '{}' is not a leaf (made by {})", name(), state_->grad_fn->op);
  state_->requires_grad = on;
  return *this;
}

void Variable::zero_grad() {
  if (state_->grad.defined()) state_->grad.zero_();
}

Variable Variable::detach() const { return Variable(state_->value, false, state_->name); }

Variable make_result(Tensor value, std::vector<Variable> inputs, const char* op, BackwardFn backward) {
  Variable out(std::move(value));
  if (!g_grad_enabled) return out;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->needs_grad.resize(inputs.size(), false);
  node->slot.resize(inputs.size(), -1);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    node->needs_grad[i] = true;
    node->slot[i] = static_cast<int>(node->inputs.size());
    node->inputs.push_back(inputs[i].state_);
  }
  if (node->inputs.empty()) return out;
  node->backward = std::move(backward);
  out.state_->requires_grad = true;
  out.state_->grad_fn = std::move(node);
  return out;
}

void Variable::backward(const LeafReady& on_leaf_ready) const {
  PEEL_CHECK(defined(), "backward: undefined variable");
  PEEL_CHECK(numel() == 1, "backward: needs a one-element value or an explicit gradient; '{}' has shape {}", name(),
             to_string(shape()));
  backward(Tensor::ones(shape()), on_leaf_ready);
}

void Variable::backward(const Tensor& upstream, const LeafReady& on_leaf_ready) const {
  PEEL_CHECK(defined(), "backward: undefined variable");
  PEEL_CHECK(requires_grad(), "backward: the value does not require a gradient (no input did)");
  PEEL_CHECK(upstream.shape() == shape(), "backward: upstream gradient has shape {}, value has shape {}",
             to_string(upstream.shape()), to_string(shape()));
  NoGradGuard no_grad;  // backward functions compute with tensors; nothing here is recorded

  // Topological order by iterative depth-first search (post-order), from the output.
  std::vector<VariableState*> order;
  std::unordered_map<VariableState*, int> state_of;  // 0 unseen, 1 on stack, 2 done
  std::vector<std::pair<VariableState*, size_t>> stack{{state_.get(), 0}};
  while (!stack.empty()) {
    auto& [v, next] = stack.back();
    const Node* node = v->grad_fn.get();
    if (next == 0) state_of[v] = 1;
    if (node && next < node->inputs.size()) {
      VariableState* child = node->inputs[next++].get();
      if (state_of[child] == 0) stack.emplace_back(child, 0);
      continue;
    }
    state_of[v] = 2;
    order.push_back(v);
    stack.pop_back();
  }

  // Walk from the output back to the leaves, passing gradients along.
  std::unordered_map<VariableState*, Tensor> pending;
  pending[state_.get()] = upstream;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    VariableState* v = *it;
    auto found = pending.find(v);
    if (found == pending.end()) continue;  // no path carries a gradient here
    Tensor g = std::move(found->second);
    pending.erase(found);
    if (!v->grad_fn) {  // a leaf: accumulate into .grad
      if (!v->requires_grad) continue;
      if (!v->grad.defined()) {
        v->grad = Tensor::zeros(v->value.shape());
      }
      v->grad.add_(g);
      if (on_leaf_ready) on_leaf_ready(*v);  // every path into v has been summed into `pending` before now
      continue;
    }
    Node& node = *v->grad_fn;
    PEEL_CHECK(node.backward, "backward: the graph through '{}' was already freed by an earlier backward", node.op);
    Grads grads = node.backward(g, node.needs_grad);
    node.backward = nullptr;  // frees the tensors the op saved
    PEEL_CHECK(grads.size() == node.needs_grad.size(), "backward of {}: returned {} gradients for {} inputs", node.op,
               grads.size(), node.needs_grad.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (node.slot[i] < 0 || !grads[i].defined()) continue;
      VariableState* input = node.inputs[static_cast<size_t>(node.slot[i])].get();
      const Shape& input_shape = input->value.defined() ? input->value.shape() : input->shape;
      PEEL_CHECK(grads[i].shape() == input_shape, "backward of {}: gradient {} has shape {}, input has {}", node.op, i,
                 to_string(grads[i].shape()), to_string(input_shape));
      auto [slot, inserted] = pending.try_emplace(input, grads[i]);
      if (!inserted) slot->second = add(slot->second, grads[i]);  // used twice: gradients add up
    }
  }
  // Free the consumed graph: intermediate values lose their links to the ops that made them.
  // `order` lists every value before the values made from it, so a value is still held by its
  // consumers (not yet cleared) when its own links are cut.
  for (VariableState* v : order)
    if (v->grad_fn) v->grad_fn->inputs.clear();
}

}  // namespace peel::ag
