// The MSE decomposition of Han, Papyan & Donoho (mse_decomposition.h; derivation in
// docs/square-loss.md). The least-squares classifier is solved in the smaller of two systems:
//   Primal: the bias eliminated by its Schur complement, a D x D system
//           S' x_c = t pi_c (mu_c - mu_pi / beta),  b_c = (t pi_c - mu_pi . x_c) / beta,
//           S' = Sigma_W + sum_c pi_c (mu_c - mu_pi)(mu_c - mu_pi)^T + (lambda_b / beta) mu_pi mu_pi^T + lambda I,
//           beta = 1 + lambda_b (the notebook's closed form, built in Sigma_W's buffer);
//   Dual:   the (N + K) x (N + K) kernel system of Z (mse_decomposition.h: MseSolver).
// Every trace is then taken from the samples, never from a D x D product.
#include "experiments/collapse/mse_decomposition.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "experiments/collapse/blas_threads.h"
#include "tensor/error.h"

extern "C" {
void dposv_(const char* uplo, const int* n, const int* nrhs, double* a, const int* lda, double* b, const int* ldb,
            int* info);
}

namespace peel {

namespace {

// Rows of H centred and multiplied per GEMM.
constexpr int64_t kBlockRows = 256;
// Up to this feature dimension every BLAS call here is small (a 256-row block times D x 3K, a
// D x D x 256 rank update): OpenBLAS runs on one thread (blas_threads.h).
constexpr int64_t kSingleThreadMaxDim = 512;

// Everything the solve and the traces share.
struct Problem {
  int64_t n = 0, d = 0, k = 0;
  bool has_bias = false;
  double lambda = 0, lambda_b = 0, t = 1;
  ClassMeans cm;
  std::vector<int64_t> present;
  std::vector<double> pi;     // K, zero for absent classes, sums to 1
  std::vector<double> mu_pi;  // D: sum_c pi_c mu_c
  MatrixD w;                  // K x D
  std::vector<double> b;      // K (zeros without a bias)
};

struct LeastSquares {
  MatrixD w;              // K x D
  std::vector<double> b;  // K
  bool pseudo_inverse = false;
};

// (h_i - mu_{y_i}) for rows start .. start+rows-1 of h, in double, into block (rows x D).
void centred_block(const Problem& p, const float* h, std::span<const int64_t> labels, int64_t start, int64_t rows,
                   double* block) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t y = labels[static_cast<size_t>(start + r)];
    const float* src = h + (start + r) * p.d;
    const double* mean = p.cm.means.values.data() + y * p.d;
    for (int64_t j = 0; j < p.d; ++j) block[r * p.d + j] = static_cast<double>(src[j]) - mean[j];
  }
}

// Solves a * x = rhs for symmetric positive definite a (n x n, overwritten) and `nrhs` right-hand
// sides stored as the rows of rhs (overwritten by the solutions). False if a is not positive definite.
bool cholesky_solve(std::vector<double>& a, int64_t n, std::vector<double>& rhs, int64_t nrhs) {
  const int nn = static_cast<int>(n), nr = static_cast<int>(nrhs);
  int info = 0;
  dposv_("U", &nn, &nr, a.data(), &nn, rhs.data(), &nn, &info);
  PEEL_CHECK(info >= 0, "mse_decomposition: LAPACK dposv rejected argument {} ({}x{} system)", -info, n, n);
  return info == 0;
}

// x = a^+ rhs through the eigendecomposition of symmetric a (eigenvalues at or below
// n * eps_double * largest are dropped), for the rows of rhs.
void pseudo_inverse_solve(const MatrixD& a, std::vector<double>& rhs, int64_t nrhs) {
  const int64_t n = a.rows;
  const Eigh e = eigh(a);
  const double largest = std::max(std::abs(e.values.front()), std::abs(e.values.back()));
  const double floor = static_cast<double>(n) * std::numeric_limits<double>::epsilon() * largest;
  // coeff (nrhs x n) = rhs V, scaled by 1/eigenvalue or zeroed; then x = coeff V^T.
  std::vector<double> coeff(static_cast<size_t>(nrhs * n));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(nrhs), static_cast<blasint>(n),
              static_cast<blasint>(n), 1.0, rhs.data(), static_cast<blasint>(n), e.vectors.values.data(),
              static_cast<blasint>(n), 0.0, coeff.data(), static_cast<blasint>(n));
  for (int64_t r = 0; r < nrhs; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const double v = e.values[static_cast<size_t>(j)];
      coeff[static_cast<size_t>(r * n + j)] = v > floor ? coeff[static_cast<size_t>(r * n + j)] / v : 0.0;
    }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(nrhs), static_cast<blasint>(n),
              static_cast<blasint>(n), 1.0, coeff.data(), static_cast<blasint>(n), e.vectors.values.data(),
              static_cast<blasint>(n), 0.0, rhs.data(), static_cast<blasint>(n));
}

// S' of the file comment, D x D.
MatrixD primal_matrix(const Problem& p, const Tensor& h, std::span<const int64_t> labels) {
  MatrixD s = within_class_covariance(h, labels, p.k);
  // S' += Y^T Y with rows sqrt(pi_c) (mu_c - mu_pi) and sqrt(lambda_b / beta) mu_pi. Without a bias
  // A's block is sum_c pi_c mu_c mu_c^T = (the centred rows' part) + mu_pi mu_pi^T, added by dger.
  const int64_t kp = static_cast<int64_t>(p.present.size());
  const int64_t y_rows = kp + (p.has_bias ? 1 : 0);
  std::vector<double> y(static_cast<size_t>(y_rows * p.d));
  for (int64_t a = 0; a < kp; ++a) {
    const int64_t c = p.present[static_cast<size_t>(a)];
    const double scale = std::sqrt(p.pi[static_cast<size_t>(c)]);
    for (int64_t j = 0; j < p.d; ++j)
      y[static_cast<size_t>(a * p.d + j)] = scale * (p.cm.means(c, j) - p.mu_pi[static_cast<size_t>(j)]);
  }
  if (p.has_bias) {
    const double scale = std::sqrt(p.lambda_b / (1.0 + p.lambda_b));
    for (int64_t j = 0; j < p.d; ++j) y[static_cast<size_t>(kp * p.d + j)] = scale * p.mu_pi[static_cast<size_t>(j)];
  }
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(p.d), static_cast<blasint>(p.d),
              static_cast<blasint>(y_rows), 1.0, y.data(), static_cast<blasint>(p.d), y.data(),
              static_cast<blasint>(p.d), 1.0, s.values.data(), static_cast<blasint>(p.d));
  if (!p.has_bias) {  // sum_c pi_c mu_c mu_c^T = between-class part + mu_pi mu_pi^T
    cblas_dger(CblasRowMajor, static_cast<blasint>(p.d), static_cast<blasint>(p.d), 1.0, p.mu_pi.data(), 1,
               p.mu_pi.data(), 1, s.values.data(), static_cast<blasint>(p.d));
  }
  for (int64_t j = 0; j < p.d; ++j) s(j, j) += p.lambda;
  return s;
}

LeastSquares solve_primal(const Problem& p, const Tensor& h, std::span<const int64_t> labels) {
  const double beta = 1.0 + p.lambda_b;
  // Right-hand sides, one per class (row c): t pi_c (mu_c - mu_pi / beta), or t pi_c mu_c without a bias.
  std::vector<double> rhs(static_cast<size_t>(p.k * p.d), 0.0);
  for (int64_t c : p.present)
    for (int64_t j = 0; j < p.d; ++j)
      rhs[static_cast<size_t>(c * p.d + j)] =
          p.t * p.pi[static_cast<size_t>(c)] *
          (p.cm.means(c, j) - (p.has_bias ? p.mu_pi[static_cast<size_t>(j)] / beta : 0.0));
  LeastSquares ls;
  std::vector<double> solution = rhs;
  bool solved = false;
  if (p.lambda > 0) {
    MatrixD s = primal_matrix(p, h, labels);
    solved = cholesky_solve(s.values, p.d, solution, p.k);
  }
  if (!solved) {  // singular (lambda = 0 and degenerate features): minimum-norm weights
    solution = rhs;
    pseudo_inverse_solve(primal_matrix(p, h, labels), solution, p.k);
    ls.pseudo_inverse = true;
  }
  ls.w = MatrixD::zeros(p.k, p.d);
  ls.w.values = std::move(solution);
  ls.b.assign(static_cast<size_t>(p.k), 0.0);
  if (p.has_bias)
    for (int64_t c = 0; c < p.k; ++c) {
      double dot = 0;
      for (int64_t j = 0; j < p.d; ++j) dot += p.mu_pi[static_cast<size_t>(j)] * ls.w(c, j);
      ls.b[static_cast<size_t>(c)] = (p.t * p.pi[static_cast<size_t>(c)] - dot) / beta;
    }
  return ls;
}

// A = Z^T Z + Gamma with Z the rows (h_i - mu_{y_i}, 0) / sqrt(N) and sqrt(pi_c) (mu_c, 1), and
// B = Z^T R with R zero on the sample rows and t sqrt(pi_c) e_c^T on class c's row. With
// Zs = Z Gamma^{-1/2}: A^{-1} B = Gamma^{-1/2} Zs^T (Zs Zs^T + I)^{-1} R.
LeastSquares solve_dual(const Problem& p, const Tensor& h, std::span<const int64_t> labels) {
  const int64_t kp = static_cast<int64_t>(p.present.size());
  const int64_t m = p.n + kp, da = p.d + (p.has_bias ? 1 : 0);
  const double feature_scale = 1.0 / std::sqrt(p.lambda);
  const double bias_scale = p.has_bias ? 1.0 / std::sqrt(p.lambda_b) : 0.0;
  std::vector<double> zs(static_cast<size_t>(m * da), 0.0);
  std::vector<double> block(static_cast<size_t>(kBlockRows * p.d));
  const double sample_scale = feature_scale / std::sqrt(static_cast<double>(p.n));
  for (int64_t start = 0; start < p.n; start += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, p.n - start);
    centred_block(p, h.data(), labels, start, rows, block.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < p.d; ++j)
        zs[static_cast<size_t>((start + r) * da + j)] = sample_scale * block[static_cast<size_t>(r * p.d + j)];
  }
  for (int64_t a = 0; a < kp; ++a) {
    const int64_t c = p.present[static_cast<size_t>(a)];
    const double root_pi = std::sqrt(p.pi[static_cast<size_t>(c)]);
    double* row = zs.data() + (p.n + a) * da;
    for (int64_t j = 0; j < p.d; ++j) row[j] = root_pi * feature_scale * p.cm.means(c, j);
    if (p.has_bias) row[p.d] = root_pi * bias_scale;
  }
  // kernel = Zs Zs^T + I (upper triangle from dsyrk, mirrored).
  std::vector<double> kernel(static_cast<size_t>(m * m), 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(da), 1.0,
              zs.data(), static_cast<blasint>(da), 0.0, kernel.data(), static_cast<blasint>(m));
  for (int64_t i = 0; i < m; ++i) {
    kernel[static_cast<size_t>(i * m + i)] += 1.0;
    for (int64_t j = i + 1; j < m; ++j) kernel[static_cast<size_t>(j * m + i)] = kernel[static_cast<size_t>(i * m + j)];
  }
  // R^T: row c holds R's column c.
  std::vector<double> rt(static_cast<size_t>(p.k * m), 0.0);
  for (int64_t a = 0; a < kp; ++a) {
    const int64_t c = p.present[static_cast<size_t>(a)];
    rt[static_cast<size_t>(c * m + p.n + a)] = p.t * std::sqrt(p.pi[static_cast<size_t>(c)]);
  }
  PEEL_CHECK(cholesky_solve(kernel, m, rt, p.k),
             "mse_decomposition: the dual system Zs Zs^T + I ({}x{}) is not positive definite (non-finite features?)",
             m, m);
  // w~_LS (K x da) = Y^T Zs Gamma^{-1/2}.
  std::vector<double> wt(static_cast<size_t>(p.k * da));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(p.k), static_cast<blasint>(da),
              static_cast<blasint>(m), 1.0, rt.data(), static_cast<blasint>(m), zs.data(), static_cast<blasint>(da),
              0.0, wt.data(), static_cast<blasint>(da));
  LeastSquares ls;
  ls.w = MatrixD::zeros(p.k, p.d);
  ls.b.assign(static_cast<size_t>(p.k), 0.0);
  for (int64_t c = 0; c < p.k; ++c) {
    for (int64_t j = 0; j < p.d; ++j) ls.w(c, j) = feature_scale * wt[static_cast<size_t>(c * da + j)];
    if (p.has_bias) ls.b[static_cast<size_t>(c)] = bias_scale * wt[static_cast<size_t>(c * da + p.d)];
  }
  return ls;
}

// Sums over the samples of the squared norms of L (h_i - mu_{y_i}) for L = w_LS, Delta_w = W - w_LS
// and W, and of the per-sample residual W h_i + b - t e_{y_i}, taken as
// W (h_i - mu_{y_i}) + (W mu_{y_i} + b - t e_{y_i}).
struct SampleSums {
  double least_squares = 0, delta = 0, current = 0, residual = 0;
};

SampleSums sample_sums(const Problem& p, const Tensor& h, std::span<const int64_t> labels, const MatrixD& w_ls) {
  const int64_t k = p.k, cols = 3 * k;
  MatrixD q = MatrixD::zeros(p.d, cols);  // [w_LS^T | Delta_w^T | W^T]
  for (int64_t j = 0; j < p.d; ++j)
    for (int64_t c = 0; c < k; ++c) {
      q(j, c) = w_ls(c, j);
      q(j, k + c) = p.w(c, j) - w_ls(c, j);
      q(j, 2 * k + c) = p.w(c, j);
    }
  // offset(y, c) = W mu_y + b - t e_y, for the classes present.
  MatrixD offset = MatrixD::zeros(k, k);
  for (int64_t y : p.present)
    for (int64_t c = 0; c < k; ++c) {
      double v = p.b[static_cast<size_t>(c)] - (c == y ? p.t : 0.0);
      for (int64_t j = 0; j < p.d; ++j) v += p.w(c, j) * p.cm.means(y, j);
      offset(y, c) = v;
    }
  SampleSums sums;
  std::vector<double> block(static_cast<size_t>(kBlockRows * p.d)), z(static_cast<size_t>(kBlockRows * cols));
  // Serial row loops around a threaded dgemm, in sample order (as in collapse.cpp's sample pass).
  for (int64_t start = 0; start < p.n; start += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, p.n - start);
    centred_block(p, h.data(), labels, start, rows, block.data());
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(cols),
                static_cast<blasint>(p.d), 1.0, block.data(), static_cast<blasint>(p.d), q.values.data(),
                static_cast<blasint>(cols), 0.0, z.data(), static_cast<blasint>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t y = labels[static_cast<size_t>(start + r)];
      const double* zr = z.data() + r * cols;
      for (int64_t c = 0; c < k; ++c) {
        sums.least_squares += zr[c] * zr[c];
        sums.delta += zr[k + c] * zr[k + c];
        sums.current += zr[2 * k + c] * zr[2 * k + c];
        const double e = zr[2 * k + c] + offset(y, c);
        sums.residual += e * e;
      }
    }
  }
  return sums;
}

// sum_c pi_c ||L mu_c + beta - t_scale * t e_c||^2 over the classes present, and ||L||_F^2, ||beta||^2.
struct MeanTerms {
  double weighted_fit = 0, weight_norm_sq = 0, bias_norm_sq = 0;
};

MeanTerms mean_terms(const Problem& p, const MatrixD& l, const std::vector<double>& beta, double target) {
  MeanTerms m;
  for (int64_t y : p.present) {
    double fit = 0;
    for (int64_t c = 0; c < p.k; ++c) {
      double v = beta[static_cast<size_t>(c)] - (c == y ? target : 0.0);
      for (int64_t j = 0; j < p.d; ++j) v += l(c, j) * p.cm.means(y, j);
      fit += v * v;
    }
    m.weighted_fit += p.pi[static_cast<size_t>(y)] * fit;
  }
  for (double v : l.values) m.weight_norm_sq += v * v;
  for (double v : beta) m.bias_norm_sq += v * v;
  return m;
}

Problem make_problem(const MseDecompositionInputs& in) {
  const char* op = "mse_decomposition";
  PEEL_CHECK(in.features.defined() && in.features.dim() == 2, "{}: features must be a 2-d tensor (N, D), got {}", op,
             in.features.defined() ? to_string(in.features.shape()) : std::string("undefined"));
  Problem p;
  p.n = in.features.size(0);
  p.d = in.features.size(1);
  p.k = in.num_classes;
  PEEL_CHECK(in.classifier_weight.defined() && in.classifier_weight.shape() == Shape({p.k, p.d}),
             "{}: classifier weight must be (K, D) = [{}, {}], got {}", op, p.k, p.d,
             in.classifier_weight.defined() ? to_string(in.classifier_weight.shape()) : std::string("undefined"));
  p.has_bias = in.classifier_bias.defined();
  PEEL_CHECK(!p.has_bias || in.classifier_bias.shape() == Shape({p.k}), "{}: classifier bias must be [{}], got {}", op,
             p.k, p.has_bias ? to_string(in.classifier_bias.shape()) : std::string());
  PEEL_CHECK(std::isfinite(in.lambda) && in.lambda >= 0, "{}: lambda must be finite and >= 0, got {}", op, in.lambda);
  PEEL_CHECK(std::isfinite(in.target_scale), "{}: target scale must be finite, got {}", op, in.target_scale);
  p.lambda = in.lambda;
  p.lambda_b = in.decay_bias ? in.lambda : 0.0;
  p.t = in.target_scale;
  p.cm = class_means(in.features, in.labels, p.k);  // checks the labels
  for (int64_t c = 0; c < p.k; ++c)
    if (p.cm.counts[static_cast<size_t>(c)] > 0) p.present.push_back(c);
  p.pi.assign(static_cast<size_t>(p.k), 0.0);
  for (int64_t c : p.present)
    p.pi[static_cast<size_t>(c)] = in.weighting == MseWeighting::Empirical
                                       ? static_cast<double>(p.cm.counts[static_cast<size_t>(c)]) / p.n
                                       : 1.0 / static_cast<double>(p.present.size());
  p.mu_pi.assign(static_cast<size_t>(p.d), 0.0);
  for (int64_t c : p.present)
    for (int64_t j = 0; j < p.d; ++j)
      p.mu_pi[static_cast<size_t>(j)] += p.pi[static_cast<size_t>(c)] * p.cm.means(c, j);
  p.w = MatrixD::from_tensor(in.classifier_weight.contiguous());
  p.b.assign(static_cast<size_t>(p.k), 0.0);
  if (p.has_bias) {
    const std::vector<float> b = in.classifier_bias.contiguous().to_vector();
    p.b.assign(b.begin(), b.end());
  }
  return p;
}

}  // namespace

const char* to_string(MseWeighting w) { return w == MseWeighting::Empirical ? "empirical" : "uniform"; }

double notebook_lambda(double weight_decay) { return weight_decay / 2; }

double training_lambda(double weight_decay, int64_t num_classes, double loss_scale) {
  PEEL_CHECK(loss_scale > 0 && num_classes > 0,
             "training_lambda: needs loss_scale > 0 and num_classes > 0, got {} and {}", loss_scale, num_classes);
  return static_cast<double>(num_classes) * weight_decay / (2 * loss_scale);
}

MseDecomposition mse_decomposition(const MseDecompositionInputs& in) {
  const Problem p = make_problem(in);
  std::optional<SingleThreadedBlas> one_thread;
  if (p.d <= kSingleThreadMaxDim) one_thread.emplace();
  const Tensor h = in.features.contiguous();
  const int64_t kp = static_cast<int64_t>(p.present.size());
  const bool dual_possible = p.lambda > 0 && (!p.has_bias || p.lambda_b > 0);
  const bool dual_smaller = p.d + (p.has_bias ? 1 : 0) > p.n + kp;
  PEEL_CHECK(in.solver != MseSolver::Dual || dual_possible,
             "mse_decomposition: the dual solver needs lambda > 0 and a decayed bias, got lambda {}, bias lambda {}",
             p.lambda, p.lambda_b);
  const bool dual = in.solver == MseSolver::Dual || (in.solver == MseSolver::Auto && dual_possible && dual_smaller);
  const LeastSquares ls = dual ? solve_dual(p, h, in.labels) : solve_primal(p, h, in.labels);

  MseDecomposition out;
  out.weighting = in.weighting;
  out.lambda = p.lambda;
  out.bias_lambda = p.has_bias ? p.lambda_b : 0.0;
  out.target_scale = p.t;
  out.num_samples = p.n;
  out.feature_dim = p.d;
  out.num_classes = p.k;
  out.classes_present = kp;
  out.dual_solve = dual;
  out.pseudo_inverse = ls.pseudo_inverse;

  const SampleSums sums = sample_sums(p, h, in.labels, ls.w);
  const double inv_n = 1.0 / static_cast<double>(p.n);
  MatrixD delta_w = p.w;
  for (size_t i = 0; i < delta_w.values.size(); ++i) delta_w.values[i] -= ls.w.values[i];
  std::vector<double> delta_b(p.b);
  for (size_t c = 0; c < delta_b.size(); ++c) delta_b[c] -= ls.b[c];

  const MeanTerms current = mean_terms(p, p.w, p.b, p.t);
  const MeanTerms least_squares = mean_terms(p, ls.w, ls.b, p.t);
  const MeanTerms deviation = mean_terms(p, delta_w, delta_b, 0.0);
  out.regularization = 0.5 * (p.lambda * current.weight_norm_sq + p.lambda_b * current.bias_norm_sq);
  out.empirical_loss = 0.5 * sums.residual * inv_n + out.regularization;
  out.loss = in.weighting == MseWeighting::Empirical
                 ? out.empirical_loss
                 : 0.5 * (sums.current * inv_n + current.weighted_fit) + out.regularization;
  out.lnc1 = 0.5 * (sums.least_squares * inv_n + p.lambda * least_squares.weight_norm_sq +
                    p.lambda_b * least_squares.bias_norm_sq);
  out.lnc23 = 0.5 * least_squares.weighted_fit;
  out.lperp = 0.5 * (sums.delta * inv_n + deviation.weighted_fit + p.lambda * deviation.weight_norm_sq +
                     p.lambda_b * deviation.bias_norm_sq);
  out.least_squares_loss = out.lnc1 + out.lnc23;
  out.residual = out.loss - (out.lnc1 + out.lnc23 + out.lperp);
  out.w_ls = ls.w;
  if (p.has_bias) out.b_ls = ls.b;
  return out;
}

MetricColumns MseDecomposition::to_columns(const std::string& prefix) const {
  return {{prefix + "mse_lambda", lambda},
          {prefix + "mse_bias_lambda", bias_lambda},
          {prefix + "mse_target_scale", target_scale},
          {prefix + "mse_weighting_uniform", weighting == MseWeighting::Uniform ? 1.0 : 0.0},
          {prefix + "mse_loss", loss},
          {prefix + "mse_regularization", regularization},
          {prefix + "mse_empirical_loss", empirical_loss},
          {prefix + "lnc1", lnc1},
          {prefix + "lnc23", lnc23},
          {prefix + "lperp", lperp},
          {prefix + "mse_least_squares_loss", least_squares_loss},
          {prefix + "mse_decomposition_residual", residual},
          {prefix + "mse_pseudo_inverse", pseudo_inverse ? 1.0 : 0.0}};
}

}  // namespace peel
