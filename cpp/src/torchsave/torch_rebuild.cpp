#include "torch_rebuild.h"

#include <ATen/ops/empty.h>

#include <optional>

#include "fabricckpt/dtypes.h"
#include "fabricckpt/error.h"

namespace fabricckpt::torchsave {

namespace {

const TorchStorage& torch_storage(const Value& v) {
  const auto& ref = v.storage_ref();
  if (!ref.storage) throw StateError("a bare storage (not inside a tensor) cannot be saved");
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


}  // namespace

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

c10::ScalarType storage_dtype(const Value& type) {
  if (!type.is(Kind::Global)) throw FormatError("storage type in a persistent id is not a class");
  const auto& g = type.global_ref();
  if (g.name == "UntypedStorage") return c10::ScalarType::Byte;
  auto dtype = dtype_of_storage_class(g.name);
  if (!dtype) throw FormatError(concat("unsupported storage type ", g.module, ".", g.name));
  return *dtype;
}

std::string require_string(const Value& v, const char* what) {
  if (!v.is(Kind::String)) throw FormatError(concat(what, " is a ", kind_name(v.kind), ", expected a string"));
  return v.as_string();
}

PickleHooks StorageCollector::hooks() {
  PickleHooks h;
  h.tensor_reduce = [this](const ValuePtr& t) { return reduce(*t); };
  h.persistent_id = [this](const ValuePtr& s) { return persistent_id(*s); };
  return h;
}

ValuePtr StorageCollector::tensor_args(const at::Tensor& t, bool requires_grad, const std::string& location) {
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
  if (!storage_class) args.push_back(Value::global("torch", name_of_dtype(dtype)));
  Object rebuild;
  rebuild.callable = Value::global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
  rebuild.args = Value::tuple(std::move(args));
  return Value::object(std::move(rebuild));
}

ValuePtr StorageCollector::reduce(const Value& node) {
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

ValuePtr StorageCollector::persistent_id(const Value& node) {
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

}  // namespace fabricckpt::torchsave
