// The eager read engine: fills the storages of a load from their zip records, from several
// threads, checking each record's CRC-32 on the way.
#pragma once

#include <cstdint>
#include <vector>

#include "fabricckpt/files.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"

namespace fabricckpt::torchsave {

// A storage to fill from its zip record: record->size bytes go to `dest`.
struct PendingRead {
  const ZipRecord* record;
  uint8_t* dest;
  uint8_t* aligned = nullptr;  // memory laid out by allocate_file_aligned() around dest, or null
};

// Reads every pending record of `zip` (an archive of `file`) into place. A record whose pages
// are mostly not in the page cache, in memory laid out for it, is read with O_DIRECT straight
// into place (half the memory traffic, no page cache to fill); the others with pread(2), with
// the kernel asked to fetch a few pieces ahead. Each piece's CRC is taken right after it lands
// (still in cache) and the pieces' CRCs are combined per record; with options.verify_crc a
// mismatch is the zip reader's FormatError. options.threads and options.progress apply.
void read_storages(const MappedFile& file, const ZipReader& zip, const std::vector<PendingRead>& pending,
                   const TorchLoadOptions& options);

}  // namespace fabricckpt::torchsave
