// ProcessGroup over libtorch's c10d: TCPStore rendezvous + ProcessGroupGloo (see dist.h).
//
// libtorch_cpu.so exports TCPStore, ProcessGroupGloo and its device factories; the gloo headers that
// ProcessGroupGloo.hpp includes are not in the torch wheel and come from the system (libgloo-dev).
// All gloo objects are created and used inside libtorch: this file only holds them by pointer, so
// the system headers' version does not matter for the ABI. Without those headers the library still
// builds and ProcessGroup's constructor says what is missing.
#include "fabricckpt/dist.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>
#include <vector>

#include "fabricckpt/error.h"

#if __has_include(<gloo/context.h>) && __has_include(<gloo/rendezvous/store.h>)
#define FABRICCKPT_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace fabricckpt {
namespace {

std::string seconds(std::chrono::milliseconds t) {
  std::ostringstream out;
  if (t.count() % 1000 == 0) {
    out << t.count() / 1000;
  } else {
    out << std::fixed << std::setprecision(1) << static_cast<double>(t.count()) / 1000.0;
  }
  return out.str();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The message of a libtorch/gloo exception without its C++ backtrace, on one line.
std::string cause_of(const std::exception& e) {
  std::string text;
#ifdef FABRICCKPT_HAVE_GLOO
  if (auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    text = c10->what_without_backtrace();
  } else {
    text = e.what();
  }
#else
  text = e.what();
#endif
  // Keep the first line (c10 appends context lines and backtraces).
  auto nl = text.find('\n');
  if (nl != std::string::npos) text.resize(nl);
  return text;
}

}  // namespace

#ifdef FABRICCKPT_HAVE_GLOO

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore, or a PrefixStore over it (background groups)
  std::shared_ptr<::gloo::transport::Device> device;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  std::mutex mutex;  // collectives run one at a time, in call order
};

namespace {

std::shared_ptr<::gloo::transport::Device> make_device(const std::string& host) {
  // As torch.distributed: GLOO_SOCKET_IFNAME names the interface; otherwise a loopback master means
  // a single-host group on loopback, and any other master the address this host's name resolves to.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  std::string h = lower(host);
  if (h == "localhost" || h.rfind("127.", 0) == 0 || h == "::1") {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Sends what is printed on std::cout to std::cerr while it lives.
class StdoutToStderr {
 public:
  StdoutToStderr() : saved_(std::cout.rdbuf(std::cerr.rdbuf())) {}
  ~StdoutToStderr() { std::cout.rdbuf(saved_); }
  StdoutToStderr(const StdoutToStderr&) = delete;
  StdoutToStderr& operator=(const StdoutToStderr&) = delete;

 private:
  std::streambuf* saved_;
};

}  // namespace

ProcessGroup::ProcessGroup(const ProcessGroupOptions& options)
    : impl_(std::make_unique<Impl>()),
      rank_(options.rank),
      world_size_(options.world_size),
      timeout_(options.timeout) {
  if (options.world_size < 1) throw Error(concat("process group: world size ", options.world_size, " is not positive"));
  if (options.rank < 0 || options.rank >= options.world_size) {
    throw Error(concat("process group: rank ", options.rank, " is not in [0, ", options.world_size, ")"));
  }
  if (options.port < 1 || options.port > 65535) throw Error(concat("process group: port ", options.port, " is invalid"));
  if (options.timeout.count() <= 0) throw Error("process group: the timeout must be positive");
  const std::string where = concat("rank ", rank_, " of ", world_size_, ": ");
  const std::string master = concat(options.host, ":", options.port);

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options.port);
  store_options.isServer = options.rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(options.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = options.timeout;
  store_options.useLibUV = false;  // the classic backend is in every libtorch build
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(options.host, store_options);
    impl_->device = make_device(options.host);
  } catch (const std::exception& e) {
    throw DistributedError(concat(where, "TCPStore rendezvous at ", master, " failed (timeout ", seconds(timeout_),
                                  " s): ", cause_of(e)),
                           rank_, "TCPStore rendezvous");
  }
  try {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
    gloo_options->devices.push_back(impl_->device);
    // Gloo prints "[Gloo] Rank R is connected to N peer ranks..." on std::cout while it connects; a
    // library must not write to an application's stdout (it corrupts e.g. surefire's channel).
    StdoutToStderr quiet;
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, options.rank, options.world_size,
                                                              gloo_options);
  } catch (const std::exception& e) {
    impl_->store.reset();
    throw DistributedError(concat(where, "Gloo process group over ", master, " failed (timeout ", seconds(timeout_),
                                  " s): ", cause_of(e)),
                           rank_, "Gloo rendezvous");
  }
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl, int rank, int world_size, std::chrono::milliseconds timeout)
    : impl_(std::move(impl)), rank_(rank), world_size_(world_size), timeout_(timeout) {}

std::unique_ptr<ProcessGroup> ProcessGroup::background_group(const std::string& prefix) {
  if (prefix.empty()) throw Error("process group: a background group needs a non-empty prefix");
  const std::string where = concat("rank ", rank_, " of ", world_size_, ": ");
  auto impl = std::make_unique<Impl>();
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!impl_->gloo) {
      throw DistributedError(concat(where, "background group '", prefix, "' of a closed process group"), rank_,
                             "background group");
    }
    // Under a prefix of ours: the parent's Gloo group keeps its keys at the store's root.
    impl->store = c10::make_intrusive<c10d::PrefixStore>(concat("fabricckpt/background/", prefix), impl_->store);
    impl->device = impl_->device;
  }
  try {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout_);
    gloo_options->devices.push_back(impl->device);
    StdoutToStderr quiet;  // as the parent's: Gloo's connect line is not the application's output
    impl->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, rank_, world_size_, gloo_options);
  } catch (const std::exception& e) {
    throw DistributedError(concat(where, "background Gloo group '", prefix, "' failed (timeout ", seconds(timeout_),
                                  " s): ", cause_of(e)),
                           rank_, "background Gloo rendezvous");
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl), rank_, world_size_, timeout_));
}

ProcessGroup::~ProcessGroup() {
  try {
    close();
  } catch (...) {
  }
}

void ProcessGroup::close() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->gloo.reset();
  impl_->store.reset();
}

namespace {

// Runs one collective and waits for it, turning failures into one clear Error.
template <typename Start>
void run_collective(ProcessGroup::Impl& impl, int rank, int world, std::chrono::milliseconds timeout,
                    const std::string& what, Start&& start) {
  if (!impl.gloo) {
    throw DistributedError(concat("rank ", rank, " of ", world, ": ", what, " on a closed process group"), rank, what);
  }
  try {
    auto work = start(*impl.gloo);
    work->wait();
  } catch (const std::exception& e) {
    std::string cause = cause_of(e);
    std::string l = lower(cause);
    if (l.find("timed out") != std::string::npos || l.find("timeout") != std::string::npos) {
      throw DistributedError(concat("rank ", rank, " of ", world, ": ", what, " timed out after ", seconds(timeout),
                                    " s waiting for the other ranks (one stalled or died): ", cause),
                             rank, what);
    }
    throw DistributedError(concat("rank ", rank, " of ", world, ": ", what,
                                  " failed, another rank is gone (its connection closed): ", cause),
                           rank, what);
  }
}

}  // namespace

void ProcessGroup::barrier() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  run_collective(*impl_, rank_, world_size_, timeout_, "barrier", [&](c10d::ProcessGroupGloo& pg) {
    c10d::BarrierOptions opts;
    opts.timeout = timeout_;
    return pg.barrier(opts);
  });
}

std::string ProcessGroup::broadcast(const std::string& bytes, int src) {
  if (src < 0 || src >= world_size_) throw Error(concat("broadcast: source rank ", src, " is not in [0, ", world_size_, ")"));
  std::lock_guard<std::mutex> lock(impl_->mutex);
  c10d::BroadcastOptions opts;
  opts.rootRank = src;
  opts.timeout = timeout_;
  // First the length, then the bytes (the receivers size their buffer from it).
  std::vector<at::Tensor> length{at::empty({1}, at::kLong)};
  length[0].fill_(static_cast<int64_t>(rank_ == src ? bytes.size() : 0));
  // Named after its root: on the others, that is the peer a failure waited for.
  const std::string what = concat("broadcast from rank ", src);
  run_collective(*impl_, rank_, world_size_, timeout_, what,
                 [&](c10d::ProcessGroupGloo& pg) { return pg.broadcast(length, opts); });
  const int64_t n = length[0].item<int64_t>();
  if (n < 0) throw Error(concat("broadcast: invalid length ", n));
  if (n == 0) return std::string();
  std::vector<at::Tensor> data{at::empty({n}, at::kByte)};
  if (rank_ == src) std::memcpy(data[0].data_ptr(), bytes.data(), static_cast<size_t>(n));
  run_collective(*impl_, rank_, world_size_, timeout_, what,
                 [&](c10d::ProcessGroupGloo& pg) { return pg.broadcast(data, opts); });
  return std::string(static_cast<const char*>(data[0].data_ptr()), static_cast<size_t>(n));
}

namespace {

int64_t all_reduce(ProcessGroup::Impl& impl, int rank, int world, std::chrono::milliseconds timeout, int64_t value,
                   c10d::ReduceOp op) {
  std::lock_guard<std::mutex> lock(impl.mutex);
  std::vector<at::Tensor> t{at::empty({1}, at::kLong)};
  t[0].fill_(value);
  c10d::AllreduceOptions opts;
  opts.reduceOp = op;
  opts.timeout = timeout;
  run_collective(impl, rank, world, timeout, "all-reduce",
                 [&](c10d::ProcessGroupGloo& pg) { return pg.allreduce(t, opts); });
  return t[0].item<int64_t>();
}

}  // namespace

int64_t ProcessGroup::all_reduce_sum(int64_t value) {
  return all_reduce(*impl_, rank_, world_size_, timeout_, value, c10d::ReduceOp::SUM);
}

int64_t ProcessGroup::all_reduce_min(int64_t value) {
  return all_reduce(*impl_, rank_, world_size_, timeout_, value, c10d::ReduceOp::MIN);
}

void ProcessGroup::send(const void* data, size_t size, int dst, int tag) {
  if (dst < 0 || dst >= world_size_ || dst == rank_) throw Error(concat("send: invalid destination rank ", dst));
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<at::Tensor> t{at::from_blob(const_cast<void*>(data), {static_cast<int64_t>(size)}, at::kByte)};
  run_collective(*impl_, rank_, world_size_, timeout_, concat("send to rank ", dst),
                 [&](c10d::ProcessGroupGloo& pg) { return pg.send(t, dst, tag); });
}

void ProcessGroup::recv(void* data, size_t size, int src, int tag) {
  if (src < 0 || src >= world_size_ || src == rank_) throw Error(concat("recv: invalid source rank ", src));
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<at::Tensor> t{at::from_blob(data, {static_cast<int64_t>(size)}, at::kByte)};
  run_collective(*impl_, rank_, world_size_, timeout_, concat("receive from rank ", src),
                 [&](c10d::ProcessGroupGloo& pg) { return pg.recv(t, src, tag); });
}

std::vector<std::string> ProcessGroup::gather(const std::string& bytes, int dst) {
  if (dst < 0 || dst >= world_size_) throw Error(concat("gather: destination rank ", dst, " is not in [0, ", world_size_, ")"));
  std::lock_guard<std::mutex> lock(impl_->mutex);
  // Every rank learns every length (an all-gather of one integer), then the bytes travel padded to
  // the longest (Gloo's gather moves equal-sized tensors), to `dst` only.
  std::vector<at::Tensor> my_length{at::empty({1}, at::kLong)};
  my_length[0].fill_(static_cast<int64_t>(bytes.size()));
  std::vector<std::vector<at::Tensor>> lengths(1);
  for (int r = 0; r < world_size_; ++r) lengths[0].push_back(at::empty({1}, at::kLong));
  c10d::AllgatherOptions all_opts;
  all_opts.timeout = timeout_;
  const std::string what = concat("gather to rank ", dst);
  run_collective(*impl_, rank_, world_size_, timeout_, what,
                 [&](c10d::ProcessGroupGloo& pg) { return pg.allgather(lengths, my_length, all_opts); });
  int64_t longest = 0;
  std::vector<int64_t> sizes;
  for (const auto& t : lengths[0]) {
    int64_t n = t.item<int64_t>();
    if (n < 0) throw Error(concat("gather: invalid length ", n));
    sizes.push_back(n);
    longest = std::max(longest, n);
  }
  std::vector<std::string> out;
  if (longest == 0) {
    if (rank_ == dst) out.assign(static_cast<size_t>(world_size_), std::string());
    return out;
  }
  std::vector<at::Tensor> input{at::empty({longest}, at::kByte)};
  auto* in = static_cast<char*>(input[0].data_ptr());
  std::memcpy(in, bytes.data(), bytes.size());
  std::memset(in + bytes.size(), 0, static_cast<size_t>(longest) - bytes.size());
  std::vector<std::vector<at::Tensor>> outputs;
  if (rank_ == dst) {
    outputs.emplace_back();
    for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty({longest}, at::kByte));
  }
  c10d::GatherOptions opts;
  opts.rootRank = dst;
  opts.timeout = timeout_;
  run_collective(*impl_, rank_, world_size_, timeout_, what,
                 [&](c10d::ProcessGroupGloo& pg) { return pg.gather(outputs, input, opts); });
  if (rank_ == dst) {
    for (int r = 0; r < world_size_; ++r) {
      out.emplace_back(static_cast<const char*>(outputs[0][static_cast<size_t>(r)].data_ptr()),
                       static_cast<size_t>(sizes[static_cast<size_t>(r)]));
    }
  }
  return out;
}

#else  // no gloo headers at build time

struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const ProcessGroupOptions& options)
    : rank_(options.rank), world_size_(options.world_size), timeout_(options.timeout) {
  throw Error("process groups are unavailable: libfabricckpt was built without the gloo headers "
              "(install libgloo-dev and rebuild)");
}
ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl, int rank, int world_size, std::chrono::milliseconds timeout)
    : impl_(std::move(impl)), rank_(rank), world_size_(world_size), timeout_(timeout) {}
ProcessGroup::~ProcessGroup() = default;
std::unique_ptr<ProcessGroup> ProcessGroup::background_group(const std::string&) {
  throw Error("process groups are unavailable");
}
void ProcessGroup::close() {}
void ProcessGroup::barrier() { throw Error("process groups are unavailable"); }
std::string ProcessGroup::broadcast(const std::string&, int) { throw Error("process groups are unavailable"); }
int64_t ProcessGroup::all_reduce_sum(int64_t) { throw Error("process groups are unavailable"); }
int64_t ProcessGroup::all_reduce_min(int64_t) { throw Error("process groups are unavailable"); }
std::vector<std::string> ProcessGroup::gather(const std::string&, int) { throw Error("process groups are unavailable"); }
void ProcessGroup::send(const void*, size_t, int, int) { throw Error("process groups are unavailable"); }
void ProcessGroup::recv(void*, size_t, int, int) { throw Error("process groups are unavailable"); }

#endif

}  // namespace fabricckpt
