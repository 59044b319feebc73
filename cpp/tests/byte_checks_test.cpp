// verify with its byte checks handed over (byte_checks.h): what a checkpoint staged from object storage,
// holes where its record and tensor bytes lie, is verified with. Listing names every range verify
// reads; the CRC-32s of those ranges, computed elsewhere, give the summary and the failures of a verify
// that read them.
#include "fabricckpt/byte_checks.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& relative) { return std::string(FABRICCKPT_TEST_DATA) + "/" + relative; }

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("byte_checks_test_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// `path`'s bytes with every listed range of it zeroed: the holes of a staged object.
void write_holed(const std::string& path, const std::vector<ByteChecks::Range>& ranges, const std::string& original,
                 const std::string& to) {
  std::ifstream in(original, std::ios::binary);
  std::ostringstream all;
  all << in.rdbuf();
  std::string bytes = all.str();
  for (const auto& r : ranges) {
    if (r.path == path) bytes.replace(r.offset, r.length, r.length, '\0');
  }
  std::ofstream(to, std::ios::binary) << bytes;
}

// The CRC-32s of the listed ranges as the original files hold them, given under the holed files' paths.
ByteChecks given_from(const std::vector<ByteChecks::Range>& ranges, const std::string& from, const std::string& to) {
  ByteChecks checks = ByteChecks::reading();
  for (const auto& r : ranges) {
    const std::string original = from + r.path.substr(to.size());
    checks.give({r.path, r.offset, r.length}, crc32_of_range(*MappedFile::open(original), r.offset, r.length));
  }
  return checks;
}

TEST(ByteChecks, AZipFileIsVerifiedWithTheCrcsOfItsRecordsGiven) {
  TempDir dir;
  const std::string original = data("zip/multi_tensor.pt");
  const std::string holed = dir.file("multi_tensor.pt");
  fs::copy_file(original, holed);
  ByteChecks listing = ByteChecks::listing();
  verify_outline(holed, listing);  // the structure only: no record's bytes read
  const auto& ranges = listing.listed();
  ASSERT_EQ(ranges.size(), 12u);  // every record, in the directory's order
  auto zip = OutlineFile::open(original);
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(ranges[i].path, holed);
    EXPECT_EQ(ranges[i].offset, zip->zip().records()[i].data_offset);
    EXPECT_EQ(ranges[i].length, zip->zip().records()[i].size);
  }
  // Zeroing only the storages keeps the outline readable (data.pkl and the small records are in place).
  std::vector<ByteChecks::Range> storages;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (ranges[i].length > 0 && zip->zip().records()[i].name.find("/data/") != std::string::npos) {
      storages.push_back(ranges[i]);
    }
  }
  ASSERT_FALSE(storages.empty());
  write_holed(holed, storages, original, holed);
  EXPECT_THROW(verify_outline(holed), FormatError);  // read here, the holes fail their CRC-32s

  ByteChecks given = given_from(storages, original, holed);
  const std::string summary = verify_outline(holed, given);
  const std::string expected = verify_outline(original);
  EXPECT_EQ(summary.substr(holed.size()), expected.substr(original.size()));

  // A CRC-32 given wrong is the mismatch a verify that read it reports, naming the record.
  ByteChecks wrong = ByteChecks::reading();
  for (const auto& r : storages) wrong.give(r, 0x12345678);
  try {
    verify_outline(holed, wrong);
    FAIL() << "a wrong CRC-32 passed verify";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(": record "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CRC-32 mismatch (stored "), std::string::npos) << e.what();
  }
}

TEST(ByteChecks, AShardedDirectoryListsItsItemsRecordsAtTheirOffsetsInTheShardFile) {
  TempDir dir;
  const std::string original = data("dcp/single");
  const std::string holed = dir.file("single");
  fs::copy(original, holed);
  ByteChecks listing = ByteChecks::listing();
  verify_sharded_outline(holed, listing);
  const auto& ranges = listing.listed();
  ASSERT_FALSE(ranges.empty());
  const std::string shard = (fs::path(holed) / "__0_0.distcp").string();
  uint64_t furthest = 0;
  for (const auto& r : ranges) {
    EXPECT_EQ(r.path, shard);  // the data file, not an item's slice of it
    EXPECT_LE(r.offset + r.length, fs::file_size(shard));
    furthest = std::max(furthest, r.offset + r.length);
  }
  EXPECT_GT(furthest, fs::file_size(shard) / 2);  // offsets in the whole file, not in an item

  // Every range but the small records and the items' pickles (which the outline reads: staging
  // fetches them) zeroed, and given back as computed from the original.
  auto original_shard = MappedFile::open((fs::path(original) / "__0_0.distcp").string());
  std::vector<ByteChecks::Range> big;
  for (const auto& r : ranges) {
    if (r.length >= 16 && static_cast<uint8_t>(original_shard->read_string(r.offset, 1)[0]) != 0x80) big.push_back(r);
  }
  ASSERT_FALSE(big.empty());
  write_holed(shard, big, (fs::path(original) / "__0_0.distcp").string(), shard);
  EXPECT_THROW(verify_sharded_outline(holed), FormatError);  // read here, the holes fail their CRC-32s
  ByteChecks given = given_from(big, original, holed);
  EXPECT_EQ(verify_sharded_outline(holed, given), verify_sharded_outline(original));
}

}  // namespace
}  // namespace fabricckpt
