// The zip container of torch.save files: a validating reader over any read source
// (positional reads; stored records only, zip64 aware) and a writer that produces the same
// bytes as libtorch's PyTorchStreamWriter (miniz 3.0.2 with zip64 enabled).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"

namespace fabricckpt {

struct ZipRecord {
  std::string name;        // full name in the zip: "<archive>/data.pkl"
  uint64_t header_offset;  // local file header
  uint64_t data_offset;    // first byte of the stored data
  uint64_t size;
  uint32_t crc32;          // as stored in the central directory
};

class ZipReader {
 public:
  // Parses and validates the whole directory; FormatError "<source name>: <what>".
  explicit ZipReader(std::shared_ptr<const ReadSource> source);

  const std::vector<ZipRecord>& records() const { return records_; }  // central-directory order
  // The folder of the first entry (text before its first '/'); FormatError if it has none.
  const std::string& archive_name() const;
  // "data.pkl" finds "<archive>/data.pkl"; nullptr when absent.
  const ZipRecord* find(std::string_view name_in_archive) const;
  // A copy of the record's bytes; with verify_crc a CRC-32 mismatch is a FormatError.
  std::string data(const ZipRecord& record, bool verify_crc = true) const;
  // Checks the record's CRC-32, reading it in pieces (no copy of the whole record).
  void verify(const ZipRecord& record) const;
  // FormatError naming the record unless `computed` is its stored CRC-32 (or the file has none).
  void check_crc(const ZipRecord& record, uint32_t computed) const;
  // Whether the file carries no CRC-32s: every record with data stores 0, as torch.save writes
  // with torch.utils.serialization.config.save.compute_crc32 = False. Its records are read
  // unchecked, as torch reads them.
  bool crc_less() const { return crc_less_; }
  const ReadSource& source() const { return *source_; }

 private:
  std::shared_ptr<const ReadSource> source_;
  std::vector<ZipRecord> records_;
  std::unordered_map<std::string_view, size_t> index_;  // views into records_[i].name
  std::string archive_name_;                            // empty when the first entry has no '/'
  bool crc_less_ = false;
};

// Whether the source starts with a zip local file header.
bool is_zip(const ReadSource& source);

// Writes records as torch.save does. Each record's data starts at a multiple of
// `alignment`; zip64 fields appear exactly where miniz puts them. The caller
// writes every record torch writes (including "version"); finish() adds
// ".data/serialization_id" and the directory.
class TorchZipWriter {
 public:
  // `alignment` and `compute_crc32` mirror torch.utils.serialization.config.save
  // (storage_alignment, compute_crc32: when off, every CRC field is 0).
  TorchZipWriter(OutputSink& out, std::string archive_name, uint64_t alignment = 64,
                 bool compute_crc32 = true);

  // `name` is relative to the archive folder ("data/0"). Stored, not compressed.
  void write_record(std::string_view name, const void* data, size_t size);

  // The same record streamed in pieces: begin_record, write_data until exactly
  // `size` bytes were given, end_record. For data too large to hold at once.
  void begin_record(std::string_view name, uint64_t size);
  void write_data(const void* data, size_t size);
  void end_record();

  // A record whose data is written elsewhere (by a parallel writer, straight from
  // its memory) at the place this call leaves for it: the local header is emitted,
  // the sink skips `size` bytes (OutputSink::skip), then the descriptor follows
  // with `crc`, the data's CRC-32. `head` points at the data's first min(size, 8)
  // bytes (they take part in the serialization id). The bytes are those write_record
  // would give for the same data; the data's offset is the sink's position after
  // the header, which a PlanningSink records.
  void write_record_placed(std::string_view name, uint64_t size, uint32_t crc, const void* head);

  // Bytes of the archive emitted (or skipped) so far.
  uint64_t offset() const { return offset_; }

  // Writes ".data/serialization_id" (as libtorch computes it), the central
  // directory and the end records. Returns the id. The writer is done afterwards.
  std::string finish();

 private:
  void emit(const void* data, size_t size);
  void note_descriptor(const uint8_t* bytes);
  // Misuse of the writer: an Error naming the archive.
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw Error(concat("zip writer for archive ", archive_prefix_.substr(0, archive_prefix_.size() - 1), ": ",
                       std::forward<Parts>(parts)...));
  }

  OutputSink& out_;
  std::string archive_prefix_;  // "<archive>/"
  uint64_t alignment_;
  bool compute_crc32_;
  uint64_t offset_ = 0;  // bytes of the archive written so far
  std::string central_directory_;
  uint64_t record_count_ = 0;
  // Same container and insertion order as libtorch: the id hashes names in its iteration order.
  std::unordered_set<std::string> names_written_;
  uint64_t combined_crc32_ = 0;
  std::string serialization_id_;  // set by finish()
  bool finished_ = false;

  struct OpenRecord {
    std::string name;  // relative to the archive folder
    uint64_t header_offset = 0;
    uint64_t size = 0;
    uint64_t written = 0;
    uint32_t crc = 0;
    bool zip64 = false;    // whether a zip64 extra field was written in the local header
    bool discard = false;  // a serialization id given by the caller, dropped as libtorch does
    uint8_t head[8] = {};  // the first data bytes, for libtorch's descriptor detection
  };
  bool record_open_ = false;
  OpenRecord open_;
};

}  // namespace fabricckpt
