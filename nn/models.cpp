#include "nn/models.h"

#include <fmt/format.h>

#include <cmath>

#include "tensor/error.h"

namespace peel::nn {

namespace {
int64_t scaled(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(channels) * width)));
}
}  // namespace

SmallCnn::SmallCnn(int64_t classes, int64_t in_channels) {
  auto conv = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, std::make_shared<Conv2d>(in, out, 3, 1, 1, /*bias=*/false));
  };
  auto bn = [&](const char* name, int64_t c) { return register_module(name, std::make_shared<BatchNorm>(c, true)); };
  conv1 = conv("conv1", in_channels, 32);
  bn1 = bn("bn1", 32);
  conv2 = conv("conv2", 32, 32);
  bn2 = bn("bn2", 32);
  conv3 = conv("conv3", 32, 64);
  bn3 = bn("bn3", 64);
  conv4 = conv("conv4", 64, 64);
  bn4 = bn("bn4", 64);
  conv5 = conv("conv5", 64, 128);
  bn5 = bn("bn5", 128);
  fc = register_module("fc", std::make_shared<Linear>(128, classes));
}

Variable SmallCnn::features(const Variable& x) {
  const Pool2dGeometry pool{2, 2, 0};
  Variable h = bn1->forward(conv1->forward(x));  // BN layers apply the ReLU (fused)
  h = max_pool2d(bn2->forward(conv2->forward(h)), pool);
  h = bn3->forward(conv3->forward(h));
  h = max_pool2d(bn4->forward(conv4->forward(h)), pool);
  h = bn5->forward(conv5->forward(h));
  return global_avg_pool(h);
}

Vgg::Vgg(const std::vector<int64_t>& config, int64_t classes, int64_t in_channels, bool lpm_head) {
  feature_layers = register_module("features", std::make_shared<Sequential>());
  int64_t channels = in_channels;
  for (int64_t c : config) {
    if (c == 0) {
      feature_layers->add(std::make_shared<MaxPool2d>(2));
      continue;
    }
    // torchvision's vgg_bn layout: conv, bn, relu. Our BN fuses the ReLU, so the ReLU slot holds an
    // Identity to keep torchvision's indices (features.0, features.1, features.3, ...).
    feature_layers->add(std::make_shared<Conv2d>(channels, c, 3, 1, 1, /*bias=*/false));
    feature_layers->add(std::make_shared<BatchNorm>(c, true));
    feature_layers->add(std::make_shared<Identity>());
    channels = c;
  }
  int64_t width = channels;
  if (lpm_head) {
    head =
        register_module("head", std::make_shared<Sequential>(Sequential{
                                    std::make_shared<Linear>(channels, 4096), std::make_shared<BatchNorm>(4096, true),
                                    std::make_shared<Identity>(), std::make_shared<Linear>(4096, 4096),
                                    std::make_shared<BatchNorm>(4096, true), std::make_shared<Identity>()}));
    width = 4096;
  }
  classifier_ = register_module("classifier", std::make_shared<Linear>(width, classes));
}

Variable Vgg::features(const Variable& x) {
  Variable h = ag::flatten(feature_layers->forward(x), 1);
  return head ? head->forward(h) : h;
}

ResNet18::ResNet18(double width, int64_t classes, int64_t in_channels) {
  const int64_t c0 = scaled(64, width), c1 = scaled(128, width), c2 = scaled(256, width), c3 = scaled(512, width);
  conv1 = register_module("conv1", std::make_shared<Conv2d>(in_channels, c0, 3, 1, 1, false));
  bn1 = register_module("bn1", std::make_shared<BatchNorm>(c0, true));
  auto stage = [&](const char* name, int64_t in, int64_t out, int64_t stride) {
    return register_module(name, std::make_shared<Sequential>(Sequential{std::make_shared<BasicBlock>(in, out, stride),
                                                                         std::make_shared<BasicBlock>(out, out, 1)}));
  };
  layer1 = stage("layer1", c0, c0, 1);
  layer2 = stage("layer2", c0, c1, 2);
  layer3 = stage("layer3", c1, c2, 2);
  layer4 = stage("layer4", c2, c3, 2);
  fc = register_module("fc", std::make_shared<Linear>(c3, classes));
}

Variable ResNet18::features(const Variable& x) {
  Variable h = bn1->forward(conv1->forward(x));
  h = layer4->forward(layer3->forward(layer2->forward(layer1->forward(h))));
  return global_avg_pool(h);
}

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names{"small_cnn", "vgg11", "vgg13", "resnet18", "vgg11_lpm", "vgg13_lpm"};
  return names;
}

int64_t model_image_size(const std::string& name) { return name == "small_cnn" ? 28 : 32; }

std::shared_ptr<Network> make_model(const ModelConfig& c) {
  seed_init_generator(c.seed);
  PEEL_CHECK(c.width > 0 && c.width <= 8, "model: width must be in (0, 8], got {}", c.width);
  PEEL_CHECK(c.classes >= 2, "model: needs at least 2 classes, got {}", c.classes);
  auto vgg_config = [&](bool vgg13) {
    std::vector<int64_t> base =
        vgg13 ? std::vector<int64_t>{64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}
              : std::vector<int64_t>{64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
    for (auto& v : base)
      if (v) v = scaled(v, c.width);
    return base;
  };
  if (c.name == "small_cnn") return std::make_shared<SmallCnn>(c.classes, c.in_channels);
  if (c.name == "vgg11") return std::make_shared<Vgg>(vgg_config(false), c.classes, c.in_channels, false);
  if (c.name == "vgg13") return std::make_shared<Vgg>(vgg_config(true), c.classes, c.in_channels, false);
  if (c.name == "vgg11_lpm") return std::make_shared<Vgg>(vgg_config(false), c.classes, c.in_channels, true);
  if (c.name == "vgg13_lpm") return std::make_shared<Vgg>(vgg_config(true), c.classes, c.in_channels, true);
  if (c.name == "resnet18") return std::make_shared<ResNet18>(c.width, c.classes, c.in_channels);
  PEEL_FAIL("model: unknown model '{}' (known: {})", c.name, fmt::join(model_names(), ", "));
}

}  // namespace peel::nn
