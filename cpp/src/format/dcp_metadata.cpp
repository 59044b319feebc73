// torch.distributed.checkpoint's .metadata -> dcp::Metadata, checked (dcp.h); writing is in
// dcp_metadata_write.cpp, flattening in dcp_flatten.cpp.
//
// The pickle holds dataclass instances: cls.__new__(cls) (NEWOBJ) then BUILD with the instance
// __dict__ (or __getstate__'s value: TensorProperties gives a tuple, _StorageInfo a dict without
// its None fields). torch.Size is REDUCE(torch.Size, (tuple,)). Reading never executes anything:
// the reader leaves these as Object recipes and this file checks and interprets them.
#include <algorithm>
#include <map>
#include <numeric>
#include <unordered_map>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"
#include "dcp_names.h"

namespace fabricckpt::dcp {

namespace {

constexpr size_t kMaxDims = 64;

// ------------------------------------------------------------------ reading: checked access

[[noreturn]] void bad(const std::string& what) { throw FormatError(what); }

// Counts what reading materializes against MetadataLimits::max_elements.
class Budget {
 public:
  explicit Budget(size_t limit) : left_(limit) {}
  void spend(size_t n, const std::string& where) {
    if (n > left_) {
      bad(concat(where, ": the metadata asks for more than its size allows (shared lists referenced over and over?)"));
    }
    left_ -= n;
  }

 private:
  size_t left_;
};

const Object& object_of(const Value& v, const char* module, const char* name, const std::string& where) {
  if (!v.is(Kind::Object)) bad(concat(where, ": expected a ", module, ".", name, ", found ", describe(v)));
  const Object& obj = v.object_ref();
  if (!obj.callable || !obj.callable->is(Kind::Global) || obj.callable->global_ref().module != module ||
      obj.callable->global_ref().name != name) {
    bad(concat(where, ": expected a ", module, ".", name, ", found ", describe(v)));
  }
  return obj;
}

// The instance __dict__ of a dataclass object (empty when it has none).
const Dict& fields_of(const Object& obj, const std::string& where) {
  static const Dict empty;
  if (!obj.state) return empty;
  if (!obj.state->is(Kind::Dict)) bad(concat(where, ": its state is ", describe(*obj.state), ", not a dict"));
  return obj.state->dict();
}

const Value& field_of(const Dict& fields, const char* name, const std::string& where) {
  ValuePtr v = fields.get(name);
  if (!v) bad(concat(where, ": no field '", name, "'"));
  return *v;
}

const Value* optional_field(const Dict& fields, const char* name) {
  ValuePtr v = fields.get(name);
  return v && !v->is(Kind::None) ? v.get() : nullptr;
}

int64_t int_of(const Value& v, const std::string& where) {
  if (!v.is(Kind::Int)) bad(concat(where, ": expected an int, found ", describe(v)));
  return v.as_int();
}

const std::string& string_of(const Value& v, const std::string& where) {
  if (!v.is(Kind::String)) bad(concat(where, ": expected a str, found ", describe(v)));
  return v.as_string();
}

// torch.Size((...)) or a plain tuple/list of non-negative ints.
std::vector<int64_t> size_of(const Value& v, const std::string& where, Budget& budget) {
  const Value* tuple = &v;
  if (v.is(Kind::Object)) {
    const Object& obj = object_of(v, "torch", "Size", where);
    if (!obj.args || !obj.args->is(Kind::Tuple) || obj.args->items().size() != 1) {
      bad(concat(where, ": malformed torch.Size"));
    }
    tuple = obj.args->items()[0].get();
  }
  if (!tuple->is(Kind::Tuple) && !tuple->is(Kind::List)) bad(concat(where, ": expected a torch.Size, found ", describe(v)));
  if (tuple->items().size() > kMaxDims) bad(concat(where, ": more than ", kMaxDims, " dimensions"));
  budget.spend(tuple->items().size() + 1, where);
  std::vector<int64_t> dims;
  for (const auto& item : tuple->items()) {
    int64_t d = int_of(*item, where);
    if (d < 0) bad(concat(where, ": negative size ", d));
    dims.push_back(d);
  }
  return dims;
}

// TensorProperties: __getstate__'s tuple (dtype, layout, requires_grad, memory format, pin_memory),
// or a plain __dict__ from torch versions without __getstate__.
void read_properties(const Value& v, TensorEntry& entry, const std::string& where) {
  const Object& obj = object_of(v, kMetadataModule, "TensorProperties", where);
  const Value* dtype = nullptr;
  const Value* requires_grad = nullptr;
  if (obj.state && obj.state->is(Kind::Tuple)) {
    const auto& items = obj.state->items();
    if (items.size() < 3) bad(concat(where, ": TensorProperties state has ", items.size(), " fields"));
    dtype = items[0].get();
    requires_grad = items[2].get();
  } else {
    const Dict& fields = fields_of(obj, where);
    dtype = &field_of(fields, "dtype", where);
    requires_grad = optional_field(fields, "requires_grad");
  }
  if (!dtype->is(Kind::Global) || dtype->global_ref().module != "torch") {
    bad(concat(where, ": dtype is ", describe(*dtype), ", not a torch dtype"));
  }
  entry.dtype = dtype->global_ref().name;
  entry.requires_grad = requires_grad && requires_grad->is(Kind::Bool) && requires_grad->as_bool();
}

TensorEntry read_tensor_entry(const Object& obj, const std::string& key, const std::string& where, Budget& budget,
                              const MetadataLimits& limits) {
  const Dict& fields = fields_of(obj, where);
  TensorEntry entry;
  read_properties(field_of(fields, "properties", where), entry, where);
  entry.size = size_of(field_of(fields, "size", where), where + " size", budget);
  checked_volume(entry.size, where + " size");
  const Value& chunks = field_of(fields, "chunks", where);
  if (!chunks.is(Kind::List)) bad(concat(where, ": chunks is ", describe(chunks), ", not a list"));
  budget.spend(chunks.items().size(), where + " chunks");
  for (size_t i = 0; i < chunks.items().size(); ++i) {
    std::string at = concat(where, " chunk ", i);
    const Object& c = object_of(*chunks.items()[i], kMetadataModule, "ChunkStorageMetadata", at);
    const Dict& cf = fields_of(c, at);
    Chunk chunk{size_of(field_of(cf, "offsets", at), at + " offsets", budget),
                size_of(field_of(cf, "sizes", at), at + " sizes", budget)};
    if (chunk.offsets.size() != entry.size.size() || chunk.sizes.size() != entry.size.size()) {
      bad(concat(at, ": has ", chunk.offsets.size(), "/", chunk.sizes.size(), " dimensions, the tensor ",
                 entry.size.size()));
    }
    for (size_t d = 0; d < entry.size.size(); ++d) {
      if (chunk.offsets[d] > entry.size[d] || chunk.sizes[d] > entry.size[d] - chunk.offsets[d]) {
        bad(concat(at, ": extends past the tensor's size in dimension ", d));
      }
    }
    entry.chunks.push_back(std::move(chunk));
  }
  check_chunk_tiling(key, entry.size, entry.chunks, limits.max_overlap_checks, /*require_full=*/false);
  return entry;
}

std::vector<PathItem> read_path(const Value& v, const std::string& where, Budget& budget) {
  if (!v.is(Kind::Tuple) && !v.is(Kind::List)) bad(concat(where, ": expected a path tuple, found ", describe(v)));
  budget.spend(v.items().size() + 1, where);
  std::vector<PathItem> path;
  for (const auto& step : v.items()) {
    if (step->is(Kind::String)) {
      path.emplace_back(step->as_string());
    } else if (step->is(Kind::Int)) {
      if (step->as_int() < 0) bad(concat(where, ": negative list index"));
      path.emplace_back(step->as_int());
    } else {
      bad(concat(where, ": path step ", describe(*step), " is neither a str nor an int"));
    }
  }
  if (path.empty()) bad(concat(where, ": empty path"));
  return path;
}

std::string posix_path_text(const Value& v) {
  if (v.is(Kind::String)) return v.as_string();
  if (!v.is(Kind::Object) || !v.object_ref().args || !v.object_ref().args->is(Kind::Tuple)) return describe(v);
  std::string out;
  for (const auto& part : v.object_ref().args->items()) {
    if (!part->is(Kind::String)) return describe(v);
    if (!out.empty() && out.back() != '/') out += '/';
    out += part->as_string();
  }
  return out;
}

// The list slots set_element will create for these paths (lists are shared by paths with a common
// prefix, and padded with None up to the highest index), counted over a trie of the prefixes
// without building anything; FormatError past the limit, naming the key and index that cross it.
void check_list_slots(const std::vector<std::pair<std::string, std::vector<PathItem>>>& planner_data,
                      size_t max_slots) {
  std::unordered_map<std::string, size_t> nodes;   // (parent node, step) -> node
  std::unordered_map<size_t, int64_t> list_top;     // node holding a list -> its highest index
  uint64_t slots = 0;
  for (const auto& [key, path] : planner_data) {
    size_t node = 0;
    for (const auto& step : path) {
      std::string edge = std::to_string(node);
      if (const auto* s = std::get_if<std::string>(&step)) {
        edge += 's';
        edge += *s;
      } else {
        const int64_t index = std::get<int64_t>(step);
        auto [it, fresh] = list_top.try_emplace(node, -1);
        if (index > it->second) {
          slots += static_cast<uint64_t>(index - it->second);
          it->second = index;
          if (slots > max_slots) {
            bad(concat("planner_data['", key, "']: list index ", index, " would make the lists of the state hold ",
                       slots, " items, more than the ", max_slots, " this metadata can account for"));
          }
        }
        edge += 'i';
        edge += std::to_string(index);
      }
      node = nodes.try_emplace(std::move(edge), nodes.size() + 1).first->second;
    }
  }
}

// Storage of one file must not be claimed twice: every item's bytes are its own, so the items of
// a checkpoint can never add up to more than its files hold. Items that start at one offset are
// the tensors of one safetensors blob (SAFETENSORS serialization records the blob's start for each):
// they count as one range as long as their lengths together (the sharded reader reads each as its
// own tensor of the blob, of exactly its length, and refuses shared offsets that are not a blob).
void check_storage_ranges(const std::vector<std::pair<StorageKey, StorageInfo>>& storage) {
  std::map<std::string, std::vector<size_t>> by_file;
  for (size_t i = 0; i < storage.size(); ++i) by_file[storage[i].second.relative_path].push_back(i);
  for (auto& [file, items] : by_file) {
    std::sort(items.begin(), items.end(), [&](size_t a, size_t b) {
      return std::pair(storage[a].second.offset, storage[a].second.length) <
             std::pair(storage[b].second.offset, storage[b].second.length);
    });
    uint64_t group_length = items.empty() ? 0 : storage[items[0]].second.length;  // of the items at prev's offset
    for (size_t k = 1; k < items.size(); ++k) {
      const auto& [prev_key, prev] = storage[items[k - 1]];
      const auto& [key, info] = storage[items[k]];
      if (info.offset == prev.offset) {
        if (info.length > UINT64_MAX - group_length) bad(concat("storage_data: items at ", info.offset, " overflow"));
        group_length += info.length;
        continue;
      }
      if (group_length > 0 && info.length > 0 && info.offset - prev.offset < group_length) {
        bad(concat("storage_data: '", prev_key.fqn, "' (bytes ", prev.offset, "+", prev.length, ") and '", key.fqn,
                   "' (bytes ", info.offset, "+", info.length, ") overlap in ", file));
      }
      group_length = info.length;
    }
  }
}

std::string storage_index_key(const std::string& fqn, const std::vector<int64_t>* offsets) {
  std::string k = fqn;
  k += '\0';
  if (!offsets) return k + 'b';
  for (int64_t o : *offsets) {
    k += std::to_string(o);
    k += ',';
  }
  return k;
}

std::string chunk_text(const Chunk& c) {
  auto dims = [](const std::vector<int64_t>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  };
  return concat("offsets ", dims(c.offsets), " sizes ", dims(c.sizes));
}

}  // namespace

std::string rank_file_name(int rank) { return concat("__", rank, "_0.distcp"); }

int64_t checked_volume(const std::vector<int64_t>& sizes, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : sizes) {
    if (d < 0) bad(concat(what, ": negative size ", d));
    if (d != 0 && n > INT64_MAX / d) {
      // Still a real overflow only when no other dimension is 0.
      if (std::find(sizes.begin(), sizes.end(), 0) != sizes.end()) return 0;
      bad(concat(what, ": more than 2^63 elements"));
    }
    n *= d;
  }
  return n;
}

void check_chunk_tiling(const std::string& key, const std::vector<int64_t>& size, const std::vector<Chunk>& chunks,
                        size_t max_overlap_checks, bool require_full) {
  const std::string what = concat("tensor '", key, "'");
  const int64_t total = checked_volume(size, what);
  // Non-empty chunks, swept along the dimension with the most distinct offsets: only chunks whose
  // ranges overlap in that dimension are compared (FSDP's row shards: none at all).
  std::vector<size_t> live;
  int64_t sum = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const int64_t v = checked_volume(chunks[i].sizes, concat(what, " chunk ", i));
    if (v == 0) continue;
    if (sum > INT64_MAX - v) bad(concat(what, ": its chunks hold more than 2^63 elements"));
    sum += v;
    live.push_back(i);
  }
  size_t axis = 0, best = 0;
  for (size_t d = 0; d < size.size(); ++d) {
    std::vector<int64_t> starts;
    for (size_t i : live) starts.push_back(chunks[i].offsets[d]);
    std::sort(starts.begin(), starts.end());
    const size_t distinct = static_cast<size_t>(std::unique(starts.begin(), starts.end()) - starts.begin());
    if (distinct > best) {
      best = distinct;
      axis = d;
    }
  }
  if (!size.empty()) {
    std::sort(live.begin(), live.end(), [&](size_t a, size_t b) { return chunks[a].offsets[axis] < chunks[b].offsets[axis]; });
    std::vector<size_t> active;
    size_t checks = 0;
    for (size_t i : live) {
      const Chunk& c = chunks[i];
      std::erase_if(active, [&](size_t j) { return chunks[j].offsets[axis] + chunks[j].sizes[axis] <= c.offsets[axis]; });
      for (size_t j : active) {
        if (++checks > max_overlap_checks) {
          bad(concat(what, ": too many chunks (", chunks.size(), ") overlap in every dimension's ranges to check them"));
        }
        bool overlap = true;
        for (size_t d = 0; d < size.size() && overlap; ++d) {
          const Chunk& o = chunks[j];
          overlap = c.offsets[d] < o.offsets[d] + o.sizes[d] && o.offsets[d] < c.offsets[d] + c.sizes[d];
        }
        if (overlap) {
          bad(concat(what, ": chunks ", std::min(i, j), " (", chunk_text(chunks[std::min(i, j)]), ") and ",
                     std::max(i, j), " (", chunk_text(chunks[std::max(i, j)]), ") overlap"));
        }
      }
      active.push_back(i);
    }
  } else if (live.size() > 1) {  // a 0-d tensor: every chunk is the one element
    bad(concat(what, ": chunks ", live[0], " and ", live[1], " overlap (both hold the scalar)"));
  }
  // Disjoint and inside the tensor: their union is their sum.
  if (require_full && sum != total) {
    bad(concat(what, ": its chunks cover ", sum, " of its ", total, " elements (a gap: no chunk holds the rest)"));
  }
}

MetadataLimits MetadataLimits::for_file_size(size_t bytes) {
  MetadataLimits limits;
  // Python's pickle of a .metadata spends at least a byte per element it names (a memo reference
  // is 2): twice the size plus a little is generous for any file Python wrote.
  limits.max_elements = 2 * bytes + 4096;
  limits.max_list_slots = bytes + 4096;
  return limits;
}

bool Metadata::indexed() const {
  return indexed_sizes_[0] == entries.size() && indexed_sizes_[1] == planner_data.size() &&
         indexed_sizes_[2] == storage.size();
}

void Metadata::index() {
  entry_index_.clear();
  path_index_.clear();
  storage_index_.clear();
  for (size_t i = 0; i < entries.size(); ++i) entry_index_.try_emplace(entries[i].key, i);
  for (size_t i = 0; i < planner_data.size(); ++i) path_index_.try_emplace(planner_data[i].first, i);
  for (size_t i = 0; i < storage.size(); ++i) {
    const StorageKey& k = storage[i].first;
    storage_index_.try_emplace(storage_index_key(k.fqn, k.offset ? &*k.offset : nullptr), i);
  }
  indexed_sizes_[0] = entries.size();
  indexed_sizes_[1] = planner_data.size();
  indexed_sizes_[2] = storage.size();
}

const Entry* Metadata::find(const std::string& key) const {
  if (indexed()) {
    auto it = entry_index_.find(key);
    return it == entry_index_.end() ? nullptr : &entries[it->second];
  }
  for (const auto& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

const std::vector<PathItem>* Metadata::path_of(const std::string& key) const {
  if (indexed()) {
    auto it = path_index_.find(key);
    return it == path_index_.end() ? nullptr : &planner_data[it->second].second;
  }
  for (const auto& [k, path] : planner_data) {
    if (k == key) return &path;
  }
  return nullptr;
}

const StorageInfo* Metadata::storage_of(const std::string& fqn, const std::vector<int64_t>* offsets) const {
  if (indexed()) {
    auto it = storage_index_.find(storage_index_key(fqn, offsets));
    return it == storage_index_.end() ? nullptr : &storage[it->second].second;
  }
  for (const auto& [key, info] : storage) {
    if (key.fqn != fqn) continue;
    if (!offsets && !key.offset) return &info;
    if (offsets && key.offset && *key.offset == *offsets) return &info;
  }
  return nullptr;
}

bool is_plain_file_name(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  return name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}


Metadata metadata_from_value(const Value& root, const MetadataLimits& limits) {
  const std::string top = "Metadata";
  const Object& obj = object_of(root, kMetadataModule, "Metadata", top);
  const Dict& fields = fields_of(obj, top);
  Metadata m;
  Budget budget(limits.max_elements);

  const Value& sdm = field_of(fields, "state_dict_metadata", top);
  if (!sdm.is(Kind::Dict)) bad("state_dict_metadata is not a dict");
  for (const auto& [k, v] : sdm.dict().items()) {
    const std::string& key = string_of(*k, "state_dict_metadata key");
    std::string where = concat("state_dict_metadata['", key, "']");
    budget.spend(1, where);
    Entry entry{key, std::nullopt};
    if (v->is(Kind::Object) && v->object_ref().callable && v->object_ref().callable->is(Kind::Global) &&
        v->object_ref().callable->global_ref().name == "BytesStorageMetadata") {
      object_of(*v, kMetadataModule, "BytesStorageMetadata", where);
    } else {
      entry.tensor = read_tensor_entry(object_of(*v, kMetadataModule, "TensorStorageMetadata", where), key, where,
                                       budget, limits);
    }
    m.entries.push_back(std::move(entry));
  }

  if (const Value* pd = optional_field(fields, "planner_data")) {
    if (!pd->is(Kind::Dict)) bad(concat("planner_data is ", describe(*pd), ", not a dict"));
    m.has_planner_data = true;
    for (const auto& [k, v] : pd->dict().items()) {
      const std::string& key = string_of(*k, "planner_data key");
      m.planner_data.emplace_back(key, read_path(*v, concat("planner_data['", key, "']"), budget));
    }
    check_list_slots(m.planner_data, limits.max_list_slots);
  }

  const Value* sd = optional_field(fields, "storage_data");
  if (!sd || !sd->is(Kind::Dict)) bad("storage_data is missing or not a dict");
  for (const auto& [k, v] : sd->dict().items()) {
    const std::string where = "storage_data key";
    const Dict& kf = fields_of(object_of(*k, kMetadataModule, "MetadataIndex", where), where);
    StorageKey key;
    key.fqn = string_of(field_of(kf, "fqn", where), where + " fqn");
    std::string at = concat("storage_data['", key.fqn, "']");
    budget.spend(1, at);
    if (const Value* off = optional_field(kf, "offset")) key.offset = size_of(*off, at + " offset", budget);
    if (const Value* idx = optional_field(kf, "index")) key.index = int_of(*idx, at + " index");
    const Dict& vf = fields_of(object_of(*v, kFilesystemModule, "_StorageInfo", at), at);
    StorageInfo info;
    info.relative_path = string_of(field_of(vf, "relative_path", at), at + " relative_path");
    if (!is_plain_file_name(info.relative_path)) {
      bad(concat(at, ": storage path '", info.relative_path,
                 "' is not a file name inside the checkpoint directory (it could point outside it)"));
    }
    int64_t offset = int_of(field_of(vf, "offset", at), at + " offset");
    int64_t length = int_of(field_of(vf, "length", at), at + " length");
    if (offset < 0 || length < 0) bad(concat(at, ": negative offset or length"));
    info.offset = static_cast<uint64_t>(offset);
    info.length = static_cast<uint64_t>(length);
    if (const Value* t = optional_field(vf, "transform_descriptors")) {
      if (!t->is(Kind::List) && !t->is(Kind::Tuple)) bad(concat(at, ": transform_descriptors is not a list"));
      budget.spend(t->items().size(), at + " transform_descriptors");
      for (const auto& d : t->items()) info.transforms.push_back(string_of(*d, at + " transform"));
    }
    m.storage.emplace_back(std::move(key), std::move(info));
  }

  if (const Value* meta = optional_field(fields, "storage_meta")) {
    const Dict& mf = fields_of(object_of(*meta, kMetadataModule, "StorageMeta", "storage_meta"), "storage_meta");
    if (const Value* id = optional_field(mf, "checkpoint_id")) m.checkpoint_id = posix_path_text(*id);
    if (const Value* id = optional_field(mf, "save_id"); id && id->is(Kind::String)) m.save_id = id->as_string();
  }
  check_storage_ranges(m.storage);
  m.version.clear();
  if (const Value* version = optional_field(fields, "version")) m.version = string_of(*version, "version");
  m.index();
  return m;
}


Metadata read_metadata(std::string_view bytes, const std::string& file) {
  try {
    UnpickleResult parsed = unpickle(bytes);
    return metadata_from_value(*parsed.value, MetadataLimits::for_file_size(bytes.size()));
  } catch (const FormatError& e) {
    throw FormatError(concat(file, ": not a valid torch.distributed.checkpoint metadata file: ", e.what()));
  }
}

}  // namespace fabricckpt::dcp
