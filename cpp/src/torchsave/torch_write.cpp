// torch.save for the Value model: the records torch writes, laid out by a planning pass and
// written with the storages' bytes going straight from tensor memory to their place in the file.
#include <cstdint>
#include <string>
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

// One record of a torch.save file, in the order torch writes them.
struct RecordSpec {
  std::string name;
  const void* data;
  uint64_t size;
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
    records.push_back({"data/" + entry.key, entry.storage.data(), entry.storage.nbytes()});
  }
  records.push_back({"version", "3\n", 2});
  return records;
}

// Records this large are written by the parallel writers; smaller ones go through the sink's buffer.
constexpr uint64_t kPlacedRecord = uint64_t{1} << 20;

// Writes the records into `sink` (an empty temp file): plans where every byte
// goes, writes the large records' data from several threads at their planned
// offsets (pwrite, CRC per piece), then the headers, small records, descriptors
// and the directory in one sequential pass that skips over the placed data.
void write_planned(AtomicFileSink& sink, const std::vector<RecordSpec>& records, const std::string& archive_name,
                   const TorchSaveOptions& options) {
  // 1. The layout: the same writer over a sink that only counts. CRCs do not move anything.
  PlanningSink plan;
  {
    TorchZipWriter zip(plan, archive_name);
    for (const auto& r : records) zip.write_record_placed(r.name, r.size, 0, r.data);
    zip.finish();
  }
  const uint64_t total = plan.position();
  std::vector<uint64_t> data_offset(records.size(), 0);
  {
    size_t next = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      if (records[i].size == 0) continue;
      if (next >= plan.skipped_offsets().size()) throw Error("zip layout plan lost a record");
      data_offset[i] = plan.skipped_offsets()[next++];
    }
  }
  if (options.progress) options.progress->total = total;

  // 2. The large records' data, straight from tensor memory.
  std::vector<size_t> placed;
  std::vector<uint64_t> sizes;
  uint64_t placed_bytes = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].size >= kPlacedRecord) {
      placed.push_back(i);
      sizes.push_back(records[i].size);
      placed_bytes += records[i].size;
    }
  }
  sink.preallocate(total);
  const std::vector<Piece> pieces = split(sizes);
  std::vector<uint32_t> piece_crcs(pieces.size());
  run_parallel(pieces.size(), pick_threads(options.threads, placed_bytes, pieces.size()), [&](size_t p) {
    const Piece& piece = pieces[p];
    const size_t r = placed[piece.item];
    const auto* data = static_cast<const uint8_t*>(records[r].data) + piece.offset;
    piece_crcs[p] = crc32_update(0, data, piece.size);
    sink.write_at(data_offset[r] + piece.offset, data, piece.size);
    if (options.progress) options.progress->add(piece.size);
  });
  std::vector<uint32_t> crc(records.size(), 0);
  for (size_t p = 0; p < pieces.size(); ++p) {
    uint32_t& c = crc[placed[pieces[p].item]];
    c = crc32_combine(c, piece_crcs[p], pieces[p].size);
  }

  // 3. Everything else, in order, around the placed data (which must be where planned).
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
  } gaps(sink);
  TorchZipWriter zip(gaps, archive_name);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.size >= kPlacedRecord) {
      gaps.expected = data_offset[i];
      zip.write_record_placed(r.name, r.size, crc[i], r.data);
    } else {
      zip.write_record(r.name, r.data, r.size);
    }
  }
  zip.finish();
  if (sink.position() != total) throw Error("zip layout differs from its plan");
  if (options.progress) options.progress->done = total;
}

}  // namespace

void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name,
                      bool allow_unsafe_globals, const std::string& target) {
  if (!allow_unsafe_globals) check_weights_only_tree(root, target);
  StorageCollector storages;
  std::string pickled;
  const auto records = torch_records(root, pickled, storages);
  TorchZipWriter zip(out, archive_name);
  for (const auto& r : records) zip.write_record(r.name, r.data, r.size);
  zip.finish();
}

void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options) {
  if (!options.allow_unsafe_globals) check_weights_only_tree(root, path);  // before anything is written
  StorageCollector storages;
  std::string pickled;
  const auto records = torch_records(root, pickled, storages);
  AtomicFileSink sink(path, options.fsync);
  write_planned(sink, records, options.archive_name, options);
  sink.commit();
}

}  // namespace fabricckpt
