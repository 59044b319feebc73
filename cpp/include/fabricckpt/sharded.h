// Sharded (FSDP-style) checkpoints over c10d: torch.distributed.checkpoint directories written by
// every rank together, read by any number of ranks (each takes the region it holds, assembled from
// the chunks that overlap it), and full-state gathering to rank 0.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fabricckpt/dcp.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/value.h"

namespace fabricckpt {
class ProcessGroup;
class MappedFile;
}  // namespace fabricckpt

namespace fabricckpt::sharded {

// Where this rank's tensor lies in the global tensor it is a shard of (a DTensor's / ShardedTensor's
// local shard): its offsets in the global tensor and its own sizes.
struct Placement {
  std::vector<int64_t> global_size, offsets, sizes;
};

// Which tensors of a state are shards: module parameters by name, and the optimizers whose
// per-parameter state tensors (keyed by parameter name, as FSDP writes them) follow their parameter.
class ShardPlan {
 public:
  void add_parameter(const std::string& module_key, const std::string& name, Placement placement);
  void add_optimizer(const std::string& optimizer_key, const std::string& module_key);

  // The placement of the tensor at `path` (top-level key first) of a state being saved, whose local
  // sizes are `sizes`: a module parameter's own; an optimizer state tensor of parameter p its
  // parameter's when the sizes agree. nullopt: a whole tensor, the same on every rank.
  std::optional<Placement> for_local(const std::vector<dcp::PathItem>& path, const std::vector<int64_t>& sizes) const;
  // The same for a tensor of a checkpoint being loaded, by its global size.
  std::optional<Placement> for_global(const std::vector<dcp::PathItem>& path,
                                      const std::vector<int64_t>& global_size) const;
  // The placement of module `module_key`'s parameter `name`, if sharded.
  const Placement* parameter(const std::string& module_key, const std::string& name) const;
  // The module whose parameter names key an optimizer's state; empty if none.
  std::string module_of_optimizer(const std::string& optimizer_key) const;
  bool empty() const { return params_.empty(); }

 private:
  const Placement* parameter_at(const std::vector<dcp::PathItem>& path) const;
  std::map<std::string, std::map<std::string, Placement>> params_;  // module key -> parameter -> placement
  std::map<std::string, std::string> optimizers_;                    // optimizer key -> module key
};

// How a shard file holds its tensors (torch.distributed.checkpoint's SerializationFormat).
enum class Serialization {
  TorchSave,    // each chunk a torch.save stream (the default, what Lightning writes)
  Safetensors,  // the chunks together as one safetensors blob after the values' streams
};

struct SaveOptions {
  bool fsync = true;
  std::string checkpoint_id;  // recorded in the metadata's StorageMeta (the directory, as Python does)
  // Values (and meta.pt) holding globals torch.load(weights_only=True) refuses are refused
  // (UnsafeGlobalsError naming each and where it sits, before anything is touched) unless set.
  bool allow_unsafe_globals = false;
  Serialization serialization = Serialization::TorchSave;
};

// Collective: every rank calls it with its own state. `state` is the dict that goes into the
// distcp files (modules' and optimizers' state dicts under their keys); sharded tensors are
// written by every rank (its chunk), everything else by rank 0 only. `meta` (may be null) is
// written by rank 0 as meta.pt, Lightning's file for the rest of the state.
// The new checkpoint is written into a directory beside `dir` (AtomicDirectory, on a file system
// every rank sees) and swapped in whole by rank 0 once every rank wrote its file and .metadata is
// written: until then `dir` stays the previous checkpoint, whatever fails or is killed. A
// failure anywhere fails every rank. A `dir` holding entries that are not checkpoint files is
// refused before anything is written (they would be replaced with it). `group` null: one process.
void save(const std::string& dir, const ValuePtr& state, const ValuePtr& meta, const ShardPlan& plan,
          ProcessGroup* group, const SaveOptions& options);

// One rank's shard file of save(), planned for a writer that sends it in parts (a multipart upload
// to object storage, which has no directory to swap in): the bytes save() writes to
// __<rank>_0.distcp, produced by byte range from the tensors' memory (a TorchFileLayout per item;
// with Safetensors serialization the tensors' chunks as one SafetensorsLayout blob at the end). report() is what the rank tells rank 0 of it, and
// metadata_from_reports() turns every rank's report into .metadata's bytes. Rank 0 refuses
// unsafe globals in `state` unless allowed; `target` names the file in errors. `state` must stay
// alive and unchanged while the layout is used.
class RankFileLayout {
 public:
  RankFileLayout(const ValuePtr& state, const ShardPlan& plan, int rank, Serialization serialization,
                 bool allow_unsafe_globals, const std::string& target);
  ~RankFileLayout();
  RankFileLayout(const RankFileLayout&) = delete;
  RankFileLayout& operator=(const RankFileLayout&) = delete;

  uint64_t size() const;
  // Copies [offset, offset + size) of the file into `dest`; FormatError past the end. Safe from
  // several threads at once.
  void fill(uint64_t offset, void* dest, size_t size) const;
  const std::string& report() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// .metadata's bytes from every rank's RankFileLayout::report(), in rank order (options: its
// checkpoint_id); StateError when the ranks' shards disagree, FormatError for a damaged report.
std::string metadata_from_reports(const std::vector<std::string>& reports, const SaveOptions& options);

// Whether a directory entry is one a sharded save writes (.metadata, meta.pt, __<r>_<n>.distcp):
// what a save may replace.
bool is_checkpoint_file(const std::string& name);

// Collective: rank 0 writes `state` to `path` as one torch.save file (save_torch_file's bytes) with
// every sharded tensor whole, assembled from every rank's shard (sent over c10d); other ranks only
// send theirs. Streamed: rank 0 plans the file first and writes each whole tensor as its shards
// arrive, holding at most one of them beyond its own shards. Atomic as save_torch_file; a failure
// on any rank fails every rank (DistributedError on those that did not fail themselves).
void save_full(const std::string& path, const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group,
               const TorchSaveOptions& options);

// save_full's file for a writer that sends it in parts (a multipart upload to object storage): the
// constructor (collective) checks the ranks' shards as save_full does and plans, on rank 0, the
// file's layout with the whole tensors deferred; gather() (collective, on its own thread on rank 0)
// sends the shards to rank 0, which hands each whole tensor to the layout as it is assembled, and
// every rank learns its outcome; meanwhile rank 0's fill() (from the upload's threads) gives the
// file by byte range, waiting for the tensors it needs. Rank 0 holds the whole tensors being sent,
// two in the usual case (TorchFileLayout::provide). A failed gather makes fills fail; abandon() (the
// upload failed) makes the layout drop what arrives while gather() goes on receiving.
class FullFileLayout {
 public:
  FullFileLayout(const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group, const TorchSaveOptions& options,
                 const std::string& target);
  ~FullFileLayout();
  FullFileLayout(const FullFileLayout&) = delete;
  FullFileLayout& operator=(const FullFileLayout&) = delete;

  // Rank 0: whether the file was planned (false: planning failed, which gather() reports to every rank).
  bool planned() const;
  uint64_t size() const;
  void fill(uint64_t offset, void* dest, size_t size) const;
  void gather();
  void abandon(const std::string& why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The tensors of a checkpoint value cut to this rank's regions: a tensor at a sharded path whose
// size is the global size becomes a copy of its region; everything else is left as it is.
// For loading a full file into a sharded state.
void slice_to_plan(const ValuePtr& state, const ShardPlan& plan);

// True when `path` is a directory holding a torch.distributed.checkpoint (.metadata).
bool is_sharded_checkpoint(const std::string& path);

// A sharded checkpoint directory opened for reading. No collectives: each rank reads what it needs.
class Reader {
 public:
  // Reads and checks .metadata; errors name the file. Without `map_chunks` tensors are read into
  // memory with every record's CRC-32 checked (another program changing the files meanwhile gives
  // an error, never a fault); with it they view a private mapping of the shard files
  // (torch.load(mmap=True), with its hazard: a file truncated in place faults when read).
  explicit Reader(std::string dir, bool map_chunks = false);
  const dcp::Metadata& metadata() const { return metadata_; }
  const std::string& dir() const { return dir_; }
  // The first steps of the saved paths (the state's top-level keys), in order.
  std::vector<std::string> top_level_keys() const;
  // The nested value saved under top-level `key` (null when absent): tensors hold the region the
  // plan gives for them (whole when none), assembled from the overlapping chunks.
  ValuePtr read(const std::string& key, const ShardPlan& plan) const;
  // The same, reading straight into `destinations` where it can (a module's parameters and buffers
  // by state-dict name, e.g. "layer.weight" under key "model"): a chunk that is exactly the region
  // of a contiguous destination of its dtype and shape is read into the destination's memory (no
  // new memory, no copy; as DCP loads in place) and the destination itself is the value returned.
  // A read that fails midway may leave a destination partly overwritten, as with DCP.
  ValuePtr read(const std::string& key, const ShardPlan& plan,
                const std::unordered_map<std::string, at::Tensor>& destinations) const;
  // Every key, whole tensors, unflattened: what dcp_to_torch_save would write.
  ValuePtr read_all() const;
  // The byte ranges of the shard files that read(key, plan) reads (`plan` null: read_all()), as
  // (relative path, offset, length): for storage that fetches only those (object storage).
  struct Range {
    std::string relative_path;
    uint64_t offset;
    uint64_t length;
  };
  std::vector<Range> ranges_for(const std::string* key, const ShardPlan* plan) const;
  // The bytes of the torch.save stream of a value ("bytes") item, for scanning its pickle.
  std::shared_ptr<const MappedFile> item_stream(const std::string& fqn) const;

 private:
  std::vector<dcp::PathItem> path_of(const std::string& flat_key) const;
  ValuePtr read_entry(const dcp::Entry& entry, const std::optional<Placement>& region,
                      const at::Tensor* destination = nullptr) const;
  ValuePtr load_item(const std::string& fqn, const std::vector<int64_t>* offsets,
                     const at::Tensor* destination = nullptr) const;
  void check_in_file(const dcp::StorageInfo& info, const std::string& fqn, const MappedFile& file) const;
  void check_chunks_fit(const dcp::Entry& entry, const std::vector<int64_t>& offsets,
                        const std::vector<int64_t>& sizes, size_t element_size) const;
  std::string dir_;
  bool map_chunks_;
  dcp::Metadata metadata_;
  std::vector<std::vector<dcp::PathItem>> paths_;                      // of each entry
  std::vector<std::string> top_keys_;                                  // in order of first appearance
  std::unordered_map<std::string, std::vector<size_t>> by_top_key_;    // top-level key -> entries
  mutable std::map<std::string, std::shared_ptr<const MappedFile>> files_;
  // (file, offset) that several items start at: only a safetensors blob (SAFETENSORS serialization,
  // one item per tensor of it) may be shared, and each such item is read as its own tensor of it.
  std::map<std::pair<std::string, uint64_t>, size_t> items_at_;
};

}  // namespace fabricckpt::sharded
