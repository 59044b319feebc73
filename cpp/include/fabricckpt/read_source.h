// What the readers read from: a size and positional, bounds-checked reads, as libtorch's
// PyTorchStreamReader reads through ReadAdapterInterface. A file (MappedFile, files.h) and a
// buffer in memory (MemorySource) are sources; another backend (object storage) is one more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fabricckpt {

class ReadSource {
 public:
  virtual ~ReadSource() = default;

  // Bytes in the source.
  virtual uint64_t size() const = 0;
  // Copies [offset, offset + size) into `dest`. FormatError naming the source when the range
  // lies past its end; IoError when the read fails (a file that got shorter meanwhile): never a
  // fault. Safe from several threads.
  virtual void read_at(uint64_t offset, void* dest, size_t size) const = 0;
  // What errors call the source (a file's path).
  virtual const std::string& name() const = 0;
  // A hint that [offset, offset + size) will be read soon; sources that cannot use it ignore it.
  virtual void prefetch(uint64_t offset, uint64_t size) const {}

  // read_at() into a new string.
  std::string read_string(uint64_t offset, size_t size) const;
};

// Bytes held in memory under a display name.
class MemorySource final : public ReadSource {
 public:
  MemorySource(std::string bytes, std::string name) : bytes_(std::move(bytes)), name_(std::move(name)) {}

  uint64_t size() const override { return bytes_.size(); }
  void read_at(uint64_t offset, void* dest, size_t size) const override;
  const std::string& name() const override { return name_; }

 private:
  std::string bytes_;
  std::string name_;
};

// A byte range of a source.
struct ByteRange {
  uint64_t offset = 0, length = 0;
};
// `ranges` sorted by offset, empty ones dropped, overlapping or touching ones joined.
std::vector<ByteRange> merged_ranges(std::vector<ByteRange> ranges);

// FormatError "<name>: cannot read N bytes at offset O: beyond its S bytes" unless
// [offset, offset + size) lies inside a source of `source_size` bytes.
void check_read_range(const std::string& name, uint64_t source_size, uint64_t offset, size_t size);

}  // namespace fabricckpt
