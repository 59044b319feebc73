#include "fabricckpt/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fabricckpt/error.h"

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class Files : public testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "fabricckpt-files-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void put(const std::string& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
  }
  static std::string get(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

TEST_F(Files, MappedFileReadsContent) {
  put(path("f.bin"), std::string("abc\0def", 7));
  auto file = MappedFile::open(path("f.bin"));
  ASSERT_EQ(file->size(), 7u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->data()), file->size()), std::string("abc\0def", 7));
  EXPECT_EQ(file->path(), path("f.bin"));
}

TEST_F(Files, MappedFileAllowsEmptyFiles) {
  put(path("empty"), "");
  EXPECT_EQ(MappedFile::open(path("empty"))->size(), 0u);
}

TEST_F(Files, MappedFileErrorsNamePathAndReason) {
  try {
    MappedFile::open(path("missing.pt"));
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path("missing.pt")), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MappedFile::open(dir_.string()), IoError);
}

TEST_F(Files, MappedFileFromBytes) {
  auto file = MappedFile::from_bytes("xyz", "memory");
  EXPECT_EQ(file->size(), 3u);
  EXPECT_EQ(file->data()[2], 'z');
  EXPECT_EQ(file->path(), "memory");
}

TEST_F(Files, StringSinkCollects) {
  StringSink sink;
  sink.write("ab", 2);
  sink.write("", 0);
  sink.write("c", 1);
  EXPECT_EQ(sink.str(), "abc");
  EXPECT_EQ(sink.position(), 3u);
}

TEST_F(Files, AtomicSinkReplacesTargetOnCommit) {
  put(path("ckpt.pt"), "old");
  {
    AtomicFileSink sink(path("ckpt.pt"), true);
    sink.write("new content", 11);
    EXPECT_EQ(get(path("ckpt.pt")), "old");
    EXPECT_EQ(entries().size(), 2u);  // the target and the temporary file
    sink.commit();
    EXPECT_EQ(sink.target_path(), path("ckpt.pt"));
  }
  EXPECT_EQ(get(path("ckpt.pt")), "new content");
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.pt"});
}

TEST_F(Files, AtomicSinkWithoutCommitLeavesTargetAlone) {
  put(path("ckpt.pt"), "old");
  {
    AtomicFileSink sink(path("ckpt.pt"), false);
    sink.write(std::string(10 << 20, 'x').data(), 10 << 20);
  }
  EXPECT_EQ(get(path("ckpt.pt")), "old");
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.pt"});
  {
    AtomicFileSink sink(path("fresh.pt"), false);
    sink.write("abc", 3);
  }
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.pt"});
}

TEST_F(Files, AtomicSinkCreatesParentDirectories) {
  const std::string target = path("a/b/c/ckpt.pt");
  AtomicFileSink sink(target, true);
  sink.write("x", 1);
  sink.commit();
  EXPECT_EQ(get(target), "x");
}

TEST_F(Files, AtomicSinkKeepsOrderAcrossBufferedAndDirectWrites) {
  std::string expected;
  AtomicFileSink sink(path("mixed.bin"), false);
  const size_t sizes[] = {1, 3 << 20, 100, 5 << 20, (4 << 20) - 1, 1, 4 << 20, 7, 0, 2 << 20};
  char fill = 'a';
  for (size_t size : sizes) {
    std::string piece(size, fill++);
    sink.write(piece.data(), piece.size());
    expected += piece;
    ASSERT_EQ(sink.position(), expected.size());
  }
  sink.commit();
  EXPECT_TRUE(get(path("mixed.bin")) == expected);
  EXPECT_THROW(sink.commit(), Error);
  EXPECT_THROW(sink.write("x", 1), Error);
}

TEST_F(Files, AtomicSinkKeepsPermissionsOfReplacedFile) {
  put(path("ckpt.pt"), "old");
  ASSERT_EQ(::chmod(path("ckpt.pt").c_str(), 0640), 0);
  AtomicFileSink sink(path("ckpt.pt"), false);
  sink.commit();
  struct stat st;
  ASSERT_EQ(::stat(path("ckpt.pt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_F(Files, AtomicSinkFailuresAreIoErrors) {
  put(path("plain"), "file");
  // A parent that is a regular file cannot become a directory.
  EXPECT_THROW(AtomicFileSink(path("plain/sub/ckpt.pt"), false), IoError);

  // Renaming over a non-empty directory fails; the temporary file goes away.
  fs::create_directories(path("taken/inside"));
  {
    AtomicFileSink sink(path("taken"), false);
    sink.write("x", 1);
    try {
      sink.commit();
      FAIL() << "no error";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(path("taken")), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(entries(), (std::vector<std::string>{"plain", "taken"}));
}

}  // namespace
}  // namespace fabricckpt
