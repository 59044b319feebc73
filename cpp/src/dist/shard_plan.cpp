// Where each rank's shard of a parameter lies in its global tensor (sharded.h).
#include "fabricckpt/error.h"
#include "fabricckpt/sharded.h"

namespace fabricckpt::sharded {

using dcp::PathItem;

// ------------------------------------------------------------------ plan

void ShardPlan::add_parameter(const std::string& module_key, const std::string& name, Placement placement) {
  const size_t n = placement.global_size.size();
  if (placement.offsets.size() != n || placement.sizes.size() != n) {
    throw StateError(concat("parameter '", name, "' of '", module_key, "': the global shape, offsets and local ",
                            "shape must have the same number of dimensions"));
  }
  for (size_t d = 0; d < n; ++d) {
    if (placement.offsets[d] < 0 || placement.sizes[d] < 0 || placement.global_size[d] < 0 ||
        placement.offsets[d] + placement.sizes[d] > placement.global_size[d]) {
      throw StateError(concat("parameter '", name, "' of '", module_key, "': its shard does not fit in the global ",
                              "shape in dimension ", d));
    }
  }
  params_[module_key][name] = std::move(placement);
}

void ShardPlan::add_optimizer(const std::string& optimizer_key, const std::string& module_key) {
  optimizers_[optimizer_key] = module_key;
}

const Placement* ShardPlan::parameter(const std::string& module_key, const std::string& name) const {
  auto m = params_.find(module_key);
  if (m == params_.end()) return nullptr;
  auto p = m->second.find(name);
  return p == m->second.end() ? nullptr : &p->second;
}

std::string ShardPlan::module_of_optimizer(const std::string& optimizer_key) const {
  auto it = optimizers_.find(optimizer_key);
  return it == optimizers_.end() ? std::string() : it->second;
}

// (module, name) -> the parameter; (optimizer, 'state', name, field) -> that parameter.
const Placement* ShardPlan::parameter_at(const std::vector<PathItem>& path) const {
  auto text = [&](size_t i) -> const std::string* { return std::get_if<std::string>(&path[i]); };
  if (path.size() == 2 && text(0) && text(1)) return parameter(*text(0), *text(1));
  if (path.size() == 4 && text(0) && text(1) && *text(1) == "state" && text(2)) {
    std::string module = module_of_optimizer(*text(0));
    if (!module.empty()) return parameter(module, *text(2));
  }
  return nullptr;
}

std::optional<Placement> ShardPlan::for_local(const std::vector<PathItem>& path, const std::vector<int64_t>& sizes) const {
  const Placement* p = parameter_at(path);
  if (!p || p->sizes != sizes) return std::nullopt;
  return *p;
}

std::optional<Placement> ShardPlan::for_global(const std::vector<PathItem>& path,
                                               const std::vector<int64_t>& global_size) const {
  const Placement* p = parameter_at(path);
  if (!p || p->global_size != global_size) return std::nullopt;
  return *p;
}

}  // namespace fabricckpt::sharded
