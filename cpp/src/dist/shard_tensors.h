// Helpers for the tensors of sharded checkpoints: their shapes, regions of them, and messages
// that print shapes. Shared by the save, the full-state gather and the reader.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/value.h"

namespace fabricckpt::sharded {

inline std::vector<int64_t> dims_of(const at::Tensor& t) { return t.sizes().vec(); }

inline const at::Tensor& tensor_of(const Value& v) {
  const auto& t = v.tensor_ref().tensor;
  if (!t || !t->defined()) throw StateError("cannot save an undefined tensor");
  return *t;
}

inline ValuePtr tensor(at::Tensor t) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(t));
  return Value::tensor(std::move(ref));
}

inline std::string dims_text(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

inline int64_t volume(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

// `t` narrowed to [offsets, offsets + sizes) in every dimension.
inline at::Tensor region(at::Tensor t, const std::vector<int64_t>& offsets, const std::vector<int64_t>& sizes) {
  for (size_t d = 0; d < sizes.size(); ++d) t = t.narrow(static_cast<int64_t>(d), offsets[d], sizes[d]);
  return t;
}

}  // namespace fabricckpt::sharded
