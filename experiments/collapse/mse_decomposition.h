// The decomposition of the regularised square loss of Han, Papyan & Donoho ("Neural Collapse Under
// MSE Loss: Proximity to and Dynamics on the Central Path", ICLR 2022; the MSE branch of the
// official notebook neuralcollapse/neuralcollapse `neuralcollapse.ipynb`, /work/shared/science.md
// §3), at one measurement, on plain tensors, in double precision. docs/square-loss.md derives it.
//
// Notation: features h_i (rows of H, N x D) with labels y_i, K classes, n_c samples of class c,
// class means mu_c, Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T, a classifier (W, b)
// with W: K x D, targets t e_{y_i} (t = target_scale; the notebook uses plain one-hot, t = 1),
// class weights pi_c (below), lambda the weight on ||W||^2 and lambda_b = lambda (or 0, see
// decay_bias) the weight on ||b||^2. The loss decomposed is
//
//   L(W, b) = 1/2 tr(W Sigma_W W^T) + 1/2 sum_c pi_c ||W mu_c + b - t e_c||^2
//             + lambda/2 ||W||_F^2 + lambda_b/2 ||b||^2.
//
// With pi_c = n_c / N (MseWeighting::Empirical) this is exactly the per-sample loss
//   L(W, b) = (1/(2N)) sum_i ||W h_i + b - t e_{y_i}||^2 + lambda/2 ||W||_F^2 + lambda_b/2 ||b||^2,
// which is the notebook's `MSE_wd_features` = 0.5 * (MSELoss(reduction='sum') / N
// + 0.5 * weight_decay * (||W||^2 + ||b||^2)) with lambda = weight_decay / 2: one half of the squared
// error summed over the K outputs, averaged over the samples (not PyTorch's default mean over N*K).
// With pi_c = 1/K (MseWeighting::Uniform, the classes present) it is what the notebook's formulas
// decompose; the two agree on balanced data. Under imbalance the notebook's L_NC1 + L_NC2/3 + L_perp
// is the Uniform loss, which differs from its plotted `MSE_wd_features` (the Empirical loss).
//
// With mu_pi = sum_c pi_c mu_c, the augmented classifier w~ = [W b] (K x (D+1)) and
//   A = [[Sigma_W + sum_c pi_c mu_c mu_c^T + lambda I,  mu_pi], [mu_pi^T,  1 + lambda_b]],
//   B = t [pi_c (mu_c, 1)]_c                     ((D+1) x K),
// L(w~) = 1/2 tr(w~ A w~^T) - tr(w~ B) + t^2/2, minimised by the least-squares (ridge) classifier
// w~_LS = B^T A^{-1}; for Uniform weights, balanced or not, this is the notebook's closed form
//   w_LS = (1/K)(M^T - 1 mu_G^T/(1+lambda)) (S_T + (lambda/(1+lambda)) mu_G mu_G^T + lambda I)^{-1},
//   b_LS = ((1/K) 1 - w_LS mu_G) / (1 + lambda),   S_T = Sigma_W + Sigma_B, mu_G = mean of class means.
// Then, exactly (for any W, b):
//   L(W, b) = L_NC1 + L_NC2/3 + L_perp, with
//   L_NC1   = 1/2 (tr(w_LS (Sigma_W + lambda I) w_LS^T) + lambda_b ||b_LS||^2),
//   L_NC2/3 = 1/2 sum_c pi_c ||w_LS mu_c + b_LS - t e_c||^2   (= (1/(2K)) ||w_LS M + b_LS 1^T - I||_F^2
//             for pi = 1/K, t = 1, the notebook's LNC23),
//   L_perp  = 1/2 tr((w~ - w~_LS) A (w~ - w~_LS)^T)           (0 at w_LS, b_LS; only there if lambda > 0).
//
// lambda = 0 is allowed: A may then be singular. peel then takes the minimum-norm weights of the
// bias-eliminated system (x = S'^+ rhs, mse_decomposition.cpp) and the bias from them. That is one
// least-squares solution among many, but the three terms are the same for all of them: a null
// direction v of A has Sigma_W v_w = 0 and mu_c . v_w + v_b = 0, so it changes no term.
// Classes with no samples have pi_c = 0 (their row of w_LS is 0, as no sample asks them for a 1).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "experiments/collapse/collapse.h"

namespace peel {

enum class MseWeighting { Empirical, Uniform };
const char* to_string(MseWeighting w);  // "empirical" | "uniform"

// How w~_LS is solved. Auto picks the smaller system:
//   Primal, when D + 1 <= N + K: the D x D system of A with the bias eliminated (its Schur
//     complement); a Cholesky solve when lambda > 0, an eigendecomposition with pseudo-inverse
//     when lambda = 0 (or if Cholesky fails), O(D^3) either way but the second several times slower;
//   Dual otherwise: the (N + K) x (N + K) kernel system of A = Z^T Z + Gamma (Z the within-class
//     deviations and weighted class means, Gamma = diag(lambda I, lambda_b)), through
//     A^{-1} Z^T = Gamma^{-1} Z^T (Z Gamma^{-1} Z^T + I)^{-1}. It needs lambda > 0 and lambda_b > 0
//     (or no bias); Auto falls back to Primal otherwise.
enum class MseSolver { Auto, Primal, Dual };

struct MseDecompositionInputs {
  Tensor features;                  // H: (N, D)
  std::span<const int64_t> labels;  // N labels in [0, K); viewed, not copied
  int64_t num_classes = 0;          // K
  Tensor classifier_weight;         // W: (K, D)
  Tensor classifier_bias;           // b: (K); optional (undefined: a classifier without bias, and
                                    // w~_LS has none either)
  double lambda = 0;                // see notebook_lambda() and training_lambda()
  bool decay_bias = true;           // lambda_b = lambda (the notebook), or 0 (biases not decayed)
  double target_scale = 1;          // t
  MseWeighting weighting = MseWeighting::Empirical;
  MseSolver solver = MseSolver::Auto;
};

struct MseDecomposition {
  MseWeighting weighting = MseWeighting::Empirical;
  double lambda = 0, bias_lambda = 0, target_scale = 1;
  int64_t num_samples = 0, feature_dim = 0, num_classes = 0, classes_present = 0;
  bool dual_solve = false;      // solved through the kernel system
  bool pseudo_inverse = false;  // A (or the kernel system) was singular: minimum-norm solution

  // The loss decomposed, L(W, b) above, computed from the features and not from the terms: under
  // Empirical weights as (1/(2N)) sum_i ||W h_i + b - t e_{y_i}||^2 + regularization; under Uniform
  // from the per-sample within-class term and the class means.
  double loss = 0;
  double regularization = 0;  // lambda/2 ||W||_F^2 + lambda_b/2 ||b||^2
  double empirical_loss = 0;  // the per-sample loss (Empirical L), whatever the weighting
  double lnc1 = 0, lnc23 = 0, lperp = 0;
  double least_squares_loss = 0;  // L(w_LS, b_LS) = lnc1 + lnc23
  double residual = 0;            // loss - (lnc1 + lnc23 + lperp): round-off only

  MatrixD w_ls;              // K x D
  std::vector<double> b_ls;  // K (empty without a bias)

  // prefix + each of: mse_lambda, mse_bias_lambda, mse_target_scale, mse_weighting_uniform (0/1),
  // mse_loss, mse_regularization, mse_empirical_loss, lnc1, lnc23, lperp, mse_least_squares_loss,
  // mse_decomposition_residual, mse_pseudo_inverse (0/1). 13 columns.
  MetricColumns to_columns(const std::string& prefix = "") const;
};

// One pass for the class means, one blocked dsyrk for Sigma_W (Primal) or the kernel matrix (Dual),
// one Cholesky solve, one blocked pass over the samples for the traces. Cost Primal: O(N D^2 + D^3);
// Dual: O(N^2 D + N^3). Memory: one D x D (or (N+K)^2 and (N+K)(D+1)) matrix of doubles. For
// D <= 512 OpenBLAS runs on one thread during the call (blas_threads.h). Measured costs are in
// docs/square-loss.md §3 (e.g. N = 60000, D = 128: 0.22 s CPU).
MseDecomposition mse_decomposition(const MseDecompositionInputs& in);

// The notebook's lambda: weight_decay / 2 (`wd = 0.5 * weight_decay`).
double notebook_lambda(double weight_decay);
// The lambda at which a run trained with peel's nn::mse_loss (mean over N*K entries, times
// loss_scale) and SGD weight decay `weight_decay` on W and b has its last layer at the ridge optimum
// of L: the training objective restricted to (W, b) is (2 loss_scale / K) L with
// lambda = K weight_decay / (2 loss_scale). For the notebook's own training (nn.MSELoss(), K = 10)
// this is 10x notebook_lambda.
double training_lambda(double weight_decay, int64_t num_classes, double loss_scale = 1);

}  // namespace peel
