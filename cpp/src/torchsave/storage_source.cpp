#include "storage_source.h"

#include <ATen/core/Tensor.h>

#include <vector>

#include "eager_reader.h"
#include "storage_memory.h"

namespace fabricckpt::torchsave {

namespace {

// Memory of our own, filled by the eager read engine.
class EagerSource : public StorageSource {
 public:
  EagerSource(const MappedFile& file, const ZipReader& zip, const TorchLoadOptions& options)
      : file_(file), zip_(zip), options_(options) {}

  c10::Storage storage_for(const ZipRecord& record, size_t nbytes, size_t) override {
    if (options_.destination && !destination_taken_ && record.size == nbytes && nbytes > 0 &&
        options_.destination->nbytes() == nbytes) {
      destination_taken_ = true;  // the caller's memory, filled with the others
      pending_.push_back(PendingRead{&record, static_cast<uint8_t*>(options_.destination->data_ptr()), nullptr});
      return storage_viewing(*options_.destination);
    }
    if (record.size != nbytes || nbytes == 0) {
      // A record longer than its storage (the CRC covers it all), or empty: read now, whole.
      const std::string bytes = zip_.data(record, options_.verify_crc);
      return copied_storage(bytes.data(), nbytes);
    }
    uint8_t* aligned = nullptr;
    c10::Storage storage;
    if (nbytes >= kDirectMin) storage = allocate_file_aligned(nbytes, record.data_offset, &aligned);
    if (!storage) {
      storage = allocate_storage(nbytes);
      aligned = nullptr;
    }
    pending_.push_back(PendingRead{&record, static_cast<uint8_t*>(storage.mutable_data()), aligned});
    return storage;
  }

  void fill() override {
    read_storages(file_, zip_, pending_, options_);
    pending_.clear();
  }

 private:
  const MappedFile& file_;
  const ZipReader& zip_;
  TorchLoadOptions options_;
  std::vector<PendingRead> pending_;
  bool destination_taken_ = false;
};

// Views of a private copy-on-write mapping: the data is read when first touched. Records not
// aligned for their element type are read into memory of their own.
class MappedSource : public EagerSource {
 public:
  MappedSource(const std::shared_ptr<const MappedFile>& file, const ZipReader& zip, const TorchLoadOptions& options)
      : EagerSource(*file, zip, options), mapping_(file) {}

  c10::Storage storage_for(const ZipRecord& record, size_t nbytes, size_t element_size) override {
    if (record.data_offset % element_size != 0) return EagerSource::storage_for(record, nbytes, element_size);
    return mapped_storage(mapping_, record.data_offset, nbytes);
  }

 private:
  std::shared_ptr<const MappedFile> mapping_;
};

}  // namespace

std::unique_ptr<StorageSource> StorageSource::for_load(const std::shared_ptr<const MappedFile>& file,
                                                       const ZipReader& zip, const TorchLoadOptions& options) {
  if (options.mmap && file->writable() && file->mapped()) return std::make_unique<MappedSource>(file, zip, options);
  return std::make_unique<EagerSource>(*file, zip, options);
}

}  // namespace fabricckpt::torchsave
