// libFuzzer target: torch.distributed.checkpoint's .metadata reader (a pickle of its dataclasses,
// planner data, storage paths), then the writer over what it read. Seeds: cpp/tests/data/dcp.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fabricckpt;
  try {
    dcp::Metadata metadata = dcp::read_metadata(std::string_view(reinterpret_cast<const char*>(data), size), ".metadata");
    dcp::write_metadata(metadata);
  } catch (const Error&) {
  }
  return 0;
}
