// The byte ranges an outline of a checkpoint file or of a sharded directory reads, for files
// fetched piece by piece (outline.h: outline_ranges_missing, sharded_outline_ranges_missing):
// objects in storage staged in sparse local files.
#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {
namespace {

// Thrown by FetchedSource for a read of bytes not fetched yet; never leaves this file.
struct NotFetched {};

// `file` of which only `fetched` holds real bytes. A read outside them records what it lacks and
// throws NotFetched; prefetch hints record what they name, so that one round fetches every range a
// reader announced (a zip reader announces all local headers before reading the first).
class FetchedSource final : public ReadSource {
 public:
  FetchedSource(std::shared_ptr<const ReadSource> file, std::vector<ByteRange> fetched)
      : file_(std::move(file)), fetched_(merged_ranges(std::move(fetched))) {}

  uint64_t size() const override { return file_->size(); }
  const std::string& name() const override { return file_->name(); }

  void read_at(uint64_t offset, void* dest, size_t size) const override {
    check_read_range(name(), file_->size(), offset, size);
    if (!want(offset, size)) throw NotFetched{};
    file_->read_at(offset, dest, size);
  }

  void prefetch(uint64_t offset, uint64_t size) const override {
    want(offset, std::min<uint64_t>(size, file_->size() - std::min(offset, file_->size())));
  }

  // Records the parts of [offset, offset + size) not fetched; whether there were none.
  bool want(uint64_t offset, uint64_t size) const {
    std::lock_guard<std::mutex> lock(mutex_);
    bool covered = true;
    uint64_t at = offset;
    const uint64_t end = offset + size;
    for (const ByteRange& r : fetched_) {
      if (at >= end) break;
      if (r.offset + r.length <= at) continue;
      if (r.offset > at) {
        wanted_.push_back({at, std::min(r.offset, end) - at});
        covered = false;
      }
      at = std::max(at, r.offset + r.length);
    }
    if (at < end) {
      wanted_.push_back({at, end - at});
      covered = false;
    }
    return covered;
  }

  std::vector<ByteRange> wanted() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return merged_ranges(wanted_);
  }

 private:
  std::shared_ptr<const ReadSource> file_;
  std::vector<ByteRange> fetched_;
  mutable std::mutex mutex_;
  mutable std::vector<ByteRange> wanted_;
};

// A storage's record ("<archive>/data/<key>"): the bytes an outline never reads.
bool is_storage_record(const ZipRecord& record, const std::string& archive) {
  const std::string prefix = archive.empty() ? "data/" : archive + "/data/";
  return record.name.size() > prefix.size() && record.name.compare(0, prefix.size(), prefix) == 0;
}

// outline_ranges_missing of one torch.save zip stream (a file, or an item inside a data file).
std::vector<ByteRange> zip_ranges_missing(std::shared_ptr<const ReadSource> file, const std::vector<ByteRange>& fetched) {
  auto source = std::make_shared<const FetchedSource>(std::move(file), fetched);
  try {
    const ZipReader zip(source);  // the end record, the directory, every local header
    for (const ZipRecord& record : zip.records()) {
      if (!is_storage_record(record, zip.archive_name())) source->want(record.data_offset, record.size);
    }
  } catch (const NotFetched&) {
    // what the reader lacked is recorded
  }
  return source->wanted();
}

// The parts of `ranges` (of a file) inside [start, start + length), as ranges of that slice.
std::vector<ByteRange> within(const std::vector<ByteRange>& ranges, uint64_t start, uint64_t length) {
  std::vector<ByteRange> out;
  for (const ByteRange& r : ranges) {
    const uint64_t a = std::max(r.offset, start), b = std::min(r.offset + r.length, start + length);
    if (a < b) out.push_back({a - start, b - a});
  }
  return out;
}

// What the sharded outline reads of one item of a data file (outline_sharded.cpp's
// ShardedSource::item), as ranges of the file: the header of the safetensors blob that starts at
// the item and runs to the end of the file, or else the item's torch.save stream as
// outline_ranges_missing reads a file. `got`: the file's fetched ranges. Errors name the item as the
// sharded outline's do (`key`: the item's entry).
std::vector<ByteRange> item_ranges_missing(const std::shared_ptr<const MappedFile>& file, const std::string& key,
                                           const dcp::StorageInfo& item, const std::vector<ByteRange>& got) {
  const uint64_t to_end = file->size() - item.offset;
  auto blob = std::make_shared<const FetchedSource>(
      MappedFile::slice(file, item.offset, to_end, concat(file->path(), " (safetensors at byte ", item.offset, ")")),
      within(got, item.offset, to_end));
  std::vector<ByteRange> wanted;
  try {
    if (safetensors::looks_like_safetensors(*blob)) {
      safetensors::read_header(*blob);
    } else {
      wanted = zip_ranges_missing(MappedFile::slice(file, item.offset, item.length,
                                                    concat(file->path(), " ('", key, "' at byte ", item.offset, ")")),
                                  within(got, item.offset, item.length));
    }
  } catch (const NotFetched&) {
    // what the reader lacked is recorded
  }
  for (const ByteRange& r : blob->wanted()) wanted.push_back(r);
  for (ByteRange& r : wanted) r.offset += item.offset;
  return wanted;
}

}  // namespace

std::vector<ByteRange> outline_ranges_missing(const std::string& path, const std::vector<ByteRange>& fetched) {
  const auto file = MappedFile::open(path);
  const auto source = std::make_shared<const FetchedSource>(file, fetched);
  try {
    if (is_zip(*source)) return zip_ranges_missing(file, fetched);
    if (safetensors::looks_like_safetensors(*source)) {
      safetensors::read_header(*source);
    } else {
      source->want(0, file->size());  // a legacy file: its storages' sizes are spread through it
    }
  } catch (const NotFetched&) {
    // what the reader lacked is recorded
  }
  return source->wanted();
}

std::map<std::string, std::vector<ByteRange>> sharded_outline_ranges_missing(
    const std::string& dir, const std::map<std::string, std::vector<ByteRange>>& fetched, bool every_item) {
  const std::string metadata_file = (std::filesystem::path(dir) / dcp::kMetadataFile).string();
  auto opened = MappedFile::open(metadata_file);
  const dcp::Metadata metadata = dcp::read_metadata(opened->read_string(0, opened->size()), metadata_file);
  // The items an outline opens: values, and chunks that are their tensor whole (verify: every chunk).
  std::vector<std::pair<const std::string*, const dcp::StorageInfo*>> items;  // entry key, item
  for (const dcp::Entry& entry : metadata.entries) {
    if (!entry.tensor) {
      items.emplace_back(&entry.key, metadata.storage_of(entry.key, nullptr));
      continue;
    }
    const std::vector<int64_t> origin(entry.tensor->size.size(), 0);
    for (const dcp::Chunk& chunk : entry.tensor->chunks) {
      if (every_item || (chunk.offsets == origin && chunk.sizes == entry.tensor->size)) {
        items.emplace_back(&entry.key, metadata.storage_of(entry.key, &chunk.offsets));
      }
    }
  }
  std::map<std::string, std::shared_ptr<const MappedFile>> files;
  std::map<std::string, std::vector<ByteRange>> missing;
  std::set<std::pair<std::string, uint64_t>> seen;  // a safetensors blob's tensors all start at the blob
  static const std::vector<ByteRange> kNone;
  for (const auto& [key, info] : items) {
    if (!info) throw FormatError(concat(metadata_file, ": an entry has no storage recorded"));
    if (!seen.insert({info->relative_path, info->offset}).second) continue;
    auto& file = files[info->relative_path];
    if (!file) file = MappedFile::open((std::filesystem::path(dir) / info->relative_path).string());
    if (info->offset > file->size() || info->length > file->size() - info->offset) {
      throw FormatError(concat(file->path(), ": an item is recorded at bytes ", info->offset, "+", info->length,
                               " but the file has ", file->size(), " bytes"));
    }
    auto have = fetched.find(info->relative_path);
    auto& out = missing[info->relative_path];
    for (const ByteRange& r : item_ranges_missing(file, *key, *info, have == fetched.end() ? kNone : have->second)) {
      out.push_back(r);
    }
  }
  std::map<std::string, std::vector<ByteRange>> result;
  for (auto& [name, ranges] : missing) {
    auto merged = merged_ranges(std::move(ranges));
    if (!merged.empty()) result.emplace(name, std::move(merged));
  }
  return result;
}

}  // namespace fabricckpt
