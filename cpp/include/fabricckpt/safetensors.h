// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the tensors' bytes back to back. Reading
// checks every rule the Rust crate (safetensors 0.8) enforces; writing gives the bytes
// `safetensors.torch.save_file` writes for the same tensors and metadata. No libtorch here: the
// torch layer (torch_save.h: load_safetensors_file, save_safetensors_file) turns entries into tensors.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabricckpt/value.h"

namespace fabricckpt {

class ReadSource;
class OutputSink;
class AtomicFileSink;
struct IoProgress;

namespace safetensors {

// The crate's dtypes in its declaration order, which the writer sorts by (largest first).
enum class Dtype : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

// "F32" for F32.
std::string_view dtype_name(Dtype dtype);
// F32 for "F32"; nullopt for a name the format does not define.
std::optional<Dtype> dtype_of_name(std::string_view name);
// Bits per element (4 for F4, 6 for F6_*): a tensor's bytes are elements x bits / 8, a whole number.
unsigned dtype_bits(Dtype dtype);

// The largest header the crate reads or writes.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

// One tensor of a file; `begin` and `end` count from the start of the data (after the header).
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

struct Header {
  std::vector<TensorInfo> tensors;  // in data order, as safetensors' offset_keys() and load_file give them
  std::optional<Metadata> metadata;  // `__metadata__` in the header's order; nullopt when absent
  uint64_t header_size = 0;          // the JSON's length (padding included), what the first 8 bytes say

  uint64_t data_start() const { return 8 + header_size; }
  const TensorInfo* find(std::string_view name) const;
};

// Reads and checks the header of a safetensors file: its length (at most kMaxHeaderSize, inside the
// file), UTF-8 JSON holding only tensor entries and `__metadata__` (string -> string), no key twice,
// known dtypes, shape x dtype size == byte range, ranges contiguous from 0 with no hole or overlap,
// and the file ending where the last tensor does. FormatError "<file>: safetensors ...: <problem>".
Header read_header(const ReadSource& source);

// The checks of read_header on the JSON text alone, for a file whose data part has `data_size` bytes.
Header parse_header(std::string_view json, uint64_t data_size, const std::string& name);

// The sizes torch gives entry `t` (safetensors.torch): its shape, except that F4 packs two elements a
// byte and torch's float4_e2m1fn_x2 counts bytes (the last dimension halved, which must be even).
// FormatError naming `path` and the tensor otherwise, or for a dimension past int64.
std::vector<int64_t> torch_sizes(const TensorInfo& t, const std::string& path);

// Whether a file starts as a safetensors file does: a plausible length then '{'.
// From `offset` on: a safetensors blob inside a file (torch.distributed.checkpoint's SAFETENSORS
// serialization puts one after a shard file's torch.save streams, which start "PK").
bool looks_like_safetensors(const ReadSource& source, uint64_t offset = 0);

// A Hugging Face sharded checkpoint's index (`model.safetensors.index.json`): which shard file holds
// each tensor. `files` are the distinct shard names in order of first appearance; each is a plain
// file name beside the index (a path with '/' or a name "." / ".." is refused). `metadata` holds the
// string entries of "metadata" (its "total_size" and other non-strings are checked as JSON and
// skipped), as save_torch_state_dict records the caller's metadata; other top-level keys are
// checked as JSON and ignored. FormatError naming `name`.
struct ShardIndex {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file, in the index's order
  std::vector<std::string> files;
  Metadata metadata;
};
ShardIndex parse_index(std::string_view json, const std::string& name);
// The index file at `path` (at most kMaxHeaderSize bytes: an index lists no more than its shards'
// headers), parsed.
ShardIndex read_index(const std::string& path);

// The tensors of the shards (`shards`: a dict name -> tensor per file of index.files, in that order)
// as one dict in the order of the index's weight_map, which is the order of the state that was
// split (so that saving it again splits it the same way), then any tensor a shard holds that the
// index does not list. FormatError naming `index_path` for a tensor in two shards, or one the
// index maps to a shard that does not hold it.
ValuePtr merge_shards(const ShardIndex& index, const std::vector<ValuePtr>& shards, const std::string& index_path);

// --- writing Hugging Face sharded checkpoints (huggingface_hub 2.4's save_torch_state_dict) -------

// huggingface_hub's default max_shard_size, "5GB" (decimal units).
constexpr uint64_t kDefaultMaxShardSize = 5'000'000'000;

// What split_torch_state_dict_into_shards looks at in a tensor: which storage it views (tensors
// viewing one storage share `storage`, compared only for equality) and that storage's size.
struct ShardItem {
  std::string name;
  uintptr_t storage = 0;
  uint64_t storage_bytes = 0;
};

// The tensors of each shard (indices into the items), as split_torch_state_dict_into_shards puts
// them: in order, a new shard when the next storage would take the current one past `max_shard_size`,
// a storage larger than it in a shard of its own, each storage counted once and every tensor of it
// after the first appended to the first's shard. `total_size` sums the storages' sizes.
struct ShardSplit {
  std::vector<std::vector<size_t>> shards;
  uint64_t total_size = 0;
};
ShardSplit split_into_shards(const std::vector<ShardItem>& items, uint64_t max_shard_size);

// The shard files of index `stem`.safetensors.index.json: "<stem>-00001-of-00003.safetensors".
std::string shard_file_name(std::string_view stem, size_t number, size_t count);
// Whether `name` is a file save_torch_state_dict writes (and deletes before writing) for `stem`:
// <stem>.safetensors or <stem>-NNNNN-of-NNNNN.safetensors, either possibly followed by .index.json.
bool is_file_of_pattern(std::string_view name, std::string_view stem);

// The index as save_torch_state_dict writes it (json.dump(indent=2), ASCII, no final newline):
// {"metadata": {"total_size": N, <metadata>...}, "weight_map": {tensor: shard file, ...}}.
std::string index_json(uint64_t total_size, const Metadata& metadata,
                       const std::vector<std::pair<std::string, std::string>>& weight_map);

// A tensor to write: its bytes, contiguous and little-endian, `size` of them: in memory at `data`, or
// (a tensor read piece by piece from a file, without libtorch) produced in order by `next`, which
// gives the next `dest_size` bytes each call (sequential writers only: write_file, write_stream).
struct TensorData {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<uint64_t> shape;
  const void* data = nullptr;
  uint64_t size = 0;
  std::function<void(void* dest, size_t dest_size)> next = nullptr;
};

// Where everything goes: the first 8 + header bytes, then each tensor at its offset.
struct Layout {
  std::string prefix;                 // length + JSON header padded with spaces to a multiple of 8
  std::vector<uint64_t> file_offset;  // per input tensor (in the caller's order), absolute
  uint64_t total = 0;                 // the file's size
};

// save_file's layout: tensors sorted by dtype (the crate's order, largest first) then name (bytes),
// `__metadata__` first when given. StateError naming `target` for a name twice, bytes that do not
// match the shape, text that is not UTF-8, or a header over kMaxHeaderSize.
Layout plan_layout(const std::vector<TensorData>& tensors, const std::optional<Metadata>& metadata,
                   const std::string& target);

// The file, atomically (temporary file, optional fsync, rename): the header first, then each
// tensor's bytes written straight from its memory to its planned place.
void write_file(const std::string& path, const std::vector<TensorData>& tensors,
                const std::optional<Metadata>& metadata, bool fsync, IoProgress* progress = nullptr);

// The file of `layout` (plan_layout of `tensors`) written in full to its temporary and not yet in
// place: the caller commits it, so that several files appear together (a sharded checkpoint's
// shards, then its index). Progress counts the tensors' bytes; its total is the caller's to set.
std::unique_ptr<AtomicFileSink> write_planned(const std::string& path, const std::vector<TensorData>& tensors,
                                              const Layout& layout, bool fsync, IoProgress* progress);

// The same bytes to any sink (tests, in-memory use).
void write_stream(OutputSink& out, const std::vector<TensorData>& tensors, const std::optional<Metadata>& metadata,
                  const std::string& target = "safetensors stream");
// The file of `layout` (plan_layout of `tensors`) to any sink, in order.
void write_planned_stream(OutputSink& out, const std::vector<TensorData>& tensors, const Layout& layout);

// --- a tree planned as safetensors (the library's tensors and the command line's outlines alike) ----

// What the sharing rules of safetensors.torch and huggingface_hub look at in a tensor to write: the
// storage it views (compared only for equality; 0 for an empty one, as torch gives every empty
// storage), that storage's size, the bytes [begin, end) of it its elements reach; and the storage its
// written bytes come from (the same one when it is contiguous, else a copy of its own), which
// split_torch_state_dict_into_shards counts.
struct TensorMemory {
  uintptr_t storage = 0;
  uint64_t storage_bytes = 0;
  uint64_t begin = 0, end = 0;
  uintptr_t written_storage = 0;
  uint64_t written_storage_bytes = 0;
};

// A tree flattened into what save_file takes: the tensors (with their memory, index for index) and
// the strings, which become metadata.
struct FlatState {
  std::vector<TensorData> tensors;
  std::vector<TensorMemory> memory;
  Metadata metadata;
};

// What a flattening makes of a leaf that is neither a dict nor a string, under `key`: appends the
// tensor to `out` and returns "", or returns what the key holds instead ("key (int)", "key (a
// ComplexDouble Strided tensor on cpu)"), which is refused.
using LeafTensor = std::function<std::string(const Value& leaf, const std::string& key, FlatState& out)>;

// Nested dicts flattened with '.' as state_dict() keys are ("model.layer.weight"; integer keys as
// their digits), strings as metadata, tensors through `leaf`. StateError naming `path` for a root
// that is not a dict, a key twice once flattened, and (all at once) every key that holds neither a
// tensor nor a string.
FlatState flatten(const ValuePtr& root, const std::string& path, const LeafTensor& leaf);

// StateError naming `path` and the tensors when some share memory, as safetensors.torch.save_file
// refuses them (overlapping bytes of one storage).
void refuse_shared_memory(const FlatState& flat, const std::string& path);

// A Hugging Face sharded checkpoint planned as huggingface_hub's save_torch_state_dict writes it for
// `flat` at `index_path` (`stem`: the path before `.safetensors.index.json`): the shards beside it,
// then the index's bytes. Of tensors sharing memory only the alphabetically first one covering it
// whole is kept, the others named in the metadata; StateError naming `index_path` for a view of part
// of a larger storage, a metadata string named total_size, a zero max_shard_size.
struct IndexShard {
  std::string file, path;  // its name beside the index, and its path
  std::vector<TensorData> tensors;
  Layout layout;
};
struct IndexPlan {
  std::vector<IndexShard> shards;
  std::string index;
  uint64_t bytes = 0;  // of every shard
};
IndexPlan plan_index(const FlatState& flat, const std::string& index_path, const std::string& stem,
                     uint64_t max_shard_size);

// `flat` written as save_file writes it (its strings as `__metadata__`, none when it has none), or at
// a `*.safetensors.index.json` path as save_torch_state_dict writes it: every shard in full before
// any replaces its namesake, the index last, then the shards and index files a previous save left
// under the same stem removed. Everything is checked before any file exists.
void write_flat(const std::string& path, const FlatState& flat, bool fsync, IoProgress* progress,
                uint64_t max_shard_size = kDefaultMaxShardSize);
// The single file of `flat` into `out`, in order (an upload, say); `target` names it in errors.
void write_flat_stream(OutputSink& out, const FlatState& flat, const std::string& target);

// Copies [offset, offset + size) of a planned file (`layout` of `tensors`, all of them in memory)
// into `dest`, for writers that send a file in parts from several threads; `by_offset` lists the
// tensors' indices in file order (file_order).
void fill_planned(const std::string& target, const Layout& layout, const std::vector<TensorData>& tensors,
                  const std::vector<size_t>& by_offset, uint64_t offset, void* dest, size_t size);
std::vector<size_t> file_order(const Layout& layout);

// The file dtype of a torch dtype as c10 names it ("Float" -> F32); nullopt for one safetensors lacks.
std::optional<Dtype> dtype_of_torch(std::string_view c10_name);

}  // namespace safetensors

// The Hugging Face index `path` names (itself when it ends in `.safetensors.index.json`, or
// model.safetensors.index.json in a directory); "" if none.
std::string safetensors_index_of(const std::string& path);

// Whether `path` names a Hugging Face index file (ends in `.safetensors.index.json`); `stem` gets
// what precedes that ("dir/model" for "dir/model.safetensors.index.json").
bool is_safetensors_index_name(const std::string& path, std::string* stem = nullptr);

}  // namespace fabricckpt
