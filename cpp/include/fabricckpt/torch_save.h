// The torch.save file format: the zip container ("new" format, torch >= 1.6)
// for reading and writing, and the legacy pickle-stream format for reading.
// Tensors come out as CPU tensors whatever location tag the file carries.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "fabricckpt/safetensors.h"
#include "fabricckpt/value.h"

namespace at {
class Tensor;
}

namespace c10 {
struct StorageImpl;
}

namespace fabricckpt {

class OutputSink;
struct IoProgress;

struct TorchLoadOptions {
  bool verify_crc = true;  // check each record's CRC-32 before using it
  // Tensors view a private copy-on-write mapping of the file, as torch.load(mmap=True)
  // gives them: loading costs next to nothing, pages are read when first touched,
  // writes to a tensor stay in memory and never reach the file, and the mapping
  // lives as long as any storage viewing it. The storages' CRCs are not checked
  // then (that would read every byte); the other records' still are. Legacy files
  // and records not aligned for their element type are copied as without mmap.
  bool mmap = false;
  // Without mmap: threads reading storages (the caller's included); 0 picks one per core.
  int threads = 0;
  IoProgress* progress = nullptr;  // storage bytes read so far, of all; may be null
  // As torch.load(weights_only=True): a file naming any global outside torch 2.10's allowlist
  // (safety.h) is refused with an UnsafeGlobalsError listing them. Off: such globals are read
  // inertly, as Object/Global values (nothing is ever executed either way).
  bool weights_only = false;
  // Without mmap: a contiguous tensor whose memory receives the storage of exactly its size instead
  // of new memory (a sharded load reading a chunk straight into the shard it restores, as DCP loads
  // in place); what is rebuilt over that storage shares the tensor's memory. Null: new memory.
  const at::Tensor* destination = nullptr;
};

struct TorchCheckpoint {
  ValuePtr root;
  std::string archive_name;  // folder inside the zip ("archive" for Lightning files); empty for legacy files
  bool legacy = false;       // pre-1.6 pickle-stream format
};

// Reads a torch.save file (zip or legacy). FormatError names the file and record.
TorchCheckpoint load_torch_file(const std::string& path, const TorchLoadOptions& options = {});

class MappedFile;

// A torch.save zip file held whole in writable memory (an object downloaded from storage into
// MappedFile::anonymous), errors naming it as `bytes` is named: tensors view the memory without a
// copy (it lives as long as any of them). With options.verify_crc every record's CRC-32 is checked
// first (records in parallel, options.threads).
TorchCheckpoint load_torch_bytes(const std::shared_ptr<const MappedFile>& bytes, const TorchLoadOptions& options);
// The same for bytes held in a string, under the display name `name`.
TorchCheckpoint load_torch_bytes(std::string bytes, const std::string& name, const TorchLoadOptions& options);

// A torch.save zip stream that is part of a bigger file (an item of a torch.distributed.checkpoint
// file, see MappedFile::slice); errors name the slice.
TorchCheckpoint load_torch_stream(const std::shared_ptr<const MappedFile>& stream, const TorchLoadOptions& options);

struct TorchSaveOptions {
  std::string archive_name = "archive";  // what torch.save writes when given a file object, as Lightning does
  bool fsync = true;                     // make the file durable before it replaces the target
  int threads = 0;                       // writer threads (the caller's included); 0 picks one per core
  IoProgress* progress = nullptr;        // bytes of the file written so far, of all; may be null
  // A tree holding globals torch.load(weights_only=True) refuses is refused (UnsafeGlobalsError
  // naming each and where it sits, before anything is written) unless this is set.
  bool allow_unsafe_globals = false;
};

// Writes `root` as torch.save(root, f) does: atomically (temp file + rename),
// byte for byte what torch 2.10 writes for the same object graph.
// The layout is planned first (every record's size is known), then storage bytes
// go from tensor memory straight to their place in the file from several threads,
// each computing the CRC-32 of the piece it writes; headers and descriptors follow.
// No copy of the checkpoint is made: the memory used beyond the state is a few MiB.
void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options = {});

// save_torch_file in steps, for storages whose bytes arrive while the file is written (an FSDP
// full save, where rank 0 receives each whole tensor from the shards of every rank). A storage
// without memory (null data, nonzero size) in `root` is "deferred": the constructor plans the
// whole layout (the bytes come out as save_torch_file's for the same data), write_storage writes
// one deferred storage's bytes to their place, commit writes the tree's own storages and the rest
// and replaces the target. Destroyed without commit, the target is left as it was.
class TorchFileWriter {
 public:
  // Refuses unsafe globals as save_torch_file does; creates the temporary file.
  TorchFileWriter(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options);
  ~TorchFileWriter();
  TorchFileWriter(const TorchFileWriter&) = delete;
  TorchFileWriter& operator=(const TorchFileWriter&) = delete;

  // All `size` bytes of the deferred storage `storage`, once (StateError otherwise).
  void write_storage(const c10::StorageImpl* storage, const void* data, uint64_t size);
  // StateError if a deferred storage has not been written.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The bytes save_torch_file writes for `root`, produced on demand by byte range: for writers that
// send the file in pieces from several threads (a multipart upload to object storage) without
// ever holding it whole. The constructor plans the layout (refusing unsafe globals as
// save_torch_file does, `target` naming the destination) without reading tensor memory; fills copy
// the storages' bytes from the tensors and compute each storage's CRC-32 from the copy, and the
// bytes that carry a CRC (a storage's data descriptor, right after its data; the serialization id
// and directory at the end) get it once known. Fills may come in any order and from several
// threads; taken in file order (as an upload's workers take parts) every byte is read from tensor
// memory once. Bytes another fill is copying are waited for, bytes nobody copies are read for
// their CRC. Only the pickle, the headers and the directory are kept (options.threads is unused).
// The tree must stay alive and unchanged while the layout is used.
//
// Deferred storages (no memory, as TorchFileWriter takes them: an FSDP full save's whole tensors,
// assembled while the file is sent) get their bytes from provide(); a fill that needs them waits
// until then, and once every byte of one has been copied into a fill the layout lets go of it, so
// that only the tensors being sent are held.
class TorchFileLayout {
 public:
  TorchFileLayout(const ValuePtr& root, const TorchSaveOptions& options, const std::string& target);
  ~TorchFileLayout();
  TorchFileLayout(const TorchFileLayout&) = delete;
  TorchFileLayout& operator=(const TorchFileLayout&) = delete;

  // Bytes of the whole file.
  uint64_t size() const;
  // Copies [offset, offset + size) of the file into `dest`; FormatError past the end. Safe from
  // several threads at once. StateError once abandoned, or for the bytes of a deferred storage
  // already let go of.
  void fill(uint64_t offset, void* dest, size_t size) const;

  // The bytes of deferred storage `storage` (all of them at `data`, kept alive by `owner`). Waits
  // first while another provided storage is still being sent, unless a fill waits for one not
  // provided yet (the order of the file then differs from the order of provision): at most two are
  // held in the usual case. StateError for a storage that is not deferred or was provided already.
  void provide(const c10::StorageImpl* storage, std::shared_ptr<const void> owner, const void* data);
  // Gives up: waiting and later fills and provides fail with StateError(`why`), held bytes are let go.
  void abandon(const std::string& why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The same stream written to any sink; refuses unsafe globals as save_torch_file does unless
// `allow_unsafe_globals` (`target` names the destination in the error).
void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name,
                      bool allow_unsafe_globals = false, const std::string& target = "torch.save stream");

// A safetensors file (safetensors.h) as `safetensors.torch.load_file` gives it: a plain dict of
// name -> CPU tensor in data order. options.mmap: tensors view a private copy-on-write mapping (no
// byte is read until touched; entries not aligned for their dtype are copied); otherwise the bytes
// are read into owned memory from options.threads threads. options.progress counts tensor bytes.
// FormatError names the file and the problem (a dtype libtorch has no type for included).
// A Hugging Face sharded checkpoint (`path` is its `*.safetensors.index.json`, or a directory holding
// `model.safetensors.index.json`) gives every shard's tensors in the index's order (safetensors.h:
// merge_shards); a tensor in two shards, or one the index maps to a shard that lacks it, is a FormatError.
ValuePtr load_safetensors_file(const std::string& path, const TorchLoadOptions& options = {});

// A safetensors file already in writable memory (an object downloaded from storage,
// MappedFile::anonymous), as load_safetensors_file gives it: the tensors view `file` (entries not
// aligned for their dtype are copied), which they keep alive. FormatError naming `file`.
ValuePtr load_safetensors_bytes(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options = {});

// torch.distributed.checkpoint's SAFETENSORS serialization writes a shard file's tensors as one
// safetensors file at the end of it (after the torch.save streams of its other items); .metadata
// records that blob's start as each tensor's offset (safetensors::looks_like_safetensors tells one
// apart). Tensor `name` of the blob at `offset` (a view of the mapping with `mmap` when `file` is
// mapped, else read into owned memory).
ValuePtr load_embedded_safetensor(const std::shared_ptr<const MappedFile>& file, uint64_t offset,
                                  const std::string& name, bool mmap);

// Writes `root`, a dict with string keys, as a safetensors file, atomically: nested dicts are
// flattened with '.' as state_dict() keys are ("model.layer.weight"; integer keys as their digits),
// tensors become entries (non-contiguous ones are made contiguous first), strings become
// `__metadata__`; the bytes are those of safetensors.torch.save_file for the same tensors and
// metadata. Anything else (numbers, lists, None, ...) is refused before the file is created, with a
// StateError naming every such key; so are tensors that share memory, as save_file refuses them.
// A `path` ending in `.safetensors.index.json` gets a Hugging Face sharded checkpoint instead, the
// files huggingface_hub's save_torch_state_dict writes: shards of at most `max_shard_size` bytes
// beside the index (`model-00001-of-00002.safetensors`, metadata {"format": "pt"}), the strings in
// the index's metadata, and of tensors sharing memory only the alphabetically first one covering it
// whole (the others named in the metadata, mapped to it). Every shard is written in full before
// any replaces its namesake and the index comes last; the shards and index files a previous save
// left under the same name are removed once the new index is in place.
void save_safetensors_file(const std::string& path, const ValuePtr& root, bool fsync = true,
                           IoProgress* progress = nullptr,
                           uint64_t max_shard_size = safetensors::kDefaultMaxShardSize);

// `tensors`, a flat dict name -> CPU tensor, as the safetensors stream safetensors.torch.save(tensors,
// metadata) returns, written at the sink's position straight from the tensors' memory (DCP's
// SAFETENSORS serialization puts one at the end of each shard file). StateError naming `target` for
// what save refuses (a dtype safetensors lacks, tensors sharing memory).
void write_safetensors_stream(OutputSink& out, const ValuePtr& tensors, const safetensors::Metadata& metadata,
                              const std::string& target);

// The bytes write_safetensors_stream writes for `tensors`, produced on demand by byte range (a shard
// file's blob uploaded in parts, as TorchFileLayout does for torch.save streams): the header is
// planned and kept, the tensors' bytes are copied from their memory on each fill. Refuses what
// write_safetensors_stream refuses. The tensors must stay alive and unchanged while it is used.
class SafetensorsLayout {
 public:
  // A blob of `tensors` with the given `metadata` (DCP's); string values are not written.
  SafetensorsLayout(const ValuePtr& tensors, const safetensors::Metadata& metadata, const std::string& target);
  // The single file save_safetensors_file writes for `root` at a `.safetensors` path: nested dicts
  // flattened, strings as `__metadata__` (none when it holds no string), refusing what it refuses.
  static std::unique_ptr<SafetensorsLayout> of_file(const ValuePtr& root, const std::string& target);
  ~SafetensorsLayout();
  SafetensorsLayout(const SafetensorsLayout&) = delete;
  SafetensorsLayout& operator=(const SafetensorsLayout&) = delete;

  uint64_t size() const;
  // Copies [offset, offset + size) of the stream into `dest`; FormatError past the end. Safe from
  // several threads at once.
  void fill(uint64_t offset, void* dest, size_t size) const;

 private:
  enum class MetadataFrom { Given, Strings };
  SafetensorsLayout(const ValuePtr& root, const std::optional<safetensors::Metadata>& metadata, MetadataFrom from,
                    const std::string& target);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A Hugging Face sharded checkpoint, what save_safetensors_file writes for `root` at the index path
// `index_target`, planned for writers that send each file in parts (object storage): the shard files
// (named as beside the index) by byte range, straight from the tensors' memory, and the index's
// bytes, which go last. Refuses what save_safetensors_file refuses, before any byte is produced.
// The tensors must stay alive and unchanged while it is used.
class SafetensorsIndexLayout {
 public:
  SafetensorsIndexLayout(const ValuePtr& root, const std::string& index_target,
                         uint64_t max_shard_size = safetensors::kDefaultMaxShardSize);
  ~SafetensorsIndexLayout();
  SafetensorsIndexLayout(const SafetensorsIndexLayout&) = delete;
  SafetensorsIndexLayout& operator=(const SafetensorsIndexLayout&) = delete;

  size_t shard_count() const;
  const std::string& shard_name(size_t i) const;
  uint64_t shard_size(size_t i) const;
  // Copies [offset, offset + size) of shard i into `dest`; safe from several threads at once.
  void fill(size_t i, uint64_t offset, void* dest, size_t size) const;
  const std::string& index_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A Hugging Face sharded checkpoint downloaded into memory: `index` (parsed from the index object
// `index_name`) and its shard files, in the order of index.files, as load_safetensors_bytes reads
// each; the tensors in the order load_safetensors_file gives them (safetensors::merge_shards).
ValuePtr load_safetensors_index_bytes(const safetensors::ShardIndex& index, const std::string& index_name,
                                      const std::vector<std::shared_ptr<const MappedFile>>& shards);

// A copy of the tree that owns its tensor data: each distinct storage is copied
// once (views keep sharing, offsets and strides), containers are copied with their
// sharing (a node referenced twice stays one node), immutable leaves are shared.
// Saving the copy gives the same bytes as saving `root` did at the time of the
// copy, whatever happens to the original tensors afterwards (an async save).
// `threads` copy in parallel (0: one per core); `progress` counts bytes copied.
ValuePtr snapshot_tensors(const ValuePtr& root, int threads = 0, IoProgress* progress = nullptr);

}  // namespace fabricckpt
