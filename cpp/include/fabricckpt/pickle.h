// Python pickle reader (protocols 0 to 5) and writer (protocol 2, CPython's
// opcode and memo choices) over the Value model. Nothing is ever executed:
// globals become GlobalRef values and unknown constructions become Objects.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "fabricckpt/value.h"

namespace fabricckpt {

// What the torch layer plugs into the reader.
struct UnpickleHooks {
  // Resolves a persistent id (BINPERSID / PERSID). Unset: a persistent id is a FormatError.
  std::function<ValuePtr(const ValuePtr& pid)> persistent_load;
  // Called for REDUCE / NEWOBJ of a Global callable before the generic handling.
  // Returns the built value, or null to fall back (known builtins, then Object).
  std::function<ValuePtr(const GlobalRef& callable, const ValuePtr& args)> reduce;
  // Called for every global the pickle names (GLOBAL, STACK_GLOBAL, INST), spelled as in the file,
  // garbage included: for listing what a file refers to (see safety.h).
  std::function<void(const std::string& module, const std::string& name)> on_global;
};

// Bounds that keep hostile input from exhausting memory or the stack.
struct UnpickleLimits {
  size_t max_depth = 1000;             // nesting of containers being built (MARK stack and value depth)
  size_t max_memo = size_t{1} << 26;   // memo entries
  size_t max_stack = size_t{1} << 26;  // values on the stack
};

struct UnpickleResult {
  ValuePtr value;
  size_t consumed = 0;  // bytes up to and including STOP (the legacy format has several pickles back to back)
};

// Parses one pickle from the start of `data`. Errors are FormatError with the
// byte offset and opcode; callers add the file and record name.
// Memo references come back as the same node. The result is acyclic (a
// reference cycle is a FormatError) and at most limits.max_depth deep, so it
// can be walked and freed recursively.
UnpickleResult unpickle(std::string_view data, const UnpickleHooks& hooks = {},
                        const UnpickleLimits& limits = {});

// What the torch layer plugs into the writer.
struct PickleHooks {
  // Tensor node -> Object node (Construct::Reduce, callable + args) to write in
  // its place, e.g. torch._utils._rebuild_tensor_v2(storage, ...). The tensor
  // node itself is memoized, so a tensor referenced twice is written once.
  std::function<ValuePtr(const ValuePtr& tensor)> tensor_reduce;
  // Storage node -> persistent id value (written, then BINPERSID).
  std::function<ValuePtr(const ValuePtr& storage)> persistent_id;
};

// Writes `root` as a protocol 2 pickle, byte for byte as CPython's C pickler
// would for the same object graph (memo by node identity).
// One Python object = one node: share a ValuePtr wherever Python would share the
// object. Only the empty str and empty bytes, singletons in CPython, are shared
// by value. Sets are written in their stored order, and globals with the Python
// 2 names protocol 2 uses (builtins.set -> __builtin__.set). A NEWOBJ_EX object
// keeps that opcode (CPython would rewrite it through functools.partial).
std::string pickle(const ValuePtr& root, const PickleHooks& hooks = {});

// The spelling pickle() writes a global in: protocol 2's Python 2 names (CPython's fix_imports,
// e.g. builtins.range -> __builtin__.xrange); other names unchanged.
std::pair<std::string, std::string> python2_global_name(const std::string& module, const std::string& name);

}  // namespace fabricckpt
