// Optimizer <-> state dict, as Python's torch.optim.Optimizer.state_dict() /
// load_state_dict() lay it out in torch 2.10: the parts every optimizer shares (parameter
// indices across groups, 'params' last, the order of 'state', the checks before anything
// changes). What differs per optimizer is data in optimizer_descriptors.cpp.
#include <algorithm>
#include <map>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"
#include "optimizer_descriptor.h"
#include "state_values.h"

namespace fabricckpt::state {

using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;
using detail::dict_of;
using detail::sequence;

ValuePtr optimizer_state_dict(const Optimizer& optimizer, const std::vector<double>& initial_lrs) {
  const optim::OptimizerDescriptor& descriptor = optim::descriptor_of(optimizer);
  if (!initial_lrs.empty() && initial_lrs.size() != optimizer.param_groups().size()) {
    throw StateError(concat(initial_lrs.size(), " initial_lr values for an optimizer with ",
                            optimizer.param_groups().size(), " parameter groups"));
  }

  // Indices run across the groups; a parameter met again keeps its first index.
  std::unordered_map<const void*, int64_t> index_of;
  auto groups = Value::list();
  std::vector<ValuePtr> packed_groups = descriptor.write_groups(optimizer);
  int64_t next = 0;
  for (size_t g = 0; g < packed_groups.size(); ++g) {
    ValuePtr& packed = packed_groups[g];
    // A scheduler's LRScheduler.__init__ adds it with setdefault, after the optimizer's own keys.
    if (!initial_lrs.empty()) packed->dict().set(interned_string("initial_lr"), Value::floating(initial_lrs[g]));
    auto params = Value::list();
    for (const auto& p : optimizer.param_groups()[g].params()) {
      auto [it, inserted] = index_of.emplace(p.unsafeGetTensorImpl(), next);
      params->items().push_back(Value::integer(it->second));
      ++next;
    }
    packed->dict().set(interned_string("params"), params);
    groups->items().push_back(packed);
  }

  std::vector<std::pair<int64_t, const OptimizerParamState*>> with_state;
  for (const auto& [impl, param_state] : optimizer.state()) {
    auto it = index_of.find(impl);
    if (it == index_of.end() || !param_state) continue;  // state of a parameter no group holds
    with_state.emplace_back(it->second, param_state.get());
  }
  std::sort(with_state.begin(), with_state.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  detail::DeviceCopies copies;
  auto state = Value::plain_dict();
  for (const auto& [index, param_state] : with_state) {
    if (ValuePtr entry = descriptor.write_state(*param_state, copies)) {
      state->dict().set(Value::integer(index), entry);
    }
  }

  auto out = Value::plain_dict();
  out->dict().set(interned_string("state"), state);
  out->dict().set(interned_string("param_groups"), groups);
  return out;
}

// ---- load_state_dict -----------------------------------------------------------------------

namespace {

[[noreturn]] void keyed_by_name() {
  throw StateError(
      "optimizer state dict is keyed by parameter name (an FSDP full or consolidated state dict); only "
      "state dicts keyed by parameter index are supported");
}

}  // namespace

void load_optimizer_state_dict(Optimizer& optimizer, const Value& state_dict) {
  const optim::OptimizerDescriptor& descriptor = optim::descriptor_of(optimizer);
  const Dict& sd = dict_of(state_dict, "optimizer state_dict");
  ValuePtr saved_state = sd.get("state");
  ValuePtr saved_groups = sd.get("param_groups");
  if (!saved_state) throw StateError("optimizer state_dict has no 'state'");
  if (!saved_groups) throw StateError("optimizer state_dict has no 'param_groups'");

  auto& groups = optimizer.param_groups();
  const auto& saved = sequence(*saved_groups, "'param_groups'");
  if (saved.size() != groups.size()) {
    throw StateError("loaded state dict has a different number of parameter groups");
  }
  std::vector<const Value::Items*> saved_params;
  for (size_t i = 0; i < saved.size(); ++i) {
    const Dict& g = dict_of(*saved[i], concat("param_groups[", i, "]"));
    ValuePtr params = g.get("params");
    if (!params) throw StateError(concat("param_groups[", i, "] has no 'params'"));
    saved_params.push_back(&sequence(*params, concat("param_groups[", i, "]['params']")));
  }
  for (size_t i = 0; i < saved.size(); ++i) {
    if (saved_params[i]->size() != groups[i].params().size()) {
      throw StateError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group");
    }
  }

  // Saved id -> (parameter, group): later duplicates win, as in Python's dict(zip(...)).
  struct Target {
    at::Tensor param;
    size_t group;
  };
  std::map<int64_t, Target> id_map;
  for (size_t i = 0; i < saved.size(); ++i) {
    for (size_t j = 0; j < saved_params[i]->size(); ++j) {
      const Value& id = *(*saved_params[i])[j];
      if (id.is(Kind::String)) keyed_by_name();
      if (!id.is(Kind::Int)) throw StateError(concat("parameter id ", describe(id), " is not an int"));
      id_map[id.as_int()] = Target{groups[i].params()[j], i};
    }
  }

  // Everything is read and checked before the optimizer changes.
  std::vector<std::unique_ptr<OptimizerOptions>> new_options;
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!groups[i].has_options()) throw StateError("optimizer parameter group without options");
    new_options.push_back(descriptor.read_group(saved[i]->dict(), i, groups[i].options()));
  }

  std::vector<std::pair<void*, std::unique_ptr<OptimizerParamState>>> new_state;
  for (const auto& [id_value, entry] : dict_of(*saved_state, "'state'").items()) {
    if (id_value->is(Kind::String)) keyed_by_name();
    if (!id_value->is(Kind::Int)) continue;  // Python keeps such entries but no parameter uses them
    auto it = id_map.find(id_value->as_int());
    if (it == id_map.end()) continue;
    const Target& target = it->second;
    const Dict& d = dict_of(*entry, concat("state[", id_value->as_int(), "]"));
    if (auto s = descriptor.read_state(d, id_value->as_int(), target.param, *new_options[target.group])) {
      new_state.emplace_back(target.param.unsafeGetTensorImpl(), std::move(s));
    }
  }
  if (descriptor.needs_every_state()) {
    for (const auto& [id, target] : id_map) {
      const void* impl = target.param.unsafeGetTensorImpl();
      bool found = std::any_of(new_state.begin(), new_state.end(), [&](const auto& s) { return s.first == impl; });
      if (!found) throw StateError(concat(descriptor.name(), " state for parameter ", id, " is missing"));
    }
  }

  for (size_t i = 0; i < groups.size(); ++i) groups[i].set_options(std::move(new_options[i]));
  auto& state = optimizer.state();
  state.clear();
  for (auto& [impl, s] : new_state) state[impl] = std::move(s);
}

}  // namespace fabricckpt::state
