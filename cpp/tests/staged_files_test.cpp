// Files staged from object storage (staged_files.h): a sparse local copy that holds only an object's
// structure, whose holes the readers read from elsewhere. Here "elsewhere" is the original file, and
// the holes are the storages' bytes zeroed: verify and convert of the staged copy give what they give
// for the original, and without its registration the staged copy fails its CRC-32s.
#include "fabricckpt/staged_files.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "test_files.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;
using Ranges = std::vector<ByteRange>;

using test_files::data;
using test_files::slurp;

// The test's own temporary directory.
struct TempDir : test_files::TempDir {
  TempDir() : test_files::TempDir("staged_files_test") {}
};

// `original` copied to `to` with `holes` zeroed; what the copy holds: the ranges between the holes.
Ranges write_holed(const std::string& original, const Ranges& holes, const std::string& to) {
  std::string bytes = slurp(original);
  for (const auto& [offset, length] : holes) bytes.replace(offset, length, length, '\0');
  std::ofstream(to, std::ios::binary) << bytes;
  Ranges held;
  uint64_t at = 0;
  for (const auto& [offset, length] : merged_ranges(holes)) {
    if (offset > at) held.push_back({at, offset - at});
    at = std::max(at, offset + length);
  }
  if (at < bytes.size()) held.push_back({at, bytes.size() - at});
  return held;
}

// Registers `staged` with its holes read from `original` (counting the bytes so read) until destroyed.
class Registration {
 public:
  Registration(const std::string& staged, const Ranges& held, const std::string& original) : staged_(staged) {
    auto source = MappedFile::open(original);
    register_staged_file(staged, std::make_shared<StagedFile>(held, [this, source](uint64_t offset, void* dest, size_t size) {
                           source->read_at(offset, dest, size);
                           hole_bytes_ += size;
                         }));
  }
  ~Registration() { unregister_staged_file(staged_); }
  uint64_t hole_bytes() const { return hole_bytes_; }

 private:
  std::string staged_;
  uint64_t hole_bytes_ = 0;
};

TEST(StagedFiles, AReadIsSplitBetweenTheFileAndItsHoles) {
  std::vector<std::string> pieces;
  StagedFile file({{10, 5}, {0, 4}, {2, 3}}, [&](uint64_t offset, void*, size_t size) {
    pieces.push_back("hole " + std::to_string(offset) + "+" + std::to_string(size));
  });
  char buffer[20];
  file.read(0, buffer, sizeof buffer, [&](uint64_t offset, void*, size_t size) {
    pieces.push_back("file " + std::to_string(offset) + "+" + std::to_string(size));
  });
  EXPECT_EQ(pieces, (std::vector<std::string>{"file 0+5", "hole 5+5", "file 10+5", "hole 15+5"}));
}

TEST(StagedFiles, RangesFetchedLaterAreReadFromTheFileByFilesAlreadyOpen) {
  TempDir dir;
  const std::string path = dir.file("later.bin");
  std::ofstream(path, std::ios::binary) << std::string(16, 'f');  // what the file holds once fetched
  int hole_reads = 0;
  const auto fill_hole = [&](uint64_t, void* dest, size_t size) {
    std::memset(dest, 'h', size);
    ++hole_reads;
  };
  register_staged_file(path, std::make_shared<StagedFile>(Ranges{{0, 4}}, fill_hole));
  const auto file = MappedFile::open(path);
  std::string got(16, '\0');
  file->read_at(0, got.data(), got.size());
  EXPECT_EQ(got, "ffff" + std::string(12, 'h'));
  // Registered again: the registration holds more, and the file opened before reads it from disk.
  register_staged_file(path, std::make_shared<StagedFile>(Ranges{{8, 8}}, fill_hole));
  file->read_at(0, got.data(), got.size());
  EXPECT_EQ(got, "ffffhhhhffffffff");
  EXPECT_EQ(hole_reads, 2);
  const Ranges held = staged_file(path)->held();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[1].offset, 8u);
  EXPECT_EQ(held[1].length, 8u);
  unregister_staged_file(path);
  EXPECT_EQ(staged_file(path), nullptr);
}

TEST(StagedFiles, AStagedZipFileVerifiesAndConvertsAsItsObject) {
  TempDir dir;
  const std::string original = data("zip/multi_tensor.pt");
  Ranges storages;
  const auto outline = OutlineFile::open(original);
  for (const auto& s : outline->storages()) {
    if (s->record->size > 0) storages.push_back({s->record->data_offset, s->record->size});
  }
  ASSERT_FALSE(storages.empty());
  const std::string staged = dir.file("multi_tensor.pt");
  const Ranges held = write_holed(original, storages, staged);
  EXPECT_THROW(verify_outline(staged), FormatError);  // the zeroed storages fail their CRC-32s

  Registration registration(staged, held, original);
  const std::string summary = verify_outline(staged);
  const std::string expected = verify_outline(original);
  EXPECT_EQ(summary.substr(staged.size()), expected.substr(original.size()));
  uint64_t storage_bytes = 0;
  for (const auto& r : storages) storage_bytes += r.length;
  // Every hole read from the source (the directory search reads the file's tail, here all of it, again).
  EXPECT_GE(registration.hole_bytes(), storage_bytes);

  convert_outline(staged, dir.file("out.pt"), /*allow_unsafe_globals=*/false);
  EXPECT_EQ(slurp(dir.file("out.pt")), slurp(original));  // torch's own bytes back
}

TEST(StagedFiles, AStagedShardedDirectoryVerifiesAsItsObjects) {
  TempDir dir;
  const std::string original = data("dcp/single");
  const std::string staged = dir.file("single");
  fs::create_directories(staged);
  fs::copy_file(original + "/.metadata", staged + "/.metadata");
  // The second half of the shard file zeroed: most of its items' data, some of their structure too,
  // all of it read from the original through the registration.
  const std::string shard = original + "/__0_0.distcp";
  const uint64_t size = fs::file_size(shard);
  const Ranges held = write_holed(shard, {{size / 2, size - size / 2}}, staged + "/__0_0.distcp");
  EXPECT_THROW(verify_sharded_outline(staged), Error);

  Registration registration(staged + "//__0_0.distcp", held, shard);  // registered under any spelling of its path
  EXPECT_EQ(verify_sharded_outline(staged), verify_sharded_outline(original));
  EXPECT_GT(registration.hole_bytes(), 0u);
}

}  // namespace
}  // namespace fabricckpt
