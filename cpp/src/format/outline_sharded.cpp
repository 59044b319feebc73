// convert of a sharded torch.distributed.checkpoint directory without libtorch: the consolidated
// tree built as the libtorch reader builds it (sharded_checkpoint.cpp's Reader::read_all, then
// meta.pt's entries, as Fabric.consolidate), with each tensor that several chunks hold made a
// storage of its own that is assembled only when the writer reaches it: one tensor in memory at a time.
#include <cstring>
#include <filesystem>
#include <functional>
#include <algorithm>
#include <map>
#include <set>
#include <memory>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/safetensors.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

bool is_floating(const std::string& dtype) {
  return dtype == "Half" || dtype == "BFloat16" || dtype == "Float" || dtype == "Double" ||
         dtype.rfind("Float8", 0) == 0 || dtype.rfind("Complex", 0) == 0;
}

// The directory's metadata, its data files and the torch.save streams opened from them.
class ShardedSource {
 public:
  explicit ShardedSource(std::string dir) : dir_(std::move(dir)) {
    const std::string file = (fs::path(dir_) / dcp::kMetadataFile).string();
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) {
      throw FormatError(concat(dir_, ": not a sharded checkpoint (no ", dcp::kMetadataFile,
                               "; the save did not finish, or this is not a torch.distributed.checkpoint directory)"));
    }
    auto opened = MappedFile::open(file);
    metadata_ = dcp::read_metadata(opened->read_string(0, opened->size()), file);
  }

  const dcp::Metadata& metadata() const { return metadata_; }
  const std::string& dir() const { return dir_; }

  std::vector<dcp::PathItem> path_of(const std::string& flat_key) const {
    if (const auto* path = metadata_.path_of(flat_key)) return *path;
    size_t dot = flat_key.find('.');
    if (dot == std::string::npos) return {flat_key};
    return {flat_key.substr(0, dot), flat_key.substr(dot + 1)};
  }

  // An item as an outline: its tree (a value, or a tensor chunk's rebuild recipe) and how to read
  // every byte of it with what checks the format has. Kept open as long as this source.
  struct Item {
    ValuePtr root;
    std::function<void()> verify;
  };

  // A tensor chunk is a torch.save stream, or under serialization_format=SAFETENSORS a tensor of
  // the safetensors blob that starts at the recorded offset (and runs to the end of the file).
  Item item(const std::string& fqn, const std::vector<int64_t>* offsets) {
    auto [file, info] = locate(fqn, offsets);
    if (offsets && safetensors::looks_like_safetensors(*file, info->offset)) {
      auto& blob = blobs_[{info->relative_path, info->offset}];
      if (!blob) {
        blob = std::make_shared<FileOutline>(read_safetensors_outline(MappedFile::slice(
            file, info->offset, file->size() - info->offset, concat(file->path(), " (safetensors at byte ", info->offset, ")"))));
      }
      ValuePtr node = blob->root->dict().get(fqn);
      const auto tensor = node ? tensor_of(*node) : std::nullopt;
      if (!tensor) throw FormatError(concat(file->path(), ": the safetensors at byte ", info->offset, " holds no tensor '", fqn, "'"));
      if (tensor->storage->stored != info->length) {
        throw FormatError(concat(file->path(), ": '", fqn, "' is recorded as ", info->length, " bytes, its safetensors entry has ",
                                 tensor->storage->stored));
      }
      const StorageOutline* storage = tensor->storage;
      return {node, [storage] { storage->read_all(); }};  // the format has no checksum: every byte readable
    }
    const OutlineFile* opened = stream(fqn, offsets).get();
    return {opened->root(), [opened] {
              for (const auto& record : opened->zip().records()) opened->zip().verify(record);  // in pieces
            }};
  }

  // The item's torch.save stream (a value's, or a chunk's under the TORCH_SAVE serialization), as an outline.
  std::shared_ptr<const OutlineFile> stream(const std::string& fqn, const std::vector<int64_t>* offsets = nullptr) {
    auto [file, info] = locate(fqn, offsets);
    auto stream = OutlineFile::open(MappedFile::slice(file, info->offset, info->length,
                                                      concat(file->path(), " ('", fqn, "' at byte ", info->offset, ")")));
    streams_.push_back(stream);
    return stream;
  }

 private:
  // The file and byte range the metadata records for an item, checked to lie inside the file.
  std::pair<std::shared_ptr<const MappedFile>, const dcp::StorageInfo*> locate(const std::string& fqn,
                                                                               const std::vector<int64_t>* offsets) {
    const std::string metadata_file = (fs::path(dir_) / dcp::kMetadataFile).string();
    const dcp::StorageInfo* info = metadata_.storage_of(fqn, offsets);
    if (!info) {
      throw FormatError(concat(metadata_file, ": no storage recorded for '", fqn, "'",
                               offsets ? " chunk at " + dims_text(*offsets) : std::string()));
    }
    if (!info->transforms.empty()) {
      throw FormatError(concat(metadata_file, ": '", fqn, "' is stored through transforms (", info->transforms[0],
                               "), which are not supported"));
    }
    const std::string path = (fs::path(dir_) / info->relative_path).string();
    auto& file = files_[info->relative_path];
    if (!file) file = MappedFile::open(path);
    if (info->offset > file->size() || info->length > file->size() - info->offset) {
      throw FormatError(concat(file->path(), ": '", fqn, "' is recorded at bytes ", info->offset, "+", info->length,
                               " but the file has ", file->size(), " bytes (truncated?)"));
    }
    return {file, info};
  }

  std::string dir_;
  dcp::Metadata metadata_;
  std::map<std::string, std::shared_ptr<const MappedFile>> files_;
  std::vector<std::shared_ptr<const OutlineFile>> streams_;
  std::map<std::pair<std::string, uint64_t>, std::shared_ptr<FileOutline>> blobs_;  // (file, offset) -> its tensors
};

// A chunk held whole by one stream, written again as the libtorch reader and writer pass it on:
// its own view of its own storage, requires_grad as its at::Tensor had it.
ValuePtr chunk_as_is(const Value& node, const TensorOutline& t) {
  const Value::Items& args = node.object_ref().args->items();
  bool grad = t.requires_grad;
  ValuePtr storage_node = args[0];
  if (t.is_parameter) {
    const Value& inner = *args[0];
    storage_node = inner.object_ref().args->items()[0];
    grad = grad || tensor_of(inner)->requires_grad;
  } else {
    storage_node = args[0];
  }
  grad = grad && is_floating(t.dtype.name);
  const bool typed = storage_class_of_dtype(t.dtype.name).has_value();
  if (!t.is_parameter) return tensor_recipe(storage_node, t.dtype.name, t.offset, t.sizes, t.strides, grad, typed);
  Object param;
  param.callable = Value::global("torch._utils", "_rebuild_parameter");
  param.args = Value::tuple({tensor_recipe(storage_node, t.dtype.name, t.offset, t.sizes, t.strides, false, typed),
                             Value::boolean(grad), Value::ordered_dict()});
  return Value::object(std::move(param));
}

// Copies a chunk's elements to its place in a contiguous tensor of `size` (row by row when the
// chunk's rows are contiguous).
void place_chunk(const uint8_t* chunk_data, const TensorOutline& chunk, const std::vector<int64_t>& at,
                 const std::vector<int64_t>& size, size_t es, uint8_t* out) {
  const size_t dims = size.size();
  if (chunk.numel() == 0) return;
  std::vector<int64_t> out_strides(dims, 1);
  for (size_t d = dims; d-- > 1;) out_strides[d - 1] = out_strides[d] * size[d];
  if (dims == 0) {
    std::memcpy(out, chunk_data + chunk.offset * es, es);
    return;
  }
  const size_t last = dims - 1;
  const bool rows = chunk.strides[last] == 1 || chunk.sizes[last] == 1;
  std::vector<int64_t> index(dims, 0);
  while (true) {
    int64_t src = chunk.offset, dst = 0;
    for (size_t d = 0; d < dims; ++d) {
      src += index[d] * chunk.strides[d];
      dst += (at[d] + index[d]) * out_strides[d];
    }
    if (rows) {
      std::memcpy(out + dst * es, chunk_data + src * es, static_cast<size_t>(chunk.sizes[last]) * es);
    } else {
      for (int64_t i = 0; i < chunk.sizes[last]; ++i) {
        std::memcpy(out + (dst + i) * es, chunk_data + (src + i * chunk.strides[last]) * es, es);
      }
    }
    size_t d = last;  // next row: the last dimension is done whole
    while (d-- > 0) {
      if (++index[d] < chunk.sizes[d]) break;
      index[d] = 0;
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

}  // namespace

ShardedOutline read_sharded_outline(const std::string& dir) {
  auto source = std::make_shared<ShardedSource>(dir);
  ValuePtr root = Value::plain_dict();
  for (const dcp::Entry& entry : source->metadata().entries) {
    ValuePtr value;
    if (!entry.tensor) {
      value = source->stream(entry.key)->root();
    } else {
      const dcp::TensorEntry& t = *entry.tensor;
      auto dtype = dtype_of_torch_name(t.dtype);
      if (!dtype) throw FormatError(concat(dir, ": '", entry.key, "' has the unknown dtype torch.", t.dtype));
      const std::vector<int64_t> origin(t.size.size(), 0);
      for (const auto& chunk : t.chunks) {  // one chunk that is the whole tensor: passed on as it is
        if (chunk.offsets != origin || chunk.sizes != t.size) continue;
        const auto item = source->item(entry.key, &chunk.offsets);
        auto loaded = tensor_of(*item.root);
        if (loaded && loaded->sizes == t.size && loaded->dtype.name == dtype->name) value = chunk_as_is(*item.root, *loaded);
      }
      if (!value) {
        const auto elements = static_cast<uint64_t>(dcp::checked_volume(t.size, concat(dir, ": '", entry.key, "'")));
        if (elements > (uint64_t{1} << 62) / dtype->element_size) {
          throw FormatError(concat(dir, ": '", entry.key, "' of size ", dims_text(t.size), " is too large"));
        }
        uint64_t covered = 0;  // the metadata's chunks never overlap: a gap shows in their volumes
        for (const auto& chunk : t.chunks) covered += static_cast<uint64_t>(dcp::checked_volume(chunk.sizes, entry.key));
        if (covered < elements) {
          throw FormatError(concat(dir, ": the chunks of '", entry.key, "' cover ", covered, " of the ", elements,
                                   " elements of ", dims_text(t.size), ": a gap no chunk holds"));
        }
        auto storage = std::make_shared<StorageOutline>();
        storage->key = entry.key;
        storage->location = "cpu";
        storage->dtype = *dtype;
        storage->numel = elements;
        const std::string key = entry.key;
        const dcp::TensorEntry tensor = t;
        storage->assemble = [source, key, tensor, dtype = *dtype](uint8_t* out) {
          for (const auto& chunk : tensor.chunks) {
            auto part = tensor_of(*source->item(key, &chunk.offsets).root);
            if (!part || part->sizes != chunk.sizes || part->dtype.name != dtype.name) {
              throw FormatError(concat(source->dir(), ": the chunk of '", key, "' at ", dims_text(chunk.offsets),
                                       " is not a ", dtype.name, " tensor of shape ", dims_text(chunk.sizes)));
            }
            const std::vector<uint8_t> bytes = part->storage->read_all();  // the chunk's record, CRC-checked whole
            place_chunk(bytes.data(), *part, chunk.offsets, tensor.size, dtype.element_size, out);
          }
        };
        std::vector<int64_t> strides(t.size.size(), 1);
        for (size_t d = t.size.size(); d-- > 1;) strides[d - 1] = strides[d] * t.size[d];
        const auto storage_class = storage_class_of_dtype(dtype->name);
        if (!storage_class) storage->dtype = DtypeInfo{"Byte", 1}, storage->numel = elements * dtype->element_size;
        auto node = Value::storage(StorageRef{storage, storage_class.value_or("UntypedStorage")});
        value = tensor_recipe(node, dtype->name, 0, t.size, strides, false, storage_class.has_value());
      }
    }
    dcp::set_element(root, source->path_of(entry.key), value);
  }
  const std::string meta = (fs::path(dir) / dcp::kLightningMetaFile).string();
  std::error_code ec;
  std::shared_ptr<const OutlineFile> meta_file;
  if (fs::is_regular_file(meta, ec)) {
    meta_file = OutlineFile::open(meta);
    if (!meta_file->root()->is(Kind::Dict)) {
      throw FormatError(concat(meta, ": holds a ", kind_name(meta_file->root()->kind), ", not a dictionary"));
    }
    for (const auto& [key, value] : meta_file->root()->dict().items()) root->dict().set(key, value);
  }
  struct Owner {
    std::shared_ptr<ShardedSource> source;
    std::shared_ptr<const OutlineFile> meta;
  };
  return ShardedOutline{root, std::make_shared<Owner>(Owner{source, meta_file})};
}

void convert_sharded_outline(const std::string& dir, const std::string& target, const std::string& archive_name,
                             bool allow_unsafe_globals) {
  const ShardedOutline outline = read_sharded_outline(dir);
  write_outline_file(outline.root, target, archive_name, allow_unsafe_globals);
}

void convert_sharded_outline(const std::string& dir, OutputSink& out, const std::string& target,
                             const std::string& archive_name, bool allow_unsafe_globals) {
  const ShardedOutline outline = read_sharded_outline(dir);
  write_outline_tree(outline.root, out, target, archive_name, allow_unsafe_globals);
}

std::string verify_sharded_outline(const std::string& dir) {
  ShardedSource source(dir);
  const dcp::Metadata& metadata = source.metadata();
  size_t tensors = 0, chunks = 0;
  for (const dcp::Entry& entry : metadata.entries) {
    if (!entry.tensor) {
      source.item(entry.key, nullptr).verify();
      continue;
    }
    const dcp::TensorEntry& t = *entry.tensor;
    auto dtype = dtype_of_torch_name(t.dtype);
    if (!dtype) throw FormatError(concat(dir, ": '", entry.key, "' has the unknown dtype torch.", t.dtype));
    ++tensors;
    uint64_t covered = 0;
    for (const auto& chunk : t.chunks) {
      ++chunks;
      const auto item = source.item(entry.key, &chunk.offsets);
      auto part = tensor_of(*item.root);
      if (!part || part->sizes != chunk.sizes) {
        throw FormatError(concat(dir, ": the chunk of '", entry.key, "' at ", dims_text(chunk.offsets),
                                 " is not a tensor of shape ", dims_text(chunk.sizes)));
      }
      item.verify();
      covered += static_cast<uint64_t>(dcp::checked_volume(chunk.sizes, entry.key));
    }
    const auto elements = static_cast<uint64_t>(dcp::checked_volume(t.size, entry.key));
    if (covered < elements) {
      throw FormatError(concat(dir, ": the chunks of '", entry.key, "' cover ", covered, " of the ", elements,
                               " elements of ", dims_text(t.size), ": a gap no chunk holds"));
    }
  }
  std::set<std::string> files;
  uint64_t bytes = 0;
  for (const auto& [key, info] : metadata.storage) {
    files.insert(info.relative_path);
    bytes += info.length;
  }
  return concat("OK: sharded checkpoint, ", metadata.entries.size(), " keys (", tensors, " tensors in ", chunks, " chunks, ",
                metadata.entries.size() - tensors, " values), ", files.size(), " shard files, ", bytes,
                " bytes, every CRC-32 checked and every tensor covered");
}

std::vector<std::string> unsafe_globals_of_sharded(const std::string& dir) {
  ShardedSource source(dir);
  std::vector<std::string> found;
  auto add = [&](const std::vector<std::string>& names) {
    for (const auto& n : names) {
      if (std::find(found.begin(), found.end(), n) == found.end()) found.push_back(n);
    }
  };
  const std::string meta = (fs::path(dir) / dcp::kLightningMetaFile).string();
  std::error_code ec;
  if (fs::is_regular_file(meta, ec)) add(unsafe_globals_of_zip_file(meta));
  for (const dcp::Entry& entry : source.metadata().entries) {
    if (entry.tensor) continue;
    auto stream = source.stream(entry.key);
    const ZipRecord* record = stream->zip().find("data.pkl");
    try {
      add(unsafe_globals_in_pickle(stream->zip().data(*record, /*verify_crc=*/true)));
    } catch (const FormatError& e) {
      throw FormatError(concat(stream->path(), ": data.pkl: ", e.what()));
    }
  }
  return found;
}

}  // namespace fabricckpt
