// libFuzzer target: the safetensors header reader, then the writer over what it accepted, whose
// output must read back as the same header (names, dtypes, shapes, offsets, metadata); and the
// same bytes as a Hugging Face shard index (model.safetensors.index.json). Seeds:
// cpp/fuzz/seeds/safetensors (files safetensors.torch.save_file and huggingface_hub wrote).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fabricckpt;
  namespace st = fabricckpt::safetensors;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const st::ShardIndex index = st::parse_index(bytes, "fuzz.index.json");
    for (const auto& [tensor, file] : index.weight_map) {
      if (file.empty() || file.find('/') != std::string::npos) __builtin_trap();  // never a path out of the folder
    }
  } catch (const Error&) {
  }
  st::Header header;
  try {
    header = st::read_header(MemorySource(bytes, "fuzz.safetensors"));
  } catch (const Error&) {
    return 0;
  }
  std::vector<st::TensorData> tensors;
  for (const auto& t : header.tensors) {
    tensors.push_back({t.name, t.dtype, t.shape, bytes.data() + header.data_start() + t.begin, t.nbytes()});
  }
  StringSink out;
  st::write_stream(out, tensors, header.metadata);
  const st::Header again = st::read_header(MemorySource(out.str(), "rewritten.safetensors"));
  if (again.tensors.size() != header.tensors.size() || again.metadata != header.metadata) __builtin_trap();
  for (const auto& t : header.tensors) {
    const st::TensorInfo* u = again.find(t.name);
    if (!u || u->dtype != t.dtype || u->shape != t.shape || u->nbytes() != t.nbytes()) __builtin_trap();
    if (out.str().compare(again.data_start() + u->begin, u->nbytes(), bytes, header.data_start() + t.begin,
                          t.nbytes()) != 0) {
      __builtin_trap();
    }
  }
  return 0;
}
