// Files staged from object storage: sparse local files that hold an object's bytes only where they
// were fetched (the command line stages an s3:// checkpoint's structure so: its zip directory, local
// headers and pickles). While such a file is registered here, a MappedFile opened on its path reads
// every other range, a hole, through `read_hole` (from the store, into the reader's memory) instead of
// from the file: the readers see the whole object and the disk holds only its structure. More of the
// object can be fetched into the file while it is read (a sharded load stages each key's structure
// as it reads it): `hold` says so, to the files already open on it too.
// Process-wide, keyed by the path's lexically normal form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
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

  // The file now holds these ranges too (their bytes were written into it).
  void hold(const std::vector<ByteRange>& more);
  // The ranges it holds, sorted and merged.
  std::vector<ByteRange> held() const;

 private:
  mutable std::shared_mutex mutex_;  // hold() may run while another thread reads
  std::vector<ByteRange> held_;      // sorted, merged
  ReadHole read_hole_;
};

// Registers the file at `path` until unregister_staged_file (files opened before are not affected).
// A path registered already keeps its registration, which then holds `file`'s ranges too.
void register_staged_file(const std::string& path, std::shared_ptr<StagedFile> file);
void unregister_staged_file(const std::string& path);
// The file registered at `path`, or null.
std::shared_ptr<const StagedFile> staged_file(const std::string& path);

}  // namespace fabricckpt
