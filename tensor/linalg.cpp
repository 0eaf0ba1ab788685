// GEMM through OpenBLAS; eigh and SVD through LAPACK's dsyevd and dgesdd.
#include "tensor/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/error.h"

// Debian ships LAPACK inside OpenBLAS without lapacke.h; these are the Fortran entry points.
extern "C" {
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info);
}

namespace peel {

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

namespace {

// A 2-d view that BLAS can read: row-major (ld = stride 0) or transposed (ld = stride 1).
struct BlasOperand {
  Tensor t;
  bool trans;
  int64_t ld;
};

BlasOperand as_blas(const Tensor& x) {
  const int64_t r = x.size(0), c = x.size(1);
  if (x.stride(1) == 1 && x.stride(0) >= std::max<int64_t>(c, 1)) return {x, false, x.stride(0)};
  if (x.stride(0) == 1 && x.stride(1) >= std::max<int64_t>(r, 1)) return {x, true, x.stride(1)};
  Tensor d = x.contiguous();
  return {d, false, std::max<int64_t>(c, 1)};
}

void matmul_2d(const Tensor& a, const Tensor& b, Tensor& out) {
  BlasOperand A = as_blas(a), B = as_blas(b);
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (k == 0) {
    out.fill_(0.f);
    return;
  }
  gemm(A.trans, B.trans, m, n, k, 1.f, A.t.data(), A.ld, B.t.data(), B.ld, 0.f, out.data(), n);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  PEEL_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  PEEL_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: needs operands of rank >= 2, got {} and {}", to_string(a.shape()),
             to_string(b.shape()));
  PEEL_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: {} @ {}", to_string(a.shape()),
             to_string(b.shape()));
  if (a.dim() == 2 && b.dim() == 2) {
    Tensor out = Tensor::empty({a.size(0), b.size(1)});
    matmul_2d(a, b, out);
    return out;
  }
  // Batched: broadcast the leading axes, then one GEMM per batch entry.
  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  Shape sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {a.size(-2), a.size(-1)});
  sb.insert(sb.end(), {b.size(-2), b.size(-1)});
  so.insert(so.end(), {a.size(-2), b.size(-1)});
  const int64_t nb = numel_of(batch);
  Tensor ea = a.expand(sa).reshape({nb, a.size(-2), a.size(-1)});
  Tensor eb = b.expand(sb).reshape({nb, b.size(-2), b.size(-1)});
  Tensor out = Tensor::empty({nb, a.size(-2), b.size(-1)});
  for (int64_t i = 0; i < nb; ++i) {
    Tensor o = out.select(0, i);
    matmul_2d(ea.select(0, i), eb.select(0, i), o);
  }
  return out.reshape(so);
}

// ---- Double-precision matrices ------------------------------------------------------------------

MatrixD MatrixD::zeros(int64_t rows, int64_t cols) {
  return MatrixD{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols), 0.0)};
}

MatrixD MatrixD::from_tensor(const Tensor& t) {
  PEEL_CHECK(t.dim() == 2, "MatrixD::from_tensor: needs a 2-d tensor, got shape {}", to_string(t.shape()));
  std::vector<float> v = t.to_vector();
  return MatrixD{t.size(0), t.size(1), std::vector<double>(v.begin(), v.end())};
}

Tensor MatrixD::to_tensor() const {
  return Tensor::from_vector(std::vector<float>(values.begin(), values.end()), {rows, cols});
}

MatrixD transpose(const MatrixD& a) {
  MatrixD t = MatrixD::zeros(a.cols, a.rows);
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t c = 0; c < a.cols; ++c) t(c, r) = a(r, c);
  return t;
}

MatrixD matmul(const MatrixD& a, const MatrixD& b) {
  PEEL_CHECK(a.cols == b.rows, "matmul: inner dimensions differ: ({},{}) @ ({},{})", a.rows, a.cols, b.rows, b.cols);
  MatrixD c = MatrixD::zeros(a.rows, b.cols);
  if (a.rows && b.cols && a.cols)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(a.rows), static_cast<blasint>(b.cols),
                static_cast<blasint>(a.cols), 1.0, a.values.data(), static_cast<blasint>(a.cols), b.values.data(),
                static_cast<blasint>(b.cols), 0.0, c.values.data(), static_cast<blasint>(c.cols));
  return c;
}

Eigh eigh(const MatrixD& s) {
  PEEL_CHECK(s.rows == s.cols, "eigh: needs a square matrix, got ({},{})", s.rows, s.cols);
  const int n = static_cast<int>(s.rows);
  Eigh result{std::vector<double>(static_cast<size_t>(n)), s};
  if (n == 0) return result;
  // Row-major symmetric == column-major symmetric; LAPACK's column-major eigenvectors come back
  // as rows of our row-major buffer, so transpose at the end.
  double* a = result.vectors.values.data();
  int info = 0, lwork = -1, liwork = -1, iwork_query = 0;
  double work_query = 0;
  dsyevd_("V", "U", &n, a, &n, result.values.data(), &work_query, &lwork, &iwork_query, &liwork, &info);
  lwork = static_cast<int>(work_query);
  liwork = iwork_query;
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevd_("V", "U", &n, a, &n, result.values.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
  PEEL_CHECK(info == 0, "eigh: LAPACK dsyevd failed (info = {}) on a {}x{} matrix", info, n, n);
  result.vectors = transpose(result.vectors);
  return result;
}

Svd svd(const MatrixD& a) {
  // Row-major A is column-major A^T. dgesdd on A^T = U' S V'^T gives A = V' S U'^T.
  const int m = static_cast<int>(a.cols), n = static_cast<int>(a.rows);  // of A^T
  const int r = std::min(m, n);
  Svd out{MatrixD::zeros(a.rows, r), std::vector<double>(static_cast<size_t>(r)), MatrixD::zeros(r, a.cols)};
  if (r == 0) return out;
  std::vector<double> at = a.values;  // column-major A^T, leading dimension m
  std::vector<double> u(static_cast<size_t>(m) * r), vt(static_cast<size_t>(r) * n);
  std::vector<int> iwork(static_cast<size_t>(8 * r));
  int info = 0, lwork = -1;
  double work_query = 0;
  dgesdd_("S", &m, &n, at.data(), &m, out.singular_values.data(), u.data(), &m, vt.data(), &r, &work_query, &lwork,
          iwork.data(), &info);
  lwork = static_cast<int>(work_query);
  std::vector<double> work(static_cast<size_t>(lwork));
  dgesdd_("S", &m, &n, at.data(), &m, out.singular_values.data(), u.data(), &m, vt.data(), &r, work.data(), &lwork,
          iwork.data(), &info);
  PEEL_CHECK(info == 0, "svd: LAPACK dgesdd failed (info = {}) on a {}x{} matrix", info, a.rows, a.cols);
  // A^T = U' S V'^T (column-major U' is m x r, V'^T is r x n). A = V' S U'^T:
  // A's left vectors are V' (n x r): V'[i][j] = vt_colmajor(j, i) = vt[i * r + j].
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < r; ++j) out.u(i, j) = vt[static_cast<size_t>(i * r + j)];
  // A's right vectors transposed are U'^T (r x m): U'^T[j][c] = u_colmajor(c, j) = u[j * m + c].
  for (int64_t j = 0; j < r; ++j)
    for (int64_t c = 0; c < a.cols; ++c) out.vt(j, c) = u[static_cast<size_t>(j * m + c)];
  return out;
}

std::vector<double> singular_values(const MatrixD& a) {
  // Values only (jobz = 'N'): several times faster than the full SVD on large weight matrices.
  const int m = static_cast<int>(a.cols), n = static_cast<int>(a.rows);
  const int r = std::min(m, n);
  std::vector<double> s(static_cast<size_t>(r));
  if (r == 0) return s;
  std::vector<double> at = a.values;
  std::vector<int> iwork(static_cast<size_t>(8 * r));
  int info = 0, lwork = -1, one = 1;
  double work_query = 0, dummy = 0;
  dgesdd_("N", &m, &n, at.data(), &m, s.data(), &dummy, &one, &dummy, &one, &work_query, &lwork, iwork.data(), &info);
  lwork = static_cast<int>(work_query);
  std::vector<double> work(static_cast<size_t>(lwork));
  dgesdd_("N", &m, &n, at.data(), &m, s.data(), &dummy, &one, &dummy, &one, work.data(), &lwork, iwork.data(), &info);
  PEEL_CHECK(info == 0, "singular_values: LAPACK dgesdd failed (info = {}) on a {}x{} matrix", info, a.rows, a.cols);
  return s;
}

MatrixD pinv_symmetric(const MatrixD& s, int64_t rank, double rcond) {
  Eigh e = eigh(s);
  const int64_t n = s.rows;
  MatrixD p = MatrixD::zeros(n, n);
  if (n == 0) return p;
  const double largest = std::max(std::abs(e.values.front()), std::abs(e.values.back()));
  for (int64_t idx = n - 1; idx >= 0; --idx) {  // eigenvalues ascending: walk from the top
    const int64_t taken = n - 1 - idx;
    const double lambda = e.values[static_cast<size_t>(idx)];
    if (rank >= 0 ? taken >= rank : lambda <= rcond * largest) break;
    if (lambda == 0.0) continue;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < n; ++c) p(r, c) += e.vectors(r, idx) * e.vectors(c, idx) / lambda;
  }
  return p;
}

int64_t numerical_rank(const std::vector<double>& singular_values_desc, int64_t rows, int64_t cols, double tol) {
  const std::vector<double>& sv = singular_values_desc;
  if (sv.empty()) return 0;
  const double threshold =
      tol >= 0 ? tol * sv.front()
               : sv.front() * static_cast<double>(std::max(rows, cols)) * std::numeric_limits<float>::epsilon();
  return std::count_if(sv.begin(), sv.end(), [&](double s) { return s > threshold; });
}

}  // namespace peel
