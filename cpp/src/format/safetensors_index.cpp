// Hugging Face sharded safetensors checkpoints: the index file (`model.safetensors.index.json`)
// read with every bound checked, and the split, shard names and index text that huggingface_hub's
// save_torch_state_dict (2.4) writes.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"
#include "safetensors_json.h"

namespace fabricckpt::safetensors {

namespace {
constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
}  // namespace

ShardIndex parse_index(std::string_view json_text, const std::string& name) {
  if (!valid_utf8(json_text)) throw FormatError(concat(name, ": safetensors index: not UTF-8"));
  JsonCursor json(json_text, name);
  ShardIndex index;
  bool has_map = false;
  std::unordered_set<std::string> top, tensors, files;
  json.expect('{', "'{' opening the index");
  if (!json.take('}')) {
    do {
      const std::string key = json.string();
      json.expect(':', "':'");
      if (!top.insert(key).second) json.fail(concat("key '", key, "' appears twice"));
      if (key == "metadata" && json.take('{')) {
        if (json.take('}')) continue;
        do {
          std::string name = json.string();
          json.expect(':', "':'");
          json.skip_space();
          if (json.peek_is('"')) {
            std::string value = json.string();
            auto same = std::find_if(index.metadata.begin(), index.metadata.end(),
                                     [&](const auto& entry) { return entry.first == name; });
            if (same != index.metadata.end()) {
              same->second = std::move(value);  // as json.load: the last one counts
            } else {
              index.metadata.emplace_back(std::move(name), std::move(value));
            }
          } else {
            json.skip_value(2);
          }
        } while (json.take(','));
        json.expect('}', "',' or '}'");
        continue;
      }
      if (key != "weight_map") {
        json.skip_value(1);
        continue;
      }
      has_map = true;
      json.expect('{', "an object of file names for weight_map");
      if (json.take('}')) continue;
      do {
        std::string tensor = json.string();
        json.expect(':', "':'");
        json.skip_space();
        std::string file = json.string();
        if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
            file.find('\0') != std::string::npos) {
          json.fail(concat("shard '", file, "' of tensor '", tensor, "' is not a file name beside the index"));
        }
        if (!tensors.insert(tensor).second) json.fail(concat("tensor '", tensor, "' is mapped twice"));
        if (files.insert(file).second) index.files.push_back(file);
        index.weight_map.emplace_back(std::move(tensor), std::move(file));
      } while (json.take(','));
      json.expect('}', "',' or '}'");
    } while (json.take(','));
    json.expect('}', "',' or '}'");
  }
  if (!json.at_end()) json.fail("trailing characters after the index");
  if (!has_map) throw FormatError(concat(name, ": safetensors index: no weight_map"));
  return index;
}

ShardIndex read_index(const std::string& path) {
  const auto file = MappedFile::open(path);
  if (file->size() > kMaxHeaderSize) {
    throw FormatError(concat(path, ": safetensors index of ", file->size(), " bytes is over the limit"));
  }
  return parse_index(file->read_string(0, static_cast<size_t>(file->size())), path);
}

ValuePtr merge_shards(const ShardIndex& index, const std::vector<ValuePtr>& shards, const std::string& index_path) {
  std::unordered_map<std::string, std::pair<size_t, ValuePtr>> holder;  // tensor -> (shard, tensor)
  std::vector<std::string> unlisted;
  for (size_t f = 0; f < shards.size(); ++f) {
    for (const auto& [key, value] : shards[f]->dict().items()) {
      const std::string& tensor = key->as_string();
      const auto [it, fresh] = holder.emplace(tensor, std::make_pair(f, value));
      if (!fresh) {
        throw FormatError(concat(index_path, ": tensor '", tensor, "' is in both ", index.files[it->second.first], " and ",
                                 index.files[f]));
      }
      unlisted.push_back(tensor);
    }
  }
  ValuePtr root = Value::plain_dict();
  std::unordered_set<std::string> listed;
  for (const auto& [tensor, file] : index.weight_map) {
    const auto found = holder.find(tensor);
    if (found == holder.end() || index.files[found->second.first] != file) {
      throw FormatError(concat(index_path, ": the index maps tensor '", tensor, "' to ", file, ", which does not hold it"));
    }
    root->dict().set(Value::string(tensor), found->second.second);
    listed.insert(tensor);
  }
  for (const auto& tensor : unlisted) {
    if (!listed.count(tensor)) root->dict().set(Value::string(tensor), holder[tensor].second);
  }
  return root;
}

ShardSplit split_into_shards(const std::vector<ShardItem>& items, uint64_t max_shard_size) {
  ShardSplit split;
  std::vector<std::pair<uintptr_t, uint64_t>> storages;            // in order of first appearance
  std::map<std::pair<uintptr_t, uint64_t>, std::vector<size_t>> viewers;  // storage -> its tensors
  std::vector<size_t> current;
  uint64_t current_size = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto id = std::make_pair(items[i].storage, items[i].storage_bytes);
    auto& tensors = viewers[id];
    tensors.push_back(i);
    if (tensors.size() > 1) continue;  // placed with the storage's first tensor below
    storages.push_back(id);
    const uint64_t size = items[i].storage_bytes;
    split.total_size += size;
    if (size > max_shard_size) {
      split.shards.push_back({i});
      continue;
    }
    if (current_size + size > max_shard_size) {
      split.shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty()) split.shards.push_back(std::move(current));
  for (const auto& id : storages) {
    const auto& tensors = viewers[id];
    for (auto& shard : split.shards) {
      bool holds_first = false;
      for (const size_t i : shard) holds_first = holds_first || i == tensors.front();
      if (!holds_first) continue;
      shard.insert(shard.end(), tensors.begin() + 1, tensors.end());
      break;
    }
  }
  return split;
}

std::string shard_file_name(std::string_view stem, size_t number, size_t count) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu.safetensors", number, count);
  return std::string(stem) + suffix;
}

bool is_file_of_pattern(std::string_view name, std::string_view stem) {
  if (name.substr(0, stem.size()) != stem) return false;
  name.remove_prefix(stem.size());
  constexpr std::string_view kNumbered = "-00000-of-00000";
  if (name.size() >= kNumbered.size() && name[0] == '-') {
    for (size_t k = 0; k < kNumbered.size(); ++k) {
      const bool digit = kNumbered[k] == '0';
      if (digit ? !std::isdigit(static_cast<unsigned char>(name[k])) : name[k] != kNumbered[k]) return false;
    }
    name.remove_prefix(kNumbered.size());
  }
  return name == ".safetensors" || name == ".safetensors.index.json";
}

std::string index_json(uint64_t total_size, const Metadata& metadata,
                       const std::vector<std::pair<std::string, std::string>>& weight_map) {
  std::string out = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total_size);
  for (const auto& [key, value] : metadata) {
    out += ",\n    ";
    append_python_json_string(out, key);
    out += ": ";
    append_python_json_string(out, value);
  }
  out += "\n  },\n  \"weight_map\": ";
  if (weight_map.empty()) {
    out += "{}";
  } else {
    out += "{";
    bool first = true;
    for (const auto& [tensor, file] : weight_map) {
      out += first ? "\n    " : ",\n    ";
      first = false;
      append_python_json_string(out, tensor);
      out += ": ";
      append_python_json_string(out, file);
    }
    out += "\n  }";
  }
  out += "\n}";
  return out;
}

}  // namespace fabricckpt::safetensors

namespace fabricckpt {

std::string safetensors_index_of(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    const std::filesystem::path index = std::filesystem::path(path) / "model.safetensors.index.json";
    return std::filesystem::is_regular_file(index, error) ? index.string() : std::string();
  }
  return is_safetensors_index_name(path) ? path : std::string();
}

bool is_safetensors_index_name(const std::string& path, std::string* stem) {
  const std::string_view suffix = safetensors::kIndexSuffix;
  if (path.size() <= suffix.size() || path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  if (stem) *stem = path.substr(0, path.size() - suffix.size());
  return true;
}

}  // namespace fabricckpt
