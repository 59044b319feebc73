#include "fabricckpt/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <random>
#include <system_error>
#include <vector>

#include "fabricckpt/error.h"

namespace fabricckpt {

namespace {

std::string reason(int error) { return std::strerror(error); }

// Closes a descriptor on scope exit.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

// --- MappedFile ---------------------------------------------------------------------------

MappedFile::MappedFile(std::string path, const uint8_t* data, size_t size, bool mapped,
                       std::string owned)
    : path_(std::move(path)), data_(data), size_(size), mapped_(mapped), owned_(std::move(owned)) {
  if (!mapped_) {
    data_ = reinterpret_cast<const uint8_t*>(owned_.data());
    size_ = owned_.size();
  }
}

MappedFile::~MappedFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) { return open_mode(path, false); }

std::shared_ptr<const MappedFile> MappedFile::open_private(const std::string& path) {
  return open_mode(path, true);
}

uint8_t* MappedFile::mutable_data() const {
  if (!writable_) throw Error(concat(path_, " is mapped read-only"));
  return const_cast<uint8_t*>(data_);
}

void MappedFile::advise(uint64_t offset, uint64_t size, Access access) const {
  if (parent_) {
    if (offset < size_) parent_->advise(parent_offset_ + offset, std::min<uint64_t>(size, size_ - offset), access);
    return;
  }
  if (!mapped_ || offset >= size_) return;
  size = std::min<uint64_t>(size, size_ - offset);
  // madvise wants a page-aligned start (the mapping itself starts on a page).
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const int advice = access == Access::Random ? MADV_RANDOM : access == Access::WillNeed ? MADV_WILLNEED : MADV_NORMAL;
  ::madvise(const_cast<uint8_t*>(data_) + start, size + (offset - start), advice);
}

void MappedFile::prefetch(uint64_t offset, uint64_t size) const {
  if (parent_) {
    if (offset < size_) parent_->prefetch(parent_offset_ + offset, std::min<uint64_t>(size, size_ - offset));
    return;
  }
  if (fd_ >= 0 && size > 0) ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(size), POSIX_FADV_WILLNEED);
}

uint64_t MappedFile::resident_bytes(uint64_t offset, uint64_t size) const {
  if (parent_) {
    if (offset >= size_ || size == 0) return 0;
    return parent_->resident_bytes(parent_offset_ + offset, std::min<uint64_t>(size, size_ - offset));
  }
  if (!mapped_) return size;  // in memory
  if (offset >= size_ || size == 0) return 0;
  size = std::min<uint64_t>(size, size_ - offset);
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = offset / page;
  const uint64_t last = (offset + size - 1) / page;
  std::vector<unsigned char> pages(last - first + 1);
  if (::mincore(const_cast<uint8_t*>(data_) + first * page, (last - first + 1) * page, pages.data()) != 0) {
    return size;  // unknown: treat as cached
  }
  uint64_t resident = 0;
  for (unsigned char p : pages) resident += (p & 1) ? page : 0;
  return std::min(resident, size);
}

void MappedFile::read_at(uint64_t offset, void* dest, size_t size) const {
  check_read_range(path_, size_, offset, size);
  if (parent_) {
    parent_->read_at(parent_offset_ + offset, dest, size);
    return;
  }
  if (fd_ < 0) {  // in-memory content
    if (size > 0) std::memcpy(dest, data_ + offset, size);
    return;
  }
  if (staged_) {
    staged_->read(offset, dest, size, [this](uint64_t at, void* out, size_t n) { pread_all(at, out, n); });
    return;
  }
  pread_all(offset, dest, size);
}

void MappedFile::pread_all(uint64_t offset, void* dest, size_t size) const {
  char* p = static_cast<char*>(dest);
  while (size > 0) {
    ssize_t n = ::pread(fd_, p, size < (size_t{1} << 30) ? size : (size_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      throw IoError(concat("cannot read ", path_, ": ", reason(error)), error);
    }
    if (n == 0) throw IoError(concat("cannot read ", path_, ": the file got shorter while it was read"));
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

std::shared_ptr<const MappedFile> MappedFile::open_mode(const std::string& path, bool writable) {
  FdGuard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    int error = errno;
    throw IoError(concat("cannot open ", path, ": ", reason(error)), error, path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    int error = errno;
    throw IoError(concat("cannot stat ", path, ": ", reason(error)), error, path);
  }
  if (!S_ISREG(st.st_mode)) {
    throw IoError(concat("cannot read ", path, ": not a regular file"), S_ISDIR(st.st_mode) ? EISDIR : EINVAL, path);
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    return std::shared_ptr<const MappedFile>(new MappedFile(path, nullptr, 0, false, {}));
  }
  // Private either way: with PROT_WRITE, writes make private copies of the pages (copy on write).
  void* data = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (data == MAP_FAILED) {
    int error = errno;
    throw IoError(concat("cannot map ", path, ": ", reason(error)), error);
  }
  auto file = std::shared_ptr<MappedFile>(new MappedFile(path, static_cast<const uint8_t*>(data), size, true, {}));
  file->writable_ = writable;
  file->readable_mapping_ = writable;
  // Kept for read_at(): parsing never touches the mapping, even of an mmap load.
  int kept = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
  if (kept < 0) {
    int error = errno;
    throw IoError(concat("cannot keep ", path, " open: ", reason(error)), error);
  }
  file->fd_ = kept;
  file->staged_ = staged_file(path);
  // A mapping would show a staged file's holes as zeros: only read_at() knows where its bytes are.
  if (file->staged_ && writable) throw Error(concat(path, ": staged from object storage, so it cannot be mapped"));
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(std::string bytes, std::string name, bool writable) {
  std::shared_ptr<MappedFile> file(new MappedFile(std::move(name), nullptr, 0, false, std::move(bytes)));
  file->writable_ = writable;
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::anonymous(size_t size, std::string name) {
  if (size == 0) return from_bytes(std::string(), std::move(name), /*writable=*/true);
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    throw IoError(concat(name, ": cannot allocate ", size, " bytes of memory: ", std::strerror(error)), error, name);
  }
#ifdef MADV_HUGEPAGE
  ::madvise(base, size, MADV_HUGEPAGE);
#endif
  std::shared_ptr<MappedFile> memory(
      new MappedFile(std::move(name), static_cast<const uint8_t*>(base), size, /*mapped=*/true, std::string()));
  memory->writable_ = true;
  return memory;
}

std::shared_ptr<const MappedFile> MappedFile::slice(std::shared_ptr<const MappedFile> parent, uint64_t offset,
                                                   uint64_t size, std::string name) {
  if (!parent || offset > parent->size() || size > parent->size() - offset) {
    throw FormatError(concat(name, ": bytes ", offset, "+", size, " lie beyond the end of ",
                             parent ? parent->path() : std::string("(null)"), " (",
                             parent ? parent->size() : 0, " bytes)"));
  }
  std::shared_ptr<MappedFile> view(new MappedFile(std::move(name), nullptr, 0, false, std::string()));
  view->data_ = parent->data() ? parent->data() + offset : nullptr;
  view->size_ = static_cast<size_t>(size);
  view->writable_ = parent->writable_;
  view->readable_mapping_ = parent->readable_mapping_;
  view->parent_offset_ = offset;
  view->parent_ = std::move(parent);
  return view;
}

// --- DirectFile ----------------------------------------------------------------------------

std::unique_ptr<DirectFile> DirectFile::open(const MappedFile& file) {
  if (file.fd_ < 0 || file.staged_) return nullptr;  // a staged file's holes are not in it
  // Through /proc/self/fd: the very inode the mapping shows, whatever the path names now.
  const std::string self = "/proc/self/fd/" + std::to_string(file.fd_);
  int fd = ::open(self.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return nullptr;
  return std::unique_ptr<DirectFile>(new DirectFile(fd, file.path()));
}

DirectFile::~DirectFile() { ::close(fd_); }

int64_t DirectFile::read(uint64_t offset, void* dest, size_t size) const {
  char* p = static_cast<char*>(dest);
  int64_t done = 0;
  while (size > 0) {
    ssize_t n = ::pread(fd_, p, size < (size_t{1} << 30) ? size : (size_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL) return -1;
      int error = errno;
      throw IoError(concat("cannot read ", path_, ": ", reason(error)), error);
    }
    if (n == 0) break;  // end of file
    p += n;
    done += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
    if (static_cast<uint64_t>(n) % kAlignment != 0) break;  // a short read ends at the end of the file
  }
  return done;
}

// --- OutputSink, StringSink ---------------------------------------------------------------

void OutputSink::skip(uint64_t) { throw Error("this output cannot leave gaps for data written elsewhere"); }

// --- StringSink ---------------------------------------------------------------------------

void StringSink::write(const void* data, size_t size) {
  buffer_.append(static_cast<const char*>(data), size);
}

// --- temporary names, locks, stale files -------------------------------------------------

namespace {

namespace fs = std::filesystem;

// `.NAME.tmp-` and `.NAME.old-`: the prefixes of what a save of NAME puts beside it.
std::string temp_prefix(const fs::path& target) { return "." + target.filename().string() + ".tmp-"; }
std::string old_prefix(const fs::path& target) { return "." + target.filename().string() + ".old-"; }

std::string random_suffix() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  char suffix[24];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(generator()));
  return suffix;
}

// A writer older than this that holds no lock is dead. The margin covers the moment
// between a named temporary's creation and its writer's flock.
constexpr int kStaleAfterSeconds = 5;

bool is_stale(const fs::path& entry) {
  FdGuard fd(::open(entry.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (fd.get() < 0) return false;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return false;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return false;
  if (::time(nullptr) - st.st_mtime < kStaleAfterSeconds) return false;
  // Closing the descriptor releases the probe's own lock.
  return ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0;
}

void sync_directory(const std::string& directory, const std::string& what) {
  FdGuard dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0 || ::fsync(dir.get()) != 0) {
    int error = errno;
    throw IoError(concat("cannot sync directory ", directory, " of ", what, ": ", reason(error)), error);
  }
}

std::string parent_of(const std::string& path) {
  std::string directory = fs::path(path).parent_path().string();
  return directory.empty() ? "." : directory;
}

void create_parents(const std::string& target) {
  fs::path directory = fs::path(target).parent_path();
  if (directory.empty()) return;
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) {
    throw IoError(concat("cannot create directory ", directory.string(), " for ", target, ": ", error.message()));
  }
}

}  // namespace

std::string resolve_symlinks(const std::string& path) {
  fs::path current(path);
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code error;
    if (!fs::is_symlink(fs::symlink_status(current, error))) return current.string();
    fs::path next = fs::read_symlink(current, error);
    if (error) throw IoError(concat("cannot read the symbolic link ", current.string(), ": ", error.message()));
    current = next.is_absolute() ? next : current.parent_path() / next;
  }
  throw IoError(concat("cannot write ", path, ": too many levels of symbolic links"));
}

std::vector<std::string> remove_stale_temporaries(const std::string& target_path) {
  const fs::path target(resolve_symlinks(target_path));
  fs::path directory = target.parent_path();
  if (directory.empty()) directory = ".";
  const std::string temp = temp_prefix(target), old = old_prefix(target);
  std::vector<std::string> done;
  std::error_code error;
  std::vector<fs::path> olds;
  for (const auto& entry : fs::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(old, 0) == 0) {
      olds.push_back(entry.path());
    } else if (name.rfind(temp, 0) == 0 && is_stale(entry.path())) {
      std::error_code removal;
      fs::remove_all(entry.path(), removal);
      if (removal) throw IoError(concat("cannot remove ", entry.path().string(), ", left by a save that did not finish: ",
                                        removal.message()));
      done.push_back(entry.path().string());
    }
  }
  if (error && error != std::errc::no_such_file_or_directory) {
    throw IoError(concat("cannot list ", directory.string(), " for stale temporary files: ", error.message()));
  }
  for (const fs::path& entry : olds) {
    if (!is_stale(entry)) continue;
    std::error_code status;
    const bool target_exists = fs::exists(fs::symlink_status(target, status));
    std::error_code removal;
    if (!target_exists) {
      fs::rename(entry, target, removal);  // the interrupted replacement's old checkpoint, put back
    } else {
      fs::remove_all(entry, removal);
    }
    if (removal) throw IoError(concat("cannot clean up ", entry.string(), ": ", removal.message()));
    done.push_back(entry.string());
  }
  return done;
}

// --- AtomicFileSink -----------------------------------------------------------------------

AtomicFileSink::AtomicFileSink(std::string target_path, bool fsync)
    : target_path_(resolve_symlinks(target_path)), fsync_(fsync) {
  fs::path target(target_path_);
  if (target.filename().empty() || target.filename() == "." || target.filename() == "..") {
    throw IoError(concat("cannot write ", target_path_, ": not a file name"));
  }
  std::error_code status;
  if (fs::is_directory(fs::status(target, status))) {
    throw IoError(concat("cannot write ", target_path_, ": it is a directory"));
  }
  create_parents(target_path_);
  remove_stale_temporaries(target_path_);
  const std::string directory = parent_of(target_path_);

  // Created with 0666 so that the umask applies as it would to a file torch.save creates.
  // Unnamed first where the file system can (and /proc lets us name it later).
  if (::access("/proc/self/fd", X_OK) == 0) {
    fd_ = ::open(directory.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    unnamed_ = fd_ >= 0;
  }
  // Otherwise a name no other writer picks; O_EXCL makes sure of it.
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_path_ = (fs::path(directory) / (temp_prefix(target) + random_suffix())).string();
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && (errno != EEXIST || attempt == 100)) {
      int error = errno;
      throw IoError(concat("cannot create temporary file ", temp_path_, " for ", target_path_, ": ",
                           reason(error)), error);
    }
  }
  // Held until the file is renamed or removed: a live writer's file is never cleaned away.
  ::flock(fd_, LOCK_EX | LOCK_NB);
  // Replacing a file keeps its permission bits, as overwriting it in place would.
  struct stat st;
  if (::stat(target_path_.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    ::fchmod(fd_, st.st_mode & 07777);
  }
  buffer_ = std::make_unique<char[]>(kBufferSize);
}

AtomicFileSink::~AtomicFileSink() {
  if (committed_) return;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());  // an unnamed file just goes with its descriptor
  if (fd_ >= 0) ::close(fd_);
}

void AtomicFileSink::fail(const char* what, int error) const {
  throw IoError(concat(what, " ", target_path_, " (temporary file ",
                       temp_path_.empty() ? std::string("without a name yet") : temp_path_, "): ", reason(error)), error);
}

// Links the unnamed file into the directory as `.NAME.tmp-<random>`, ready for the rename.
void AtomicFileSink::give_temp_a_name() {
  const std::string self = "/proc/self/fd/" + std::to_string(fd_);
  const fs::path target(target_path_);
  for (int attempt = 0;; ++attempt) {
    temp_path_ = (fs::path(parent_of(target_path_)) / (temp_prefix(target) + random_suffix())).string();
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, temp_path_.c_str(), AT_SYMLINK_FOLLOW) == 0) return;
    const int error = errno;
    if (error != EEXIST || attempt == 100) {
      temp_path_.clear();
      fail("cannot name the temporary file of", error);
    }
  }
}

void AtomicFileSink::write_fully(uint64_t offset, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux moves at most ~2 GiB per call.
    ssize_t n = ::pwrite(fd_, p, size < (size_t{1} << 30) ? size : (size_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", errno);
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileSink::flush_buffer() {
  if (buffered_ == 0) return;
  write_fully(position_ - buffered_, buffer_.get(), buffered_);
  buffered_ = 0;
}

void AtomicFileSink::write(const void* data, size_t size) {
  if (committed_) throw Error(concat("write to ", target_path_, " after commit"));
  if (size > kBufferSize - buffered_) flush_buffer();
  if (size >= kBufferSize) {
    write_fully(position_, data, size);  // large blocks skip the copy
  } else {
    std::memcpy(buffer_.get() + buffered_, data, size);
    buffered_ += size;
  }
  position_ += size;
}

void AtomicFileSink::skip(uint64_t size) {
  if (committed_) throw Error(concat("write to ", target_path_, " after commit"));
  flush_buffer();
  position_ += size;
}

void AtomicFileSink::preallocate(uint64_t size) {
  if (committed_) throw Error(concat("write to ", target_path_, " after commit"));
  if (size == 0) return;
  // fallocate(2), not posix_fallocate: no slow emulation where the file system lacks it
  // (EOPNOTSUPP); then the blocks are allocated as the data comes.
  if (::fallocate(fd_, 0, 0, static_cast<off_t>(size)) != 0) {
    int error = errno;
    if (error == ENOSPC || error == EFBIG || error == EIO) fail("cannot reserve space for", error);
  }
}

void AtomicFileSink::write_at(uint64_t offset, const void* data, size_t size) {
  if (committed_) throw Error(concat("write to ", target_path_, " after commit"));
  {
    std::lock_guard<std::mutex> turn(write_at_mutex_);
    write_fully(offset, data, size);
  }
  // Starts write-back of this range now; commit() then waits only for the tail.
  if (fsync_ && size > 0) ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(size), SYNC_FILE_RANGE_WRITE);
}

void AtomicFileSink::commit() {
  if (committed_) throw Error(concat("commit of ", target_path_, " called twice"));
  flush_buffer();
  if (fsync_ && ::fsync(fd_) != 0) fail("cannot sync", errno);
  if (unnamed_) give_temp_a_name();
  // Renamed while the descriptor (and its lock) is still held, so nobody takes the named
  // file for a dead writer's.
  if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0) fail("cannot rename over", errno);
  committed_ = true;
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    int error = errno;
    throw IoError(concat("cannot close ", target_path_, ": ", reason(error)), error);
  }
  // The rename is durable once the directory entry is.
  if (fsync_) sync_directory(parent_of(target_path_), target_path_);
}

// --- AtomicDirectory ----------------------------------------------------------------------

AtomicDirectory::AtomicDirectory(std::string target_path, bool fsync)
    : target_path_(resolve_symlinks(target_path)), fsync_(fsync) {
  const fs::path target(target_path_);
  if (target.filename().empty() || target.filename() == "." || target.filename() == "..") {
    throw IoError(concat("cannot write ", target_path_, ": not a directory name"));
  }
  create_parents(target_path_);
  remove_stale_temporaries(target_path_);
  for (int attempt = 0;; ++attempt) {
    temp_path_ = (fs::path(parent_of(target_path_)) / (temp_prefix(target) + random_suffix())).string();
    if (::mkdir(temp_path_.c_str(), 0777) == 0) break;
    const int error = errno;
    if (error != EEXIST || attempt == 100) {
      throw IoError(concat("cannot create the temporary directory ", temp_path_, " for ", target_path_, ": ",
                           reason(error)), error);
    }
  }
  fd_ = ::open(temp_path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) {
    const int error = errno;
    ::rmdir(temp_path_.c_str());
    throw IoError(concat("cannot open the temporary directory ", temp_path_, ": ", reason(error)), error);
  }
  ::flock(fd_, LOCK_EX | LOCK_NB);
}

AtomicDirectory::~AtomicDirectory() {
  std::error_code ignored;
  if (!committed_) fs::remove_all(temp_path_, ignored);
  if (fd_ >= 0) ::close(fd_);
}

void AtomicDirectory::commit() {
  if (committed_) throw Error(concat("commit of ", target_path_, " called twice"));
  if (fsync_ && ::fsync(fd_) != 0) {
    const int error = errno;
    throw IoError(concat("cannot sync ", temp_path_, " (the new ", target_path_, "): ", reason(error)), error);
  }
  const std::string parent = parent_of(target_path_);
  std::error_code status;
  std::string old_content;  // where the replaced target is now, to be removed
  if (!fs::exists(fs::symlink_status(target_path_, status))) {
    if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0) {
      const int error = errno;
      throw IoError(concat("cannot move ", temp_path_, " to ", target_path_, ": ", reason(error)), error);
    }
  } else if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, target_path_.c_str(), RENAME_EXCHANGE) == 0) {
    old_content = temp_path_;
  } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
    // No exchange here: set the old one aside under a name that remove_stale_temporaries()
    // restores should the second rename never happen.
    old_content = (fs::path(parent) / (old_prefix(fs::path(target_path_)) + random_suffix())).string();
    if (::rename(target_path_.c_str(), old_content.c_str()) != 0) {
      const int error = errno;
      throw IoError(concat("cannot set ", target_path_, " aside: ", reason(error)), error);
    }
    if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0) {
      const int error = errno;
      ::rename(old_content.c_str(), target_path_.c_str());
      throw IoError(concat("cannot move ", temp_path_, " to ", target_path_, ": ", reason(error)), error);
    }
  } else {
    const int error = errno;
    throw IoError(concat("cannot swap ", temp_path_, " with ", target_path_, ": ", reason(error)), error);
  }
  committed_ = true;
  if (fsync_) sync_directory(parent, target_path_);
  if (!old_content.empty()) {
    std::error_code removal;
    fs::remove_all(old_content, removal);  // what is left (an error here) is stale and cleaned next time
  }
}

}  // namespace fabricckpt
