#include "nn/models.h"

#include <fmt/format.h>

#include <cmath>

#include "nn/fusion.h"
#include "tensor/error.h"

namespace peel::nn {

namespace {
int64_t scaled(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(channels) * width)));
}

// Each norm with its name, in the enum's order: the one table the names, the parser and
// to_string read.
constexpr std::pair<Norm, const char*> kNormNames[] = {
    {Norm::bn, "bn"},         {Norm::gn, "gn"},   {Norm::ln, "ln"}, {Norm::gn_ws, "gn+ws"},
    {Norm::bcn_ws, "bcn+ws"}, {Norm::frn, "frn"}, {Norm::wn, "wn"}, {Norm::none, "none"}};
}  // namespace

const std::vector<std::string>& norm_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [norm, name] : kNormNames) out.emplace_back(name);
    return out;
  }();
  return names;
}

const char* to_string(Norm norm) {
  for (const auto& [n, name] : kNormNames)
    if (n == norm) return name;
  return "?";
}

Norm parse_norm(std::string_view name) {
  for (const auto& [norm, n] : kNormNames)
    if (name == n) return norm;
  std::string known;
  for (const std::string& n : norm_names()) known += (known.empty() ? "" : ", ") + n;
  PEEL_FAIL("unknown normalization '{}' (known: {})", name, known);
}

int64_t group_count(int64_t channels) {
  PEEL_CHECK(channels > 0, "group_count: channels must be positive, got {}", channels);
  if (channels < 32) return channels;
  int64_t groups = 32;
  while (channels % groups != 0) --groups;
  return groups;
}

// ---- What each normalisation puts into a model ----------------------------------------------------

std::shared_ptr<Conv2d> NormFactory::conv(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                          int64_t padding) const {
  const Norm n = config_.norm;
  const bool bias = n == Norm::wn || n == Norm::none;
  const WeightReparam reparam = n == Norm::gn_ws || n == Norm::bcn_ws ? WeightReparam::standardize
                                : n == Norm::wn                       ? WeightReparam::weight_norm
                                                                      : WeightReparam::none;
  return std::make_shared<Conv2d>(in, out, kernel, stride, padding, bias, 1, reparam);
}

ModulePtr NormFactory::slot(int64_t channels, bool activation) const {
  switch (config_.norm) {
    case Norm::bn:
      return std::make_shared<BatchNorm>(channels, activation);
    case Norm::gn:
    case Norm::gn_ws:
      return std::make_shared<GroupNorm>(group_count(channels), channels, 1e-5f, activation);
    case Norm::ln:
      return std::make_shared<GroupNorm>(1, channels, 1e-5f, activation);
    case Norm::bcn_ws:
      return std::make_shared<BatchChannelNorm>(channels, group_count(channels), config_.bcn_batch_part,
                                                config_.estbn_moving_speed, activation);
    case Norm::frn:
      return std::make_shared<FilterResponseNorm>(channels, activation);
    case Norm::wn:
    case Norm::none:
      if (activation) return std::make_shared<ReLU>();
      return std::make_shared<Identity>();
  }
  PEEL_FAIL("model: unknown normalization {}", static_cast<int>(config_.norm));
}

std::shared_ptr<ActivationSite> NormFactory::residual_activation(int64_t channels) const {
  if (config_.norm == Norm::frn) return std::make_shared<Tlu>(channels);
  return std::make_shared<ReLU>();
}

std::shared_ptr<Linear> NormFactory::head_linear(int64_t in, int64_t out) const {
  return std::make_shared<Linear>(in, out, true,
                                  config_.norm == Norm::wn ? WeightReparam::weight_norm : WeightReparam::none);
}

ModulePtr NormFactory::head_slot(int64_t features) const {
  if (config_.norm == Norm::frn) return std::make_shared<FilterResponseNorm>(features, true, 1e-6f, true);
  return slot(features, true);
}

// ---- Models ---------------------------------------------------------------------------------------

SmallCnn::SmallCnn(int64_t classes, int64_t in_channels, const NormFactory& norm) {
  auto conv = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, norm.conv(in, out, 3, 1, 1));
  };
  auto slot = [&](const char* name, int64_t c) { return register_module(name, norm.slot(c, true)); };
  conv1 = conv("conv1", in_channels, 32);
  bn1 = slot("bn1", 32);
  conv2 = conv("conv2", 32, 32);
  bn2 = slot("bn2", 32);
  conv3 = conv("conv3", 32, 64);
  bn3 = slot("bn3", 64);
  conv4 = conv("conv4", 64, 64);
  bn4 = slot("bn4", 64);
  conv5 = conv("conv5", 64, 128);
  bn5 = slot("bn5", 128);
  fc = register_module("fc", std::make_shared<Linear>(128, classes));
}

Variable SmallCnn::features(const Variable& x) {
  const Pool2dGeometry pool{2, 2, 0};
  Variable h = conv_then_norm(*conv1, *bn1, x);  // the slots apply the ReLU
  h = conv_norm_max_pool(*conv2, *bn2, h, pool);
  h = conv_then_norm(*conv3, *bn3, h);
  h = conv_norm_max_pool(*conv4, *bn4, h, pool);
  h = conv_then_norm(*conv5, *bn5, h);
  return global_avg_pool(h);
}

Vgg::Vgg(const std::vector<int64_t>& config, int64_t classes, int64_t in_channels, bool lpm_head,
         const NormFactory& norm) {
  feature_layers = register_module("features", std::make_shared<Sequential>());
  int64_t channels = in_channels;
  for (int64_t c : config) {
    if (c == 0) {
      feature_layers->add(std::make_shared<MaxPool2d>(2));
      continue;
    }
    // torchvision's vgg_bn layout: conv, bn, relu. Our norm slot applies the ReLU, so the ReLU slot
    // holds an Identity to keep torchvision's indices (features.0, features.1, features.3, ...).
    feature_layers->add(norm.conv(channels, c, 3, 1, 1));
    feature_layers->add(norm.slot(c, true));
    feature_layers->add(std::make_shared<Identity>());
    channels = c;
  }
  int64_t width = channels;
  if (lpm_head) {
    head = register_module(
        "head", std::make_shared<Sequential>(Sequential{norm.head_linear(channels, 4096), norm.head_slot(4096),
                                                        std::make_shared<Identity>(), norm.head_linear(4096, 4096),
                                                        norm.head_slot(4096), std::make_shared<Identity>()}));
    width = 4096;
  }
  classifier_ = register_module("classifier", std::make_shared<Linear>(width, classes));
}

Variable Vgg::features(const Variable& x) {
  Variable h = ag::flatten(feature_layers->forward(x), 1);
  return head ? head->forward(h) : h;
}

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, const NormFactory& norm) {
  conv1 = register_module("conv1", norm.conv(in_channels, out_channels, 3, stride, 1));
  bn1 = register_module("bn1", norm.slot(out_channels, true));
  conv2 = register_module("conv2", norm.conv(out_channels, out_channels, 3, 1, 1));
  bn2 = register_module("bn2", norm.slot(out_channels, false));
  if (stride != 1 || in_channels != out_channels) {
    downsample = register_module(
        "downsample", std::make_shared<Sequential>(Sequential{norm.conv(in_channels, out_channels, 1, stride, 0),
                                                              norm.slot(out_channels, false)}));
  }
  act = register_module("act", norm.residual_activation(out_channels));
}

Variable BasicBlock::forward(const Variable& x) {
  const Variable h = conv_then_norm(*conv1, *bn1, x);
  const Variable shortcut = downsample ? downsample->forward(x) : x;
  // act(bn2(conv2(h)) + shortcut); bn2, the sum and a ReLU as one op in training (nn/fusion.h).
  return conv_norm_add_activation(*conv2, *bn2, h, shortcut, *act);
}

ResNet18::ResNet18(double width, int64_t classes, int64_t in_channels, const NormFactory& norm) {
  const int64_t c0 = scaled(64, width), c1 = scaled(128, width), c2 = scaled(256, width), c3 = scaled(512, width);
  conv1 = register_module("conv1", norm.conv(in_channels, c0, 3, 1, 1));
  bn1 = register_module("bn1", norm.slot(c0, true));
  auto stage = [&](const char* name, int64_t in, int64_t out, int64_t stride) {
    return register_module(name,
                           std::make_shared<Sequential>(Sequential{std::make_shared<BasicBlock>(in, out, stride, norm),
                                                                   std::make_shared<BasicBlock>(out, out, 1, norm)}));
  };
  layer1 = stage("layer1", c0, c0, 1);
  layer2 = stage("layer2", c0, c1, 2);
  layer3 = stage("layer3", c1, c2, 2);
  layer4 = stage("layer4", c2, c3, 2);
  fc = register_module("fc", std::make_shared<Linear>(c3, classes));
}

Variable ResNet18::features(const Variable& x) {
  Variable h = conv_then_norm(*conv1, *bn1, x);
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
  PEEL_CHECK(c.estbn_moving_speed >= 0.f && c.estbn_moving_speed <= 1.f,
             "model: EstBN moving speed must be in [0, 1], got {}", c.estbn_moving_speed);
  auto vgg_config = [&](bool vgg13) {
    std::vector<int64_t> base =
        vgg13 ? std::vector<int64_t>{64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}
              : std::vector<int64_t>{64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
    for (auto& v : base)
      if (v) v = scaled(v, c.width);
    return base;
  };
  const NormFactory norm(c);
  if (c.name == "small_cnn") return std::make_shared<SmallCnn>(c.classes, c.in_channels, norm);
  if (c.name == "vgg11") return std::make_shared<Vgg>(vgg_config(false), c.classes, c.in_channels, false, norm);
  if (c.name == "vgg13") return std::make_shared<Vgg>(vgg_config(true), c.classes, c.in_channels, false, norm);
  if (c.name == "vgg11_lpm") return std::make_shared<Vgg>(vgg_config(false), c.classes, c.in_channels, true, norm);
  if (c.name == "vgg13_lpm") return std::make_shared<Vgg>(vgg_config(true), c.classes, c.in_channels, true, norm);
  if (c.name == "resnet18") return std::make_shared<ResNet18>(c.width, c.classes, c.in_channels, norm);
  PEEL_FAIL("model: unknown model '{}' (known: {})", c.name, fmt::join(model_names(), ", "));
}

}  // namespace peel::nn
