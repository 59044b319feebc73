#include "staging_native.h"

#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/staged_files.h"

namespace fabricckpt::stagingjni {
namespace {

// "[name<TAB>]offset<TAB>length" lines: each range under its name ("" without one).
std::map<std::string, std::vector<ByteRange>> parse_ranges(const std::string& text, bool named) {
  std::map<std::string, std::vector<ByteRange>> ranges;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    const size_t name_end = named ? line.find('\t') : 0;
    const size_t tab = name_end == std::string::npos ? name_end : line.find('\t', named ? name_end + 1 : 0);
    try {
      if (tab == std::string::npos) throw std::invalid_argument(line);
      const size_t from = named ? name_end + 1 : 0;
      ranges[line.substr(0, named ? name_end : 0)].push_back(
          {std::stoull(line.substr(from, tab - from)), std::stoull(line.substr(tab + 1))});
    } catch (const std::logic_error&) {
      throw Error(concat("not a byte range: '", line, named ? "' (name<TAB>offset<TAB>length)" : "' (offset<TAB>length)"));
    }
    at = end + 1;
  }
  return ranges;
}

}  // namespace

std::string outlineRangesMissing(const std::string& path, const std::string& fetched) {
  std::string out;
  for (const ByteRange& r : outline_ranges_missing(path, parse_ranges(fetched, false)[""])) {
    out += concat(r.offset, "\t", r.length, "\n");
  }
  return out;
}

std::string shardedOutlineRangesMissing(const std::string& dir, const std::string& fetched, bool every_item) {
  std::string out;
  for (const auto& [name, ranges] : sharded_outline_ranges_missing(dir, parse_ranges(fetched, true), every_item)) {
    for (const ByteRange& r : ranges) out += concat(name, "\t", r.offset, "\t", r.length, "\n");
  }
  return out;
}

std::string safetensorsIndexFiles(const std::string& path) {
  std::string out;
  for (const auto& file : safetensors::read_index(path).files) out += file + "\n";
  return out;
}

bool isSafetensorsFileOf(const std::string& name, const std::string& stem) {
  return safetensors::is_file_of_pattern(name, stem);
}

void registerStagedFile(const std::string& path, const std::string& held, HoleReader reader) {
  auto ranges = std::move(parse_ranges(held, false)[""]);
  auto read_hole = [path, reader](uint64_t offset, void* dest, size_t size) {
    if (reader(path.c_str(), static_cast<int64_t>(offset), static_cast<int64_t>(size), dest) != 0) {
      throw IoError(concat(path, ": reading bytes ", offset, "+", size, " of it from object storage failed"));
    }
  };
  register_staged_file(path, std::make_shared<StagedFile>(std::move(ranges), std::move(read_hole)));
}

void unregisterStagedFile(const std::string& path) { unregister_staged_file(path); }

}  // namespace fabricckpt::stagingjni
