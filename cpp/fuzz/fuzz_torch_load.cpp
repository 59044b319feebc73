// libFuzzer target: the torch.save layer over libtorch (zip checkpoints: storages, tensor rebuilds,
// views, dtypes; and the legacy pre-1.6 format), through load_torch_file on an in-memory file.
// Seeds: cpp/tests/data/torch and state (files real torch wrote). Only this project's code is
// instrumented; libtorch is the preset's own build.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/torch_save.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fabricckpt;
  // One in-memory file, rewritten for every input: the loader opens it by path like any other.
  static const int fd = ::memfd_create("fuzz.pt", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
  try {
    TorchLoadOptions options;
    options.threads = 1;
    load_torch_file(path, options);
  } catch (const Error&) {
    // A clear error is the expected outcome for most inputs; crashes and sanitizer reports are not.
  }
  return 0;
}
