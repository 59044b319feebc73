// State dict flattening as torch.distributed.checkpoint does it (dcp.h): nested dicts and lists to
// dotted keys ("optimizer.state.fc.weight.exp_avg") and back, with Python's terminal rules.
#include <unordered_map>
#include <variant>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"

namespace fabricckpt::dcp {

namespace {

bool keep_walking(const Value& v);

// Python's _is_terminal: a dict never is; a list is unless it holds a tensor or a walkable container.
bool is_terminal(const Value& v) {
  if (v.is(Kind::Dict)) return false;
  if (!v.is(Kind::List)) return true;
  for (const auto& item : v.items()) {
    if ((item->is(Kind::Dict) || item->is(Kind::List)) && !is_terminal(*item)) return false;
    if (keep_walking(*item)) return false;
  }
  return true;
}

bool keep_walking(const Value& v) { return v.is(Kind::Tensor); }

std::string key_text(const Value& key) {
  if (key.is(Kind::String)) return key.as_string();
  if (key.is(Kind::Int)) return std::to_string(key.as_int());
  if (key.is(Kind::Bool)) return key.as_bool() ? "True" : "False";
  if (key.is(Kind::None)) return "None";
  return describe(key);  // Python's str(key); only plain keys appear in state dicts
}

void walk(std::vector<PathItem>& path, const ValuePtr& value, std::vector<FlatItem>& out,
          std::unordered_map<std::string, size_t>& seen) {
  if (value->is(Kind::Dict)) {
    for (const auto& [k, v] : value->dict().items()) {
      path.emplace_back(key_text(*k));
      walk(path, v, out, seen);
      path.pop_back();
    }
  } else if (is_terminal(*value)) {
    std::string key;
    for (const auto& step : path) {
      if (!key.empty()) key += '.';
      key += std::holds_alternative<std::string>(step) ? std::get<std::string>(step)
                                                       : std::to_string(std::get<int64_t>(step));
    }
    if (!seen.emplace(key, out.size()).second) throw StateError(concat("duplicated flatten key ", key));
    out.push_back({std::move(key), path, value});
  } else {
    const auto& items = value->items();
    for (size_t i = 0; i < items.size(); ++i) {
      path.emplace_back(static_cast<int64_t>(i));
      walk(path, items[i], out, seen);
      path.pop_back();
    }
  }
}

}  // namespace

std::vector<FlatItem> flatten_state_dict(const ValuePtr& state) {
  if (!state || !state->is(Kind::Dict)) throw StateError("a state dict to flatten must be a dict");
  std::vector<FlatItem> out;
  std::unordered_map<std::string, size_t> seen;
  std::vector<PathItem> path;
  walk(path, state, out, seen);
  return out;
}

void set_element(const ValuePtr& root, const std::vector<PathItem>& path, ValuePtr value) {
  if (path.empty()) throw StateError("set_element: empty path");
  ValuePtr container = root;
  for (size_t i = 0; i < path.size(); ++i) {
    const bool last = i + 1 == path.size();
    ValuePtr next = last ? value : nullptr;
    if (!last) {
      // What the next step needs: a list for an index, a dict for a key.
      bool wants_list = std::holds_alternative<int64_t>(path[i + 1]);
      next = wants_list ? Value::list() : Value::plain_dict();
    }
    if (const auto* key = std::get_if<std::string>(&path[i])) {
      if (!container->is(Kind::Dict)) throw StateError(concat("set_element: ", path_text(path), " needs a dict"));
      ValuePtr existing = container->dict().get(*key);
      if (existing && !last) {
        container = existing;
        continue;
      }
      container->dict().set(Value::string(*key), next);
    } else {
      int64_t index = std::get<int64_t>(path[i]);
      if (!container->is(Kind::List)) throw StateError(concat("set_element: ", path_text(path), " needs a list"));
      auto& items = container->items();
      while (static_cast<int64_t>(items.size()) <= index) items.push_back(Value::none());
      if (!last && !items[static_cast<size_t>(index)]->is(Kind::None)) {
        container = items[static_cast<size_t>(index)];
        continue;
      }
      items[static_cast<size_t>(index)] = next;
    }
    container = next;
  }
}

std::string path_text(const std::vector<PathItem>& path) {
  std::string out = "(";
  for (size_t i = 0; i < path.size(); ++i) {
    if (i) out += ", ";
    if (const auto* s = std::get_if<std::string>(&path[i])) {
      out += "'" + *s + "'";
    } else {
      out += std::to_string(std::get<int64_t>(path[i]));
    }
  }
  if (path.size() == 1) out += ",";
  return out + ")";
}

}  // namespace fabricckpt::dcp
