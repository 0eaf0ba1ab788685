// Dense linear algebra: matrix products through OpenBLAS's cblas_sgemm, and the symmetric
// eigendecomposition, SVD and pseudo-inverse through LAPACK (computed in double precision, since
// collapse metrics invert nearly singular covariance matrices).
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace peel {

// (m,k) @ (k,n) -> (m,n); or batched (..., m,k) @ (..., k,n) with broadcast batch axes.
// Transposed views are passed to BLAS as transposes, not copied.
Tensor matmul(const Tensor& a, const Tensor& b);

// C = alpha * op(A) op(B) + beta * C on dense row-major buffers (a thin, checked cblas_sgemm).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// A dense row-major double matrix for the LAPACK routines.
struct MatrixD {
  int64_t rows = 0, cols = 0;
  std::vector<double> values;  // row-major
  double& operator()(int64_t r, int64_t c) { return values[static_cast<size_t>(r * cols + c)]; }
  double operator()(int64_t r, int64_t c) const { return values[static_cast<size_t>(r * cols + c)]; }
  static MatrixD zeros(int64_t rows, int64_t cols);
  static MatrixD from_tensor(const Tensor& t);  // 2-d
  Tensor to_tensor() const;
};

// Symmetric eigendecomposition: eigenvalues ascending, eigenvectors as the columns of `vectors`.
struct Eigh {
  std::vector<double> values;
  MatrixD vectors;
};
Eigh eigh(const MatrixD& symmetric);

// Thin SVD: a = U diag(S) V^T, singular values descending.
struct Svd {
  MatrixD u;  // rows x r
  std::vector<double> singular_values;
  MatrixD vt;  // r x cols
};
Svd svd(const MatrixD& a);
std::vector<double> singular_values(const MatrixD& a);

// Moore-Penrose pseudo-inverse of a symmetric PSD matrix from its top `rank` eigenpairs
// (rank < 0: every eigenvalue above rcond * largest).
MatrixD pinv_symmetric(const MatrixD& symmetric, int64_t rank = -1, double rcond = 1e-10);

// Number of singular values above tol * largest (tol defaults as in NumPy's matrix_rank).
int64_t numerical_rank(const std::vector<double>& singular_values_desc, int64_t rows, int64_t cols, double tol = -1);

MatrixD matmul(const MatrixD& a, const MatrixD& b);
MatrixD transpose(const MatrixD& a);

}  // namespace peel
