#include "format_native.h"

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/value.h"
#include "fabricckpt/zip.h"

namespace fabricckpt::formatjni {
namespace {

size_t checked_index(int index, size_t size, const char* what) {
  if (index < 0 || static_cast<size_t>(index) >= size) {
    throw Error(concat(what, " index ", index, " out of range (size ", size, ")"));
  }
  return static_cast<size_t>(index);
}

TensorOutline require_tensor(const Value& v) {
  auto t = tensor_of(v);
  if (!t) throw Error(concat("not a tensor: ", kind_name(v.kind)));
  return *t;
}

}  // namespace

OutlineNode::OutlineNode() : value_(Value::none()) {}
OutlineNode::OutlineNode(std::shared_ptr<const void> file, std::shared_ptr<Value> value)
    : file_(std::move(file)), value_(value ? std::move(value) : Value::none()) {}

int OutlineNode::kind() const { return tensor_of(*value_) ? static_cast<int>(Kind::Tensor) : static_cast<int>(value_->kind); }
long long OutlineNode::identity() const { return static_cast<long long>(reinterpret_cast<intptr_t>(value_.get())); }
bool OutlineNode::boolValue() const { return value_->as_bool(); }
long long OutlineNode::longValue() const { return value_->as_int(); }
double OutlineNode::doubleValue() const { return value_->as_float(); }
std::string OutlineNode::bytesValue() const { return value_->as_string(); }
int OutlineNode::size() const {
  if (value_->is(Kind::Dict)) return static_cast<int>(value_->dict().size());
  return static_cast<int>(value_->items().size());
}
OutlineNode OutlineNode::item(int index) const {
  const auto& items = value_->items();
  return OutlineNode(file_, items[checked_index(index, items.size(), "item")]);
}
OutlineNode OutlineNode::key(int index) const {
  const auto& items = value_->dict().items();
  return OutlineNode(file_, items[checked_index(index, items.size(), "dict")].first);
}
OutlineNode OutlineNode::value(int index) const {
  const auto& items = value_->dict().items();
  return OutlineNode(file_, items[checked_index(index, items.size(), "dict")].second);
}
bool OutlineNode::ordered() const { return value_->dict().ordered; }
OutlineNode OutlineNode::dictState() const { return OutlineNode(file_, value_->dict().state); }
std::string OutlineNode::globalModule() const { return value_->global_ref().module; }
std::string OutlineNode::globalName() const { return value_->global_ref().name; }
int OutlineNode::construct() const { return static_cast<int>(value_->object_ref().construct); }
OutlineNode OutlineNode::callable() const { return OutlineNode(file_, value_->object_ref().callable); }
OutlineNode OutlineNode::args() const { return OutlineNode(file_, value_->object_ref().args); }
OutlineNode OutlineNode::kwargs() const { return OutlineNode(file_, value_->object_ref().kwargs); }
OutlineNode OutlineNode::objectState() const { return OutlineNode(file_, value_->object_ref().state); }
bool OutlineNode::hasObjectState() const { return value_->object_ref().state != nullptr; }
int OutlineNode::listItemCount() const { return static_cast<int>(value_->object_ref().list_items.size()); }
OutlineNode OutlineNode::listItem(int index) const {
  const auto& items = value_->object_ref().list_items;
  return OutlineNode(file_, items[checked_index(index, items.size(), "list item")]);
}
int OutlineNode::dictItemCount() const { return static_cast<int>(value_->object_ref().dict_items.size()); }
OutlineNode OutlineNode::dictItemKey(int index) const {
  const auto& items = value_->object_ref().dict_items;
  return OutlineNode(file_, items[checked_index(index, items.size(), "dict item")].first);
}
OutlineNode OutlineNode::dictItemValue(int index) const {
  const auto& items = value_->object_ref().dict_items;
  return OutlineNode(file_, items[checked_index(index, items.size(), "dict item")].second);
}
std::string OutlineNode::dtype() const { return require_tensor(*value_).dtype.name; }
int OutlineNode::dim() const { return static_cast<int>(require_tensor(*value_).sizes.size()); }
long long OutlineNode::sizeAt(int d) const {
  const TensorOutline t = require_tensor(*value_);
  return t.sizes[checked_index(d, t.sizes.size(), "dimension")];
}
long long OutlineNode::nbytes() const { return static_cast<long long>(require_tensor(*value_).nbytes()); }
bool OutlineNode::isParameter() const { return require_tensor(*value_).is_parameter; }
bool OutlineNode::requiresGrad() const { return require_tensor(*value_).requires_grad; }

OutlineNode readOutline(const std::string& path) {
  FileOutline outline = read_file_outline(path);
  return OutlineNode(outline.owner, outline.root);
}

OutlineNode readShardedOutline(const std::string& dir) {
  ShardedOutline outline = read_sharded_outline(dir);
  return OutlineNode(outline.owner, outline.root);
}

std::string verifyFile(const std::string& path) { return verify_outline(path); }

std::string verifyShardedDirectory(const std::string& dir) {
  return verify_sharded_outline(dir) + unsafe_globals_warning(unsafe_globals_of_sharded(dir));
}

std::string unsafeGlobalsOfShardedDirectory(const std::string& dir) {
  std::string out;
  for (const auto& name : unsafe_globals_of_sharded(dir)) out += (out.empty() ? "" : "\n") + name;
  return out;
}

std::string unsafeGlobalsOfFile(const std::string& path) {
  std::string out;
  for (const auto& name : unsafe_globals_of_file(path)) out += (out.empty() ? "" : "\n") + name;
  return out;
}

double maxAbsDifference(const OutlineNode& a, const OutlineNode& b) {
  return max_abs_difference(require_tensor(*a.get()), require_tensor(*b.get()));
}

void convertFile(const std::string& source, const std::string& target, bool allow_unsafe_globals) {
  convert_outline(source, target, allow_unsafe_globals);
}

void convertShardedDirectory(const std::string& dir, const std::string& target, const std::string& archive_name,
                             bool allow_unsafe_globals) {
  convert_sharded_outline(dir, target, archive_name, allow_unsafe_globals);
}

namespace {

// A convert's bytes handed to the Java side as they are written (an upload there).
class WriterSink final : public OutputSink {
 public:
  WriterSink(std::string target, int64_t stream, OutputWriter writer)
      : target_(std::move(target)), stream_(stream), writer_(writer) {}
  void write(const void* data, size_t size) override {
    if (writer_(stream_, data, static_cast<int64_t>(size)) != 0) {
      throw IoError(concat(target_, ": writing bytes ", position_, "+", size, " of it failed"));
    }
    position_ += size;
  }
  uint64_t position() const override { return position_; }

 private:
  std::string target_;
  int64_t stream_;
  OutputWriter writer_;
  uint64_t position_ = 0;
};

}  // namespace

void convertFileInto(const std::string& source, const std::string& target, int64_t stream, OutputWriter writer,
                     bool allow_unsafe_globals) {
  WriterSink out(target, stream, writer);
  convert_outline(source, out, target, allow_unsafe_globals);
}

void convertShardedDirectoryInto(const std::string& dir, const std::string& target, const std::string& archive_name,
                                 int64_t stream, OutputWriter writer, bool allow_unsafe_globals) {
  WriterSink out(target, stream, writer);
  convert_sharded_outline(dir, out, target, archive_name, allow_unsafe_globals);
}

void convertToSafetensors(const std::string& source, bool sharded, const std::string& target, int64_t max_shard_size) {
  if (max_shard_size <= 0) throw StateError(concat(target, ": the largest shard size must be positive"));
  convert_outline_to_safetensors(source, sharded, target, static_cast<uint64_t>(max_shard_size));
}

void convertToSafetensorsInto(const std::string& source, bool sharded, const std::string& target, int64_t stream,
                              OutputWriter writer) {
  WriterSink out(target, stream, writer);
  convert_outline_to_safetensors(source, sharded, out, target);
}

IndexOutline::IndexOutline(const std::string& source, bool sharded, const std::string& index_target,
                           long long max_shard_size) {
  if (max_shard_size <= 0) throw StateError(concat(index_target, ": the largest shard size must be positive"));
  index_ = std::make_shared<SafetensorsIndexOutline>(source, sharded, index_target,
                                                     static_cast<uint64_t>(max_shard_size));
}

int IndexOutline::shardCount() const { return static_cast<int>(index_->shard_count()); }

std::string IndexOutline::shardName(int i) const { return index_->shard_name(static_cast<size_t>(i)); }

long long IndexOutline::shardSize(int i) const { return static_cast<long long>(index_->shard_size(static_cast<size_t>(i))); }

void IndexOutline::writeShardInto(int i, const std::string& target, int64_t stream, OutputWriter writer) const {
  WriterSink out(target, stream, writer);
  index_->write_shard(static_cast<size_t>(i), out);
}

std::string IndexOutline::indexJson() const { return index_->index_json(); }

std::string removeStaleTemporaries(const std::string& target) {
  std::string out;
  for (const std::string& path : remove_stale_temporaries(target)) out += (out.empty() ? "" : "\n") + path;
  return out;
}

}  // namespace fabricckpt::formatjni
