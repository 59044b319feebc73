// safetensors files as tensors: the format layer's entries (safetensors.h) turned into CPU tensors
// that view the file's mapping or own their bytes, and a Value tree flattened into entries to write.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <map>
#include <tuple>
#include <filesystem>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/torch_save.h"
#include "parallel.h"
#include "storage_memory.h"

namespace fabricckpt {

namespace st = safetensors;
namespace fs = std::filesystem;
using c10::ScalarType;

namespace {

struct DtypePair {
  st::Dtype file;
  ScalarType torch;
};

// What safetensors.torch maps (bindings/python/src/view.rs and torch.py); F6_* have no torch dtype.
constexpr DtypePair kPairs[] = {
    {st::Dtype::BOOL, ScalarType::Bool},          {st::Dtype::U8, ScalarType::Byte},
    {st::Dtype::I8, ScalarType::Char},            {st::Dtype::I16, ScalarType::Short},
    {st::Dtype::U16, ScalarType::UInt16},         {st::Dtype::F16, ScalarType::Half},
    {st::Dtype::BF16, ScalarType::BFloat16},      {st::Dtype::I32, ScalarType::Int},
    {st::Dtype::U32, ScalarType::UInt32},         {st::Dtype::F32, ScalarType::Float},
    {st::Dtype::F64, ScalarType::Double},         {st::Dtype::I64, ScalarType::Long},
    {st::Dtype::U64, ScalarType::UInt64},         {st::Dtype::C64, ScalarType::ComplexFloat},
    {st::Dtype::F8_E4M3, ScalarType::Float8_e4m3fn}, {st::Dtype::F8_E5M2, ScalarType::Float8_e5m2},
    {st::Dtype::F8_E4M3FNUZ, ScalarType::Float8_e4m3fnuz}, {st::Dtype::F8_E5M2FNUZ, ScalarType::Float8_e5m2fnuz},
    {st::Dtype::F8_E8M0, ScalarType::Float8_e8m0fnu}, {st::Dtype::F4, ScalarType::Float4_e2m1fn_x2},
};

std::optional<ScalarType> torch_dtype(st::Dtype dtype) {
  for (const auto& p : kPairs) {
    if (p.file == dtype) return p.torch;
  }
  return std::nullopt;
}

std::optional<st::Dtype> file_dtype(ScalarType dtype) {
  for (const auto& p : kPairs) {
    if (p.torch == dtype) return p.file;
  }
  return std::nullopt;
}

ValuePtr tensor_value(at::Tensor tensor) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(tensor));
  return Value::tensor(std::move(ref));
}

// A tree flattened into what save_file takes; `keep` holds contiguous copies while they are written
// (the same tensor where it already was contiguous), `given` the state's own tensors.
struct Flattened {
  std::vector<st::TensorData> tensors;
  st::Metadata metadata;
  std::vector<at::Tensor> keep;
  std::vector<at::Tensor> given;
  std::vector<std::string> unfit;  // "key (int)": what safetensors cannot hold
  std::unordered_set<std::string> names;
};

void flatten(const Value& node, const std::string& key, Flattened& out, const std::string& path) {
  if (node.is(Kind::Dict)) {
    for (const auto& [k, v] : node.dict().items()) {
      std::string part;
      if (k->is(Kind::String)) {
        part = k->as_string();
      } else if (k->is(Kind::Int)) {
        part = std::to_string(k->as_int());
      } else {
        out.unfit.push_back(concat(key.empty() ? "" : key + ".", "<", describe(*k), "> (a ", kind_name(k->kind), " key)"));
        continue;
      }
      flatten(*v, key.empty() ? part : key + "." + part, out, path);
    }
    return;
  }
  if (key.empty()) throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", kind_name(node.kind)));
  if (!out.names.insert(key).second) throw StateError(concat(path, ": key '", key, "' appears twice once flattened"));
  if (node.is(Kind::String)) {
    out.metadata.emplace_back(key, node.as_string());
    return;
  }
  if (!node.is(Kind::Tensor)) {
    out.unfit.push_back(concat(key, " (", kind_name(node.kind), ")"));
    return;
  }
  const at::Tensor& tensor = *node.tensor_ref().tensor;
  const auto dtype = file_dtype(tensor.scalar_type());
  if (!dtype || tensor.layout() != at::kStrided || !tensor.device().is_cpu()) {
    out.unfit.push_back(concat(key, " (a ", c10::toString(tensor.scalar_type()), " ", tensor.layout(), " tensor on ",
                               tensor.device(), ")"));
    return;
  }
  at::Tensor dense = tensor.contiguous();
  st::TensorData data;
  data.name = key;
  data.dtype = *dtype;
  for (const int64_t d : dense.sizes()) data.shape.push_back(static_cast<uint64_t>(d));
  if (*dtype == st::Dtype::F4) {
    if (data.shape.empty()) {
      out.unfit.push_back(concat(key, " (a 0-d float4_e2m1fn_x2 tensor)"));
      return;
    }
    data.shape.back() *= 2;
  }
  data.size = dense.nbytes();
  data.data = data.size ? dense.const_data_ptr() : nullptr;
  out.tensors.push_back(std::move(data));
  out.keep.push_back(std::move(dense));
  out.given.push_back(tensor);
}

Flattened flatten_state(const ValuePtr& root, const std::string& path) {
  if (!root || !root->is(Kind::Dict)) {
    throw StateError(concat(path, ": safetensors holds a dict of tensors, not a ", root ? kind_name(root->kind) : "null"));
  }
  Flattened flat;
  flatten(*root, "", flat, path);
  if (!flat.unfit.empty()) {
    std::string list;
    for (const auto& u : flat.unfit) list += (list.empty() ? "" : ", ") + u;
    throw StateError(concat(path, ": safetensors holds tensors and string metadata only; these keys hold neither: ", list));
  }
  return flat;
}

// Where the tensor's storage is; 0 for an empty one, as torch gives every empty storage (which
// huggingface_hub's split then treats as one storage).
uintptr_t storage_address(const at::Tensor& t) {
  return t.storage().nbytes() == 0 ? 0 : reinterpret_cast<uintptr_t>(t.storage().data());
}

// One past the last byte the tensor's elements reach.
uintptr_t end_address(const at::Tensor& t) {
  const auto start = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  if (t.numel() == 0) return start;
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return start + static_cast<uintptr_t>((last + 1) * static_cast<int64_t>(t.element_size()));
}

// The tensors (indices into flat.given) grouped as safetensors.torch's _find_shared_tensors groups
// them: same storage (an empty one is in no group), and within it runs of overlapping byte ranges,
// in order of first appearance; with `alone` false only the groups of two or more (shared memory).
std::vector<std::vector<size_t>> shared_groups(const Flattened& flat, bool alone = false) {
  std::vector<std::vector<size_t>> by_storage;
  std::map<std::pair<uintptr_t, size_t>, size_t> slot;
  for (size_t i = 0; i < flat.given.size(); ++i) {
    const at::Tensor& t = flat.given[i];
    const auto id = std::make_pair(storage_address(t), t.storage().nbytes());
    if (id.first == 0 || id.second == 0) continue;
    const auto [it, fresh] = slot.emplace(id, by_storage.size());
    if (fresh) by_storage.emplace_back();
    by_storage[it->second].push_back(i);
  }
  std::vector<std::vector<size_t>> groups;
  for (auto& viewers : by_storage) {
    if (viewers.size() < 2) {
      if (alone) groups.push_back(viewers);
      continue;
    }
    std::vector<std::tuple<uintptr_t, uintptr_t, std::string, size_t>> areas;
    for (const size_t i : viewers) {
      const at::Tensor& t = flat.given[i];
      areas.emplace_back(reinterpret_cast<uintptr_t>(t.const_data_ptr()), end_address(t), flat.tensors[i].name, i);
    }
    std::sort(areas.begin(), areas.end());
    std::vector<std::vector<size_t>> runs{{std::get<3>(areas[0])}};
    uintptr_t last_stop = std::get<1>(areas[0]);
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

std::string names_of(const Flattened& flat, const std::vector<size_t>& group) {
  std::vector<std::string> names;
  for (const size_t i : group) names.push_back(flat.tensors[i].name);
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Whether the tensor covers its whole storage (huggingface_hub's _is_complete).
bool covers_storage(const at::Tensor& t) {
  return t.const_data_ptr() == t.storage().data() && static_cast<size_t>(t.numel()) * t.element_size() == t.storage().nbytes();
}

}  // namespace

namespace {

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options);

// model.safetensors.index.json and its shards beside it: every shard's tensors, in the index's order.
ValuePtr load_sharded(const std::string& index_path, const TorchLoadOptions& options) {
  const st::ShardIndex index = st::read_index(index_path);
  const std::string dir = fs::path(index_path).parent_path().string();
  std::vector<ValuePtr> shards;
  for (const auto& name : index.files) shards.push_back(load_single((fs::path(dir) / name).string(), options));
  return st::merge_shards(index, shards, index_path);
}

}  // namespace

ValuePtr load_safetensors_file(const std::string& path, const TorchLoadOptions& options) {
  const std::string index = safetensors_index_of(path);
  return index.empty() ? load_single(path, options) : load_sharded(index, options);
}

namespace {

// Bytes of `file` still to be read into a storage's memory.
struct Fill {
  uint64_t offset;
  uint8_t* dest;
  uint64_t size;
};

// The tensor of entry `t` whose data starts at `offset` of `file`: a view of the mapping when `mmap`
// (and the offset suits the dtype), else memory of its own that `fills` records for reading.
at::Tensor entry_tensor(const std::shared_ptr<const MappedFile>& file, const st::TensorInfo& t, uint64_t offset,
                        bool mmap, std::vector<Fill>& fills) {
  const std::string& path = file->name();
  const auto dtype = torch_dtype(t.dtype);
  if (!dtype) {
    throw FormatError(concat(path, ": tensor '", t.name, "' has dtype ", st::dtype_name(t.dtype),
                             ", for which libtorch has no type"));
  }
  const std::vector<int64_t> sizes = st::torch_sizes(t, path);
  const size_t nbytes = static_cast<size_t>(t.nbytes());
  if (nbytes == 0) return at::empty(sizes, at::TensorOptions().dtype(*dtype));
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(*dtype));
  c10::Storage storage;
  if (mmap && file->mapped() && offset % c10::elementSize(*dtype) == 0) {
    storage = torchsave::mapped_storage(file, offset, nbytes);  // zero copy: a view of the mapping
  } else {
    storage = torchsave::allocate_storage(nbytes);
    fills.push_back({offset, static_cast<uint8_t*>(storage.mutable_data()), nbytes});
  }
  tensor.set_(storage, 0, sizes, c10::contiguous_strides(sizes));
  return tensor;
}

// The tensors of an opened file: views of it with options.mmap, else read into their own memory.
ValuePtr load_opened(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
  const st::Header header = st::read_header(*file);
  ValuePtr root = Value::plain_dict();
  std::vector<Fill> fills;
  for (const auto& t : header.tensors) {
    at::Tensor tensor = entry_tensor(file, t, header.data_start() + t.begin, options.mmap, fills);
    root->dict().set(Value::string(t.name), tensor_value(std::move(tensor)));
  }
  uint64_t bytes = 0;
  for (const auto& f : fills) bytes += f.size;
  if (options.progress) options.progress->total = bytes;
  std::vector<uint64_t> sizes;
  for (const auto& f : fills) sizes.push_back(f.size);
  const auto pieces = torchsave::split(sizes);
  torchsave::run_parallel(pieces.size(), torchsave::pick_threads(options.threads, bytes, pieces.size()), [&](size_t p) {
    const auto& piece = pieces[p];
    const Fill& f = fills[piece.item];
    file->read_at(f.offset + piece.offset, f.dest + piece.offset, piece.size);
    if (options.progress) options.progress->add(piece.size);
  });
  return root;
}

ValuePtr load_single(const std::string& path, const TorchLoadOptions& options) {
  return load_opened(options.mmap ? MappedFile::open_private(path) : MappedFile::open(path), options);
}

}  // namespace

ValuePtr load_safetensors_bytes(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
  if (!file->writable() || !file->mapped()) throw Error(concat(file->name(), ": bytes to load in place must be writable"));
  TorchLoadOptions views = options;
  views.mmap = true;  // the tensors view the downloaded bytes
  return load_opened(file, views);
}

ValuePtr load_embedded_safetensor(const std::shared_ptr<const MappedFile>& file, uint64_t offset,
                                  const std::string& name, bool mmap) {
  if (offset > file->size()) throw FormatError(concat(file->name(), ": no safetensors data at byte ", offset));
  const auto blob = MappedFile::slice(file, offset, file->size() - offset,
                                      concat(file->name(), " (safetensors at byte ", offset, ")"));
  const st::Header header = st::read_header(*blob);
  const st::TensorInfo* t = header.find(name);
  if (!t) throw FormatError(concat(blob->name(), ": no tensor '", name, "'"));
  std::vector<Fill> fills;
  at::Tensor tensor = entry_tensor(blob, *t, header.data_start() + t->begin, mmap, fills);
  for (const auto& f : fills) blob->read_at(f.offset, f.dest, f.size);
  return tensor_value(std::move(tensor));
}

namespace {

void refuse_shared_memory(const std::string& path, const Flattened& flat) {
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

void save_single(const std::string& path, Flattened flat, bool fsync, IoProgress* progress) {
  refuse_shared_memory(path, flat);
  std::optional<st::Metadata> metadata;
  if (!flat.metadata.empty()) metadata = std::move(flat.metadata);
  st::write_file(path, flat.tensors, metadata, fsync, progress);
}

// One shard file of a Hugging Face sharded checkpoint: its name beside the index, its tensors and layout.
struct IndexShard {
  std::string file, path;
  std::vector<st::TensorData> tensors;
  st::Layout layout;
};

// What save_torch_state_dict writes for `flat` at `index_path`: the shards and the index's bytes,
// every check made before any file exists. Of the tensors sharing memory only the alphabetically
// first that covers it whole is kept (_remove_duplicate_names), the others named in the metadata.
struct IndexPlan {
  Flattened flat;  // keeps the tensors (and contiguous copies) alive
  std::vector<IndexShard> shards;
  std::string index;
  uint64_t bytes = 0;  // of every shard
};

IndexPlan plan_index(const std::string& index_path, const std::string& stem, Flattened flat, uint64_t max_shard_size) {
  if (max_shard_size == 0) throw StateError(concat(index_path, ": the largest shard size must be positive"));
  IndexPlan plan;
  plan.flat = std::move(flat);
  Flattened& f = plan.flat;
  st::Metadata metadata = std::move(f.metadata);
  std::unordered_set<std::string> metadata_keys;
  for (const auto& [key, value] : metadata) metadata_keys.insert(key);
  if (metadata_keys.count("total_size")) {
    throw StateError(concat(index_path, ": 'total_size' names the index's own metadata entry; rename that string"));
  }
  std::vector<bool> dropped(f.tensors.size(), false);
  for (const auto& group : shared_groups(f, /*alone=*/true)) {
    std::vector<std::string> names, whole;
    for (const size_t i : group) {
      names.push_back(f.tensors[i].name);
      if (covers_storage(f.given[i])) whole.push_back(f.tensors[i].name);
    }
    if (whole.empty()) {  // a view of a larger storage, alone or with others
      throw StateError(concat(index_path, ": ", names_of(f, group), group.size() > 1 ? " view" : " views",
                              " part of a larger storage, which huggingface_hub refuses to save (it would "
                              "store more than the tensors hold); clone ", group.size() > 1 ? "them" : "it", " first"));
    }
    const std::string keep = *std::min_element(whole.begin(), whole.end());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      if (name == keep) continue;
      if (metadata_keys.insert(name).second) metadata.emplace_back(name, keep);  // the user's own entry wins
      for (const size_t i : group) {
        if (f.tensors[i].name == name) dropped[i] = true;
      }
    }
  }
  std::vector<size_t> kept;
  std::vector<st::ShardItem> items;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    if (dropped[i]) continue;
    kept.push_back(i);
    items.push_back({f.tensors[i].name, storage_address(f.keep[i]), f.keep[i].storage().nbytes()});
  }
  const st::ShardSplit split = st::split_into_shards(items, max_shard_size);
  const fs::path dir = fs::path(index_path).parent_path();
  const std::string stem_name = fs::path(stem).filename().string();
  const st::Metadata shard_metadata{{"format", "pt"}};
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t k = 0; k < split.shards.size(); ++k) {
    IndexShard shard;
    shard.file = st::shard_file_name(stem_name, k + 1, split.shards.size());
    shard.path = (dir / shard.file).string();
    for (const size_t item : split.shards[k]) {
      shard.tensors.push_back(f.tensors[kept[item]]);
      weight_map.emplace_back(f.tensors[kept[item]].name, shard.file);
    }
    shard.layout = st::plan_layout(shard.tensors, shard_metadata, shard.path);
    plan.bytes += shard.layout.total;
    plan.shards.push_back(std::move(shard));
  }
  plan.index = st::index_json(split.total_size, metadata, weight_map);
  return plan;
}

void save_index(const std::string& index_path, const std::string& stem, Flattened flat, uint64_t max_shard_size,
                bool fsync, IoProgress* progress) {
  const IndexPlan plan = plan_index(index_path, stem, std::move(flat), max_shard_size);
  if (progress) progress->total = plan.bytes;
  const fs::path dir = fs::path(index_path).parent_path();
  const std::string stem_name = fs::path(stem).filename().string();

  // Every shard in full first (the long part): until the renames below the previous checkpoint stands whole.
  std::vector<std::unique_ptr<AtomicFileSink>> written;
  for (const auto& shard : plan.shards) {
    written.push_back(st::write_planned(shard.path, shard.tensors, shard.layout, fsync, progress));
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
    if (!current.count(name) && st::is_file_of_pattern(name, stem_name) && entry.is_regular_file(ec)) {
      fs::remove(entry.path(), ec);
    }
  }
}

// Copies [offset, offset + size) of a planned safetensors file (`layout` of `tensors`, whose indices
// `by_offset` lists in file order) into `dest`: the header, then the tensors' bytes from their memory.
void fill_planned(const std::string& target, const st::Layout& layout, const std::vector<st::TensorData>& tensors,
                  const std::vector<size_t>& by_offset, uint64_t offset, void* dest, size_t size) {
  check_read_range(target, layout.total, offset, size);
  const uint64_t end = offset + size;
  auto* out = static_cast<uint8_t*>(dest);
  uint64_t done = offset;  // bytes before it are in `dest`
  auto copy = [&](uint64_t start, const void* from, uint64_t length) {
    const uint64_t a = std::max(start, offset);
    const uint64_t b = std::min(start + length, end);
    if (a >= b) return;
    if (a != done) throw Error(concat(target, ": safetensors layout has a gap at byte ", done));
    std::memcpy(out + (a - offset), static_cast<const uint8_t*>(from) + (a - start), static_cast<size_t>(b - a));
    done = b;
  };
  copy(0, layout.prefix.data(), layout.prefix.size());
  // The first tensor that ends after `offset`, then each in file order until `end`.
  auto it = std::lower_bound(by_offset.begin(), by_offset.end(), offset, [&](size_t i, uint64_t at) {
    return layout.file_offset[i] + tensors[i].size <= at;
  });
  for (; it != by_offset.end() && layout.file_offset[*it] < end; ++it) {
    copy(layout.file_offset[*it], tensors[*it].data, tensors[*it].size);
  }
  if (done != end) throw Error(concat(target, ": safetensors layout has a gap at byte ", done));
}

// The tensors' indices in file order.
std::vector<size_t> file_order(const st::Layout& layout) {
  std::vector<size_t> order(layout.file_offset.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return layout.file_offset[a] < layout.file_offset[b]; });
  return order;
}

}  // namespace

void write_safetensors_stream(OutputSink& out, const ValuePtr& tensors, const st::Metadata& metadata,
                              const std::string& target) {
  Flattened flat = flatten_state(tensors, target);
  refuse_shared_memory(target, flat);
  st::write_stream(out, flat.tensors, metadata, target);
}

struct SafetensorsLayout::Impl {
  std::string target;
  Flattened flat;                     // keeps the tensors (and contiguous copies) alive
  st::Layout layout;
  std::vector<size_t> by_offset;      // tensor indices in file order
};

SafetensorsLayout::SafetensorsLayout(const ValuePtr& tensors, const st::Metadata& metadata, const std::string& target)
    : SafetensorsLayout(tensors, metadata, MetadataFrom::Given, target) {}

std::unique_ptr<SafetensorsLayout> SafetensorsLayout::of_file(const ValuePtr& root, const std::string& target) {
  return std::unique_ptr<SafetensorsLayout>(new SafetensorsLayout(root, std::nullopt, MetadataFrom::Strings, target));
}

SafetensorsLayout::SafetensorsLayout(const ValuePtr& root, const std::optional<st::Metadata>& metadata,
                                     MetadataFrom from, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  Impl& l = *impl_;
  l.target = target;
  l.flat = flatten_state(root, target);
  refuse_shared_memory(target, l.flat);
  std::optional<st::Metadata> written = metadata;
  if (from == MetadataFrom::Strings && !l.flat.metadata.empty()) written = l.flat.metadata;  // as save_single
  l.layout = st::plan_layout(l.flat.tensors, written, target);
  l.by_offset = file_order(l.layout);
}

SafetensorsLayout::~SafetensorsLayout() = default;

uint64_t SafetensorsLayout::size() const { return impl_->layout.total; }

void SafetensorsLayout::fill(uint64_t offset, void* dest, size_t size) const {
  fill_planned(impl_->target, impl_->layout, impl_->flat.tensors, impl_->by_offset, offset, dest, size);
}

struct SafetensorsIndexLayout::Impl {
  IndexPlan plan;
  std::vector<std::vector<size_t>> by_offset;  // per shard
};

SafetensorsIndexLayout::SafetensorsIndexLayout(const ValuePtr& root, const std::string& index_target,
                                               uint64_t max_shard_size)
    : impl_(std::make_unique<Impl>()) {
  std::string stem;
  if (!is_safetensors_index_name(index_target, &stem)) {
    throw StateError(concat(index_target, ": not a Hugging Face index name (*.safetensors.index.json)"));
  }
  impl_->plan = plan_index(index_target, stem, flatten_state(root, index_target), max_shard_size);
  for (const auto& shard : impl_->plan.shards) impl_->by_offset.push_back(file_order(shard.layout));
}

SafetensorsIndexLayout::~SafetensorsIndexLayout() = default;

size_t SafetensorsIndexLayout::shard_count() const { return impl_->plan.shards.size(); }

namespace {
const IndexShard& shard_at(const std::vector<IndexShard>& shards, size_t i) {
  if (i >= shards.size()) throw Error(concat("no shard ", i, " of ", shards.size()));
  return shards[i];
}
}  // namespace

const std::string& SafetensorsIndexLayout::shard_name(size_t i) const { return shard_at(impl_->plan.shards, i).file; }

uint64_t SafetensorsIndexLayout::shard_size(size_t i) const { return shard_at(impl_->plan.shards, i).layout.total; }

void SafetensorsIndexLayout::fill(size_t i, uint64_t offset, void* dest, size_t size) const {
  const IndexShard& shard = shard_at(impl_->plan.shards, i);
  fill_planned(shard.path, shard.layout, shard.tensors, impl_->by_offset[i], offset, dest, size);
}

const std::string& SafetensorsIndexLayout::index_json() const { return impl_->plan.index; }

ValuePtr load_safetensors_index_bytes(const st::ShardIndex& index, const std::string& index_name,
                                      const std::vector<std::shared_ptr<const MappedFile>>& shards) {
  if (shards.size() != index.files.size()) {
    throw Error(concat(index_name, ": ", shards.size(), " shard files given for the index's ", index.files.size()));
  }
  std::vector<ValuePtr> loaded;
  for (const auto& shard : shards) loaded.push_back(load_safetensors_bytes(shard));
  return st::merge_shards(index, loaded, index_name);
}

void save_safetensors_file(const std::string& path, const ValuePtr& root, bool fsync, IoProgress* progress,
                           uint64_t max_shard_size) {
  Flattened flat = flatten_state(root, path);
  std::string stem;
  if (is_safetensors_index_name(path, &stem)) {
    save_index(path, stem, std::move(flat), max_shard_size, fsync, progress);
  } else {
    save_single(path, std::move(flat), fsync, progress);
  }
}

}  // namespace fabricckpt
