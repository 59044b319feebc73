// safetensors files as tensors: the format layer's entries (safetensors.h) turned into CPU tensors
// that view the file's mapping or own their bytes, and a tree of tensors described for the format
// layer's planning (safetensors_plan.cpp) to write.
#include <ATen/ATen.h>

#include <filesystem>
#include <optional>
#include <utility>

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

ValuePtr tensor_value(at::Tensor tensor) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(tensor));
  return Value::tensor(std::move(ref));
}

// A tree of the library's tensors flattened (st::flatten); `keep` holds contiguous copies while they
// are written (the same tensor where it already was contiguous).
struct TorchFlat {
  st::FlatState flat;
  std::vector<at::Tensor> keep;
};

// Where the tensor's storage is; 0 for an empty one, as torch gives every empty storage (which
// huggingface_hub's split then treats as one storage).
uintptr_t storage_address(const at::Tensor& t) {
  return t.storage().nbytes() == 0 ? 0 : reinterpret_cast<uintptr_t>(t.storage().data());
}

// The bytes of its storage the tensor's elements reach, from its first to one past its last.
std::pair<uint64_t, uint64_t> storage_range(const at::Tensor& t) {
  const uint64_t begin = static_cast<uint64_t>(t.storage_offset()) * t.element_size();
  if (t.numel() == 0) return {begin, begin};
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {begin, begin + static_cast<uint64_t>(last + 1) * t.element_size()};
}

TorchFlat flatten_state(const ValuePtr& root, const std::string& path) {
  TorchFlat out;
  out.flat = st::flatten(root, path, [&out](const Value& node, const std::string& key, st::FlatState& flat) {
    if (!node.is(Kind::Tensor)) return concat(key, " (", kind_name(node.kind), ")");
    const at::Tensor& tensor = *node.tensor_ref().tensor;
    const auto dtype = st::dtype_of_torch(c10::toString(tensor.scalar_type()));
    if (!dtype || tensor.layout() != at::kStrided || !tensor.device().is_cpu()) {
      return concat(key, " (a ", c10::toString(tensor.scalar_type()), " ", tensor.layout(), " tensor on ",
                    tensor.device(), ")");
    }
    at::Tensor dense = tensor.contiguous();
    st::TensorData data;
    data.name = key;
    data.dtype = *dtype;
    for (const int64_t d : dense.sizes()) data.shape.push_back(static_cast<uint64_t>(d));
    if (*dtype == st::Dtype::F4) {
      if (data.shape.empty()) return concat(key, " (a 0-d float4_e2m1fn_x2 tensor)");
      data.shape.back() *= 2;
    }
    data.size = dense.nbytes();
    data.data = data.size ? dense.const_data_ptr() : nullptr;
    const auto [begin, end] = storage_range(tensor);
    flat.tensors.push_back(std::move(data));
    flat.memory.push_back({storage_address(tensor), tensor.storage().nbytes(), begin, end, storage_address(dense),
                           dense.storage().nbytes()});
    out.keep.push_back(std::move(dense));
    return std::string();
  });
  return out;
}

}  // namespace

namespace {

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options);

// model.safetensors.index.json and its shards beside it: every shard's tensors, in the index's order.
ValuePtr load_sharded(const std::string& index_path, const TorchLoadOptions& options) {
  const st::ShardIndex index = st::read_index(index_path);
  const std::string dir = fs::path(index_path).parent_path().string();
  std::vector<ValuePtr> shards;
  for (const auto& name : index.files) shards.push_back(load_single((fs::path(dir) / name).string(), options));
  return st::merge_shards(index, shards, index_path);
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

// The tensors of an opened file: views of it with options.mmap, else read into their own memory.
ValuePtr load_opened(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
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

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options) {
  return load_opened(options.mmap ? MappedFile::open_private(path) : MappedFile::open(path), options);
}

}  // namespace

ValuePtr load_safetensors_bytes(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
  if (!file->writable() || !file->mapped()) throw Error(concat(file->name(), ": bytes to load in place must be writable"));
  TorchLoadOptions views = options;
  views.mmap = true;  // the tensors view the downloaded bytes
  return load_opened(file, views);
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


void write_safetensors_stream(OutputSink& out, const ValuePtr& tensors, const st::Metadata& metadata,
                              const std::string& target) {
  const TorchFlat flat = flatten_state(tensors, target);
  st::refuse_shared_memory(flat.flat, target);
  st::write_stream(out, flat.flat.tensors, metadata, target);
}

struct SafetensorsLayout::Impl {
  std::string target;
  TorchFlat flat;                     // keeps the tensors (and contiguous copies) alive
  st::Layout layout;
  std::vector<size_t> by_offset;      // tensor indices in file order
};

SafetensorsLayout::SafetensorsLayout(const ValuePtr& tensors, const st::Metadata& metadata, const std::string& target)
    : SafetensorsLayout(tensors, metadata, MetadataFrom::Given, target) {}

std::unique_ptr<SafetensorsLayout> SafetensorsLayout::of_file(const ValuePtr& root, const std::string& target) {
  return std::unique_ptr<SafetensorsLayout>(new SafetensorsLayout(root, std::nullopt, MetadataFrom::Strings, target));
}

SafetensorsLayout::SafetensorsLayout(const ValuePtr& root, const std::optional<st::Metadata>& metadata,
                                     MetadataFrom from, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  Impl& l = *impl_;
  l.target = target;
  l.flat = flatten_state(root, target);
  st::refuse_shared_memory(l.flat.flat, target);
  std::optional<st::Metadata> written = metadata;
  if (from == MetadataFrom::Strings && !l.flat.flat.metadata.empty()) written = l.flat.flat.metadata;  // as save_file
  l.layout = st::plan_layout(l.flat.flat.tensors, written, target);
  l.by_offset = st::file_order(l.layout);
}

SafetensorsLayout::~SafetensorsLayout() = default;

uint64_t SafetensorsLayout::size() const { return impl_->layout.total; }

void SafetensorsLayout::fill(uint64_t offset, void* dest, size_t size) const {
  st::fill_planned(impl_->target, impl_->layout, impl_->flat.flat.tensors, impl_->by_offset, offset, dest, size);
}

struct SafetensorsIndexLayout::Impl {
  TorchFlat flat;  // keeps the tensors (and contiguous copies) alive
  st::IndexPlan plan;
  std::vector<std::vector<size_t>> by_offset;  // per shard
};

SafetensorsIndexLayout::SafetensorsIndexLayout(const ValuePtr& root, const std::string& index_target,
                                               uint64_t max_shard_size)
    : impl_(std::make_unique<Impl>()) {
  std::string stem;
  if (!is_safetensors_index_name(index_target, &stem)) {
    throw StateError(concat(index_target, ": not a Hugging Face index name (*.safetensors.index.json)"));
  }
  impl_->flat = flatten_state(root, index_target);
  impl_->plan = st::plan_index(impl_->flat.flat, index_target, stem, max_shard_size);
  for (const auto& shard : impl_->plan.shards) impl_->by_offset.push_back(st::file_order(shard.layout));
}

SafetensorsIndexLayout::~SafetensorsIndexLayout() = default;

size_t SafetensorsIndexLayout::shard_count() const { return impl_->plan.shards.size(); }

namespace {
const st::IndexShard& shard_at(const std::vector<st::IndexShard>& shards, size_t i) {
  if (i >= shards.size()) throw Error(concat("no shard ", i, " of ", shards.size()));
  return shards[i];
}
}  // namespace

const std::string& SafetensorsIndexLayout::shard_name(size_t i) const { return shard_at(impl_->plan.shards, i).file; }

uint64_t SafetensorsIndexLayout::shard_size(size_t i) const { return shard_at(impl_->plan.shards, i).layout.total; }

void SafetensorsIndexLayout::fill(size_t i, uint64_t offset, void* dest, size_t size) const {
  const st::IndexShard& shard = shard_at(impl_->plan.shards, i);
  st::fill_planned(shard.path, shard.layout, shard.tensors, impl_->by_offset[i], offset, dest, size);
}

const std::string& SafetensorsIndexLayout::index_json() const { return impl_->plan.index; }

ValuePtr load_safetensors_index_bytes(const st::ShardIndex& index, const std::string& index_name,
                                      const std::vector<std::shared_ptr<const MappedFile>>& shards) {
  if (shards.size() != index.files.size()) {
    throw Error(concat(index_name, ": ", shards.size(), " shard files given for the index's ", index.files.size()));
  }
  std::vector<ValuePtr> loaded;
  for (const auto& shard : shards) loaded.push_back(load_safetensors_bytes(shard));
  return st::merge_shards(index, loaded, index_name);
}

void save_safetensors_file(const std::string& path, const ValuePtr& root, bool fsync, IoProgress* progress,
                           uint64_t max_shard_size) {
  const TorchFlat flat = flatten_state(root, path);
  st::write_flat(path, flat.flat, fsync, progress, max_shard_size);
}

}  // namespace fabricckpt
