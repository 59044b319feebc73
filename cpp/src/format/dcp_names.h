// The Python names .metadata pickles refer to, shared by its reader and writer.
#pragma once

namespace fabricckpt::dcp {

inline constexpr const char* kMetadataModule = "torch.distributed.checkpoint.metadata";
inline constexpr const char* kFilesystemModule = "torch.distributed.checkpoint.filesystem";

}  // namespace fabricckpt::dcp
