// The byte ranges an outline of a torch.save zip file reads, for a file fetched piece by piece
// (outline.h: outline_ranges_missing): an object in storage staged in a sparse local file.
#include <algorithm>
#include <mutex>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
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
      : file_(std::move(file)), fetched_(merged(std::move(fetched))) {}

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
    return merged(wanted_);
  }

  static std::vector<ByteRange> merged(std::vector<ByteRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
    std::vector<ByteRange> out;
    for (const ByteRange& r : ranges) {
      if (r.length == 0) continue;
      if (!out.empty() && r.offset <= out.back().offset + out.back().length) {
        out.back().length = std::max(out.back().offset + out.back().length, r.offset + r.length) - out.back().offset;
      } else {
        out.push_back(r);
      }
    }
    return out;
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

}  // namespace

std::vector<ByteRange> outline_ranges_missing(const std::string& path, const std::vector<ByteRange>& fetched) {
  auto source = std::make_shared<const FetchedSource>(MappedFile::open(path), fetched);
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

}  // namespace fabricckpt
