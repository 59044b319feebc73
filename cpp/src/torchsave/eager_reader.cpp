#include "eager_reader.h"

#include <algorithm>
#include <memory>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "parallel.h"

namespace fabricckpt::torchsave {

namespace {

// One read of a piece of a record (several per record, in order).
struct Read {
  size_t item;      // index into the pending reads
  uint64_t offset;  // in the file
  size_t size;
  uint8_t* dest;
  bool direct;
  uint64_t data_begin, data_end;  // the part that is the record's data (file offsets)
};

}  // namespace

void read_storages(const MappedFile& file, const ZipReader& zip, const std::vector<PendingRead>& pending,
                   const TorchLoadOptions& options) {
  constexpr uint64_t kPage = DirectFile::kAlignment;
  constexpr uint64_t kDirectChunk = uint64_t{8} << 20;
  constexpr size_t kCacheHot = size_t{256} << 10;  // well inside a core's L2
  std::unique_ptr<DirectFile> direct_file;
  bool direct_tried = false;

  std::vector<Read> reads;
  uint64_t total = 0;
  bool any_direct = false;
  for (size_t i = 0; i < pending.size(); ++i) {
    const PendingRead& p = pending[i];
    const uint64_t begin = p.record->data_offset;
    const uint64_t end = begin + p.record->size;
    total += p.record->size;
    bool direct = false;
    if (p.aligned && file.resident_bytes(begin, p.record->size) < p.record->size / 2) {
      if (!direct_tried) {
        direct_file = DirectFile::open(file);
        direct_tried = true;
      }
      direct = direct_file != nullptr;
    }
    if (direct) {
      any_direct = true;
      const uint64_t first = begin / kPage * kPage;
      const uint64_t last = (end + kPage - 1) / kPage * kPage;
      for (uint64_t at = first; at < last; at += kDirectChunk) {
        const uint64_t stop = std::min(last, at + kDirectChunk);
        reads.push_back(Read{i, at, static_cast<size_t>(stop - at), p.aligned + (at - first), true,
                             std::max(at, begin), std::min(stop, end)});
      }
    } else {
      for (uint64_t at = begin; at < end; at += kChunk) {
        const uint64_t stop = std::min(end, at + kChunk);
        reads.push_back(
            Read{i, at, static_cast<size_t>(stop - at), p.dest + (at - begin), false, at, stop});
      }
    }
  }
  if (options.progress) options.progress->total = total;

  int threads = pick_threads(options.threads, total, reads.size());
  // Direct reads wait on the disk, not on a core: more of them in flight keeps it busy.
  if (any_direct && options.threads <= 0) threads = static_cast<int>(std::min<size_t>(reads.size(), 4));
  constexpr size_t kAhead = 8;
  auto prefetch = [&](size_t i) {
    if (i < reads.size() && !reads[i].direct) file.prefetch(reads[i].offset, reads[i].size);
  };
  for (size_t i = 0; i < kAhead; ++i) prefetch(i);
  std::vector<uint32_t> crcs(reads.size());
  run_parallel(reads.size(), threads, [&](size_t i) {
    prefetch(i + kAhead);
    const Read& r = reads[i];
    uint8_t* data = r.dest + (r.data_begin - r.offset);
    const size_t data_size = static_cast<size_t>(r.data_end - r.data_begin);
    if (r.direct) {
      const int64_t got = direct_file->read(r.offset, r.dest, r.size);
      if (got < 0) {
        file.read_at(r.data_begin, data, data_size);  // alignment refused: read it the usual way
      } else if (static_cast<uint64_t>(got) < r.data_end - r.offset) {
        throw IoError(concat("cannot read ", file.path(), ": the file got shorter while it was read"));
      }
      if (options.verify_crc) crcs[i] = crc32_update(0, data, data_size);
    } else if (options.verify_crc) {
      // Each sub-piece's CRC while it is still in this core's cache: the bytes cross memory once.
      uint32_t crc = 0;
      for (size_t done = 0; done < r.size; done += kCacheHot) {
        const size_t n = std::min(kCacheHot, r.size - done);
        file.read_at(r.offset + done, r.dest + done, n);
        crc = crc32_update(crc, r.dest + done, n);
      }
      crcs[i] = crc;
    } else {
      file.read_at(r.offset, r.dest, r.size);
    }
    if (options.progress) options.progress->add(data_size);
  });
  if (!options.verify_crc) return;
  size_t i = 0;
  for (size_t item = 0; item < pending.size(); ++item) {
    uint32_t crc = 0;
    for (; i < reads.size() && reads[i].item == item; ++i) {
      crc = crc32_combine(crc, crcs[i], reads[i].data_end - reads[i].data_begin);
    }
    zip.check_crc(*pending[item].record, crc);
  }
}

}  // namespace fabricckpt::torchsave
