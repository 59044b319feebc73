// Which globals a checkpoint holds that torch.load(weights_only=True) refuses (torch >= 2.6
// refuses them by default). Reading never executes anything here, but a file written back holds
// every global its tree holds, and Python's torch.load(weights_only=False) of it would run them:
// so writers refuse such trees unless the caller opts in, and readers can list or refuse them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/value.h"

namespace fabricckpt {

// "module.name" as torch reads a GLOBAL spelled `module` `name`: with Python 3's _compat_pickle
// mapping of Python 2 names (__builtin__.set -> builtins.set), as torch's _read_global_instruction.
std::string python3_global_name(std::string_view module, std::string_view name);

// Whether torch 2.10's weights_only unpickler allows the global (its Python 3 "module.name").
bool is_weights_only_global(std::string_view full_name);

// torch 2.10's allowlist itself, sorted.
std::vector<std::string_view> weights_only_allowlist();

// A refused global of a tree and the first place it sits, e.g. {"argparse.Namespace", "['hparams']"}.
struct UnsafeGlobal {
  std::string name;   // as torch.serialization.get_unsafe_globals_in_checkpoint spells it
  std::string where;  // key path from the root; "" for the root itself
  size_t count = 1;   // places it sits in all
};

// The refused globals a pickle of `root` (as pickle() writes it) holds, in order of first
// appearance: Global nodes (callables of objects included), and the ones the writer emits for
// values torch's allowlist lacks: frozenset (builtins.frozenset) and empty bytes (builtins.bytes).
std::vector<UnsafeGlobal> unsafe_globals_in_tree(const ValuePtr& root);

// The refused globals in the bytes of a pickle (GLOBAL, STACK_GLOBAL and INST names anywhere in
// it, as torch.serialization.get_unsafe_globals_in_checkpoint scans data.pkl), in order of first
// appearance, each once. Nothing is built but the parse; FormatError if the pickle is malformed.
std::vector<std::string> unsafe_globals_in_pickle(std::string_view pickle);

// The globals of a checkpoint file (a torch.save zip file: its data.pkl, as
// torch.serialization.get_unsafe_globals_in_checkpoint; legacy: every pickle of it; none for
// safetensors, which holds no pickle) that torch 2.10's weights_only loader refuses. No storage is read.
std::vector<std::string> unsafe_globals_of_file(const std::string& path);

// A write refused because the tree holds refused globals, or a weights_only read refused.
class UnsafeGlobalsError : public Error {
 public:
  UnsafeGlobalsError(const std::string& message, std::vector<std::string> names)
      : Error(message), names_(std::move(names)) {}
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<std::string> names_;
};

// Throws UnsafeGlobalsError naming `target` and each refused global with where it sits, unless the
// tree holds none. For writers: the caller opts out with its allow_unsafe_globals option.
void check_weights_only_tree(const ValuePtr& root, const std::string& target);

}  // namespace fabricckpt
