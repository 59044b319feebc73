// describe_error: how the kind and details of a C++ error reach Java (see
// fabric_native.h). Kept apart from the entry points: it is the one place that
// knows both the C++ error classes and the encoding NativeErrors.java reads.
#include <string>

#include "fabric_native.h"
#include "fabricckpt/error.h"
#include "fabricckpt/safety.h"

namespace fabricckpt::jni {
namespace {

constexpr char kRecord = '\x1e';
constexpr char kField = '\x1f';
constexpr char kItem = '\x1d';

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? std::string(1, kItem) : std::string()) + items[i];
  return out;
}

std::string describe(const std::exception& e) {
  std::string head;
  if (auto* mismatch = dynamic_cast<const StateMismatchError*>(&e)) {
    head = concat("mismatch", kField, joined(mismatch->missing_keys), kField, joined(mismatch->unexpected_keys),
                  kField, joined(mismatch->shape_mismatches));
  } else if (dynamic_cast<const StateError*>(&e)) {
    head = "state";
  } else if (dynamic_cast<const FormatError*>(&e)) {
    head = "format";
  } else if (auto* io = dynamic_cast<const IoError*>(&e)) {
    head = concat("io", kField, io->error_number(), kField, io->path());
  } else if (auto* dist = dynamic_cast<const DistributedError*>(&e)) {
    head = concat("distributed", kField, dist->rank, kField, dist->operation);
  } else if (dynamic_cast<const UnsafeGlobalsError*>(&e)) {
    head = "unsafe";
  } else {
    return e.what();
  }
  return concat(kRecord, head, kRecord, e.what());
}

}  // namespace

const char* describe_error(const std::exception& e) noexcept {
  // JavaCPP copies the text into a Java string at once, on this thread.
  thread_local std::string text;
  try {
    text = describe(e);
  } catch (...) {
    return e.what();
  }
  return text.c_str();
}

}  // namespace fabricckpt::jni
