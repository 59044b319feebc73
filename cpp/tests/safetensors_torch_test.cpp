// safetensors files as tensors: state trees flattened and written, read back eagerly and mapped.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/torch_save.h"

namespace fs = std::filesystem;
using namespace fabricckpt;

namespace {

ValuePtr tensor(const at::Tensor& t) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(t);
  return Value::tensor(std::move(ref));
}

class SafetensorsTorch : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fabricckpt_st_torch_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const char* name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

const at::Tensor& tensor_at(const ValuePtr& root, const char* key) {
  const ValuePtr v = root->dict().get(key);
  if (!v) throw std::runtime_error(std::string("missing ") + key);
  return *v->tensor_ref().tensor;
}

}  // namespace

TEST_F(SafetensorsTorch, FlattensAStateAndReadsItBackEagerlyAndMapped) {
  ValuePtr model = Value::ordered_dict();
  const at::Tensor weight = torch::arange(12, torch::kFloat32).reshape({3, 4});
  model->dict().set(Value::string("layer.weight"), tensor(weight.t()));  // not contiguous: written as contiguous
  model->dict().set(Value::string("layer.bias"), tensor(torch::ones({3}, torch::kBFloat16)));
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("model"), model);
  ValuePtr extra = Value::plain_dict();
  extra->dict().set(Value::integer(0), tensor(torch::tensor({true, false})));
  extra->dict().set(Value::string("scalar"), tensor(torch::tensor(2.5, torch::kFloat64)));
  extra->dict().set(Value::string("empty"), tensor(torch::empty({0, 5}, torch::kInt64)));
  extra->dict().set(Value::string("f8"), tensor(torch::zeros({4}).to(torch::kFloat8_e4m3fn)));
  state->dict().set(Value::string("extra"), extra);
  state->dict().set(Value::string("note"), Value::string("trained in Java"));
  save_safetensors_file(path("m.safetensors"), state, false);

  const auto file = MappedFile::open(path("m.safetensors"));
  const auto header = safetensors::read_header(*file);
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ(header.metadata->at(0), (std::pair<std::string, std::string>{"note", "trained in Java"}));
  EXPECT_EQ(header.tensors.size(), 6u);

  for (const bool mmap : {false, true}) {
    TorchLoadOptions options;
    options.mmap = mmap;
    const ValuePtr root = load_safetensors_file(path("m.safetensors"), options);
    ASSERT_EQ(root->dict().size(), 6u);
    EXPECT_TRUE(tensor_at(root, "model.layer.weight").equal(weight.t().contiguous()));
    EXPECT_TRUE(tensor_at(root, "model.layer.bias").equal(torch::ones({3}, torch::kBFloat16)));
    EXPECT_TRUE(tensor_at(root, "extra.0").equal(torch::tensor({true, false})));
    EXPECT_EQ(tensor_at(root, "extra.scalar").dim(), 0);
    EXPECT_EQ(tensor_at(root, "extra.scalar").item<double>(), 2.5);
    EXPECT_EQ(tensor_at(root, "extra.empty").sizes(), (std::vector<int64_t>{0, 5}));
    EXPECT_EQ(tensor_at(root, "extra.f8").scalar_type(), torch::kFloat8_e4m3fn);
    // The first key is the first tensor in the data: the dtype last in the crate's order (I64).
    EXPECT_EQ(root->dict().items()[0].first->as_string(), "extra.empty");
  }
}

TEST_F(SafetensorsTorch, MappedTensorsViewTheFileAndNeverWriteIt) {
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor(torch::full({1 << 20}, 3.0f)));
  save_safetensors_file(path("big.safetensors"), state, false);
  TorchLoadOptions options;
  options.mmap = true;
  const ValuePtr root = load_safetensors_file(path("big.safetensors"), options);
  at::Tensor w = tensor_at(root, "w");
  EXPECT_EQ(w.sum().item<float>(), 3.0f * (1 << 20));
  w.fill_(7.0f);  // copy-on-write: stays in this process
  const ValuePtr again = load_safetensors_file(path("big.safetensors"));
  EXPECT_EQ(tensor_at(again, "w")[0].item<float>(), 3.0f);
}

TEST_F(SafetensorsTorch, FileLayoutIsTheSavedFileAndLoadsInPlaceFromMemory) {
  for (const bool strings : {false, true}) {
    ValuePtr model = Value::ordered_dict();
    model->dict().set(Value::string("fc.weight"), tensor(torch::randn({64, 33}).t()));  // made contiguous
    model->dict().set(Value::string("fc.bias"), tensor(torch::arange(64, torch::kBFloat16)));
    ValuePtr state = Value::plain_dict();
    state->dict().set(Value::string("model"), model);
    state->dict().set(Value::string("odd"), tensor(torch::ones({3}, torch::kUInt8)));  // leaves later data unaligned
    state->dict().set(Value::string("step"), tensor(torch::tensor(7, torch::kInt64)));
    if (strings) state->dict().set(Value::string("note"), Value::string("trained in Java"));
    save_safetensors_file(path("saved.safetensors"), state, false);
    std::string saved;
    {
      std::ifstream in(path("saved.safetensors"), std::ios::binary);
      saved.assign(std::istreambuf_iterator<char>(in), {});
    }

    const auto layout = SafetensorsLayout::of_file(state, "s3://bucket/saved.safetensors");
    ASSERT_EQ(layout->size(), saved.size());
    std::string parts(saved.size(), '\0');
    for (uint64_t at = 0; at < parts.size(); at += 1000) {  // parts that cut the header and the tensors
      const size_t n = static_cast<size_t>(std::min<uint64_t>(1000, parts.size() - at));
      layout->fill(at, parts.data() + at, n);
    }
    EXPECT_EQ(parts, saved) << "strings " << strings;
    EXPECT_THROW(layout->fill(saved.size() - 1, parts.data(), 2), FormatError);

    const auto memory = MappedFile::anonymous(saved.size(), "s3://bucket/saved.safetensors");
    std::memcpy(memory->mutable_data(), saved.data(), saved.size());
    const ValuePtr root = load_safetensors_bytes(memory);
    const ValuePtr expected = load_safetensors_file(path("saved.safetensors"));
    ASSERT_EQ(root->dict().size(), expected->dict().size());
    for (size_t i = 0; i < root->dict().size(); ++i) {
      const auto& [key, value] = root->dict().items()[i];
      EXPECT_EQ(key->as_string(), expected->dict().items()[i].first->as_string());
      EXPECT_TRUE(value->tensor_ref().tensor->equal(*expected->dict().items()[i].second->tensor_ref().tensor));
    }
    // The aligned tensors view the memory (no copy); the loaded tree keeps it alive.
    const auto* weight = static_cast<const uint8_t*>(tensor_at(root, "model.fc.weight").const_data_ptr());
    EXPECT_TRUE(weight >= memory->data() && weight < memory->data() + memory->size());
  }
  EXPECT_THROW(load_safetensors_bytes(MappedFile::from_bytes("x", "read-only")), Error);
}

// The Hugging Face layout planned for object storage: the shards and index a local index save
// writes (tied weights kept once, the string in the index's metadata), and the index read back from
// memory as the local index reads.
TEST_F(SafetensorsTorch, IndexLayoutIsTheLocalIndexSaveAndLoadsFromMemory) {
  const at::Tensor embed = torch::randn({64, 16});
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("embed.weight"), tensor(embed));
  state->dict().set(Value::string("lm_head.weight"), tensor(embed));  // tied: one storage
  state->dict().set(Value::string("layer.w"), tensor(torch::randn({32, 32}, torch::kFloat64)));
  state->dict().set(Value::string("layer.b"), tensor(torch::arange(32, torch::kBFloat16)));
  state->dict().set(Value::string("note"), Value::string("v1"));
  fs::create_directories(dir_ / "hf");
  const std::string index_path = (dir_ / "hf" / "model.safetensors.index.json").string();
  save_safetensors_file(index_path, state, false, nullptr, 6000);
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };

  const SafetensorsIndexLayout layout(state, "s3://bucket/hf/model.safetensors.index.json", 6000);
  ASSERT_GE(layout.shard_count(), 2u);
  std::vector<std::shared_ptr<const MappedFile>> shards;
  for (size_t i = 0; i < layout.shard_count(); ++i) {
    const std::string file = slurp(dir_ / "hf" / layout.shard_name(i));
    ASSERT_EQ(layout.shard_size(i), file.size()) << layout.shard_name(i);
    const auto memory = MappedFile::anonymous(file.size(), layout.shard_name(i));
    for (uint64_t at = 0; at < file.size(); at += 777) {
      layout.fill(i, at, memory->mutable_data() + at, static_cast<size_t>(std::min<uint64_t>(777, file.size() - at)));
    }
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(memory->data()), memory->size()), file) << layout.shard_name(i);
    shards.push_back(memory);
  }
  EXPECT_EQ(layout.index_json(), slurp(index_path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "hf"), fs::directory_iterator{}),
            static_cast<long>(layout.shard_count() + 1));

  const auto index = safetensors::parse_index(layout.index_json(), "s3://bucket/hf/model.safetensors.index.json");
  const ValuePtr loaded = load_safetensors_index_bytes(index, "s3://bucket/hf/model.safetensors.index.json", shards);
  const ValuePtr expected = load_safetensors_file(index_path);
  ASSERT_EQ(loaded->dict().size(), expected->dict().size());
  for (size_t i = 0; i < loaded->dict().size(); ++i) {
    EXPECT_EQ(loaded->dict().items()[i].first->as_string(), expected->dict().items()[i].first->as_string());
  }
  EXPECT_TRUE(tensor_at(loaded, "embed.weight").equal(embed));
  EXPECT_THROW(load_safetensors_index_bytes(index, "s3://bucket/hf/model.safetensors.index.json", {}), Error);
  EXPECT_THROW(SafetensorsIndexLayout(state, "s3://bucket/hf/model.safetensors", 6000), StateError);
}

TEST_F(SafetensorsTorch, RefusesWhatSafetensorsCannotHoldNamingEveryKey) {
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor(torch::ones({2})));
  state->dict().set(Value::string("step"), Value::integer(7));
  ValuePtr groups = Value::plain_dict();
  groups->dict().set(Value::string("lr"), Value::floating(0.1));
  state->dict().set(Value::string("opt"), groups);
  state->dict().set(Value::string("list"), Value::list({}));
  try {
    save_safetensors_file(path("no.safetensors"), state, false);
    FAIL() << "no error";
  } catch (const StateError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("step (int)"), std::string::npos) << message;
    EXPECT_NE(message.find("opt.lr (float)"), std::string::npos) << message;
    EXPECT_NE(message.find("list (list)"), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(path("no.safetensors")));
  // "a.b" twice once flattened.
  ValuePtr clash = Value::plain_dict();
  ValuePtr a = Value::plain_dict();
  a->dict().set(Value::string("b"), tensor(torch::ones({1})));
  clash->dict().set(Value::string("a"), a);
  clash->dict().set(Value::string("a.b"), tensor(torch::ones({1})));
  EXPECT_THROW(save_safetensors_file(path("clash.safetensors"), clash, false), StateError);
}

TEST_F(SafetensorsTorch, DtypesWithoutATorchTypeAreAFormatErrorNamingTheTensor) {
  const uint8_t bytes[3] = {};
  std::vector<safetensors::TensorData> tensors = {{"f6", safetensors::Dtype::F6_E2M3, {4}, bytes, 3}};
  safetensors::write_file(path("f6.safetensors"), tensors, {}, false);
  try {
    load_safetensors_file(path("f6.safetensors"));
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'f6' has dtype F6_E2M3"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTorch, ShardedIndexGivesEveryShardsTensorsAndChecksTheMap) {
  ValuePtr first = Value::plain_dict();
  first->dict().set(Value::string("a"), tensor(torch::ones({2})));
  ValuePtr second = Value::plain_dict();
  second->dict().set(Value::string("b"), tensor(torch::full({3}, 2.0)));
  save_safetensors_file(path("model-00001-of-00002.safetensors"), first, false);
  save_safetensors_file(path("model-00002-of-00002.safetensors"), second, false);
  auto write_index = [&](const std::string& text) {
    std::ofstream(path("model.safetensors.index.json")) << text;
  };
  write_index(R"({"metadata": {"total_size": 20}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                 "b": "model-00002-of-00002.safetensors"}})");
  EXPECT_EQ(safetensors_index_of(dir_.string()), path("model.safetensors.index.json"));
  for (const std::string& where : {dir_.string(), path("model.safetensors.index.json")}) {
    const ValuePtr root = load_safetensors_file(where);
    ASSERT_EQ(root->dict().size(), 2u);
    EXPECT_TRUE(tensor_at(root, "b").equal(torch::full({3}, 2.0)));
  }
  write_index(R"({"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  try {
    load_safetensors_file(dir_.string());
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("maps tensor 'a' to model-00002-of-00002.safetensors"), std::string::npos)
        << e.what();
  }
}

TEST_F(SafetensorsTorch, EmbeddedSafetensorsAfterOtherBytesAsDcpWritesThem) {
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("model.w"), tensor(torch::arange(6, torch::kFloat32)));
  save_safetensors_file(path("blob.safetensors"), state, false);
  std::ifstream in(path("blob.safetensors"), std::ios::binary);
  const std::string blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string prefix = "PK\x03\x04 a torch.save stream of another item";
  std::ofstream(path("__0_0.distcp"), std::ios::binary) << prefix << blob;
  for (const bool mmap : {false, true}) {
    const auto file = mmap ? MappedFile::open_private(path("__0_0.distcp")) : MappedFile::open(path("__0_0.distcp"));
    EXPECT_FALSE(safetensors::looks_like_safetensors(*file, 0));
    ASSERT_TRUE(safetensors::looks_like_safetensors(*file, prefix.size()));
    const ValuePtr w = load_embedded_safetensor(file, prefix.size(), "model.w", mmap);
    EXPECT_TRUE(w->tensor_ref().tensor->equal(torch::arange(6, torch::kFloat32)));
    EXPECT_THROW(load_embedded_safetensor(file, prefix.size(), "model.x", mmap), FormatError);
  }
}

// The torch-free outline of a safetensors file (outline.h, what the command line reads) is the tree the
// libtorch reader gives: converted to torch.save, both give the same bytes; a sharded index too.
TEST_F(SafetensorsTorch, OutlinesConvertToTheBytesOfTheLibrarysConvert) {
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor(torch::arange(12, torch::kFloat32).reshape({3, 4})));
  state->dict().set(Value::string("b"), tensor(torch::ones({3}, torch::kBFloat16)));
  state->dict().set(Value::string("u16"), tensor(torch::arange(5, torch::kInt32).to(torch::kUInt16)));  // no storage class
  state->dict().set(Value::string("mask"), tensor(torch::tensor({true, false})));
  state->dict().set(Value::string("scalar"), tensor(torch::tensor(2.5, torch::kFloat64)));
  state->dict().set(Value::string("empty"), tensor(torch::empty({0, 5}, torch::kInt64)));
  state->dict().set(Value::string("f8"), tensor(torch::zeros({4}).to(torch::kFloat8_e4m3fn)));
  save_safetensors_file(path("m.safetensors"), state, false);
  ValuePtr second = Value::plain_dict();
  second->dict().set(Value::string("z"), tensor(torch::full({2, 2}, 3.0)));
  save_safetensors_file(path("m2.safetensors"), second, false);
  std::ofstream(path("model.safetensors.index.json"))
      << R"({"metadata": {"total_size": 1}, "weight_map": {"z": "m2.safetensors", "w": "m.safetensors"}})";

  for (const std::string& source : {path("m.safetensors"), path("model.safetensors.index.json")}) {
    const FileOutline outline = read_file_outline(source);
    EXPECT_EQ(outline.format, OutlineFormat::Safetensors);
    TorchSaveOptions options;
    options.archive_name = "archive";
    save_torch_file(path("by_library.ckpt"), load_safetensors_file(source), options);
    convert_outline(source, path("by_outline.ckpt"), /*allow_unsafe_globals=*/false);
    const auto a = MappedFile::open(path("by_library.ckpt")), b = MappedFile::open(path("by_outline.ckpt"));
    ASSERT_EQ(a->size(), b->size()) << source;
    EXPECT_EQ(a->read_string(0, a->size()), b->read_string(0, b->size())) << source;
  }
  EXPECT_NE(verify_outline(path("m.safetensors")).find("ok: safetensors, 7 tensors"), std::string::npos);
  EXPECT_TRUE(unsafe_globals_of_file(path("m.safetensors")).empty());

  // Compared with the torch.save file of the same tensors, element by element: equal.
  const FileOutline st = read_file_outline(path("m.safetensors"));
  const FileOutline zip = read_file_outline(path("by_outline.ckpt"));  // the index's: z then w
  const auto w_zip = tensor_of(*zip.root->dict().get("w"));
  const auto w_st = tensor_of(*st.root->dict().get("w"));
  ASSERT_TRUE(w_zip && w_st);
  EXPECT_EQ(max_abs_difference(*w_st, *w_zip), 0.0);
}

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files[entry.path().filename().string()] = slurp(entry.path());
  return files;
}

}  // namespace

// The command line's convert to safetensors (torch-free, outline.h) writes the bytes of the library's
// (the torch.save file loaded, then save_safetensors_file): one file, and a Hugging Face index whose
// split counts a non-contiguous tensor's copy as a storage of its own and keeps one of tied weights.
TEST_F(SafetensorsTorch, OutlinesWriteTheSafetensorsOfTheLibrarysConvert) {
  const at::Tensor embed = torch::randn({16, 8});
  ValuePtr layer = Value::ordered_dict();
  layer->dict().set(Value::string("weight"), tensor(torch::randn({6, 5}).t()));  // not contiguous
  layer->dict().set(Value::string("bias"), tensor(torch::arange(7, torch::kBFloat16)));
  ValuePtr blocks = Value::plain_dict();
  blocks->dict().set(Value::integer(0), tensor(torch::ones({3, 1, 2}, torch::kInt64).expand({3, 4, 2})));  // stride 0
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("layer"), layer);
  state->dict().set(Value::string("mask"), tensor(torch::tensor({true, false, true})));
  state->dict().set(Value::string("empty"), tensor(torch::empty({0, 3})));
  state->dict().set(Value::string("scalar"), tensor(torch::tensor(2.5, torch::kFloat64)));
  state->dict().set(Value::string("big"), tensor(torch::full({300000}, 7.25f)));  // streamed in pieces
  state->dict().set(Value::string("note"), Value::string("v1 \u00e9"));
  ValuePtr single = Value::plain_dict();
  for (const auto& [k, v] : state->dict().items()) single->dict().set(k, v);
  single->dict().set(Value::string("blocks"), blocks);  // an expanded view: refused in an index
  single->dict().set(Value::string("part"), tensor(torch::arange(10.0).slice(0, 2, 5)));  // a view
  TorchSaveOptions options;
  options.archive_name = "archive";
  save_torch_file(path("single.ckpt"), single, options);

  save_safetensors_file(path("library.safetensors"), load_torch_file(path("single.ckpt")).root, false);
  convert_outline_to_safetensors(path("single.ckpt"), /*sharded=*/false, path("outline.safetensors"));
  EXPECT_EQ(slurp(path("outline.safetensors")), slurp(path("library.safetensors")));
  StringSink stream;
  convert_outline_to_safetensors(path("single.ckpt"), false, stream, "s3://bucket/outline.safetensors");
  EXPECT_EQ(stream.str(), slurp(path("library.safetensors")));

  // Tied weights: refused in one file (naming both), one kept in an index.
  state->dict().set(Value::string("embed.weight"), tensor(embed));
  state->dict().set(Value::string("lm_head.weight"), tensor(embed));
  save_torch_file(path("tied.ckpt"), state, options);
  try {
    convert_outline_to_safetensors(path("tied.ckpt"), false, path("tied.safetensors"));
    FAIL() << "no error";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("share memory (embed.weight, lm_head.weight)"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path("tied.safetensors")));
  fs::create_directories(dir_ / "library");
  fs::create_directories(dir_ / "outline");
  std::ofstream(dir_ / "outline" / "model.safetensors") << "stale";  // an earlier save's: removed
  save_safetensors_file((dir_ / "library" / "model.safetensors.index.json").string(),
                        load_torch_file(path("tied.ckpt")).root, false, nullptr, 600);
  convert_outline_to_safetensors(path("tied.ckpt"), false, (dir_ / "outline" / "model.safetensors.index.json").string(),
                                 600);
  const auto expected = files_of(dir_ / "library");
  EXPECT_GE(expected.size(), 4u);
  EXPECT_EQ(files_of(dir_ / "outline"), expected);

  // Planned for object storage: the same shards, each written once in order, and the same index.
  const SafetensorsIndexOutline planned(path("tied.ckpt"), false, "s3://bucket/hf/model.safetensors.index.json", 600);
  ASSERT_EQ(planned.shard_count() + 1, expected.size());
  for (size_t i = 0; i < planned.shard_count(); ++i) {
    StringSink shard;
    planned.write_shard(i, shard);
    ASSERT_TRUE(expected.count(planned.shard_name(i))) << planned.shard_name(i);
    EXPECT_EQ(shard.str().size(), planned.shard_size(i));
    EXPECT_EQ(shard.str(), expected.at(planned.shard_name(i))) << planned.shard_name(i);
  }
  EXPECT_EQ(planned.index_json(), expected.at("model.safetensors.index.json"));
  EXPECT_THROW(SafetensorsIndexOutline(path("tied.ckpt"), false, "s3://bucket/hf/model.safetensors"), StateError);
}

namespace {

// Bytes this process has read with read()/pread() so far (/proc/self/io's rchar), from the page cache
// or not.
uint64_t bytes_read_so_far() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  ADD_FAILURE() << "no rchar in /proc/self/io";
  return 0;
}

}  // namespace

// Views of one storage (a fused weight split into q, k, v, o) are each written from its record, whose
// CRC-32 the first checks: the record is read about once, not once per view (4 times).
TEST_F(SafetensorsTorch, OutlinesReadARecordThatManyTensorsViewOnceForItsCrc) {
  const at::Tensor fused = torch::randn({4, 1 << 18});
  ValuePtr state = Value::plain_dict();
  const char* names[] = {"q", "k", "v", "o"};
  for (int64_t i = 0; i < 4; ++i) state->dict().set(Value::string(names[i]), tensor(fused[i]));
  TorchSaveOptions options;
  options.archive_name = "archive";
  save_torch_file(path("fused.ckpt"), state, options);
  save_safetensors_file(path("library.safetensors"), load_torch_file(path("fused.ckpt")).root, false);

  const uint64_t before = bytes_read_so_far();
  convert_outline_to_safetensors(path("fused.ckpt"), false, path("outline.safetensors"));
  const uint64_t read = bytes_read_so_far() - before;
  EXPECT_EQ(slurp(path("outline.safetensors")), slurp(path("library.safetensors")));
  const uint64_t record = fused.nbytes();
  EXPECT_GE(read, record);
  EXPECT_LT(read, 2 * record) << read << " bytes read for a record of " << record;
}

TEST_F(SafetensorsTorch, OutlinesRefuseAsTheLibraryAndCheckEveryRecordsCrc) {
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("w"), tensor(torch::full({1000}, 7.25f)));
  state->dict().set(Value::string("step"), Value::integer(7));
  state->dict().set(Value::string("c"), tensor(torch::zeros({2}, torch::kComplexDouble)));
  TorchSaveOptions options;
  options.archive_name = "archive";
  save_torch_file(path("unfit.ckpt"), state, options);
  std::string library, outline;
  try {
    save_safetensors_file(path("x.safetensors"), load_torch_file(path("unfit.ckpt")).root, false);
  } catch (const StateError& e) {
    library = e.what();
  }
  try {
    convert_outline_to_safetensors(path("unfit.ckpt"), false, path("x.safetensors"));
  } catch (const StateError& e) {
    outline = e.what();
  }
  EXPECT_NE(outline.find("step (int), c (a ComplexDouble Strided tensor on cpu)"), std::string::npos) << outline;
  EXPECT_EQ(outline, library);
  EXPECT_FALSE(fs::exists(path("x.safetensors")));

  // A byte of w's record changed: its CRC-32 fails while it is copied, and nothing is written.
  ValuePtr good = Value::plain_dict();
  good->dict().set(Value::string("w"), tensor(torch::full({1000}, 7.25f)));
  save_torch_file(path("bad.ckpt"), good, options);
  std::string bytes = slurp(path("bad.ckpt"));
  float value = 7.25f;
  const size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&value), 4));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 400] ^= 1;
  std::ofstream(path("bad.ckpt"), std::ios::binary) << bytes;
  try {
    convert_outline_to_safetensors(path("bad.ckpt"), false, path("bad.safetensors"));
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.ckpt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path("bad.safetensors")));
}
