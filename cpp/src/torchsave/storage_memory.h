// Memory for the storages this library creates: large ones in anonymous mappings advised to use
// transparent huge pages (one page fault per 2 MiB instead of per 4 KiB makes filling fresh memory
// several times faster), laid out for O_DIRECT reads where asked; views of a private file mapping;
// small ones from libtorch's CPU allocator.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Storage.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace fabricckpt {
class MappedFile;
}

namespace fabricckpt::torchsave {

constexpr size_t kHugePage = size_t{2} << 20;
// Storages of at least this size may be read with O_DIRECT (when not cached).
constexpr size_t kDirectMin = kHugePage;

// A storage of `nbytes` that this library fills itself (eager loads, snapshots): huge-page
// backed from 2 MiB on, libtorch's allocator below (and where mmap fails).
c10::Storage allocate_storage(size_t nbytes);

// Memory for a storage whose bytes start at `file_offset` in a file, laid out so
// that file pages and memory pages line up (the data starts at file_offset % 4096
// into the mapping, with room for whole pages at both ends): a direct read of the
// page-aligned range around the record can land in it as is. `*aligned` gets the
// start of that range's memory. Returns an empty storage where mmap fails.
c10::Storage allocate_file_aligned(size_t nbytes, uint64_t file_offset, uint8_t** aligned);

// A storage that views bytes [offset, offset + nbytes) of a copy-on-write mapping (open_private)
// and keeps the mapping alive.
c10::Storage mapped_storage(const std::shared_ptr<const MappedFile>& file, uint64_t offset, size_t nbytes);

// A storage from libtorch's allocator holding a copy of `nbytes` bytes at `data`.
c10::Storage copied_storage(const void* data, size_t nbytes);

// A storage over the memory of `tensor` (contiguous), keeping it alive: a load that fills it writes
// straight into the tensor.
c10::Storage storage_viewing(const at::Tensor& tensor);

}  // namespace fabricckpt::torchsave
