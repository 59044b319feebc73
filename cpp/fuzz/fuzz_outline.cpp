// libFuzzer target: the torch-free outlines of torch.save files the command line reads (zip and
// legacy): the pickle with storages as byte ranges of the input, every tensor view checked against
// its storage; then every storage read whole and every tensor compared with itself, which must stay
// inside the input. Seeds: cpp/tests/data/torch and zip (real torch files, a legacy one among them).
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/zip.h"

namespace {

using namespace fabricckpt;

void walk(const ValuePtr& root) {
  std::vector<const Value*> stack{root.get()};
  std::unordered_set<const Value*> seen;
  while (!stack.empty()) {
    const Value* v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second) continue;
    if (auto t = tensor_of(*v)) {
      if (t->numel() <= (uint64_t{1} << 20)) max_abs_difference(*t, *t);  // within its storage, so the input
      continue;
    }
    push_children(*v, stack);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = MappedFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.pt");
    if (size == 0) return 0;
    FileOutline outline;
    std::shared_ptr<const OutlineFile> zip;
    if (is_zip(*file)) {
      zip = OutlineFile::open(file);
      outline.root = zip->root();
      for (const auto& s : zip->storages()) outline.storages.push_back(s.get());
    } else {
      outline = read_legacy_outline(file);
    }
    for (const StorageOutline* s : outline.storages) {
      if (s->offset + s->stored > size) __builtin_trap();  // a range the reader let past the input's end
      s->read_all();
    }
    walk(outline.root);
  } catch (const Error&) {
  }
  return 0;
}
