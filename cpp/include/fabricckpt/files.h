// File access for the core: read-only memory maps for loading, and output
// sinks for saving (in memory, or a temp file that atomically replaces its target).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace fabricckpt {

// The whole content of a file, mapped read-only; unmapped when the last owner lets go.
class MappedFile {
 public:
  // IoError naming the path and the system's reason. Empty files are allowed.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // Holds a copy of `bytes` under the display name `name` (for tests and in-memory input).
  static std::shared_ptr<const MappedFile> from_bytes(std::string bytes, std::string name);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, bool mapped, std::string owned);

  std::string path_;
  const uint8_t* data_;
  size_t size_;
  bool mapped_;        // data_ came from mmap and must be unmapped
  std::string owned_;  // the bytes behind data_ when not mapped
};

// Where a writer sends its bytes, in order.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void write(const void* data, size_t size) = 0;
  // Bytes written so far.
  virtual uint64_t position() const = 0;
};

// Collects everything in a string: for tests and small outputs.
class StringSink : public OutputSink {
 public:
  void write(const void* data, size_t size) override;
  uint64_t position() const override { return buffer_.size(); }
  std::string& str() { return buffer_; }

 private:
  std::string buffer_;
};

// Writes to a temporary file next to the target and renames it over the target
// on commit(), so that readers see either the old file or the complete new one.
// Without commit() (an exception, an abandoned save) the destructor removes the
// temporary file and leaves the target as it was.
class AtomicFileSink : public OutputSink {
 public:
  // Creates missing parent directories and the temporary file; IoError on failure.
  // With `fsync` the data and the rename are made durable in commit().
  AtomicFileSink(std::string target_path, bool fsync);
  ~AtomicFileSink() override;
  AtomicFileSink(const AtomicFileSink&) = delete;
  AtomicFileSink& operator=(const AtomicFileSink&) = delete;

  void write(const void* data, size_t size) override;
  uint64_t position() const override { return position_; }

  // Flushes, optionally fsyncs, renames over the target (then fsyncs its directory). Once only.
  void commit();
  const std::string& target_path() const { return target_path_; }

 private:
  static constexpr size_t kBufferSize = size_t{4} << 20;

  void flush_buffer();
  void write_fully(const void* data, size_t size);
  [[noreturn]] void fail(const char* what, int error) const;

  std::string target_path_;
  std::string temp_path_;
  bool fsync_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t position_ = 0;
  std::unique_ptr<char[]> buffer_;
  size_t buffered_ = 0;
};

}  // namespace fabricckpt
