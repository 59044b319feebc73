// The surface the JVM sees, wrapped by JavaCPP (java/.../internal/NativeValue.java).
//
// This header is deliberately free of libtorch and of the Value model's
// internals: JavaCPP compiles its generated glue against it alone. Tensors
// cross as `void*` that point at an `at::Tensor` (the preset's Tensor object
// has that address), so the JVM and this library share one libtorch.
//
// Strings cross as UTF-8 bytes (Java byte[] / BytePointer) so that nothing
// depends on the JVM's default charset.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "staging_native.h"

namespace fabricckpt {
struct Value;
class MappedFile;
class TorchFileLayout;
class SafetensorsLayout;
class SafetensorsIndexLayout;
namespace safetensors {
struct ShardIndex;
}
}

namespace fabricckpt::jni {

// What JavaCPP puts in the RuntimeException it throws for a C++ exception
// (FabricNative's GENERIC_EXCEPTION_TOSTRING): the message, preceded for the
// library's own errors by their kind and details, so that Java can throw a
// typed exception (io.fabricckpt.internal.NativeErrors reads it):
//   "\x1e" kind ("format", "io", "state", "mismatch", "distributed", "unsafe")
//   {"\x1f" field} "\x1e" message        (lists inside a field joined by "\x1d")
// Other exceptions (c10::Error, std::bad_alloc) give their what() alone.
const char* describe_error(const std::exception& e) noexcept;

// A handle on one node of a checkpoint tree; copies share the node.
class NativeValue {
 public:
  NativeValue();  // None
  explicit NativeValue(std::shared_ptr<Value> value);

  // --- reading -----------------------------------------------------------------
  int kind() const;                 // fabricckpt::Kind as int
  long long identity() const;       // stable per node: equal for memo-shared references
  bool boolValue() const;
  long long longValue() const;
  double doubleValue() const;
  std::string bytesValue() const;   // String (UTF-8), Bytes (raw), BigInt (little-endian two's complement)
  int size() const;                 // items of Tuple/List/Set/FrozenSet, entries of Dict
  NativeValue item(int index) const;
  NativeValue key(int index) const;
  NativeValue value(int index) const;
  bool ordered() const;             // Dict is a collections.OrderedDict
  NativeValue dictState() const;    // OrderedDict BUILD state (None when absent)
  std::string globalModule() const;
  std::string globalName() const;
  int construct() const;            // Object::Construct as int
  NativeValue callable() const;
  NativeValue args() const;
  NativeValue kwargs() const;       // None when absent
  NativeValue objectState() const;  // None when absent
  bool hasObjectState() const;
  int listItemCount() const;
  NativeValue listItem(int index) const;
  int dictItemCount() const;
  NativeValue dictItemKey(int index) const;
  NativeValue dictItemValue(int index) const;
  void* tensor() const;             // at::Tensor*, valid while this node lives
  bool requiresGrad() const;
  bool isParameter() const;
  std::string location() const;

  // --- building ------------------------------------------------------------------
  static NativeValue newNone();
  static NativeValue newBool(bool v);
  static NativeValue newLong(long long v);
  static NativeValue newBigInt(const signed char* twos_complement_le, long long length);
  static NativeValue newDouble(double v);
  static NativeValue newString(const signed char* utf8, long long length);
  // The one node per text that CPython's interned identifier literals correspond to (see state.h).
  static NativeValue newInternedString(const signed char* utf8, long long length);
  static NativeValue newBytes(const signed char* data, long long length);
  static NativeValue newTuple();
  static NativeValue newList();
  static NativeValue newSet(bool frozen);
  static NativeValue newDict(bool ordered);
  static NativeValue newGlobal(const signed char* module, long long module_length, const signed char* name,
                               long long name_length);
  static NativeValue newObject(int construct, const NativeValue& callable, const NativeValue& args);
  static NativeValue newTensor(void* tensor, bool requires_grad, bool is_parameter, const signed char* location,
                               long long location_length);
  void append(const NativeValue& item);                       // Tuple/List/Set/FrozenSet
  void put(const NativeValue& key, const NativeValue& value);  // Dict
  void setDictState(const NativeValue& state);
  void setKwargs(const NativeValue& kwargs);
  void setObjectState(const NativeValue& state);
  void addListItem(const NativeValue& item);
  void addDictItem(const NativeValue& key, const NativeValue& value);
  // Dict lookups by string key (UTF-8), as Fabric.load needs them.
  bool contains(const signed char* key, long long length) const;
  NativeValue get(const signed char* key, long long length) const;  // StateError-like Error if absent
  bool erase(const signed char* key, long long length);

  const std::shared_ptr<Value>& get() const { return value_; }

 private:
  std::shared_ptr<Value> value_;
};

// torch.save file (zip or legacy) -> tree. Throws with the file and what is wrong.
NativeValue loadTorchFile(const std::string& path, bool verify_crc);
// The archive folder name of a zip checkpoint ("" for legacy files).
std::string torchFileArchiveName(const std::string& path);
// --- the state layer: modules and optimizers <-> Python-shaped state dicts -----------------
// `module` is a torch::nn::Module*, `optimizer` a torch::optim::Optimizer* (the preset objects' addresses).
NativeValue moduleStateDict(void* module);
// Returns what a non-strict load left out: "missing\t<key>...\nunexpected\t<key>...".
std::string loadModuleStateDict(void* module, const NativeValue& state_dict, bool strict);
NativeValue optimizerStateDict(void* optimizer);
void loadOptimizerStateDict(void* optimizer, const NativeValue& state_dict);
// `scheduler` is a torch::optim::LRScheduler* (the preset's StepLR): Python's StepLR state dict.
NativeValue lrSchedulerStateDict(void* scheduler);
void loadLrSchedulerStateDict(void* scheduler, const NativeValue& state_dict);
// Whether the scheduler sets this optimizer's lrs.
bool lrSchedulerDrives(void* scheduler, void* optimizer);
// optimizer.state_dict() with the 'initial_lr' the scheduler (which must drive it) adds to each group.
NativeValue scheduledOptimizerStateDict(void* optimizer, void* scheduler);
// `scheduler` is a torch::optim::ReduceLROnPlateauScheduler*; `optimizer` the one it drives.
NativeValue plateauSchedulerStateDict(void* scheduler, void* optimizer);
void loadPlateauSchedulerStateDict(void* scheduler, const NativeValue& state_dict);

// Checks a checkpoint end to end: every zip record's CRC-32, the pickle, every storage and tensor
// view. Returns a one-line summary (storage bytes counted once per storage, and the globals torch's
// weights_only load refuses, if any); throws with the file and what is wrong.
std::string verifyTorchFile(const std::string& path);
// remove_stale_temporaries (files.h): the paths removed or restored, one a line.
std::string removeStaleTemporaries(const std::string& target);

// tree -> torch.save file, atomically.
void saveTorchFile(const std::string& path, const NativeValue& root, const std::string& archive_name, bool fsync);

}  // namespace fabricckpt::jni

// --- throughput: mapped and parallel loads, parallel saves, snapshots, progress ----------------
namespace fabricckpt {
struct IoProgress;
}

namespace fabricckpt::jni {

// Progress of one long load, save or snapshot: the call runs on one JVM thread
// while another polls these (bytes so far, of all; total is 0 until known).
class NativeProgress {
 public:
  NativeProgress();
  long long bytesDone() const;
  long long bytesTotal() const;
  IoProgress* get() const { return progress_.get(); }

 private:
  std::shared_ptr<IoProgress> progress_;
};

// torch.save file -> tree. With `mmap`, tensors view a private copy-on-write mapping of the file
// (torch.load(mmap=True)): storages' CRCs are not checked then. Without, storages are read into
// owned memory by `threads` threads (0: one per core), CRCs checked when `verify_crc`.
// `progress` may be null.
NativeValue loadTorchFileWith(const std::string& path, bool verify_crc, bool mmap, int threads,
                              NativeProgress* progress);

// tree -> torch.save file, atomically, with `threads` writers (0: one per core); `progress` may be null.
void saveTorchFileWith(const std::string& path, const NativeValue& root, const std::string& archive_name,
                       bool fsync, int threads, NativeProgress* progress);

// The same tree with every storage copied once (views keep sharing): saving the copy later gives
// the bytes saving `root` gives now. For async saves. `progress` may be null.
NativeValue snapshotTensors(const NativeValue& root, int threads, NativeProgress* progress);

// --- unsafe globals: torch 2.10's weights_only allowlist (fabricckpt/safety.h) -------------------

// loadTorchFileWith, and with `weights_only` a file naming any global outside the allowlist is
// refused (as torch.load(weights_only=True)) with an error listing them.
NativeValue loadTorchFileOptions(const std::string& path, bool verify_crc, bool mmap, int threads, bool weights_only,
                                 NativeProgress* progress);
// saveTorchFileWith; a tree holding globals outside the allowlist is refused (the error names each
// and its key path) unless `allow_unsafe_globals`.
void saveTorchFileOptions(const std::string& path, const NativeValue& root, const std::string& archive_name,
                          bool fsync, int threads, bool allow_unsafe_globals, NativeProgress* progress);
// The globals of a checkpoint outside the allowlist, one "module.name" per line, as
// torch.serialization.get_unsafe_globals_in_checkpoint names them (a file: its pickle; a sharded
// directory: meta.pt and its value items). "" when none.
std::string unsafeGlobals(const std::string& path);
// Those of an in-memory tree as the writer would emit them: "module.name<TAB>key path" per line.
std::string unsafeGlobalsOfTree(const NativeValue& root);

}  // namespace fabricckpt::jni

// --- dist: a c10d process group (TCPStore rendezvous + Gloo) for the strategies ---------------
namespace fabricckpt {
class ProcessGroup;
}

namespace fabricckpt::jni {

// One rank's membership of a process group (fabricckpt::ProcessGroup). The constructor blocks until
// every rank has joined; every other call except rank()/worldSize()/close() is collective.
class NativeProcessGroup {
 public:
  NativeProcessGroup(const signed char* host, long long host_length, int port, int rank, int world_size,
                     long long timeout_millis);
  // A background group of `parent`'s ranks over its store, keys under `prefix`: collective, see
  // ProcessGroup::background_group.
  NativeProcessGroup(const NativeProcessGroup& parent, const signed char* prefix, long long prefix_length);
  int rank() const;
  int worldSize() const;
  long long timeoutMillis() const;
  void barrier();
  bool allAgree(bool ok);
  long long allReduceSum(long long value);
  // Rank `src`'s bytes on every rank.
  std::string broadcastBytes(const signed char* data, long long length, int src);
  // Every rank's bytes on rank `dst`, in rank order, each as its 8-byte little-endian length then
  // the bytes; "" on the other ranks.
  std::string gatherBytes(const signed char* data, long long length, int dst);
  void close();

  ProcessGroup* get() const { return group_.get(); }

 private:
  std::shared_ptr<ProcessGroup> group_;
};

}  // namespace fabricckpt::jni

// --- sharded (FSDP-style) checkpoints: torch.distributed.checkpoint directories ---------------
namespace fabricckpt::sharded {
class ShardPlan;
class Reader;
class RankFileLayout;
class FullFileLayout;
}  // namespace fabricckpt::sharded

namespace fabricckpt::jni {

// Which parameters of the state's models are this rank's shards (sharded::ShardPlan).
class NativeShardPlan {
 public:
  NativeShardPlan();
  // Arrays of `ndim` longs: the global shape, this shard's offsets in it and its own shape.
  void addParameter(const signed char* module_key, long long module_key_length, const signed char* name,
                    long long name_length, const long long* global_shape, const long long* offsets,
                    const long long* shape, int ndim);
  // The optimizer's per-parameter state follows the sharding of the parameters of that model.
  void addOptimizer(const signed char* optimizer_key, long long optimizer_key_length, const signed char* module_key,
                    long long module_key_length);
  const sharded::ShardPlan& get() const { return *plan_; }

 private:
  std::shared_ptr<sharded::ShardPlan> plan_;
};

// optimizer.state_dict() keyed by the parameters' names in `module` (FSDP's form), and its loading
// (either form is accepted: names are mapped back to indices).
NativeValue optimizerStateDictByName(void* optimizer, void* module);
void loadOptimizerStateDictByName(void* optimizer, void* module, const NativeValue& state_dict);

// Collective: every rank writes its shard file of `state`; rank 0 writes meta.pt (`meta`; None: not
// written) and .metadata last. `group` null: a single process. Values and meta.pt holding globals
// outside the weights_only allowlist are refused before anything is written unless
// `allow_unsafe_globals`; `safetensors`: DCP's SAFETENSORS serialization of the tensors.
void saveSharded(const std::string& dir, const NativeValue& state, const NativeValue& meta, const NativeShardPlan& plan,
                 NativeProcessGroup* group, bool fsync, bool allow_unsafe_globals, bool safetensors);
// Collective: rank 0 writes `state` to `path` as one torch.save file with the sharded tensors whole,
// streamed from every rank's shards (sharded::save_full).
void saveFull(const std::string& path, const NativeValue& state, const NativeShardPlan& plan, NativeProcessGroup* group,
              const std::string& archive_name, bool fsync, bool allow_unsafe_globals);
// Whole tensors at sharded places in `state` are cut to this rank's region (loading a full file).
void sliceToPlan(const NativeValue& state, const NativeShardPlan& plan);
bool isShardedCheckpoint(const std::string& path);

// safetensors (torch_save.h: load_safetensors_file / save_safetensors_file; safetensors.h).
// Whether the file starts as a safetensors file does (length, then '{').
bool isSafetensorsFile(const std::string& path);
// name -> tensor, mapped or read into owned memory.
NativeValue loadSafetensorsFile(const std::string& path, bool mmap, int threads, NativeProgress* progress);
// The flattened tensors of `root` (strings as __metadata__), atomically; a `*.safetensors.index.json`
// path gets Hugging Face's sharded layout, shards of at most `max_shard_size` bytes.
void saveSafetensorsFile(const std::string& path, const NativeValue& root, bool fsync, long long max_shard_size,
                         NativeProgress* progress);
// The file's __metadata__ (an index: the string entries of its "metadata") as a dict of strings.
NativeValue safetensorsMetadata(const std::string& path);
// `metadata` (a safetensors header's or index's) as a dict of strings.
NativeValue metadataDict(const std::vector<std::pair<std::string, std::string>>& metadata);

// The module's parameter names (named_parameters() order), one per line, and a parameter's shape
// (-1 dimensions: no such parameter).
std::string parameterNames(void* module);
int parameterDims(void* module, const signed char* name, long long name_length);
long long parameterSize(void* module, const signed char* name, long long name_length, int dim);
// The optimizer's state dict with its per-parameter state tensors (those of the parameter's shape)
// cut to the regions the plan gives the parameters of `module_key`: taken before the parameters are
// cut, loaded back after.
NativeValue shardedOptimizerStateDict(void* optimizer, void* module, const signed char* module_key,
                                      long long module_key_length, const NativeShardPlan& plan);
// Replace each planned parameter's data by a copy of its region (the same tensor object, so the
// optimizers holding it see the shard).
void shardModuleParameters(void* module, const signed char* module_key, long long module_key_length,
                           const NativeShardPlan& plan);

// A sharded checkpoint directory opened for reading; errors name the file.
class NativeShardedReader {
 public:
  explicit NativeShardedReader(const std::string& dir);
  int topLevelKeyCount() const;
  std::string topLevelKey(int index) const;
  // The value saved under `key` with each sharded tensor cut to this rank's region; None if absent.
  NativeValue read(const signed char* key, long long key_length, const NativeShardPlan& plan) const;
  // The same for restoring `module` (a torch::nn::Module*) from it: chunks that are exactly one of
  // its parameters' or buffers' regions are read straight into them (sharded::Reader::read).
  NativeValue readInto(const signed char* key, long long key_length, const NativeShardPlan& plan, void* module) const;
  // Everything, whole tensors, unflattened (what dcp_to_torch_save writes).
  NativeValue readAll() const;

 private:
  std::shared_ptr<sharded::Reader> reader_;
  std::vector<std::string> keys_;
};

// --- object storage: files sent and received in byte ranges (io.fabricckpt.internal.io.s3) ---------

// The bytes of a single-file checkpoint planned for a writer that sends them in parts (a multipart
// upload): torch.save(root), or with `safetensors` the file saveSafetensorsFile writes for it at a
// `.safetensors` path. fill() copies any range from the planned headers and the tensors' memory;
// `root` must stay alive.
class NativeFileLayout {
 public:
  NativeFileLayout(const NativeValue& root, bool safetensors, const std::string& archive_name,
                   bool allow_unsafe_globals, const std::string& target);
  long long size() const;
  // Copies [offset, offset + size) of the file to `dest` (a direct buffer's memory).
  void fill(long long offset, void* dest, long long size) const;

 private:
  std::shared_ptr<TorchFileLayout> torch_;            // one of the two
  std::shared_ptr<SafetensorsLayout> safetensors_;
};

// One rank's shard file of a sharded save to object storage (sharded::RankFileLayout): the bytes of
// the local __<rank>_0.distcp by byte range (`safetensors`: DCP's SAFETENSORS serialization), and
// what the rank reports to rank 0; `state` must stay alive.
class NativeRankFile {
 public:
  NativeRankFile(const NativeValue& state, const NativeShardPlan& plan, int rank, bool safetensors,
                 bool allow_unsafe_globals, const std::string& target);
  long long size() const;
  void fill(long long offset, void* dest, long long size) const;
  std::string report() const;

 private:
  std::shared_ptr<sharded::RankFileLayout> layout_;
};

// A gathered (FSDP FULL) save's one torch.save file planned for a writer that sends it in parts
// (sharded::FullFileLayout): constructed by every rank (collective), gather() by every rank (rank 0:
// on a thread of its own while the upload's threads call fill(), which waits for the whole tensors
// as they arrive); `state` must stay alive.
class NativeFullFileLayout {
 public:
  NativeFullFileLayout(const NativeValue& state, const NativeShardPlan& plan, NativeProcessGroup* group,
                       const std::string& archive_name, bool allow_unsafe_globals, const std::string& target);
  bool planned() const;
  long long size() const;
  void fill(long long offset, void* dest, long long size) const;
  void gather();
  void abandon(const std::string& why);

 private:
  std::shared_ptr<sharded::FullFileLayout> layout_;
};

// .metadata's bytes from every rank's NativeRankFile report, added in rank order
// (sharded::metadata_from_reports); `checkpoint_id` is recorded in it (the URL, as FsspecWriter).
class NativeShardedMetadata {
 public:
  void addReport(const signed char* data, long long length);
  std::string bytes(const std::string& checkpoint_id) const;

 private:
  std::vector<std::string> reports_;
};

// Whether a name under a sharded checkpoint's prefix is one its save writes (and may replace).
bool isShardedCheckpointEntry(const std::string& name);
// The name of rank `rank`'s shard file: "__<rank>_0.distcp" (dcp::rank_file_name).
std::string shardedRankFileName(int rank);

// Memory an object is downloaded into (ranged reads from several threads into data(): fresh
// huge-page memory, MappedFile::anonymous, named `name`, the object's URL, in errors), then handed
// whole to loadTorchBytes or loadSafetensorsBytes, whose tensors view it.
class NativeObjectBytes {
 public:
  NativeObjectBytes(long long size, const std::string& name);
  void* data();
  long long size() const;
  // Whether the bytes start as a safetensors file does (a plausible header length, then '{').
  bool isSafetensors() const;
  // The safetensors file's `__metadata__` as a dict of strings (empty when it has none); the bytes stay.
  NativeValue safetensorsMetadata() const;
  // The memory, handed over (the object is empty afterwards).
  std::shared_ptr<const MappedFile> take();

 private:
  const MappedFile& memory() const;
  std::shared_ptr<const MappedFile> memory_;
};

// A Hugging Face sharded checkpoint (`index_target` a *.safetensors.index.json) planned for object
// storage (SafetensorsIndexLayout): each shard file by byte range, then the index's bytes.
class NativeSafetensorsIndexLayout {
 public:
  NativeSafetensorsIndexLayout(const NativeValue& root, const std::string& index_target, long long max_shard_size);
  int shardCount() const;
  std::string shardName(int i) const;
  long long shardSize(int i) const;
  void fill(int i, long long offset, void* dest, long long size) const;
  std::string indexJson() const;

 private:
  std::shared_ptr<SafetensorsIndexLayout> layout_;
};

// A downloaded Hugging Face index (`name`: its URL) and its shard files, added in files() order as
// they are downloaded, then loaded together (load_safetensors_index_bytes).
class NativeSafetensorsIndex {
 public:
  NativeSafetensorsIndex(const signed char* json, long long length, const std::string& name);
  // The shard file names, one a line, in the order addShard takes them.
  std::string files() const;
  // The next shard's bytes (emptied: the loaded tensors view them).
  void addShard(NativeObjectBytes& bytes);
  NativeValue load();
  // The index's string metadata (tied weights' names among them).
  NativeValue metadata() const;

 private:
  std::string name_;
  std::shared_ptr<const safetensors::ShardIndex> index_;
  std::vector<std::shared_ptr<const MappedFile>> shards_;
};

// The byte ranges of a sharded directory's files that reading top-level `key` with `plan` reads
// (`plan` null: reading everything; `key` ignored then), one "relative path\toffset\tlength" a line.
std::string shardedRanges(const std::string& dir, const std::string& key, const NativeShardPlan* plan);

// Parses the downloaded torch.save file; the tensors view `bytes`, which is emptied.
NativeValue loadTorchBytes(NativeObjectBytes& bytes, bool verify_crc, int threads, bool weights_only);
// The downloaded safetensors file's tensors, as loadSafetensorsFile gives them; they view `bytes`, which is emptied.
NativeValue loadSafetensorsBytes(NativeObjectBytes& bytes);

}  // namespace fabricckpt::jni
