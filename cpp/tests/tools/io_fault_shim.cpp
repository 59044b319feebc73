// An LD_PRELOAD library that makes a process's file writes fail, for the fault tests
// (save_fault_test.cpp): the disk errors a real device gives (EIO, EDQUOT, ENOSPC) at a chosen
// moment, without a special device.
//
//   FABRICCKPT_FAULT=CALL:ERRNO[:AFTER]
//     CALL   pwrite (every positional write: all file data of a save), fsync, or fallocate
//     ERRNO  EIO, EDQUOT or ENOSPC
//     AFTER  pwrite only: bytes written successfully first (default 0)
//   FABRICCKPT_FAULT_RANK=R (optional): only the process whose RANK is R fails (one rank of a group)
#include <dlfcn.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Fault {
  std::string call;
  int error = 0;
  long long after = 0;
};

const Fault& fault() {
  static const Fault parsed = [] {
    Fault f;
    const char* spec = std::getenv("FABRICCKPT_FAULT");
    if (!spec) return f;
    const char* only = std::getenv("FABRICCKPT_FAULT_RANK");
    const char* rank = std::getenv("RANK");
    if (only && (!rank || std::string(only) != rank)) return f;
    std::string s(spec);
    size_t first = s.find(':');
    size_t second = s.find(':', first + 1);
    f.call = s.substr(0, first);
    std::string name = s.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
    f.error = name == "EIO" ? EIO : name == "EDQUOT" ? EDQUOT : name == "ENOSPC" ? ENOSPC : 0;
    if (second != std::string::npos) f.after = std::atoll(s.c_str() + second + 1);
    return f;
  }();
  return parsed;
}

std::atomic<long long> written{0};

template <typename F>
F next(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

ssize_t faulty_pwrite(const char* name, int fd, const void* buf, size_t n, off_t offset) {
  using Pwrite = ssize_t (*)(int, const void*, size_t, off_t);
  static Pwrite real = next<Pwrite>(name);
  const Fault& f = fault();
  if (f.call == "pwrite" && f.error != 0) {
    long long before = written.fetch_add(static_cast<long long>(n));
    if (before + static_cast<long long>(n) > f.after) {
      errno = f.error;
      return -1;
    }
  }
  return real(fd, buf, n, offset);
}

}  // namespace

extern "C" {

ssize_t pwrite(int fd, const void* buf, size_t n, off_t offset) { return faulty_pwrite("pwrite", fd, buf, n, offset); }
ssize_t pwrite64(int fd, const void* buf, size_t n, off_t offset) {
  return faulty_pwrite("pwrite64", fd, buf, n, offset);
}

int fsync(int fd) {
  using Fsync = int (*)(int);
  static Fsync real = next<Fsync>("fsync");
  if (fault().call == "fsync" && fault().error != 0) {
    errno = fault().error;
    return -1;
  }
  return real(fd);
}

int fallocate(int fd, int mode, off_t offset, off_t length) {
  using Fallocate = int (*)(int, int, off_t, off_t);
  static Fallocate real = next<Fallocate>("fallocate");
  if (fault().call == "fallocate" && fault().error != 0) {
    errno = fault().error;
    return -1;
  }
  return real(fd, mode, offset, length);
}
int fallocate64(int fd, int mode, off_t offset, off_t length) { return fallocate(fd, mode, offset, length); }

}  // extern "C"
