// The reference models of shared/reference-models.md, with PyTorch's parameter names.
//
// Every model is a Network: features(x) gives the penultimate features h (what collapse metrics
// measure) and classifier() is the last linear layer (W, b), so forward(x) = classifier(h).
#pragma once

#include <string>

#include "nn/layers.h"

namespace peel::nn {

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
};

// The names make_model knows, in the order the help texts list them.
const std::vector<std::string>& model_names();

std::shared_ptr<Network> make_model(const ModelConfig& config);
// The input size a model expects (small_cnn 28, others 32).
int64_t model_image_size(const std::string& name);

// small_cnn: five conv3x3-BN-ReLU layers (32, 32, pool, 64, 64, pool, 128), global average pool,
// linear 128 -> K. Names conv1..conv5, bn1..bn5, fc.
class SmallCnn : public Network {
 public:
  SmallCnn(int64_t classes, int64_t in_channels = 1);
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *fc; }
  std::shared_ptr<Conv2d> conv1, conv2, conv3, conv4, conv5;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3, bn4, bn5;
  std::shared_ptr<Linear> fc;
};

// VGG with batch norm: conv3x3-BN-ReLU stacks and 2x2 max-pools under `features` (torchvision's
// indices), then flatten and `classifier`. The _lpm variants (the Minority Collapse authors' code)
// put linear 4096-BN1d-ReLU twice before the classifier (names head.0 ... head.5).
class Vgg : public Network {
 public:
  Vgg(const std::vector<int64_t>& config /* channels, 0 = max-pool */, int64_t classes, int64_t in_channels,
      bool lpm_head);
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *classifier_; }
  std::shared_ptr<Sequential> feature_layers, head;
  std::shared_ptr<Linear> classifier_;
};

// CIFAR-style ResNet-18 (no stem max-pool); names conv1, bn1, layer1..layer4 ("0", "1"), fc.
class ResNet18 : public Network {
 public:
  ResNet18(double width, int64_t classes, int64_t in_channels);
  Variable features(const Variable& x) override;
  Linear& classifier() override { return *fc; }
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm> bn1;
  std::shared_ptr<Sequential> layer1, layer2, layer3, layer4;
  std::shared_ptr<Linear> fc;
};

}  // namespace peel::nn
