// Sharded checkpoints in one process (no process group): reading what torch.distributed.checkpoint
// wrote (python-compat-tests/fixtures/make_dcp_fixtures.py), resharded reads, and saves.
// Multi-process saves run in the JUnit and pytest suites (real JVMs over c10d).
#include "fabricckpt/sharded.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/torch_save.h"

namespace fabricckpt::sharded {
namespace {

namespace fs = std::filesystem;
const std::string kData = std::string(FABRICCKPT_TEST_DATA) + "/dcp/";

// Deep equality of two trees: same structure, equal plain values, equal tensors (dtype and values).
void expect_same(const Value& a, const Value& b, const std::string& where) {
  ASSERT_EQ(a.kind, b.kind) << where;
  switch (a.kind) {
    case Kind::Tensor: {
      const at::Tensor& x = *a.tensor_ref().tensor;
      const at::Tensor& y = *b.tensor_ref().tensor;
      EXPECT_EQ(x.scalar_type(), y.scalar_type()) << where;
      EXPECT_TRUE(x.sizes() == y.sizes() && x.equal(y)) << where;
      break;
    }
    case Kind::Dict: {
      ASSERT_EQ(a.dict().size(), b.dict().size()) << where;
      for (size_t i = 0; i < a.dict().size(); ++i) {
        const auto& [ka, va] = a.dict().items()[i];
        ASSERT_TRUE(keys_equal(*ka, *b.dict().items()[i].first)) << where;
        expect_same(*va, *b.dict().items()[i].second, where + "/" + describe(*ka));
      }
      break;
    }
    case Kind::List:
    case Kind::Tuple:
      ASSERT_EQ(a.items().size(), b.items().size()) << where;
      for (size_t i = 0; i < a.items().size(); ++i) expect_same(*a.items()[i], *b.items()[i], where + "/" + std::to_string(i));
      break;
    default:
      EXPECT_TRUE(keys_equal(a, b)) << where << ": " << describe(a) << " vs " << describe(b);
  }
}

ValuePtr tensor(at::Tensor t) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(t));
  return Value::tensor(std::move(ref));
}

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("fabricckpt-sharded-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

TEST(ShardedReader, ReadsWhatDcpToTorchSaveGives) {
  Reader reader(kData + "single");
  ValuePtr python = load_torch_file(kData + "single.pt").root;
  ValuePtr ours = reader.read_all();
  // dcp_to_torch_save orders keys as Python's loader met them; compare per key.
  ASSERT_EQ(ours->dict().size(), python->dict().size());
  for (const auto& [k, v] : python->dict().items()) {
    ValuePtr mine = ours->dict().get(*k);
    ASSERT_TRUE(mine) << describe(*k);
    expect_same(*mine, *v, describe(*k));
  }
  EXPECT_EQ(reader.top_level_keys(), (std::vector<std::string>{"model", "optimizer", "epoch", "tensors", "names"}));
}

TEST(ShardedReader, ReadsTheRegionOfAShard) {
  Reader reader(kData + "single");
  ShardPlan plan;
  plan.add_parameter("model", "fc.weight", Placement{{4, 3}, {1, 1}, {2, 2}});
  plan.add_optimizer("optimizer", "model");
  ValuePtr model = reader.read("model", plan);
  at::Tensor weight = *model->dict().get("fc.weight")->tensor_ref().tensor;
  at::Tensor full = at::arange(12, at::kFloat).reshape({4, 3});
  EXPECT_TRUE(weight.equal(full.narrow(0, 1, 2).narrow(1, 1, 2)));
  // The optimizer state of that parameter follows its placement; its step (0-dim) stays whole.
  ValuePtr optimizer = reader.read("optimizer", plan);
  ValuePtr per_param = optimizer->dict().get("state")->dict().get("fc.weight");
  EXPECT_EQ(per_param->dict().get("exp_avg")->tensor_ref().tensor->sizes(), at::IntArrayRef({2, 2}));
  EXPECT_EQ(per_param->dict().get("step")->tensor_ref().tensor->item<float>(), 3.0f);
  EXPECT_EQ(reader.read("absent", plan), nullptr);

  // A rank beyond the rows (torch.chunk gives it nothing) gets an empty shard.
  ShardPlan empty;
  empty.add_parameter("model", "fc.weight", Placement{{4, 3}, {4, 0}, {0, 3}});
  EXPECT_EQ(reader.read("model", empty)->dict().get("fc.weight")->tensor_ref().tensor->sizes(),
            at::IntArrayRef({0, 3}));
}

TEST(ShardedReader, MissingMetadataIsNotACheckpoint) {
  fs::path dir = temp_dir("empty");
  fs::create_directories(dir);
  try {
    Reader reader(dir.string());
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(".metadata"), std::string::npos);
  }
  EXPECT_FALSE(is_sharded_checkpoint(dir.string()));
  EXPECT_TRUE(is_sharded_checkpoint(kData + "single"));
  fs::remove_all(dir);
}

TEST(ShardedReader, TruncatedDataFileIsReportedWithItsName) {
  fs::path dir = temp_dir("truncated");
  fs::copy(kData + "single", dir, fs::copy_options::recursive);
  fs::resize_file(dir / "__0_0.distcp", 100);
  Reader reader(dir.string());
  try {
    reader.read_all();
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("__0_0.distcp"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// The library's verify of a sharded directory is the format layer's (bounded memory, item by item).
TEST(ShardedReader, VerifyChecksEveryItem) {
  std::string summary = verify_sharded_outline(kData + "single");
  EXPECT_EQ(summary.rfind("OK: sharded checkpoint, 13 keys (7 tensors in 7 chunks, 6 values), 1 shard files", 0), 0u)
      << summary;
  fs::path dir = temp_dir("verify");
  fs::copy(kData + "single", dir, fs::copy_options::recursive);
  fs::resize_file(dir / "__0_0.distcp", fs::file_size(dir / "__0_0.distcp") - 1);
  EXPECT_THROW(verify_sharded_outline(dir.string()), FormatError);
  fs::remove_all(dir);
}

// What object storage fetches for a read (ranges_for): with only those bytes of the shard files in
// place (the rest zeros, as a sparse staging file), the read gives what it gives from the whole files.
TEST(ShardedReader, TheRangesOfAReadAreAllItReads) {
  fs::path dir = temp_dir("ranges");
  fs::create_directories(dir);
  Reader whole(kData + "single");
  ShardPlan plan;
  plan.add_parameter("model", "fc.weight", Placement{{4, 3}, {1, 1}, {2, 2}});
  plan.add_optimizer("optimizer", "model");
  std::map<std::string, std::string> staged;  // file -> its bytes where fetched, zeros elsewhere
  uint64_t fetched = 0;
  for (const auto& e : fs::directory_iterator(kData + "single")) {
    const std::string name = e.path().filename().string();
    const std::string bytes = MappedFile::open(e.path().string())->read_string(0, fs::file_size(e.path()));
    staged[name] = name == ".metadata" ? bytes : std::string(bytes.size(), '\0');
  }
  for (const std::string key : {"model", "optimizer"}) {
    for (const auto& r : whole.ranges_for(&key, &plan)) {
      const std::string file = (fs::path(kData + "single") / r.relative_path).string();
      staged.at(r.relative_path).replace(r.offset, r.length, MappedFile::open(file)->read_string(r.offset, r.length));
      fetched += r.length;
    }
  }
  for (const auto& [name, bytes] : staged) std::ofstream(dir / name, std::ios::binary) << bytes;
  Reader partial(dir.string());
  for (const std::string key : {"model", "optimizer"}) {
    expect_same(*partial.read(key, plan), *whole.read(key, plan), key);
  }
  // Everything: every stored byte the metadata names, once.
  uint64_t all = 0;
  for (const auto& r : whole.ranges_for(nullptr, nullptr)) all += r.length;
  uint64_t stored = 0;
  for (const auto& [key, info] : whole.metadata().storage) stored += info.length;
  EXPECT_EQ(all, stored);
  EXPECT_LT(fetched, all);  // a region of fc.weight: not every chunk
  fs::remove_all(dir);
}

TEST(ShardedSave, OneProcessRoundTrip) {
  fs::path dir = temp_dir("roundtrip");
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::ordered_dict();
  model->dict().set(Value::string("w"), tensor(at::randn({5, 3})));
  model->dict().set(Value::string("b"), tensor(at::arange(5, at::kLong)));
  state->dict().set(Value::string("model"), model);
  state->dict().set(Value::string("names"), Value::list({Value::string("x")}));
  ValuePtr meta = Value::plain_dict();
  meta->dict().set(Value::string("step"), Value::integer(9));
  save(dir.string(), state, meta, ShardPlan{}, nullptr, SaveOptions{false, dir.string()});

  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{".metadata", "__0_0.distcp", "meta.pt"}));
  Reader reader(dir.string());
  ValuePtr back = reader.read_all();
  expect_same(*back->dict().get("model"), *model, "model");
  expect_same(*back->dict().get("names"), *state->dict().get("names"), "names");
  expect_same(*load_torch_file((dir / "meta.pt").string()).root, *meta, "meta.pt");
  EXPECT_EQ(load_torch_file((dir / "meta.pt").string()).archive_name, "meta");
  fs::remove_all(dir);
}

// Restoring a model: a chunk that is exactly a destination's region goes straight into it (the value
// is the destination itself, its memory filled); a destination that cannot take it (another dtype, a
// shard of another shape, not contiguous) is left alone and the value is new memory, as before.
TEST(ShardedReader, ReadsChunksStraightIntoDestinations) {
  fs::path dir = temp_dir("in-place");
  at::Tensor w = at::randn({5, 3});
  at::Tensor b = at::arange(5, at::kLong);
  at::Tensor v = at::randn({4});
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::ordered_dict();
  model->dict().set(Value::string("w"), tensor(w));
  model->dict().set(Value::string("b"), tensor(b));
  model->dict().set(Value::string("v"), tensor(v));
  state->dict().set(Value::string("model"), model);
  save(dir.string(), state, Value::plain_dict(), ShardPlan{}, nullptr, SaveOptions{false, dir.string()});

  Reader reader(dir.string());
  std::unordered_map<std::string, at::Tensor> destinations{
      {"w", at::zeros({5, 3})},                // takes the chunk
      {"b", at::zeros({5}, at::kInt)},         // another dtype: left alone
      {"v", at::zeros({8}).slice(0, 0, 8, 2)}, // not contiguous: left alone
  };
  ValuePtr back = reader.read("model", ShardPlan{}, destinations);
  const at::Tensor& read_w = *back->dict().get("w")->tensor_ref().tensor;
  EXPECT_TRUE(read_w.is_same(destinations.at("w"))) << "w was not read in place";
  EXPECT_TRUE(destinations.at("w").equal(w));
  const at::Tensor& read_b = *back->dict().get("b")->tensor_ref().tensor;
  EXPECT_FALSE(read_b.is_same(destinations.at("b")));
  EXPECT_TRUE(read_b.equal(b));
  EXPECT_TRUE(destinations.at("b").equal(at::zeros({5}, at::kInt)));
  const at::Tensor& read_v = *back->dict().get("v")->tensor_ref().tensor;
  EXPECT_NE(read_v.data_ptr(), destinations.at("v").data_ptr());
  EXPECT_TRUE(read_v.equal(v));
  EXPECT_TRUE(destinations.at("v").equal(at::zeros({4})));

  // A region that is not one chunk (a shard of a bigger tensor read from a whole chunk): new memory.
  ShardPlan plan;
  plan.add_parameter("model", "w", Placement{{5, 3}, {1, 0}, {2, 3}});
  std::unordered_map<std::string, at::Tensor> shard{{"w", at::zeros({2, 3})}};
  ValuePtr part = reader.read("model", plan, shard);
  EXPECT_TRUE(part->dict().get("w")->tensor_ref().tensor->equal(w.narrow(0, 1, 2)));
  EXPECT_TRUE(shard.at("w").equal(at::zeros({2, 3})));
  fs::remove_all(dir);
}

// The CLI's torch-free convert of a directory (outline.h) writes what the libtorch consolidation
// (read_all, then meta.pt's entries, saved) writes, byte for byte.
TEST(ShardedOutline, ConvertEqualsTheLibtorchConsolidation) {
  fs::path dir = temp_dir("outline");
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::ordered_dict();
  model->dict().set(Value::string("w"), tensor(at::randn({5, 3})));
  model->dict().set(Value::string("b"), tensor(at::arange(5, at::kLong)));
  model->dict().set(Value::string("h"), tensor(at::randn({4}).to(at::kHalf)));
  state->dict().set(Value::string("model"), model);
  state->dict().set(Value::string("names"), Value::list({Value::string("x")}));
  ValuePtr meta = Value::plain_dict();
  meta->dict().set(Value::string("step"), Value::integer(9));
  save((dir / "ckpt").string(), state, meta, ShardPlan{}, nullptr, SaveOptions{false, {}});
  for (const std::string source : {(dir / "ckpt").string(), kData + "single"}) {
    ValuePtr all = Reader(source).read_all();
    if (fs::exists(fs::path(source) / "meta.pt")) {
      const ValuePtr meta_root = load_torch_file((fs::path(source) / "meta.pt").string()).root;
      for (const auto& [key, value] : meta_root->dict().items()) {
        all->dict().set(key, value);
      }
    }
    TorchSaveOptions options;
    options.archive_name = "consolidated";
    options.fsync = false;
    save_torch_file((dir / "reference.pt").string(), all, options);
    convert_sharded_outline(source, (dir / "converted.pt").string(), "consolidated", false);
    std::ifstream a(dir / "reference.pt", std::ios::binary), b(dir / "converted.pt", std::ios::binary);
    const std::string ref((std::istreambuf_iterator<char>(a)), {}), out((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(ref.empty());
    EXPECT_TRUE(ref == out) << source << ": " << ref.size() << " vs " << out.size() << " bytes";
  }
  fs::remove_all(dir);
}

TEST(ShardedSave, AShardAloneDoesNotCoverItsTensor) {
  fs::path dir = temp_dir("uncovered");
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::plain_dict();
  model->dict().set(Value::string("w"), tensor(at::ones({2, 3})));
  state->dict().set(Value::string("model"), model);
  ShardPlan plan;
  plan.add_parameter("model", "w", Placement{{4, 3}, {2, 0}, {2, 3}});  // rows 2..3 of 4
  save(dir.string(), state, nullptr, plan, nullptr, SaveOptions{false, {}});
  Reader reader(dir.string());
  const auto& chunk = reader.metadata().find("model.w")->tensor->chunks.at(0);
  EXPECT_EQ(chunk.offsets, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(reader.read("model", plan)->dict().get("w")->tensor_ref().tensor->sum().item<float>(), 6.0f);
  EXPECT_THROW(reader.read_all(), FormatError);  // rows 0..1 were never written
  fs::remove_all(dir);
}

// A rank's file planned for object storage is the file save() writes, byte for byte (with either
// serialization), filled in pieces that cross its streams' boundaries; the metadata built from its
// report indexes it as save()'s .metadata does (a URL recorded as a str, as FsspecWriter records it).
class RankFileLayoutTest : public ::testing::TestWithParam<Serialization> {};

TEST_P(RankFileLayoutTest, IsTheFileSaveWrites) {
  const Serialization serialization = GetParam();
  fs::path dir = temp_dir(serialization == Serialization::Safetensors ? "layout-st" : "layout");
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::ordered_dict();
  model->dict().set(Value::string("w"), tensor(at::randn({300, 70})));  // large enough to be placed
  model->dict().set(Value::string("b"), tensor(at::arange(5, at::kLong)));
  state->dict().set(Value::string("model"), model);
  state->dict().set(Value::string("names"), Value::list({Value::string("x")}));
  ShardPlan plan;
  plan.add_parameter("model", "w", Placement{{600, 70}, {300, 0}, {300, 70}});  // rows 300..599 of 600
  SaveOptions options{false, dir.string()};
  options.serialization = serialization;
  save(dir.string(), state, nullptr, plan, nullptr, options);
  auto bytes_of = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string file = bytes_of(dir / "__0_0.distcp");

  RankFileLayout layout(state, plan, 0, serialization, false, "s3://bucket/run/__0_0.distcp");
  ASSERT_EQ(layout.size(), file.size());
  std::string filled(file.size(), '\0');
  for (size_t at = 0; at < filled.size(); at += 4093) {
    layout.fill(at, filled.data() + at, std::min<size_t>(4093, filled.size() - at));
  }
  EXPECT_TRUE(filled == file);
  char two[2];
  EXPECT_THROW(layout.fill(file.size() - 1, two, 2), FormatError);

  const dcp::Metadata saved = dcp::read_metadata(bytes_of(dir / ".metadata"), ".metadata");
  const dcp::Metadata built =
      dcp::read_metadata(metadata_from_reports({layout.report()}, SaveOptions{false, "s3://bucket/run"}), "built");
  ASSERT_EQ(built.storage.size(), saved.storage.size());
  for (size_t i = 0; i < saved.storage.size(); ++i) {
    EXPECT_EQ(built.storage[i].first.fqn, saved.storage[i].first.fqn);
    EXPECT_EQ(built.storage[i].first.offset, saved.storage[i].first.offset);
    EXPECT_EQ(built.storage[i].second.offset, saved.storage[i].second.offset);
    EXPECT_EQ(built.storage[i].second.length, saved.storage[i].second.length);
  }
  ASSERT_EQ(built.entries.size(), saved.entries.size());
  EXPECT_EQ(built.find("model.w")->tensor->size, (std::vector<int64_t>{600, 70}));
  EXPECT_EQ(built.checkpoint_id, "s3://bucket/run");
  EXPECT_TRUE(is_checkpoint_file("__3_0.distcp") && is_checkpoint_file(".metadata") && is_checkpoint_file("meta.pt"));
  EXPECT_FALSE(is_checkpoint_file("config.json"));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(ShardedSave, RankFileLayoutTest,
                         ::testing::Values(Serialization::TorchSave, Serialization::Safetensors),
                         [](const auto& info) {
                           return info.param == Serialization::Safetensors ? "Safetensors" : "TorchSave";
                         });

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(ShardedSave, AFailedSaveKeepsThePreviousCheckpoint) {
  fs::path dir = temp_dir("failed");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("x"), tensor(at::ones({2})));
  ValuePtr meta = Value::plain_dict();
  meta->dict().set(Value::string("step"), Value::integer(1));
  save(dir.string(), state, meta, ShardPlan{}, nullptr, SaveOptions{false, {}});
  ASSERT_TRUE(is_sharded_checkpoint(dir.string()));
  const std::vector<std::string> files = names_in(dir);
  EXPECT_EQ(files, (std::vector<std::string>{".metadata", "__0_0.distcp", "meta.pt"}));
  // A value the pickler cannot write fails the shard file: the old checkpoint is untouched.
  state->dict().set(Value::string("bad"), Value::storage(StorageRef{}));
  EXPECT_THROW(save(dir.string(), state, meta, ShardPlan{}, nullptr, SaveOptions{false, {}}), Error);
  EXPECT_EQ(names_in(dir), files);
  ValuePtr expected = Value::plain_dict();
  expected->dict().set(Value::string("x"), tensor(at::ones({2})));
  expect_same(*Reader(dir.string()).read_all(), *expected, "old checkpoint");
  for (const std::string& name : names_in(dir.parent_path())) {
    EXPECT_NE(name.rfind("." + dir.filename().string() + ".tmp-", 0), 0u) << "left beside the checkpoint: " << name;
  }
  fs::remove_all(dir);
}

// A full disk during a sharded save: an IoError naming the file and the reason; the previous
// checkpoint and its directory are as they were. Needs a small tmpfs, which only root can mount.
TEST(ShardedSave, AFullDiskKeepsThePreviousCheckpoint) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
  fs::path mount = temp_dir("full");
  fs::create_directories(mount);
  ASSERT_EQ(std::system(("mount -t tmpfs -o size=4m tmpfs " + mount.string()).c_str()), 0);
  const fs::path dir = mount / "ckpt";
  ValuePtr small = Value::plain_dict();
  small->dict().set(Value::string("x"), tensor(at::ones({1 << 18})));  // 1 MiB
  save(dir.string(), small, nullptr, ShardPlan{}, nullptr, SaveOptions{true, {}});
  const std::vector<std::string> files = names_in(dir);
  ValuePtr big = Value::plain_dict();
  big->dict().set(Value::string("x"), tensor(at::zeros({1 << 20})));  // 4 MiB: does not fit beside it
  try {
    save(dir.string(), big, nullptr, ShardPlan{}, nullptr, SaveOptions{true, {}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(mount.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(names_in(dir), files);
  EXPECT_EQ(names_in(mount), std::vector<std::string>{"ckpt"});
  expect_same(*Reader(dir.string()).read_all(), *small, "previous checkpoint");
  std::system(("umount " + mount.string()).c_str());
  fs::remove_all(mount);
}

TEST(ShardedSave, ReplacesTheWholeDirectoryButNotForeignFiles) {
  fs::path dir = temp_dir("replace");
  ValuePtr state = Value::plain_dict();
  state->dict().set(Value::string("x"), tensor(at::ones({2})));
  fs::create_directories(dir);
  { std::ofstream(dir / "__1_0.distcp") << "a shard of an older, bigger save"; }
  save(dir.string(), state, nullptr, ShardPlan{}, nullptr, SaveOptions{false, {}});
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{".metadata", "__0_0.distcp"}));
  { std::ofstream(dir / "notes.txt") << "the user's own file"; }
  try {
    save(dir.string(), state, nullptr, ShardPlan{}, nullptr, SaveOptions{false, {}});
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("not part of a sharded checkpoint (notes.txt)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{".metadata", "__0_0.distcp", "notes.txt"}));
  fs::remove_all(dir);
}

TEST(ShardedFull, SliceToPlanCutsWholeTensors) {
  ValuePtr state = Value::plain_dict();
  ValuePtr model = Value::plain_dict();
  model->dict().set(Value::string("w"), tensor(at::arange(8, at::kFloat).reshape({4, 2})));
  state->dict().set(Value::string("model"), model);
  ShardPlan plan;
  plan.add_parameter("model", "w", Placement{{4, 2}, {2, 0}, {2, 2}});
  slice_to_plan(state, plan);
  EXPECT_TRUE(model->dict().get("w")->tensor_ref().tensor->equal(at::arange(4, 8, at::kFloat).reshape({2, 2})));
}

TEST(ShardPlan, RefusesShardsOutsideTheirTensor) {
  ShardPlan plan;
  EXPECT_THROW(plan.add_parameter("m", "w", Placement{{4}, {3}, {2}}), StateError);
  EXPECT_THROW(plan.add_parameter("m", "w", Placement{{4, 2}, {0}, {2, 2}}), StateError);
}

}  // namespace
}  // namespace fabricckpt::sharded
