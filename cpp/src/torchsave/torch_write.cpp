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
#include "torch_records.h"

namespace fabricckpt {

using torchsave::pick_threads;
using torchsave::Piece;
using torchsave::run_parallel;
using torchsave::split;
using torchsave::RecordSpec;
using torchsave::StorageCollector;
using torchsave::torch_records;

namespace torchsave {

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

}  // namespace torchsave

namespace {

// Records this large are written by the parallel writers; smaller ones go through the sink's buffer.
constexpr uint64_t kPlacedRecord = uint64_t{1} << 20;

// Bytes written at a planned place of the file.
struct Placed {
  uint64_t offset;
  const uint8_t* data;
  uint64_t size;
};

// Writes every item from several threads (pwrite) and returns each item's CRC-32: each piece's
// CRC is computed right before the piece is written, while it is in cache.
std::vector<uint32_t> write_placed(AtomicFileSink& sink, const std::vector<Placed>& items, int threads,
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
    sink.write_at(item.offset + piece.offset, item.data + piece.offset, piece.size);
    if (progress) progress->add(piece.size);
  });
  std::vector<uint32_t> crc(items.size(), 0);
  for (size_t p = 0; p < pieces.size(); ++p) {
    uint32_t& c = crc[pieces[p].item];
    c = crc32_combine(c, piece_crcs[p], pieces[p].size);
  }
  return crc;
}

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
