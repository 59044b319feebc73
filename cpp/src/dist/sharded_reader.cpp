// Reading torch.distributed.checkpoint directories: the metadata, chunks assembled into the
// regions a plan asks for (resharding), verification and the scan for unsafe globals.
#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "fabricckpt/dcp.h"
#include "fabricckpt/dtypes.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"
#include "shard_tensors.h"

namespace fabricckpt::sharded {

namespace fs = std::filesystem;
using dcp::PathItem;

bool is_sharded_checkpoint(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / dcp::kMetadataFile, ec);
}

Reader::Reader(std::string dir, bool map_chunks) : dir_(std::move(dir)), map_chunks_(map_chunks) {
  const std::string file = (fs::path(dir_) / dcp::kMetadataFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw FormatError(concat(dir_, ": not a sharded checkpoint (no ", dcp::kMetadataFile,
                             "; the save did not finish, or this is not a torch.distributed.checkpoint directory)"));
  }
  auto opened = MappedFile::open(file);
  metadata_ = dcp::read_metadata(opened->read_string(0, opened->size()), file);
  for (const auto& [key, info] : metadata_.storage) ++items_at_[{info.relative_path, info.offset}];
  // Each entry's path once, and the entries of each top-level key: lookups by key are hash lookups.
  paths_.reserve(metadata_.entries.size());
  for (size_t i = 0; i < metadata_.entries.size(); ++i) {
    paths_.push_back(path_of(metadata_.entries[i].key));
    if (const auto* top = std::get_if<std::string>(&paths_.back()[0])) {
      auto [it, fresh] = by_top_key_.try_emplace(*top);
      if (fresh) top_keys_.push_back(*top);
      it->second.push_back(i);
    }
  }
}

std::vector<PathItem> Reader::path_of(const std::string& flat_key) const {
  if (const auto* path = metadata_.path_of(flat_key)) return *path;
  // No planner data (a custom planner): the first dotted part is the top-level key.
  size_t dot = flat_key.find('.');
  if (dot == std::string::npos) return {flat_key};
  return {flat_key.substr(0, dot), flat_key.substr(dot + 1)};
}

std::vector<std::string> Reader::top_level_keys() const { return top_keys_; }

void Reader::check_in_file(const dcp::StorageInfo& info, const std::string& fqn, const MappedFile& file) const {
  if (info.offset > file.size() || info.length > file.size() - info.offset) {
    throw FormatError(concat(file.path(), ": '", fqn, "' is recorded at bytes ", info.offset, "+", info.length,
                             " but the file has ", file.size(), " bytes (truncated?)"));
  }
}

// Before a tensor of `bytes` is allocated for `entry`: every chunk overlapping the region must
// have a stream that can hold it, inside its file. The metadata's checks (chunks tile the tensor,
// storage ranges disjoint) then bound what is allocated by the bytes of the files.
void Reader::check_chunks_fit(const dcp::Entry& entry, const std::vector<int64_t>& offsets,
                              const std::vector<int64_t>& sizes, size_t element_size) const {
  const dcp::TensorEntry& t = *entry.tensor;
  const std::string metadata_file = (fs::path(dir_) / dcp::kMetadataFile).string();
  // The chunks never overlap (the metadata was checked), so their intersections with the region
  // add up to the elements covered: a gap is refused here, before anything is allocated.
  uint64_t covered = 0;
  for (const auto& chunk : t.chunks) {
    bool overlaps = true;
    uint64_t common = 1;
    for (size_t d = 0; d < sizes.size() && overlaps; ++d) {
      const int64_t lo = std::max(chunk.offsets[d], offsets[d]);
      const int64_t hi = std::min(chunk.offsets[d] + chunk.sizes[d], offsets[d] + sizes[d]);
      overlaps = hi > lo;
      if (overlaps) common *= static_cast<uint64_t>(hi - lo);  // <= the chunk's checked volume
    }
    if (!overlaps) continue;
    covered += common;
    const dcp::StorageInfo* info = metadata_.storage_of(entry.key, &chunk.offsets);
    if (!info) {
      throw FormatError(concat(metadata_file, ": no storage recorded for '", entry.key, "' chunk at ",
                               dims_text(chunk.offsets)));
    }
    const auto elements = static_cast<uint64_t>(dcp::checked_volume(chunk.sizes, concat("'", entry.key, "'")));
    if (elements > info->length / element_size) {
      throw FormatError(concat(metadata_file, ": the chunk of '", entry.key, "' at ", dims_text(chunk.offsets), " has ",
                               elements, " elements of ", element_size, " bytes, but its stream is only ",
                               info->length, " bytes"));
    }
    auto& file = files_[info->relative_path];
    const std::string path = (fs::path(dir_) / info->relative_path).string();
    if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
    check_in_file(*info, entry.key, *file);
  }
  const auto wanted = static_cast<uint64_t>(dcp::checked_volume(sizes, concat("'", entry.key, "'")));
  if (covered < wanted) {
    throw FormatError(concat(dir_, ": the chunks of '", entry.key, "' cover ", covered, " of the ", wanted,
                             " elements requested (region ", dims_text(offsets), " + ", dims_text(sizes), " of ",
                             dims_text(t.size), "): a gap no chunk holds"));
  }
}

ValuePtr Reader::load_item(const std::string& fqn, const std::vector<int64_t>* offsets,
                           const at::Tensor* destination) const {
  const dcp::StorageInfo* info = metadata_.storage_of(fqn, offsets);
  const std::string metadata_file = (fs::path(dir_) / dcp::kMetadataFile).string();
  if (!info) {
    throw FormatError(concat(metadata_file, ": no storage recorded for '", fqn, "'",
                             offsets ? " chunk at " + dims_text(*offsets) : std::string()));
  }
  if (!info->transforms.empty()) {
    throw FormatError(concat(metadata_file, ": '", fqn, "' is stored through transforms (", info->transforms[0],
                             "), which are not supported"));
  }
  auto& file = files_[info->relative_path];
  const std::string path = (fs::path(dir_) / info->relative_path).string();
  // Mapped: chunk tensors can view a private mapping (as torch.load(mmap=True) gives them) instead
  // of being copied; writes to them stay in memory. Otherwise read with pread into owned memory.
  if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
  check_in_file(*info, fqn, *file);
  if (offsets && safetensors::looks_like_safetensors(*file, info->offset)) {  // serialization_format=SAFETENSORS
    ValuePtr tensor = load_embedded_safetensor(file, info->offset, fqn, map_chunks_);
    const at::Tensor& t = *tensor->tensor_ref().tensor;
    if (t.nbytes() != info->length) {  // each item reads its own bytes: together no more than the file holds
      throw FormatError(concat(metadata_file, ": '", fqn, "' is recorded as ", info->length, " bytes, its tensor in ",
                               path, " has ", t.nbytes()));
    }
    return tensor;
  }
  if (items_at_.at({info->relative_path, info->offset}) > 1) {
    throw FormatError(concat(metadata_file, ": '", fqn, "' shares its bytes at ", info->offset, " of ", path,
                             " with other items, and they are not a safetensors blob"));
  }
  auto stream = MappedFile::slice(file, info->offset, info->length,
                                  concat(path, " ('", fqn, "' at byte ", info->offset, ")"));
  TorchLoadOptions options;
  options.mmap = map_chunks_;
  options.threads = 1;
  options.destination = map_chunks_ ? nullptr : destination;
  return load_torch_stream(stream, options).root;
}

ValuePtr Reader::read_entry(const dcp::Entry& entry, const std::optional<Placement>& placement,
                            const at::Tensor* destination) const {
  if (!entry.tensor) return load_item(entry.key, nullptr);
  const dcp::TensorEntry& t = *entry.tensor;
  auto dtype = torchsave::dtype_of_name(t.dtype);
  if (!dtype) throw FormatError(concat(dir_, ": '", entry.key, "' has the unknown dtype torch.", t.dtype));
  std::vector<int64_t> offsets(t.size.size(), 0), sizes = t.size;
  if (placement) {
    offsets = placement->offsets;
    sizes = placement->sizes;
  }
  // A destination of the region's dtype and shape, in one piece, can receive the chunk's bytes.
  if (destination && !(destination->defined() && destination->is_contiguous() &&
                       destination->scalar_type() == *dtype && dims_of(*destination) == sizes)) {
    destination = nullptr;
  }
  // The common case of a load on the world size of the save: one chunk is exactly the region.
  for (const auto& chunk : t.chunks) {
    if (chunk.offsets == offsets && chunk.sizes == sizes) {
      ValuePtr loaded = load_item(entry.key, &chunk.offsets, destination);
      if (loaded->is(Kind::Tensor) && dims_of(tensor_of(*loaded)) == sizes &&
          tensor_of(*loaded).scalar_type() == *dtype) {
        const at::Tensor& got = tensor_of(*loaded);
        // Read in place: the destination itself, so that restoring it copies nothing.
        if (destination && destination->numel() > 0 && got.data_ptr() == destination->data_ptr() &&
            got.strides() == destination->strides()) {
          return tensor(*destination);
        }
        loaded->tensor_ref().requires_grad = false;
        return loaded;
      }
    }
  }
  const size_t element_size = c10::elementSize(*dtype);
  const auto elements = static_cast<uint64_t>(dcp::checked_volume(sizes, concat(dir_, ": '", entry.key, "'")));
  if (elements > (uint64_t{1} << 62) / element_size) {
    throw FormatError(concat(dir_, ": '", entry.key, "' of size ", dims_text(sizes), " is too large"));
  }
  check_chunks_fit(entry, offsets, sizes, element_size);
  at::Tensor out = at::empty(sizes, at::TensorOptions().dtype(*dtype));
  if (out.numel() == 0) return tensor(std::move(out));  // an empty shard (more ranks than rows)
  int64_t covered = 0;
  for (const auto& chunk : t.chunks) {
    std::vector<int64_t> lo(sizes.size()), len(sizes.size());
    bool overlaps = true;
    for (size_t d = 0; d < sizes.size(); ++d) {
      lo[d] = std::max(chunk.offsets[d], offsets[d]);
      int64_t hi = std::min(chunk.offsets[d] + chunk.sizes[d], offsets[d] + sizes[d]);
      len[d] = hi - lo[d];
      if (len[d] <= 0) overlaps = false;
    }
    if (!overlaps) continue;
    ValuePtr loaded = load_item(entry.key, &chunk.offsets);
    if (!loaded->is(Kind::Tensor) || dims_of(tensor_of(*loaded)) != chunk.sizes) {
      throw FormatError(concat(dir_, ": the chunk of '", entry.key, "' at ", dims_text(chunk.offsets), " is not a tensor of shape ",
                               dims_text(chunk.sizes)));
    }
    std::vector<int64_t> in_chunk(sizes.size()), in_out(sizes.size());
    for (size_t d = 0; d < sizes.size(); ++d) {
      in_chunk[d] = lo[d] - chunk.offsets[d];
      in_out[d] = lo[d] - offsets[d];
    }
    region(out, in_out, len).copy_(region(tensor_of(*loaded), in_chunk, len));
    covered += volume(len);
  }
  if (covered < out.numel()) {
    throw FormatError(concat(dir_, ": the chunks of '", entry.key, "' cover ", covered, " of the ", out.numel(),
                             " elements requested (region ", dims_text(offsets), " + ", dims_text(sizes), " of ",
                             dims_text(t.size), ")"));
  }
  return tensor(std::move(out));
}

ValuePtr Reader::read(const std::string& key, const ShardPlan& plan) const { return read(key, plan, {}); }

ValuePtr Reader::read(const std::string& key, const ShardPlan& plan,
                      const std::unordered_map<std::string, at::Tensor>& destinations) const {
  ValuePtr root = Value::plain_dict();
  auto found = by_top_key_.find(key);
  if (found == by_top_key_.end()) return nullptr;
  for (size_t i : found->second) {
    const dcp::Entry& entry = metadata_.entries[i];
    const std::vector<PathItem>& path = paths_[i];
    std::optional<Placement> placement;
    if (entry.tensor) placement = plan.for_global(path, entry.tensor->size);
    const at::Tensor* destination = nullptr;
    if (entry.tensor && path.size() == 2 && std::holds_alternative<std::string>(path[1])) {
      auto it = destinations.find(std::get<std::string>(path[1]));
      if (it != destinations.end()) destination = &it->second;
    }
    ValuePtr value = read_entry(entry, placement, destination);
    if (path.size() == 1) return value;
    dcp::set_element(root, path, value);
  }
  return root->dict().get(key);
}

std::vector<Reader::Range> Reader::ranges_for(const std::string* key, const ShardPlan* plan) const {
  std::vector<Range> out;
  auto add = [&](const std::string& fqn, const std::vector<int64_t>* offsets) {
    // Missing storage is read_entry's error to report, with its message; nothing to fetch for it.
    if (const dcp::StorageInfo* info = metadata_.storage_of(fqn, offsets)) {
      out.push_back({info->relative_path, info->offset, info->length});
    }
  };
  auto entry_ranges = [&](size_t i) {
    const dcp::Entry& entry = metadata_.entries[i];
    if (!entry.tensor) return add(entry.key, nullptr);
    const dcp::TensorEntry& t = *entry.tensor;
    std::optional<Placement> placement;
    if (plan) placement = plan->for_global(paths_[i], t.size);
    for (const auto& chunk : t.chunks) {
      bool overlaps = true;
      for (size_t d = 0; placement && d < t.size.size() && d < chunk.offsets.size(); ++d) {
        const int64_t lo = std::max(chunk.offsets[d], placement->offsets[d]);
        const int64_t hi = std::min(chunk.offsets[d] + chunk.sizes[d], placement->offsets[d] + placement->sizes[d]);
        overlaps = overlaps && hi > lo;
      }
      if (overlaps) add(entry.key, &chunk.offsets);
    }
  };
  if (!key) {
    for (size_t i = 0; i < metadata_.entries.size(); ++i) entry_ranges(i);
    return out;
  }
  if (auto found = by_top_key_.find(*key); found != by_top_key_.end()) {
    for (size_t i : found->second) entry_ranges(i);
  }
  return out;
}

std::shared_ptr<const MappedFile> Reader::item_stream(const std::string& fqn) const {
  const dcp::StorageInfo* info = metadata_.storage_of(fqn, nullptr);
  if (!info) {
    throw FormatError(concat((fs::path(dir_) / dcp::kMetadataFile).string(), ": no storage recorded for '", fqn, "'"));
  }
  auto& file = files_[info->relative_path];
  const std::string path = (fs::path(dir_) / info->relative_path).string();
  if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
  check_in_file(*info, fqn, *file);
  return MappedFile::slice(file, info->offset, info->length, concat(path, " ('", fqn, "' at byte ", info->offset, ")"));
}

ValuePtr Reader::read_all() const {
  ValuePtr root = Value::plain_dict();
  for (size_t i = 0; i < metadata_.entries.size(); ++i) {
    dcp::set_element(root, paths_[i], read_entry(metadata_.entries[i], std::nullopt));
  }
  return root;
}


}  // namespace fabricckpt::sharded
