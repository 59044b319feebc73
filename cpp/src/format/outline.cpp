// Reading a torch.save zip file without libtorch (outline.h): the pickle with storages as references
// to their records and tensors as their rebuild recipes, checked as the libtorch loader checks them.
#include "fabricckpt/outline.h"

#include <array>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"

namespace fabricckpt {
namespace {

// The typed-storage classes torch.save writes (as torchsave/dtypes.cpp, without c10).
constexpr std::array<std::pair<std::string_view, std::pair<std::string_view, size_t>>, 12> kStorageClasses{{
    {"HalfStorage", {"Half", 2}},
    {"BFloat16Storage", {"BFloat16", 2}},
    {"FloatStorage", {"Float", 4}},
    {"DoubleStorage", {"Double", 8}},
    {"CharStorage", {"Char", 1}},
    {"ShortStorage", {"Short", 2}},
    {"IntStorage", {"Int", 4}},
    {"LongStorage", {"Long", 8}},
    {"ByteStorage", {"Byte", 1}},
    {"BoolStorage", {"Bool", 1}},
    {"ComplexFloatStorage", {"ComplexFloat", 8}},
    {"ComplexDoubleStorage", {"ComplexDouble", 16}},
}};

// torch.<name> dtype globals and the c10::ScalarType name each stands for.
constexpr std::array<std::pair<std::string_view, std::pair<std::string_view, size_t>>, 36> kDtypeNames{{
    {"float16", {"Half", 2}},        {"half", {"Half", 2}},
    {"bfloat16", {"BFloat16", 2}},   {"float32", {"Float", 4}},
    {"float", {"Float", 4}},         {"float64", {"Double", 8}},
    {"double", {"Double", 8}},       {"int8", {"Char", 1}},
    {"int16", {"Short", 2}},         {"short", {"Short", 2}},
    {"int32", {"Int", 4}},           {"int", {"Int", 4}},
    {"int64", {"Long", 8}},          {"long", {"Long", 8}},
    {"uint8", {"Byte", 1}},          {"uint16", {"UInt16", 2}},
    {"uint32", {"UInt32", 4}},       {"uint64", {"UInt64", 8}},
    {"bool", {"Bool", 1}},           {"complex32", {"ComplexHalf", 4}},
    {"chalf", {"ComplexHalf", 4}},   {"complex64", {"ComplexFloat", 8}},
    {"cfloat", {"ComplexFloat", 8}}, {"complex128", {"ComplexDouble", 16}},
    {"cdouble", {"ComplexDouble", 16}},
    {"float8_e4m3fn", {"Float8_e4m3fn", 1}},
    {"float8_e5m2", {"Float8_e5m2", 1}},
    {"float8_e4m3fnuz", {"Float8_e4m3fnuz", 1}},
    {"float8_e5m2fnuz", {"Float8_e5m2fnuz", 1}},
    {"float8_e8m0fnu", {"Float8_e8m0fnu", 1}},
    {"float4_e2m1fn_x2", {"Float4_e2m1fn_x2", 1}},
    {"bits8", {"Bits8", 1}},         {"bits16", {"Bits16", 2}},
    {"bits1x8", {"Bits1x8", 1}},     {"bits2x4", {"Bits2x4", 1}},
    {"bits4x2", {"Bits4x2", 1}},
}};

const std::string& require_string(const Value& v, const char* what) {
  if (!v.is(Kind::String)) throw FormatError(concat(what, " is a ", kind_name(v.kind), ", expected a string"));
  return v.as_string();
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

const StorageOutline& storage_outline(const Value& node) {
  return *static_cast<const StorageOutline*>(node.storage_ref().storage.get());
}

// The view _rebuild_tensor_v2/_v3 describes, kept inside its storage (as torch_save.cpp's rebuild_tensor).
TensorOutline tensor_view(const Value::Items& args, const std::optional<DtypeInfo>& explicit_dtype) {
  if (args.size() < 4) throw FormatError("tensor rebuild takes at least 4 arguments");
  if (!args[0]->is(Kind::Storage)) {
    throw FormatError(concat("tensor rebuild expects a storage, got ", kind_name(args[0]->kind)));
  }
  TensorOutline t;
  t.storage = &storage_outline(*args[0]);
  t.dtype = explicit_dtype.value_or(t.storage->dtype);
  t.offset = args[1]->as_int();
  t.sizes = int_list(*args[2], "size");
  t.strides = int_list(*args[3], "stride");
  if (t.sizes.size() != t.strides.size()) {
    throw FormatError(concat("tensor has ", t.sizes.size(), " sizes but ", t.strides.size(), " strides"));
  }
  const auto capacity = static_cast<int64_t>(t.storage->nbytes() / t.dtype.element_size);
  if (t.offset < 0) throw FormatError(concat("tensor storage offset ", t.offset, " is negative"));
  bool empty = false;
  int64_t last = t.offset;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) throw FormatError("tensor has a negative size or stride");
    if (t.sizes[d] == 0) empty = true;
    if (t.sizes[d] > 0 && t.strides[d] > 0) {
      if (t.sizes[d] - 1 > (INT64_MAX - last) / t.strides[d]) throw FormatError("tensor view overflows");
      last += (t.sizes[d] - 1) * t.strides[d];
    }
  }
  if (!empty && last >= capacity) {
    throw FormatError(concat("tensor view reaches element ", last, " of a storage of ", capacity, " elements"));
  }
  if (args.size() > 4) t.requires_grad = args[4]->is(Kind::Bool) && args[4]->as_bool();
  return t;
}

}  // namespace

std::optional<DtypeInfo> dtype_of_storage_class_name(const std::string& class_name) {
  if (class_name == "UntypedStorage") return DtypeInfo{"Byte", 1};
  for (const auto& [storage, dtype] : kStorageClasses) {
    if (storage == class_name) return DtypeInfo{std::string(dtype.first), dtype.second};
  }
  return std::nullopt;
}

std::optional<DtypeInfo> dtype_of_torch_name(const std::string& name) {
  for (const auto& [torch_name, dtype] : kDtypeNames) {
    if (torch_name == name) return DtypeInfo{std::string(dtype.first), dtype.second};
  }
  return std::nullopt;
}

std::optional<std::string> storage_class_of_dtype(const std::string& dtype_name) {
  for (const auto& [storage, dtype] : kStorageClasses) {
    if (dtype.first == dtype_name) return std::string(storage);
  }
  return std::nullopt;
}

std::string torch_name_of_dtype(const std::string& dtype_name) {
  for (const auto& [torch_name, dtype] : kDtypeNames) {
    if (dtype.first == dtype_name) return std::string(torch_name);
  }
  return dtype_name;
}

namespace {
ValuePtr int_tuple(const std::vector<int64_t>& values) {
  Value::Items items;
  for (int64_t v : values) items.push_back(Value::integer(v));
  return Value::tuple(std::move(items));
}
}  // namespace

ValuePtr tensor_recipe(const ValuePtr& storage, const std::string& dtype_name, int64_t offset,
                       const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides, bool requires_grad,
                       bool typed) {
  Value::Items args{storage, Value::integer(offset), int_tuple(sizes), int_tuple(strides), Value::boolean(requires_grad),
                    Value::ordered_dict()};
  if (!typed) args.push_back(Value::global("torch", torch_name_of_dtype(dtype_name)));
  Object o;
  o.callable = Value::global("torch._utils", typed ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
  o.args = Value::tuple(std::move(args));
  return Value::object(std::move(o));
}

void StorageOutline::check_crc(uint32_t crc) const {
  if (record && !zip->crc_less()) zip->check_crc(*record, crc);
}

std::vector<uint8_t> StorageOutline::read_all() const {
  if (!source) {
    std::vector<uint8_t> whole(nbytes());
    assemble(whole.data());
    return whole;
  }
  std::vector<uint8_t> bytes(stored);
  source->read_at(offset, bytes.data(), bytes.size());
  if (record) check_crc(crc32_update(0, bytes.data(), bytes.size()));
  return bytes;
}

uint64_t TensorOutline::numel() const {
  uint64_t n = 1;
  for (int64_t s : sizes) n *= static_cast<uint64_t>(s);
  return n;
}

bool TensorOutline::contiguous() const {
  int64_t expected = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] != 1 && strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

std::optional<TensorOutline> tensor_of(const Value& node) {
  if (!node.is(Kind::Object)) return std::nullopt;
  const Object& o = node.object_ref();
  if (o.construct != Object::Construct::Reduce || !o.callable || !o.callable->is(Kind::Global)) return std::nullopt;
  const GlobalRef& g = o.callable->global_ref();
  if (g.module != "torch._utils" || !o.args || !o.args->is(Kind::Tuple)) return std::nullopt;
  const auto& a = o.args->items();
  if (g.name == "_rebuild_tensor_v2" || g.name == "_rebuild_tensor") return tensor_view(a, std::nullopt);
  if (g.name == "_rebuild_tensor_v3") {
    if (a.size() < 7 || !a[6]->is(Kind::Global)) throw FormatError("_rebuild_tensor_v3 without a dtype");
    auto dtype = dtype_of_torch_name(a[6]->global_ref().name);
    if (!dtype) throw FormatError(concat("unknown dtype torch.", a[6]->global_ref().name));
    return tensor_view(a, dtype);
  }
  if (g.name == "_rebuild_parameter" || g.name == "_rebuild_parameter_with_state") {
    std::optional<TensorOutline> data = a.size() >= 2 ? tensor_of(*a[0]) : std::nullopt;
    if (!data) throw FormatError("_rebuild_parameter without a tensor");
    data->is_parameter = true;
    data->requires_grad = a[1]->is(Kind::Bool) && a[1]->as_bool();
    return data;
  }
  return std::nullopt;
}

std::shared_ptr<const OutlineFile> OutlineFile::open(const std::string& path) { return open(MappedFile::open(path)); }

std::shared_ptr<const OutlineFile> OutlineFile::open(std::shared_ptr<const MappedFile> opened) {
  auto out = std::shared_ptr<OutlineFile>(new OutlineFile());
  out->file_ = std::move(opened);
  const MappedFile& file = *out->file_;
  const std::string& path = file.path();
  if (file.size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (!is_zip(file)) {
    throw FormatError(concat(path, ": not a torch.save file of the zip format (torch >= 1.6)"));
  }
  out->zip_ = std::make_unique<ZipReader>(out->file_);
  const ZipReader& zip = *out->zip_;
  const bool verify_crc = !zip.crc_less();  // torch reads CRC-less files unchecked
  const ZipRecord* pickle_record = zip.find("data.pkl");
  if (!pickle_record) throw FormatError(concat(path, ": no data.pkl record: not a torch.save checkpoint"));
  if (const ZipRecord* order = zip.find("byteorder")) {
    if (zip.data(*order, verify_crc) != "little") throw FormatError(concat(path, ": big-endian checkpoints are not supported"));
  }

  std::unordered_map<std::string, ValuePtr> by_key;  // one node per storage, shared by its views
  UnpickleHooks hooks;
  hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
    if (!pid->is(Kind::Tuple) || pid->items().size() < 5 || !pid->items()[0]->is(Kind::String) ||
        pid->items()[0]->as_string() != "storage") {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const auto& id = pid->items();
    if (!id[1]->is(Kind::Global)) throw FormatError("storage type in a persistent id is not a class");
    const GlobalRef& type = id[1]->global_ref();
    auto dtype = dtype_of_storage_class_name(type.name);
    if (!dtype) throw FormatError(concat("unsupported storage type ", type.module, ".", type.name));
    const std::string& key = require_string(*id[2], "storage key");
    if (auto it = by_key.find(key); it != by_key.end()) return it->second;
    const std::string record_name = "data/" + key;
    const ZipRecord* record = zip.find(record_name);
    if (!record) throw FormatError(concat("record ", record_name, " is missing"));
    const int64_t numel = id[4]->as_int();
    if (numel < 0 || static_cast<uint64_t>(numel) > record->size / dtype->element_size) {
      throw FormatError(concat("record ", record_name, " holds ", record->size, " bytes, the pickle expects ", numel,
                               " elements of ", dtype->element_size, " bytes"));
    }
    auto storage = std::make_shared<StorageOutline>();
    storage->source = &zip.source();
    storage->offset = record->data_offset;
    storage->stored = record->size;
    storage->record = record;
    storage->zip = &zip;
    storage->key = key;
    storage->location = require_string(*id[3], "storage location");
    storage->dtype = *dtype;
    storage->numel = static_cast<uint64_t>(numel);
    out->storages_.push_back(storage);
    auto node = Value::storage(StorageRef{storage, type.name});
    by_key.emplace(key, node);
    return node;
  };
  // Rebuild calls stay recipes; checking them here puts the pickle's offset in the error.
  hooks.reduce = [](const GlobalRef& callable, const ValuePtr& args) -> ValuePtr {
    Object probe;
    probe.callable = Value::global(callable.module, callable.name);
    probe.args = args;
    tensor_of(*Value::object(std::move(probe)));
    return nullptr;
  };
  try {
    out->root_ = unpickle(zip.data(*pickle_record, verify_crc), hooks).value;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", zip.archive_name(), "/data.pkl: ", e.what()));
  }
  return out;
}

std::vector<std::string> unsafe_globals_of_zip_file(const std::string& path) {
  auto file = MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (!is_zip(*file)) throw FormatError(concat(path, ": not a torch.save zip file"));
  ZipReader zip(file);
  const ZipRecord* record = zip.find("data.pkl");
  if (!record) throw FormatError(concat(path, ": no data.pkl record: not a torch.save checkpoint"));
  try {
    return unsafe_globals_in_pickle(zip.data(*record, /*verify_crc=*/true));
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", zip.archive_name(), "/data.pkl: ", e.what()));
  }
}

FileOutline read_file_outline(const std::string& path) {
  if (!safetensors_index_of(path).empty()) return read_safetensors_outline(path);
  auto file = MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (safetensors::looks_like_safetensors(*file)) return read_safetensors_outline(path);
  if (!is_zip(*file)) return read_legacy_outline(std::move(file));
  FileOutline out;
  out.zip = OutlineFile::open(std::move(file));
  out.root = out.zip->root();
  out.owner = out.zip;
  out.format = OutlineFormat::Zip;
  out.archive_name = out.zip->archive_name();
  for (const auto& s : out.zip->storages()) out.storages.push_back(s.get());
  return out;
}

std::vector<std::string> unsafe_globals_of_file(const std::string& path) {
  if (!safetensors_index_of(path).empty()) return {};
  auto file = MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (safetensors::looks_like_safetensors(*file)) return {};
  if (!is_zip(*file)) return unsafe_globals_of_legacy_file(*file);
  return unsafe_globals_of_zip_file(path);
}

std::string verify_outline(const std::string& path) {
  const FileOutline outline = read_file_outline(path);
  if (outline.format == OutlineFormat::Safetensors) return verify_safetensors_outline(path, outline);
  std::string checked;
  if (outline.format == OutlineFormat::Zip) {
    const ZipReader& zip = outline.zip->zip();
    for (const auto& record : zip.records()) zip.verify(record);  // in pieces: bounded memory
    checked = zip.crc_less() ? concat(zip.records().size(), " records, the file carries no CRC-32s (saved with compute_crc32=False)")
                             : concat(zip.records().size(), " records, CRC-32 verified");
  } else {
    std::vector<uint8_t> piece(size_t{4} << 20);  // no checksums: every byte read, in pieces
    for (const StorageOutline* s : outline.storages) {
      for (uint64_t done = 0; done < s->stored;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(piece.size(), s->stored - done));
        s->source->read_at(s->offset + done, piece.data(), n);
        done += n;
      }
    }
    checked = "legacy format";
  }

  size_t tensors = 0;
  uint64_t storage_bytes = 0;
  std::unordered_set<const StorageOutline*> storages;
  std::vector<const Value*> stack{outline.root.get()};
  std::unordered_set<const Value*> seen;
  while (!stack.empty()) {
    const Value* v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second) continue;
    if (auto t = tensor_of(*v)) {  // a tensor or parameter: one tensor, its storage counted once
      ++tensors;
      if (storages.insert(t->storage).second) storage_bytes += t->storage->nbytes();
      continue;
    }
    push_children(*v, stack);
  }
  return concat(path, ": OK (", checked, ", ", tensors, " tensors over ", storages.size(), " storages of ",
                storage_bytes, " bytes)", unsafe_globals_warning(unsafe_globals_of_file(path)));
}

std::string unsafe_globals_warning(const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  return concat("; WARNING: ", names.size(), " global", names.size() == 1 ? "" : "s",
                " that torch.load(weights_only=True) refuses (torch.load(weights_only=False) would call them): ", list);
}

}  // namespace fabricckpt
