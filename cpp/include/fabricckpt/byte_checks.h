// How a torch-free verify checks the bytes whose structure it cannot see (a zip record's data, a
// storage, a safetensors file's tensor data): each range's CRC-32, compared with the one the format
// records (or, where it records none, only read through). Normally the bytes are read here. A
// checkpoint staged from object storage has holes where those bytes lie: its verify first lists the
// ranges (listing()), the caller streams them from the store and computes their CRC-32s, and the
// verify proper takes those (given()): the same checks, the same messages, the same summary, and no
// copy of the checkpoint on disk.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fabricckpt/read_source.h"

namespace fabricckpt {

class ByteChecks {
 public:
  // A range of a file, named by the path the file was opened with (a slice of a file, as a
  // torch.distributed.checkpoint item is: its offsets in the whole file).
  struct Range {
    std::string path;
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  // Every range read here.
  static ByteChecks reading() { return ByteChecks(false); }
  // Every range listed (listed()), nothing read or checked: what a caller must stream.
  static ByteChecks listing() { return ByteChecks(true); }
  // The CRC-32s the caller computed for ranges as listing() listed them; a range not given is read here.
  void give(const Range& range, uint32_t crc);

  // The CRC-32 of [offset, offset + length) of `source` (read in pieces, or as given), or nullopt
  // while listing: the range is recorded instead.
  std::optional<uint32_t> crc32(const ReadSource& source, uint64_t offset, uint64_t length);

  const std::vector<Range>& listed() const { return listed_; }

 private:
  explicit ByteChecks(bool listing) : listing_(listing) {}
  static Range range_in_file(const ReadSource& source, uint64_t offset, uint64_t length);

  bool listing_;
  std::vector<Range> listed_;
  std::map<std::tuple<std::string, uint64_t, uint64_t>, uint32_t> given_;
};

// The CRC-32 of [offset, offset + size) of `source`, read in pieces of a few MiB (bounded memory).
uint32_t crc32_of_range(const ReadSource& source, uint64_t offset, uint64_t size);

}  // namespace fabricckpt
