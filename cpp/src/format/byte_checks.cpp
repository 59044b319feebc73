#include "fabricckpt/byte_checks.h"

#include <algorithm>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/files.h"

namespace fabricckpt {

uint32_t crc32_of_range(const ReadSource& source, uint64_t offset, uint64_t size) {
  constexpr uint64_t kPiece = uint64_t{4} << 20;
  std::vector<char> buffer(static_cast<size_t>(std::min(size, kPiece)));
  uint32_t crc = 0;
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min(kPiece, size - done));
    source.read_at(offset + done, buffer.data(), n);
    crc = crc32_update(crc, buffer.data(), n);
    done += n;
  }
  return crc;
}

ByteChecks::Range ByteChecks::range_in_file(const ReadSource& source, uint64_t offset, uint64_t length) {
  if (const auto* file = dynamic_cast<const MappedFile*>(&source)) {
    const auto [whole, at] = file->origin(offset);
    return {whole->path(), at, length};
  }
  return {source.name(), offset, length};
}

void ByteChecks::give(const Range& range, uint32_t crc) { given_[{range.path, range.offset, range.length}] = crc; }

std::optional<uint32_t> ByteChecks::crc32(const ReadSource& source, uint64_t offset, uint64_t length) {
  if (listing_) {
    check_read_range(source.name(), source.size(), offset, static_cast<size_t>(length));
    listed_.push_back(range_in_file(source, offset, length));
    return std::nullopt;
  }
  if (!given_.empty()) {
    const Range range = range_in_file(source, offset, length);
    if (auto it = given_.find({range.path, range.offset, range.length}); it != given_.end()) return it->second;
  }
  return crc32_of_range(source, offset, length);
}

}  // namespace fabricckpt
