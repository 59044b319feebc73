// Zip reading for torch.save files, the one place that knows the zip layout. Every offset and
// length comes from the file, so each is checked against the source's size before use: a hostile
// or truncated file gives a FormatError, never an out-of-bounds read. The bytes are read with
// ReadSource::read_at (pread for files), never through a mapping, so a file that another program
// truncates meanwhile gives an error, not a fault.

#include <algorithm>
#include <cstdio>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/zip.h"
#include "zip_layout.h"

namespace fabricckpt {

namespace {

using namespace zip_layout;

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// Where the central directory is, as the end records describe it.
struct Directory {
  uint64_t count;
  uint64_t size;
  uint64_t offset;
  uint64_t limit;  // the directory must end here (start of the end records)
};

class Parser {
 public:
  explicit Parser(const ReadSource& source) : source_(source), size_(source.size()) {}

  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw FormatError(concat(source_.name(), ": ", std::forward<Parts>(parts)...));
  }

  Directory find_directory() const {
    if (size_ < kEndSize) fail("not a zip archive (", size_, " bytes, too short)");
    // The end record sits before a comment of at most 64 KiB; the last
    // signature whose comment fits the file is the one.
    const uint64_t lowest = size_ - kEndSize > kMaxCommentSize ? size_ - kEndSize - kMaxCommentSize : 0;
    const std::string tail = source_.read_string(lowest, static_cast<size_t>(size_ - lowest));
    const uint8_t* base = reinterpret_cast<const uint8_t*>(tail.data());
    uint64_t end = size_ - kEndSize;
    while (le32(base + (end - lowest)) != kEndSignature || end + kEndSize + le16(base + (end - lowest) + kEndCommentLength) > size_) {
      if (end == lowest) fail("not a zip archive (no end of central directory record)");
      --end;
    }

    const uint8_t* e = base + (end - lowest);
    Directory dir{le16(e + kEndRecords), le32(e + kEndDirectorySize), le32(e + kEndDirectoryOffset), end};
    bool single_disk = le16(e + kEndDisk) == 0 && le16(e + kEndDirectoryDisk) == 0 &&
                       le16(e + kEndDiskRecords) == le16(e + kEndRecords);
    if (end >= kEnd64LocatorSize) {
      uint8_t locator[kEnd64LocatorSize];
      source_.read_at(end - kEnd64LocatorSize, locator, sizeof locator);
      if (le32(locator) == kEnd64LocatorSignature) dir = read_zip64_end(locator, end - kEnd64LocatorSize, single_disk);
    }
    if (!single_disk) fail("multi-disk zip archives are not supported");
    if (dir.offset > dir.limit || dir.size > dir.limit - dir.offset) {
      fail("central directory (offset ", dir.offset, ", ", dir.size,
           " bytes) runs past its end records at offset ", dir.limit);
    }
    if (dir.count > dir.size / kCentralHeaderSize) {
      fail("central directory of ", dir.size, " bytes cannot hold the ", dir.count, " records it claims");
    }
    return dir;
  }

  // The central directory's entries; local headers are checked afterwards (read_local_headers).
  std::vector<ZipRecord> read_entries(const Directory& dir) const {
    const std::string bytes = source_.read_string(dir.offset, static_cast<size_t>(dir.size));
    std::vector<ZipRecord> records;
    records.reserve(static_cast<size_t>(dir.count));  // bounded by the directory's size
    uint64_t position = 0;
    for (uint64_t index = 0; index < dir.count; ++index) {
      const uint64_t offset = dir.offset + position;
      const uint64_t room = dir.size - position;
      const uint8_t* h = reinterpret_cast<const uint8_t*>(bytes.data()) + position;
      if (room < kCentralHeaderSize) fail("central directory entry ", index, " runs past the directory");
      if (le32(h) != kCentralHeaderSignature) {
        fail("central directory entry ", index, " at offset ", offset, " has a bad signature");
      }
      const uint16_t flags = le16(h + kCentralFlags);
      const uint16_t method = le16(h + kCentralMethod);
      const uint16_t name_size = le16(h + kCentralNameLength);
      const uint16_t extra_size = le16(h + kCentralExtraLength);
      const uint16_t comment_size = le16(h + kCentralCommentLength);
      const uint64_t entry_size = kCentralHeaderSize + name_size + extra_size + comment_size;
      if (entry_size > room) fail("central directory entry ", index, " runs past the directory");

      ZipRecord r;
      r.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_size);
      if (r.name.empty()) fail("central directory entry ", index, " has an empty name");
      r.crc32 = le32(h + kCentralCrc32);
      uint64_t compressed = le32(h + kCentralCompressedSize);
      r.size = le32(h + kCentralSize);
      r.header_offset = le32(h + kCentralLocalHeaderOffset);
      read_zip64_extra(r, compressed, h + kCentralHeaderSize + name_size, extra_size);

      if (flags & kFlagEncrypted) fail("record ", r.name, ": encrypted records are not supported");
      if (method != 0) {
        fail("record ", r.name, ": compression method ", method, " is not supported (only stored records)");
      }
      if (compressed != r.size) {
        fail("record ", r.name, ": stored size ", compressed, " differs from its size ", r.size);
      }
      if (r.header_offset > size_ || size_ - r.header_offset < kLocalHeaderSize + name_size) {
        fail("record ", r.name, ": local header offset ", r.header_offset, " lies outside the file");
      }
      records.push_back(std::move(r));
      position += entry_size;
    }
    return records;
  }

  // Sets each record's data offset from its local header: after the header's own name and
  // extra field. On a cold file the headers are scattered pages: the kernel is asked for all
  // of them first, so the reads wait for the disk once, not once per record.
  void read_local_headers(std::vector<ZipRecord>& records) const {
    constexpr uint64_t kTypicalExtra = 128;  // zip64 and torch's alignment padding
    for (const auto& r : records) source_.prefetch(r.header_offset, kLocalHeaderSize + r.name.size() + kTypicalExtra);
    std::string header;
    for (auto& r : records) {
      const uint64_t offset = r.header_offset;
      header.resize(kLocalHeaderSize + r.name.size());
      source_.read_at(offset, header.data(), header.size());
      const uint8_t* h = reinterpret_cast<const uint8_t*>(header.data());
      if (le32(h) != kLocalHeaderSignature) fail("record ", r.name, ": no local header at offset ", offset);
      const uint16_t name_size = le16(h + kLocalNameLength);
      const uint64_t data_offset = offset + kLocalHeaderSize + name_size + le16(h + kLocalExtraLength);
      if (data_offset > size_) fail("record ", r.name, ": local header runs past end of file");
      std::string_view local_name(header.data() + kLocalHeaderSize, std::min<size_t>(name_size, r.name.size()));
      if (name_size != r.name.size() || local_name != r.name) {
        fail("record ", r.name, ": local header at offset ", offset, " names \"", local_name,
             name_size > r.name.size() ? "...\"" : "\"");
      }
      if (r.size > size_ - data_offset) fail("record ", r.name, ": data runs past end of file");
      r.data_offset = data_offset;
    }
  }

 private:
  Directory read_zip64_end(const uint8_t* l, uint64_t locator, bool& single_disk) const {
    const uint64_t end64 = le64(l + kLocatorEnd64Offset);
    single_disk = le32(l + kLocatorDisk) == 0 && le32(l + kLocatorDisks) <= 1;
    if (end64 > locator || locator - end64 < kEnd64Size) {
      fail("zip64 end of central directory record (offset ", end64, ") lies outside the file");
    }
    uint8_t e[kEnd64Size];
    source_.read_at(end64, e, sizeof e);
    if (le32(e) != kEnd64Signature) fail("no zip64 end of central directory record at offset ", end64);
    single_disk = single_disk && le32(e + kEnd64Disk) == 0 && le32(e + kEnd64DirectoryDisk) == 0 &&
                  le64(e + kEnd64DiskRecords) == le64(e + kEnd64Records);
    return Directory{le64(e + kEnd64Records), le64(e + kEnd64DirectorySize), le64(e + kEnd64DirectoryOffset), end64};
  }

  // Zip64 values replace exactly the 32-bit fields that hold 0xFFFFFFFF, in this order.
  void read_zip64_extra(ZipRecord& r, uint64_t& compressed, const uint8_t* extra, uint16_t size) const {
    while (size >= kExtraHeaderSize) {
      const uint16_t id = le16(extra);
      const uint16_t length = le16(extra + 2);
      if (length > size - kExtraHeaderSize) fail("record ", r.name, ": extra field runs past its entry");
      if (id == kZip64ExtraId) {
        const uint8_t* p = extra + kExtraHeaderSize;
        uint16_t left = length;
        for (uint64_t* field : {&r.size, &compressed, &r.header_offset}) {
          if (*field != kMax32) continue;
          if (left < 8) fail("record ", r.name, ": zip64 extra field is too short");
          *field = le64(p);
          p += 8;
          left -= 8;
        }
      }
      extra += kExtraHeaderSize + length;
      size -= kExtraHeaderSize + length;
    }
  }

  const ReadSource& source_;
  uint64_t size_;
};

}  // namespace

ZipReader::ZipReader(std::shared_ptr<const ReadSource> source) : source_(std::move(source)) {
  Parser parser(*source_);
  records_ = parser.read_entries(parser.find_directory());
  parser.read_local_headers(records_);
  // torch.save with compute_crc32 = False stores 0 for every record; a file where only some
  // records do is corrupt, and their check fails as usual.
  bool any_data = false, all_zero = true;
  for (const auto& r : records_) {
    if (r.size == 0) continue;
    any_data = true;
    all_zero = all_zero && r.crc32 == 0;
  }
  crc_less_ = any_data && all_zero;

  // records_ no longer changes, so views of its names stay valid.
  index_.reserve(records_.size());
  for (size_t i = 0; i < records_.size(); ++i) {
    if (!index_.emplace(records_[i].name, i).second) parser.fail("duplicate record ", records_[i].name);
  }
  if (!records_.empty()) {
    size_t slash = records_[0].name.find('/');
    if (slash != std::string::npos && slash > 0) archive_name_ = records_[0].name.substr(0, slash);
  }
}

const std::string& ZipReader::archive_name() const {
  if (archive_name_.empty()) {
    if (records_.empty()) throw FormatError(concat(source_->name(), ": zip archive holds no records"));
    throw FormatError(concat(source_->name(), ": first record ", records_[0].name, " is not inside a folder"));
  }
  return archive_name_;
}

const ZipRecord* ZipReader::find(std::string_view name_in_archive) const {
  std::string full = archive_name();
  full += '/';
  full += name_in_archive;
  auto it = index_.find(full);
  return it == index_.end() ? nullptr : &records_[it->second];
}

void ZipReader::check_crc(const ZipRecord& record, uint32_t computed) const {
  if (crc_less_ || computed == record.crc32) return;
  throw FormatError(concat(source_->name(), ": record ", record.name, ": CRC-32 mismatch (stored ",
                           hex32(record.crc32), ", computed ", hex32(computed), ")"));
}

std::string ZipReader::data(const ZipRecord& record, bool verify_crc) const {
  std::string bytes = source_->read_string(record.data_offset, static_cast<size_t>(record.size));
  if (verify_crc) check_crc(record, crc32_update(0, bytes.data(), bytes.size()));
  return bytes;
}

void ZipReader::verify(const ZipRecord& record) const {
  constexpr uint64_t kPiece = uint64_t{4} << 20;
  std::vector<char> buffer(static_cast<size_t>(std::min(record.size, kPiece)));
  uint32_t crc = 0;
  for (uint64_t done = 0; done < record.size;) {
    const size_t n = static_cast<size_t>(std::min(kPiece, record.size - done));
    source_->read_at(record.data_offset + done, buffer.data(), n);
    crc = crc32_update(crc, buffer.data(), n);
    done += n;
  }
  check_crc(record, crc);
}

bool is_zip(const ReadSource& source) {
  uint8_t head[4];
  if (source.size() < sizeof head) return false;
  source.read_at(0, head, sizeof head);
  return le32(head) == kLocalHeaderSignature;
}

}  // namespace fabricckpt
