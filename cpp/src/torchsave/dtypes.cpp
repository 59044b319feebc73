#include "fabricckpt/dtypes.h"

#include <array>
#include <utility>

namespace fabricckpt::torchsave {
namespace {

using c10::ScalarType;

// The typed-storage classes torch.save still writes (TypedStorage._pickle_storage_type).
constexpr std::array<std::pair<std::string_view, ScalarType>, 12> kStorageClasses{{
    {"HalfStorage", ScalarType::Half},
    {"BFloat16Storage", ScalarType::BFloat16},
    {"FloatStorage", ScalarType::Float},
    {"DoubleStorage", ScalarType::Double},
    {"CharStorage", ScalarType::Char},
    {"ShortStorage", ScalarType::Short},
    {"IntStorage", ScalarType::Int},
    {"LongStorage", ScalarType::Long},
    {"ByteStorage", ScalarType::Byte},
    {"BoolStorage", ScalarType::Bool},
    {"ComplexFloatStorage", ScalarType::ComplexFloat},
    {"ComplexDoubleStorage", ScalarType::ComplexDouble},
}};

// torch.<name> dtype globals; the first name of each dtype is the one torch prints.
constexpr std::array<std::pair<std::string_view, ScalarType>, 36> kDtypeNames{{
    {"float16", ScalarType::Half},
    {"half", ScalarType::Half},
    {"bfloat16", ScalarType::BFloat16},
    {"float32", ScalarType::Float},
    {"float", ScalarType::Float},
    {"float64", ScalarType::Double},
    {"double", ScalarType::Double},
    {"int8", ScalarType::Char},
    {"int16", ScalarType::Short},
    {"short", ScalarType::Short},
    {"int32", ScalarType::Int},
    {"int", ScalarType::Int},
    {"int64", ScalarType::Long},
    {"long", ScalarType::Long},
    {"uint8", ScalarType::Byte},
    {"uint16", ScalarType::UInt16},
    {"uint32", ScalarType::UInt32},
    {"uint64", ScalarType::UInt64},
    {"bool", ScalarType::Bool},
    {"complex32", ScalarType::ComplexHalf},
    {"chalf", ScalarType::ComplexHalf},
    {"complex64", ScalarType::ComplexFloat},
    {"cfloat", ScalarType::ComplexFloat},
    {"complex128", ScalarType::ComplexDouble},
    {"cdouble", ScalarType::ComplexDouble},
    {"float8_e4m3fn", ScalarType::Float8_e4m3fn},
    {"float8_e5m2", ScalarType::Float8_e5m2},
    {"float8_e4m3fnuz", ScalarType::Float8_e4m3fnuz},
    {"float8_e5m2fnuz", ScalarType::Float8_e5m2fnuz},
    {"float8_e8m0fnu", ScalarType::Float8_e8m0fnu},
    {"float4_e2m1fn_x2", ScalarType::Float4_e2m1fn_x2},
    {"bits8", ScalarType::Bits8},
    {"bits16", ScalarType::Bits16},
    {"bits1x8", ScalarType::Bits1x8},
    {"bits2x4", ScalarType::Bits2x4},
    {"bits4x2", ScalarType::Bits4x2},
}};

}  // namespace

std::optional<ScalarType> dtype_of_storage_class(std::string_view name) {
  for (const auto& [storage, dtype] : kStorageClasses) {
    if (storage == name) return dtype;
  }
  return std::nullopt;
}

std::optional<std::string> storage_class_of_dtype(ScalarType dtype) {
  for (const auto& [storage, type] : kStorageClasses) {
    if (type == dtype) return std::string(storage);
  }
  return std::nullopt;
}

std::optional<ScalarType> dtype_of_name(std::string_view name) {
  for (const auto& [dtype_name, dtype] : kDtypeNames) {
    if (dtype_name == name) return dtype;
  }
  return std::nullopt;
}

std::string name_of_dtype(ScalarType dtype) {
  for (const auto& [dtype_name, type] : kDtypeNames) {
    if (type == dtype) return std::string(dtype_name);
  }
  return c10::toString(dtype);
}

}  // namespace fabricckpt::torchsave
