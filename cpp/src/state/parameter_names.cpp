// Optimizer state keyed by parameter name, as FSDP's sharded and full state dicts and
// torch.distributed.checkpoint.state_dict.get_optimizer_state_dict write it (state.h).
#include <functional>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"

namespace fabricckpt::state {

std::vector<std::string> optimizer_parameter_names(const torch::optim::Optimizer& optimizer,
                                                   const torch::nn::Module& module) {
  std::unordered_map<const void*, std::string> name_of;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    name_of.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  std::vector<std::string> names;
  std::unordered_map<const void*, bool> seen;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) {
      const void* id = p.unsafeGetTensorImpl();
      if (!seen.emplace(id, true).second) continue;  // a parameter listed twice keeps its first index
      auto it = name_of.find(id);
      if (it == name_of.end()) {
        throw StateError(concat("optimizer parameter ", names.size(), " (shape ", detail::torch_size_repr(p.sizes()),
                                ") is not a parameter of the model, so it has no name to be saved under"));
      }
      names.push_back(it->second);
    }
  }
  return names;
}

namespace {

ValuePtr copy_group_with_params(const Value& group, const std::function<ValuePtr(const Value&)>& map_param) {
  ValuePtr out = Value::plain_dict();
  for (const auto& [k, v] : group.dict().items()) {
    if (k->is(Kind::String) && k->as_string() == "params") {
      ValuePtr params = Value::list();
      for (const auto& p : v->items()) params->items().push_back(map_param(*p));
      out->dict().set(k, params);
    } else {
      out->dict().set(k, v);
    }
  }
  return out;
}

const Dict& dict_field(const Value& state_dict, const char* name) {
  if (!state_dict.is(Kind::Dict)) throw StateError("an optimizer state_dict must be a dict");
  ValuePtr v = state_dict.dict().get(name);
  if (!v || !v->is(Kind::Dict)) throw StateError(concat("optimizer state_dict has no '", name, "' dict"));
  return v->dict();
}

const Value::Items& groups_of(const Value& state_dict) {
  ValuePtr v = state_dict.dict().get("param_groups");
  if (!v || !v->is(Kind::List)) throw StateError("optimizer state_dict has no 'param_groups' list");
  return v->items();
}

}  // namespace

ValuePtr optimizer_state_by_name(const Value& state_dict, const std::vector<std::string>& names) {
  auto name_at = [&](const Value& index) -> ValuePtr {
    if (!index.is(Kind::Int) || index.as_int() < 0 || static_cast<size_t>(index.as_int()) >= names.size()) {
      throw StateError(concat("optimizer state refers to parameter ", describe(index), " of ", names.size()));
    }
    return interned_string(names[static_cast<size_t>(index.as_int())]);
  };
  ValuePtr out = Value::plain_dict();
  ValuePtr state = Value::plain_dict();
  for (const auto& [k, v] : dict_field(state_dict, "state").items()) state->dict().set(name_at(*k), v);
  ValuePtr groups = Value::list();
  for (const auto& g : groups_of(state_dict)) groups->items().push_back(copy_group_with_params(*g, name_at));
  out->dict().set(interned_string("state"), state);
  out->dict().set(interned_string("param_groups"), groups);
  return out;
}

ValuePtr optimizer_state_by_index(const Value& state_dict, const std::vector<std::string>& names) {
  std::unordered_map<std::string, int64_t> index_of;
  for (size_t i = 0; i < names.size(); ++i) index_of.emplace(names[i], static_cast<int64_t>(i));
  auto index_at = [&](const Value& key) -> ValuePtr {
    if (key.is(Kind::Int)) return Value::integer(key.as_int());
    if (!key.is(Kind::String)) throw StateError(concat("optimizer state key ", describe(key), " is neither an index nor a name"));
    auto it = index_of.find(key.as_string());
    if (it == index_of.end()) {
      throw StateError(concat("the checkpoint has optimizer state for the parameter '", key.as_string(),
                              "', which the model does not have"));
    }
    return Value::integer(it->second);
  };
  ValuePtr out = Value::plain_dict();
  ValuePtr state = Value::plain_dict();
  for (const auto& [k, v] : dict_field(state_dict, "state").items()) state->dict().set(index_at(*k), v);
  ValuePtr groups = Value::list();
  for (const auto& g : groups_of(state_dict)) groups->items().push_back(copy_group_with_params(*g, index_at));
  out->dict().set(interned_string("state"), state);
  out->dict().set(interned_string("param_groups"), groups);
  return out;
}

}  // namespace fabricckpt::state
