// safetensors files outlined without libtorch: the dict of tensors `safetensors.torch.load_file`
// gives, each tensor the recipe torch.save would pickle for it over a storage that is its byte range
// in the file. A Hugging Face sharded checkpoint is every shard's tensors in its index's order (as
// the libtorch load_safetensors_file reads it).
#include <algorithm>
#include <array>
#include <filesystem>
#include <string_view>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safetensors.h"

namespace fabricckpt {

namespace st = safetensors;
namespace fs = std::filesystem;

namespace {

// The torch dtype safetensors.torch gives each file dtype; F6_* have none.
constexpr std::array<std::pair<st::Dtype, std::string_view>, 20> kTorchNames{{
    {st::Dtype::BOOL, "bool"},           {st::Dtype::U8, "uint8"},
    {st::Dtype::I8, "int8"},             {st::Dtype::I16, "int16"},
    {st::Dtype::U16, "uint16"},          {st::Dtype::F16, "float16"},
    {st::Dtype::BF16, "bfloat16"},       {st::Dtype::I32, "int32"},
    {st::Dtype::U32, "uint32"},          {st::Dtype::F32, "float32"},
    {st::Dtype::F64, "float64"},         {st::Dtype::I64, "int64"},
    {st::Dtype::U64, "uint64"},          {st::Dtype::C64, "complex64"},
    {st::Dtype::F8_E4M3, "float8_e4m3fn"}, {st::Dtype::F8_E5M2, "float8_e5m2"},
    {st::Dtype::F8_E4M3FNUZ, "float8_e4m3fnuz"}, {st::Dtype::F8_E5M2FNUZ, "float8_e5m2fnuz"},
    {st::Dtype::F8_E8M0, "float8_e8m0fnu"}, {st::Dtype::F4, "float4_e2m1fn_x2"},
}};

DtypeInfo torch_dtype(const st::TensorInfo& t, const std::string& path) {
  for (const auto& [file_dtype, name] : kTorchNames) {
    if (file_dtype == t.dtype) return *dtype_of_torch_name(std::string(name));
  }
  throw FormatError(concat(path, ": tensor '", t.name, "' has dtype ", st::dtype_name(t.dtype),
                           ", for which libtorch has no type"));
}

// What outlining holds: the shard files and the storages the tree points to.
struct SafetensorsFiles {
  std::vector<std::shared_ptr<const MappedFile>> files;
  std::vector<uint64_t> data_start;  // per file, where its tensors' bytes begin
  size_t metadata_entries = 0;       // of every file's __metadata__
  std::vector<std::shared_ptr<StorageOutline>> storages;
};

// One file's tensors into `root`, in data order.
void add_file(std::shared_ptr<const MappedFile> file, SafetensorsFiles& owner, const ValuePtr& root) {
  const std::string& path = file->path();
  const st::Header header = st::read_header(*file);
  for (const auto& t : header.tensors) {
    const DtypeInfo dtype = torch_dtype(t, path);
    const std::vector<int64_t> sizes = st::torch_sizes(t, path);
    const auto storage_class = storage_class_of_dtype(dtype.name);
    auto storage = std::make_shared<StorageOutline>();
    storage->source = file.get();
    storage->offset = header.data_start() + t.begin;
    storage->stored = t.nbytes();
    storage->key = t.name;
    storage->location = "cpu";
    storage->dtype = storage_class ? dtype : DtypeInfo{"Byte", 1};
    storage->numel = t.nbytes() / storage->dtype.element_size;
    std::vector<int64_t> strides(sizes.size(), 1);
    for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * sizes[d];
    auto node = Value::storage(StorageRef{storage, storage_class.value_or("UntypedStorage")});
    root->dict().set(Value::string(t.name),
                     tensor_recipe(node, dtype.name, 0, sizes, strides, false, storage_class.has_value()));
    owner.storages.push_back(std::move(storage));
  }
  owner.data_start.push_back(header.data_start());
  owner.metadata_entries += header.metadata ? header.metadata->size() : 0;
  owner.files.push_back(std::move(file));
}

}  // namespace

FileOutline read_safetensors_outline(const std::string& path) {
  auto owner = std::make_shared<SafetensorsFiles>();
  FileOutline out;
  out.format = OutlineFormat::Safetensors;
  out.root = Value::plain_dict();
  const std::string index_path = safetensors_index_of(path);
  if (index_path.empty()) {
    add_file(MappedFile::open(path), *owner, out.root);
  } else {
    const st::ShardIndex index = st::read_index(index_path);
    const fs::path dir = fs::path(index_path).parent_path();
    std::vector<ValuePtr> shards;
    for (const auto& name : index.files) {
      shards.push_back(Value::plain_dict());
      add_file(MappedFile::open((dir / name).string()), *owner, shards.back());
    }
    out.root = st::merge_shards(index, shards, index_path);
  }
  for (const auto& s : owner->storages) out.storages.push_back(s.get());
  out.owner = owner;
  return out;
}

FileOutline read_safetensors_outline(std::shared_ptr<const MappedFile> file) {
  auto owner = std::make_shared<SafetensorsFiles>();
  FileOutline out;
  out.format = OutlineFormat::Safetensors;
  out.root = Value::plain_dict();
  add_file(std::move(file), *owner, out.root);
  for (const auto& s : owner->storages) out.storages.push_back(s.get());
  out.owner = owner;
  return out;
}

std::string verify_safetensors_outline(const std::string& path, const FileOutline& outline) {
  const auto& owner = *static_cast<const SafetensorsFiles*>(outline.owner.get());
  uint64_t bytes = 0;
  std::vector<char> buffer(size_t{4} << 20);
  for (size_t f = 0; f < owner.files.size(); ++f) {  // every byte readable (the format has no checksum to check)
    const MappedFile& file = *owner.files[f];
    for (uint64_t at = owner.data_start[f]; at < file.size();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), file.size() - at));
      file.read_at(at, buffer.data(), n);
      at += n;
    }
    bytes += file.size() - owner.data_start[f];
  }
  const size_t tensors = owner.storages.size();
  return safetensors_index_of(path).empty()
             ? concat("ok: safetensors, ", tensors, " tensors, ", bytes, " bytes of tensor data, ",
                      owner.metadata_entries, " metadata entries")
             : concat("ok: safetensors index of ", owner.files.size(), " shards, ", tensors, " tensors, ", bytes,
                      " bytes of tensor data");
}

}  // namespace fabricckpt
