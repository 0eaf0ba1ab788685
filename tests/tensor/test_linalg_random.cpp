// matmul against a naive loop; eigh, SVD and pseudo-inverse identities; seeded randomness.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/error.h"
#include "tensor/linalg.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;

namespace {
Tensor naive_matmul(const Tensor& a, const Tensor& b) {
  Tensor c = Tensor::zeros({a.size(0), b.size(1)});
  for (int64_t i = 0; i < a.size(0); ++i)
    for (int64_t j = 0; j < b.size(1); ++j) {
      double s = 0;
      for (int64_t k = 0; k < a.size(1); ++k) s += static_cast<double>(a.at({i, k})) * b.at({k, j});
      c.set({i, j}, static_cast<float>(s));
    }
  return c;
}
}  // namespace

TEST(Linalg, MatmulMatchesNaiveLoopWithTransposedViews) {
  Generator g(1);
  Tensor a = normal({37, 23}, 0, 1, g), b = normal({23, 41}, 0, 1, g);
  EXPECT_LT(max_relative_error(matmul(a, b), naive_matmul(a, b), 1.f), 1e-5f);
  Tensor at = normal({23, 37}, 0, 1, g), bt = normal({41, 23}, 0, 1, g);
  EXPECT_LT(max_relative_error(matmul(at.t(), bt.t()), naive_matmul(at.t().contiguous(), bt.t().contiguous()), 1.f),
            1e-5f);
}

TEST(Linalg, BatchedMatmulBroadcastsBatchAxes) {
  Generator g(2);
  Tensor a = normal({3, 4, 5}, 0, 1, g), b = normal({5, 2}, 0, 1, g);
  Tensor c = matmul(a, b);
  ASSERT_EQ(c.shape(), (Shape{3, 4, 2}));
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_LT(max_relative_error(c.select(0, i).contiguous(), naive_matmul(a.select(0, i).contiguous(), b), 1.f),
              1e-5f);
}

TEST(Linalg, MatmulShapeErrorNamesShapes) {
  EXPECT_THAT([] { matmul(Tensor::ones({2, 3}), Tensor::ones({4, 5})); }, ThrowsErrorWith("[2, 3] @ [4, 5]"));
}

TEST(Linalg, EighReconstructsASymmetricMatrix) {
  MatrixD s = MatrixD::zeros(3, 3);
  const double v[3][3] = {{4, 1, 2}, {1, 3, 0}, {2, 0, 5}};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) s(i, j) = v[i][j];
  Eigh e = eigh(s);
  EXPECT_LT(e.values[0], e.values[1]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double r = 0;
      for (int k = 0; k < 3; ++k) r += e.vectors(i, k) * e.values[static_cast<size_t>(k)] * e.vectors(j, k);
      EXPECT_NEAR(r, v[i][j], 1e-10);
    }
}

TEST(Linalg, SvdOfARectangularMatrix) {
  MatrixD a = MatrixD::zeros(4, 2);
  const double v[4][2] = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) a(i, j) = v[i][j];
  Svd s = svd(a);
  EXPECT_NEAR(s.singular_values[0], 14.2690954, 1e-6);
  EXPECT_NEAR(s.singular_values[1], 0.62682823, 1e-6);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) {
      double r = 0;
      for (int k = 0; k < 2; ++k) r += s.u(i, k) * s.singular_values[static_cast<size_t>(k)] * s.vt(k, j);
      EXPECT_NEAR(r, v[i][j], 1e-10);
    }
  EXPECT_EQ(numerical_rank(s.singular_values, 4, 2), 2);
  std::vector<double> values_only = singular_values(a);
  EXPECT_NEAR(values_only[0], s.singular_values[0], 1e-12);
  EXPECT_NEAR(values_only[1], s.singular_values[1], 1e-12);
}

TEST(Linalg, PseudoInverseOfARankDeficientMatrix) {
  // s = u u^T with |u| = 3 has pinv u u^T / 81.
  MatrixD s = MatrixD::zeros(3, 3);
  const double u[3] = {1, 2, 2};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) s(i, j) = u[i] * u[j];
  MatrixD p = pinv_symmetric(s, 1);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(p(i, j), u[i] * u[j] / 81.0, 1e-12);
}

TEST(Random, SameSeedSameNumbers) {
  Generator a(42), b(42), c(43);
  Tensor x = normal({100}, 0, 1, a), y = normal({100}, 0, 1, b), z = normal({100}, 0, 1, c);
  EXPECT_EQ(x.to_vector(), y.to_vector());
  EXPECT_NE(x.to_vector(), z.to_vector());
}

TEST(Random, NormalHasTheRightMoments) {
  Generator g(7);
  Tensor x = normal({200000}, 1.5f, 2.f, g);
  EXPECT_NEAR(mean(x).item(), 1.5f, 0.02f);
  EXPECT_NEAR(std::sqrt(var(x).item()), 2.f, 0.02f);
}

TEST(Random, PermutationIsAPermutationAndStateRoundTrips) {
  Generator g(3);
  std::vector<int64_t> p = g.permutation(1000);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  const std::string state = g.state();
  const float next = g.normal();
  Generator h(0);
  h.set_state(state);
  EXPECT_EQ(h.normal(), next);
}
