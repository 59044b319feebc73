// The throughput paths: the planned parallel writer (byte-identical to the
// ordinary one), placed zip records, positional file writes, copy-on-write
// mapped loads, parallel eager loads and tensor snapshots.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

const std::string kData = std::string(FABRICCKPT_TEST_DATA) + "/torch/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

ValuePtr tensor_value(const at::Tensor& t, bool parameter = false) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(t);
  ref.is_parameter = parameter;
  return Value::tensor(std::move(ref));
}

const at::Tensor& tensor_at(const Value& dict, std::string_view key) {
  auto v = dict.dict().get(key);
  EXPECT_TRUE(v && v->is(Kind::Tensor)) << key;
  return *v->tensor_ref().tensor;
}

// Every shape of storage the writers treat differently: several pieces and an
// uneven tail, exactly one piece, just placed (1 MiB), just inline, tiny, empty,
// views sharing a storage, data that starts with a zip descriptor signature
// (it takes part in the serialization id), nested containers and a parameter.
ValuePtr mixed_state() {
  auto root = Value::ordered_dict();
  auto put = [&](const char* key, ValuePtr v) { root->dict().set(Value::string(key), std::move(v)); };
  put("big", tensor_value(at::arange(int64_t{9} * 1024 * 1024 + 77, at::kFloat)));
  put("piece", tensor_value(at::full({int64_t{4} << 20}, 7, at::kByte)));
  put("placed", tensor_value(at::arange(int64_t{1} << 18, at::kInt)));
  put("inline", tensor_value(at::arange((int64_t{1} << 18) - 1, at::kInt)));
  auto base = at::arange(int64_t{3} << 20, at::kDouble).reshape({3, -1});
  put("base", tensor_value(base, true));
  put("view", tensor_value(base.select(1, 5)));
  put("empty", tensor_value(at::empty({0, 4})));
  put("half", tensor_value(at::arange(10.0).to(at::kHalf)));
  put("u16", tensor_value(at::arange(1000).to(at::kUInt16)));
  auto signature = at::zeros({int64_t{2} << 20}, at::kByte);
  const uint8_t pk[8] = {0x50, 0x4b, 0x07, 0x08, 1, 2, 3, 4};
  std::memcpy(signature.data_ptr(), pk, sizeof pk);
  put("signature_big", tensor_value(signature));
  put("signature_small", tensor_value(signature.narrow(0, 0, 16).clone()));
  auto list = Value::list({tensor_value(at::ones({5})), Value::integer(3), Value::string("text")});
  put("list", list);
  put("again", list);  // a shared reference: one memo entry
  put("step", Value::integer(1234));
  return root;
}

class PerfPaths : public ::testing::Test {
 protected:
  fs::path dir = fs::temp_directory_path() / ("fabricckpt-perf-" + std::to_string(::getpid()) + "-" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  size_t entries() const { return static_cast<size_t>(std::distance(fs::directory_iterator(dir), {})); }
};

std::string ordinary_bytes(const ValuePtr& root, const std::string& archive = "archive") {
  StringSink out;
  write_torch_save(out, root, archive);
  return out.str();
}

// --- the planned parallel writer ---------------------------------------------------------------

TEST_F(PerfPaths, ParallelSaveIsByteIdenticalToTheOrdinaryWriter) {
  const ValuePtr root = mixed_state();
  const std::string expected = ordinary_bytes(root);
  for (int threads : {1, 2, 3, 8}) {
    for (bool fsync : {false, true}) {
      TorchSaveOptions options;
      options.threads = threads;
      options.fsync = fsync;
      const std::string file = path("p.pt");
      save_torch_file(file, root, options);
      const std::string actual = read_file(file);
      ASSERT_EQ(actual.size(), expected.size()) << threads << " threads";
      EXPECT_TRUE(actual == expected) << threads << " threads, fsync " << fsync;
    }
  }
  EXPECT_EQ(entries(), 1u);  // no temporary file left behind
}

TEST_F(PerfPaths, ParallelSaveRewritesPythonFileByteForByte) {
  const std::string original = read_file(kData + "state.pt");
  TorchCheckpoint ckpt = load_torch_file(kData + "state.pt");
  TorchSaveOptions options;
  options.archive_name = ckpt.archive_name;
  options.threads = 2;
  save_torch_file(path("state.pt"), ckpt.root, options);
  EXPECT_TRUE(read_file(path("state.pt")) == original);
}

TEST_F(PerfPaths, SaveReportsProgressUpToTheFileSize) {
  IoProgress progress;
  TorchSaveOptions options;
  options.progress = &progress;
  save_torch_file(path("p.pt"), mixed_state(), options);
  EXPECT_EQ(progress.total.load(), fs::file_size(path("p.pt")));
  EXPECT_EQ(progress.done.load(), progress.total.load());
}

TEST_F(PerfPaths, FailedParallelSaveKeepsTheOldFileAndNoTemporary) {
  const std::string file = path("keep.pt");
  auto small = Value::plain_dict();
  small->dict().set(Value::string("x"), Value::integer(1));
  save_torch_file(file, small, {});
  const std::string before = read_file(file);

  // A file size limit makes the kernel refuse the large write (EFBIG once SIGXFSZ is ignored).
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 8 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  try {
    TorchSaveOptions options;
    options.threads = 2;
    save_torch_file(file, mixed_state(), options);
    ADD_FAILURE() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("keep.pt"), std::string::npos) << e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(read_file(file), before);
  EXPECT_EQ(entries(), 1u);
}

// --- placed zip records and positional writes --------------------------------------------------

// Fills skipped ranges from a known source, so that placed output can be compared with streamed.
class FillingSink : public OutputSink {
 public:
  void write(const void* data, size_t size) override { bytes.append(static_cast<const char*>(data), size); }
  uint64_t position() const override { return bytes.size(); }
  void skip(uint64_t size) override {
    bytes.append(static_cast<const char*>(source), size);
  }
  const void* source = nullptr;
  std::string bytes;
};

TEST(PlacedRecords, MatchStreamedRecords) {
  std::string payloads[] = {std::string(100, 'a'), std::string("PK\x07\x08rest", 8), std::string(3, 'z'),
                            std::string(5000, '\x01'), std::string()};
  StringSink streamed;
  PlanningSink plan;
  FillingSink placed;
  {
    TorchZipWriter a(streamed, "archive", 64);
    TorchZipWriter b(plan, "archive", 64);
    TorchZipWriter c(placed, "archive", 64);
    int i = 0;
    for (const auto& p : payloads) {
      const std::string name = "data/" + std::to_string(i++);
      a.write_record(name, p.data(), p.size());
      b.write_record_placed(name, p.size(), 0, p.data());
      placed.source = p.data();
      c.write_record_placed(name, p.size(), crc32_update(0, p.data(), p.size()), p.data());
    }
    EXPECT_EQ(a.finish(), c.finish());
    b.finish();
  }
  EXPECT_TRUE(placed.bytes == streamed.str());
  EXPECT_EQ(plan.position(), streamed.str().size());
  ASSERT_EQ(plan.skipped_offsets().size(), 4u);  // empty records skip nothing
  EXPECT_EQ(streamed.str().substr(plan.skipped_offsets()[1], 8), payloads[1]);
  for (uint64_t offset : plan.skipped_offsets()) EXPECT_EQ(offset % 64, 0u);
}

// A sink that keeps only a running CRC and length of everything: big streams without the memory.
class HashingSink : public OutputSink {
 public:
  void write(const void* data, size_t size) override {
    crc = crc32_update(crc, data, size);
    length += size;
  }
  uint64_t position() const override { return length; }
  void skip(uint64_t size) override {
    crc = crc32_update(crc, source, size);
    length += size;
  }
  const void* source = nullptr;
  uint32_t crc = 0;
  uint64_t length = 0;
};

TEST(PlacedRecords, MatchStreamedZip64Records) {
  // 4.5 GiB of zeros that cost no memory: an untouched anonymous mapping.
  const size_t size = (size_t{9} << 29);
  void* zeros = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(zeros, MAP_FAILED);
  HashingSink streamed, placed;
  placed.source = zeros;
  const uint32_t data_crc = crc32_update(0, zeros, size);
  {
    TorchZipWriter a(streamed, "archive");
    TorchZipWriter b(placed, "archive");
    a.write_record("data/0", zeros, size);  // zip64 sizes
    b.write_record_placed("data/0", size, data_crc, zeros);
    a.write_record("data/1", "abc", 3);     // zip64 offset
    placed.source = "abc";
    b.write_record_placed("data/1", 3, crc32_update(0, "abc", 3), "abc");
    EXPECT_EQ(a.finish(), b.finish());
  }
  ::munmap(zeros, size);
  EXPECT_EQ(streamed.length, placed.length);
  EXPECT_EQ(streamed.crc, placed.crc);
}

TEST_F(PerfPaths, AtomicSinkMixesPositionalAndSequentialWrites) {
  AtomicFileSink sink(path("mixed.bin"), true);
  sink.preallocate(20);
  sink.write("head", 4);
  sink.skip(6);
  sink.write("tail", 4);
  sink.write_at(4, "middle", 6);
  sink.skip(6);
  sink.write_at(14, "gap-ok", 6);
  EXPECT_EQ(sink.position(), 20u);
  sink.commit();
  EXPECT_EQ(read_file(path("mixed.bin")), "headmiddletailgap-ok");
  StringSink strings;
  EXPECT_THROW(strings.skip(1), Error);
}

// --- loads -------------------------------------------------------------------------------------

TEST_F(PerfPaths, MappedLoadEqualsEagerLoad) {
  const std::string file = path("m.pt");
  save_torch_file(file, mixed_state(), {});
  TorchLoadOptions mapped;
  mapped.mmap = true;
  TorchCheckpoint a = load_torch_file(file, mapped);
  TorchCheckpoint b = load_torch_file(file);
  EXPECT_EQ(a.archive_name, "archive");
  for (const auto& [key, value] : b.root->dict().items()) {
    if (!value->is(Kind::Tensor)) continue;
    const at::Tensor& expected = *value->tensor_ref().tensor;
    const at::Tensor& actual = tensor_at(*a.root, key->as_string());
    EXPECT_EQ(expected.scalar_type(), actual.scalar_type()) << key->as_string();
    EXPECT_TRUE(at::equal(expected, actual)) << key->as_string();
  }
  EXPECT_TRUE(tensor_at(*a.root, "view").storage().is_alias_of(tensor_at(*a.root, "base").storage()));
  EXPECT_TRUE(a.root->dict().get("base")->tensor_ref().is_parameter);
  // Both write back the same bytes.
  EXPECT_TRUE(ordinary_bytes(a.root) == read_file(file));
  EXPECT_TRUE(ordinary_bytes(b.root) == read_file(file));
}

TEST_F(PerfPaths, MappedTensorsAreCopyOnWriteAndOutliveTheTree) {
  const std::string file = path("m.pt");
  save_torch_file(file, mixed_state(), {});
  const std::string before = read_file(file);
  at::Tensor big;
  {
    TorchLoadOptions mapped;
    mapped.mmap = true;
    TorchCheckpoint ckpt = load_torch_file(file, mapped);
    big = tensor_at(*ckpt.root, "big");
  }  // the tree is gone; the storage keeps the mapping
  EXPECT_EQ(big[12345].item<float>(), 12345.0f);
  big.fill_(-1.0f);
  EXPECT_EQ(big[12345].item<float>(), -1.0f);
  EXPECT_TRUE(read_file(file) == before);
  // The file can be replaced meanwhile (saves rename): the mapping keeps the old bytes.
  auto other = Value::plain_dict();
  other->dict().set(Value::string("x"), Value::integer(1));
  save_torch_file(file, other, {});
  EXPECT_EQ(big[0].item<float>(), -1.0f);
}

TEST_F(PerfPaths, MappedLoadSkipsStorageCrcsEagerLoadChecksThemInEveryPiece) {
  const std::string file = path("c.pt");
  save_torch_file(file, mixed_state(), {});
  std::string bytes = read_file(file);
  ZipReader zip(MappedFile::from_bytes(bytes, "c.pt"));
  const ZipRecord* big = zip.find("data/0");
  ASSERT_TRUE(big);
  ASSERT_GT(big->size, uint64_t{8} << 20);
  // A flipped bit in the third 4 MiB piece.
  bytes[big->data_offset + (uint64_t{9} << 20)] ^= 0x10;
  write_file(file, bytes);

  for (int threads : {1, 2, 4}) {
    TorchLoadOptions eager;
    eager.threads = threads;
    try {
      load_torch_file(file, eager);
      ADD_FAILURE() << "no CRC error";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("c.pt"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("data/0"), std::string::npos) << e.what();
    }
  }
  TorchLoadOptions unchecked;
  unchecked.verify_crc = false;
  EXPECT_NO_THROW(load_torch_file(file, unchecked));
  TorchLoadOptions mapped;
  mapped.mmap = true;
  EXPECT_NO_THROW(load_torch_file(file, mapped));
}

TEST_F(PerfPaths, EagerLoadWithAnyThreadCountAndProgress) {
  const std::string file = path("e.pt");
  const ValuePtr root = mixed_state();
  save_torch_file(file, root, {});
  for (int threads : {1, 2, 5}) {
    IoProgress progress;
    TorchLoadOptions options;
    options.threads = threads;
    options.progress = &progress;
    TorchCheckpoint ckpt = load_torch_file(file, options);
    EXPECT_TRUE(ordinary_bytes(ckpt.root) == read_file(file)) << threads;
    EXPECT_GT(progress.total.load(), uint64_t{40} << 20);
    EXPECT_EQ(progress.done.load(), progress.total.load());
  }
}

// Drops a file's clean pages from the page cache (no root needed once they are on disk).
void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

TEST_F(PerfPaths, EagerLoadOfAnUncachedFileReadsDirectlyIntoPlace) {
  const std::string file = path("cold.pt");
  const ValuePtr root = mixed_state();
  save_torch_file(file, root, {});
  const std::string expected = read_file(file);
  evict(file);
  auto mapped = MappedFile::open(file);
  // Where the page cache cannot be dropped (e.g. tmpfs) the cached path runs instead: the loaded
  // values and the CRC check below must hold either way; only the page-cache claim needs eviction.
  const bool evicted = mapped->resident_bytes(0, mapped->size()) <= mapped->size() / 2;
  const bool direct = evicted && DirectFile::open(*mapped) != nullptr;

  TorchLoadOptions options;
  options.threads = 3;
  TorchCheckpoint ckpt = load_torch_file(file, options);
  EXPECT_TRUE(ordinary_bytes(ckpt.root) == expected);
  const at::Tensor& big = tensor_at(*ckpt.root, "big");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data_ptr()) % 64, 0u);
  EXPECT_EQ(big[9 * 1024 * 1024 + 76].item<float>(), 9.0f * 1024 * 1024 + 76);
  if (direct) {  // O_DIRECT reads leave the page cache as it was
    EXPECT_LT(mapped->resident_bytes(0, mapped->size()), mapped->size() / 2);
  }

  // A flipped bit is found on this path too.
  std::string bytes = expected;
  ZipReader zip(MappedFile::from_bytes(bytes, "cold.pt"));
  bytes[zip.find("data/0")->data_offset + 5'000'000] ^= 0x04;
  write_file(file, bytes);
  evict(file);
  try {
    load_torch_file(file, options);
    ADD_FAILURE() << "no CRC error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
  }
}

TEST(PerfPathsLegacy, MappedLoadOfALegacyFileCopies) {
  TorchLoadOptions mapped;
  mapped.mmap = true;
  TorchCheckpoint ckpt = load_torch_file(kData + "legacy.pt", mapped);
  EXPECT_TRUE(ckpt.legacy);
  EXPECT_TRUE(at::equal(tensor_at(*ckpt.root, "w"), at::arange(6.0).reshape({2, 3})));
}

// --- snapshots ---------------------------------------------------------------------------------

TEST_F(PerfPaths, SnapshotSavesWhatTheStateWasWhenTaken) {
  const ValuePtr root = mixed_state();
  const std::string expected = ordinary_bytes(root);
  IoProgress progress;
  const ValuePtr snapshot = snapshot_tensors(root, 2, &progress);
  EXPECT_EQ(progress.done.load(), progress.total.load());
  EXPECT_GT(progress.total.load(), uint64_t{40} << 20);

  // The caller goes on training: every tensor changes in place.
  for (const auto& [key, value] : root->dict().items()) {
    if (value->is(Kind::Tensor) && value->tensor_ref().tensor->numel() > 0) value->tensor_ref().tensor->fill_(3);
  }
  EXPECT_FALSE(ordinary_bytes(root) == expected);
  EXPECT_TRUE(ordinary_bytes(snapshot) == expected);

  // Views keep sharing their (copied) storage; nothing is shared with the original.
  const at::Tensor& base = tensor_at(*snapshot, "base");
  EXPECT_TRUE(tensor_at(*snapshot, "view").storage().is_alias_of(base.storage()));
  EXPECT_FALSE(base.storage().is_alias_of(tensor_at(*root, "base").storage()));
  EXPECT_EQ(snapshot->dict().get("list"), snapshot->dict().get("again"));
  EXPECT_NE(snapshot->dict().get("list"), root->dict().get("list"));
  EXPECT_TRUE(snapshot->dict().get("base")->tensor_ref().is_parameter);
}

TEST(PerfPathsSnapshot, SelfContainingListsAndBadTensors) {
  auto list = Value::list();
  list->items().push_back(list);
  list->items().push_back(tensor_value(at::ones({2})));
  const ValuePtr copy = snapshot_tensors(list);
  ASSERT_EQ(copy->items().size(), 2u);
  EXPECT_EQ(copy->items()[0], copy);
  EXPECT_EQ(ordinary_bytes(copy), ordinary_bytes(list));

  TensorRef undefined;
  undefined.tensor = std::make_shared<at::Tensor>();
  EXPECT_THROW(snapshot_tensors(Value::tensor(undefined)), Error);
}

}  // namespace
}  // namespace fabricckpt
