#include "nn/activation_site.h"

#include "autograd/functional.h"

namespace peel::nn {

Variable ActivationSite::forward(const Variable& x) {
  if (probe == nullptr || !has_activation()) return forward_fused(x);
  Variable pre = pre_activation(x);
  Variable post = activate(pre);
  probe->record(pre.value(), post.value(), activation_floor());
  return post;
}

Variable ReluSite::activate(const Variable& pre) { return relu ? ag::relu(pre) : pre; }

std::vector<std::pair<std::string, ActivationSite*>> activation_sites(Module& model) {
  std::vector<std::pair<std::string, ActivationSite*>> sites;
  for (auto& [name, m] : model.named_modules())
    if (auto* site = dynamic_cast<ActivationSite*>(m); site != nullptr && site->has_activation())
      sites.emplace_back(name, site);
  return sites;
}

}  // namespace peel::nn
