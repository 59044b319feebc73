// The torch.distributed.checkpoint ("DCP") directory format, the part that needs no tensors:
// the `.metadata` file (a pickled torch.distributed.checkpoint.metadata.Metadata) and the
// flattening of nested state dicts into its dotted keys.
//
// A sharded checkpoint directory, as torch.distributed.checkpoint's FileSystemWriter and Lightning's
// FSDP / ModelParallel strategies write it:
//   .metadata          what every key is (tensor: dtype, global size, chunks; or bytes) and where each
//                      chunk or value lies (file, offset, length). Written last, as .metadata.tmp + rename.
//   __{rank}_0.distcp  per rank: its items back to back, each one a complete torch.save stream
//                      (a tensor chunk, or any Python value for "bytes" items)
//   meta.pt            Lightning's: a torch.save file of the state that is not a module or optimizer
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "fabricckpt/value.h"

namespace fabricckpt::dcp {

inline constexpr const char* kMetadataFile = ".metadata";
inline constexpr const char* kLightningMetaFile = "meta.pt";
inline constexpr const char* kVersion = "1.0.0";  // torch.distributed.checkpoint's CURRENT_DCP_VERSION

// The data file of a rank: "__{rank}_0.distcp".
std::string rank_file_name(int rank);

// One chunk of a tensor: where it starts in the global tensor and its sizes.
struct Chunk {
  std::vector<int64_t> offsets, sizes;
};

// TensorStorageMetadata: a (possibly sharded) tensor of the checkpoint.
struct TensorEntry {
  std::string dtype;  // the torch.<name> global: "float32"
  bool requires_grad = false;
  std::vector<int64_t> size;  // global size
  std::vector<Chunk> chunks;
};

// One key of the checkpoint: a tensor, or (nullopt) BytesStorageMetadata, any value saved with torch.save.
struct Entry {
  std::string key;
  std::optional<TensorEntry> tensor;
};

// A step of a path into a nested state dict: a dict key or a list index.
using PathItem = std::variant<std::string, int64_t>;

// MetadataIndex: a tensor chunk (fqn + its offsets; `index` is the chunk's position, a hint) or a bytes item.
struct StorageKey {
  std::string fqn;
  std::optional<std::vector<int64_t>> offset;
  std::optional<int64_t> index;
};

// _StorageInfo: where the item's torch.save stream lies.
struct StorageInfo {
  std::string relative_path;  // a file name inside the checkpoint directory
  uint64_t offset = 0;
  uint64_t length = 0;
  std::vector<std::string> transforms;  // stream transforms (compression extensions); none are supported here
};

struct Metadata {
  std::vector<Entry> entries;  // state_dict_metadata, in order
  // planner_data of the default planner: flattened key -> the path in the original nested state dict.
  std::vector<std::pair<std::string, std::vector<PathItem>>> planner_data;
  bool has_planner_data = false;
  std::vector<std::pair<StorageKey, StorageInfo>> storage;  // storage_data
  std::string checkpoint_id;  // StorageMeta.checkpoint_id (a PosixPath, a str for a URL); empty: none
  std::string save_id;        // StorageMeta.save_id (a uuid4 string)
  std::string version = kVersion;

  // Lookups by key (the first match). Through hash indexes once index() built them for the
  // current vectors (metadata_from_value does), else by a scan.
  const Entry* find(const std::string& key) const;
  const std::vector<PathItem>* path_of(const std::string& key) const;
  // The storage of a bytes item (no offset) or of the chunk of `fqn` starting at `offsets`.
  const StorageInfo* storage_of(const std::string& fqn, const std::vector<int64_t>* offsets) const;
  // Builds the hash indexes of entries, planner_data and storage; call again after changing them
  // (a stale index is noticed by the vectors' sizes and not used).
  void index();

 private:
  bool indexed() const;
  std::unordered_map<std::string, size_t> entry_index_, path_index_, storage_index_;
  size_t indexed_sizes_[3] = {~size_t{0}, ~size_t{0}, ~size_t{0}};
};

// What a .metadata may make the reader materialize, so that a small file cannot ask for huge
// work through shared (memo-referenced) lists or huge list indices.
struct MetadataLimits {
  // Elements built in all (entries, chunk dimensions, path steps, storage items, transforms).
  size_t max_elements = ~size_t{0};
  // List slots the planner data's paths make set_element create, all lists together (the padding
  // with None up to an index included).
  size_t max_list_slots = ~size_t{0};
  // Pairwise chunk comparisons when checking that chunks do not overlap.
  size_t max_overlap_checks = size_t{1} << 26;
  // The limits for a file of `bytes` bytes: everything within a small factor of its size.
  static MetadataLimits for_file_size(size_t bytes);
};

// The object graph Python's pickle.dump(metadata) describes, and back. from_value checks every
// field's type and value (sizes non-negative, chunks inside the tensor and never overlapping;
// storage paths inside the directory, storage ranges of one file disjoint;
// list indices and totals within `limits`) and throws FormatError saying which.
ValuePtr metadata_to_value(const Metadata& metadata);
Metadata metadata_from_value(const Value& root, const MetadataLimits& limits = {});

// Elements of a tensor of `sizes`; FormatError (naming `what`) when it overflows int64.
int64_t checked_volume(const std::vector<int64_t>& sizes, const std::string& what);

// The chunks must not overlap (FormatError naming `key` and the two chunks) and, with
// `require_full`, must cover every element of a tensor of `size` (a gap: FormatError). Reading a
// .metadata checks overlaps only: a checkpoint with a gap (a rank's file never written) can still
// serve the regions it covers, and reading an uncovered region is refused then (sharded.h).
void check_chunk_tiling(const std::string& key, const std::vector<int64_t>& size, const std::vector<Chunk>& chunks,
                        size_t max_overlap_checks = size_t{1} << 26, bool require_full = true);

// The bytes of a .metadata file (pickle protocol 2) and back; errors name `file`.
std::string write_metadata(const Metadata& metadata);
Metadata read_metadata(std::string_view bytes, const std::string& file);

// The metadata of the safetensors blob that FileSystemWriter(serialization_format=SAFETENSORS)
// writes at the end of a shard file (torch 2.10, _write_files_from_queue): DCP_SHARDING_INFO, the
// json.dumps of {fqn: {"saved_offsets": [...]}} for `chunks` (fqn, the chunk's offsets in its
// tensor) in their order, DCP_VERSION "1.0" and format "pt", in that (Python's dict) order. The
// crate writes them in its HashMap's order, random per process: what Python writes differs from
// run to run there, and from ours.
std::vector<std::pair<std::string, std::string>> safetensors_blob_metadata(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& chunks);

// True when `name` is a plain file name: not empty, no directory separators, not "." or "..",
// no NUL. Metadata whose storage paths fail this is refused (they could point outside the
// checkpoint directory).
bool is_plain_file_name(const std::string& name);

// Python's torch.distributed.checkpoint flatten_state_dict: dicts are walked (keys as str); a list
// is walked (by index) when it holds a tensor, or a dict or list that is walked; anything else is
// a leaf. Keys are the path joined with '.'. Duplicate keys are a StateError.
struct FlatItem {
  std::string key;
  std::vector<PathItem> path;
  ValuePtr value;
};
std::vector<FlatItem> flatten_state_dict(const ValuePtr& state);

// Python's set_element: puts `value` at `path` under `root` (a dict), creating dicts for string
// steps and lists (padded with None) for index steps.
void set_element(const ValuePtr& root, const std::vector<PathItem>& path, ValuePtr value);

std::string path_text(const std::vector<PathItem>& path);  // "('optimizer', 'param_groups', 0, 'lr')"

}  // namespace fabricckpt::dcp
