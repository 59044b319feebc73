// A c10d process group for the strategies: a TCPStore rendezvous (rank 0 serves it, as torchrun's
// MASTER_ADDR/MASTER_PORT) and a Gloo process group over it. Nothing here is home-made networking:
// both are libtorch's own (the same classes torch.distributed uses).
//
// The header is free of libtorch and gloo so that the JNI facade can hold a ProcessGroup.
//
// Every operation is collective: all ranks call it in the same order. A rank that died or stalls
// makes the others fail with an Error naming this rank, the operation and the timeout, within the
// configured timeout (sooner when the peer's connection closes).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fabricckpt {

struct ProcessGroupOptions {
  std::string host = "127.0.0.1";  // MASTER_ADDR: where rank 0 serves the TCPStore
  int port = 29500;                // MASTER_PORT
  int rank = 0;                    // RANK
  int world_size = 1;              // WORLD_SIZE
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  // rendezvous and every collective
};

class ProcessGroup {
 public:
  // Rendezvous: blocks until every rank has joined (or throws after the timeout).
  explicit ProcessGroup(const ProcessGroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Waits until every rank has reached it.
  void barrier();
  // Rank `src`'s bytes, on every rank (the argument is ignored on the others).
  std::string broadcast(const std::string& bytes, int src);
  // Sum / minimum of one integer over all ranks.
  int64_t all_reduce_sum(int64_t value);
  int64_t all_reduce_min(int64_t value);
  // True on every rank when `ok` is true on every rank (Lightning's reduce_boolean_decision(all=True)).
  bool all_agree(bool ok) { return all_reduce_min(ok ? 1 : 0) == 1; }
  // Every rank's bytes on rank `dst`, in rank order; an empty vector on the other ranks.
  std::vector<std::string> gather(const std::string& bytes, int dst);
  // Point to point, not collective: `size` bytes to rank `dst` / into `data` from rank `src`; a
  // send and its receive name the same `tag`. Both wait until the transfer is done (or the timeout).
  void send(const void* data, size_t size, int dst, int tag);
  void recv(void* data, size_t size, int src, int tag);

  // A second group of the same ranks over the same TCPStore, its keys under `prefix` (as DCP's
  // async_save makes a Gloo group of its own): its collectives run on their own connections and lock,
  // so a background thread may use it while the caller uses this group, and the two never interleave.
  // Collective: every rank calls it with the same prefix, one prefix per group. It outlives this group
  // (it holds the store too); a collective of one whose peers are gone fails as this group's do.
  std::unique_ptr<ProcessGroup> background_group(const std::string& prefix);

  // Releases the Gloo group and the store; later calls throw. Idempotent.
  void close();

 struct Impl;  // opaque: libtorch's TCPStore and ProcessGroupGloo

 private:
  ProcessGroup(std::unique_ptr<Impl> impl, int rank, int world_size, std::chrono::milliseconds timeout);

  std::unique_ptr<Impl> impl_;
  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
};

}  // namespace fabricckpt
