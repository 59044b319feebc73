// The object-storage entry points (fabric_native.h): torch.save and safetensors files planned for
// multipart uploads, and downloaded files parsed where they lie.
#include <string>

#include "fabric_native.h"
#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/value.h"

namespace fabricckpt::jni {

NativeFileLayout::NativeFileLayout(const NativeValue& root, bool safetensors, const std::string& archive_name,
                                   bool allow_unsafe_globals, const std::string& target) {
  if (safetensors) {
    safetensors_ = SafetensorsLayout::of_file(root.get(), target);
    return;
  }
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.allow_unsafe_globals = allow_unsafe_globals;
  torch_ = std::make_shared<TorchFileLayout>(root.get(), options, target);
}

long long NativeFileLayout::size() const {
  return static_cast<long long>(torch_ ? torch_->size() : safetensors_->size());
}

void NativeFileLayout::fill(long long offset, void* dest, long long size) const {
  if (offset < 0 || size < 0) throw Error(concat("negative range ", offset, "+", size));
  if (size > 0 && dest == nullptr) throw Error("fill into a null buffer");
  if (torch_) {
    torch_->fill(static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
  } else {
    safetensors_->fill(static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
  }
}

NativeRankFile::NativeRankFile(const NativeValue& state, const NativeShardPlan& plan, int rank, bool safetensors,
                               bool allow_unsafe_globals, const std::string& target)
    : layout_(std::make_shared<sharded::RankFileLayout>(
          state.get(), plan.get(), rank,
          safetensors ? sharded::Serialization::Safetensors : sharded::Serialization::TorchSave, allow_unsafe_globals,
          target)) {}

long long NativeRankFile::size() const { return static_cast<long long>(layout_->size()); }

void NativeRankFile::fill(long long offset, void* dest, long long size) const {
  if (offset < 0 || size < 0) throw Error(concat("negative range ", offset, "+", size));
  if (size > 0 && dest == nullptr) throw Error("fill into a null buffer");
  layout_->fill(static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
}

std::string NativeRankFile::report() const { return layout_->report(); }

NativeFullFileLayout::NativeFullFileLayout(const NativeValue& state, const NativeShardPlan& plan,
                                           NativeProcessGroup* group, const std::string& archive_name,
                                           bool allow_unsafe_globals, const std::string& target) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.allow_unsafe_globals = allow_unsafe_globals;
  layout_ = std::make_shared<sharded::FullFileLayout>(state.get(), plan.get(), group ? group->get() : nullptr,
                                                      options, target);
}

bool NativeFullFileLayout::planned() const { return layout_->planned(); }

long long NativeFullFileLayout::size() const { return static_cast<long long>(layout_->size()); }

void NativeFullFileLayout::fill(long long offset, void* dest, long long size) const {
  if (offset < 0 || size < 0) throw Error(concat("negative range ", offset, "+", size));
  if (size > 0 && dest == nullptr) throw Error("fill into a null buffer");
  layout_->fill(static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
}

void NativeFullFileLayout::gather() { layout_->gather(); }

void NativeFullFileLayout::abandon(const std::string& why) { layout_->abandon(why); }

void NativeShardedMetadata::addReport(const signed char* data, long long length) {
  if (length < 0 || (length > 0 && data == nullptr)) throw Error("invalid byte string from the JVM");
  reports_.emplace_back(reinterpret_cast<const char*>(data), static_cast<size_t>(length));
}

std::string NativeShardedMetadata::bytes(const std::string& checkpoint_id) const {
  sharded::SaveOptions options;
  options.checkpoint_id = checkpoint_id;
  return sharded::metadata_from_reports(reports_, options);
}

bool isShardedCheckpointEntry(const std::string& name) { return sharded::is_checkpoint_file(name); }

std::string shardedRankFileName(int rank) { return dcp::rank_file_name(rank); }

NativeSafetensorsIndexLayout::NativeSafetensorsIndexLayout(const NativeValue& root, const std::string& index_target,
                                                           long long max_shard_size) {
  if (max_shard_size <= 0) throw StateError(concat(index_target, ": the largest shard size must be positive"));
  layout_ = std::make_shared<SafetensorsIndexLayout>(root.get(), index_target, static_cast<uint64_t>(max_shard_size));
}

int NativeSafetensorsIndexLayout::shardCount() const { return static_cast<int>(layout_->shard_count()); }

std::string NativeSafetensorsIndexLayout::shardName(int i) const {
  if (i < 0) throw Error(concat("no shard ", i));
  return layout_->shard_name(static_cast<size_t>(i));
}

long long NativeSafetensorsIndexLayout::shardSize(int i) const {
  if (i < 0) throw Error(concat("no shard ", i));
  return static_cast<long long>(layout_->shard_size(static_cast<size_t>(i)));
}

void NativeSafetensorsIndexLayout::fill(int i, long long offset, void* dest, long long size) const {
  if (i < 0 || offset < 0 || size < 0) throw Error(concat("negative shard or range ", i, ": ", offset, "+", size));
  if (size > 0 && dest == nullptr) throw Error("fill into a null buffer");
  layout_->fill(static_cast<size_t>(i), static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
}

std::string NativeSafetensorsIndexLayout::indexJson() const { return layout_->index_json(); }

NativeSafetensorsIndex::NativeSafetensorsIndex(const signed char* json, long long length, const std::string& name)
    : name_(name) {
  if (length < 0 || (length > 0 && json == nullptr)) throw Error("invalid byte string from the JVM");
  if (static_cast<uint64_t>(length) > safetensors::kMaxHeaderSize) {
    throw FormatError(concat(name, ": safetensors index of ", length, " bytes is over the limit"));
  }
  index_ = std::make_shared<const safetensors::ShardIndex>(
      safetensors::parse_index(std::string_view(reinterpret_cast<const char*>(json), static_cast<size_t>(length)), name));
}

std::string NativeSafetensorsIndex::files() const {
  std::string out;
  for (const auto& file : index_->files) out += file + "\n";
  return out;
}

void NativeSafetensorsIndex::addShard(NativeObjectBytes& bytes) {
  if (shards_.size() >= index_->files.size()) throw StateError(concat(name_, ": more shard files than the index names"));
  shards_.push_back(bytes.take());
}

NativeValue NativeSafetensorsIndex::load() { return NativeValue(load_safetensors_index_bytes(*index_, name_, shards_)); }

NativeValue NativeSafetensorsIndex::metadata() const { return metadataDict(index_->metadata); }

NativeObjectBytes::NativeObjectBytes(long long size, const std::string& name) {
  if (size < 0) throw Error(concat(name, ": negative object size ", size));
  memory_ = MappedFile::anonymous(static_cast<size_t>(size), name);
}

const MappedFile& NativeObjectBytes::memory() const {
  if (!memory_) throw StateError("the downloaded bytes were handed over already");
  return *memory_;
}

void* NativeObjectBytes::data() { return memory().mutable_data(); }

long long NativeObjectBytes::size() const { return memory_ ? static_cast<long long>(memory_->size()) : 0; }

bool NativeObjectBytes::isSafetensors() const { return safetensors::looks_like_safetensors(memory()); }

NativeValue NativeObjectBytes::safetensorsMetadata() const {
  return metadataDict(safetensors::read_header(memory()).metadata.value_or(safetensors::Metadata{}));
}

std::shared_ptr<const MappedFile> NativeObjectBytes::take() {
  memory();  // handed over already: StateError
  return std::move(memory_);
}

std::string shardedRanges(const std::string& dir, const std::string& key, const NativeShardPlan* plan) {
  sharded::Reader reader(dir);
  std::string out;
  for (const auto& r : plan ? reader.ranges_for(&key, &plan->get()) : reader.ranges_for(nullptr, nullptr)) {
    out += concat(r.relative_path, "\t", r.offset, "\t", r.length, "\n");
  }
  return out;
}

NativeValue loadTorchBytes(NativeObjectBytes& bytes, bool verify_crc, int threads, bool weights_only) {
  TorchLoadOptions options;
  options.verify_crc = verify_crc;
  options.threads = threads;
  options.weights_only = weights_only;
  return NativeValue(load_torch_bytes(bytes.take(), options).root);
}

NativeValue loadSafetensorsBytes(NativeObjectBytes& bytes) { return NativeValue(load_safetensors_bytes(bytes.take())); }

}  // namespace fabricckpt::jni
