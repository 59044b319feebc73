// A process that saves one checkpoint and exits, for the kill tests (kill_test.cpp), which
// kill it with SIGKILL at many moments of its save.
//
//   checkpoint_writer file|sharded PATH MIB SEED
//
// The state: "seed" and tensors w0..w7 of MIB/8 MiB each, every element of wI equal to
// SEED * 100 + I, so that a reader can tell a whole checkpoint of one save from anything else.
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"

using namespace fabricckpt;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s file|sharded PATH MIB SEED\n", argv[0]);
    return 2;
  }
  const std::string kind = argv[1], path = argv[2];
  const int64_t mib = std::atoll(argv[3]);
  const int64_t seed = std::atoll(argv[4]);
  try {
    ValuePtr tensors = Value::plain_dict();
    for (int i = 0; i < 8; ++i) {
      TensorRef ref;
      ref.tensor = std::make_shared<at::Tensor>(at::full({mib * (1 << 20) / 8 / 4}, static_cast<float>(seed * 100 + i)));
      tensors->dict().set(Value::string("w" + std::to_string(i)), Value::tensor(std::move(ref)));
    }
    if (kind == "file") {
      tensors->dict().set(Value::string("seed"), Value::integer(seed));
      save_torch_file(path, tensors);
    } else if (kind == "sharded") {
      ValuePtr meta = Value::plain_dict();
      meta->dict().set(Value::string("seed"), Value::integer(seed));
      sharded::SaveOptions options;
      options.checkpoint_id = path;
      sharded::save(path, tensors, meta, sharded::ShardPlan{}, nullptr, options);
    } else {
      std::fprintf(stderr, "unknown kind %s\n", kind.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
