// What the optimizer layer knows about one optimizer, as data: Python's param group keys in
// their order with their types and defaults, the per-parameter state keys, and how each maps
// to libtorch's options and state fields. optimizer_state.cpp is the one engine that walks
// these tables; optimizer_descriptors.cpp holds one table per optimizer. Private to the state layer.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/optim/optimizer.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"
#include "state_values.h"

namespace fabricckpt::state::optim {

using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;

// The type-erased view the engine uses; TableDescriptor below is the only implementation.
class OptimizerDescriptor {
 public:
  virtual ~OptimizerDescriptor() = default;
  virtual const char* name() const = 0;  // Python's class name, which libtorch's shares
  virtual bool describes(const Optimizer& optimizer) const = 0;
  // One dict per param group, Python's keys in Python's order, without 'params'.
  virtual std::vector<ValuePtr> write_groups(const Optimizer& optimizer) const = 0;
  // The per-parameter dict, or null when Python would have no entry.
  virtual ValuePtr write_state(const OptimizerParamState& state, detail::DeviceCopies& copies) const = 0;
  // The saved group's options over a copy of `current`; keys the file lacks keep their value.
  virtual std::unique_ptr<OptimizerOptions> read_group(const Dict& saved, size_t index,
                                                       const OptimizerOptions& current) const = 0;
  // libtorch's state for one parameter, or null when Python would create it lazily at the next step.
  virtual std::unique_ptr<OptimizerParamState> read_state(const Dict& saved, int64_t id, const at::Tensor& param,
                                                          const OptimizerOptions& options) const = 0;
  // libtorch creates this optimizer's state for every parameter up front (Adagrad), so a file must have it all.
  virtual bool needs_every_state() const = 0;
};

// The registry: every optimizer with a Python layout, and the one that describes `optimizer`
// (StateError naming the supported ones otherwise).
const std::vector<const OptimizerDescriptor*>& optimizer_descriptors();
const OptimizerDescriptor& descriptor_of(const Optimizer& optimizer);

// A libtorch option or state field: TORCH_ARG gives each a getter and a setter of the same name.
template <typename Owner, typename T>
struct Field {
  T (*get)(const Owner&);
  void (*set)(Owner&, T);
};
#define FABRICCKPT_FIELD(Owner, name)                                                      \
  Field<Owner, std::decay_t<decltype(std::declval<const Owner&>().name())>> {              \
    [](const Owner& o) { return o.name(); },                                               \
        [](Owner& o, std::decay_t<decltype(std::declval<const Owner&>().name())> v) { o.name(std::move(v)); } \
  }

// One key of a Python param group.
template <typename Options>
struct GroupKey {
  enum class Type {
    Float,      // a float
    ZeroIsInt,  // Python's default is the int 0: written as 0 when zero, else as a float
    Flag,       // a bool
    Betas,      // a pair of floats; groups whose pair equals the optimizer's defaults share one tuple
    Constant,   // an option libtorch lacks: always Python's default `constant`
  };
  const char* name;
  Type type;
  Field<Options, double> number{};
  Field<Options, bool> boolean{};
  Field<Options, std::tuple<double, double>> pair{};
  ValuePtr (*constant)() = nullptr;
  // For Constant keys: refuses a saved value libtorch cannot honour (what names the key for errors).
  void (*check)(const Value& saved, const Options& read_so_far, const char* optimizer, const std::string& what) = nullptr;
};

template <typename Options>
GroupKey<Options> float_key(const char* name, Field<Options, double> f) {
  return {name, GroupKey<Options>::Type::Float, f};
}
template <typename Options>
GroupKey<Options> zero_is_int_key(const char* name, Field<Options, double> f) {
  return {name, GroupKey<Options>::Type::ZeroIsInt, f};
}
template <typename Options>
GroupKey<Options> flag_key(const char* name, Field<Options, bool> f) {
  return {name, GroupKey<Options>::Type::Flag, {}, f};
}
template <typename Options>
GroupKey<Options> betas_key(Field<Options, std::tuple<double, double>> f) {
  return {"betas", GroupKey<Options>::Type::Betas, {}, {}, f};
}
inline ValuePtr python_false() { return Value::boolean(false); }
inline ValuePtr python_true() { return Value::boolean(true); }
inline ValuePtr python_none() { return Value::none(); }
template <typename Options>
GroupKey<Options> constant_key(const char* name, ValuePtr (*constant)(),
                               decltype(GroupKey<Options>::check) check = nullptr) {
  return {name, GroupKey<Options>::Type::Constant, {}, {}, {}, constant, check};
}

// Refuses a saved True: libtorch's optimizers cannot maximize.
template <typename Options>
void refuse_true(const Value& saved, const Options&, const char* optimizer, const std::string& what) {
  if (!saved.is(Kind::None) && detail::flag(saved, what)) {
    throw StateError(concat(what, ": maximize=True is not supported by libtorch's ", optimizer));
  }
}

// One key of Python's per-parameter state dict.
template <typename Options, typename State>
struct StateKey {
  const char* name;
  bool is_step;                       // a float32 0-dim tensor in Python, libtorch's int64 step
  Field<State, int64_t> step{};
  Field<State, at::Tensor> tensor{};  // a tensor of the parameter's shape
  // Whether a load needs the tensor (else a missing one stays undefined); null: always.
  bool (*required)(const Options&) = nullptr;
};

template <typename Options, typename State>
StateKey<Options, State> step_key(Field<State, int64_t> f) {
  return {"step", true, f};
}
template <typename Options, typename State>
StateKey<Options, State> tensor_key(const char* name, Field<State, at::Tensor> f,
                                    bool (*required)(const Options&) = nullptr) {
  return {name, false, {}, f, required};
}
// For tensors that are created lazily at the next step when absent (SGD's momentum buffer).
template <typename Options>
bool never(const Options&) {
  return false;
}

struct Layout {
  bool needs_every_state = false;  // see OptimizerDescriptor::needs_every_state
};

// Everything an optimizer needs, from its tables.
template <typename Opt, typename Options, typename State>
class TableDescriptor final : public OptimizerDescriptor {
 public:
  TableDescriptor(const char* name, std::vector<GroupKey<Options>> group, std::vector<StateKey<Options, State>> state,
                  Layout layout = {})
      : name_(name), group_(std::move(group)), state_(std::move(state)), layout_(layout) {}

  const char* name() const override { return name_; }
  bool describes(const Optimizer& optimizer) const override { return dynamic_cast<const Opt*>(&optimizer); }
  bool needs_every_state() const override { return layout_.needs_every_state; }

  std::vector<ValuePtr> write_groups(const Optimizer& optimizer) const override {
    const Options& defaults = options_of(optimizer.defaults());
    std::vector<ValuePtr> shared(group_.size());  // per key: the node groups with the default value share
    std::vector<ValuePtr> out;
    for (const auto& group : optimizer.param_groups()) {
      if (!group.has_options()) throw StateError("optimizer parameter group without options");
      const Options& o = options_of(group.options());
      auto packed = Value::plain_dict();
      for (size_t k = 0; k < group_.size(); ++k) {
        packed->dict().set(interned_string(group_[k].name), write_key(group_[k], o, defaults, shared[k]));
      }
      out.push_back(std::move(packed));
    }
    return out;
  }

  ValuePtr write_state(const OptimizerParamState& param_state, detail::DeviceCopies& copies) const override {
    const State& s = state_of(param_state);
    auto out = Value::plain_dict();
    for (const auto& key : state_) {
      if (key.is_step) {
        // torch 2.10 keeps 'step' as a float32 0-dim tensor (not capturable, not fused).
        out->dict().set(interned_string(key.name),
                        detail::tensor_value(at::scalar_tensor(static_cast<double>(key.step.get(s)), at::kFloat), copies));
      } else if (const at::Tensor t = key.tensor.get(s); t.defined()) {
        out->dict().set(interned_string(key.name), detail::tensor_value(t, copies));
      }
    }
    return out->dict().size() == 0 ? nullptr : out;
  }

  std::unique_ptr<OptimizerOptions> read_group(const Dict& saved, size_t index,
                                               const OptimizerOptions& current) const override {
    auto o = std::make_unique<Options>(options_of(current));
    for (const auto& key : group_) {
      ValuePtr v = saved.get(key.name);
      if (!v) continue;
      const std::string what = concat("param_groups[", index, "]['", key.name, "']");
      using Type = typename GroupKey<Options>::Type;
      switch (key.type) {
        case Type::Float:
        case Type::ZeroIsInt: key.number.set(*o, detail::number(*v, what)); break;
        case Type::Flag: key.boolean.set(*o, detail::flag(*v, what)); break;
        case Type::Betas: {
          if (!(v->is(Kind::Tuple) || v->is(Kind::List)) || v->items().size() != 2) {
            throw StateError(concat(what, " is ", describe(*v), ", expected a pair of numbers"));
          }
          key.pair.set(*o, {detail::number(*v->items()[0], what), detail::number(*v->items()[1], what)});
          break;
        }
        case Type::Constant:
          if (key.check) key.check(*v, *o, name_, what);
          break;
      }
    }
    return o;
  }

  std::unique_ptr<OptimizerParamState> read_state(const Dict& saved, int64_t id, const at::Tensor& param,
                                                  const OptimizerOptions& options) const override {
    const Options& o = options_of(options);
    auto s = std::make_unique<State>();
    bool any = false;
    for (const auto& key : state_) {
      if (key.is_step) {
        key.step.set(*s, read_step(saved, id));
        any = true;
      } else {
        at::Tensor t = read_tensor(saved, id, key.name, param, !key.required || key.required(o));
        any = any || t.defined();
        key.tensor.set(*s, std::move(t));
      }
    }
    return any ? std::move(s) : nullptr;
  }

 private:
  const Options& options_of(const OptimizerOptions& options) const {
    const auto* typed = dynamic_cast<const Options*>(&options);
    if (!typed) throw StateError(concat(name_, " parameter group has options of another optimizer"));
    return *typed;
  }
  const State& state_of(const OptimizerParamState& state) const {
    const auto* typed = dynamic_cast<const State*>(&state);
    if (!typed) throw StateError(concat(name_, " holds parameter state of another optimizer"));
    return *typed;
  }

  static ValuePtr write_key(const GroupKey<Options>& key, const Options& o, const Options& defaults, ValuePtr& shared) {
    using Type = typename GroupKey<Options>::Type;
    switch (key.type) {
      case Type::Float: return Value::floating(key.number.get(o));
      case Type::ZeroIsInt: return detail::int_zero_or_float(key.number.get(o));
      case Type::Flag: return Value::boolean(key.boolean.get(o));
      case Type::Betas: {
        const auto b = key.pair.get(o);
        auto make = [&] { return Value::tuple({Value::floating(std::get<0>(b)), Value::floating(std::get<1>(b))}); };
        if (b != key.pair.get(defaults)) return make();
        if (!shared) shared = make();
        return shared;
      }
      case Type::Constant: return key.constant();
    }
    throw StateError("unreachable");
  }

  ValuePtr get(const Dict& saved, int64_t id, const char* name, bool required) const {
    ValuePtr v = saved.get(name);
    if (v && v->is(Kind::None)) v = nullptr;
    if (!v && required) {
      throw StateError(concat("optimizer state for parameter ", id, " has no '", name, "', which ", name_, " needs"));
    }
    return v;
  }

  int64_t read_step(const Dict& saved, int64_t id) const {
    ValuePtr v = get(saved, id, "step", true);
    const std::string what = concat("state[", id, "]['step']");
    const double s = detail::number(*v, what);
    if (!(s >= 0) || s > 9.0e18) throw StateError(concat(what, " is ", describe(*v), ", not a step count"));
    return static_cast<int64_t>(std::llround(s));
  }

  // A copy of the saved tensor, cast to the parameter's dtype when that is floating.
  at::Tensor read_tensor(const Dict& saved, int64_t id, const char* name, const at::Tensor& param, bool required) const {
    ValuePtr v = get(saved, id, name, required);
    if (!v) return {};
    const std::string what = concat("state[", id, "]['", name, "']");
    if (!v->is(Kind::Tensor) || !v->tensor_ref().tensor || !v->tensor_ref().tensor->defined()) {
      throw StateError(concat(what, " is ", describe(*v), ", expected a tensor"));
    }
    const at::Tensor& t = *v->tensor_ref().tensor;
    if (t.sizes() != param.sizes()) {
      throw StateError(concat(what, " has shape ", detail::torch_size_repr(t.sizes()), ", the parameter has shape ",
                              detail::torch_size_repr(param.sizes())));
    }
    const auto dtype = param.is_floating_point() ? param.scalar_type() : t.scalar_type();
    return t.detach().to(param.device(), dtype, /*non_blocking=*/false, /*copy=*/true);
  }

  const char* name_;
  std::vector<GroupKey<Options>> group_;
  std::vector<StateKey<Options, State>> state_;
  Layout layout_;
};

}  // namespace fabricckpt::state::optim
