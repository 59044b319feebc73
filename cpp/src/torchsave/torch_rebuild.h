// How torch.save pickles tensors, both ways: the storages behind Kind::Storage nodes, the
// torch._utils rebuild calls that become tensors on load (_rebuild_tensor_v2/_v3,
// _rebuild_parameter), and on save the same calls and persistent ids with the object identities
// CPython's pickler would see.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "fabricckpt/pickle.h"
#include "fabricckpt/value.h"

namespace fabricckpt::torchsave {

// The payload of a Kind::Storage node while a tensor is being rebuilt or written.
struct TorchStorage {
  c10::Storage storage;
  c10::ScalarType dtype;  // element type the file declares for the storage
  std::string location;
};

// The reduce hook of loads: torch._utils rebuild functions become Tensor values (views checked
// to stay inside their storage); nullptr for any other callable.
ValuePtr reduce_torch(const GlobalRef& callable, const ValuePtr& args);

// Element type of a persistent id's storage class: a typed storage name, or UntypedStorage (bytes).
c10::ScalarType storage_dtype(const Value& type);

// The text of a string node; FormatError naming `what` otherwise.
std::string require_string(const Value& v, const char* what);

// Writes tensors as torch.save does: each distinct storage once, keyed "0", "1", ...
// in order of first use, with the object identities CPython's pickler would see
// (one 'storage' string, one 'cpu' string, one key string per storage).
class StorageCollector {
 public:
  struct Entry {
    std::string key;
    c10::Storage storage;
  };

  PickleHooks hooks();
  // The storages met while pickling, in order of first use.
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  struct Known {
    size_t index;
    ValuePtr key;
  };
  std::vector<Entry> entries_;
  std::unordered_map<const c10::StorageImpl*, Known> known_;
  ValuePtr storage_word_ = Value::string("storage");
  ValuePtr cpu_ = Value::string("cpu");

  ValuePtr tensor_args(const at::Tensor& t, bool requires_grad, const std::string& location);
  ValuePtr reduce(const Value& node);
  ValuePtr persistent_id(const Value& node);
};

}  // namespace fabricckpt::torchsave
