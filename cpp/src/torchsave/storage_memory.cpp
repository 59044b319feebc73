#include "storage_memory.h"

#include <ATen/core/Tensor.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstring>

#include "fabricckpt/files.h"

namespace fabricckpt::torchsave {

namespace {

constexpr size_t kSmallPage = 4096;

struct Mapping {
  void* base;
  size_t length;
};

void unmap_storage(void* context) {
  auto* mapping = static_cast<Mapping*>(context);
  ::munmap(mapping->base, mapping->length);
  delete mapping;
}

class LargeAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePage) return c10::GetCPUAllocator()->allocate(nbytes);
    // Whole pages, not whole huge pages: a huge page at the end would be resident
    // in full as soon as the data's last bytes are written.
    const size_t length = (nbytes + kSmallPage - 1) / kSmallPage * kSmallPage;
    void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      // Fall back to libtorch's allocator (which reports out-of-memory its own way).
      return c10::GetCPUAllocator()->allocate(nbytes);
    }
#ifdef MADV_HUGEPAGE
    ::madvise(base, length, MADV_HUGEPAGE);
#endif
    return c10::DataPtr(base, new Mapping{base, length}, &unmap_storage, c10::Device(c10::DeviceType::CPU));
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    if (count > 0) std::memcpy(dest, src, count);
  }
};

c10::Allocator* large_allocator() {
  static LargeAllocator allocator;
  return &allocator;
}

void release_mapping(void* context) { delete static_cast<std::shared_ptr<const MappedFile>*>(context); }

}  // namespace

c10::Storage allocate_storage(size_t nbytes) {
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, large_allocator(), /*resizable=*/false);
}

c10::Storage allocate_file_aligned(size_t nbytes, uint64_t file_offset, uint8_t** aligned) {
  constexpr uint64_t kPage = DirectFile::kAlignment;
  const size_t shift = static_cast<size_t>(file_offset % kPage);
  const size_t length = (shift + nbytes + kPage - 1) / kPage * kPage;
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return {};
#ifdef MADV_HUGEPAGE
  ::madvise(base, length, MADV_HUGEPAGE);
#endif
  *aligned = static_cast<uint8_t*>(base);
  c10::DataPtr ptr(static_cast<uint8_t*>(base) + shift, new Mapping{base, length}, &unmap_storage,
                   c10::Device(c10::DeviceType::CPU));
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

c10::Storage mapped_storage(const std::shared_ptr<const MappedFile>& file, uint64_t offset, size_t nbytes) {
  void* data = file->mutable_data() + offset;
  c10::DataPtr ptr(data, new std::shared_ptr<const MappedFile>(file), &release_mapping,
                   c10::Device(c10::DeviceType::CPU));
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

c10::Storage copied_storage(const void* data, size_t nbytes) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator(), /*resizable=*/false);
  if (nbytes > 0) std::memcpy(storage.mutable_data(), data, nbytes);
  return storage;
}

c10::Storage storage_viewing(const at::Tensor& tensor) {
  // The DataPtr's context owns a reference to the tensor: its memory outlives every view of it.
  auto owner = std::make_unique<at::Tensor>(tensor);
  void* data = owner->data_ptr();
  const size_t nbytes = owner->nbytes();
  const c10::Device device = owner->device();
  c10::DataPtr ptr(data, owner.release(), [](void* context) { delete static_cast<at::Tensor*>(context); }, device);
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

}  // namespace fabricckpt::torchsave
