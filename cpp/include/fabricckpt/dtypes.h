// How torch.save names tensor element types: the legacy typed-storage classes
// (torch.FloatStorage, ...) and, for newer dtypes, torch.<dtype> globals next
// to torch.storage.UntypedStorage.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <string_view>

namespace fabricckpt::torchsave {

// "FloatStorage" -> Float; nullopt for names that are not typed storages.
std::optional<c10::ScalarType> dtype_of_storage_class(std::string_view name);
// Float -> "FloatStorage"; nullopt for dtypes that torch.save writes as UntypedStorage (+ _rebuild_tensor_v3).
std::optional<std::string> storage_class_of_dtype(c10::ScalarType dtype);
// "float32" / "float" (torch.<name> global) -> Float.
std::optional<c10::ScalarType> dtype_of_name(std::string_view name);
// Float -> "float32": the name torch uses for the dtype global.
std::string name_of_dtype(c10::ScalarType dtype);

}  // namespace fabricckpt::torchsave
