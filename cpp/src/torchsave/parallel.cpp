#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

namespace fabricckpt::torchsave {

namespace {
// Below this many bytes in all, one thread does the work (starting threads costs more).
constexpr uint64_t kParallelThreshold = uint64_t{16} << 20;

// The default: OMP_NUM_THREADS when set (as libtorch's intra-op pool reads it; launchers such as
// torchrun, Lightning's and LocalLauncher set it per rank, so ranks sharing a host do not each take
// every core), else one per core; at most 8 (more does not speed up memory-bound copies).
unsigned default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n > 0) return static_cast<unsigned>(std::min<long>(n, 8));
  }
  const unsigned cores = std::thread::hardware_concurrency();
  return std::clamp(cores == 0 ? 2u : cores, 1u, 8u);
}
}  // namespace

int pick_threads(int requested, uint64_t bytes, size_t pieces) {
  if (requested <= 0) {
    if (bytes < kParallelThreshold) return 1;
    requested = static_cast<int>(default_threads());
  }
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(requested), pieces)));
}

void run_parallel(size_t count, int threads, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto loop = [&] {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) return;
      try {
        work(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < threads && static_cast<size_t>(t) < count; ++t) helpers.emplace_back(loop);
  loop();
  for (auto& h : helpers) h.join();
  if (error) std::rethrow_exception(error);
}

std::vector<Piece> split(const std::vector<uint64_t>& sizes) {
  std::vector<Piece> pieces;
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (uint64_t at = 0; at < sizes[i]; at += kChunk) {
      pieces.push_back(Piece{i, at, static_cast<size_t>(std::min<uint64_t>(kChunk, sizes[i] - at))});
    }
  }
  return pieces;
}

}  // namespace fabricckpt::torchsave
