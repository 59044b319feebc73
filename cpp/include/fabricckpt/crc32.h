// CRC-32 (ISO-HDLC, the zip polynomial).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fabricckpt {

// Continues a CRC: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

// CRC of A||B from crc(A), crc(B) and the length of B (zlib's crc32_combine).
uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

}  // namespace fabricckpt
