// The object-storage entry points (fabric_native.h): torch.save files planned for multipart
// uploads, and downloaded files parsed where they lie.
#include <string>

#include "fabric_native.h"
#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/value.h"

namespace fabricckpt::jni {

NativeTorchLayout::NativeTorchLayout(const NativeValue& root, const std::string& archive_name,
                                     bool allow_unsafe_globals, const std::string& target) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.allow_unsafe_globals = allow_unsafe_globals;
  layout_ = std::make_shared<TorchFileLayout>(root.get(), options, target);
}

long long NativeTorchLayout::size() const { return static_cast<long long>(layout_->size()); }

void NativeTorchLayout::fill(long long offset, void* dest, long long size) const {
  if (offset < 0 || size < 0) throw Error(concat("negative range ", offset, "+", size));
  if (size > 0 && dest == nullptr) throw Error("fill into a null buffer");
  layout_->fill(static_cast<uint64_t>(offset), dest, static_cast<size_t>(size));
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

NativeObjectBytes::NativeObjectBytes(long long size) {
  if (size < 0) throw Error(concat("negative object size ", size));
  memory_ = MappedFile::anonymous(static_cast<size_t>(size), "downloaded object");
}

void* NativeObjectBytes::data() {
  if (!memory_) throw StateError("the downloaded bytes were handed over already");
  return memory_->mutable_data();
}

long long NativeObjectBytes::size() const { return memory_ ? static_cast<long long>(memory_->size()) : 0; }

std::shared_ptr<const MappedFile> NativeObjectBytes::take() {
  if (!memory_) throw StateError("the downloaded bytes were handed over already");
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

NativeValue loadTorchBytes(NativeObjectBytes& bytes, const std::string& name, bool verify_crc, int threads,
                           bool weights_only) {
  TorchLoadOptions options;
  options.verify_crc = verify_crc;
  options.threads = threads;
  options.weights_only = weights_only;
  std::shared_ptr<const MappedFile> memory = bytes.take();
  const uint64_t size = memory->size();
  // The whole memory under the object's name, for errors.
  return NativeValue(load_torch_bytes(MappedFile::slice(std::move(memory), 0, size, name), options).root);
}

}  // namespace fabricckpt::jni
