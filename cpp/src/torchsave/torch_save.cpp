// torch.save / torch.load for the Value model: tensors <-> storages and records.
#include "fabricckpt/torch_save.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Storage.h>

#include <cstring>
#include <map>
#include <unordered_map>

#include "dtypes.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {
namespace {

using torchsave::dtype_of_name;
using torchsave::dtype_of_storage_class;
using torchsave::storage_class_of_dtype;

// The payload of a Kind::Storage node while a tensor is being rebuilt or written.
struct TorchStorage {
  c10::Storage storage;
  c10::ScalarType dtype;  // element type the file declares for the storage
  std::string location;
};

const TorchStorage& torch_storage(const Value& v) {
  const auto& ref = v.storage_ref();
  return *std::static_pointer_cast<TorchStorage>(ref.storage);
}

std::vector<int64_t> int_list(const Value& tuple, const char* what) {
  if (!tuple.is(Kind::Tuple) && !tuple.is(Kind::List)) {
    throw FormatError(concat("tensor ", what, " is a ", kind_name(tuple.kind), ", expected a tuple"));
  }
  std::vector<int64_t> out;
  out.reserve(tuple.items().size());
  for (const auto& item : tuple.items()) out.push_back(item->as_int());
  return out;
}

// Builds the tensor that _rebuild_tensor_v2/_v3 describes, checking that the
// view stays inside its storage (a hostile file must not read out of bounds).
ValuePtr rebuild_tensor(const Value::Items& args, std::optional<c10::ScalarType> explicit_dtype) {
  if (args.size() < 4) throw FormatError("tensor rebuild takes at least 4 arguments");
  if (!args[0]->is(Kind::Storage)) {
    throw FormatError(concat("tensor rebuild expects a storage, got ", kind_name(args[0]->kind)));
  }
  const TorchStorage& storage = torch_storage(*args[0]);
  const c10::ScalarType dtype = explicit_dtype.value_or(storage.dtype);
  const int64_t offset = args[1]->as_int();
  const auto sizes = int_list(*args[2], "size");
  const auto strides = int_list(*args[3], "stride");
  if (sizes.size() != strides.size()) {
    throw FormatError(concat("tensor has ", sizes.size(), " sizes but ", strides.size(), " strides"));
  }
  const auto element_size = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t capacity = static_cast<int64_t>(storage.storage.nbytes()) / element_size;
  if (offset < 0) throw FormatError(concat("tensor storage offset ", offset, " is negative"));
  bool empty = false;
  int64_t last = offset;  // highest element index the view touches
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) throw FormatError("tensor has a negative size or stride");
    if (sizes[d] == 0) empty = true;
    if (sizes[d] > 0 && strides[d] > 0) {
      if (sizes[d] - 1 > (INT64_MAX - last) / strides[d]) throw FormatError("tensor view overflows");
      last += (sizes[d] - 1) * strides[d];
    }
  }
  if (!empty && last >= capacity) {
    throw FormatError(concat("tensor view reaches element ", last, " of a storage of ", capacity,
                             " elements"));
  }
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(dtype));
  tensor.set_(storage.storage, offset, sizes, strides);

  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(tensor));
  ref.location = storage.location;
  if (args.size() > 4) ref.requires_grad = args[4]->is(Kind::Bool) && args[4]->as_bool();
  if (ref.requires_grad && (at::isFloatingType(dtype) || at::isComplexType(dtype))) {
    ref.tensor->requires_grad_(true);
  }
  return Value::tensor(std::move(ref));
}

// The reduce hook: torch._utils rebuild functions become Tensor values.
ValuePtr reduce_torch(const GlobalRef& callable, const ValuePtr& args) {
  if (callable.module != "torch._utils" || !args || !args->is(Kind::Tuple)) return nullptr;
  const auto& a = args->items();
  if (callable.name == "_rebuild_tensor_v2" || callable.name == "_rebuild_tensor") {
    return rebuild_tensor(a, std::nullopt);
  }
  if (callable.name == "_rebuild_tensor_v3") {
    if (a.size() < 7 || !a[6]->is(Kind::Global)) throw FormatError("_rebuild_tensor_v3 without a dtype");
    auto dtype = dtype_of_name(a[6]->global_ref().name);
    if (!dtype) throw FormatError(concat("unknown dtype torch.", a[6]->global_ref().name));
    return rebuild_tensor(a, dtype);
  }
  if (callable.name == "_rebuild_parameter" || callable.name == "_rebuild_parameter_with_state") {
    if (a.size() < 2 || !a[0]->is(Kind::Tensor)) throw FormatError("_rebuild_parameter without a tensor");
    auto param = Value::tensor(a[0]->tensor_ref());
    auto& ref = param->tensor_ref();
    ref.is_parameter = true;
    ref.requires_grad = a[1]->is(Kind::Bool) && a[1]->as_bool();
    if (ref.requires_grad && ref.tensor->is_floating_point()) ref.tensor->requires_grad_(true);
    return param;
  }
  return nullptr;
}

// Storage class of a persistent id: a typed storage name, or UntypedStorage (bytes).
c10::ScalarType storage_dtype(const Value& type) {
  if (!type.is(Kind::Global)) throw FormatError("storage type in a persistent id is not a class");
  const auto& g = type.global_ref();
  if (g.name == "UntypedStorage") return c10::ScalarType::Byte;
  auto dtype = dtype_of_storage_class(g.name);
  if (!dtype) throw FormatError(concat("unsupported storage type ", g.module, ".", g.name));
  return *dtype;
}

c10::Storage new_storage(const void* data, size_t nbytes) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator(), /*resizable=*/false);
  if (nbytes > 0) std::memcpy(storage.mutable_data(), data, nbytes);
  return storage;
}

std::string require_string(const Value& v, const char* what) {
  if (!v.is(Kind::String)) throw FormatError(concat(what, " is a ", kind_name(v.kind), ", expected a string"));
  return v.as_string();
}

TorchCheckpoint load_zip(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
  ZipReader zip(file);
  const std::string& path = file->path();
  const ZipRecord* pickle_record = zip.find("data.pkl");
  if (!pickle_record) throw FormatError(concat(path, ": no data.pkl record: not a torch.save checkpoint"));
  if (const ZipRecord* order = zip.find("byteorder")) {
    if (zip.data(*order, options.verify_crc) != "little") {
      throw FormatError(concat(path, ": big-endian checkpoints are not supported"));
    }
  }

  std::unordered_map<std::string, ValuePtr> storages;  // key -> storage node (shared by views)
  UnpickleHooks hooks;
  hooks.reduce = reduce_torch;
  hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
    if (!pid->is(Kind::Tuple) || pid->items().size() < 5) {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const auto& id = pid->items();
    if (!id[0]->is(Kind::String) || id[0]->as_string() != "storage") {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const c10::ScalarType dtype = storage_dtype(*id[1]);
    const std::string key = require_string(*id[2], "storage key");
    if (auto it = storages.find(key); it != storages.end()) return it->second;
    const std::string location = require_string(*id[3], "storage location");
    const int64_t numel = id[4]->as_int();
    const std::string record_name = "data/" + key;
    const ZipRecord* record = zip.find(record_name);
    if (!record) throw FormatError(concat("record ", record_name, " is missing"));
    const auto element_size = c10::elementSize(dtype);
    if (numel < 0 || static_cast<uint64_t>(numel) > record->size / element_size) {
      throw FormatError(concat("record ", record_name, " holds ", record->size, " bytes, the pickle expects ",
                               numel, " elements of ", element_size, " bytes"));
    }
    const std::string_view bytes = zip.data(*record, options.verify_crc);
    auto payload = std::make_shared<TorchStorage>(
        TorchStorage{new_storage(bytes.data(), static_cast<size_t>(numel) * element_size), dtype, location});
    auto node = Value::storage(StorageRef{payload, id[1]->global_ref().name});
    storages.emplace(key, node);
    return node;
  };

  try {
    const std::string_view pickled = zip.data(*pickle_record, options.verify_crc);
    TorchCheckpoint out;
    out.root = unpickle(pickled, hooks).value;
    out.archive_name = zip.archive_name();
    return out;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", zip.archive_name(), "/data.pkl: ", e.what()));
  }
}

// The pre-1.6 format: magic, protocol, sys_info, the object pickle, the storage
// key list, then each storage as a little-endian int64 element count and its bytes.
TorchCheckpoint load_legacy(const std::shared_ptr<const MappedFile>& file) {
  const std::string_view all(reinterpret_cast<const char*>(file->data()), file->size());
  const std::string& path = file->path();
  size_t pos = 0;
  auto next_pickle = [&](const UnpickleHooks& hooks) {
    auto result = unpickle(all.substr(pos), hooks);
    pos += result.consumed;
    return result.value;
  };
  try {
    const ValuePtr magic = next_pickle({});
    static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);  // 0x1950a86a20f9469cfc6c
    if (!magic->is(Kind::BigInt) || magic->as_string() != kMagic) {
      throw FormatError("not a torch.save file (neither a zip archive nor the legacy magic number)");
    }
    if (next_pickle({})->as_int() != 1001) throw FormatError("unsupported legacy protocol version");
    const ValuePtr sys_info = next_pickle({});
    if (sys_info->is(Kind::Dict)) {
      auto little = sys_info->dict().get("little_endian");
      if (little && little->is(Kind::Bool) && !little->as_bool()) {
        throw FormatError("big-endian checkpoints are not supported");
      }
    }

    struct Pending {
      std::shared_ptr<TorchStorage> storage;
      int64_t numel;
    };
    std::map<std::string, Pending> pending;
    std::unordered_map<std::string, ValuePtr> nodes;
    UnpickleHooks hooks;
    hooks.reduce = reduce_torch;
    hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
      if (!pid->is(Kind::Tuple) || pid->items().size() < 6) {
        throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
      }
      const auto& id = pid->items();
      if (!id[5]->is(Kind::None)) throw FormatError("legacy storage views are not supported");
      const std::string key = require_string(*id[2], "storage key");
      if (auto it = nodes.find(key); it != nodes.end()) return it->second;
      const c10::ScalarType dtype = storage_dtype(*id[1]);
      const int64_t numel = id[4]->as_int();
      if (numel < 0 || static_cast<uint64_t>(numel) > all.size()) throw FormatError("storage size out of range");
      // The bytes come after the pickles; the storage is filled once they are reached.
      auto payload = std::make_shared<TorchStorage>(TorchStorage{
          c10::Storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(numel) * c10::elementSize(dtype),
                       c10::GetCPUAllocator(), false),
          dtype, require_string(*id[3], "storage location")});
      pending.emplace(key, Pending{payload, numel});
      auto node = Value::storage(StorageRef{payload, id[1]->global_ref().name});
      nodes.emplace(key, node);
      return node;
    };
    TorchCheckpoint out;
    out.legacy = true;
    out.root = next_pickle(hooks);
    const ValuePtr keys = next_pickle({});
    if (!keys->is(Kind::List)) throw FormatError("legacy storage key list is not a list");
    for (const auto& key_value : keys->items()) {
      const std::string key = require_string(*key_value, "storage key");
      auto it = pending.find(key);
      if (it == pending.end()) throw FormatError(concat("storage ", key, " is listed but never used"));
      if (all.size() - pos < 8) throw FormatError(concat("storage ", key, " is truncated"));
      int64_t count = 0;
      std::memcpy(&count, all.data() + pos, 8);
      pos += 8;
      const size_t nbytes = it->second.storage->storage.nbytes();
      if (count != it->second.numel || all.size() - pos < nbytes) {
        throw FormatError(concat("storage ", key, " is truncated or has a wrong size"));
      }
      if (nbytes > 0) std::memcpy(it->second.storage->storage.mutable_data(), all.data() + pos, nbytes);
      pos += nbytes;
    }
    return out;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", e.what()));
  }
}

// Writes tensors as torch.save does: each distinct storage once, keyed "0", "1", ...
// in order of first use, with the object identities CPython's pickler would see
// (one 'storage' string, one 'cpu' string, one key string per storage).
class StorageCollector {
 public:
  struct Entry {
    std::string key;
    c10::Storage storage;
  };

  PickleHooks hooks() {
    PickleHooks h;
    h.tensor_reduce = [this](const ValuePtr& t) { return reduce(*t); };
    h.persistent_id = [this](const ValuePtr& s) { return persistent_id(*s); };
    return h;
  }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  struct Known {
    size_t index;
    ValuePtr key;
  };
  std::vector<Entry> entries_;
  std::unordered_map<const c10::StorageImpl*, Known> known_;
  ValuePtr storage_word_ = Value::string("storage");
  ValuePtr cpu_ = Value::string("cpu");

  ValuePtr tensor_args(const at::Tensor& t, bool requires_grad, const std::string& location) {
    if (!t.device().is_cpu()) throw Error("only CPU tensors can be saved");
    if (t.is_sparse() || t.is_quantized() || !t.has_storage()) {
      throw Error(concat("cannot save a ", t.toString(), " tensor: only dense strided tensors are supported"));
    }
    const c10::ScalarType dtype = t.scalar_type();
    const auto storage_class = storage_class_of_dtype(dtype);
    auto payload = std::make_shared<TorchStorage>(TorchStorage{t.storage(), dtype, location});
    auto storage = Value::storage(StorageRef{payload, storage_class.value_or("UntypedStorage")});

    Value::Items sizes, strides;
    for (int64_t s : t.sizes()) sizes.push_back(Value::integer(s));
    for (int64_t s : t.strides()) strides.push_back(Value::integer(s));
    Value::Items args{storage,
                      Value::integer(t.storage_offset()),
                      Value::tuple(std::move(sizes)),
                      Value::tuple(std::move(strides)),
                      Value::boolean(requires_grad),
                      Value::ordered_dict()};  // backward hooks: a fresh OrderedDict() per tensor
    if (!storage_class) args.push_back(Value::global("torch", torchsave::name_of_dtype(dtype)));
    Object rebuild;
    rebuild.callable = Value::global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    rebuild.args = Value::tuple(std::move(args));
    return Value::object(std::move(rebuild));
  }

  ValuePtr reduce(const Value& node) {
    const TensorRef& ref = node.tensor_ref();
    if (!ref.tensor || !ref.tensor->defined()) throw Error("cannot save an undefined tensor");
    const bool requires_grad = ref.requires_grad || ref.tensor->requires_grad();
    if (!ref.is_parameter) return tensor_args(*ref.tensor, requires_grad, ref.location);
    // nn.Parameter: _rebuild_parameter(data, requires_grad, OrderedDict())
    Object param;
    param.callable = Value::global("torch._utils", "_rebuild_parameter");
    param.args = Value::tuple({tensor_args(*ref.tensor, false, ref.location), Value::boolean(requires_grad),
                               Value::ordered_dict()});
    return Value::object(std::move(param));
  }

  ValuePtr persistent_id(const Value& node) {
    const TorchStorage& s = torch_storage(node);
    const auto* impl = s.storage.unsafeGetStorageImpl();
    auto [it, inserted] = known_.try_emplace(impl, Known{entries_.size(), nullptr});
    if (inserted) {
      it->second.key = Value::string(std::to_string(entries_.size()));
      entries_.push_back(Entry{it->second.key->as_string(), s.storage});
    }
    const auto storage_class = storage_class_of_dtype(s.dtype);
    const size_t element_size = storage_class ? c10::elementSize(s.dtype) : 1;
    ValuePtr location = s.location == "cpu" ? cpu_ : Value::string(s.location);
    return Value::tuple({storage_word_,
                         storage_class ? Value::global("torch", *storage_class)
                                       : Value::global("torch.storage", "UntypedStorage"),
                         it->second.key, location,
                         Value::integer(static_cast<int64_t>(s.storage.nbytes() / element_size))});
  }
};

}  // namespace

TorchCheckpoint load_torch_file(const std::string& path, const TorchLoadOptions& options) {
  auto file = MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (is_zip(*file)) return load_zip(file, options);
  return load_legacy(file);
}

void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name) {
  StorageCollector storages;
  const std::string pickled = pickle(root, storages.hooks());
  TorchZipWriter zip(out, archive_name);
  zip.write_record("data.pkl", pickled.data(), pickled.size());
  zip.write_record(".format_version", "1", 1);
  zip.write_record(".storage_alignment", "64", 2);
  zip.write_record("byteorder", "little", 6);
  for (const auto& entry : storages.entries()) {
    zip.write_record("data/" + entry.key, entry.storage.data(), entry.storage.nbytes());
  }
  zip.write_record("version", "3\n", 2);
  zip.finish();
}

void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options) {
  AtomicFileSink sink(path, options.fsync);
  write_torch_save(sink, root, options.archive_name);
  sink.commit();
}

}  // namespace fabricckpt
