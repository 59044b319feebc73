// A tree planned as safetensors, without libtorch: flattened as safetensors.torch.save_file takes it,
// checked for shared memory as it checks, split into a Hugging Face sharded checkpoint as
// huggingface_hub's save_torch_state_dict splits it, and written. The library's tensors and the
// command line's outlines reach here alike, each as TensorData (its bytes) and TensorMemory (what it views).
#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <tuple>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/safetensors.h"

namespace fabricckpt::safetensors {

namespace fs = std::filesystem;

namespace {

void flatten_into(const Value& node, const std::string& key, FlatState& out, std::vector<std::string>& unfit,
                  std::unordered_set<std::string>& names, const std::string& path, const LeafTensor& leaf) {
  if (node.is(Kind::Dict)) {
    for (const auto& [k, v] : node.dict().items()) {
      std::string part;
      if (k->is(Kind::String)) {
        part = k->as_string();
      } else if (k->is(Kind::Int)) {
        part = std::to_string(k->as_int());
      } else {
        unfit.push_back(concat(key.empty() ? "" : key + ".", "<", describe(*k), "> (a ", kind_name(k->kind), " key)"));
        continue;
      }
      flatten_into(*v, key.empty() ? part : key + "." + part, out, unfit, names, path, leaf);
    }
    return;
  }
  if (key.empty()) throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", kind_name(node.kind)));
  if (!names.insert(key).second) throw StateError(concat(path, ": key '", key, "' appears twice once flattened"));
  if (node.is(Kind::String)) {
    out.metadata.emplace_back(key, node.as_string());
    return;
  }
  const size_t before = out.tensors.size();
  std::string refused = leaf(node, key, out);
  if (!refused.empty()) {
    unfit.push_back(std::move(refused));
  } else if (out.tensors.size() != before + 1 || out.memory.size() != out.tensors.size()) {
    throw Error(concat(path, ": key '", key, "' flattened into ", out.tensors.size() - before, " tensors"));
  }
}

// The tensors grouped as safetensors.torch's _find_shared_tensors groups them: same storage (an empty
// one is in no group), and within it runs of overlapping byte ranges, in order of first appearance;
// with `alone` false only the groups of two or more (shared memory).
std::vector<std::vector<size_t>> shared_groups(const FlatState& flat, bool alone = false) {
  std::vector<std::vector<size_t>> by_storage;
  std::map<std::pair<uintptr_t, uint64_t>, size_t> slot;
  for (size_t i = 0; i < flat.memory.size(); ++i) {
    const TensorMemory& m = flat.memory[i];
    if (m.storage == 0 || m.storage_bytes == 0) continue;
    const auto [it, fresh] = slot.emplace(std::make_pair(m.storage, m.storage_bytes), by_storage.size());
    if (fresh) by_storage.emplace_back();
    by_storage[it->second].push_back(i);
  }
  std::vector<std::vector<size_t>> groups;
  for (auto& viewers : by_storage) {
    if (viewers.size() < 2) {
      if (alone) groups.push_back(viewers);
      continue;
    }
    std::vector<std::tuple<uint64_t, uint64_t, std::string, size_t>> areas;
    for (const size_t i : viewers) areas.emplace_back(flat.memory[i].begin, flat.memory[i].end, flat.tensors[i].name, i);
    std::sort(areas.begin(), areas.end());
    std::vector<std::vector<size_t>> runs{{std::get<3>(areas[0])}};
    uint64_t last_stop = std::get<1>(areas[0]);
    for (size_t k = 1; k < areas.size(); ++k) {
      const auto& [start, stop, name, i] = areas[k];
      if (start >= last_stop) {
        runs.push_back({i});
      } else {
        runs.back().push_back(i);
      }
      last_stop = stop;  // as safetensors does: the last area's end, not the run's
    }
    for (auto& run : runs) {
      if (alone || run.size() > 1) groups.push_back(std::move(run));
    }
  }
  return groups;
}

std::string names_of(const FlatState& flat, const std::vector<size_t>& group) {
  std::vector<std::string> names;
  for (const size_t i : group) names.push_back(flat.tensors[i].name);
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Whether the tensor covers its whole storage (huggingface_hub's _is_complete).
bool covers_storage(const FlatState& flat, size_t i) {
  return flat.memory[i].begin == 0 && flat.tensors[i].size == flat.memory[i].storage_bytes;
}

// The file save_file writes for `flat`: its strings as __metadata__, none when it has none.
std::optional<Metadata> file_metadata(const FlatState& flat) {
  if (flat.metadata.empty()) return std::nullopt;
  return flat.metadata;
}

}  // namespace

FlatState flatten(const ValuePtr& root, const std::string& path, const LeafTensor& leaf) {
  if (!root || !root->is(Kind::Dict)) {
    throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", root ? kind_name(root->kind) : "null"));
  }
  FlatState flat;
  std::vector<std::string> unfit;
  std::unordered_set<std::string> names;
  flatten_into(*root, "", flat, unfit, names, path, leaf);
  if (!unfit.empty()) {
    std::string list;
    for (const auto& u : unfit) list += (list.empty() ? "" : ", ") + u;
    throw StateError(concat(path, ": safetensors holds tensors and string metadata only; these keys hold neither: ", list));
  }
  return flat;
}

void refuse_shared_memory(const FlatState& flat, const std::string& path) {
  const auto groups = shared_groups(flat);
  if (!groups.empty()) {
    std::string list;
    for (const auto& g : groups) list += concat(list.empty() ? "" : "; ", names_of(flat, g));
    throw StateError(concat(path, ": these tensors share memory (", list, "); safetensors.torch.save_file refuses "
                            "them, since they would be stored twice and load as separate tensors. Save to a "
                            "'.safetensors.index.json' path (huggingface_hub's layout, which keeps one of them) or "
                            "clone them first"));
  }
}

IndexPlan plan_index(const FlatState& flat, const std::string& index_path, const std::string& stem,
                     uint64_t max_shard_size) {
  if (max_shard_size == 0) throw StateError(concat(index_path, ": the largest shard size must be positive"));
  Metadata metadata = flat.metadata;
  std::unordered_set<std::string> metadata_keys;
  for (const auto& [key, value] : metadata) metadata_keys.insert(key);
  if (metadata_keys.count("total_size")) {
    throw StateError(concat(index_path, ": 'total_size' names the index's own metadata entry; rename that string"));
  }
  std::vector<bool> dropped(flat.tensors.size(), false);
  for (const auto& group : shared_groups(flat, /*alone=*/true)) {
    std::vector<std::string> names, whole;
    for (const size_t i : group) {
      names.push_back(flat.tensors[i].name);
      if (covers_storage(flat, i)) whole.push_back(flat.tensors[i].name);
    }
    if (whole.empty()) {  // a view of a larger storage, alone or with others
      throw StateError(concat(index_path, ": ", names_of(flat, group), group.size() > 1 ? " view" : " views",
                              " part of a larger storage, which huggingface_hub refuses to save (it would "
                              "store more than the tensors hold); clone ", group.size() > 1 ? "them" : "it", " first"));
    }
    const std::string keep = *std::min_element(whole.begin(), whole.end());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      if (name == keep) continue;
      if (metadata_keys.insert(name).second) metadata.emplace_back(name, keep);  // the user's own entry wins
      for (const size_t i : group) {
        if (flat.tensors[i].name == name) dropped[i] = true;
      }
    }
  }
  std::vector<size_t> kept;
  std::vector<ShardItem> items;
  for (size_t i = 0; i < flat.tensors.size(); ++i) {
    if (dropped[i]) continue;
    kept.push_back(i);
    items.push_back({flat.tensors[i].name, flat.memory[i].written_storage, flat.memory[i].written_storage_bytes});
  }
  const ShardSplit split = split_into_shards(items, max_shard_size);
  const fs::path dir = fs::path(index_path).parent_path();
  const std::string stem_name = fs::path(stem).filename().string();
  const Metadata shard_metadata{{"format", "pt"}};
  std::vector<std::pair<std::string, std::string>> weight_map;
  IndexPlan plan;
  for (size_t k = 0; k < split.shards.size(); ++k) {
    IndexShard shard;
    shard.file = shard_file_name(stem_name, k + 1, split.shards.size());
    shard.path = (dir / shard.file).string();
    for (const size_t item : split.shards[k]) {
      shard.tensors.push_back(flat.tensors[kept[item]]);
      weight_map.emplace_back(flat.tensors[kept[item]].name, shard.file);
    }
    shard.layout = plan_layout(shard.tensors, shard_metadata, shard.path);
    plan.bytes += shard.layout.total;
    plan.shards.push_back(std::move(shard));
  }
  plan.index = index_json(split.total_size, metadata, weight_map);
  return plan;
}

namespace {

void write_index(const std::string& index_path, const std::string& stem, const FlatState& flat, uint64_t max_shard_size,
                 bool fsync, IoProgress* progress) {
  const IndexPlan plan = plan_index(flat, index_path, stem, max_shard_size);
  if (progress) progress->total = plan.bytes;
  const fs::path dir = fs::path(index_path).parent_path();
  const std::string stem_name = fs::path(stem).filename().string();

  // Every shard in full first (the long part): until the renames below the previous checkpoint stands whole.
  std::vector<std::unique_ptr<AtomicFileSink>> written;
  for (const auto& shard : plan.shards) {
    written.push_back(write_planned(shard.path, shard.tensors, shard.layout, fsync, progress));
  }
  for (auto& sink : written) sink->commit();
  AtomicFileSink index_sink(index_path, fsync);
  index_sink.write(plan.index.data(), plan.index.size());
  index_sink.commit();

  // What an earlier save under this name left (other shard counts, a single file) would be read instead.
  std::unordered_set<std::string> current{fs::path(index_path).filename().string()};
  for (const auto& shard : plan.shards) current.insert(shard.file);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir.empty() ? fs::path(".") : dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!current.count(name) && is_file_of_pattern(name, stem_name) && entry.is_regular_file(ec)) {
      fs::remove(entry.path(), ec);
    }
  }
}

}  // namespace

void write_flat(const std::string& path, const FlatState& flat, bool fsync, IoProgress* progress,
                uint64_t max_shard_size) {
  std::string stem;
  if (is_safetensors_index_name(path, &stem)) {
    write_index(path, stem, flat, max_shard_size, fsync, progress);
  } else {
    refuse_shared_memory(flat, path);
    write_file(path, flat.tensors, file_metadata(flat), fsync, progress);
  }
}

void write_flat_stream(OutputSink& out, const FlatState& flat, const std::string& target) {
  refuse_shared_memory(flat, target);
  write_stream(out, flat.tensors, file_metadata(flat), target);
}

std::optional<Dtype> dtype_of_torch(std::string_view c10_name) {
  // What safetensors.torch maps (bindings/python/src/view.rs and torch.py); F6_* have no torch dtype.
  static constexpr std::array<std::pair<std::string_view, Dtype>, 20> kNames{{
      {"Bool", Dtype::BOOL},       {"Byte", Dtype::U8},          {"Char", Dtype::I8},
      {"Short", Dtype::I16},       {"UInt16", Dtype::U16},       {"Half", Dtype::F16},
      {"BFloat16", Dtype::BF16},   {"Int", Dtype::I32},          {"UInt32", Dtype::U32},
      {"Float", Dtype::F32},       {"Double", Dtype::F64},       {"Long", Dtype::I64},
      {"UInt64", Dtype::U64},      {"ComplexFloat", Dtype::C64}, {"Float8_e4m3fn", Dtype::F8_E4M3},
      {"Float8_e5m2", Dtype::F8_E5M2}, {"Float8_e4m3fnuz", Dtype::F8_E4M3FNUZ},
      {"Float8_e5m2fnuz", Dtype::F8_E5M2FNUZ}, {"Float8_e8m0fnu", Dtype::F8_E8M0},
      {"Float4_e2m1fn_x2", Dtype::F4},
  }};
  for (const auto& [name, dtype] : kNames) {
    if (name == c10_name) return dtype;
  }
  return std::nullopt;
}

}  // namespace fabricckpt::safetensors
