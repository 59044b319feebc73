#include "fabricckpt/staged_files.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

namespace fabricckpt {

namespace {

std::mutex registry_mutex;
std::map<std::string, std::shared_ptr<StagedFile>>& registry() {
  static std::map<std::string, std::shared_ptr<StagedFile>> files;
  return files;
}

std::string key_of(const std::string& path) { return std::filesystem::path(path).lexically_normal().string(); }

}  // namespace

StagedFile::StagedFile(std::vector<ByteRange> held, ReadHole read_hole)
    : held_(merged_ranges(std::move(held))), read_hole_(std::move(read_hole)) {}

void StagedFile::read(uint64_t offset, void* dest, size_t size,
                      const std::function<void(uint64_t, void*, size_t)>& from_file) const {
  struct Piece {
    uint64_t at, size;
    bool held;
  };
  std::vector<Piece> pieces;
  const uint64_t end = offset + size;
  {
    std::shared_lock lock(mutex_);  // the ranges only: the reads below may take long
    for (uint64_t at = offset; at < end;) {
      // The first held range that starts after `at`; the one before it may hold `at`.
      auto next = std::upper_bound(held_.begin(), held_.end(), at,
                                   [](uint64_t value, const ByteRange& r) { return value < r.offset; });
      uint64_t piece_end;
      bool held = false;
      if (next != held_.begin() && std::prev(next)->offset + std::prev(next)->length > at) {
        held = true;
        piece_end = std::min(end, std::prev(next)->offset + std::prev(next)->length);
      } else {
        piece_end = next == held_.end() ? end : std::min(end, next->offset);
      }
      pieces.push_back({at, piece_end - at, held});
      at = piece_end;
    }
  }
  auto* out = static_cast<char*>(dest);
  for (const Piece& piece : pieces) {
    char* to = out + (piece.at - offset);
    const auto n = static_cast<size_t>(piece.size);
    if (piece.held) {
      from_file(piece.at, to, n);
    } else {
      read_hole_(piece.at, to, n);
    }
  }
}

std::vector<ByteRange> StagedFile::held() const {
  std::shared_lock lock(mutex_);
  return held_;
}

void StagedFile::hold(const std::vector<ByteRange>& more) {
  std::unique_lock lock(mutex_);
  std::vector<ByteRange> all = held_;
  all.insert(all.end(), more.begin(), more.end());
  held_ = merged_ranges(std::move(all));
}

void register_staged_file(const std::string& path, std::shared_ptr<StagedFile> file) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto [it, fresh] = registry().try_emplace(key_of(path), file);
  if (!fresh) it->second->hold(file->held());
}

void unregister_staged_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry().erase(key_of(path));
}

std::shared_ptr<const StagedFile> staged_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto it = registry().find(key_of(path));
  return it == registry().end() ? nullptr : it->second;
}

}  // namespace fabricckpt
