#include "fabricckpt/read_source.h"

#include <algorithm>
#include <cstring>

#include "fabricckpt/error.h"

namespace fabricckpt {

void check_read_range(const std::string& name, uint64_t source_size, uint64_t offset, size_t size) {
  if (offset > source_size || size > source_size - offset) {
    throw FormatError(concat(name, ": cannot read ", size, " bytes at offset ", offset, ": beyond its ", source_size,
                             " bytes"));
  }
}

std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges) {
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

std::string ReadSource::read_string(uint64_t offset, size_t size) const {
  std::string out(size, '\0');
  read_at(offset, out.data(), size);
  return out;
}

void MemorySource::read_at(uint64_t offset, void* dest, size_t size) const {
  check_read_range(name_, bytes_.size(), offset, size);
  if (size > 0) std::memcpy(dest, bytes_.data() + offset, size);
}

}  // namespace fabricckpt
