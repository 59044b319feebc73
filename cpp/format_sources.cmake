# The torch-free core (value model, pickle, zip, CRC-32, DCP metadata, torch.save outlines, safetensors,
# file I/O),
# relative to cpp/:
# one list for the library (cpp/CMakeLists.txt) and its instrumented fuzzing build (cpp/fuzz).
set(FABRICCKPT_FORMAT_SOURCES
  src/format/value.cpp
  src/format/pickle_reader.cpp
  src/format/pickle_writer.cpp
  src/format/crc32.cpp
  src/format/zip_reader.cpp
  src/format/zip_writer.cpp
  src/format/dcp_metadata.cpp
  src/format/dcp_metadata_write.cpp
  src/format/dcp_flatten.cpp
  src/format/safe_globals.cpp
  src/io/read_source.cpp
  src/format/outline.cpp
  src/format/outline_compare.cpp
  src/format/outline_convert.cpp
  src/format/outline_sharded.cpp
  src/format/outline_legacy.cpp
  src/format/outline_ranges.cpp
  src/format/outline_safetensors.cpp
  src/format/outline_to_safetensors.cpp
  src/io/files.cpp
  src/io/staged_files.cpp
  src/format/safetensors_json.cpp
  src/format/safetensors_reader.cpp
  src/format/safetensors_writer.cpp
  src/format/safetensors_plan.cpp
  src/format/safetensors_index.cpp
)
# The torch.save layer over libtorch that the fuzzing build instruments too.
set(FABRICCKPT_TORCHSAVE_SOURCES
  src/torchsave/dtypes.cpp
  src/torchsave/parallel.cpp
  src/torchsave/storage_memory.cpp
  src/torchsave/eager_reader.cpp
  src/torchsave/storage_source.cpp
  src/torchsave/torch_rebuild.cpp
  src/torchsave/torch_load.cpp
  src/torchsave/torch_write.cpp
  src/torchsave/torch_layout.cpp
  src/torchsave/snapshot.cpp
  src/torchsave/safetensors_torch.cpp
)
