#include "fabricckpt/zip.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

std::string fixture_path(const std::string& name) { return std::string(FABRICCKPT_TEST_DATA) + "/zip/" + name; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::shared_ptr<const MappedFile> in_memory(std::string bytes) {
  return MappedFile::from_bytes(std::move(bytes), "test.pt");
}

uint32_t get32(const std::string& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}
uint64_t get64(const std::string& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
void set16(std::string& b, size_t at, uint16_t v) { std::memcpy(b.data() + at, &v, 2); }
void set32(std::string& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void set64(std::string& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }

// Where a record's central directory entry starts: its name's last occurrence, less the fixed part.
size_t central_entry(const std::string& bytes, const std::string& full_name) {
  size_t at = bytes.rfind(full_name);
  EXPECT_NE(at, std::string::npos) << full_name;
  return at - 46;
}

// A readable failure for two archives that should be byte-identical.
testing::AssertionResult same_bytes(const std::string& actual, const std::string& expected) {
  if (actual == expected) return testing::AssertionSuccess();
  size_t i = 0;
  while (i < actual.size() && i < expected.size() && actual[i] == expected[i]) ++i;
  return testing::AssertionFailure() << "sizes " << actual.size() << " vs " << expected.size()
                                     << ", first difference at byte " << i;
}

template <typename Fn>
void expect_format_error(Fn&& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no FormatError (wanted \"" << fragment << "\")";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

void expect_parse_error(const std::string& bytes, const std::string& fragment) {
  expect_format_error([&] { ZipReader(in_memory(bytes)); }, fragment);
}

// --- torch.save fixtures -------------------------------------------------------------------

struct TorchFixture {
  const char* file;
  const char* archive;
  uint64_t alignment;
  bool crc;
};

void PrintTo(const TorchFixture& f, std::ostream* os) { *os << f.file; }

struct ManifestRow {
  std::string name;
  uint64_t header_offset;
  uint64_t data_offset;
  uint64_t size;
  uint32_t crc32;
};

// <fixture>.records.tsv: what Python's zipfile sees in the fixture.
std::vector<ManifestRow> read_manifest(const std::string& fixture) {
  std::ifstream in(fixture_path(fixture.substr(0, fixture.rfind('.')) + ".records.tsv"));
  std::string line;
  std::getline(in, line);  // column names
  std::vector<ManifestRow> rows;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    ManifestRow row;
    std::string crc;
    std::getline(fields, row.name, '\t');
    fields >> row.header_offset >> row.data_offset >> row.size >> crc;
    row.crc32 = static_cast<uint32_t>(std::stoul(crc, nullptr, 16));
    rows.push_back(row);
  }
  return rows;
}

class ZipTorchFixture : public testing::TestWithParam<TorchFixture> {
 protected:
  // Feeds every record of the fixture except the serialization id to a writer,
  // whole or in pieces of `piece` bytes, and returns what it wrote.
  std::string rewrite(size_t piece) {
    const TorchFixture& f = GetParam();
    ZipReader reader(MappedFile::open(fixture_path(f.file)));
    StringSink sink;
    TorchZipWriter writer(sink, reader.archive_name(), f.alignment, f.crc);
    for (const ZipRecord& r : reader.records()) {
      std::string name = r.name.substr(reader.archive_name().size() + 1);
      if (name == ".data/serialization_id") continue;
      const std::string data = reader.data(r, f.crc);
      if (piece == 0) {
        writer.write_record(name, data.data(), data.size());
      } else {
        writer.begin_record(name, data.size());
        for (size_t at = 0; at < data.size(); at += piece) {
          writer.write_data(data.data() + at, std::min(piece, data.size() - at));
        }
        writer.end_record();
      }
    }
    std::string id = writer.finish();
    EXPECT_EQ(id, reader.data(*reader.find(".data/serialization_id"), f.crc));
    return sink.str();
  }
};

TEST_P(ZipTorchFixture, ReaderSeesWhatPythonSees) {
  const TorchFixture& f = GetParam();
  const auto rows = read_manifest(f.file);
  ZipReader reader(MappedFile::open(fixture_path(f.file)));
  EXPECT_EQ(reader.archive_name(), f.archive);
  ASSERT_EQ(reader.records().size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const ZipRecord& r = reader.records()[i];
    SCOPED_TRACE(rows[i].name);
    EXPECT_EQ(r.name, rows[i].name);
    EXPECT_EQ(r.header_offset, rows[i].header_offset);
    EXPECT_EQ(r.data_offset, rows[i].data_offset);
    EXPECT_EQ(r.size, rows[i].size);
    EXPECT_EQ(r.crc32, rows[i].crc32);
    EXPECT_EQ(r.data_offset % f.alignment, 0u);
    EXPECT_NO_THROW(reader.data(r, f.crc));
    EXPECT_EQ(reader.find(r.name.substr(std::strlen(f.archive) + 1)), &r);
  }
}

TEST_P(ZipTorchFixture, WriterReproducesTheFile) {
  EXPECT_TRUE(same_bytes(rewrite(0), read_file(fixture_path(GetParam().file))));
}

TEST_P(ZipTorchFixture, StreamedWriterReproducesTheFile) {
  EXPECT_TRUE(same_bytes(rewrite(3), read_file(fixture_path(GetParam().file))));
}

INSTANTIATE_TEST_SUITE_P(Zip, ZipTorchFixture,
                         testing::Values(TorchFixture{"single_tensor.pt", "single_tensor", 64, true},
                                         TorchFixture{"file_object.pt", "archive", 64, true},
                                         TorchFixture{"multi_tensor.pt", "multi_tensor", 64, true},
                                         TorchFixture{"align4096.pt", "align4096", 4096, true},
                                         TorchFixture{"no_crc.pt", "no_crc", 64, false}));

// --- reader --------------------------------------------------------------------------------

TEST(ZipReader, SingleTensorContent) {
  auto file = MappedFile::open(fixture_path("single_tensor.pt"));
  ASSERT_TRUE(is_zip(*file));
  ZipReader reader(file);
  std::vector<std::string> names;
  for (const auto& r : reader.records()) names.push_back(r.name);
  EXPECT_EQ(names, (std::vector<std::string>{"single_tensor/data.pkl", "single_tensor/.format_version",
                                             "single_tensor/.storage_alignment", "single_tensor/byteorder",
                                             "single_tensor/data/0", "single_tensor/version",
                                             "single_tensor/.data/serialization_id"}));
  EXPECT_EQ(reader.data(*reader.find("version")), "3\n");
  EXPECT_EQ(reader.data(*reader.find("byteorder")), "little");
  const std::string floats = reader.data(*reader.find("data/0"));
  const float expected[] = {0, 1, 2, 3};
  ASSERT_EQ(floats.size(), sizeof expected);
  EXPECT_EQ(std::memcmp(floats.data(), expected, sizeof expected), 0);
  EXPECT_EQ(reader.find("data/1"), nullptr);
  EXPECT_EQ(reader.find("single_tensor/version"), nullptr);
  EXPECT_EQ(&reader.source(), file.get());
}

// A source that is neither a file nor MemorySource: what a new storage backend would be. It can
// be cut short after the directory was read, as a file truncated under the reader is.
class ShrinkingSource final : public ReadSource {
 public:
  explicit ShrinkingSource(std::string bytes) : bytes_(std::move(bytes)), available_(bytes_.size()) {}
  uint64_t size() const override { return bytes_.size(); }
  void read_at(uint64_t offset, void* dest, size_t size) const override {
    check_read_range(name_, bytes_.size(), offset, size);
    if (offset + size > available_) throw IoError(concat("cannot read ", name_, ": it got shorter while it was read"));
    ++reads;
    if (size > 0) std::memcpy(dest, bytes_.data() + offset, size);
  }
  const std::string& name() const override { return name_; }
  void cut_to(uint64_t bytes) { available_ = bytes; }
  mutable int reads = 0;

 private:
  std::string bytes_;
  std::string name_ = "remote://bucket/single_tensor.pt";
  uint64_t available_;
};

TEST(ZipReader, ReadsThroughAnyReadSource) {
  const std::string bytes = read_file(fixture_path("single_tensor.pt"));
  ZipReader from_file(MappedFile::open(fixture_path("single_tensor.pt")));
  ZipReader from_memory(std::make_shared<MemorySource>(bytes, "memory.pt"));
  auto remote = std::make_shared<ShrinkingSource>(bytes);
  ZipReader from_remote(remote);
  EXPECT_TRUE(is_zip(*remote));
  EXPECT_GT(remote->reads, 0);
  for (const ZipReader* reader : {&from_memory, &from_remote}) {
    ASSERT_EQ(reader->records().size(), from_file.records().size());
    for (size_t i = 0; i < from_file.records().size(); ++i) {
      const ZipRecord& expected = from_file.records()[i];
      const ZipRecord& got = reader->records()[i];
      EXPECT_EQ(got.name, expected.name);
      EXPECT_EQ(got.data_offset, expected.data_offset);
      EXPECT_EQ(reader->data(got), from_file.data(expected)) << got.name;
    }
  }
  // Errors name the source, whatever it is.
  expect_format_error([&] { ZipReader(std::make_shared<MemorySource>(bytes.substr(0, 100), "memory.pt")); },
                      "memory.pt: ");
  // Cut short after the directory was read: the read fails with an error, nothing faults.
  remote->cut_to(from_remote.find("data/0")->data_offset + 4);
  EXPECT_THROW(from_remote.data(*from_remote.find("data/0")), IoError);
  EXPECT_THROW(from_remote.verify(*from_remote.find("data/0")), IoError);
  EXPECT_EQ(from_remote.data(*from_remote.find("data.pkl")), from_file.data(*from_file.find("data.pkl")));
}

TEST(MemorySource, ReadsAreBoundsChecked) {
  MemorySource source("abcdef", "six.bin");
  EXPECT_EQ(source.size(), 6u);
  EXPECT_EQ(source.read_string(2, 3), "cde");
  EXPECT_EQ(source.read_string(6, 0), "");
  expect_format_error([&] { source.read_string(4, 3); }, "six.bin: cannot read 3 bytes at offset 4: beyond its 6 bytes");
  expect_format_error([&] { source.read_string(UINT64_MAX, 1); }, "six.bin: cannot read 1 bytes");
  EXPECT_FALSE(is_zip(source));
}

TEST(ZipReader, FixtureCoversEmptyAndDescriptorLookalikeRecords) {
  // multi_tensor.pt must keep exercising both writer corner cases.
  ZipReader reader(MappedFile::open(fixture_path("multi_tensor.pt")));
  bool empty = false;
  bool lookalike = false;
  for (const auto& r : reader.records()) {
    const std::string data = reader.data(r);
    empty = empty || data.empty();
    lookalike = lookalike || (data.size() >= 8 && data.substr(0, 4) == std::string_view("PK\x07\x08", 4));
  }
  EXPECT_TRUE(empty);
  EXPECT_TRUE(lookalike);
}

TEST(ZipReader, PythonZipWithCommentHoldingAnEndSignature) {
  ZipReader reader(MappedFile::open(fixture_path("comment_stored.zip")));
  EXPECT_EQ(reader.archive_name(), "folder");
  ASSERT_EQ(reader.records().size(), 2u);
  EXPECT_EQ(reader.data(*reader.find("a.txt")), "hello\n");
  const std::string bin = reader.data(*reader.find("b.bin"));
  ASSERT_EQ(bin.size(), 256u);
  EXPECT_EQ(static_cast<uint8_t>(bin[255]), 255);
}

TEST(ZipReader, RefusesCompressedRecords) {
  expect_format_error([] { ZipReader(MappedFile::open(fixture_path("deflated.zip"))); },
                      "record folder/text.txt: compression method 8 is not supported");
}

TEST(ZipReader, ArchiveNameNeedsAFolder) {
  ZipReader reader(MappedFile::open(fixture_path("no_folder.zip")));
  EXPECT_EQ(reader.records().size(), 1u);
  expect_format_error([&] { reader.archive_name(); }, "first record top.txt is not inside a folder");
  EXPECT_THROW(reader.find("top.txt"), FormatError);
}

TEST(ZipReader, NotAZip) {
  expect_format_error([] { ZipReader(in_memory("")); }, "test.pt: not a zip archive");
  expect_format_error([] { ZipReader(in_memory(std::string(1000, 'x'))); }, "test.pt: not a zip archive");
  EXPECT_FALSE(is_zip(*in_memory("")));
  EXPECT_FALSE(is_zip(*in_memory("\x80\x02}q")));
}

TEST(ZipReader, TruncatedAtEveryLength) {
  const std::string bytes = read_file(fixture_path("single_tensor.pt"));
  for (size_t length = 0; length < bytes.size(); ++length) {
    EXPECT_THROW(ZipReader(in_memory(bytes.substr(0, length))), FormatError) << "length " << length;
  }
}

TEST(ZipReader, CrcMismatchNamesFileAndRecord) {
  std::string bytes = read_file(fixture_path("single_tensor.pt"));
  const auto rows = read_manifest("single_tensor.pt");
  bytes[rows[4].data_offset + 5] ^= 0x10;  // inside data/0
  ZipReader reader(in_memory(bytes));
  const ZipRecord& r = *reader.find("data/0");
  expect_format_error([&] { reader.data(r); },
                      "test.pt: record single_tensor/data/0: CRC-32 mismatch (stored 0x25601b8b, computed 0x");
  EXPECT_EQ(reader.data(r, false).size(), 16u);

  std::string stored = read_file(fixture_path("single_tensor.pt"));
  set32(stored, central_entry(stored, "single_tensor/version") + 16, 0x12345678);
  ZipReader reader2(in_memory(stored));
  expect_format_error([&] { reader2.data(*reader2.find("version")); }, "(stored 0x12345678, computed 0x55679ed1)");
}

TEST(ZipReader, LocalHeaderMustMatchDirectory) {
  const std::string original = read_file(fixture_path("single_tensor.pt"));
  const auto rows = read_manifest("single_tensor.pt");
  std::string bytes = original;
  bytes[rows[1].header_offset + 30 + 3] = '#';  // the local name of .format_version
  expect_format_error([&] { ZipReader(in_memory(bytes)); },
                      "record single_tensor/.format_version: local header at offset 242 names \"sin#le_tensor/");

  bytes = original;
  bytes[rows[2].header_offset] = 'Q';
  expect_parse_error(bytes, "record single_tensor/.storage_alignment: no local header");
}

TEST(ZipReader, OffsetsAndSizesBeyondTheFile) {
  const std::string original = read_file(fixture_path("single_tensor.pt"));
  const size_t entry = central_entry(original, "single_tensor/data/0");
  std::string bytes = original;
  set32(bytes, entry + 42, 0x7FFFFFF0);
  expect_parse_error(bytes,
                     "record single_tensor/data/0: local header offset 2147483632 lies outside the file");

  bytes = original;
  set32(bytes, entry + 20, 100000);
  set32(bytes, entry + 24, 100000);
  expect_parse_error(bytes, "record single_tensor/data/0: data runs past end of file");

  bytes = original;
  set32(bytes, entry + 20, 17);
  expect_parse_error(bytes, "stored size 17 differs from its size 16");

  // The end records: zip64 end record at size-98, locator at size-42, end record at size-22.
  const size_t end64 = original.size() - 98;
  ASSERT_EQ(get32(original, end64), 0x06064b50u);
  bytes = original;
  set64(bytes, end64 + 48, 1ull << 40);
  expect_parse_error(bytes, "central directory (offset 1099511627776");

  bytes = original;
  set64(bytes, original.size() - 42 + 8, 1ull << 62);
  expect_parse_error(bytes,
                     "zip64 end of central directory record (offset 4611686018427387904) lies outside");

  bytes = original;
  set32(bytes, end64, 0);
  expect_parse_error(bytes, "no zip64 end of central directory record at offset");

  bytes = original;
  set64(bytes, end64 + 24, 1ull << 60);
  set64(bytes, end64 + 32, 1ull << 60);
  expect_parse_error(bytes, "cannot hold the 1152921504606846976 records it claims");

  bytes = original;
  set32(bytes, end64 + 16, 1);
  expect_parse_error(bytes, "multi-disk zip archives are not supported");

  bytes = original;
  set32(bytes, entry, 0);
  expect_parse_error(bytes, "central directory entry 4 at offset");
}

TEST(ZipReader, DuplicateAndEmptyNames) {
  StringSink sink;
  TorchZipWriter writer(sink, "a");
  writer.write_record("n1", "x", 1);
  writer.write_record("n2", "y", 1);
  writer.finish();
  std::string bytes = sink.str();
  for (size_t at = bytes.find("a/n2"); at != std::string::npos; at = bytes.find("a/n2", at)) bytes[at + 3] = '1';
  expect_parse_error(bytes, "duplicate record a/n1");

  bytes = sink.str();
  const size_t entry = central_entry(bytes, "a/n2");
  set16(bytes, entry + 28, 0);  // the name's bytes now count as extra field
  set16(bytes, entry + 30, 4);
  expect_parse_error(bytes, "central directory entry 1 has an empty name");
}

TEST(ZipReader, RandomCorruptionNeverCrashes) {
  const std::string original = read_file(fixture_path("multi_tensor.pt"));
  std::mt19937 rng(7);
  int parsed = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = original;
    const int flips = 1 + rng() % 4;
    for (int i = 0; i < flips; ++i) {
      // Mostly the headers and end records, where the structure lives.
      size_t at = (rng() % 3 == 0) ? bytes.size() - 1 - rng() % 500 : rng() % bytes.size();
      bytes[at] = static_cast<char>(rng() % 4 == 0 ? 0xFF : rng());
    }
    if (rng() % 5 == 0) bytes.resize(rng() % bytes.size());
    try {
      ZipReader reader(in_memory(bytes));
      for (const auto& r : reader.records()) {
        try {
          reader.data(r);
        } catch (const FormatError&) {
        }
      }
      ++parsed;
    } catch (const FormatError&) {
    }
  }
  EXPECT_GT(parsed, 0);
}

// --- writer --------------------------------------------------------------------------------

TEST(ZipWriter, AlignsDataForEveryNameLength) {
  StringSink sink;
  TorchZipWriter writer(sink, "archive");
  for (int length = 1; length <= 130; ++length) {
    std::string name(length, 'n');
    name += std::to_string(length);
    writer.write_record(name, name.data(), name.size());
  }
  writer.finish();
  ZipReader reader(in_memory(sink.str()));
  ASSERT_EQ(reader.records().size(), 131u);
  for (const auto& r : reader.records()) {
    EXPECT_EQ(r.data_offset % 64, 0u) << r.name;
    if (r.name != "archive/.data/serialization_id") {
      EXPECT_EQ(reader.data(r), r.name.substr(std::strlen("archive/"))) << r.name;
    }
  }
}

TEST(ZipWriter, CopiedSerializationIdIsDropped) {
  auto write = [](bool with_copy) {
    StringSink sink;
    TorchZipWriter writer(sink, "archive");
    writer.write_record("data.pkl", "\x80\x02N.", 4);
    if (with_copy) writer.write_record(".data/serialization_id", "0123", 4);
    writer.finish();
    return sink.str();
  };
  EXPECT_TRUE(same_bytes(write(true), write(false)));
}

TEST(ZipWriter, MisuseIsAnError) {
  StringSink sink;
  EXPECT_THROW(TorchZipWriter(sink, ""), Error);
  EXPECT_THROW(TorchZipWriter(sink, "a", 0), Error);
  TorchZipWriter writer(sink, "a");
  writer.write_record("x", "1", 1);
  EXPECT_THROW(writer.write_record("x", "2", 1), Error);
  EXPECT_THROW(writer.write_data("2", 1), Error);
  EXPECT_THROW(writer.end_record(), Error);
  writer.begin_record("y", 2);
  EXPECT_THROW(writer.write_data("123", 3), Error);
  EXPECT_THROW(writer.begin_record("z", 1), Error);
  EXPECT_THROW(writer.finish(), Error);
  writer.write_data("1", 1);
  EXPECT_THROW(writer.end_record(), Error);  // one byte short
  writer.write_data("2", 1);
  writer.end_record();
  writer.finish();
  EXPECT_THROW(writer.finish(), Error);
  EXPECT_THROW(writer.write_record("w", "1", 1), Error);
}

// Writes to a file but leaves holes for blocks of zeros, so that archives of
// several GiB of zeros take almost no disk.
class SparseFileSink : public OutputSink {
 public:
  explicit SparseFileSink(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
    EXPECT_GE(fd_, 0) << path;
  }
  ~SparseFileSink() override { ::close(fd_); }
  void write(const void* data, size_t size) override {
    const char* p = static_cast<const char*>(data);
    const bool zeros = size >= 4096 && p[0] == 0 && std::memcmp(p, p + 1, size - 1) == 0;
    if (!zeros) {
      EXPECT_EQ(::pwrite(fd_, p, size, static_cast<off_t>(position_)), static_cast<ssize_t>(size));
    }
    position_ += size;
  }
  uint64_t position() const override { return position_; }
  void close() { EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(position_)), 0); }

 private:
  int fd_;
  uint64_t position_ = 0;
};

// CRC-32 of n zero bytes, by doubling with crc32_combine.
uint32_t crc_of_zeros(uint64_t n) {
  uint32_t crc = 0;
  uint32_t block = crc32_update(0, "", 1);  // one zero byte
  for (uint64_t length = 1; n != 0; n >>= 1, length *= 2) {
    if (n & 1) crc = crc32_combine(crc, block, length);
    block = crc32_combine(block, block, length);
  }
  return crc;
}

TEST(ZipWriter, Zip64SizesAndOffsets) {
  const fs::path path = fs::temp_directory_path() / ("fabricckpt-zip64-" + std::to_string(::getpid()) + ".pt");
  struct Remove {
    const fs::path& path;
    ~Remove() { fs::remove(path); }
  } remove_on_exit{path};
  const uint64_t kBoundary = 0xFFFFFFFF;  // the first size miniz moves to the zip64 field
  const uint64_t kHuge = 0x100000041;
  {
    SparseFileSink sink(path.string());
    TorchZipWriter writer(sink, "big");
    std::vector<char> zeros(size_t{1} << 20);
    auto stream_zeros = [&](const std::string& name, uint64_t size) {
      writer.begin_record(name, size);
      for (uint64_t left = size; left > 0;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
        writer.write_data(zeros.data(), n);
        left -= n;
      }
      writer.end_record();
    };
    writer.write_record("data.pkl", "small", 5);
    stream_zeros("data/0", kBoundary);
    writer.write_record("data/1", "after", 5);
    writer.write_record("data/2", nullptr, 0);
    stream_zeros("data/3", kHuge);
    writer.finish();
    sink.close();
  }
  auto file = MappedFile::open(path.string());
  ZipReader reader(file);
  ASSERT_EQ(reader.records().size(), 6u);
  const ZipRecord& big = *reader.find("data/0");
  const ZipRecord& after = *reader.find("data/1");
  const ZipRecord& empty = *reader.find("data/2");
  const ZipRecord& huge = *reader.find("data/3");
  EXPECT_EQ(big.size, kBoundary);
  EXPECT_EQ(big.crc32, crc_of_zeros(kBoundary));
  EXPECT_EQ(huge.size, kHuge);
  EXPECT_EQ(huge.crc32, crc_of_zeros(kHuge));
  EXPECT_EQ(reader.data(after), "after");
  EXPECT_EQ(empty.size, 0u);
  EXPECT_GT(after.header_offset, kBoundary);
  for (const auto& r : reader.records()) EXPECT_EQ(r.data_offset % 64, 0u) << r.name;

  auto bytes_at = [&](uint64_t offset, size_t n) { return file->read_string(offset, n); };
  // Local zip64 fields follow the name: sizes (compressed still 0) and/or the header offset.
  EXPECT_EQ(get64(bytes_at(big.header_offset + 30 + 10, 20), 4), kBoundary);
  EXPECT_EQ(get64(bytes_at(big.header_offset + 30 + 10, 20), 12), 0u);
  EXPECT_EQ(bytes_at(big.header_offset + 30 + 10, 4), std::string("\x01\x00\x10\x00", 4));
  EXPECT_EQ(bytes_at(after.header_offset + 30 + 10, 4), std::string("\x01\x00\x08\x00", 4));
  EXPECT_EQ(get64(bytes_at(after.header_offset + 30 + 10, 12), 4), after.header_offset);
  EXPECT_EQ(bytes_at(huge.header_offset + 30 + 10, 4), std::string("\x01\x00\x18\x00", 4));
  // Descriptors: 64-bit sizes once a zip64 field was written, none for an empty record.
  const std::string big_descriptor = bytes_at(big.data_offset + big.size, 24);
  EXPECT_EQ(get32(big_descriptor, 0), 0x08074b50u);
  EXPECT_EQ(get64(big_descriptor, 8), kBoundary);
  EXPECT_EQ(get64(big_descriptor, 16), kBoundary);
  EXPECT_EQ(get64(bytes_at(after.data_offset + 5, 24), 16), 5u);
  EXPECT_EQ(get32(bytes_at(empty.data_offset, 4), 0), 0x04034b50u);
  // The end record points at 0xFFFFFFFF; the zip64 end record has the real offset.
  const std::string end = bytes_at(file->size() - 22, 22);
  EXPECT_EQ(get32(end, 16), 0xFFFFFFFFu);
}

TEST(ZipWriter, AtomicFileSinkWritesTheSameFile) {
  const fs::path dir = fs::temp_directory_path() / ("fabricckpt-zip-" + std::to_string(::getpid()));
  const fs::path path = dir / "single_tensor.pt";
  ZipReader reader(MappedFile::open(fixture_path("single_tensor.pt")));
  {
    AtomicFileSink sink(path.string(), true);
    TorchZipWriter writer(sink, "single_tensor");
    for (const ZipRecord& r : reader.records()) {
      std::string name = r.name.substr(std::strlen("single_tensor/"));
      if (name != ".data/serialization_id") writer.write_record(name, reader.data(r).data(), r.size);
    }
    writer.finish();
    sink.commit();
  }
  EXPECT_TRUE(same_bytes(read_file(path.string()), read_file(fixture_path("single_tensor.pt"))));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fabricckpt
