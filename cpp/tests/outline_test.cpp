// The torch-free reading of torch.save files (outline.h) on files torch itself wrote.
#include "fabricckpt/outline.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/zip.h"
#include "test_files.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

using test_files::data;
using test_files::slurp;

// The test's own temporary directory.
struct TempDir : test_files::TempDir {
  TempDir() : test_files::TempDir("outline_test") {}
};

// `bytes` staged in the sparse file `sparse` as the CLI stages an object: its first 16 bytes fetched
// up front, then what outline_ranges_missing names, round by round, until nothing is missing.
struct Staged {
  int rounds = 0;
  std::vector<ByteRange> fetched;
};
Staged stage_for_outline(const std::string& bytes, const std::string& sparse, int max_rounds) {
  Staged out;
  std::string staged(bytes.size(), '\0');
  std::vector<ByteRange> missing{{0, std::min<uint64_t>(16, bytes.size())}};
  for (;; ++out.rounds) {
    for (const ByteRange& r : missing) {
      if (r.offset + r.length > bytes.size()) throw std::runtime_error("a range past the end");
      staged.replace(r.offset, r.length, bytes, r.offset, r.length);
      out.fetched.push_back(r);
    }
    { std::ofstream(sparse, std::ios::binary) << staged; }
    missing = outline_ranges_missing(sparse, out.fetched);
    if (missing.empty()) return out;
    if (out.rounds == max_rounds) throw std::runtime_error("ranges still missing after the last round");
  }
}

uint64_t total_length(const std::vector<ByteRange>& ranges) {
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += r.length;
  return total;
}

// The first tensor found in a depth-first walk of the tree.
std::optional<TensorOutline> first_tensor(const ValuePtr& v) {
  if (auto t = tensor_of(*v)) return t;
  if (v->is(Kind::Dict)) {
    for (const auto& [key, value] : v->dict().items()) {
      if (auto t = first_tensor(value)) return t;
    }
  }
  return std::nullopt;
}

TEST(Outline, DescribesTensorsWithoutReadingThem) {
  auto file = OutlineFile::open(data("zip/multi_tensor.pt"));
  ASSERT_FALSE(file->storages().empty());
  auto t = first_tensor(file->root());
  ASSERT_TRUE(t.has_value());
  EXPECT_FALSE(t->dtype.name.empty());
  EXPECT_EQ(t->nbytes(), t->numel() * t->dtype.element_size);
}

// A file fetched piece by piece, as inspect stages an object: from nothing, the end record, then the
// directory, then the local headers and small records are asked for, and a sparse copy holding only
// those outlines as the file does.
// A sharded directory staged as object storage's inspect stages it (.metadata whole, the data file
// sparse): the ranges it is told are missing converge, and its outline is the directory's.
TEST(Outline, ShardedRangesMissingConvergeToTheDirectorysOutline) {
  TempDir dir;
  const std::string original = data("dcp/single");
  const std::string staged = dir.file("staged");
  fs::create_directories(staged);
  fs::copy_file(original + "/.metadata", staged + "/.metadata");
  std::ifstream in(original + "/__0_0.distcp", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string sparse(bytes.size(), '\0');
  std::map<std::string, std::vector<ByteRange>> fetched;
  int rounds = 0;
  for (;; ++rounds) {
    { std::ofstream(staged + "/__0_0.distcp", std::ios::binary) << sparse; }
    const auto missing = sharded_outline_ranges_missing(staged, fetched);
    if (missing.empty()) break;
    ASSERT_LT(rounds, 6);
    for (const auto& [name, ranges] : missing) {
      ASSERT_EQ(name, "__0_0.distcp");
      for (const ByteRange& r : ranges) {
        ASSERT_LE(r.offset + r.length, bytes.size());
        sparse.replace(r.offset, r.length, bytes, r.offset, r.length);
        fetched[name].push_back(r);
      }
    }
  }
  EXPECT_GE(rounds, 2);  // each item's first bytes, then its directory and small records
  EXPECT_EQ(describe(*read_sharded_outline(staged).root), describe(*read_sharded_outline(original).root));
  EXPECT_THROW(sharded_outline_ranges_missing(dir.file("nothing"), {}), Error);
}

TEST(Outline, RangesMissingConvergeWithoutTheStorages) {
  TempDir dir;
  // torch's file with every storage record grown by 200 KiB (a record may hold more than its
  // storage), so that the storages lie between the file's first and last 256 KiB.
  ZipReader original(MappedFile::open(data("zip/multi_tensor.pt")));
  StringSink grown;
  {
    TorchZipWriter zip(grown, original.archive_name());
    for (const ZipRecord& r : original.records()) {
      const std::string name = r.name.substr(original.archive_name().size() + 1);
      if (name == ".data/serialization_id") continue;  // finish() writes it
      std::string bytes = original.data(r);
      if (name.rfind("data/", 0) == 0) bytes.append(200 << 10, '\0');
      zip.write_record(name, bytes.data(), bytes.size());
    }
    zip.finish();
  }
  const std::string bytes = grown.str();
  ASSERT_GT(bytes.size(), size_t{600} << 10);
  const std::string sparse = dir.file("sparse.pt");
  const Staged staged = stage_for_outline(bytes, sparse, 4);
  const std::vector<ByteRange>& fetched = staged.fetched;
  EXPECT_EQ(staged.rounds, 3);  // the end record, the directory, the local headers and small records
  auto outline = OutlineFile::open(sparse);
  EXPECT_EQ(describe(*outline->root()), describe(*OutlineFile::open(data("zip/multi_tensor.pt"))->root()));
  EXPECT_GT(outline->storages().size(), 1u);
  // What was fetched: the end record's search window (64 KiB), the directory, and a few hundred bytes
  // per record (header hints reach a little into the data), never a storage whole.
  EXPECT_LT(total_length(fetched), uint64_t{80} << 10);
  for (const auto& storage : outline->storages()) {
    uint64_t covered = 0;
    for (const ByteRange& r : fetched) {
      const uint64_t from = std::max(r.offset, storage->offset);
      const uint64_t to = std::min(r.offset + r.length, storage->offset + storage->stored);
      covered += to > from ? to - from : 0;
    }
    EXPECT_LT(covered, storage->stored / 2) << "storage " << storage->key;
  }
}

TEST(Outline, RangesMissingOfASafetensorsFileAreItsHeaderAndOfALegacyFileAllOfIt) {
  TempDir dir;
  const std::vector<float> big(1 << 18, 1.5f);  // 1 MiB
  const std::vector<int64_t> small{1, 2, 3};
  std::vector<safetensors::TensorData> tensors(2);
  tensors[0] = {"model.big", safetensors::Dtype::F32, {1 << 18}, big.data(), big.size() * sizeof(float)};
  tensors[1] = {"step", safetensors::Dtype::I64, {3}, small.data(), small.size() * sizeof(int64_t)};
  const std::string original = dir.file("weights.safetensors");
  safetensors::write_file(original, tensors, safetensors::Metadata{{"note", "java"}}, false);
  const std::string bytes = slurp(original);
  const uint64_t header_end = 8 + safetensors::read_header(*MappedFile::open(original)).header_size;

  const Staged staged = stage_for_outline(bytes, dir.file("sparse.safetensors"), 3);
  EXPECT_EQ(staged.rounds, 1);  // the first bytes say how long the header is
  EXPECT_EQ(total_length(staged.fetched), header_end);
  EXPECT_EQ(describe(*read_file_outline(dir.file("sparse.safetensors")).root),
            describe(*read_file_outline(original).root));

  const std::string legacy = slurp(data("torch/legacy.pt"));
  const Staged whole = stage_for_outline(legacy, dir.file("sparse-legacy.pt"), 3);
  EXPECT_EQ(whole.rounds, 1);
  EXPECT_EQ(total_length(whole.fetched), legacy.size());
  EXPECT_EQ(describe(*read_file_outline(dir.file("sparse-legacy.pt")).root),
            describe(*read_file_outline(data("torch/legacy.pt")).root));
}

TEST(Outline, RefusesLegacyAndBrokenFiles) {
  EXPECT_THROW(OutlineFile::open(data("torch/legacy.pt")), FormatError);
  TempDir dir;
  const std::string empty = dir.file("empty.pt");
  std::ofstream(empty).close();
  EXPECT_THROW(OutlineFile::open(empty), FormatError);
}

TEST(Outline, VerifySummarisesRecordsTensorsAndStorages) {
  const std::string summary = verify_outline(data("zip/multi_tensor.pt"));
  EXPECT_NE(summary.find(": OK ("), std::string::npos) << summary;
  EXPECT_NE(summary.find("CRC-32 verified"), std::string::npos) << summary;
  EXPECT_NE(verify_outline(data("zip/no_crc.pt")).find("carries no CRC-32s"), std::string::npos);
}

TEST(Outline, VerifyFindsACorruptStorage) {
  TempDir dir;
  std::string bytes = slurp(data("zip/single_tensor.pt"));
  auto file = OutlineFile::open(data("zip/single_tensor.pt"));
  const ZipRecord* record = file->storages().front()->record;
  bytes[record->data_offset] ^= 0x5a;
  const std::string corrupt = dir.file("corrupt.pt");
  std::ofstream(corrupt, std::ios::binary) << bytes;
  try {
    verify_outline(corrupt);
    FAIL() << "a flipped storage byte passed verify";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("CRC-32 mismatch"), std::string::npos) << e.what();
  }
  // convert checks every CRC on the way and leaves no target behind
  EXPECT_THROW(convert_outline(corrupt, dir.file("out.pt"), false), FormatError);
  EXPECT_FALSE(fs::exists(dir.file("out.pt")));
}

// torch 2.10 wrote these: converting them gives their bytes back (what the libtorch writer gives).
TEST(Outline, ConvertOfATorchFileIsByteIdentical) {
  TempDir dir;
  for (const char* name : {"zip/single_tensor.pt", "zip/multi_tensor.pt", "torch/state.pt"}) {
    const std::string out = dir.file("converted.pt");
    convert_outline(data(name), out, /*allow_unsafe_globals=*/false);
    EXPECT_EQ(slurp(out), slurp(data(name))) << name;
  }
}

// The stream form (what an upload receives) is the file's bytes, in order; a corrupt storage stops it
// before the end of the file, with the same error (the caller drops what it received).
TEST(Outline, ConvertIntoASinkGivesTheFilesBytesInOrder) {
  TempDir dir;
  for (const char* name : {"zip/single_tensor.pt", "zip/multi_tensor.pt", "torch/state.pt"}) {
    StringSink out;
    convert_outline(data(name), out, "s3://bucket/key", /*allow_unsafe_globals=*/false);
    EXPECT_EQ(out.str(), slurp(data(name))) << name;
  }
  std::string bytes = slurp(data("zip/single_tensor.pt"));
  const uint64_t data_offset = OutlineFile::open(data("zip/single_tensor.pt"))->storages().front()->record->data_offset;
  bytes[data_offset] ^= 0x5a;
  const std::string corrupt = dir.file("corrupt.pt");
  std::ofstream(corrupt, std::ios::binary) << bytes;
  StringSink out;
  EXPECT_THROW(convert_outline(corrupt, out, "s3://bucket/key", false), FormatError);
  EXPECT_GT(out.str().size(), 0u);
  EXPECT_LT(out.str().size(), bytes.size());
}

TEST(Outline, MaxAbsDifferenceComparesPieceByPiece) {
  TempDir dir;
  std::string bytes = slurp(data("zip/single_tensor.pt"));
  auto original = OutlineFile::open(data("zip/single_tensor.pt"));
  auto t = first_tensor(original->root());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(max_abs_difference(*t, *t), 0.0);
  // The fixture is a float tensor; if it ever is not, this test must fail rather than pass unseen.
  ASSERT_EQ(t->dtype.name, "Float");
  ASSERT_GT(t->numel(), 0);
  const uint64_t at = t->storage->record->data_offset + static_cast<uint64_t>(t->offset) * 4;
  float value;
  std::memcpy(&value, bytes.data() + at, 4);
  const float changed = value + 2.5f;
  std::memcpy(bytes.data() + at, &changed, 4);
  const std::string other = dir.file("other.pt");
  std::ofstream(other, std::ios::binary) << bytes;
  auto modified = OutlineFile::open(other);
  auto u = first_tensor(modified->root());
  EXPECT_DOUBLE_EQ(max_abs_difference(*t, *u), static_cast<double>(changed) - value);
}

}  // namespace
}  // namespace fabricckpt
