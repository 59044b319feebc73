// Files staged from object storage: sparse local files that hold an object's bytes only where they
// were fetched (the command line stages an s3:// checkpoint's structure so: its zip directory, local
// headers and pickles). While such a file is registered here, a MappedFile opened on its path reads
// every other range, a hole, through `read_hole` (from the store, into the reader's memory) instead of
// from the file: the readers see the whole object and the disk holds only its structure.
// Process-wide, keyed by the path's lexically normal form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fabricckpt/read_source.h"

namespace fabricckpt {

class StagedFile {
 public:
  using ReadHole = std::function<void(uint64_t offset, void* dest, size_t size)>;

  // `held`: the ranges of the file that hold the object's bytes, in any order.
  StagedFile(std::vector<ByteRange> held, ReadHole read_hole);

  // Copies [offset, offset + size) into `dest`: through `from_file` where the file holds the bytes,
  // through read_hole elsewhere.
  void read(uint64_t offset, void* dest, size_t size,
            const std::function<void(uint64_t offset, void* dest, size_t size)>& from_file) const;

 private:
  std::vector<ByteRange> held_;  // sorted, merged
  ReadHole read_hole_;
};

// Registers the file at `path` until unregister_staged_file (files opened before are not affected).
void register_staged_file(const std::string& path, std::shared_ptr<const StagedFile> file);
void unregister_staged_file(const std::string& path);
// The file registered at `path`, or null.
std::shared_ptr<const StagedFile> staged_file(const std::string& path);

}  // namespace fabricckpt
