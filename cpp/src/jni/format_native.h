// The torch-free surface the command line sees (JavaCPP library jnifabricckptformat, linked only
// against libfabricckptformat.so, never against libtorch): torch.save zip files read as outlines
// (outline.h), verified, compared and converted in bounded memory, and the clean-up of dead saves.
// Wrapped by cli/.../format/FormatNative.java. Strings cross as UTF-8 bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "staging_native.h"

namespace fabricckpt {
struct Value;
class SafetensorsIndexOutline;
}  // namespace fabricckpt

namespace fabricckpt::formatjni {

// A handle on one node of an outline tree; it keeps its files open (diff reads tensors through them).
class OutlineNode {
 public:
  OutlineNode();  // None

  // fabricckpt::Kind as int, except that a tensor or parameter rebuild is Tensor (14).
  int kind() const;
  long long identity() const;  // equal for memo-shared references
  bool boolValue() const;
  long long longValue() const;
  double doubleValue() const;
  std::string bytesValue() const;  // String (UTF-8), Bytes (raw), BigInt (little-endian two's complement)
  int size() const;                // items of Tuple/List/Set/FrozenSet, entries of Dict
  OutlineNode item(int index) const;
  OutlineNode key(int index) const;
  OutlineNode value(int index) const;
  bool ordered() const;
  OutlineNode dictState() const;  // None when absent
  std::string globalModule() const;
  std::string globalName() const;
  int construct() const;
  OutlineNode callable() const;
  OutlineNode args() const;
  OutlineNode kwargs() const;
  OutlineNode objectState() const;
  bool hasObjectState() const;
  int listItemCount() const;
  OutlineNode listItem(int index) const;
  int dictItemCount() const;
  OutlineNode dictItemKey(int index) const;
  OutlineNode dictItemValue(int index) const;
  // Tensors: the c10 name of the dtype ("Float"), the shape, the bytes of the view.
  std::string dtype() const;
  int dim() const;
  long long sizeAt(int d) const;
  long long nbytes() const;
  bool isParameter() const;
  bool requiresGrad() const;

  OutlineNode(std::shared_ptr<const void> owner, std::shared_ptr<Value> value);
  const std::shared_ptr<Value>& get() const { return value_; }

 private:
  std::shared_ptr<const void> file_;  // what the tree's storages point into
  std::shared_ptr<Value> value_;
};

// The outline of a checkpoint file (read_file_outline: torch.save zip or legacy, safetensors or a
// Hugging Face sharded index); FormatError naming the file and what is wrong.
OutlineNode readOutline(const std::string& path);
// The consolidated outline of a sharded directory (read_sharded_outline).
OutlineNode readShardedOutline(const std::string& dir);
// verify_sharded_outline and the unsafe globals warning; unsafe_globals_of_sharded, one a line.
std::string verifyShardedDirectory(const std::string& dir);
std::string unsafeGlobalsOfShardedDirectory(const std::string& dir);
// verify_outline: the one-line summary; throws naming the file, record or offset.
std::string verifyFile(const std::string& path);
// The globals outside torch's weights_only allowlist, one "module.name" per line ("" when none).
std::string unsafeGlobalsOfFile(const std::string& path);
// max_abs_difference of two tensor nodes of outlines, of one dtype and shape.
double maxAbsDifference(const OutlineNode& a, const OutlineNode& b);
// convert_outline.
void convertFile(const std::string& source, const std::string& target, bool allow_unsafe_globals);
// convert_sharded_outline: a sharded directory consolidated, tensor by tensor.
void convertShardedDirectory(const std::string& dir, const std::string& target, const std::string& archive_name,
                             bool allow_unsafe_globals);
// Takes the next `size` bytes of the output `stream` (an id the Java side chose) from `data`: 0, or
// nonzero when that failed (the Java side keeps what went wrong).
typedef int (*OutputWriter)(int64_t stream, const void* data, int64_t size);
// The stream forms of convertFile and convertShardedDirectory: the bytes go to `writer` in order,
// `target` names them in errors; they are whole only when the call returns.
void convertFileInto(const std::string& source, const std::string& target, int64_t stream, OutputWriter writer,
                     bool allow_unsafe_globals);
void convertShardedDirectoryInto(const std::string& dir, const std::string& target, const std::string& archive_name,
                                 int64_t stream, OutputWriter writer, bool allow_unsafe_globals);
// convert_outline_to_safetensors: a file, or with `sharded` a sharded directory, as safetensors at
// `target` (a Hugging Face sharded checkpoint at a *.safetensors.index.json target, shards of at
// most `max_shard_size` bytes); and its single file's bytes handed to `writer`, as convertFileInto.
void convertToSafetensors(const std::string& source, bool sharded, const std::string& target, int64_t max_shard_size);
void convertToSafetensorsInto(const std::string& source, bool sharded, const std::string& target, int64_t stream,
                              OutputWriter writer);
// A Hugging Face sharded checkpoint planned from a file, or with `sharded` a sharded directory, at the
// index path `index_target` (SafetensorsIndexOutline): each shard's bytes handed to `writer` in order,
// as convertFileInto's, once; then the index's bytes, which go last.
class IndexOutline {
 public:
  IndexOutline(const std::string& source, bool sharded, const std::string& index_target, long long max_shard_size);
  int shardCount() const;
  std::string shardName(int i) const;
  long long shardSize(int i) const;
  void writeShardInto(int i, const std::string& target, int64_t stream, OutputWriter writer) const;
  std::string indexJson() const;

 private:
  std::shared_ptr<const SafetensorsIndexOutline> index_;
};
// remove_stale_temporaries (files.h): the paths removed or restored, one a line.
std::string removeStaleTemporaries(const std::string& target);

}  // namespace fabricckpt::formatjni
