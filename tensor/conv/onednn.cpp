// Convolution through oneDNN primitives.
//
// Activations (src, dst and their gradients) are described as nhwc and wrapped directly over
// peel's channels-last buffers, so no activation is ever reordered; an input in another layout is
// first copied to channels-last. Weights stay (O,C,KH,KW) in peel: each primitive is created with
// format_tag::any for its weights, and the weights are reordered into the chosen layout on every
// call (they are small), or, for the weight gradient, reordered back to oihw.
//
// Creating a primitive takes far longer than running it on small_cnn's shapes, so primitives
// (and their weight reorders) are created once per problem and direction and kept in a
// mutex-guarded map. The thread count is part of the key, since oneDNN sizes its work split when
// it creates a primitive. Scratchpads are user-managed and come from peel's caching allocator,
// so concurrent calls never share one.
#include <array>
#include <atomic>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "tensor/conv/backends.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel::conv_detail {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
constexpr auto f32 = dnnl::memory::data_type::f32;

// The forward comes with or without a bias and with or without the ReLU epilogue (a post-op).
enum class Direction { kForward, kForwardBias, kForwardRelu, kForwardBiasRelu, kBackwardData, kBackwardWeights };
bool is_forward(Direction d) { return d != Direction::kBackwardData && d != Direction::kBackwardWeights; }
bool has_bias(Direction d) { return d == Direction::kForwardBias || d == Direction::kForwardBiasRelu; }
bool has_relu(Direction d) { return d == Direction::kForwardRelu || d == Direction::kForwardBiasRelu; }

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Cached {
  dnnl::primitive primitive;
  memory::desc weights;  // the layout the primitive uses for weights (or their gradient)
  memory::desc scratchpad;
  bool reorder_weights = false;
  dnnl::reorder reorder;  // oihw -> weights (forward, backward-data) or weights -> oihw
};

auto key_of(const ConvProblem& p, Direction d) {
  const Conv2dGeometry& g = p.g;
  return int64_key(d, num_threads(), p.N, p.C, p.H, p.W, p.O, p.KH, p.KW, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                   g.dilation_h, g.dilation_w);
}

std::atomic<int64_t> g_created{0};

struct Descs {
  memory::desc src, weights_any, weights_user, bias, dst;
  memory::dims strides, dilates, pad_l, pad_r;
};

Descs descs_of(const ConvProblem& p) {
  const Conv2dGeometry& g = p.g;
  Descs d;
  d.src = memory::desc({p.N, p.C, p.H, p.W}, f32, tag::nhwc);
  d.dst = memory::desc({p.N, p.O, p.OH, p.OW}, f32, tag::nhwc);
  d.weights_any = memory::desc({p.O, p.C, p.KH, p.KW}, f32, tag::any);
  d.weights_user = memory::desc({p.O, p.C, p.KH, p.KW}, f32, tag::oihw);
  d.bias = memory::desc({p.O}, f32, tag::x);
  d.strides = {g.stride_h, g.stride_w};
  d.dilates = {g.dilation_h - 1, g.dilation_w - 1};  // oneDNN counts dilation from 0
  d.pad_l = {g.pad_h, g.pad_w};
  // oneDNN checks (H + pad_l + pad_r - extent) / stride + 1 == OH with floor division, exactly
  // as conv2d_output_shape computes it, so symmetric padding is always accepted.
  d.pad_r = {g.pad_h, g.pad_w};
  return d;
}

dnnl::primitive_attr user_scratchpad(bool relu = false) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

dnnl::convolution_forward::primitive_desc forward_pd(const ConvProblem& p, bool with_bias, bool relu = false) {
  const Descs d = descs_of(p);
  using F = dnnl::convolution_forward;
  const F::desc desc = with_bias ? F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                           d.src, d.weights_any, d.bias, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r)
                                 : F::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                           d.src, d.weights_any, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r);
  return F::primitive_desc(desc, user_scratchpad(relu), cpu_engine());
}

std::shared_ptr<const Cached> create(const ConvProblem& p, Direction dir) {
  const Descs d = descs_of(p);
  auto c = std::make_shared<Cached>();
  dnnl::engine& eng = cpu_engine();
  if (is_forward(dir)) {
    const auto pd = forward_pd(p, has_bias(dir), has_relu(dir));
    c->primitive = dnnl::convolution_forward(pd);
    c->weights = pd.weights_desc();
    c->scratchpad = pd.scratchpad_desc();
  } else if (dir == Direction::kBackwardData) {
    using B = dnnl::convolution_backward_data;
    const B::desc desc(dnnl::algorithm::convolution_direct, d.src, d.weights_any, d.dst, d.strides, d.dilates, d.pad_l,
                       d.pad_r);
    const B::primitive_desc pd(desc, user_scratchpad(), eng, forward_pd(p, false));
    c->primitive = B(pd);
    c->weights = pd.weights_desc();
    c->scratchpad = pd.scratchpad_desc();
  } else {
    using B = dnnl::convolution_backward_weights;
    const B::desc desc(dnnl::algorithm::convolution_direct, d.src, d.weights_any, d.dst, d.strides, d.dilates, d.pad_l,
                       d.pad_r);
    const B::primitive_desc pd(desc, user_scratchpad(), eng, forward_pd(p, false));
    c->primitive = B(pd);
    c->weights = pd.diff_weights_desc();
    c->scratchpad = pd.scratchpad_desc();
  }
  c->reorder_weights = c->weights != d.weights_user;
  if (c->reorder_weights) {
    if (dir == Direction::kBackwardWeights)
      c->reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, c->weights, eng, d.weights_user));
    else
      c->reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, d.weights_user, eng, c->weights));
  }
  ++g_created;
  return c;
}

std::shared_ptr<const Cached> lookup(const ConvProblem& p, Direction dir) {
  static std::mutex mutex;
  static std::map<decltype(key_of(p, dir)), std::shared_ptr<const Cached>> cache;
  const auto key = key_of(p, dir);
  std::lock_guard lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  try {
    auto c = create(p, dir);
    cache.emplace(key, c);
    return c;
  } catch (const dnnl::error& e) {
    PEEL_FAIL(
        "conv onednn: cannot create a primitive for input {}, weights {}, stride ({}, {}), padding ({}, {}), "
        "dilation ({}, {}): {}",
        to_string(p.x_shape()), to_string(p.w_shape()), p.g.stride_h, p.g.stride_w, p.g.pad_h, p.g.pad_w,
        p.g.dilation_h, p.g.dilation_w, e.what());
  }
}

// A float buffer of at least `bytes` from peel's caching allocator (undefined when bytes is 0).
Tensor buffer(size_t bytes) {
  if (bytes == 0) return Tensor();
  return Tensor::empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))});
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

void run(const Cached& c, std::unordered_map<int, memory>& args) {
  Tensor scratch = buffer(c.scratchpad.get_size());
  if (scratch.defined()) args.emplace(DNNL_ARG_SCRATCHPAD, memory(c.scratchpad, cpu_engine(), scratch.data()));
  dnnl::stream& s = thread_stream();
  c.primitive.execute(s, args);
  s.wait();
}

// The weights in the layout the primitive wants: the caller's memory, or a reordered copy kept
// alive by `holder`.
memory weights_for(const Cached& c, const Tensor& w, const ConvProblem& p, Tensor& holder) {
  memory user(descs_of(p).weights_user, cpu_engine(), const_cast<float*>(w.data()));
  if (!c.reorder_weights) return user;
  holder = buffer(c.weights.get_size());
  memory packed(c.weights, cpu_engine(), holder.data());
  dnnl::stream& s = thread_stream();
  c.reorder.execute(s, user, packed);
  s.wait();
  return packed;
}

}  // namespace

int64_t onednn_primitives_created() { return g_created.load(); }

Tensor onednn_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu) {
  const Direction dir = bias.defined() ? (relu ? Direction::kForwardBiasRelu : Direction::kForwardBias)
                                       : (relu ? Direction::kForwardRelu : Direction::kForward);
  const std::shared_ptr<const Cached> cached = lookup(p, dir);
  const Cached& c = *cached;
  const Descs d = descs_of(p);
  const Tensor xl = x.channels_last();
  Tensor y = Tensor::empty_channels_last(p.y_shape());
  Tensor packed_weights;
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(d.src, cpu_engine(), const_cast<float*>(xl.data()))},
                                       {DNNL_ARG_WEIGHTS, weights_for(c, w, p, packed_weights)},
                                       {DNNL_ARG_DST, memory(d.dst, cpu_engine(), y.data())}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory(d.bias, cpu_engine(), const_cast<float*>(bias.data())));
  run(c, args);
  return y;
}

Tensor onednn_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p) {
  const std::shared_ptr<const Cached> cached = lookup(p, Direction::kBackwardData);
  const Cached& c = *cached;
  const Descs d = descs_of(p);
  const Tensor gl = gy.channels_last();
  Tensor dx = Tensor::empty_channels_last(p.x_shape());
  Tensor packed_weights;
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, memory(d.dst, cpu_engine(), const_cast<float*>(gl.data()))},
                                       {DNNL_ARG_WEIGHTS, weights_for(c, w, p, packed_weights)},
                                       {DNNL_ARG_DIFF_SRC, memory(d.src, cpu_engine(), dx.data())}};
  run(c, args);
  return dx;
}

Tensor onednn_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p) {
  const std::shared_ptr<const Cached> cached = lookup(p, Direction::kBackwardWeights);
  const Cached& c = *cached;
  const Descs d = descs_of(p);
  const Tensor gl = gy.channels_last();
  const Tensor xl = x.channels_last();
  Tensor dw = Tensor::empty(p.w_shape());
  Tensor packed = c.reorder_weights ? buffer(c.weights.get_size()) : dw;
  memory diff_weights(c.weights, cpu_engine(), packed.data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(d.src, cpu_engine(), const_cast<float*>(xl.data()))},
                                       {DNNL_ARG_DIFF_DST, memory(d.dst, cpu_engine(), const_cast<float*>(gl.data()))},
                                       {DNNL_ARG_DIFF_WEIGHTS, diff_weights}};
  run(c, args);
  if (c.reorder_weights) {
    memory user(d.weights_user, cpu_engine(), dw.data());
    dnnl::stream& s = thread_stream();
    c.reorder.execute(s, diff_weights, user);
    s.wait();
  }
  return dw;
}

}  // namespace peel::conv_detail
