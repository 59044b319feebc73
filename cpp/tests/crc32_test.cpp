#include "fabricckpt/crc32.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

// Each implementation on its own (crc32.cpp), whatever this CPU would pick.
namespace fabricckpt::detail {
uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t size);
#if defined(__x86_64__)
bool crc32_has_clmul();
uint32_t crc32_update_clmul(uint32_t crc, const void* data, size_t size);
#endif
}  // namespace fabricckpt::detail

namespace fabricckpt {
namespace {

// One bit at a time, straight from the definition.
uint32_t reference_crc(const uint8_t* p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0xEDB88320u : 0);
  }
  return ~crc;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

uint32_t crc_of(const std::string& s) { return crc32_update(0, s.data(), s.size()); }

TEST(Crc32, KnownValues) {
  EXPECT_EQ(crc_of(""), 0u);
  EXPECT_EQ(crc_of("a"), 0xE8B7BE43u);
  EXPECT_EQ(crc_of("123456789"), 0xCBF43926u);
  EXPECT_EQ(crc_of("The quick brown fox jumps over the lazy dog"), 0x414FA339u);
  EXPECT_EQ(crc32_update(0, nullptr, 0), 0u);
}

TEST(Crc32, EveryImplementationMatchesTheDefinition) {
  const auto bytes = random_bytes(1200, 1);
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; n + offset <= 1100; n += (n < 300 ? 1 : 37)) {
      const uint8_t* p = bytes.data() + offset;
      const uint32_t expected = reference_crc(p, n);
      ASSERT_EQ(crc32_update(0, p, n), expected) << "offset " << offset << " length " << n;
      ASSERT_EQ(detail::crc32_update_portable(0, p, n), expected) << "offset " << offset << " length " << n;
#if defined(__x86_64__)
      if (detail::crc32_has_clmul()) {
        ASSERT_EQ(detail::crc32_update_clmul(0, p, n), expected) << "offset " << offset << " length " << n;
      }
#endif
    }
  }
}

TEST(Crc32, UpdateContinuesAcrossPieces) {
  const auto bytes = random_bytes(700, 2);
  const uint32_t whole = crc32_update(0, bytes.data(), bytes.size());
  for (size_t split = 0; split <= bytes.size(); ++split) {
    uint32_t crc = crc32_update(0, bytes.data(), split);
    ASSERT_EQ(crc32_update(crc, bytes.data() + split, bytes.size() - split), whole) << "split " << split;
  }
}

TEST(Crc32, CombineEqualsWhole) {
  const auto bytes = random_bytes(5000, 3);
  const uint32_t whole = crc32_update(0, bytes.data(), bytes.size());
  std::mt19937 rng(4);
  for (int i = 0; i < 300; ++i) {
    size_t split = i < 2 ? i * bytes.size() : rng() % bytes.size();
    uint32_t a = crc32_update(0, bytes.data(), split);
    uint32_t b = crc32_update(0, bytes.data() + split, bytes.size() - split);
    ASSERT_EQ(crc32_combine(a, b, bytes.size() - split), whole) << "split " << split;
  }
  EXPECT_EQ(crc32_combine(0x12345678u, 0, 0), 0x12345678u);
}

TEST(Crc32, CombineOverLongZeroRuns) {
  // Doubling a run of zeros with combine must agree with computing it directly.
  const size_t n = size_t{32} << 20;  // a power of two
  std::vector<uint8_t> zeros(n);
  uint32_t run = crc32_update(0, zeros.data(), 1);
  for (size_t length = 1; length < n; length *= 2) run = crc32_combine(run, run, length);
  EXPECT_EQ(run, crc32_update(0, zeros.data(), n));
}

double megabytes_per_second(uint32_t (*fn)(uint32_t, const void*, size_t), const std::vector<uint8_t>& buf) {
  uint32_t sink = 0;
  auto start = std::chrono::steady_clock::now();
  const int rounds = 4;
  for (int i = 0; i < rounds; ++i) sink ^= fn(sink, buf.data(), buf.size());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(sink, 0x01234567u);  // keeps the work from being optimised away
  return rounds * buf.size() / 1e6 / seconds;
}

TEST(Crc32, Speed) {
  const auto buf = random_bytes(size_t{64} << 20, 5);
  std::printf("[ crc32    ] dispatched: %.0f MB/s\n", megabytes_per_second(crc32_update, buf));
  std::printf("[ crc32    ] slicing-by-8: %.0f MB/s\n", megabytes_per_second(detail::crc32_update_portable, buf));
#if defined(__x86_64__)
  if (detail::crc32_has_clmul()) {
    std::printf("[ crc32    ] pclmul folding: %.0f MB/s\n", megabytes_per_second(detail::crc32_update_clmul, buf));
  }
#endif
}

}  // namespace
}  // namespace fabricckpt
