// The zip container as libtorch writes it: PyTorchStreamWriter on top of miniz
// 3.0.2's mz_zip_writer_add_mem_ex_v2 (stored, data descriptors, zip64 mode on
// from the start, no timestamps) and mz_zip_writer_finalize_archive.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/zip.h"
#include "zip_layout.h"

namespace fabricckpt {

namespace {

using namespace zip_layout;

constexpr uint16_t kFlagDescriptor = 0x0008;  // sizes and CRC follow the data
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint64_t kMaxZip64Extra = kExtraHeaderSize + 24;  // both sizes and the header offset
constexpr uint64_t kMaxAlignment = 32768;  // keeps the padding within the 16-bit extra length
constexpr std::string_view kSerializationIdName = ".data/serialization_id";

void put16(std::string& out, uint64_t v) {
  out.push_back(static_cast<char>(v));
  out.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& out, uint64_t v) {
  put16(out, v);
  put16(out, v >> 16);
}
void put64(std::string& out, uint64_t v) {
  put32(out, v);
  put32(out, v >> 32);
}
uint64_t clamp32(uint64_t v) { return v < kMax32 ? v : kMax32; }

// c10::hash_combine.
uint64_t hash_combine(uint64_t seed, uint64_t value) {
  return seed ^ (value + 0x9e3779b9 + (seed << 6) + (seed >> 2));
}

// miniz's zip64 extended information field: the sizes when the record is
// 4 GiB or more, the header offset when it is at 4 GiB or beyond.
std::string zip64_extra(bool with_sizes, uint64_t size, uint64_t compressed, bool with_offset,
                        uint64_t offset) {
  std::string extra;
  put16(extra, kZip64ExtraId);
  put16(extra, (with_sizes ? 16 : 0) + (with_offset ? 8 : 0));
  if (with_sizes) {
    put64(extra, size);
    put64(extra, compressed);
  }
  if (with_offset) put64(extra, offset);
  return extra;
}

}  // namespace

TorchZipWriter::TorchZipWriter(OutputSink& out, std::string archive_name, uint64_t alignment,
                               bool compute_crc32)
    : out_(out), archive_prefix_(archive_name + "/"), alignment_(alignment), compute_crc32_(compute_crc32) {
  if (archive_name.empty()) fail("the archive name is empty");
  if (alignment < 1 || alignment > kMaxAlignment) {
    fail("storage alignment ", alignment, " is outside 1..", kMaxAlignment);
  }
}

void TorchZipWriter::emit(const void* data, size_t size) {
  // libtorch's write callback treats any write that starts with a data
  // descriptor signature as a descriptor and folds its CRC into the id.
  if (size >= 8) note_descriptor(static_cast<const uint8_t*>(data));
  out_.write(data, size);
  offset_ += size;
}

void TorchZipWriter::note_descriptor(const uint8_t* bytes) {
  if (le32(bytes) == kDescriptorSignature) combined_crc32_ = hash_combine(combined_crc32_, le32(bytes + 4));
}

void TorchZipWriter::write_record(std::string_view name, const void* data, size_t size) {
  begin_record(name, size);
  write_data(data, size);
  end_record();
}

void TorchZipWriter::begin_record(std::string_view name, uint64_t size) {
  if (finished_) fail("record ", name, " written after finish()");
  if (record_open_) fail("record ", name, " begun while record ", open_.name, " is open");
  if (names_written_.count(std::string(name)) != 0) fail("record ", name, " written twice");
  // Like libtorch: a copied serialization id is dropped; finish() writes the real one.
  const bool discard = name == kSerializationIdName && serialization_id_.empty();
  const std::string full_name = archive_prefix_ + std::string(name);
  if (full_name.size() > 0xFFFF) fail("record ", name, ": name longer than 65535 bytes");
  if (central_directory_.size() + kCentralHeaderSize + full_name.size() + kMaxZip64Extra >= kMax32) {
    fail("record ", name, ": central directory would exceed 4 GiB");
  }

  open_ = OpenRecord{};
  open_.name = name;
  open_.size = size;
  open_.discard = discard;
  record_open_ = true;
  if (discard) return;

  open_.header_offset = offset_;
  const bool zip64_size = size >= kMax32;
  const bool zip64_offset = offset_ >= kMax32;
  open_.zip64 = zip64_size || zip64_offset;

  // libtorch's detail::getPadding: where the data would start, then the
  // 'Z' padding that moves it to the next multiple of the alignment.
  uint64_t start = offset_ + kLocalHeaderSize + full_name.size() + 4;
  if (open_.zip64) start += 4 + (zip64_size ? 16 : 0) + (zip64_offset ? 8 : 0);
  const uint64_t padding = (alignment_ - start % alignment_) % alignment_;

  // In the local header miniz writes the size but a compressed size of 0 (not known yet).
  const std::string extra64 = open_.zip64 ? zip64_extra(zip64_size, size, 0, zip64_offset, offset_) : "";
  std::string header;
  put32(header, kLocalHeaderSignature);
  put16(header, 0);  // version needed: 0 for stored
  put16(header, kFlagUtf8 | (size != 0 ? kFlagDescriptor : 0));
  put16(header, 0);  // method: stored
  put16(header, 0);  // time
  put16(header, 0);  // date
  put32(header, 0);  // CRC, compressed and uncompressed size: in the descriptor
  put32(header, 0);
  put32(header, 0);
  put16(header, full_name.size());
  put16(header, extra64.size() + 4 + padding);
  emit(header.data(), header.size());
  emit(full_name.data(), full_name.size());
  if (open_.zip64) emit(extra64.data(), extra64.size());
  std::string pad = "FB";
  put16(pad, padding);
  pad.append(padding, 'Z');
  emit(pad.data(), pad.size());
}

void TorchZipWriter::write_data(const void* data, size_t size) {
  if (!record_open_) fail("data given outside a record");
  if (size > open_.size - open_.written) fail("record ", open_.name, " given more than its ", open_.size, " bytes");
  if (open_.discard) {
    open_.written += size;
    return;
  }
  if (size == 0) return;  // data may be null then
  if (open_.written < sizeof open_.head) {
    std::memcpy(open_.head + open_.written, data, std::min(size, sizeof open_.head - open_.written));
  }
  if (compute_crc32_) open_.crc = crc32_update(open_.crc, data, size);
  out_.write(data, size);
  open_.written += size;
  offset_ += size;
}

void TorchZipWriter::write_record_placed(std::string_view name, uint64_t size, uint32_t crc, const void* head) {
  begin_record(name, size);
  if (open_.discard || size == 0) {
    open_.written = size;
    end_record();
    return;
  }
  if (head == nullptr) fail("record ", name, ": no data given");
  std::memcpy(open_.head, head, std::min<uint64_t>(size, sizeof open_.head));
  open_.crc = compute_crc32_ ? crc : 0;
  out_.skip(size);
  open_.written = size;
  offset_ += size;
  end_record();
}

void TorchZipWriter::end_record() {
  if (!record_open_) fail("end_record() without a record");
  if (open_.written != open_.size) {
    fail("record ", open_.name, " got ", open_.written, " of its ", open_.size, " bytes");
  }
  record_open_ = false;
  if (open_.discard) return;

  // libtorch sees the data as one write: if it begins like a descriptor, it counts as one.
  const uint64_t size = open_.size;
  if (size >= 8) note_descriptor(open_.head);
  if (size != 0) {  // miniz writes no descriptor for an empty record
    std::string descriptor;
    put32(descriptor, kDescriptorSignature);
    put32(descriptor, open_.crc);
    if (open_.zip64) {
      put64(descriptor, size);
      put64(descriptor, size);
    } else {
      put32(descriptor, size);
      put32(descriptor, size);
    }
    emit(descriptor.data(), descriptor.size());
  }

  const std::string full_name = archive_prefix_ + open_.name;
  const bool zip64_size = size >= kMax32;
  const bool zip64_offset = open_.header_offset >= kMax32;
  const std::string extra64 =
      open_.zip64 ? zip64_extra(zip64_size, size, size, zip64_offset, open_.header_offset) : "";
  std::string& cd = central_directory_;
  put32(cd, kCentralHeaderSignature);
  put16(cd, 0);  // version made by
  put16(cd, 0);  // version needed
  put16(cd, kFlagUtf8 | (size != 0 ? kFlagDescriptor : 0));
  put16(cd, 0);  // method
  put16(cd, 0);  // time
  put16(cd, 0);  // date
  put32(cd, open_.crc);
  put32(cd, clamp32(size));
  put32(cd, clamp32(size));
  put16(cd, full_name.size());
  put16(cd, extra64.size());
  put16(cd, 0);  // comment length
  put16(cd, 0);  // disk
  put16(cd, 0);  // internal attributes
  put32(cd, 0);  // external attributes
  put32(cd, clamp32(open_.header_offset));
  cd += full_name;
  cd += extra64;

  names_written_.insert(open_.name);
  ++record_count_;
}

std::string TorchZipWriter::finish() {
  if (finished_) fail("finish() called twice");
  if (record_open_) fail("finish() while record ", open_.name, " is open");
  // libtorch's writeSerializationId: names hashed in the set's iteration order, then the descriptor CRCs.
  uint64_t names_hash = 0;
  for (const std::string& name : names_written_) {
    names_hash = hash_combine(names_hash, std::hash<std::string>{}(name));
  }
  char id[48];
  std::snprintf(id, sizeof id, "%020llu%020llu", static_cast<unsigned long long>(names_hash),
                static_cast<unsigned long long>(combined_crc32_));
  serialization_id_ = id;
  write_record(kSerializationIdName, serialization_id_.data(), serialization_id_.size());

  const uint64_t directory_offset = offset_;
  const uint64_t directory_size = central_directory_.size();
  emit(central_directory_.data(), central_directory_.size());

  // miniz in zip64 mode always ends with a zip64 end record and its locator.
  const uint64_t end64_offset = offset_;
  std::string end;
  put32(end, kEnd64Signature);
  put64(end, kEnd64Size - 12);  // size of the rest of this record
  put16(end, 0x031E);  // version made by: Unix, 3.0
  put16(end, 0x002D);  // version needed: 4.5 (zip64)
  put32(end, 0);       // this disk
  put32(end, 0);       // disk of the central directory
  put64(end, record_count_);
  put64(end, record_count_);
  put64(end, directory_size);
  put64(end, directory_offset);
  emit(end.data(), end.size());

  std::string locator;
  put32(locator, kEnd64LocatorSignature);
  put32(locator, 0);  // disk of the zip64 end record
  put64(locator, end64_offset);
  put32(locator, 1);  // total disks
  emit(locator.data(), locator.size());

  std::string end32;
  put32(end32, kEndSignature);
  put16(end32, 0);  // this disk
  put16(end32, 0);  // disk of the central directory
  put16(end32, std::min<uint64_t>(record_count_, 0xFFFF));
  put16(end32, std::min<uint64_t>(record_count_, 0xFFFF));
  put32(end32, clamp32(directory_size));
  put32(end32, clamp32(directory_offset));
  put16(end32, 0);  // comment length
  emit(end32.data(), end32.size());

  finished_ = true;
  central_directory_.clear();
  central_directory_.shrink_to_fit();
  return serialization_id_;
}

}  // namespace fabricckpt
