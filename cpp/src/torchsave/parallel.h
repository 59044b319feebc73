// Work spread over a few threads, for the loops that move storage bytes (eager reads,
// planned writes, snapshots): the threads to use, and pieces small enough to share out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace fabricckpt::torchsave {

// Pieces of storage data handled by one thread at a time: large enough that a
// system call or a CRC restart costs nothing, small enough to stay in cache
// between the CRC and the copy.
constexpr size_t kChunk = size_t{4} << 20;

// Threads for `bytes` of work in `pieces` pieces: `requested`, or when that is 0 or less
// one per core (at most 8) and just one below 16 MiB; never more than there are pieces.
int pick_threads(int requested, uint64_t bytes, size_t pieces);

// Runs work(i) for every i in [0, count) on `threads` threads, the caller's included.
// After the first exception the others stop picking up work; it is rethrown here.
void run_parallel(size_t count, int threads, const std::function<void(size_t)>& work);

// A piece [offset, offset + size) of item `item`.
struct Piece {
  size_t item;
  uint64_t offset;
  size_t size;
};

// Every item of `sizes` cut into pieces of at most kChunk bytes, in order.
std::vector<Piece> split(const std::vector<uint64_t>& sizes);

}  // namespace fabricckpt::torchsave
