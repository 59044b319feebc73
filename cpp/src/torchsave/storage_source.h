// Where the storages of one zip load come from. The policy is chosen once per load, from its
// options and the file: views of a private mapping (torch.load(mmap=True)), or memory this
// library allocates (huge pages, laid out for O_DIRECT) and fills once the pickle has named every
// storage, all records at once from several threads (eager_reader.h).
#pragma once

#include <c10/core/Storage.h>

#include <cstddef>
#include <memory>

#include "fabricckpt/files.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"

namespace fabricckpt::torchsave {

class StorageSource {
 public:
  // The source for loading `zip`, an archive of `file`. `options.verify_crc` is final (the
  // caller has turned it off for CRC-less files). `zip` and `file` must outlive the source.
  static std::unique_ptr<StorageSource> for_load(const std::shared_ptr<const MappedFile>& file, const ZipReader& zip,
                                                 const TorchLoadOptions& options);
  virtual ~StorageSource() = default;

  // A storage of the first `nbytes` of the record's data (nbytes <= record.size, a multiple of
  // `element_size`). Its bytes may only be there after fill().
  virtual c10::Storage storage_for(const ZipRecord& record, size_t nbytes, size_t element_size) = 0;
  // Reads the bytes of every storage handed out whose bytes are not there yet.
  virtual void fill() = 0;
};

}  // namespace fabricckpt::torchsave
