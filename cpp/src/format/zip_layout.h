// The zip format's records as torch.save files use them (APPNOTE.TXT 4.3): signatures, fixed
// sizes and where each field sits, for the zip reader and writer alike. Everything is little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fabricckpt::zip_layout {

// Sizes and offsets that hold this in a 32-bit field have the real value in the zip64 extra field.
constexpr uint64_t kMax32 = 0xFFFFFFFF;
constexpr uint64_t kMaxCommentSize = 0xFFFF;

// Local file header: signature, then fixed fields, then the name and the extra field.
constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint64_t kLocalHeaderSize = 30;
constexpr size_t kLocalNameLength = 26;   // 16 bits
constexpr size_t kLocalExtraLength = 28;  // 16 bits

// Data descriptor after a record's data (flag bit 3): signature, CRC-32, sizes.
constexpr uint32_t kDescriptorSignature = 0x08074b50;

// Central directory header: fixed fields, then the name, the extra field and the comment.
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr size_t kCentralFlags = 8;               // 16 bits
constexpr size_t kCentralMethod = 10;             // 16 bits
constexpr size_t kCentralCrc32 = 16;              // 32 bits
constexpr size_t kCentralCompressedSize = 20;     // 32 bits
constexpr size_t kCentralSize = 24;               // 32 bits
constexpr size_t kCentralNameLength = 28;         // 16 bits
constexpr size_t kCentralExtraLength = 30;        // 16 bits
constexpr size_t kCentralCommentLength = 32;      // 16 bits
constexpr size_t kCentralLocalHeaderOffset = 42;  // 32 bits
constexpr uint16_t kFlagEncrypted = 0x0001;

// End of central directory record, before a comment of at most kMaxCommentSize bytes.
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint64_t kEndSize = 22;
constexpr size_t kEndDisk = 4;             // 16 bits
constexpr size_t kEndDirectoryDisk = 6;    // 16 bits
constexpr size_t kEndDiskRecords = 8;      // 16 bits
constexpr size_t kEndRecords = 10;         // 16 bits
constexpr size_t kEndDirectorySize = 12;   // 32 bits
constexpr size_t kEndDirectoryOffset = 16; // 32 bits
constexpr size_t kEndCommentLength = 20;   // 16 bits

// Zip64 end of central directory locator, right before the end record.
constexpr uint32_t kEnd64LocatorSignature = 0x07064b50;
constexpr uint64_t kEnd64LocatorSize = 20;
constexpr size_t kLocatorDisk = 4;         // 32 bits
constexpr size_t kLocatorEnd64Offset = 8;  // 64 bits
constexpr size_t kLocatorDisks = 16;       // 32 bits

// Zip64 end of central directory record (the fixed part; no extensible data in torch files).
constexpr uint32_t kEnd64Signature = 0x06064b50;
constexpr uint64_t kEnd64Size = 56;
constexpr size_t kEnd64Disk = 16;             // 32 bits
constexpr size_t kEnd64DirectoryDisk = 20;    // 32 bits
constexpr size_t kEnd64DiskRecords = 24;      // 64 bits
constexpr size_t kEnd64Records = 32;          // 64 bits
constexpr size_t kEnd64DirectorySize = 40;    // 64 bits
constexpr size_t kEnd64DirectoryOffset = 48;  // 64 bits

// Extra fields: a 16-bit id and a 16-bit length, then the data.
constexpr uint64_t kExtraHeaderSize = 4;
constexpr uint16_t kZip64ExtraId = 0x0001;

inline uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t le32(const uint8_t* p) { return le16(p) | (static_cast<uint32_t>(le16(p + 2)) << 16); }
inline uint64_t le64(const uint8_t* p) { return le32(p) | (static_cast<uint64_t>(le32(p + 4)) << 32); }

}  // namespace fabricckpt::zip_layout
