#include "state_values.h"

#include <ATen/core/Tensor.h>

#include <cmath>

namespace fabricckpt::state::detail {

double number(const Value& v, const std::string& what) {
  switch (v.kind) {
    case Kind::Bool: return v.as_bool() ? 1.0 : 0.0;
    case Kind::Int:
    case Kind::Float: return v.as_float();
    case Kind::Tensor: {
      const auto& t = v.tensor_ref().tensor;
      if (t && t->defined() && t->numel() == 1) return t->item<double>();
      break;
    }
    default: break;
  }
  throw StateError(concat(what, " is ", describe(v), ", expected a number"));
}

bool flag(const Value& v, const std::string& what) {
  if (v.is(Kind::Bool)) return v.as_bool();
  if (v.is(Kind::Int)) return v.as_int() != 0;
  throw StateError(concat(what, " is ", describe(v), ", expected a bool"));
}

int64_t integer(const Value& v, const std::string& what) {
  if (v.is(Kind::Int)) return v.as_int();
  if (v.is(Kind::Bool)) return v.as_bool() ? 1 : 0;
  if (v.is(Kind::Float) && std::isfinite(v.as_float()) && v.as_float() == std::floor(v.as_float()) &&
      std::fabs(v.as_float()) < 9.0e18) {
    return static_cast<int64_t>(v.as_float());
  }
  throw StateError(concat(what, " is ", describe(v), ", expected an int"));
}

const Value::Items& sequence(const Value& v, const std::string& what) {
  if (!v.is(Kind::List) && !v.is(Kind::Tuple)) {
    throw StateError(concat(what, " is ", describe(v), ", expected a list"));
  }
  return v.items();
}

const Dict& dict_of(const Value& v, const std::string& what) {
  if (!v.is(Kind::Dict)) throw StateError(concat(what, " is ", describe(v), ", expected a dict"));
  return v.dict();
}

std::vector<double> numbers(const Value& v, const std::string& what) {
  std::vector<double> out;
  const auto& items = sequence(v, what);
  for (size_t i = 0; i < items.size(); ++i) out.push_back(number(*items[i], concat(what, "[", i, "]")));
  return out;
}

}  // namespace fabricckpt::state::detail
