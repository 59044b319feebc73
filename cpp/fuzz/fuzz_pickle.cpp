// libFuzzer target: the pickle reader (every opcode of protocols 0 to 5), then the writer over
// whatever the reader built. Seeds: cpp/tests/data/pickle (pickles real CPython wrote).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fabricckpt;
  UnpickleHooks hooks;
  hooks.persistent_load = [](const ValuePtr& pid) { return pid; };  // persistent ids as plain values
  try {
    UnpickleResult result = unpickle(std::string_view(reinterpret_cast<const char*>(data), size), hooks);
    pickle(result.value);
  } catch (const Error&) {
    // A clear error is the expected outcome for most inputs; crashes and sanitizer reports are not.
  }
  return 0;
}
