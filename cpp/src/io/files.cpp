#include "fabricckpt/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
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
  if (!mapped_ || offset >= size_) return;
  size = std::min<uint64_t>(size, size_ - offset);
  // madvise wants a page-aligned start.
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const int advice = access == Access::Random ? MADV_RANDOM : access == Access::WillNeed ? MADV_WILLNEED : MADV_NORMAL;
  ::madvise(const_cast<uint8_t*>(data_) + start, size + (offset - start), advice);
}

void MappedFile::prefetch(uint64_t offset, uint64_t size) const {
  if (fd_ >= 0 && size > 0) ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(size), POSIX_FADV_WILLNEED);
}

uint64_t MappedFile::resident_bytes(uint64_t offset, uint64_t size) const {
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
  if (offset > size_ || size > size_ - offset) {
    throw IoError(concat("cannot read ", size, " bytes at offset ", offset, " of ", path_, ": beyond its ",
                         size_, " bytes"));
  }
  if (fd_ < 0) {  // in-memory content
    if (size > 0) std::memcpy(dest, data_ + offset, size);
    return;
  }
  char* p = static_cast<char*>(dest);
  while (size > 0) {
    ssize_t n = ::pread(fd_, p, size < (size_t{1} << 30) ? size : (size_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      throw IoError(concat("cannot read ", path_, ": ", reason(error)));
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
    throw IoError(concat("cannot open ", path, ": ", reason(error)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    int error = errno;
    throw IoError(concat("cannot stat ", path, ": ", reason(error)));
  }
  if (!S_ISREG(st.st_mode)) throw IoError(concat("cannot read ", path, ": not a regular file"));
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    return std::shared_ptr<const MappedFile>(new MappedFile(path, nullptr, 0, false, {}));
  }
  // Private either way: with PROT_WRITE, writes make private copies of the pages (copy on write).
  void* data = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (data == MAP_FAILED) {
    int error = errno;
    throw IoError(concat("cannot map ", path, ": ", reason(error)));
  }
  auto file = std::shared_ptr<MappedFile>(new MappedFile(path, static_cast<const uint8_t*>(data), size, true, {}));
  file->writable_ = writable;
  // A copy-on-write mapping lives as long as the tensors viewing it: it keeps no descriptor.
  // A read-only one keeps its descriptor for read_at().
  if (!writable) {
    int kept = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
    if (kept >= 0) file->fd_ = kept;
  }
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(std::string bytes, std::string name) {
  return std::shared_ptr<const MappedFile>(
      new MappedFile(std::move(name), nullptr, 0, false, std::move(bytes)));
}

std::shared_ptr<const MappedFile> MappedFile::slice(std::shared_ptr<const MappedFile> parent, uint64_t offset,
                                                   uint64_t size, std::string name) {
  if (!parent || offset > parent->size() || size > parent->size() - offset) {
    throw FormatError(concat(name, ": bytes ", offset, "+", size, " lie beyond the end of ",
                             parent ? parent->path() : std::string("(null)"), " (",
                             parent ? parent->size() : 0, " bytes)"));
  }
  std::shared_ptr<MappedFile> view(new MappedFile(std::move(name), nullptr, 0, false, std::string()));
  view->data_ = parent->data() + offset;
  view->size_ = static_cast<size_t>(size);
  view->writable_ = parent->writable_;
  view->parent_ = std::move(parent);
  return view;
}

// --- DirectFile ----------------------------------------------------------------------------

std::unique_ptr<DirectFile> DirectFile::open(const MappedFile& file) {
  if (file.fd_ < 0) return nullptr;
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
      throw IoError(concat("cannot read ", path_, ": ", reason(error)));
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

// --- AtomicFileSink -----------------------------------------------------------------------

AtomicFileSink::AtomicFileSink(std::string target_path, bool fsync)
    : target_path_(std::move(target_path)), fsync_(fsync) {
  namespace fs = std::filesystem;
  fs::path target(target_path_);
  if (target.filename().empty()) throw IoError(concat("cannot write ", target_path_, ": not a file name"));
  fs::path directory = target.parent_path();
  if (!directory.empty()) {
    std::error_code error;
    fs::create_directories(directory, error);
    if (error) {
      throw IoError(concat("cannot create directory ", directory.string(), " for ", target_path_,
                           ": ", error.message()));
    }
  }

  // A name no other writer picks; O_EXCL makes sure of it. Created with 0666
  // so that the umask applies as it would to a file torch.save creates.
  std::random_device random;
  std::uniform_int_distribution<uint64_t> any;
  for (int attempt = 0; fd_ < 0; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".tmp-%016llx", static_cast<unsigned long long>(any(random)));
    temp_path_ = (directory / ("." + target.filename().string() + suffix)).string();
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && (errno != EEXIST || attempt == 100)) {
      int error = errno;
      throw IoError(concat("cannot create temporary file ", temp_path_, " for ", target_path_, ": ",
                           reason(error)));
    }
  }
  // Replacing a file keeps its permission bits, as overwriting it in place would.
  struct stat st;
  if (::stat(target_path_.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    ::fchmod(fd_, st.st_mode & 07777);
  }
  buffer_ = std::make_unique<char[]>(kBufferSize);
}

AtomicFileSink::~AtomicFileSink() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(temp_path_.c_str());
}

void AtomicFileSink::fail(const char* what, int error) const {
  throw IoError(concat(what, " ", target_path_, " (temporary file ", temp_path_, "): ", reason(error)));
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
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot close", errno);
  if (::rename(temp_path_.c_str(), target_path_.c_str()) != 0) fail("cannot rename over", errno);
  committed_ = true;
  if (fsync_) {
    // The rename is durable once the directory entry is.
    std::string directory = std::filesystem::path(target_path_).parent_path().string();
    if (directory.empty()) directory = ".";
    FdGuard dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 || ::fsync(dir.get()) != 0) {
      int error = errno;
      throw IoError(concat("cannot sync directory ", directory, " of ", target_path_, ": ", reason(error)));
    }
  }
}

}  // namespace fabricckpt
