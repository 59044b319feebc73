#include "fabricckpt/files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

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
  EXPECT_EQ(file->read_string(0, file->size()), std::string("abc\0def", 7));
  EXPECT_EQ(file->read_string(4, 3), "def");
  EXPECT_FALSE(file->mapped());
  EXPECT_TRUE(MappedFile::open_private(path("f.bin"))->mapped());
  EXPECT_THROW(file->read_string(5, 3), FormatError);
  EXPECT_EQ(file->path(), path("f.bin"));
}

// Another program truncating the file under a reader makes reads fail, never fault.
TEST_F(Files, ReadsOfAFileTruncatedMeanwhileFail) {
  put(path("f.bin"), std::string(1 << 20, 'x'));
  auto file = MappedFile::open(path("f.bin"));
  auto slice = MappedFile::slice(file, 4096, 8192, "slice");
  ASSERT_EQ(::truncate(path("f.bin").c_str(), 100), 0);
  EXPECT_THROW(file->read_string(4096, 4096), IoError);
  EXPECT_THROW(slice->read_string(0, 100), IoError);  // a slice reads through its parent
  EXPECT_EQ(file->read_string(0, 100), std::string(100, 'x'));
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
    // The temporary file has no name while it is written (O_TMPFILE, which /tmp has here).
    EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.pt"});
    EXPECT_EQ(sink.temp_path(), "");
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

  // A directory target is refused before anything is written.
  fs::create_directories(path("taken/inside"));
  try {
    AtomicFileSink sink(path("taken"), false);
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path("taken") + ": it is a directory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(entries(), (std::vector<std::string>{"plain", "taken"}));
}

// As torch.save (open(path, "wb")): a symbolic link is written through and stays a link.
TEST_F(Files, AtomicSinkWritesThroughSymbolicLinks) {
  fs::create_directories(path("store"));
  put(path("store/real.pt"), "old");
  fs::create_symlink("store/real.pt", path("link.pt"));
  fs::create_symlink("link.pt", path("link2.pt"));
  AtomicFileSink sink(path("link2.pt"), true);
  EXPECT_EQ(sink.target_path(), path("store/real.pt"));
  sink.write("new", 3);
  sink.commit();
  EXPECT_TRUE(fs::is_symlink(path("link.pt")));
  EXPECT_TRUE(fs::is_symlink(path("link2.pt")));
  EXPECT_EQ(get(path("store/real.pt")), "new");
  // A dangling link gets its file created where it points.
  fs::create_symlink("store/later.pt", path("dangling.pt"));
  AtomicFileSink later(path("dangling.pt"), false);
  later.write("x", 1);
  later.commit();
  EXPECT_EQ(get(path("store/later.pt")), "x");
  fs::create_symlink("loop2", path("loop1"));
  fs::create_symlink("loop1", path("loop2"));
  EXPECT_THROW(AtomicFileSink(path("loop1"), false), IoError);
}

// Makes `name` look `seconds` old (what a writer killed that long ago leaves).
void age(const std::string& name, int seconds) {
  struct timespec times[2];
  ::clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= seconds;
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, name.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << name;
}

TEST_F(Files, StaleTemporariesOfDeadWritersAreRemoved) {
  put(path("ckpt.pt"), "old");
  put(path(".ckpt.pt.tmp-dead"), std::string(1000, 'x'));  // a writer killed long ago
  age(path(".ckpt.pt.tmp-dead"), 60);
  put(path(".ckpt.pt.tmp-fresh"), "y");  // just created: its writer may not hold its lock yet
  put(path(".ckpt.pt.tmp-live"), "z");   // a live writer holds its lock
  age(path(".ckpt.pt.tmp-live"), 60);
  int live = ::open(path(".ckpt.pt.tmp-live").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(live, 0);
  ASSERT_EQ(::flock(live, LOCK_EX), 0);
  fs::create_directories(path(".ckpt.pt.tmp-deaddir/inside"));  // a sharded save's directory
  age(path(".ckpt.pt.tmp-deaddir"), 60);
  put(path(".other.pt.tmp-dead"), "w");  // another target's: not ours to judge
  age(path(".other.pt.tmp-dead"), 60);

  std::vector<std::string> removed = remove_stale_temporaries(path("ckpt.pt"));
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{path(".ckpt.pt.tmp-dead"), path(".ckpt.pt.tmp-deaddir")}));
  EXPECT_EQ(entries(), (std::vector<std::string>{".ckpt.pt.tmp-fresh", ".ckpt.pt.tmp-live", ".other.pt.tmp-dead",
                                                 "ckpt.pt"}));
  ::close(live);  // the writer died
  age(path(".ckpt.pt.tmp-fresh"), 60);
  {
    AtomicFileSink sink(path("ckpt.pt"), false);  // every save cleans up after its target's dead writers
    sink.commit();
  }
  EXPECT_EQ(entries(), (std::vector<std::string>{".other.pt.tmp-dead", "ckpt.pt"}));
}

TEST_F(Files, AtomicDirectorySwapsTheWholeDirectoryIn) {
  fs::create_directories(path("ckpt"));
  put(path("ckpt/a"), "old a");
  put(path("ckpt/b"), "old b");
  {
    AtomicDirectory staging(path("ckpt"), true);
    EXPECT_EQ(fs::path(staging.path()).parent_path(), dir_);
    put(staging.path() + "/a", "new a");
    EXPECT_EQ(get(path("ckpt/a")), "old a");  // untouched until the commit
    staging.commit();
  }
  EXPECT_EQ(get(path("ckpt/a")), "new a");
  EXPECT_FALSE(fs::exists(path("ckpt/b")));  // the old directory went as a whole
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt"});
  {
    AtomicDirectory abandoned(path("ckpt"), true);  // a save that fails
    put(abandoned.path() + "/a", "half");
  }
  EXPECT_EQ(get(path("ckpt/a")), "new a");
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt"});
  {
    AtomicDirectory fresh(path("sub/new"), false);  // no target yet, parents created
    put(fresh.path() + "/x", "x");
    fresh.commit();
  }
  EXPECT_EQ(get(path("sub/new/x")), "x");
  {
    put(path("file-ckpt"), "a single-file checkpoint");  // replaced by a directory
    AtomicDirectory over_file(path("file-ckpt"), false);
    put(over_file.path() + "/y", "y");
    over_file.commit();
  }
  EXPECT_EQ(get(path("file-ckpt/y")), "y");
}

// A replacement without RENAME_EXCHANGE interrupted between its two renames: the old
// directory is put back.
TEST_F(Files, AnInterruptedReplacementIsRestored) {
  fs::create_directories(path(".ckpt.old-0123"));
  put(path(".ckpt.old-0123/a"), "old a");
  age(path(".ckpt.old-0123"), 60);
  EXPECT_EQ(remove_stale_temporaries(path("ckpt")), std::vector<std::string>{path(".ckpt.old-0123")});
  EXPECT_EQ(get(path("ckpt/a")), "old a");
  // With the new one in place, a leftover old one is removed instead.
  fs::create_directories(path(".ckpt.old-4567"));
  age(path(".ckpt.old-4567"), 60);
  remove_stale_temporaries(path("ckpt"));
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt"});
}

// A full disk: the error names the file and the reason, the old checkpoint and the directory
// are as they were. Needs a small tmpfs, which only root can mount.
class FullDisk : public Files {
 protected:
  void SetUp() override {
    Files::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
    mount_ = (dir_ / "small").string();
    fs::create_directories(mount_);
    ASSERT_EQ(std::system(("mount -t tmpfs -o size=1m tmpfs " + mount_).c_str()), 0);
  }
  void TearDown() override {
    if (!mount_.empty()) std::system(("umount " + mount_).c_str());
    Files::TearDown();
  }
  std::vector<std::string> small_entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(mount_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string mount_;
};

TEST_F(FullDisk, ASaveThatDoesNotFitLeavesTheOldFile) {
  const std::string target = mount_ + "/ckpt.pt";
  put(target, "old");
  const std::string big(2 << 20, 'x');
  for (bool positional : {false, true}) {
    try {
      AtomicFileSink sink(target, true);
      if (positional) {
        sink.preallocate(big.size());
        sink.write_at(0, big.data(), big.size());
      } else {
        sink.write(big.data(), big.size());
      }
      sink.commit();
      FAIL() << "no error";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(target), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    }
    EXPECT_EQ(get(target), "old");
    EXPECT_EQ(small_entries(), std::vector<std::string>{"ckpt.pt"});
  }
}

}  // namespace
}  // namespace fabricckpt
