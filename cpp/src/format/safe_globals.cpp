// torch 2.10's weights_only allowlist, Python 3's names for Python 2 globals, and the scans that
// find refused globals in trees (before writing) and in pickles (files read). See safety.h.
#include "fabricckpt/safety.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

// torch 2.10.0's weights_only allowlist: the keys of
// torch._weights_only_unpickler._get_allowed_globals() (which adds the dtypes, tensor and storage
// classes, quantization schemes and _tensor_rebuild_functions() to its fixed entries), printed with
//   python -c "from torch import _weights_only_unpickler as w; print(*sorted(w._get_allowed_globals()), sep='\n')"
// in the torch==2.10.0 venv. python-compat-tests/test_unsafe_globals.py checks this table against it. Sorted.
constexpr std::string_view kWeightsOnlyAllowed[] = {
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.complex",
    "builtins.set",
    "collections.Counter",
    "collections.OrderedDict",
    "torch.BFloat16Storage",
    "torch.BFloat16Tensor",
    "torch.BoolStorage",
    "torch.BoolTensor",
    "torch.ByteStorage",
    "torch.ByteTensor",
    "torch.CharStorage",
    "torch.CharTensor",
    "torch.ComplexDoubleStorage",
    "torch.ComplexFloatStorage",
    "torch.DoubleStorage",
    "torch.DoubleTensor",
    "torch.FloatStorage",
    "torch.FloatTensor",
    "torch.HalfStorage",
    "torch.HalfTensor",
    "torch.IntStorage",
    "torch.IntTensor",
    "torch.LongStorage",
    "torch.LongTensor",
    "torch.QInt32Storage",
    "torch.QInt8Storage",
    "torch.QUInt2x4Storage",
    "torch.QUInt4x2Storage",
    "torch.QUInt8Storage",
    "torch.ShortStorage",
    "torch.ShortTensor",
    "torch.Size",
    "torch.Tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_wrapper_subclass",
    "torch.bfloat16",
    "torch.bits16",
    "torch.bits1x8",
    "torch.bits2x4",
    "torch.bits4x2",
    "torch.bits8",
    "torch.bool",
    "torch.complex128",
    "torch.complex32",
    "torch.complex64",
    "torch.cuda.BFloat16Storage",
    "torch.cuda.BFloat16Tensor",
    "torch.cuda.BoolStorage",
    "torch.cuda.BoolTensor",
    "torch.cuda.ByteStorage",
    "torch.cuda.ByteTensor",
    "torch.cuda.CharStorage",
    "torch.cuda.CharTensor",
    "torch.cuda.ComplexDoubleStorage",
    "torch.cuda.ComplexFloatStorage",
    "torch.cuda.DoubleStorage",
    "torch.cuda.DoubleTensor",
    "torch.cuda.FloatStorage",
    "torch.cuda.FloatTensor",
    "torch.cuda.HalfStorage",
    "torch.cuda.HalfTensor",
    "torch.cuda.IntStorage",
    "torch.cuda.IntTensor",
    "torch.cuda.LongStorage",
    "torch.cuda.LongTensor",
    "torch.cuda.ShortStorage",
    "torch.cuda.ShortTensor",
    "torch.cuda.sparse.BFloat16Tensor",
    "torch.cuda.sparse.ByteTensor",
    "torch.cuda.sparse.CharTensor",
    "torch.cuda.sparse.DoubleTensor",
    "torch.cuda.sparse.FloatTensor",
    "torch.cuda.sparse.HalfTensor",
    "torch.cuda.sparse.IntTensor",
    "torch.cuda.sparse.LongTensor",
    "torch.cuda.sparse.ShortTensor",
    "torch.device",
    "torch.float16",
    "torch.float32",
    "torch.float4_e2m1fn_x2",
    "torch.float64",
    "torch.float8_e4m3fn",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2",
    "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu",
    "torch.int1",
    "torch.int16",
    "torch.int2",
    "torch.int3",
    "torch.int32",
    "torch.int4",
    "torch.int5",
    "torch.int6",
    "torch.int64",
    "torch.int7",
    "torch.int8",
    "torch.nn.parameter.Parameter",
    "torch.per_channel_affine",
    "torch.per_channel_affine_float_qparams",
    "torch.per_channel_symmetric",
    "torch.per_tensor_affine",
    "torch.per_tensor_symmetric",
    "torch.qint32",
    "torch.qint8",
    "torch.quint2x4",
    "torch.quint4x2",
    "torch.quint8",
    "torch.serialization._get_layout",
    "torch.sparse.BFloat16Tensor",
    "torch.sparse.ByteTensor",
    "torch.sparse.CharTensor",
    "torch.sparse.DoubleTensor",
    "torch.sparse.FloatTensor",
    "torch.sparse.HalfTensor",
    "torch.sparse.IntTensor",
    "torch.sparse.LongTensor",
    "torch.sparse.ShortTensor",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch.uint1",
    "torch.uint16",
    "torch.uint2",
    "torch.uint3",
    "torch.uint32",
    "torch.uint4",
    "torch.uint5",
    "torch.uint6",
    "torch.uint64",
    "torch.uint7",
    "torch.uint8",
};

// torch 2.10's own Python 2 -> 3 name mapping (torch._utils.NAME_MAPPING and IMPORT_MAPPING, smaller
// than _compat_pickle's), which torch._weights_only_unpickler._read_global_instruction applies to
// every GLOBAL before checking it: the (module, name) pair first, else the module alone.
struct NameMapping {
  std::string_view py2_module, py2_name, module, name;
};
constexpr NameMapping kNameMapping[] = {
    {"UserDict", "IterableUserDict", "collections", "UserDict"},
    {"UserDict", "UserDict", "collections", "UserDict"},
    {"UserList", "UserList", "collections", "UserList"},
    {"UserString", "UserString", "collections", "UserString"},
    {"__builtin__", "basestring", "builtins", "str"},
    {"__builtin__", "intern", "sys", "intern"},
    {"__builtin__", "long", "builtins", "int"},
    {"__builtin__", "reduce", "functools", "reduce"},
    {"__builtin__", "unichr", "builtins", "chr"},
    {"__builtin__", "unicode", "builtins", "str"},
    {"__builtin__", "xrange", "builtins", "range"},
    {"exceptions", "StandardError", "builtins", "Exception"},
    {"itertools", "ifilter", "builtins", "filter"},
    {"itertools", "ifilterfalse", "itertools", "filterfalse"},
    {"itertools", "imap", "builtins", "map"},
    {"itertools", "izip", "builtins", "zip"},
    {"itertools", "izip_longest", "itertools", "zip_longest"},
};
constexpr std::pair<std::string_view, std::string_view> kImportMapping[] = {
    {"Queue", "queue"},
    {"StringIO", "io"},
    {"UserDict", "collections"},
    {"UserList", "collections"},
    {"UserString", "collections"},
    {"__builtin__", "builtins"},
    {"_abcoll", "collections.abc"},
    {"cStringIO", "io"},
    {"copy_reg", "copyreg"},
    {"repr", "reprlib"},
    {"whichdb", "dbm"},
};

// Python's repr-like key text for paths: 'name' for str, the number for ints, describe() else.
std::string key_step(const Value& key) {
  if (key.is(Kind::String)) return "['" + key.as_string() + "']";
  return "[" + describe(key, 40) + "]";
}

// The global pickle() writes for a value of its own (not a Global node), if torch refuses it.
const char* implicit_refused_global(const Value& v) {
  if (v.is(Kind::FrozenSet)) return "builtins.frozenset";
  if (v.is(Kind::Bytes) && v.as_string().empty()) return "builtins.bytes";  // bytes() at protocol 2
  return nullptr;
}

}  // namespace

std::string python3_global_name(std::string_view module, std::string_view name) {
  for (const auto& m : kNameMapping) {
    if (m.py2_module == module && m.py2_name == name) return concat(m.module, ".", m.name);
  }
  for (const auto& [py2, py3] : kImportMapping) {
    if (py2 == module) return concat(py3, ".", name);
  }
  return concat(module, ".", name);
}

bool is_weights_only_global(std::string_view full_name) {
  return std::binary_search(std::begin(kWeightsOnlyAllowed), std::end(kWeightsOnlyAllowed), full_name);
}

std::vector<std::string_view> weights_only_allowlist() {
  return {std::begin(kWeightsOnlyAllowed), std::end(kWeightsOnlyAllowed)};
}

std::vector<UnsafeGlobal> unsafe_globals_in_tree(const ValuePtr& root) {
  std::vector<UnsafeGlobal> found;
  std::unordered_map<std::string, size_t> index;  // name -> position in found
  auto report = [&](std::string name, const std::string& where) {
    auto [it, fresh] = index.try_emplace(name, found.size());
    if (fresh) found.push_back({std::move(name), where, 1});
    else ++found[it->second].count;
  };
  // Depth-first over the DAG, each container once; a frame's path is its label appended to its
  // parent's, built only when something is reported.
  struct Frame {
    const Value* node;
    size_t next = 0;
    std::string label;
  };
  std::vector<Frame> stack;
  std::unordered_set<const Value*> seen;
  auto path = [&](const std::string& last) {
    std::string out;
    for (const auto& f : stack) out += f.label;
    return out + last;
  };
  // Visits a child: leaves are checked at once, containers get a frame.
  auto visit = [&](const ValuePtr& child, std::string label) {
    if (!child) return;
    const Value& v = *child;
    if (v.is(Kind::Global)) {
      const GlobalRef& g = v.global_ref();
      auto [module, name] = python2_global_name(g.module, g.name);  // what the writer spells
      std::string full = python3_global_name(module, name);        // what torch then reads
      if (!is_weights_only_global(full)) report(std::move(full), path(label));
      return;
    }
    if (const char* implicit = implicit_refused_global(v)) report(implicit, path(label));
    switch (v.kind) {
      case Kind::Tuple: case Kind::List: case Kind::Set: case Kind::FrozenSet: case Kind::Dict: case Kind::Object:
        if (seen.insert(&v).second) stack.push_back({&v, 0, std::move(label)});
        break;
      default:
        break;
    }
  };
  visit(root, "");
  while (!stack.empty()) {
    Frame& f = stack.back();
    const Value& v = *f.node;
    const size_t i = f.next++;
    switch (v.kind) {
      case Kind::Tuple: case Kind::List: case Kind::Set: case Kind::FrozenSet: {
        const auto& items = v.items();
        if (i >= items.size()) break;
        const bool set = v.is(Kind::Set) || v.is(Kind::FrozenSet);
        visit(items[i], set ? concat("{item ", i, "}") : concat("[", i, "]"));
        continue;
      }
      case Kind::Dict: {
        const Dict& d = v.dict();
        if (i < 2 * d.size()) {
          const auto& [key, value] = d.items()[i / 2];
          if (i % 2 == 0) visit(key, concat("{key ", key_step(*key), "}"));
          else visit(value, key_step(*key));
          continue;
        }
        if (i == 2 * d.size()) {
          visit(d.state, ".__state__");
          continue;
        }
        break;
      }
      case Kind::Object: {
        const Object& o = v.object_ref();
        // The callable is where the object is: a refused class is reported at the object's path.
        if (i == 0) visit(o.callable, "");
        else if (i == 1) visit(o.args, ".args");
        else if (i == 2) visit(o.kwargs, ".kwargs");
        else if (i == 3) visit(o.state, ".__state__");
        else if (i - 4 < o.list_items.size()) visit(o.list_items[i - 4], concat(".append[", i - 4, "]"));
        else if (const size_t k = i - 4 - o.list_items.size(); k < 2 * o.dict_items.size()) {
          const auto& [key, value] = o.dict_items[k / 2];
          if (k % 2 == 0) visit(key, concat("{key ", key_step(*key), "}"));
          else visit(value, key_step(*key));
        } else {
          break;
        }
        continue;
      }
      default:
        break;
    }
    stack.pop_back();
  }
  return found;
}

std::vector<std::string> unsafe_globals_in_pickle(std::string_view data) {
  std::vector<std::string> found;
  std::unordered_set<std::string> seen;
  UnpickleHooks hooks;
  hooks.persistent_load = [](const ValuePtr&) { return Value::none(); };  // storages do not matter here
  hooks.on_global = [&](const std::string& module, const std::string& name) {
    std::string full = python3_global_name(module, name);
    if (!is_weights_only_global(full) && seen.insert(full).second) found.push_back(std::move(full));
  };
  unpickle(data, hooks);
  return found;
}

void check_weights_only_tree(const ValuePtr& root, const std::string& target) {
  std::vector<UnsafeGlobal> found = unsafe_globals_in_tree(root);
  if (found.empty()) return;
  std::string message = concat(target, ": refusing to write globals that torch.load(weights_only=True) refuses "
                               "(Python's torch.load(weights_only=False) of the file would call them):");
  std::vector<std::string> names;
  for (const auto& g : found) {
    message += concat(" ", g.name, " at ", g.where.empty() ? "the root" : g.where);
    if (g.count > 1) message += concat(" (and ", g.count - 1, " more places)");
    message += ";";
    names.push_back(g.name);
  }
  message.back() = '.';
  message += " Allow them explicitly (allow_unsafe_globals / WriteOptions.allowUnsafeGlobals()) only for trusted data.";
  throw UnsafeGlobalsError(message, std::move(names));
}

}  // namespace fabricckpt
