// The native side of staging object-storage checkpoints (staged_files.h): what an outline of a
// sparse, partly fetched file still needs, and the registration of such files, whose holes are then
// read through a callback. Both JNI libraries hold it (the library's, jnifabricckpt, and the command
// line's torch-free one, jnifabricckptformat), whose binding classes (FabricNative, FormatNative) name
// this namespace on these functions; the Java side that drives them is io.fabricckpt.internal.io.s3.StagedObject.
// Byte ranges cross as "offset<TAB>length" lines, paths as UTF-8 bytes.
#pragma once

#include <cstdint>
#include <string>

namespace fabricckpt::stagingjni {

// outline_ranges_missing: ranges as "offset<TAB>length" lines, in and out ("" out: none missing).
std::string outlineRangesMissing(const std::string& path, const std::string& fetched);
// sharded_outline_ranges_missing: ranges as "file name<TAB>offset<TAB>length" lines, in and out.
std::string shardedOutlineRangesMissing(const std::string& dir, const std::string& fetched, bool every_item);
// The shard files of the Hugging Face index at `path`, one a line.
std::string safetensorsIndexFiles(const std::string& path);
// Whether `name` is a file a Hugging Face sharded save under `stem` writes (and replaces):
// <stem>.safetensors or <stem>-NNNNN-of-NNNNN.safetensors, possibly followed by .index.json.
bool isSafetensorsFileOf(const std::string& name, const std::string& stem);

// Reads [offset, offset + size) of the object the staged file `path` holds into `dest`: 0, or
// nonzero when that failed (the Java side keeps what went wrong).
typedef int (*HoleReader)(const char* path, int64_t offset, int64_t size, void* dest);
// register_staged_file: the file at `path` holds its object's bytes in the `held` ranges
// ("offset<TAB>length" lines); its other bytes are read through `reader` until unregisterStagedFile.
void registerStagedFile(const std::string& path, const std::string& held, HoleReader reader);
void unregisterStagedFile(const std::string& path);

}  // namespace fabricckpt::stagingjni
