// torch.save for the Value model: the records torch writes, laid out by a planning pass and
// written with the storages' bytes going straight from tensor memory to their place in the file.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"
#include "parallel.h"
#include "torch_rebuild.h"

namespace fabricckpt {

using torchsave::pick_threads;
using torchsave::Piece;
using torchsave::run_parallel;
using torchsave::split;
using torchsave::StorageCollector;

namespace {

// One record of a torch.save file, in the order torch writes them. `deferred`: a storage without
// memory whose bytes the caller supplies later (TorchFileWriter::write_storage).
struct RecordSpec {
  std::string name;
  const void* data;
  uint64_t size;
  const c10::StorageImpl* storage = nullptr;
  bool deferred = false;
};

// The pickle and the storages it refers to; `pickled` must outlive the records.
std::vector<RecordSpec> torch_records(const ValuePtr& root, std::string& pickled, StorageCollector& storages) {
  pickled = pickle(root, storages.hooks());
  std::vector<RecordSpec> records;
  records.push_back({"data.pkl", pickled.data(), pickled.size()});
  records.push_back({".format_version", "1", 1});
  records.push_back({".storage_alignment", "64", 2});
  records.push_back({"byteorder", "little", 6});
  for (const auto& entry : storages.entries()) {
    const uint64_t size = entry.storage.nbytes();
    const void* data = entry.storage.data();
    records.push_back({"data/" + entry.key, data, size, entry.storage.unsafeGetStorageImpl(),
                       data == nullptr && size > 0});
  }
  records.push_back({"version", "3\n", 2});
  return records;
}

// Records this large are written by the parallel writers; smaller ones go through the sink's buffer.
constexpr uint64_t kPlacedRecord = uint64_t{1} << 20;

// Bytes written at a planned place of the file.
struct Placed {
  uint64_t offset;
  const uint8_t* data;
  uint64_t size;
};

// Each item's CRC-32, its pieces computed on several threads; with a sink, each piece is also
// written to its place (pwrite) right after its CRC, while it is in cache.
std::vector<uint32_t> process_placed(AtomicFileSink* sink, const std::vector<Placed>& items, int threads,
                                     IoProgress* progress) {
  std::vector<uint64_t> sizes;
  uint64_t bytes = 0;
  for (const auto& item : items) {
    sizes.push_back(item.size);
    bytes += item.size;
  }
  const std::vector<Piece> pieces = split(sizes);
  std::vector<uint32_t> piece_crcs(pieces.size());
  run_parallel(pieces.size(), pick_threads(threads, bytes, pieces.size()), [&](size_t p) {
    const Piece& piece = pieces[p];
    const Placed& item = items[piece.item];
    piece_crcs[p] = crc32_update(0, item.data + piece.offset, piece.size);
    if (sink) sink->write_at(item.offset + piece.offset, item.data + piece.offset, piece.size);
    if (progress) progress->add(piece.size);
  });
  std::vector<uint32_t> crc(items.size(), 0);
  for (size_t p = 0; p < pieces.size(); ++p) {
    uint32_t& c = crc[pieces[p].item];
    c = crc32_combine(c, piece_crcs[p], pieces[p].size);
  }
  return crc;
}

// Writes every item from several threads (pwrite, CRC per piece); returns each item's CRC-32.
std::vector<uint32_t> write_placed(AtomicFileSink& sink, const std::vector<Placed>& items, int threads,
                                   IoProgress* progress) {
  return process_placed(&sink, items, threads, progress);
}

// A file as consecutive segments: the bytes the zip writer emits are kept here, each range it
// skips points at the data of the next placed record (in the order the writer reaches them).
class SegmentSink : public OutputSink {
 public:
  struct Segment {
    uint64_t offset;
    uint64_t size;
    const uint8_t* data;  // placed data; null for kept bytes (at owned_at in bytes())
    size_t owned_at;
  };

  explicit SegmentSink(std::vector<Placed> placed) : placed_(std::move(placed)) {}

  void write(const void* data, size_t size) override {
    if (size == 0) return;
    if (!segments_.empty() && segments_.back().data == nullptr) {
      segments_.back().size += size;
    } else {
      segments_.push_back({position_, size, nullptr, owned_.size()});
    }
    owned_.append(static_cast<const char*>(data), size);
    position_ += size;
  }
  uint64_t position() const override { return position_; }
  void skip(uint64_t size) override {
    if (next_ >= placed_.size() || placed_[next_].size != size) throw Error("zip layout differs from its plan");
    segments_.push_back({position_, size, placed_[next_++].data, 0});
    position_ += size;
  }

  bool all_placed() const { return next_ == placed_.size(); }
  std::vector<Segment>& segments() { return segments_; }
  std::string& bytes() { return owned_; }

 private:
  std::vector<Placed> placed_;
  size_t next_ = 0;
  std::vector<Segment> segments_;
  std::string owned_;
  uint64_t position_ = 0;
};

}  // namespace

// The planned layout and what has been written into the temporary file so far.
struct TorchFileWriter::Impl {
  TorchSaveOptions options;
  StorageCollector storages;
  std::string pickled;
  std::vector<RecordSpec> records;
  std::vector<uint64_t> data_offset;  // per record, where its data goes
  std::vector<uint32_t> crc;          // per placed record, once written
  std::vector<std::array<uint8_t, 8>> head;  // deferred records' first bytes, once written
  std::vector<bool> written;
  std::unordered_map<const c10::StorageImpl*, size_t> deferred;  // storage -> its record
  uint64_t total = 0;
  AtomicFileSink sink;

  Impl(const std::string& path, const TorchSaveOptions& opts) : options(opts), sink(path, opts.fsync) {}

  bool placed(size_t i) const { return records[i].deferred || records[i].size >= kPlacedRecord; }
};

// 1. The layout: the same writer over a sink that only counts. CRCs and data do not move anything.
TorchFileWriter::TorchFileWriter(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options) {
  if (!options.allow_unsafe_globals) check_weights_only_tree(root, path);  // before anything is written
  impl_ = std::make_unique<Impl>(path, options);
  Impl& w = *impl_;
  w.records = torch_records(root, w.pickled, w.storages);
  const size_t n = w.records.size();
  static const uint8_t kNoHead[8] = {};
  PlanningSink plan;
  {
    TorchZipWriter zip(plan, options.archive_name);
    for (const auto& r : w.records) zip.write_record_placed(r.name, r.size, 0, r.deferred ? kNoHead : r.data);
    zip.finish();
  }
  w.total = plan.position();
  w.data_offset.assign(n, 0);
  size_t next = 0;
  for (size_t i = 0; i < n; ++i) {
    if (w.records[i].size == 0) continue;
    if (next >= plan.skipped_offsets().size()) throw Error("zip layout plan lost a record");
    w.data_offset[i] = plan.skipped_offsets()[next++];
  }
  w.crc.assign(n, 0);
  w.head.assign(n, {});
  w.written.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (w.records[i].deferred) w.deferred.emplace(w.records[i].storage, i);
  }
  if (options.progress) options.progress->total = w.total;
  w.sink.preallocate(w.total);
}

TorchFileWriter::~TorchFileWriter() = default;

void TorchFileWriter::write_storage(const c10::StorageImpl* storage, const void* data, uint64_t size) {
  Impl& w = *impl_;
  const auto found = w.deferred.find(storage);
  if (found == w.deferred.end()) {
    throw StateError(concat(w.sink.target_path(), ": no storage of this file waits for its data"));
  }
  const size_t i = found->second;
  const RecordSpec& r = w.records[i];
  if (w.written[i]) throw StateError(concat(w.sink.target_path(), ": storage ", r.name, " was written twice"));
  if (size != r.size) {
    throw StateError(concat(w.sink.target_path(), ": storage ", r.name, " has ", r.size, " bytes, not ", size));
  }
  const auto* bytes = static_cast<const uint8_t*>(data);
  w.crc[i] = write_placed(w.sink, {{w.data_offset[i], bytes, size}}, w.options.threads, w.options.progress)[0];
  std::memcpy(w.head[i].data(), bytes, std::min<uint64_t>(size, 8));
  w.written[i] = true;
}

// 2. The large records' data, straight from tensor memory; 3. everything else, in order, around
//    the placed data (which must be where planned).
void TorchFileWriter::commit() {
  Impl& w = *impl_;
  std::vector<size_t> own;  // placed records whose data the tree holds
  std::vector<Placed> items;
  for (size_t i = 0; i < w.records.size(); ++i) {
    const RecordSpec& r = w.records[i];
    if (r.deferred && !w.written[i]) {
      throw StateError(concat(w.sink.target_path(), ": storage ", r.name, " never got its data"));
    }
    if (!r.deferred && w.placed(i)) {
      own.push_back(i);
      items.push_back({w.data_offset[i], static_cast<const uint8_t*>(r.data), r.size});
    }
  }
  const std::vector<uint32_t> crcs = write_placed(w.sink, items, w.options.threads, w.options.progress);
  for (size_t k = 0; k < own.size(); ++k) w.crc[own[k]] = crcs[k];
  class Gaps : public OutputSink {
   public:
    explicit Gaps(AtomicFileSink& file) : file_(file) {}
    void write(const void* data, size_t size) override { file_.write(data, size); }
    uint64_t position() const override { return file_.position(); }
    void skip(uint64_t size) override {
      if (file_.position() != expected) throw Error("zip layout differs from its plan");
      file_.skip(size);
    }
    uint64_t expected = 0;

   private:
    AtomicFileSink& file_;
  } gaps(w.sink);
  TorchZipWriter zip(gaps, w.options.archive_name);
  for (size_t i = 0; i < w.records.size(); ++i) {
    const auto& r = w.records[i];
    if (w.placed(i)) {
      gaps.expected = w.data_offset[i];
      zip.write_record_placed(r.name, r.size, w.crc[i], r.deferred ? w.head[i].data() : r.data);
    } else {
      zip.write_record(r.name, r.data, r.size);
    }
  }
  zip.finish();
  if (w.sink.position() != w.total) throw Error("zip layout differs from its plan");
  if (w.options.progress) w.options.progress->done = w.total;
  w.sink.commit();
}

struct TorchFileLayout::Impl {
  std::string target;
  StorageCollector storages;  // keeps the storages the records point into alive
  std::string pickled;
  std::string kept;  // the bytes that are not placed storage data
  std::vector<SegmentSink::Segment> segments;
  uint64_t total = 0;
};

TorchFileLayout::TorchFileLayout(const ValuePtr& root, const TorchSaveOptions& options, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  if (!options.allow_unsafe_globals) check_weights_only_tree(root, target);
  Impl& l = *impl_;
  l.target = target;
  const std::vector<RecordSpec> records = torch_records(root, l.pickled, l.storages);
  std::vector<Placed> placed;
  for (const auto& r : records) {
    if (r.deferred) throw StateError(concat(target, ": storage ", r.name, " has no memory to write from"));
    if (r.size >= kPlacedRecord) placed.push_back({0, static_cast<const uint8_t*>(r.data), r.size});
  }
  const std::vector<uint32_t> crcs = process_placed(nullptr, placed, options.threads, options.progress);
  SegmentSink sink(placed);
  {
    TorchZipWriter zip(sink, options.archive_name);
    size_t k = 0;
    for (const auto& r : records) {
      if (r.size >= kPlacedRecord) {
        zip.write_record_placed(r.name, r.size, crcs[k++], r.data);
      } else {
        zip.write_record(r.name, r.data, r.size);
      }
    }
    zip.finish();
  }
  if (!sink.all_placed()) throw Error("zip layout differs from its plan");
  l.total = sink.position();
  l.kept = std::move(sink.bytes());
  l.segments = std::move(sink.segments());
}

TorchFileLayout::~TorchFileLayout() = default;

uint64_t TorchFileLayout::size() const { return impl_->total; }

void TorchFileLayout::fill(uint64_t offset, void* dest, size_t size) const {
  const Impl& l = *impl_;
  check_read_range(l.target, l.total, offset, size);
  // The first segment that ends after `offset`; segments are consecutive and sorted.
  auto it = std::upper_bound(l.segments.begin(), l.segments.end(), offset,
                             [](uint64_t at, const SegmentSink::Segment& s) { return at < s.offset + s.size; });
  auto* out = static_cast<uint8_t*>(dest);
  while (size > 0) {
    if (it == l.segments.end()) throw Error(concat(l.target, ": layout has no segment at offset ", offset));
    const uint64_t within = offset - it->offset;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size, it->size - within));
    const uint8_t* from = it->data ? it->data : reinterpret_cast<const uint8_t*>(l.kept.data()) + it->owned_at;
    std::memcpy(out, from + within, n);
    out += n;
    offset += n;
    size -= n;
    ++it;
  }
}

void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name,
                      bool allow_unsafe_globals, const std::string& target) {
  if (!allow_unsafe_globals) check_weights_only_tree(root, target);
  StorageCollector storages;
  std::string pickled;
  const auto records = torch_records(root, pickled, storages);
  for (const auto& r : records) {
    if (r.deferred) throw StateError(concat(target, ": storage ", r.name, " has no memory to write from"));
  }
  TorchZipWriter zip(out, archive_name);
  for (const auto& r : records) zip.write_record(r.name, r.data, r.size);
  zip.finish();
}

void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options) {
  TorchFileWriter file(path, root, options);
  file.commit();
}

}  // namespace fabricckpt
