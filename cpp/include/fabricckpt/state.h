// The state layer: libtorch modules and optimizers <-> the state dicts Python's
// nn.Module.state_dict() and torch.optim.Optimizer.state_dict() produce.
//
// Python is the specification: the dicts built here, pickled by the format
// layer, give the bytes torch.save writes for the equivalent Python objects
// (same keys, same key order, same value types, and the same object sharing,
// which decides where the pickle writes memo references).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "fabricckpt/value.h"

namespace fabricckpt::state {

// One string node per distinct text for the whole process, standing for a
// string CPython interns: identifiers written in Python source ('version',
// '_metadata', 'step', 'lr', ...), attribute names set with setattr (a
// module's own parameter and buffer names) and one-character strings. CPython
// shares such a string between every dict of a checkpoint, so the pickle
// writes it once and refers back to it afterwards; sharing the node here
// reproduces that. Code building other parts of a checkpoint (top-level keys
// such as 'step') should take its identifier-like keys from here as well.
ValuePtr interned_string(std::string_view text);

// The Python class name of a libtorch module: Module::name() without its
// namespace and without libtorch's "Impl" suffix ("torch::nn::LinearImpl" ->
// "Linear"; a custom "app::Net" -> "Net").
std::string python_class_name(const torch::nn::Module& module);

// The `_version` of the Python class that corresponds to a libtorch module:
// 2 for the batch and instance norms (torch.nn.modules.batchnorm._NormBase),
// 1 for every other class of torch.nn and for unknown modules.
int64_t python_module_version(const torch::nn::Module& module);

// Python's module.state_dict(): an OrderedDict name -> detached tensor (sharing
// storage with the parameter or buffer), per module in pre-order: its own
// parameters (registration order, undefined ones skipped), its own buffers,
// then its children's entries prefixed "child.". Dict::state is
// {'_metadata': OrderedDict(prefix -> {'version': N})} with an entry for every
// module, parameterless ones included ('' for the root).
// Tensors on another device are copied to the CPU (one copy per storage) and
// keep their device as location tag ("cuda:0").
ValuePtr module_state_dict(const torch::nn::Module& module);

// What a non-strict load could not match, in Python's order; shape mismatches
// as "key: checkpoint [2, 3], model [3, 3]" (always an error, as in Python).
struct LoadReport {
  std::vector<std::string> missing_keys, unexpected_keys, shape_mismatches;
};

// Python's module.load_state_dict(state_dict, strict). Values are copied into
// the parameters and buffers in place (Tensor::copy_ under NoGradGuard, which
// converts the dtype as Python does). Everything that matches is loaded; then
// StateMismatchError("Error(s) in loading state_dict for <Class>:\n\t...") is thrown
// when there are error messages (size mismatches, non-tensor values) or, with
// `strict`, missing or unexpected keys, in Python's wording and order.
// `state_dict` is a dict or OrderedDict with string keys. Its `_metadata` is
// read only for the module versions that Python's batch/instance norm loading
// looks at (a missing num_batches_tracked is accepted for version < 2 / none).
LoadReport load_module_state_dict(torch::nn::Module& module, const Value& state_dict, bool strict);

// Python's optimizer.state_dict() for libtorch's Adam, AdamW, SGD, RMSprop and
// Adagrad (others: StateError "unsupported optimizer"):
//   {'state': {index: {...}}, 'param_groups': [{<options>, 'params': [indices]}]}
// Indices run across the groups in order (a parameter listed twice keeps its
// first index); 'state' has an entry for each parameter with state, in index
// order. Group options follow Python's key order and value types; options
// libtorch lacks get Python's defaults (maximize/capturable/differentiable
// False, foreach/fused None). A number whose Python default is the int 0
// (Adam weight_decay, SGD momentum/dampening/weight_decay, RMSprop momentum/
// weight_decay, Adagrad lr_decay/weight_decay/initial_accumulator_value) is
// written as the int 0 when it is 0, else as a float; all other numbers are
// floats. Groups whose betas equal the optimizer defaults share one tuple, as
// Python groups that inherit the default do. 'step' is a float32 0-dim tensor.
// State tensors are the optimizer's own (not copies).
ValuePtr optimizer_state_dict(const torch::optim::Optimizer& optimizer);

// Python's optimizer.load_state_dict(state_dict): the number of groups and
// their sizes must match (StateError with Python's messages); the saved group
// options replace the current ones; per-parameter state replaces the current
// state (tensors are copied, cast to the parameter's dtype when it is floating;
// 'step' becomes libtorch's int64 step). Saved states keyed by parameter name
// (FSDP full/consolidated files) are refused with a StateError.
void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state_dict);

// The names (module.named_parameters() keys) of the optimizer's parameters in `module`, in the
// optimizer's index order; StateError if one is not a parameter of the module.
std::vector<std::string> optimizer_parameter_names(const torch::optim::Optimizer& optimizer,
                                                   const torch::nn::Module& module);
// An optimizer state dict keyed by parameter name instead of index ('state' keys and each group's
// 'params'), as FSDP and get_optimizer_state_dict write it; `names` from optimizer_parameter_names.
ValuePtr optimizer_state_by_name(const Value& state_dict, const std::vector<std::string>& names);
// The reverse; index keys are kept as they are, so either form can be given.
ValuePtr optimizer_state_by_index(const Value& state_dict, const std::vector<std::string>& names);

// Shared by the module and optimizer halves of this layer; not for other callers.
namespace detail {
// Storage -> its whole CPU copy, for tensors on other devices within one state dict.
using DeviceCopies = std::unordered_map<const void*, at::Tensor>;
// A tensor node for `tensor` (detached, sharing its storage when it is on the CPU).
ValuePtr tensor_value(const at::Tensor& tensor, DeviceCopies& copies);
// Python's type(x) repr for a value: "<class 'int'>".
std::string python_type_repr(const Value& value);
// Python's repr of a torch.Size: "torch.Size([2, 3])".
std::string torch_size_repr(at::IntArrayRef sizes);
}  // namespace detail

}  // namespace fabricckpt::state
