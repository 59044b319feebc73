// Module <-> state dict, as Python's nn.Module.state_dict() / load_state_dict().
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"

namespace fabricckpt::state {

ValuePtr interned_string(std::string_view text) {
  // Never destroyed: nodes handed out may outlive static destruction.
  static auto* mutex = new std::mutex;
  static auto* table = new std::unordered_map<std::string, ValuePtr>;
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = table->find(std::string(text));
  if (it != table->end()) return it->second;
  auto node = Value::string(std::string(text));
  table->emplace(std::string(text), node);
  return node;
}

std::string python_class_name(const torch::nn::Module& module) {
  std::string name = module.name();
  if (auto angle = name.find('<'); angle != std::string::npos) name.resize(angle);  // templates
  if (auto colons = name.rfind("::"); colons != std::string::npos) name.erase(0, colons + 2);
  constexpr std::string_view kImpl = "Impl";
  if (name.size() > kImpl.size() && name.compare(name.size() - kImpl.size(), kImpl.size(), kImpl) == 0) {
    name.resize(name.size() - kImpl.size());
  }
  return name;
}

namespace {

// Python classes whose _version is not nn.Module's 1 (torch 2.10: the _NormBase family).
bool is_norm_base(const std::string& cls) {
  static const std::unordered_set<std::string> kNames = {
      "BatchNorm1d",     "BatchNorm2d",     "BatchNorm3d",     "LazyBatchNorm1d",    "LazyBatchNorm2d",
      "LazyBatchNorm3d", "InstanceNorm1d",  "InstanceNorm2d",  "InstanceNorm3d",     "LazyInstanceNorm1d",
      "LazyInstanceNorm2d", "LazyInstanceNorm3d", "SyncBatchNorm"};
  return kNames.count(cls) > 0;
}

bool is_instance_norm(const std::string& cls) { return cls.find("InstanceNorm") != std::string::npos; }

}  // namespace

int64_t python_module_version(const torch::nn::Module& module) {
  return is_norm_base(python_class_name(module)) ? 2 : 1;
}

namespace detail {

ValuePtr tensor_value(const at::Tensor& tensor, DeviceCopies& copies) {
  TensorRef ref;
  at::Tensor t = tensor.detach();
  if (!t.device().is_cpu()) {
    // One CPU copy per storage, so that views and tied tensors keep sharing it.
    ref.location = t.device().str();
    const void* key = t.storage().unsafeGetStorageImpl();
    auto it = copies.find(key);
    if (it == copies.end()) {
      const auto element_size = static_cast<int64_t>(t.element_size());
      const int64_t numel = static_cast<int64_t>(t.storage().nbytes()) / element_size;
      at::Tensor whole = at::empty({0}, t.options()).set_(t.storage(), 0, {numel}, {1});
      it = copies.emplace(key, whole.to(at::kCPU)).first;
    }
    t = at::empty({0}, t.options().device(at::kCPU)).set_(it->second.storage(), t.storage_offset(), t.sizes(), t.strides());
  }
  ref.tensor = std::make_shared<at::Tensor>(std::move(t));
  return Value::tensor(std::move(ref));
}

std::string python_type_repr(const Value& v) {
  switch (v.kind) {
    case Kind::None: return "<class 'NoneType'>";
    case Kind::Bool: return "<class 'bool'>";
    case Kind::Int:
    case Kind::BigInt: return "<class 'int'>";
    case Kind::Float: return "<class 'float'>";
    case Kind::String: return "<class 'str'>";
    case Kind::Bytes: return "<class 'bytes'>";
    case Kind::Tuple: return "<class 'tuple'>";
    case Kind::List: return "<class 'list'>";
    case Kind::Dict: return v.dict().ordered ? "<class 'collections.OrderedDict'>" : "<class 'dict'>";
    case Kind::Set: return "<class 'set'>";
    case Kind::FrozenSet: return "<class 'frozenset'>";
    case Kind::Global: return "<class 'type'>";
    case Kind::Object: {
      const Object& o = v.object_ref();
      if (o.callable && o.callable->is(Kind::Global)) {
        const auto& g = o.callable->global_ref();
        return concat("<class '", g.module, ".", g.name, "'>");
      }
      return "<class 'object'>";
    }
    case Kind::Tensor: return "<class 'torch.Tensor'>";
    case Kind::Storage: return "<class 'torch.storage.TypedStorage'>";
  }
  return "<class 'object'>";
}

std::string torch_size_repr(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "torch.Size([";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << "])";
  return out.str();
}

}  // namespace detail

// ---- state_dict ----------------------------------------------------------------------------

namespace {

struct StateDictBuilder {
  StateDictBuilder(Dict* out_dict, Dict* metadata_dict) : out(out_dict), metadata(metadata_dict) {}
  Dict* out;
  Dict* metadata;
  ValuePtr version_key = interned_string("version");
  detail::DeviceCopies copies;

  void visit(const torch::nn::Module& module, const std::string& prefix) {
    // _metadata[prefix[:-1]]: '' for the root; CPython's one-character strings are singletons.
    const std::string meta_name = prefix.empty() ? std::string() : prefix.substr(0, prefix.size() - 1);
    ValuePtr meta_key = meta_name.size() <= 1 ? interned_string(meta_name) : Value::string(meta_name);
    auto local = Value::plain_dict();
    local->dict().set(version_key, Value::integer(python_module_version(module)));
    metadata->set(meta_key, local);

    auto add = [&](const std::string& name, const at::Tensor& tensor) {
      if (!tensor.defined()) return;  // registered as None in Python terms
      // At the root Python's key is the attribute name itself, an interned string.
      ValuePtr key = prefix.empty() ? interned_string(name) : Value::string(prefix + name);
      out->set(key, detail::tensor_value(tensor, copies));
    };
    for (const auto& item : module.named_parameters(/*recurse=*/false)) add(item.key(), item.value());
    for (const auto& item : module.named_buffers(/*recurse=*/false)) add(item.key(), item.value());
    for (const auto& child : module.named_children()) visit(*child.value(), prefix + child.key() + ".");
  }
};

}  // namespace

ValuePtr module_state_dict(const torch::nn::Module& module) {
  auto result = Value::ordered_dict();
  auto metadata = Value::ordered_dict();
  StateDictBuilder builder(&result->dict(), &metadata->dict());
  builder.visit(module, "");
  auto state = Value::plain_dict();
  state->dict().set(interned_string("_metadata"), metadata);
  result->dict().state = state;
  return result;
}

// ---- load_state_dict -----------------------------------------------------------------------

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

std::string quoted_list(const std::vector<std::string>& keys, const char* separator) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) out += separator;
    out += "\"" + keys[i] + "\"";
  }
  return out;
}

// Python's repr of a str, enough for exception texts in messages.
std::string python_str_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

class StateDictLoader {
 public:
  StateDictLoader(const Value& state_dict, LoadReport& report) : report_(report) {
    const Dict& dict = state_dict.dict();
    entries_.reserve(dict.size());
    for (const auto& [key, value] : dict.items()) {
      if (!key->is(Kind::String)) {
        throw StateError(concat("state_dict keys must be strings, got ", describe(*key), " (",
                                detail::python_type_repr(*key), ")"));
      }
      index_.emplace(key->as_string(), entries_.size());
      entries_.push_back({key->as_string(), value});
    }
    if (dict.state && dict.state->is(Kind::Dict)) {
      ValuePtr meta = dict.state->dict().get("_metadata");
      if (meta && meta->is(Kind::Dict)) metadata_ = &meta->dict();
    }
  }

  // The whole dict, for the root.
  std::vector<size_t> all_entries() const {
    std::vector<size_t> all(entries_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    return all;
  }

  // `local_entries`: the entries whose key starts with `prefix` (Python's child_state_dict).
  void visit(torch::nn::Module& module, const std::string& prefix, const std::vector<size_t>& local_entries) {
    const std::string cls = python_class_name(module);
    const std::optional<int64_t> version = saved_version(prefix);

    // local_state: own parameters, then buffers, None (undefined) ones left out.
    std::vector<std::pair<std::string, at::Tensor>> local;
    for (auto& item : module.named_parameters(false)) {
      if (item.value().defined()) local.emplace_back(item.key(), item.value());
    }
    for (auto& item : module.named_buffers(false)) {
      if (item.value().defined()) local.emplace_back(item.key(), item.value());
    }
    auto local_has = [&](const std::string& name) {
      for (const auto& l : local) {
        if (l.first == name) return true;
      }
      return false;
    };

    // _NormBase: before version 2 num_batches_tracked did not exist; a missing one is filled in.
    std::string filled_key;
    if (is_norm_base(cls) && (!version || *version < 2) && local_has("num_batches_tracked")) {
      const std::string key = prefix + "num_batches_tracked";
      if (!present(key)) filled_key = key;
    }
    // _InstanceNorm: files from before 0.4 carry running stats that it no longer tracks.
    if (is_instance_norm(cls) && !version && !local_has("running_mean")) {
      std::vector<std::string> stale;
      for (const char* name : {"running_mean", "running_var"}) {
        const std::string key = prefix + name;
        if (present(key)) stale.push_back(key);
      }
      if (!stale.empty()) {
        errors_.push_back(concat(
            "Unexpected running stats buffer(s) ", quoted_list(stale, " and "), " for ", cls,
            " with track_running_stats=False. If state_dict is a checkpoint saved before 0.4.0, this may be "
            "expected because ",
            cls, " does not track running stats by default since 0.4.0. Please remove these keys from "
            "state_dict. If the running stats are actually needed, instead set track_running_stats=True in ",
            cls, " to enable them. See the documentation of ", cls, " for details."));
        for (const auto& key : stale) popped_.insert(key);
      }
    }

    for (auto& [name, param] : local) {
      const std::string key = prefix + name;
      if (key == filled_key) continue;  // Python copies the module's own value onto itself
      const Entry* entry = find(key);
      if (!entry) {
        report_.missing_keys.push_back(key);
        continue;
      }
      copy_into(key, param, *entry->value);
    }

    // libtorch modules have no set_extra_state: a saved extra state is unexpected.
    const std::string extra_key = prefix + "_extra_state";
    if (present(extra_key)) report_.unexpected_keys.push_back(extra_key);

    const auto children = module.named_children();
    for (size_t i : local_entries) {
      const Entry& entry = entries_[i];
      if (entry.key == extra_key || popped_.count(entry.key)) continue;
      const std::string_view rest = std::string_view(entry.key).substr(prefix.size());
      const auto dot = rest.find('.');
      if (dot != std::string_view::npos) {
        if (!children.contains(std::string(rest.substr(0, dot)))) report_.unexpected_keys.push_back(entry.key);
      } else if (!local_has(std::string(rest))) {
        report_.unexpected_keys.push_back(entry.key);
      }
    }

    for (const auto& child : children) {
      const std::string child_prefix = prefix + child.key() + ".";
      std::vector<size_t> child_entries;
      for (size_t i : local_entries) {
        if (starts_with(entries_[i].key, child_prefix)) child_entries.push_back(i);
      }
      visit(*child.value(), child_prefix, child_entries);
    }
  }

  std::vector<std::string>& errors() { return errors_; }

 private:
  struct Entry {
    std::string key;
    ValuePtr value;
  };

  const Entry* find(const std::string& key) const {
    if (popped_.count(key)) return nullptr;
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  bool present(const std::string& key) const { return find(key) != nullptr; }

  std::optional<int64_t> saved_version(const std::string& prefix) const {
    if (!metadata_) return std::nullopt;
    const std::string name = prefix.empty() ? std::string() : prefix.substr(0, prefix.size() - 1);
    ValuePtr local = metadata_->get(name);
    if (!local || !local->is(Kind::Dict)) return std::nullopt;
    ValuePtr version = local->dict().get("version");
    if (!version || !version->is(Kind::Int)) return std::nullopt;
    return version->as_int();
  }

  void copy_into(const std::string& key, at::Tensor& param, const Value& value) {
    if (!value.is(Kind::Tensor)) {
      errors_.push_back(concat("While copying the parameter named \"", key,
                               "\", expected torch.Tensor or Tensor-like object from checkpoint but received ",
                               detail::python_type_repr(value)));
      return;
    }
    const TensorRef& ref = value.tensor_ref();
    if (!ref.tensor || !ref.tensor->defined()) {
      throw StateError(concat("state_dict value for \"", key, "\" is an undefined tensor"));
    }
    at::Tensor input = *ref.tensor;
    // Backward compatibility: a 1-element 1-dim tensor loads into a 0-dim one.
    if (param.dim() == 0 && input.dim() == 1 && input.size(0) == 1) input = input.select(0, 0);
    if (input.sizes() != param.sizes()) {
      report_.shape_mismatches.push_back(concat(key, ": checkpoint ", input.sizes(), ", model ", param.sizes()));
      errors_.push_back(concat("size mismatch for ", key, ": copying a param with shape ",
                               detail::torch_size_repr(input.sizes()),
                               " from checkpoint, the shape in current model is ",
                               detail::torch_size_repr(param.sizes()), "."));
      return;
    }
    try {
      at::NoGradGuard no_grad;
      param.copy_(input);
    } catch (const c10::Error& e) {
      errors_.push_back(concat("While copying the parameter named \"", key,
                               "\", whose dimensions in the model are ", detail::torch_size_repr(param.sizes()),
                               " and whose dimensions in the checkpoint are ",
                               detail::torch_size_repr(input.sizes()), ", an exception occurred : (",
                               python_str_repr(e.what_without_backtrace()), ",)."));
    }
  }

  LoadReport& report_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_set<std::string> popped_;
  const Dict* metadata_ = nullptr;
  std::vector<std::string> errors_;
};

}  // namespace

LoadReport load_module_state_dict(torch::nn::Module& module, const Value& state_dict, bool strict) {
  if (!state_dict.is(Kind::Dict)) {
    throw StateError(concat("Expected state_dict to be dict-like, got ", detail::python_type_repr(state_dict), "."));
  }
  LoadReport report;
  StateDictLoader loader(state_dict, report);
  loader.visit(module, "", loader.all_entries());

  std::vector<std::string>& errors = loader.errors();
  if (strict) {
    if (!report.unexpected_keys.empty()) {
      errors.insert(errors.begin(),
                    concat("Unexpected key(s) in state_dict: ", quoted_list(report.unexpected_keys, ", "), ". "));
    }
    if (!report.missing_keys.empty()) {
      errors.insert(errors.begin(),
                    concat("Missing key(s) in state_dict: ", quoted_list(report.missing_keys, ", "), ". "));
    }
  }
  if (!errors.empty()) {
    std::string message = concat("Error(s) in loading state_dict for ", python_class_name(module), ":");
    for (const auto& e : errors) message += "\n\t" + e;
    throw StateMismatchError(message, strict ? report.missing_keys : std::vector<std::string>{},
                             strict ? report.unexpected_keys : std::vector<std::string>{}, report.shape_mismatches);
  }
  return report;
}

}  // namespace fabricckpt::state
