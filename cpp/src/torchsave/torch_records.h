// The records a torch.save file holds, in the order torch writes them: shared by the file writer
// (torch_write.cpp) and the by-range layout (torch_layout.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fabricckpt/value.h"
#include "torch_rebuild.h"

namespace c10 {
struct StorageImpl;
}

namespace fabricckpt::torchsave {

// One record. `deferred`: a storage without memory whose bytes the caller supplies later
// (TorchFileWriter::write_storage).
struct RecordSpec {
  std::string name;
  const void* data;
  uint64_t size;
  const c10::StorageImpl* storage = nullptr;
  bool deferred = false;
};

// The pickle of `root` and the storages it refers to; `pickled` and `storages` must outlive the
// records (they point into them).
std::vector<RecordSpec> torch_records(const ValuePtr& root, std::string& pickled, StorageCollector& storages);

}  // namespace fabricckpt::torchsave
