// libFuzzer target: the zip container reader of torch.save files (end records, zip64, central
// directory, local headers, every record's CRC). Seeds: cpp/tests/data/zip and torch (real torch files).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fabricckpt;
  try {
    auto file = std::make_shared<MemorySource>(std::string(reinterpret_cast<const char*>(data), size), "fuzz.pt");
    if (!is_zip(*file)) return 0;
    ZipReader zip(file);
    for (const auto& record : zip.records()) {
      zip.verify(record);
      zip.data(record, false);
    }
    zip.find("data.pkl");
  } catch (const Error&) {
  }
  return 0;
}
