// Optimizer <-> state dict, as Python's torch.optim.Optimizer.state_dict() /
// load_state_dict() lay it out in torch 2.10, for libtorch's Adam, AdamW, SGD,
// RMSprop and Adagrad.
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <typeinfo>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"

namespace fabricckpt::state {
namespace {

using torch::optim::Adagrad;
using torch::optim::AdagradOptions;
using torch::optim::AdagradParamState;
using torch::optim::Adam;
using torch::optim::AdamOptions;
using torch::optim::AdamParamState;
using torch::optim::AdamW;
using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;
using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;
using torch::optim::RMSprop;
using torch::optim::RMSpropOptions;
using torch::optim::RMSpropParamState;
using torch::optim::SGD;
using torch::optim::SGDOptions;
using torch::optim::SGDParamState;

enum class Algo { Adam, AdamW, SGD, RMSprop, Adagrad };

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::Adam: return "Adam";
    case Algo::AdamW: return "AdamW";
    case Algo::SGD: return "SGD";
    case Algo::RMSprop: return "RMSprop";
    case Algo::Adagrad: return "Adagrad";
  }
  return "?";
}

Algo algo_of(const Optimizer& optimizer) {
  if (dynamic_cast<const Adam*>(&optimizer)) return Algo::Adam;
  if (dynamic_cast<const AdamW*>(&optimizer)) return Algo::AdamW;
  if (dynamic_cast<const SGD*>(&optimizer)) return Algo::SGD;
  if (dynamic_cast<const RMSprop*>(&optimizer)) return Algo::RMSprop;
  if (dynamic_cast<const Adagrad*>(&optimizer)) return Algo::Adagrad;
  throw StateError(concat("unsupported optimizer ", typeid(optimizer).name(),
                          ": only Adam, AdamW, SGD, RMSprop and Adagrad have a Python state dict layout here"));
}

template <typename T>
const T& cast_options(const OptimizerOptions& options, Algo algo) {
  const T* typed = dynamic_cast<const T*>(&options);
  if (!typed) throw StateError(concat(algo_name(algo), " parameter group has options of another optimizer"));
  return *typed;
}

template <typename T>
const T& cast_state(const OptimizerParamState& state, Algo algo) {
  const T* typed = dynamic_cast<const T*>(&state);
  if (!typed) throw StateError(concat(algo_name(algo), " holds parameter state of another optimizer"));
  return *typed;
}

// ---- state_dict ----------------------------------------------------------------------------

ValuePtr key(const char* name) { return interned_string(name); }

// Python's default for these is the int literal 0: equal values keep that type.
ValuePtr int_zero_or_float(double v) { return v == 0.0 ? Value::integer(0) : Value::floating(v); }

ValuePtr step_tensor(int64_t step, detail::DeviceCopies& copies) {
  // torch 2.10 keeps 'step' as a float32 0-dim tensor (not capturable, not fused).
  return detail::tensor_value(at::scalar_tensor(static_cast<double>(step), at::kFloat), copies);
}

class GroupWriter {
 public:
  GroupWriter(const Optimizer& optimizer, Algo algo) : algo_(algo) {
    // Groups that inherit Python's default betas share that one tuple object.
    if (algo == Algo::Adam) default_betas_ = cast_options<AdamOptions>(optimizer.defaults(), algo).betas();
    if (algo == Algo::AdamW) default_betas_ = cast_options<AdamWOptions>(optimizer.defaults(), algo).betas();
  }

  ValuePtr write(const OptimizerOptions& options) {
    auto group = Value::plain_dict();
    Dict& d = group->dict();
    auto set = [&](const char* name, ValuePtr v) { d.set(key(name), std::move(v)); };
    switch (algo_) {
      case Algo::Adam: {
        const auto& o = cast_options<AdamOptions>(options, algo_);
        set("lr", Value::floating(o.lr()));
        set("betas", betas(o.betas()));
        set("eps", Value::floating(o.eps()));
        set("weight_decay", int_zero_or_float(o.weight_decay()));
        set("amsgrad", Value::boolean(o.amsgrad()));
        adam_tail(set, false);
        break;
      }
      case Algo::AdamW: {
        const auto& o = cast_options<AdamWOptions>(options, algo_);
        set("lr", Value::floating(o.lr()));
        set("betas", betas(o.betas()));
        set("eps", Value::floating(o.eps()));
        set("weight_decay", Value::floating(o.weight_decay()));  // Python's default is the float 1e-2
        set("amsgrad", Value::boolean(o.amsgrad()));
        adam_tail(set, true);
        break;
      }
      case Algo::SGD: {
        const auto& o = cast_options<SGDOptions>(options, algo_);
        set("lr", Value::floating(o.lr()));
        set("momentum", int_zero_or_float(o.momentum()));
        set("dampening", int_zero_or_float(o.dampening()));
        set("weight_decay", int_zero_or_float(o.weight_decay()));
        set("nesterov", Value::boolean(o.nesterov()));
        set("maximize", Value::boolean(false));
        set("foreach", Value::none());
        set("differentiable", Value::boolean(false));
        set("fused", Value::none());
        break;
      }
      case Algo::RMSprop: {
        const auto& o = cast_options<RMSpropOptions>(options, algo_);
        set("lr", Value::floating(o.lr()));
        set("momentum", int_zero_or_float(o.momentum()));
        set("alpha", Value::floating(o.alpha()));
        set("eps", Value::floating(o.eps()));
        set("centered", Value::boolean(o.centered()));
        set("weight_decay", int_zero_or_float(o.weight_decay()));
        set("capturable", Value::boolean(false));
        set("foreach", Value::none());
        set("maximize", Value::boolean(false));
        set("differentiable", Value::boolean(false));
        break;
      }
      case Algo::Adagrad: {
        const auto& o = cast_options<AdagradOptions>(options, algo_);
        set("lr", Value::floating(o.lr()));
        set("lr_decay", int_zero_or_float(o.lr_decay()));
        set("eps", Value::floating(o.eps()));
        set("weight_decay", int_zero_or_float(o.weight_decay()));
        set("initial_accumulator_value", int_zero_or_float(o.initial_accumulator_value()));
        set("foreach", Value::none());
        set("maximize", Value::boolean(false));
        set("differentiable", Value::boolean(false));
        set("fused", Value::none());
        break;
      }
    }
    return group;
  }

 private:
  using Betas = std::tuple<double, double>;

  template <typename Set>
  static void adam_tail(Set& set, bool decoupled) {
    set("maximize", Value::boolean(false));
    set("foreach", Value::none());
    set("capturable", Value::boolean(false));
    set("differentiable", Value::boolean(false));
    set("fused", Value::none());
    set("decoupled_weight_decay", Value::boolean(decoupled));
  }

  ValuePtr betas(const Betas& b) {
    auto make = [&] {
      return Value::tuple({Value::floating(std::get<0>(b)), Value::floating(std::get<1>(b))});
    };
    if (!default_betas_ || b != *default_betas_) return make();
    if (!shared_betas_) shared_betas_ = make();
    return shared_betas_;
  }

  Algo algo_;
  std::optional<Betas> default_betas_;
  ValuePtr shared_betas_;
};

// The per-parameter dict, or null when Python would have no entry.
ValuePtr write_param_state(const OptimizerParamState& state, Algo algo, detail::DeviceCopies& copies) {
  auto out = Value::plain_dict();
  Dict& d = out->dict();
  auto tensor = [&](const char* name, const at::Tensor& t) {
    if (t.defined()) d.set(key(name), detail::tensor_value(t, copies));
  };
  switch (algo) {
    case Algo::Adam: {
      const auto& s = cast_state<AdamParamState>(state, algo);
      d.set(key("step"), step_tensor(s.step(), copies));
      tensor("exp_avg", s.exp_avg());
      tensor("exp_avg_sq", s.exp_avg_sq());
      tensor("max_exp_avg_sq", s.max_exp_avg_sq());
      break;
    }
    case Algo::AdamW: {
      const auto& s = cast_state<AdamWParamState>(state, algo);
      d.set(key("step"), step_tensor(s.step(), copies));
      tensor("exp_avg", s.exp_avg());
      tensor("exp_avg_sq", s.exp_avg_sq());
      tensor("max_exp_avg_sq", s.max_exp_avg_sq());
      break;
    }
    case Algo::SGD: {
      const auto& s = cast_state<SGDParamState>(state, algo);
      tensor("momentum_buffer", s.momentum_buffer());
      break;
    }
    case Algo::RMSprop: {
      const auto& s = cast_state<RMSpropParamState>(state, algo);
      d.set(key("step"), step_tensor(s.step(), copies));
      tensor("square_avg", s.square_avg());
      tensor("momentum_buffer", s.momentum_buffer());
      tensor("grad_avg", s.grad_avg());
      break;
    }
    case Algo::Adagrad: {
      const auto& s = cast_state<AdagradParamState>(state, algo);
      d.set(key("step"), step_tensor(s.step(), copies));
      tensor("sum", s.sum());
      break;
    }
  }
  return d.size() == 0 ? nullptr : out;
}

}  // namespace

ValuePtr optimizer_state_dict(const Optimizer& optimizer) {
  const Algo algo = algo_of(optimizer);

  // Indices run across the groups; a parameter met again keeps its first index.
  std::unordered_map<const void*, int64_t> index_of;
  auto groups = Value::list();
  GroupWriter group_writer(optimizer, algo);
  int64_t next = 0;
  for (const auto& group : optimizer.param_groups()) {
    if (!group.has_options()) throw StateError("optimizer parameter group without options");
    ValuePtr packed = group_writer.write(group.options());
    auto params = Value::list();
    for (const auto& p : group.params()) {
      auto [it, inserted] = index_of.emplace(p.unsafeGetTensorImpl(), next);
      params->items().push_back(Value::integer(it->second));
      ++next;
    }
    packed->dict().set(key("params"), params);
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
    if (ValuePtr entry = write_param_state(*param_state, algo, copies)) {
      state->dict().set(Value::integer(index), entry);
    }
  }

  auto out = Value::plain_dict();
  out->dict().set(key("state"), state);
  out->dict().set(key("param_groups"), groups);
  return out;
}

// ---- load_state_dict -----------------------------------------------------------------------

namespace {

[[noreturn]] void keyed_by_name() {
  throw StateError(
      "optimizer state dict is keyed by parameter name (an FSDP full or consolidated state dict); only "
      "state dicts keyed by parameter index are supported");
}

double number(const Value& v, const std::string& what) {
  switch (v.kind) {
    case Kind::Bool: return v.as_bool() ? 1.0 : 0.0;
    case Kind::Int:
    case Kind::Float: return v.as_float();
    case Kind::Tensor: {
      const auto& t = v.tensor_ref().tensor;
      if (t && t->defined() && t->numel() == 1) return t->item<double>();
      break;
    }
    default: break;
  }
  throw StateError(concat(what, " is ", describe(v), ", expected a number"));
}

bool flag(const Value& v, const std::string& what) {
  if (v.is(Kind::Bool)) return v.as_bool();
  if (v.is(Kind::Int)) return v.as_int() != 0;
  throw StateError(concat(what, " is ", describe(v), ", expected a bool"));
}

// Reads a saved param group's options into a copy of the current ones.
class GroupReader {
 public:
  GroupReader(const Dict& group, size_t index, Algo algo) : g_(group), index_(index), algo_(algo) {}

  std::unique_ptr<OptimizerOptions> read(const OptimizerOptions& current) {
    unsupported_flag("maximize", "maximize=True");
    switch (algo_) {
      case Algo::Adam: {
        auto o = std::make_unique<AdamOptions>(cast_options<AdamOptions>(current, algo_));
        num("lr", [&](double v) { o->lr(v); });
        betas([&](double a, double b) { o->betas({a, b}); });
        num("eps", [&](double v) { o->eps(v); });
        num("weight_decay", [&](double v) { o->weight_decay(v); });
        boolean("amsgrad", [&](bool v) { o->amsgrad(v); });
        decoupled(false, o->weight_decay());
        return o;
      }
      case Algo::AdamW: {
        auto o = std::make_unique<AdamWOptions>(cast_options<AdamWOptions>(current, algo_));
        num("lr", [&](double v) { o->lr(v); });
        betas([&](double a, double b) { o->betas({a, b}); });
        num("eps", [&](double v) { o->eps(v); });
        num("weight_decay", [&](double v) { o->weight_decay(v); });
        boolean("amsgrad", [&](bool v) { o->amsgrad(v); });
        decoupled(true, o->weight_decay());
        return o;
      }
      case Algo::SGD: {
        auto o = std::make_unique<SGDOptions>(cast_options<SGDOptions>(current, algo_));
        num("lr", [&](double v) { o->lr(v); });
        num("momentum", [&](double v) { o->momentum(v); });
        num("dampening", [&](double v) { o->dampening(v); });
        num("weight_decay", [&](double v) { o->weight_decay(v); });
        boolean("nesterov", [&](bool v) { o->nesterov(v); });
        return o;
      }
      case Algo::RMSprop: {
        auto o = std::make_unique<RMSpropOptions>(cast_options<RMSpropOptions>(current, algo_));
        num("lr", [&](double v) { o->lr(v); });
        num("momentum", [&](double v) { o->momentum(v); });
        num("alpha", [&](double v) { o->alpha(v); });
        num("eps", [&](double v) { o->eps(v); });
        boolean("centered", [&](bool v) { o->centered(v); });
        num("weight_decay", [&](double v) { o->weight_decay(v); });
        return o;
      }
      case Algo::Adagrad: {
        auto o = std::make_unique<AdagradOptions>(cast_options<AdagradOptions>(current, algo_));
        num("lr", [&](double v) { o->lr(v); });
        num("lr_decay", [&](double v) { o->lr_decay(v); });
        num("eps", [&](double v) { o->eps(v); });
        num("weight_decay", [&](double v) { o->weight_decay(v); });
        num("initial_accumulator_value", [&](double v) { o->initial_accumulator_value(v); });
        return o;
      }
    }
    throw StateError("unreachable");
  }

 private:
  std::string what(const char* name) const { return concat("param_groups[", index_, "]['", name, "']"); }

  template <typename F>
  void num(const char* name, F set) {
    if (ValuePtr v = g_.get(name)) set(number(*v, what(name)));
  }
  template <typename F>
  void boolean(const char* name, F set) {
    if (ValuePtr v = g_.get(name)) set(flag(*v, what(name)));
  }
  template <typename F>
  void betas(F set) {
    ValuePtr v = g_.get("betas");
    if (!v) return;
    if (!(v->is(Kind::Tuple) || v->is(Kind::List)) || v->items().size() != 2) {
      throw StateError(concat(what("betas"), " is ", describe(*v), ", expected a pair of numbers"));
    }
    set(number(*v->items()[0], what("betas")), number(*v->items()[1], what("betas")));
  }
  void unsupported_flag(const char* name, const char* setting) {
    ValuePtr v = g_.get(name);
    if (v && !v->is(Kind::None) && flag(*v, what(name))) {
      throw StateError(concat(what(name), ": ", setting, " is not supported by libtorch's ", algo_name(algo_)));
    }
  }
  // torch 2.10's Adam can decay weights the AdamW way; libtorch's Adam and AdamW cannot switch.
  void decoupled(bool native, double weight_decay) {
    ValuePtr v = g_.get("decoupled_weight_decay");
    if (!v || v->is(Kind::None) || weight_decay == 0.0) return;
    if (flag(*v, what("decoupled_weight_decay")) != native) {
      throw StateError(concat(what("decoupled_weight_decay"), " is ", native ? "False" : "True", ", which libtorch's ",
                              algo_name(algo_), " cannot do; use ", native ? "Adam" : "AdamW"));
    }
  }

  const Dict& g_;
  size_t index_;
  Algo algo_;
};

class StateReader {
 public:
  StateReader(const Dict& saved, const at::Tensor& param, int64_t id, Algo algo, const OptimizerOptions& options)
      : d_(saved), param_(param), id_(id), algo_(algo), options_(options) {}

  // The libtorch state, or null when Python would initialize it lazily at the next step.
  std::unique_ptr<OptimizerParamState> read() {
    switch (algo_) {
      case Algo::Adam: {
        auto s = std::make_unique<AdamParamState>();
        s->step(step());
        s->exp_avg(tensor("exp_avg", true));
        s->exp_avg_sq(tensor("exp_avg_sq", true));
        s->max_exp_avg_sq(tensor("max_exp_avg_sq", cast_options<AdamOptions>(options_, algo_).amsgrad()));
        return s;
      }
      case Algo::AdamW: {
        auto s = std::make_unique<AdamWParamState>();
        s->step(step());
        s->exp_avg(tensor("exp_avg", true));
        s->exp_avg_sq(tensor("exp_avg_sq", true));
        s->max_exp_avg_sq(tensor("max_exp_avg_sq", cast_options<AdamWOptions>(options_, algo_).amsgrad()));
        return s;
      }
      case Algo::SGD: {
        // No buffer (or None, as older torch wrote with momentum 0): created at the next step.
        at::Tensor buffer = tensor("momentum_buffer", false);
        if (!buffer.defined()) return nullptr;
        auto s = std::make_unique<SGDParamState>();
        s->momentum_buffer(buffer);
        return s;
      }
      case Algo::RMSprop: {
        const auto& o = cast_options<RMSpropOptions>(options_, algo_);
        auto s = std::make_unique<RMSpropParamState>();
        s->step(step());
        s->square_avg(tensor("square_avg", true));
        s->momentum_buffer(tensor("momentum_buffer", o.momentum() > 0));
        s->grad_avg(tensor("grad_avg", o.centered()));
        return s;
      }
      case Algo::Adagrad: {
        auto s = std::make_unique<AdagradParamState>();
        s->step(step());
        s->sum(tensor("sum", true));
        return s;
      }
    }
    return nullptr;
  }

 private:
  std::string what(const char* name) const { return concat("state[", id_, "]['", name, "']"); }

  ValuePtr get(const char* name, bool required) const {
    ValuePtr v = d_.get(name);
    if (v && v->is(Kind::None)) v = nullptr;
    if (!v && required) {
      throw StateError(concat("optimizer state for parameter ", id_, " has no '", name, "', which ",
                              algo_name(algo_), " needs"));
    }
    return v;
  }

  int64_t step() const {
    ValuePtr v = get("step", true);
    const double s = number(*v, what("step"));
    if (!(s >= 0) || s > 9.0e18) throw StateError(concat(what("step"), " is ", describe(*v), ", not a step count"));
    return static_cast<int64_t>(std::llround(s));
  }

  // A copy of the saved tensor, cast to the parameter's dtype when that is floating.
  at::Tensor tensor(const char* name, bool required) const {
    ValuePtr v = get(name, required);
    if (!v) return {};
    if (!v->is(Kind::Tensor) || !v->tensor_ref().tensor || !v->tensor_ref().tensor->defined()) {
      throw StateError(concat(what(name), " is ", describe(*v), ", expected a tensor"));
    }
    const at::Tensor& saved = *v->tensor_ref().tensor;
    if (saved.sizes() != param_.sizes()) {
      throw StateError(concat(what(name), " has shape ", detail::torch_size_repr(saved.sizes()),
                              ", the parameter has shape ", detail::torch_size_repr(param_.sizes())));
    }
    const auto dtype = param_.is_floating_point() ? param_.scalar_type() : saved.scalar_type();
    return saved.detach().to(param_.device(), dtype, /*non_blocking=*/false, /*copy=*/true);
  }

  const Dict& d_;
  const at::Tensor& param_;
  int64_t id_;
  Algo algo_;
  const OptimizerOptions& options_;
};

const Value::Items& sequence(const Value& v, const std::string& what) {
  if (!v.is(Kind::List) && !v.is(Kind::Tuple)) {
    throw StateError(concat(what, " is ", describe(v), ", expected a list"));
  }
  return v.items();
}

const Dict& dict_of(const Value& v, const std::string& what) {
  if (!v.is(Kind::Dict)) throw StateError(concat(what, " is ", describe(v), ", expected a dict"));
  return v.dict();
}

}  // namespace

void load_optimizer_state_dict(Optimizer& optimizer, const Value& state_dict) {
  const Algo algo = algo_of(optimizer);
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
    new_options.push_back(GroupReader(saved[i]->dict(), i, algo).read(groups[i].options()));
  }

  std::vector<std::pair<void*, std::unique_ptr<OptimizerParamState>>> new_state;
  for (const auto& [id_value, entry] : dict_of(*saved_state, "'state'").items()) {
    if (id_value->is(Kind::String)) keyed_by_name();
    if (!id_value->is(Kind::Int)) continue;  // Python keeps such entries but no parameter uses them
    auto it = id_map.find(id_value->as_int());
    if (it == id_map.end()) continue;
    const Target& target = it->second;
    const Dict& d = dict_of(*entry, concat("state[", id_value->as_int(), "]"));
    StateReader reader(d, target.param, id_value->as_int(), algo, *new_options[target.group]);
    if (auto s = reader.read()) new_state.emplace_back(target.param.unsafeGetTensorImpl(), std::move(s));
  }
  if (algo == Algo::Adagrad) {
    // libtorch's Adagrad creates every state up front and never lazily; Python's would fail at the step.
    for (const auto& [id, target] : id_map) {
      const void* impl = target.param.unsafeGetTensorImpl();
      bool found = std::any_of(new_state.begin(), new_state.end(), [&](const auto& s) { return s.first == impl; });
      if (!found) throw StateError(concat("Adagrad state for parameter ", id, " is missing"));
    }
  }

  for (size_t i = 0; i < groups.size(); ++i) groups[i].set_options(std::move(new_options[i]));
  auto& state = optimizer.state();
  state.clear();
  for (auto& [impl, s] : new_state) state[impl] = std::move(s);
}

}  // namespace fabricckpt::state
