// Issue 9 items 3-5 through the torch layer: huge DCP tensors refused before allocation, verify
// reporting storage bytes (not view bytes), and unsafe globals refused on write, listed and
// refused on weights_only reads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "jni/fabric_native.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("fabricckpt-bounded-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ValuePtr tensor_value(at::Tensor t) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(t));
  return Value::tensor(std::move(ref));
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(BoundedTorch, HugeDcpTensorIsRefusedBeforeAllocation) {
  // A real one-tensor checkpoint whose .metadata then claims size [2^40] with one chunk of [2^40]
  // (it tiles, so the metadata alone cannot tell): its 64-byte stream cannot hold 4 TiB.
  fs::path dir = temp_dir("huge");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor_value(torch::arange(16, torch::kFloat32)));
  sharded::save(dir.string(), state, nullptr, sharded::ShardPlan{}, nullptr, {});
  const fs::path metadata_file = dir / dcp::kMetadataFile;
  dcp::Metadata m = dcp::read_metadata(read_file(metadata_file), metadata_file.string());
  ASSERT_EQ(m.entries.size(), 1u);
  const int64_t huge = int64_t{1} << 40;
  m.entries[0].tensor->size = {huge};
  m.entries[0].tensor->chunks[0].sizes = {huge};
  write_file(metadata_file, dcp::write_metadata(m));

  sharded::Reader reader(dir.string(), /*map_chunks=*/false);
  auto start = std::chrono::steady_clock::now();
  try {
    reader.read_all();
    FAIL() << "a 4 TiB tensor from a small file was accepted";
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'w'"), std::string::npos) << what;
    EXPECT_NE(what.find("1099511627776 elements of 4 bytes"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  fs::remove_all(dir);
}

TEST(BoundedTorch, GapsAreRefusedWhenReadBeforeAllocation) {
  // [2^40] with no chunk at all: nothing to check against a file, the gap alone refuses it.
  fs::path dir = temp_dir("gap");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor_value(torch::arange(16, torch::kFloat32)));
  sharded::save(dir.string(), state, nullptr, sharded::ShardPlan{}, nullptr, {});
  const fs::path metadata_file = dir / dcp::kMetadataFile;
  dcp::Metadata m = dcp::read_metadata(read_file(metadata_file), metadata_file.string());
  m.entries[0].tensor->size = {int64_t{1} << 40};
  m.entries[0].tensor->chunks.clear();
  write_file(metadata_file, dcp::write_metadata(m));
  sharded::Reader reader(dir.string(), false);
  try {
    reader.read_all();
    FAIL() << "an uncovered 4 TiB tensor was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("cover 0 of the 1099511627776 elements"), std::string::npos) << e.what();
  }
  EXPECT_THROW(jni::verifyTorchFile(dir.string()), FormatError);
  fs::remove_all(dir);
}

TEST(BoundedTorch, OverlappingChunksOnDiskAreRefused) {
  // Two shards of an [8] tensor rewritten to overlap (rows 0-3 and 2-5, 4 + 4 = 8 elements, the
  // old sum check passed and rows 6-7 read as zeros).
  fs::path dir = temp_dir("overlap");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor_value(torch::arange(8, torch::kFloat32)));
  sharded::save(dir.string(), state, nullptr, sharded::ShardPlan{}, nullptr, {});
  const fs::path metadata_file = dir / dcp::kMetadataFile;
  dcp::Metadata m = dcp::read_metadata(read_file(metadata_file), metadata_file.string());
  auto& chunks = m.entries[0].tensor->chunks;
  chunks = {{{0}, {4}}, {{2}, {4}}};
  auto storage = m.storage[0];
  m.storage.clear();
  for (const auto& c : chunks) {
    auto s = storage;
    s.first.offset = c.offsets;
    s.second.offset = static_cast<uint64_t>(c.offsets[0]) * 1000;
    m.storage.push_back(s);
  }
  write_file(metadata_file, dcp::write_metadata(m));
  try {
    sharded::Reader reader(dir.string(), false);
    FAIL() << "overlapping chunks accepted";
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("tensor 'w': chunks 0 (offsets [0] sizes [4]) and 1 (offsets [2] sizes [4]) overlap"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(".metadata"), std::string::npos) << what;
  }
  EXPECT_THROW(jni::verifyTorchFile(dir.string()), FormatError);
  fs::remove_all(dir);
}

TEST(BoundedTorch, VerifyCountsStorageBytesNotViewBytes) {
  fs::path dir = temp_dir("stride0");
  const fs::path file = dir / "expand.pt";
  ValuePtr state = Value::plain_dict();
  // 2^40 elements viewing one float: 4 TiB as "tensor bytes", 4 bytes of storage.
  state->dict().set(Value::string("e"), tensor_value(torch::ones({1}).expand({int64_t{1} << 40})));
  state->dict().set(Value::string("w"), tensor_value(torch::zeros({4, 4})));
  save_torch_file(file.string(), state);
  const std::string summary = jni::verifyTorchFile(file.string());
  EXPECT_NE(summary.find("2 tensors over 2 storages of 68 bytes"), std::string::npos) << summary;
  EXPECT_EQ(summary.find("WARNING"), std::string::npos) << summary;
  fs::remove_all(dir);
}

ValuePtr namespace_state() {
  ValuePtr state = Value::plain_dict();
  Object ns;
  ns.construct = Object::Construct::NewObj;
  ns.callable = Value::global("argparse", "Namespace");
  ns.args = Value::tuple();
  ns.state = Value::plain_dict();
  ns.state->dict().set(Value::string("lr"), Value::floating(0.1));
  state->dict().set(Value::string("hparams"), Value::object(std::move(ns)));
  Object call;
  call.callable = Value::global("posix", "system");
  call.args = Value::tuple({Value::string("echo hi")});
  state->dict().set(Value::string("cb"), Value::list({Value::object(std::move(call))}));
  state->dict().set(Value::string("w"), tensor_value(torch::ones({2})));
  return state;
}

TEST(UnsafeGlobals, WritesAreRefusedUnlessAllowed) {
  fs::path dir = temp_dir("unsafe");
  const fs::path file = dir / "out.ckpt";
  try {
    save_torch_file(file.string(), namespace_state());
    FAIL() << "unsafe globals written";
  } catch (const UnsafeGlobalsError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.string()), std::string::npos) << what;
    EXPECT_NE(what.find("argparse.Namespace at ['hparams']"), std::string::npos) << what;
    EXPECT_NE(what.find("posix.system at ['cb'][0]"), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(file));  // nothing written, no temp file left
  EXPECT_TRUE(fs::is_empty(dir));

  TorchSaveOptions allow;
  allow.allow_unsafe_globals = true;
  save_torch_file(file.string(), namespace_state(), allow);
  EXPECT_EQ(unsafe_globals_of_file(file.string()), (std::vector<std::string>{"argparse.Namespace", "posix.system"}));
  const std::string summary = jni::verifyTorchFile(file.string());
  EXPECT_NE(summary.find("WARNING: 2 globals that torch.load(weights_only=True) refuses"), std::string::npos) << summary;
  EXPECT_NE(summary.find("argparse.Namespace, posix.system"), std::string::npos) << summary;

  // Read inertly by default; refused in weights_only mode, naming them.
  EXPECT_TRUE(load_torch_file(file.string()).root->dict().get("hparams")->is(Kind::Object));
  TorchLoadOptions weights_only;
  weights_only.weights_only = true;
  try {
    load_torch_file(file.string(), weights_only);
    FAIL() << "weights_only load accepted unsafe globals";
  } catch (const UnsafeGlobalsError& e) {
    EXPECT_NE(std::string(e.what()).find("argparse.Namespace, posix.system"), std::string::npos) << e.what();
  }
  // A safe file loads in weights_only mode.
  ValuePtr safe = Value::plain_dict();
  safe->dict().set(Value::string("w"), tensor_value(torch::ones({3}, torch::kBFloat16)));
  safe->dict().set(Value::string("p"), [] {
    TensorRef p;
    p.tensor = std::make_shared<at::Tensor>(torch::ones({2}));
    p.is_parameter = true;
    return Value::tensor(std::move(p));
  }());
  safe->dict().set(Value::string("od"), Value::ordered_dict());
  safe->dict().set(Value::string("dtype"), Value::global("torch", "float16"));
  save_torch_file(file.string(), safe);
  EXPECT_NO_THROW(load_torch_file(file.string(), weights_only));
  EXPECT_TRUE(unsafe_globals_of_file(file.string()).empty());
  fs::remove_all(dir);
}

TEST(UnsafeGlobals, TensorsOfEveryDtypeNeedNoOptIn) {
  // What the torch layer emits for tensors (rebuild functions, storage classes, dtypes) is all
  // on torch's allowlist.
  ValuePtr state = Value::plain_dict();
  for (auto dtype : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16, torch::kInt64, torch::kInt32,
                     torch::kInt16, torch::kInt8, torch::kUInt8, torch::kBool, torch::kComplexFloat,
                     torch::kComplexDouble, torch::kUInt16, torch::kUInt32, torch::kUInt64, torch::kFloat8_e4m3fn,
                     torch::kFloat8_e5m2}) {
    state->dict().set(Value::string(std::string(c10::toString(dtype))), tensor_value(torch::zeros({2}, dtype)));
  }
  StringSink sink;
  write_torch_save(sink, state, "archive");
  fs::path dir = temp_dir("dtypes");
  write_file(dir / "d.pt", sink.str());
  EXPECT_TRUE(unsafe_globals_of_file((dir / "d.pt").string()).empty());
  fs::remove_all(dir);
}

TEST(UnsafeGlobals, ShardedSavesRefuseBeforeTouchingTheDirectory) {
  fs::path dir = temp_dir("sharded-unsafe");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor_value(torch::ones({2})));
  sharded::save(dir.string(), state, nullptr, sharded::ShardPlan{}, nullptr, {});
  const std::string before = read_file(dir / dcp::kMetadataFile);
  EXPECT_THROW(sharded::save(dir.string(), state, namespace_state(), sharded::ShardPlan{}, nullptr, {}),
               UnsafeGlobalsError);
  EXPECT_EQ(read_file(dir / dcp::kMetadataFile), before);  // the old checkpoint is untouched
  sharded::SaveOptions allow;
  allow.allow_unsafe_globals = true;
  ValuePtr values = Value::plain_dict();
  values->dict().set(Value::string("w"), tensor_value(torch::ones({2})));
  values->dict().set(Value::string("tags"), Value::frozenset({Value::string("x")}));
  sharded::save(dir.string(), values, namespace_state(), sharded::ShardPlan{}, nullptr, allow);
  EXPECT_EQ(unsafe_globals_of_sharded(dir.string()),
            (std::vector<std::string>{"argparse.Namespace", "posix.system", "builtins.frozenset"}));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fabricckpt
