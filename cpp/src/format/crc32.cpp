// CRC-32 in the reflected form zip uses (polynomial 0xEDB88320).
//   - portable: slicing-by-8 tables built at compile time
//   - x86-64 with PCLMULQDQ (checked at run time): carry-less multiplication
//     folds 64 bytes per step, then the tables finish the last block.
//   - combine: multiplication by x^(8n) modulo the polynomial.

#include "fabricckpt/crc32.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fabricckpt {
namespace {

constexpr uint32_t kPolynomial = 0xEDB88320u;

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[k][b]: the register contribution of byte b followed by k zero bytes.
constexpr Tables make_tables() {
  Tables tables{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
    tables[0][b] = crc;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t prev = tables[k - 1][b];
      tables[k][b] = (prev >> 8) ^ tables[0][prev & 0xFF];
    }
  }
  return tables;
}

constexpr Tables kTables = make_tables();

// Raw register update: no inversion on entry or exit.
uint32_t update_tables(uint32_t crc, const uint8_t* p, size_t n) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    crc = (crc >> 8) ^ kTables[0][(crc ^ *p++) & 0xFF];
    --n;
  }
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo;
    uint32_t hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;  // little-endian host: the register lines up with the first 4 bytes
    crc = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
          kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
          kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
  }
  while (n-- > 0) crc = (crc >> 8) ^ kTables[0][(crc ^ *p++) & 0xFF];
  return crc;
}

#if defined(__x86_64__)

// Folds 128-bit lanes forward with carry-less products. In the reflected
// domain the low quadword holds the higher-degree half, so it meets the
// constant for the longer distance. Constants: bit-reflected x^(D+32) and
// x^(D-32) mod P, shifted left by one (Intel, "Fast CRC Computation for
// Generic Polynomials Using PCLMULQDQ"), for D = 512 and D = 128 bits.
__attribute__((target("pclmul,sse2"))) inline __m128i fold(__m128i lane, __m128i constants,
                                                           __m128i next) {
  __m128i lo = _mm_clmulepi64_si128(lane, constants, 0x00);
  __m128i hi = _mm_clmulepi64_si128(lane, constants, 0x11);
  return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

__attribute__((target("pclmul,sse2"))) uint32_t update_clmul(uint32_t crc, const uint8_t* p,
                                                             size_t n) {
  if (n < 64) return update_tables(crc, p, n);
  const __m128i by4 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4);
  const __m128i by1 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);

  // The register enters as an XOR on the first four message bytes.
  __m128i x0 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)),
                             _mm_cvtsi32_si128(static_cast<int>(crc)));
  __m128i x1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
  __m128i x2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32));
  __m128i x3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 48));
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x0 = fold(x0, by4, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    x1 = fold(x1, by4, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
    x2 = fold(x2, by4, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32)));
    x3 = fold(x3, by4, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 48)));
  }
  __m128i x = fold(x0, by1, x1);
  x = fold(x, by1, x2);
  x = fold(x, by1, x3);
  for (; n >= 16; p += 16, n -= 16) {
    x = fold(x, by1, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // x is congruent to everything consumed so far, placed as the next 16
  // message bytes; the tables reduce it (from a zero register) with the tail.
  alignas(16) uint8_t last[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(last), x);
  return update_tables(update_tables(0, last, 16), p, n);
}

using UpdateFn = uint32_t (*)(uint32_t, const uint8_t*, size_t);

UpdateFn pick_update() {
  return __builtin_cpu_supports("pclmul") ? update_clmul : update_tables;
}

#endif

// a * b mod P, both reflected (bit 31 is the x^0 coefficient).
constexpr uint32_t multiply_mod(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 0x80000000u; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPolynomial : b >> 1;  // b *= x
  }
  return product;
}

// kPowers[k] = x^(8 * 2^k) mod P: the shift of a CRC past 2^k bytes.
constexpr std::array<uint32_t, 64> make_powers() {
  std::array<uint32_t, 64> powers{};
  powers[0] = 0x80000000u >> 8;  // x^8
  for (size_t k = 1; k < 64; ++k) powers[k] = multiply_mod(powers[k - 1], powers[k - 1]);
  return powers;
}

constexpr std::array<uint32_t, 64> kPowers = make_powers();

}  // namespace

// Test hooks: each implementation on its own, whatever this CPU supports.
namespace detail {
uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t size) {
  return ~update_tables(~crc, static_cast<const uint8_t*>(data), size);
}
#if defined(__x86_64__)
bool crc32_has_clmul() { return __builtin_cpu_supports("pclmul"); }
uint32_t crc32_update_clmul(uint32_t crc, const void* data, size_t size) {
  return ~update_clmul(~crc, static_cast<const uint8_t*>(data), size);
}
#endif
}  // namespace detail

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
#if defined(__x86_64__)
  static const UpdateFn update = pick_update();
#else
  constexpr auto update = update_tables;
#endif
  return ~update(~crc, static_cast<const uint8_t*>(data), size);
}

uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
  uint32_t shift = 0x80000000u;  // x^0
  for (size_t k = 0; length_b != 0; ++k, length_b >>= 1) {
    if (length_b & 1) shift = multiply_mod(shift, kPowers[k]);
  }
  return multiply_mod(crc_a, shift) ^ crc_b;
}

}  // namespace fabricckpt
