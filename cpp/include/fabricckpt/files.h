// File access for the core: files opened for reading (positional reads, and memory maps
// for mmap loads), and output sinks for saving (in memory, or a temporary file that
// atomically replaces its target); directories written beside their target and
// swapped in whole.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fabricckpt/read_source.h"
#include "fabricckpt/staged_files.h"

namespace fabricckpt {

// How far a long save or load is: bytes done of bytes total. Written by the
// worker threads, read by anyone (a progress bar polls it).
struct IoProgress {
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> total{0};

  void add(uint64_t bytes) { done.fetch_add(bytes, std::memory_order_relaxed); }
};

// A file opened for reading; closed (and unmapped) when the last owner lets go.
//
// Two ways to read it. read_at() copies bytes with pread(2): another program that
// truncates or rewrites the file meanwhile can only make it fail (IoError) or give
// bytes whose CRC-32 does not match; the process never faults. data() is the file
// mapped into memory: only for open_private() (torch.load(mmap=True)), whose
// tensors view the mapping, and for in-memory content. Parsers read with read_at(), as a
// ReadSource.
class MappedFile final : public ReadSource {
 public:
  // Read with read_at() only: the mapping it also holds is never dereferenced (it serves
  // resident_bytes() and advise()). IoError naming the path and the system's reason.
  // Empty files are allowed. A file staged from object storage (staged_files.h) reads its holes
  // from there.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // A private copy-on-write mapping (what torch.load(mmap=True) uses): the bytes can be
  // changed through mutable_data() without ever reaching the file. Pages are read on
  // first touch. As with any mapping, a file truncated in place by someone else
  // makes later reads of the lost pages fault (SIGBUS, as in Python); replacing it by
  // rename, as every save here and Lightning's do, is safe.
  static std::shared_ptr<const MappedFile> open_private(const std::string& path);
  // Holds `bytes` under the display name `name` (for tests and in-memory input). `writable`: the
  // bytes are this object's alone (an object downloaded from storage), so a load may hand out
  // tensors viewing them (mutable_data()), as it does for a private mapping.
  static std::shared_ptr<const MappedFile> from_bytes(std::string bytes, std::string name, bool writable = false);
  // `size` bytes of fresh, writable memory under the name `name`, for the caller to fill through
  // mutable_data() before anything reads it (an object downloaded from storage): an anonymous
  // mapping advised to use transparent huge pages, so that the fill itself faults the pages in, a
  // few per 2 MiB, on the filling threads, instead of a zeroing pass first. IoError when the memory
  // cannot be had.
  static std::shared_ptr<const MappedFile> anonymous(size_t size, std::string name);
  // [offset, offset + size) of `parent` as a file of its own named `name`, without a copy: it
  // keeps the parent alive, reads through it, and is writable when the parent is (a private
  // mapping). For the torch.save streams inside a torch.distributed.checkpoint file. Error if
  // out of bounds.
  static std::shared_ptr<const MappedFile> slice(std::shared_ptr<const MappedFile> parent, uint64_t offset,
                                                 uint64_t size, std::string name);

  ~MappedFile() override;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // The mapped bytes: see the class comment for when they may be dereferenced (mapped()).
  const uint8_t* data() const { return data_; }
  // Whether data() may be read: a private mapping, in-memory content, or a slice of either.
  bool mapped() const { return readable_mapping_; }
  uint64_t size() const override { return size_; }
  const std::string& path() const { return path_; }
  const std::string& name() const override { return path_; }
  // Tells the kernel how the mapping will be read (madvise). Parsing touches a few
  // scattered pages (the directory, each record's local header); with the default
  // read-around every such touch can read megabytes, so loads parse under Random
  // and go back to Normal for the data. A hint: failures are ignored.
  enum class Access { Normal, Random, WillNeed };
  void advise(Access access) const { advise(0, size_, access); }
  void advise(uint64_t offset, uint64_t size, Access access) const;

  // Writable bytes of an open_private() mapping (changes stay in this process); Error otherwise.
  uint8_t* mutable_data() const;
  bool writable() const { return writable_; }

  // Copies [offset, offset + size) of the file into `dest` with pread(2), from
  // the descriptor opened first (so the same file even if the path was replaced
  // since), or from memory for in-memory content. IoError on failure or a file
  // that got shorter; FormatError naming the file when the range lies past its end.
  void read_at(uint64_t offset, void* dest, size_t size) const override;
  // Asks the kernel to start reading [offset, offset + size) into the page cache
  // now (POSIX_FADV_WILLNEED), so that a read_at() of it later finds it there.
  void prefetch(uint64_t offset, uint64_t size) const override;
  // How many bytes of [offset, offset + size) are in the page cache (mincore), by whole pages.
  uint64_t resident_bytes(uint64_t offset, uint64_t size) const;

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, bool mapped, std::string owned);
  void pread_all(uint64_t offset, void* dest, size_t size) const;
  static std::shared_ptr<const MappedFile> open_mode(const std::string& path, bool writable);

  std::string path_;
  const uint8_t* data_;
  size_t size_;
  bool mapped_;        // data_ came from mmap and must be unmapped
  std::string owned_;  // the bytes behind data_ when not mapped
  bool writable_ = false;
  bool readable_mapping_ = true;  // false for open(): data() is not to be dereferenced
  int fd_ = -1;        // kept open for read_at(); -1 for in-memory content and slices
  std::shared_ptr<const StagedFile> staged_;  // where its holes are read from, for a staged file
  std::shared_ptr<const MappedFile> parent_;  // what a slice views
  uint64_t parent_offset_ = 0;                // where a slice starts in its parent

  friend class DirectFile;
};

// The file behind a MappedFile opened again for O_DIRECT reads, which bypass the
// page cache: for eager loads of files that are not cached, the disk's DMA lands
// straight in the destination memory instead of in the page cache and then a copy.
class DirectFile {
 public:
  // Offsets, sizes and destinations of read() are multiples of this.
  static constexpr uint64_t kAlignment = 4096;

  // The same file (the same inode, even if the path was replaced since), or
  // nullptr where O_DIRECT is not available (in-memory content, file systems without it).
  static std::unique_ptr<DirectFile> open(const MappedFile& file);
  ~DirectFile();
  DirectFile(const DirectFile&) = delete;
  DirectFile& operator=(const DirectFile&) = delete;

  // Reads [offset, offset + size), stopping early only at the end of the file;
  // returns the bytes read, or -1 where the kernel refuses this alignment (the
  // caller then reads another way). IoError on other failures. Safe from several threads.
  int64_t read(uint64_t offset, void* dest, size_t size) const;

 private:
  DirectFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

// Where a writer sends its bytes, in order.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void write(const void* data, size_t size) = 0;
  // Bytes written so far.
  virtual uint64_t position() const = 0;
  // Moves the position `size` bytes on without writing them: someone else puts
  // those bytes there (a parallel writer, see AtomicFileSink::write_at). Sinks
  // that cannot do that throw Error (the default).
  virtual void skip(uint64_t size);
};

// Counts bytes and remembers where each skipped range starts: the layout of a
// file planned before any byte of it is written.
class PlanningSink : public OutputSink {
 public:
  void write(const void*, size_t size) override { position_ += size; }
  uint64_t position() const override { return position_; }
  void skip(uint64_t size) override {
    skipped_.push_back(position_);
    position_ += size;
  }
  const std::vector<uint64_t>& skipped_offsets() const { return skipped_; }

 private:
  uint64_t position_ = 0;
  std::vector<uint64_t> skipped_;
};

// Collects everything in a string: for tests and small outputs.
class StringSink : public OutputSink {
 public:
  void write(const void* data, size_t size) override;
  uint64_t position() const override { return buffer_.size(); }
  std::string& str() { return buffer_; }

 private:
  std::string buffer_;
};

// Writes to a temporary file next to the target and renames it over the target
// on commit(), so that readers see either the old file or the complete new one.
// Without commit() (an exception, an abandoned save) the destructor removes the
// temporary file and leaves the target as it was.
//
// The temporary file has no name while it is written (O_TMPFILE where the file
// system has it), so a writer killed midway leaves nothing behind; it gets its
// `.NAME.tmp-*` name just before the rename. Elsewhere it is named from the start.
// Either way the writer holds an exclusive flock(2) on it, which is how
// remove_stale_temporaries() tells a dead writer's file from a live one's.
//
// A target that is a symbolic link is written through, as torch.save does: the
// file the link resolves to is replaced and the link stays. A target that is a
// directory is refused before anything is written.
class AtomicFileSink : public OutputSink {
 public:
  // Creates missing parent directories and the temporary file (after removing stale
  // ones a dead writer left for the same target); IoError on failure.
  // With `fsync` the data and the rename are made durable in commit().
  AtomicFileSink(std::string target_path, bool fsync);
  ~AtomicFileSink() override;
  AtomicFileSink(const AtomicFileSink&) = delete;
  AtomicFileSink& operator=(const AtomicFileSink&) = delete;

  void write(const void* data, size_t size) override;
  uint64_t position() const override { return position_; }
  void skip(uint64_t size) override;

  // --- positional writing, for writers that planned the layout (several threads at once) ---
  // Reserves the file's final size up front (fallocate where the file system has
  // it), so that parallel writes do not allocate blocks as they go.
  void preallocate(uint64_t size);
  // Writes `size` bytes at `offset` with pwrite(2), independently of position();
  // safe from several threads for disjoint ranges. The writes themselves take
  // turns (buffered writes to one file serialize on its inode lock anyway, and
  // waiting here sleeps where waiting there spins), so callers overlap their other
  // work (CRCs) with one another's writes. With fsync, the range is handed to the
  // kernel for write-back right away (sync_file_range), so that commit()'s fsync
  // has little left to wait for.
  void write_at(uint64_t offset, const void* data, size_t size);

  // Flushes, optionally fsyncs, renames over the target (then fsyncs its directory). Once only.
  void commit();
  // The file that is replaced: the target with symbolic links resolved.
  const std::string& target_path() const { return target_path_; }
  // The temporary file's name; empty while it has none (O_TMPFILE).
  const std::string& temp_path() const { return temp_path_; }

 private:
  static constexpr size_t kBufferSize = size_t{4} << 20;

  void flush_buffer();
  void write_fully(uint64_t offset, const void* data, size_t size);
  void give_temp_a_name();
  [[noreturn]] void fail(const char* what, int error) const;

  std::string target_path_;
  std::string temp_path_;
  bool fsync_;
  bool unnamed_ = false;  // O_TMPFILE: no name until commit()
  int fd_ = -1;
  bool committed_ = false;
  uint64_t position_ = 0;
  std::unique_ptr<char[]> buffer_;
  size_t buffered_ = 0;
  std::mutex write_at_mutex_;
};

// A directory written beside its target and swapped in whole: readers see the old
// directory or the complete new one, never a mix, and a writer killed at any point
// leaves the old one in place. Used for sharded checkpoints, whose files several
// processes write into path() before rank 0 commits.
//
// The new directory is `.NAME.tmp-<random>` beside the target, locked with flock(2)
// while this object lives. commit() swaps it with the target in one step
// (renameat2(RENAME_EXCHANGE); a plain rename when there is no target), fsyncs the
// parent directory, then removes the old content. On file systems without the
// exchange the old target is first renamed to `.NAME.old-<random>`; a writer killed
// between the two renames leaves it there, and remove_stale_temporaries() puts it back.
class AtomicDirectory {
 public:
  // Creates the temporary directory (and missing parents of the target), after removing
  // stale ones; IoError on failure.
  AtomicDirectory(std::string target_path, bool fsync);
  ~AtomicDirectory();  // without commit(): removes the temporary directory and its files
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;

  // Where the new content goes.
  const std::string& path() const { return temp_path_; }
  const std::string& target_path() const { return target_path_; }
  // fsyncs the new directory, swaps it in, fsyncs the parent, removes the old content. Once only.
  void commit();

 private:
  std::string target_path_;
  std::string temp_path_;
  bool fsync_;
  int fd_ = -1;  // the temporary directory, holding the lock
  bool committed_ = false;
};

// Removes what writers killed midway left beside `target` (`.NAME.tmp-*` files and
// directories whose writer no longer holds their lock and that are older than a few
// seconds), and puts back a directory that an interrupted AtomicDirectory::commit()
// left as `.NAME.old-*` when `target` is missing. Returns the paths it removed or
// restored. Every save calls it for its own target; `fabric-ckpt clean` on demand.
std::vector<std::string> remove_stale_temporaries(const std::string& target);

// `path` with symbolic links of its last component resolved, as open(2) follows them
// (a dangling link gives the path it points to). IoError for a loop.
std::string resolve_symlinks(const std::string& path);

}  // namespace fabricckpt
