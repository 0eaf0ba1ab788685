// Every convolution backend against the double-precision reference: forward (with and without
// bias, and with the ReLU epilogue), backward-data, backward-weights and the bias gradient, over shapes that exercise
// stride 2, padding 0/1/2, dilation 2, odd sizes, 1x1 and 3x3 (and non-square) kernels, channel
// counts that are not multiples of 16, and contiguous, channels-last and gapped input layouts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "tensor/conv/backends.h"
#include "tensor/conv/conv.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/simd/kernels.h"
#include "tensor/storage.h"
#include "tensor/threads.h"
#include "tests/support/error_matchers.h"
#include "tests/support/relative_error.h"

using namespace peel;
using conv_detail::ConvProblem;
using peel::testing::relative_error;
using peel::testing::ThrowsErrorWith;

namespace {

struct Case {
  int64_t N, C, H, W, O, KH, KW;
  Conv2dGeometry g;
};

std::string describe(const Case& c) {
  return fmt::format("x [{}, {}, {}, {}], w [{}, {}, {}, {}], stride ({}, {}), pad ({}, {}), dilation ({}, {})", c.N,
                     c.C, c.H, c.W, c.O, c.C, c.KH, c.KW, c.g.stride_h, c.g.stride_w, c.g.pad_h, c.g.pad_w,
                     c.g.dilation_h, c.g.dilation_w);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {2, 3, 9, 11, 5, 3, 3, Conv2dGeometry::square(1, 1)},       // odd sizes, tiny channel counts
      {2, 17, 8, 8, 20, 3, 3, Conv2dGeometry::square(2, 1)},      // stride 2
      {1, 5, 10, 7, 33, 1, 1, Conv2dGeometry::square(1, 0)},      // 1x1, batch smaller than threads
      {3, 4, 12, 13, 7, 3, 3, Conv2dGeometry::square(1, 2, 2)},   // dilation 2
      {2, 16, 7, 7, 32, 3, 3, Conv2dGeometry::square(1, 1)},      // whole channel blocks
      {2, 6, 11, 9, 9, 1, 1, Conv2dGeometry::square(2, 0)},       // 1x1 stride 2: skipped pixels
      {2, 7, 10, 9, 18, 3, 2, Conv2dGeometry{2, 1, 1, 0, 1, 2}},  // non-square everything
      {5, 1, 14, 14, 16, 3, 3, Conv2dGeometry::square(1, 1)},     // first layer of a CNN
      {3, 1, 11, 9, 40, 5, 3, Conv2dGeometry{2, 1, 2, 1, 1, 2}},  // one channel, strided, dilated, odd
      {2, 19, 9, 10, 3, 3, 3, Conv2dGeometry::square(2, 0)},      // stride 2, no padding, odd
      {2, 8, 5, 40, 48, 3, 3, Conv2dGeometry::square(1, 1)},      // wide rows: several column tiles
      {3, 40, 4, 4, 70, 3, 3, Conv2dGeometry::square(1, 1)},      // small images, many channels
      {2, 9, 13, 6, 21, 5, 5, Conv2dGeometry{3, 2, 2, 1, 1, 1}},  // 5x5, stride 3 by 2
      {2, 24, 6, 5, 100, 3, 3, Conv2dGeometry::square(1, 1)},     // micro-batch, many channel groups
  };
  return all;
}

enum class Layout { kContiguous, kChannelsLast, kGapped, kChannelsLastGapped };

// A random (N,C,H,W) tensor in the given memory layout.
Tensor make_input(const Shape& shape, Layout layout, Generator& gen) {
  switch (layout) {
    case Layout::kContiguous:
      return normal(shape, 0.f, 1.f, gen);
    case Layout::kChannelsLast:
      return normal(shape, 0.f, 1.f, gen).channels_last();
    case Layout::kGapped: {
      // A view into a wider tensor: no dense layout at all.
      Tensor wide = normal({shape[0], shape[1], shape[2], shape[3] + 3}, 0.f, 1.f, gen);
      return wide.slice(3, 2, shape[3] + 2);
    }
    case Layout::kChannelsLastGapped: {
      // Some channels of a channels-last tensor: channels adjacent, pixels further apart.
      Tensor wide = normal({shape[0], shape[1] + 5, shape[2], shape[3]}, 0.f, 1.f, gen).channels_last();
      return wide.slice(1, 2, shape[1] + 2);
    }
  }
  return {};
}

constexpr double kTolerance = 1e-4;

// One backend as the tests see it: the public dispatcher, or the direct kernels of one ISA in one
// tiling mode.
struct Backend {
  std::string name;
  ConvBackend backend;
  simd::Isa isa = simd::Isa::kBaseline;  // only for the direct backend
  conv_detail::DirectMode mode = conv_detail::DirectMode::kAuto;

  Tensor forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeometry& g,
                 ConvEpilogue epilogue = ConvEpilogue::kNone) const {
    if (backend != ConvBackend::kDirect) return conv2d_forward(x, w, b, g, backend, epilogue);
    return conv_detail::direct_forward(x, w, b, conv_detail::make_problem(x.shape(), w.shape(), g), isa, mode,
                                       epilogue == ConvEpilogue::kRelu);
  }
  Tensor backward_data(const Tensor& gy, const Tensor& w, const Shape& xs, const Conv2dGeometry& g) const {
    if (backend != ConvBackend::kDirect) return conv2d_backward_data(gy, w, xs, g, backend);
    return conv_detail::direct_backward_data(gy, w, conv_detail::make_problem(xs, w.shape(), g), isa, mode);
  }
  Tensor backward_weight(const Tensor& gy, const Tensor& x, const Shape& ws, const Conv2dGeometry& g) const {
    if (backend != ConvBackend::kDirect) return conv2d_backward_weight(gy, x, ws, g, backend);
    return conv_detail::direct_backward_weight(gy, x, conv_detail::make_problem(x.shape(), ws, g), isa, mode);
  }
};

std::vector<Backend> fast_backends() {
  using conv_detail::DirectMode;
  std::vector<Backend> out = {{"im2col", ConvBackend::kIm2col},
                              {"onednn", ConvBackend::kOneDnn},
                              {"direct-default", ConvBackend::kDirect, conv_detail::direct_isa()}};
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2}) {
    if (!simd::cpu_supports(isa)) continue;
    const std::string name = std::string("direct-") + simd::isa_name(isa);
    out.push_back({name + "-one-row", ConvBackend::kDirect, isa, DirectMode::kOneRowTiles});
    out.push_back({name + "-two-row", ConvBackend::kDirect, isa, DirectMode::kTwoRowTiles});
    out.push_back({name + "-images", ConvBackend::kDirect, isa, DirectMode::kImageTiles});
  }
  return out;
}

class ConvBackends : public ::testing::TestWithParam<Layout> {};

TEST_P(ConvBackends, MatchReference) {
  const Layout layout = GetParam();
  Generator gen(1234 + static_cast<int>(layout));
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Tensor x = make_input({c.N, c.C, c.H, c.W}, layout, gen);
    const Tensor w = normal({c.O, c.C, c.KH, c.KW}, 0.f, 0.5f, gen);
    const Tensor b = normal({c.O}, 0.f, 1.f, gen);
    const Shape y_shape = conv2d_output_shape(x.shape(), w.shape(), c.g);
    const Tensor gy = make_input(y_shape, layout, gen);

    const Tensor y_ref = conv2d_forward(x, w, Tensor(), c.g, ConvBackend::kReference);
    const Tensor yb_ref = conv2d_forward(x, w, b, c.g, ConvBackend::kReference);
    // The ReLU epilogue is the ReLU of the result: the reference's own epilogue is held to it too.
    const Tensor relu_ref = relu(yb_ref);
    const Tensor relu_nobias_ref = relu(y_ref);
    ASSERT_EQ(conv2d_forward(x, w, b, c.g, ConvBackend::kReference, ConvEpilogue::kRelu).to_vector(),
              relu_ref.contiguous().to_vector());
    const Tensor dx_ref = conv2d_backward_data(gy, w, x.shape(), c.g, ConvBackend::kReference);
    const Tensor dw_ref = conv2d_backward_weight(gy, x, w.shape(), c.g, ConvBackend::kReference);

    for (const Backend& be : fast_backends()) {
      SCOPED_TRACE(be.name);
      const Tensor y = be.forward(x, w, Tensor(), c.g);
      EXPECT_TRUE(y.is_channels_last());
      EXPECT_LT(relative_error(y, y_ref), kTolerance) << "forward";
      EXPECT_LT(relative_error(be.forward(x, w, b, c.g), yb_ref), kTolerance) << "forward with bias";
      const Tensor y_relu = be.forward(x, w, b, c.g, ConvEpilogue::kRelu);
      EXPECT_LT(relative_error(y_relu, relu_ref), kTolerance) << "forward with bias and ReLU";
      const std::vector<float> relu_values = y_relu.to_vector();
      EXPECT_EQ(*std::min_element(relu_values.begin(), relu_values.end()), 0.f) << "ReLU applied";
      EXPECT_LT(relative_error(be.forward(x, w, Tensor(), c.g, ConvEpilogue::kRelu), relu_nobias_ref), kTolerance)
          << "forward with ReLU, no bias";
      const Tensor dx = be.backward_data(gy, w, x.shape(), c.g);
      EXPECT_TRUE(dx.is_channels_last());
      EXPECT_LT(relative_error(dx, dx_ref), kTolerance) << "backward-data";
      const Tensor dw = be.backward_weight(gy, x, w.shape(), c.g);
      EXPECT_TRUE(dw.is_contiguous());
      EXPECT_LT(relative_error(dw, dw_ref), kTolerance) << "backward-weights";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ConvBackends,
                         ::testing::Values(Layout::kContiguous, Layout::kChannelsLast, Layout::kGapped,
                                           Layout::kChannelsLastGapped),
                         [](const ::testing::TestParamInfo<Layout>& param_info) {
                           switch (param_info.param) {
                             case Layout::kContiguous:
                               return std::string("Contiguous");
                             case Layout::kChannelsLast:
                               return std::string("ChannelsLast");
                             case Layout::kGapped:
                               return std::string("Gapped");
                             case Layout::kChannelsLastGapped:
                               return std::string("ChannelsLastGapped");
                           }
                           return std::string("?");
                         });

TEST(Conv, ReferenceMatchesHandComputedValues) {
  // x = 1..9 in a 3x3 image, w = the 2x2 kernel [[1, 0], [0, -1]]: y[i][j] = x[i][j] - x[i+1][j+1] = -4.
  const Tensor x = Tensor::arange(9).reshape({1, 1, 3, 3}) + 1.f;
  const Tensor w = Tensor::from_vector({1, 0, 0, -1}, {1, 1, 2, 2});
  const Tensor y = conv2d_forward(x, w, Tensor::from_vector({0.5f}, {1}), Conv2dGeometry{}, ConvBackend::kReference);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{-3.5f, -3.5f, -3.5f, -3.5f}));
  // With padding 1 the corner output sees only x[0][0] through w[1][1]: -1.
  const Tensor yp = conv2d_forward(x, w, Tensor(), Conv2dGeometry::square(1, 1), ConvBackend::kReference);
  EXPECT_EQ(yp.shape(), (Shape{1, 1, 4, 4}));
  EXPECT_FLOAT_EQ(yp.at({0, 0, 0, 0}), -1.f);
  EXPECT_FLOAT_EQ(yp.at({0, 0, 3, 3}), 9.f);
}

TEST(Conv, BiasGradientSumsOverBatchAndPixels) {
  Generator gen(7);
  for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast, Layout::kGapped, Layout::kChannelsLastGapped}) {
    const Tensor gy = make_input({3, 21, 5, 7}, layout, gen);
    const Tensor db = conv2d_backward_bias(gy);
    ASSERT_EQ(db.shape(), (Shape{21}));
    std::vector<double> expect(21, 0.0);
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t o = 0; o < 21; ++o)
        for (int64_t h = 0; h < 5; ++h)
          for (int64_t w = 0; w < 7; ++w) expect[o] += gy.at({n, o, h, w});
    for (int64_t o = 0; o < 21; ++o) EXPECT_NEAR(db.at({o}), expect[o], 1e-4 * (1 + std::fabs(expect[o])));
  }
}

TEST(Conv, RepeatedCallsGiveIdenticalBits) {
  Generator gen(9);
  const Tensor x = normal({6, 12, 10, 10}, 0.f, 1.f, gen).channels_last();
  const Tensor w = normal({20, 12, 3, 3}, 0.f, 1.f, gen);
  const Tensor gy = normal({6, 20, 10, 10}, 0.f, 1.f, gen).channels_last();
  const Conv2dGeometry g = Conv2dGeometry::square(1, 1);
  for (ConvBackend b : {ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn}) {
    SCOPED_TRACE(conv_backend_name(b));
    EXPECT_EQ(conv2d_forward(x, w, Tensor(), g, b).to_vector(), conv2d_forward(x, w, Tensor(), g, b).to_vector());
    EXPECT_EQ(conv2d_backward_data(gy, w, x.shape(), g, b).to_vector(),
              conv2d_backward_data(gy, w, x.shape(), g, b).to_vector());
    EXPECT_EQ(conv2d_backward_weight(gy, x, w.shape(), g, b).to_vector(),
              conv2d_backward_weight(gy, x, w.shape(), g, b).to_vector());
  }
}

// At one image per thread the direct backend shares the channel groups among the threads instead
// of the images, but sums each thread's run of images in the same order as before: so the result
// is, bit for bit, the sum of the two images' gradients taken one image at a time.
TEST(Conv, MicroBatchWeightGradientIsTheSumOfPerImageGradientsBitForBit) {
  const int threads_before = num_threads();
  set_num_threads(2);
  Generator gen(13);
  for (const bool padded : {true, false}) {
    SCOPED_TRACE(padded ? "padded (packed images)" : "unpadded (images read in place)");
    const Conv2dGeometry g = Conv2dGeometry::square(1, padded ? 1 : 0);
    const Tensor x = normal({2, 64, 7, 7}, 0.f, 1.f, gen).channels_last();
    const Shape ws{128, 64, 3, 3};
    const Tensor gy = normal(conv2d_output_shape(x.shape(), ws, g), 0.f, 1.f, gen).channels_last();
    const std::vector<float> both = conv2d_backward_weight(gy, x, ws, g, ConvBackend::kDirect).to_vector();
    const std::vector<float> first =
        conv2d_backward_weight(gy.slice(0, 0, 1), x.slice(0, 0, 1), ws, g, ConvBackend::kDirect).to_vector();
    const std::vector<float> second =
        conv2d_backward_weight(gy.slice(0, 1, 2), x.slice(0, 1, 2), ws, g, ConvBackend::kDirect).to_vector();
    ASSERT_EQ(both.size(), first.size());
    int64_t differing = 0;
    for (size_t i = 0; i < both.size(); ++i) differing += both[i] != first[i] + second[i];
    EXPECT_EQ(differing, 0) << "of " << both.size();
  }
  set_num_threads(threads_before);
}

TEST(Conv, RepeatedCallsAllocateNoNewLargeBuffers) {
  Generator gen(11);
  const Tensor x = normal({8, 16, 12, 12}, 0.f, 1.f, gen).channels_last();
  const Tensor w = normal({24, 16, 3, 3}, 0.f, 1.f, gen);
  const Tensor b = normal({24}, 0.f, 1.f, gen);
  const Tensor gy = normal({8, 24, 12, 12}, 0.f, 1.f, gen).channels_last();
  const Conv2dGeometry g = Conv2dGeometry::square(1, 1);
  for (ConvBackend backend : {ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn}) {
    SCOPED_TRACE(conv_backend_name(backend));
    auto step = [&] {  // what a training step asks of one layer; results are dropped each time
      conv2d_forward(x, w, b, g, backend);
      conv2d_backward_data(gy, w, x.shape(), g, backend);
      conv2d_backward_weight(gy, x, w.shape(), g, backend);
    };
    step();
    const int64_t before = memory_stats().system_allocations;
    step();
    step();
    EXPECT_EQ(memory_stats().system_allocations, before);
  }
}

TEST(Conv, OneDnnCreatesEachPrimitiveOnce) {
  Generator gen(3);
  const Tensor x = normal({2, 5, 9, 9}, 0.f, 1.f, gen);
  const Tensor w = normal({6, 5, 3, 3}, 0.f, 1.f, gen);
  const Conv2dGeometry g = Conv2dGeometry::square(1, 1);
  conv2d_forward(x, w, Tensor(), g, ConvBackend::kOneDnn);
  const int64_t created = conv_detail::onednn_primitives_created();
  for (int i = 0; i < 3; ++i) conv2d_forward(x, w, Tensor(), g, ConvBackend::kOneDnn);
  EXPECT_EQ(conv_detail::onednn_primitives_created(), created);
  conv2d_forward(x, w, Tensor(), Conv2dGeometry::square(2, 1), ConvBackend::kOneDnn);  // a new geometry
  EXPECT_EQ(conv_detail::onednn_primitives_created(), created + 1);
}

TEST(Conv, MismatchedShapesThrowNamingThem) {
  const Tensor x = Tensor::zeros({2, 3, 8, 8});
  const Tensor w = Tensor::zeros({4, 5, 3, 3});
  EXPECT_THAT([&] { conv2d_forward(x, w, Tensor(), Conv2dGeometry{}); },
              ThrowsErrorWith("[2, 3, 8, 8]", "[4, 5, 3, 3]"));
  const Tensor w_ok = Tensor::zeros({4, 3, 3, 3});
  // The grad_y given, and the output the input and weights give.
  EXPECT_THAT(
      [&] {
        conv2d_backward_data(Tensor::zeros({2, 4, 5, 5}), w_ok, x.shape(), Conv2dGeometry{});
      },
      ThrowsErrorWith("[2, 4, 5, 5]", "[2, 4, 6, 6]"));
  EXPECT_THAT([&] { conv2d_forward(x, w_ok, Tensor::zeros({3}), Conv2dGeometry{}); },
              ThrowsErrorWith("bias has shape [3]", "expected (4)"));
  EXPECT_THAT(
      [&] {
        conv2d_forward(x, Tensor::zeros({4, 3, 9, 9}), Tensor(), Conv2dGeometry{});
      },
      ThrowsErrorWith("kernel 9x9", "does not fit input"));
}

TEST(Conv, BackendNames) {
  for (ConvBackend b : {ConvBackend::kReference, ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn})
    EXPECT_EQ(parse_conv_backend(conv_backend_name(b)), b);
  EXPECT_THAT([] { parse_conv_backend("cudnn"); }, ThrowsErrorWith("cudnn", "reference", "im2col", "direct", "onednn"));
  const ConvBackend before = default_conv_backend();
  set_default_conv_backend(ConvBackend::kIm2col);
  EXPECT_EQ(default_conv_backend(), ConvBackend::kIm2col);
  set_default_conv_backend(before);
}

}  // namespace
