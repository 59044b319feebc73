// safetensors files as tensors: the format layer's entries (safetensors.h) turned into CPU tensors
// that view the file's mapping or own their bytes, and a Value tree flattened into entries to write.
#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/torch_save.h"
#include "parallel.h"
#include "storage_memory.h"

namespace fabricckpt {

namespace st = safetensors;
namespace fs = std::filesystem;
using c10::ScalarType;

namespace {

struct DtypePair {
  st::Dtype file;
  ScalarType torch;
};

// What safetensors.torch maps (bindings/python/src/view.rs and torch.py); F6_* have no torch dtype.
constexpr DtypePair kPairs[] = {
    {st::Dtype::BOOL, ScalarType::Bool},          {st::Dtype::U8, ScalarType::Byte},
    {st::Dtype::I8, ScalarType::Char},            {st::Dtype::I16, ScalarType::Short},
    {st::Dtype::U16, ScalarType::UInt16},         {st::Dtype::F16, ScalarType::Half},
    {st::Dtype::BF16, ScalarType::BFloat16},      {st::Dtype::I32, ScalarType::Int},
    {st::Dtype::U32, ScalarType::UInt32},         {st::Dtype::F32, ScalarType::Float},
    {st::Dtype::F64, ScalarType::Double},         {st::Dtype::I64, ScalarType::Long},
    {st::Dtype::U64, ScalarType::UInt64},         {st::Dtype::C64, ScalarType::ComplexFloat},
    {st::Dtype::F8_E4M3, ScalarType::Float8_e4m3fn}, {st::Dtype::F8_E5M2, ScalarType::Float8_e5m2},
    {st::Dtype::F8_E4M3FNUZ, ScalarType::Float8_e4m3fnuz}, {st::Dtype::F8_E5M2FNUZ, ScalarType::Float8_e5m2fnuz},
    {st::Dtype::F8_E8M0, ScalarType::Float8_e8m0fnu}, {st::Dtype::F4, ScalarType::Float4_e2m1fn_x2},
};

std::optional<ScalarType> torch_dtype(st::Dtype dtype) {
  for (const auto& p : kPairs) {
    if (p.file == dtype) return p.torch;
  }
  return std::nullopt;
}

std::optional<st::Dtype> file_dtype(ScalarType dtype) {
  for (const auto& p : kPairs) {
    if (p.torch == dtype) return p.file;
  }
  return std::nullopt;
}

ValuePtr tensor_value(at::Tensor tensor) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(tensor));
  return Value::tensor(std::move(ref));
}

// A tree flattened into what save_file takes; `keep` holds contiguous copies while they are written.
struct Flattened {
  std::vector<st::TensorData> tensors;
  st::Metadata metadata;
  std::vector<at::Tensor> keep;
  std::vector<std::string> unfit;  // "key (int)": what safetensors cannot hold
  std::unordered_set<std::string> names;
};

void flatten(const Value& node, const std::string& key, Flattened& out, const std::string& path) {
  if (node.is(Kind::Dict)) {
    for (const auto& [k, v] : node.dict().items()) {
      std::string part;
      if (k->is(Kind::String)) {
        part = k->as_string();
      } else if (k->is(Kind::Int)) {
        part = std::to_string(k->as_int());
      } else {
        out.unfit.push_back(concat(key.empty() ? "" : key + ".", "<", describe(*k), "> (a ", kind_name(k->kind), " key)"));
        continue;
      }
      flatten(*v, key.empty() ? part : key + "." + part, out, path);
    }
    return;
  }
  if (key.empty()) throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", kind_name(node.kind)));
  if (!out.names.insert(key).second) throw StateError(concat(path, ": key '", key, "' appears twice once flattened"));
  if (node.is(Kind::String)) {
    out.metadata.emplace_back(key, node.as_string());
    return;
  }
  if (!node.is(Kind::Tensor)) {
    out.unfit.push_back(concat(key, " (", kind_name(node.kind), ")"));
    return;
  }
  const at::Tensor& tensor = *node.tensor_ref().tensor;
  const auto dtype = file_dtype(tensor.scalar_type());
  if (!dtype || tensor.layout() != at::kStrided || !tensor.device().is_cpu()) {
    out.unfit.push_back(concat(key, " (a ", c10::toString(tensor.scalar_type()), " ", tensor.layout(), " tensor on ",
                               tensor.device(), ")"));
    return;
  }
  at::Tensor dense = tensor.contiguous();
  st::TensorData data;
  data.name = key;
  data.dtype = *dtype;
  for (const int64_t d : dense.sizes()) data.shape.push_back(static_cast<uint64_t>(d));
  if (*dtype == st::Dtype::F4) {
    if (data.shape.empty()) {
      out.unfit.push_back(concat(key, " (a 0-d float4_e2m1fn_x2 tensor)"));
      return;
    }
    data.shape.back() *= 2;
  }
  data.size = dense.nbytes();
  data.data = data.size ? dense.const_data_ptr() : nullptr;
  out.tensors.push_back(std::move(data));
  out.keep.push_back(std::move(dense));
}

}  // namespace

namespace {

// The largest index read (the crate's header limit: an index lists no more than its shards' headers).
constexpr uint64_t kMaxIndexSize = safetensors::kMaxHeaderSize;

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options);

// model.safetensors.index.json and its shards beside it: every shard's tensors, shard by shard in the
// index's order (as transformers' load_sharded_checkpoint updates one state dict shard by shard).
ValuePtr load_sharded(const std::string& index_path, const TorchLoadOptions& options) {
  const auto file = MappedFile::open(index_path);
  if (file->size() > kMaxIndexSize) {
    throw FormatError(concat(index_path, ": safetensors index of ", file->size(), " bytes is over the limit"));
  }
  const st::ShardIndex index = st::parse_index(file->read_string(0, static_cast<size_t>(file->size())), index_path);
  const std::string dir = fs::path(index_path).parent_path().string();
  ValuePtr root = Value::plain_dict();
  std::unordered_map<std::string, std::string> holder;  // tensor -> the shard it came from
  for (const auto& name : index.files) {
    const std::string shard = (fs::path(dir) / name).string();
    const ValuePtr tensors = load_single(shard, options);
    for (const auto& [key, value] : tensors->dict().items()) {
      const std::string& tensor = key->as_string();
      if (!holder.emplace(tensor, name).second) {
        throw FormatError(concat(index_path, ": tensor '", tensor, "' is in both ", holder[tensor], " and ", name));
      }
      root->dict().set(key, value);
    }
  }
  for (const auto& [tensor, name] : index.weight_map) {
    const auto found = holder.find(tensor);
    if (found == holder.end() || found->second != name) {
      throw FormatError(concat(index_path, ": the index maps tensor '", tensor, "' to ", name, ", which does not hold it"));
    }
  }
  return root;
}

}  // namespace

ValuePtr load_safetensors_file(const std::string& path, const TorchLoadOptions& options) {
  const std::string index = safetensors_index_of(path);
  return index.empty() ? load_single(path, options) : load_sharded(index, options);
}

namespace {

// Bytes of `file` still to be read into a storage's memory.
struct Fill {
  uint64_t offset;
  uint8_t* dest;
  uint64_t size;
};

// The tensor of entry `t` whose data starts at `offset` of `file`: a view of the mapping when `mmap`
// (and the offset suits the dtype), else memory of its own that `fills` records for reading.
at::Tensor entry_tensor(const std::shared_ptr<const MappedFile>& file, const st::TensorInfo& t, uint64_t offset,
                        bool mmap, std::vector<Fill>& fills) {
  const std::string& path = file->name();
  const auto dtype = torch_dtype(t.dtype);
  if (!dtype) {
    throw FormatError(concat(path, ": tensor '", t.name, "' has dtype ", st::dtype_name(t.dtype),
                             ", for which libtorch has no type"));
  }
  const std::vector<int64_t> sizes = st::torch_sizes(t, path);
  const size_t nbytes = static_cast<size_t>(t.nbytes());
  if (nbytes == 0) return at::empty(sizes, at::TensorOptions().dtype(*dtype));
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(*dtype));
  c10::Storage storage;
  if (mmap && file->mapped() && offset % c10::elementSize(*dtype) == 0) {
    storage = torchsave::mapped_storage(file, offset, nbytes);  // zero copy: a view of the mapping
  } else {
    storage = torchsave::allocate_storage(nbytes);
    fills.push_back({offset, static_cast<uint8_t*>(storage.mutable_data()), nbytes});
  }
  tensor.set_(storage, 0, sizes, c10::contiguous_strides(sizes));
  return tensor;
}

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options) {
  const auto file = options.mmap ? MappedFile::open_private(path) : MappedFile::open(path);
  const st::Header header = st::read_header(*file);
  ValuePtr root = Value::plain_dict();
  std::vector<Fill> fills;
  for (const auto& t : header.tensors) {
    at::Tensor tensor = entry_tensor(file, t, header.data_start() + t.begin, options.mmap, fills);
    root->dict().set(Value::string(t.name), tensor_value(std::move(tensor)));
  }
  uint64_t bytes = 0;
  for (const auto& f : fills) bytes += f.size;
  if (options.progress) options.progress->total = bytes;
  std::vector<uint64_t> sizes;
  for (const auto& f : fills) sizes.push_back(f.size);
  const auto pieces = torchsave::split(sizes);
  torchsave::run_parallel(pieces.size(), torchsave::pick_threads(options.threads, bytes, pieces.size()), [&](size_t p) {
    const auto& piece = pieces[p];
    const Fill& f = fills[piece.item];
    file->read_at(f.offset + piece.offset, f.dest + piece.offset, piece.size);
    if (options.progress) options.progress->add(piece.size);
  });
  return root;
}

}  // namespace

bool is_embedded_safetensors(const MappedFile& file, uint64_t offset) {
  if (offset > file.size() || file.size() - offset < 9) return false;
  uint8_t raw[9];
  file.read_at(offset, raw, 9);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
  return n <= st::kMaxHeaderSize && n <= file.size() - offset - 8 && raw[8] == '{';  // a torch.save stream starts "PK"
}

ValuePtr load_embedded_safetensor(const std::shared_ptr<const MappedFile>& file, uint64_t offset,
                                  const std::string& name, bool mmap) {
  if (offset > file->size()) throw FormatError(concat(file->name(), ": no safetensors data at byte ", offset));
  const auto blob = MappedFile::slice(file, offset, file->size() - offset,
                                      concat(file->name(), " (safetensors at byte ", offset, ")"));
  const st::Header header = st::read_header(*blob);
  const st::TensorInfo* t = header.find(name);
  if (!t) throw FormatError(concat(blob->name(), ": no tensor '", name, "'"));
  std::vector<Fill> fills;
  at::Tensor tensor = entry_tensor(blob, *t, header.data_start() + t->begin, mmap, fills);
  for (const auto& f : fills) blob->read_at(f.offset, f.dest, f.size);
  return tensor_value(std::move(tensor));
}

void save_safetensors_file(const std::string& path, const ValuePtr& root, bool fsync, IoProgress* progress) {
  Flattened flat;
  if (!root || !root->is(Kind::Dict)) {
    throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", root ? kind_name(root->kind) : "null"));
  }
  flatten(*root, "", flat, path);
  if (!flat.unfit.empty()) {
    std::string list;
    for (const auto& u : flat.unfit) list += (list.empty() ? "" : ", ") + u;
    throw StateError(concat(path, ": safetensors holds tensors and string metadata only; these keys hold neither: ", list));
  }
  std::optional<st::Metadata> metadata;
  if (!flat.metadata.empty()) metadata = std::move(flat.metadata);
  st::write_file(path, flat.tensors, metadata, fsync, progress);
}

}  // namespace fabricckpt
