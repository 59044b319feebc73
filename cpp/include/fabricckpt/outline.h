// A torch.save zip file read without libtorch: its tree with every tensor kept as the pickle's own
// recipe (torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)), every storage as a
// reference to its record in the file. Nothing of a tensor's data is read until asked for, so the
// command-line tools (inspect, verify, diff, convert) work in bounded memory and never load libtorch.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/value.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {

// A dtype as the file names it, without c10: the name c10::ScalarType prints ("Float") and its size.
struct DtypeInfo {
  std::string name;
  size_t element_size;
};
// torch.FloatStorage -> Float; nullopt for classes torch.save does not write (UntypedStorage: Byte).
std::optional<DtypeInfo> dtype_of_storage_class_name(const std::string& class_name);
// torch.float32 (a _rebuild_tensor_v3 dtype global) -> Float.
std::optional<DtypeInfo> dtype_of_torch_name(const std::string& name);
// And back: Float -> "FloatStorage" (nullopt: torch writes such tensors with an UntypedStorage),
// Float -> "float32" (the first name torch gives the dtype).
std::optional<std::string> storage_class_of_dtype(const std::string& dtype_name);
std::string torch_name_of_dtype(const std::string& dtype_name);

// The payload of a Storage node of an outline: where its bytes are.
struct StorageOutline {
  // `stored` bytes from `offset` of `source` hold it (a zip record may hold more than the storage);
  // null source: a storage made when writing (a tensor assembled from chunks), see `assemble`.
  const ReadSource* source = nullptr;
  uint64_t offset = 0;
  uint64_t stored = 0;
  // The zip record those bytes are, whose CRC-32 checks them; null where the format carries no
  // checksum (a legacy file, safetensors).
  const ZipRecord* record = nullptr;
  const ZipReader* zip = nullptr;
  std::string key;
  std::string location;  // "cpu", "cuda:0", ...
  DtypeInfo dtype;       // of the storage class
  uint64_t numel = 0;    // elements the pickle says it holds (numel * element_size <= stored)
  // Fills the bytes of a storage without a source.
  std::function<void(uint8_t* out)> assemble;
  uint64_t nbytes() const { return numel * dtype.element_size; }
  // FormatError naming the record when `crc` (of all `stored` bytes) is not the one the file
  // records; nothing where it records none.
  void check_crc(uint32_t crc) const;
  // All `stored` bytes (their CRC-32 checked), or the assembled ones: one storage-sized buffer.
  std::vector<uint8_t> read_all() const;
};

// A tensor of an outline: the view its rebuild call describes, bounds checked against its storage.
struct TensorOutline {
  const StorageOutline* storage = nullptr;
  DtypeInfo dtype;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> sizes, strides;
  bool requires_grad = false;
  bool is_parameter = false;
  uint64_t numel() const;
  uint64_t nbytes() const { return numel() * dtype.element_size; }
  // Row-major with no gaps: its bytes are one range of the storage.
  bool contiguous() const;
};

// One opened file and its outline tree; the tree's Storage nodes point into it.
class OutlineFile {
 public:
  // FormatError naming the file for anything that is not a well-formed torch.save zip file (a
  // legacy file included: see is_zip), IoError when it cannot be read. The pickle's CRC-32 is checked.
  static std::shared_ptr<const OutlineFile> open(const std::string& path);
  // The same over an opened file or a slice of one (a torch.save stream inside a .distcp file).
  static std::shared_ptr<const OutlineFile> open(std::shared_ptr<const MappedFile> file);

  const ValuePtr& root() const { return root_; }
  const ZipReader& zip() const { return *zip_; }
  const MappedFile& file() const { return *file_; }
  const std::string& path() const { return file_->path(); }
  const std::string& archive_name() const { return zip_->archive_name(); }
  // Storages in order of first appearance in the pickle.
  const std::vector<std::shared_ptr<StorageOutline>>& storages() const { return storages_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::unique_ptr<ZipReader> zip_;
  ValuePtr root_;
  std::vector<std::shared_ptr<StorageOutline>> storages_;
};

// Any checkpoint file this library reads, outlined: a torch.save zip file (OutlineFile), a legacy
// (pre-1.6) torch.save file, a safetensors file or a Hugging Face sharded one (its
// `*.safetensors.index.json`, or a directory holding `model.safetensors.index.json`). Tensors are
// rebuild recipes over storages that point into the files, as for zip files: a legacy file's tree is
// its pickle's; a safetensors file's is what torch.save would pickle for the dict of tensors
// `safetensors.torch.load_file` gives (storages renumbered, plain dict in data order).
enum class OutlineFormat { Zip, Legacy, Safetensors };
struct FileOutline {
  ValuePtr root;
  std::shared_ptr<const void> owner;  // keeps alive what its nodes point into
  OutlineFormat format = OutlineFormat::Zip;
  std::string archive_name;  // the zip's archive folder; "" for the others
  std::shared_ptr<const OutlineFile> zip;  // the zip file's outline (Zip only)
  // Storages in order of first appearance (for a safetensors file: data order).
  std::vector<const StorageOutline*> storages;
};
// FormatError naming the file for what is not well-formed (every bound checked; a legacy file's
// storage bytes must all lie inside it), IoError when it cannot be read.
FileOutline read_file_outline(const std::string& path);
// A checkpoint file fetched piece by piece (an object in storage staged in a sparse file of its
// size at `path`, of which only the `fetched` ranges hold its bytes): the ranges that
// read_file_outline and unsafe_globals_of_file read and that are not fetched yet, merged and sorted:
// of a torch.save zip file its end record and directory, every local header, data.pkl and the other
// small records (never a storage); of a safetensors file its header; of a legacy file all of it (the
// sizes of its storages lie between them). Its first bytes tell which; until they are fetched they
// are what is missing. Empty: they read nothing else. Call again after fetching them (the directory
// tells where the rest lies). FormatError for a damaged zip, as read_file_outline.
std::vector<ByteRange> outline_ranges_missing(const std::string& path, const std::vector<ByteRange>& fetched);
// The same for a sharded directory staged so (`.metadata` and meta.pt whole, each data file sparse,
// `fetched` keyed by file name): what read_sharded_outline and unsafe_globals_of_sharded read of the
// data files and is not fetched yet (per file name): each value item's torch.save stream's
// directory, headers and small records, the same of each tensor chunk that is a whole tensor, and
// the start and header of a safetensors blob. FormatError for a damaged .metadata or stream.
// `every_item`: those of every tensor chunk too (what verify and convert read, data aside).
std::map<std::string, std::vector<ByteRange>> sharded_outline_ranges_missing(
    const std::string& dir, const std::map<std::string, std::vector<ByteRange>>& fetched, bool every_item = false);

// The two formats read_file_outline adds (outline_legacy.cpp, outline_safetensors.cpp).
FileOutline read_legacy_outline(std::shared_ptr<const MappedFile> file);
FileOutline read_safetensors_outline(const std::string& path);
// One safetensors file already opened (a blob inside a torch.distributed.checkpoint shard file).
FileOutline read_safetensors_outline(std::shared_ptr<const MappedFile> file);
// verify_outline's part for what read_safetensors_outline gave for `path`.
std::string verify_safetensors_outline(const std::string& path, const FileOutline& outline);

// The recipe the libtorch writer pickles for a tensor (torch_rebuild.cpp's StorageCollector::tensor_args):
// _rebuild_tensor_v2 over a typed storage, _rebuild_tensor_v3 with the dtype over an UntypedStorage.
ValuePtr tensor_recipe(const ValuePtr& storage, const std::string& dtype_name, int64_t offset,
                       const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides, bool requires_grad,
                       bool typed);

// The tensor a node of an outline stands for (a tensor or parameter rebuild), else nullopt.
// FormatError when it is a rebuild call whose arguments are malformed.
std::optional<TensorOutline> tensor_of(const Value& node);

// verify without libtorch: every record's CRC-32 (read in pieces), the pickle, every storage and
// tensor view. The same one-line summary as the libtorch verify of a zip file. A legacy file: its
// pickles, storages and views, every byte read ("legacy format" in place of the record count).
// A safetensors file or sharded checkpoint (read_safetensors_outline checked its headers, dtypes and
// index): every tensor byte read (the format carries no checksum), "ok: safetensors, N tensors, ...".
std::string verify_outline(const std::string& path);

// The globals of the file's data.pkl outside torch's weights_only allowlist (unsafe_globals_of_file for zip files).
std::vector<std::string> unsafe_globals_of_zip_file(const std::string& path);
// Those of a legacy file's pickles (all five), in order of first appearance.
std::vector<std::string> unsafe_globals_of_legacy_file(const MappedFile& file);
// (unsafe_globals_of_file in safety.h covers every file read_file_outline reads.)
// What verify appends about such globals ("" when none).
std::string unsafe_globals_warning(const std::vector<std::string>& names);

// The largest |a - b| over the elements of two tensors of one dtype and shape (NaN if any
// difference is NaN), read piece by piece from their files (a tensor assembled from a sharded
// checkpoint's chunks: assembled once, its size in memory); 0 when their bytes are equal.
// Error for dtypes it cannot decode (float8 variants other than e4m3fn/e5m2, float4, bits).
double max_abs_difference(const TensorOutline& a, const TensorOutline& b);

// The file (any that read_file_outline reads) written again as one torch.save file (what the libtorch
// convert writes for it: same archive folder, "archive" for a legacy or safetensors source, storages
// renumbered in order of appearance), storage by storage straight from the source with each record's
// CRC-32 checked on the way; atomic. Globals outside torch's weights_only allowlist are
// refused unless allowed. `progress` (may be null) counts storage bytes copied.
void convert_outline(const std::string& source, const std::string& target, bool allow_unsafe_globals,
                     IoProgress* progress = nullptr);
// The same bytes into `out` (an upload, say), in order; `target` names them in errors. What `out`
// received is whole only when this returns (committing it is the caller's).
void convert_outline(const std::string& source, OutputSink& out, const std::string& target,
                     bool allow_unsafe_globals, IoProgress* progress = nullptr);

// Writes an outline tree (storages with a record or an assemble function) as torch.save does,
// storages renumbered in order of first appearance, into `out` (convert_outline's writer); refused
// globals before the first byte, naming `target`.
void write_outline_tree(const ValuePtr& root, OutputSink& out, const std::string& target,
                        const std::string& archive_name, bool allow_unsafe_globals, IoProgress* progress = nullptr);
// write_outline_tree into the file `target`, atomically; refused globals before the file exists.
void write_outline_file(const ValuePtr& root, const std::string& target, const std::string& archive_name,
                        bool allow_unsafe_globals, IoProgress* progress = nullptr);

// A sharded torch.distributed.checkpoint directory consolidated into one torch.save file with the
// archive folder `archive_name`, as the libtorch convert writes it (Lightning's consolidation: every
// tensor whole, then meta.pt's entries), tensor by tensor: each tensor assembled from its chunks in
// a buffer of its own size (a tensor held by one chunk is streamed as it is), every CRC-32 checked.
void convert_sharded_outline(const std::string& dir, const std::string& target, const std::string& archive_name,
                             bool allow_unsafe_globals);
// The same bytes into `out`, as convert_outline's stream form.
void convert_sharded_outline(const std::string& dir, OutputSink& out, const std::string& target,
                             const std::string& archive_name, bool allow_unsafe_globals);

// A checkpoint (any file read_file_outline reads, or with `sharded` a torch.distributed.checkpoint
// directory, consolidated as convert_sharded_outline does) written as safetensors: the bytes the
// library's convert writes for it (save_safetensors_file of the loaded tree): tensors flattened to
// dotted names, strings (and a safetensors source's `__metadata__`, or its index's) as metadata, the
// rest refused naming its keys; at a `*.safetensors.index.json` target a Hugging Face sharded
// checkpoint. Tensors are streamed from their records, each record's CRC-32 checked on the way; a
// view that is not contiguous, or a tensor assembled from chunks, is gathered in memory of its size.
// Atomic, as safetensors::write_flat.
void convert_outline_to_safetensors(const std::string& source, bool sharded, const std::string& target,
                                    uint64_t max_shard_size = safetensors::kDefaultMaxShardSize,
                                    IoProgress* progress = nullptr);
// The single file's bytes into `out`, in order (an upload); `target` names them in errors.
void convert_outline_to_safetensors(const std::string& source, bool sharded, OutputSink& out,
                                    const std::string& target);

// What convert_outline_to_safetensors writes at the index path `index_target`, planned for writers
// that send each file in order (object storage): the shard files (named as beside the index) and
// their sizes, each shard's bytes written once, in order, and the index's bytes, which go last.
// Everything is checked before any byte is produced.
class SafetensorsIndexOutline {
 public:
  SafetensorsIndexOutline(const std::string& source, bool sharded, const std::string& index_target,
                          uint64_t max_shard_size = safetensors::kDefaultMaxShardSize);
  ~SafetensorsIndexOutline();
  SafetensorsIndexOutline(const SafetensorsIndexOutline&) = delete;
  SafetensorsIndexOutline& operator=(const SafetensorsIndexOutline&) = delete;

  size_t shard_count() const;
  const std::string& shard_name(size_t i) const;
  uint64_t shard_size(size_t i) const;
  // Shard i into `out`, in order; its tensors' bytes are produced as they are written, so once only.
  void write_shard(size_t i, OutputSink& out) const;
  const std::string& index_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The consolidated tree convert_sharded_outline writes (tensors assembled from several chunks have
// storages without a record); `owner` keeps alive what its nodes point into.
struct ShardedOutline {
  ValuePtr root;
  std::shared_ptr<const void> owner;
};
ShardedOutline read_sharded_outline(const std::string& dir);

// verify of a sharded directory without libtorch: every item's records' CRC-32s (in pieces), every chunk
// a tensor of its shape, every tensor covered; a one-line summary, or an error naming the file and what is wrong.
std::string verify_sharded_outline(const std::string& dir);
// The globals torch's weights_only loader refuses in a sharded directory's torch.save streams:
// Lightning's meta.pt and every value ("bytes") item, "module.name", each once, in order of first
// appearance (tensor chunks hold none worth naming; .metadata's own classes are DCP's).
std::vector<std::string> unsafe_globals_of_sharded(const std::string& dir);

}  // namespace fabricckpt
