#include "fabricckpt/read_source.h"

#include <cstring>

#include "fabricckpt/error.h"

namespace fabricckpt {

void check_read_range(const std::string& name, uint64_t source_size, uint64_t offset, size_t size) {
  if (offset > source_size || size > source_size - offset) {
    throw FormatError(concat(name, ": cannot read ", size, " bytes at offset ", offset, ": beyond its ", source_size,
                             " bytes"));
  }
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
