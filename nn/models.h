// The reference models of docs/reference-models.md, with PyTorch's parameter names.
//
// Every model is a Network: features(x) gives the penultimate features h (what collapse metrics
// measure) and classifier() is the last linear layer (W, b), so forward(x) = classifier(h).
//
// Normalisation (ModelConfig::norm; definitions in nn/normalization.h and docs/normalization.md).
// Every model has "norm slots" where the reference model has a BN: the slot keeps the BN's name
// (bn1, features.1, layer1.0.bn2, layer2.0.downsample.1, head.1; as the official BCN code keeps
// `bn1` for its GN/BCN layers), so state names and elimination columns line up across norms.
// A slot followed by a ReLU applies that ReLU itself (it is an ActivationSite: nn/activation_site.h).
//   bn      BatchNorm (+ ReLU fused): the reference models, unchanged (names and initial weights).
//   gn      GroupNorm(G, C) with per-channel affine; G = group_count(C).
//   ln      GroupNorm(1, C) with per-channel affine: LN for CNNs as in Wu & He's GN paper (the
//           official BCN code defines no LN); PyTorch's LayerNorm over (C,H,W) would tie the affine
//           to one image size.
//   gn+ws   weight-standardised convolutions, then GroupNorm(G, C).
//   bcn+ws  weight-standardised convolutions, then BatchChannelNorm(C, G): child `bn` is BatchNorm
//           or EstBN (bcn_batch_part, estbn_moving_speed), then GN with one affine per group.
//   frn     FRN + TLU in place of BN + ReLU: every ReLU becomes a TLU, the one after a residual sum
//           too (layerX.Y.act.tau); a norm not followed by a ReLU (bn2, downsample.1) is FRN alone.
//   wn      weight-normalised convolutions (weight_g, weight_v) with a bias, no norm layer.
//   none    plain convolutions with a bias, no norm layer.
// Convolutions before a norm have no bias (the norm's shift subsumes it; for FRN its beta), those
// of wn and none have one (zeros). With wn and none a slot followed by a ReLU holds that ReLU (no
// parameters); one not followed by a ReLU is an Identity. Weight standardisation applies to every
// convolution (each is followed by a norm), not to linear layers.
// The classifier (fc / classifier) is a plain Linear for every norm: collapse metrics read its W.
// vgg*_lpm heads (linear 4096, norm slot, ReLU slot, twice), a norm slot on (N, 4096) features:
//   bn: BatchNorm1d + ReLU (as today); gn, gn+ws: GroupNorm(32, 4096); ln: GroupNorm(1, 4096) (=
//   PyTorch's LayerNorm(4096)); bcn+ws: BatchChannelNorm(4096, 32) (its batch part over N); frn:
//   FRN + TLU with a learned eps (with one value per sample and feature, nu2 = x^2 and a fixed eps
//   makes FRN nearly sign(x); the FRN paper learns eps for 1x1 maps); wn: weight-normalised
//   linear layers, ReLU; none: ReLU. Head linears keep their bias and are never standardised.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "nn/layers.h"
#include "nn/normalization.h"

namespace peel::nn {

enum class Norm { bn, gn, ln, gn_ws, bcn_ws, frn, wn, none };
// "bn", "gn", "ln", "gn+ws", "bcn+ws", "frn", "wn", "none", in the enum's order.
const std::vector<std::string>& norm_names();
const char* to_string(Norm norm);
Norm parse_norm(std::string_view name);  // the inverse of to_string; throws listing the known names
// Groups for GroupNorm and BCN's channel part: 32, as the official code, when 32 divides C (every
// reference width); C itself when C < 32; otherwise the largest divisor of C below 32.
int64_t group_count(int64_t channels);

class Network : public Module {
 public:
  virtual Variable features(const Variable& x) = 0;
  virtual Linear& classifier() = 0;
  Variable forward(const Variable& x) override { return classifier().forward(features(x)); }
};

struct ModelConfig {
  std::string name = "small_cnn";  // small_cnn | vgg11 | vgg13 | resnet18 | vgg11_lpm | vgg13_lpm
  double width = 1.0;              // channel multiplier for vgg and resnet
  int64_t classes = 10;
  int64_t in_channels = 1;
  int64_t image_size = 28;  // 28 for small_cnn, 32 for the others
  uint64_t seed = 0;        // initial weights
  Norm norm = Norm::bn;
  BcnBatchPart bcn_batch_part = BcnBatchPart::batch;    // bcn+ws: BN (large batches) or EstBN (micro)
  float estbn_moving_speed = kDefaultEstbnMovingSpeed;  // EstBN's r
};

// The names make_model knows, in the order the help texts list them.
const std::vector<std::string>& model_names();

std::shared_ptr<Network> make_model(const ModelConfig& config);
// The input size a model expects (small_cnn 28, others 32).
int64_t model_image_size(const std::string& name);

// The layers a normalisation puts into a model (see the table above).
class NormFactory {
 public:
  explicit NormFactory(const ModelConfig& config) : config_(config) {}
  Norm norm() const { return config_.norm; }
  // A k x k convolution that a norm slot follows: bias and weight reparametrisation per norm.
  std::shared_ptr<Conv2d> conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) const;
  // The norm slot after a convolution of `channels` outputs; `activation`: ends in ReLU (TLU for frn).
  ModulePtr slot(int64_t channels, bool activation) const;
  // The activation after a residual sum: ReLU, or TLU for frn.
  std::shared_ptr<ActivationSite> residual_activation(int64_t channels) const;
  // The vgg_lpm head's linear layer and the norm slot (with its activation) after it.
  std::shared_ptr<Linear> head_linear(int64_t in, int64_t out) const;
  ModulePtr head_slot(int64_t features) const;

 private:
  ModelConfig config_;
};

// small_cnn: five conv3x3-norm-ReLU layers (32, 32, pool, 64, 64, pool, 128), global average pool,
// linear 128 -> K. Names conv1..conv5, bn1..bn5 (the norm slots), fc.
class SmallCnn : public Network {
 public:
  SmallCnn(int64_t classes, int64_t in_channels = 1, const NormFactory& norm = NormFactory({}));
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *fc; }
  std::shared_ptr<Conv2d> conv1, conv2, conv3, conv4, conv5;
  ModulePtr bn1, bn2, bn3, bn4, bn5;
  std::shared_ptr<Linear> fc;
};

// VGG: conv3x3-norm-ReLU stacks and 2x2 max-pools under `features` (torchvision's vgg_bn indices:
// conv, norm slot, ReLU slot; the norm slot applies the ReLU, so the ReLU slot is an Identity), then
// flatten and `classifier`. The _lpm variants (the Minority Collapse authors' code) put linear
// 4096-norm-ReLU twice before the classifier (names head.0 ... head.5).
class Vgg : public Network {
 public:
  Vgg(const std::vector<int64_t>& config /* channels, 0 = max-pool */, int64_t classes, int64_t in_channels,
      bool lpm_head, const NormFactory& norm = NormFactory({}));
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *classifier_; }
  std::shared_ptr<Sequential> feature_layers, head;
  std::shared_ptr<Linear> classifier_;
};

// ResNet's BasicBlock: conv3x3-norm-ReLU-conv3x3-norm plus the shortcut, then `act` (ReLU; TLU for
// frn). The shortcut is the identity, or `downsample` (1x1 conv with stride + norm slot) where the
// shape changes.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, const NormFactory& norm = NormFactory({}));
  Variable forward(const Variable& x) override;
  std::shared_ptr<Conv2d> conv1, conv2;
  ModulePtr bn1, bn2;
  std::shared_ptr<Sequential> downsample;  // null for the identity shortcut
  std::shared_ptr<ActivationSite> act;
};

// CIFAR-style ResNet-18 (no stem max-pool); names conv1, bn1, layer1..layer4 ("0", "1"), fc.
class ResNet18 : public Network {
 public:
  ResNet18(double width, int64_t classes, int64_t in_channels, const NormFactory& norm = NormFactory({}));
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *fc; }
  std::shared_ptr<Conv2d> conv1;
  ModulePtr bn1;
  std::shared_ptr<Sequential> layer1, layer2, layer3, layer4;
  std::shared_ptr<Linear> fc;
};

}  // namespace peel::nn
