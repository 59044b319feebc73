// One table per optimizer: Python's (torch 2.10) param group keys in order with their types and
// defaults, and the per-parameter state keys, mapped onto libtorch's options and state fields.
// To add an optimizer: write its table here and list it in optimizer_descriptors().
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <typeinfo>

#include "optimizer_descriptor.h"

namespace fabricckpt::state::optim {
namespace {

using namespace torch::optim;

// torch 2.10's Adam can decay weights the AdamW way and AdamW the Adam way; libtorch's cannot switch.
template <typename Options, bool Decoupled>
void decoupled_as_libtorch(const Value& saved, const Options& o, const char* optimizer, const std::string& what) {
  if (saved.is(Kind::None) || o.weight_decay() == 0.0 || detail::flag(saved, what) == Decoupled) return;
  throw StateError(concat(what, " is ", Decoupled ? "False" : "True", ", which libtorch's ", optimizer,
                          " cannot do; use ", Decoupled ? "Adam" : "AdamW"));
}

template <typename Opt, typename Options, typename State, bool Decoupled>
TableDescriptor<Opt, Options, State> adam_family(const char* name) {
  return {name,
          {
              float_key("lr", FABRICCKPT_FIELD(Options, lr)),
              betas_key(FABRICCKPT_FIELD(Options, betas)),
              float_key("eps", FABRICCKPT_FIELD(Options, eps)),
              // Adam's default weight_decay is the int 0, AdamW's the float 1e-2.
              Decoupled ? float_key("weight_decay", FABRICCKPT_FIELD(Options, weight_decay))
                        : zero_is_int_key("weight_decay", FABRICCKPT_FIELD(Options, weight_decay)),
              flag_key("amsgrad", FABRICCKPT_FIELD(Options, amsgrad)),
              constant_key<Options>("maximize", python_false, refuse_true<Options>),
              constant_key<Options>("foreach", python_none),
              constant_key<Options>("capturable", python_false),
              constant_key<Options>("differentiable", python_false),
              constant_key<Options>("fused", python_none),
              constant_key<Options>("decoupled_weight_decay", Decoupled ? python_true : python_false,
                                    decoupled_as_libtorch<Options, Decoupled>),
          },
          {
              step_key<Options, State>(FABRICCKPT_FIELD(State, step)),
              tensor_key<Options, State>("exp_avg", FABRICCKPT_FIELD(State, exp_avg)),
              tensor_key<Options, State>("exp_avg_sq", FABRICCKPT_FIELD(State, exp_avg_sq)),
              tensor_key<Options, State>("max_exp_avg_sq", FABRICCKPT_FIELD(State, max_exp_avg_sq),
                                         [](const Options& o) { return o.amsgrad(); }),
          }};
}

const auto kAdam = adam_family<Adam, AdamOptions, AdamParamState, false>("Adam");
const auto kAdamW = adam_family<AdamW, AdamWOptions, AdamWParamState, true>("AdamW");

const TableDescriptor<SGD, SGDOptions, SGDParamState> kSGD{
    "SGD",
    {
        float_key("lr", FABRICCKPT_FIELD(SGDOptions, lr)),
        zero_is_int_key("momentum", FABRICCKPT_FIELD(SGDOptions, momentum)),
        zero_is_int_key("dampening", FABRICCKPT_FIELD(SGDOptions, dampening)),
        zero_is_int_key("weight_decay", FABRICCKPT_FIELD(SGDOptions, weight_decay)),
        flag_key("nesterov", FABRICCKPT_FIELD(SGDOptions, nesterov)),
        constant_key<SGDOptions>("maximize", python_false, refuse_true<SGDOptions>),
        constant_key<SGDOptions>("foreach", python_none),
        constant_key<SGDOptions>("differentiable", python_false),
        constant_key<SGDOptions>("fused", python_none),
    },
    {
        // No buffer (or None, as older torch wrote with momentum 0): created at the next step.
        tensor_key<SGDOptions, SGDParamState>("momentum_buffer", FABRICCKPT_FIELD(SGDParamState, momentum_buffer),
                                              never<SGDOptions>),
    }};

const TableDescriptor<RMSprop, RMSpropOptions, RMSpropParamState> kRMSprop{
    "RMSprop",
    {
        float_key("lr", FABRICCKPT_FIELD(RMSpropOptions, lr)),
        zero_is_int_key("momentum", FABRICCKPT_FIELD(RMSpropOptions, momentum)),
        float_key("alpha", FABRICCKPT_FIELD(RMSpropOptions, alpha)),
        float_key("eps", FABRICCKPT_FIELD(RMSpropOptions, eps)),
        flag_key("centered", FABRICCKPT_FIELD(RMSpropOptions, centered)),
        zero_is_int_key("weight_decay", FABRICCKPT_FIELD(RMSpropOptions, weight_decay)),
        constant_key<RMSpropOptions>("capturable", python_false),
        constant_key<RMSpropOptions>("foreach", python_none),
        constant_key<RMSpropOptions>("maximize", python_false, refuse_true<RMSpropOptions>),
        constant_key<RMSpropOptions>("differentiable", python_false),
    },
    {
        step_key<RMSpropOptions, RMSpropParamState>(FABRICCKPT_FIELD(RMSpropParamState, step)),
        tensor_key<RMSpropOptions, RMSpropParamState>("square_avg", FABRICCKPT_FIELD(RMSpropParamState, square_avg)),
        tensor_key<RMSpropOptions, RMSpropParamState>("momentum_buffer",
                                                      FABRICCKPT_FIELD(RMSpropParamState, momentum_buffer),
                                                      [](const RMSpropOptions& o) { return o.momentum() > 0; }),
        tensor_key<RMSpropOptions, RMSpropParamState>("grad_avg", FABRICCKPT_FIELD(RMSpropParamState, grad_avg),
                                                      [](const RMSpropOptions& o) { return o.centered(); }),
    }};

const TableDescriptor<Adagrad, AdagradOptions, AdagradParamState> kAdagrad{
    "Adagrad",
    {
        float_key("lr", FABRICCKPT_FIELD(AdagradOptions, lr)),
        zero_is_int_key("lr_decay", FABRICCKPT_FIELD(AdagradOptions, lr_decay)),
        float_key("eps", FABRICCKPT_FIELD(AdagradOptions, eps)),
        zero_is_int_key("weight_decay", FABRICCKPT_FIELD(AdagradOptions, weight_decay)),
        zero_is_int_key("initial_accumulator_value", FABRICCKPT_FIELD(AdagradOptions, initial_accumulator_value)),
        constant_key<AdagradOptions>("foreach", python_none),
        constant_key<AdagradOptions>("maximize", python_false, refuse_true<AdagradOptions>),
        constant_key<AdagradOptions>("differentiable", python_false),
        constant_key<AdagradOptions>("fused", python_none),
    },
    {
        step_key<AdagradOptions, AdagradParamState>(FABRICCKPT_FIELD(AdagradParamState, step)),
        tensor_key<AdagradOptions, AdagradParamState>("sum", FABRICCKPT_FIELD(AdagradParamState, sum)),
    },
    // libtorch's Adagrad creates every state up front and never lazily; Python's would fail at the step.
    Layout{.needs_every_state = true}};

}  // namespace

const std::vector<const OptimizerDescriptor*>& optimizer_descriptors() {
  static const std::vector<const OptimizerDescriptor*> all{&kAdam, &kAdamW, &kSGD, &kRMSprop, &kAdagrad};
  return all;
}

const OptimizerDescriptor& descriptor_of(const Optimizer& optimizer) {
  std::string names;
  const auto& all = optimizer_descriptors();
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i]->describes(optimizer)) return *all[i];
    names += concat(i == 0 ? "" : i + 1 == all.size() ? " and " : ", ", all[i]->name());
  }
  throw StateError(concat("unsupported optimizer ", typeid(optimizer).name(), ": only ", names,
                          " have a Python state dict layout here"));
}

}  // namespace fabricckpt::state::optim
