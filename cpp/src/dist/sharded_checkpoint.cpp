// Sharded checkpoints: torch.distributed.checkpoint directories over c10d (sharded.h).
//
// Saving follows torch.distributed.checkpoint's FileSystemWriter with one file per rank: each rank
// writes its items back to back into __{rank}_0.distcp (values first, then tensors, each one a
// torch.save stream with archive folder "archive"), reports what it wrote to rank 0, and rank 0
// writes .metadata from all the reports. Whole (replicated) tensors and values are written once,
// by rank 0, as DCP's deduplication does.
#include "fabricckpt/sharded.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>

#include "fabricckpt/dist.h"
#include "fabricckpt/dtypes.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"
#include "message_codec.h"

namespace fabricckpt::sharded {

namespace fs = std::filesystem;
using dcp::PathItem;
using dist::decode_outcome;
using dist::encode_failure;
using dist::encode_success;
using dist::MessageKind;
using dist::MessageReader;
using dist::MessageWriter;

// ------------------------------------------------------------------ plan

void ShardPlan::add_parameter(const std::string& module_key, const std::string& name, Placement placement) {
  const size_t n = placement.global_size.size();
  if (placement.offsets.size() != n || placement.sizes.size() != n) {
    throw StateError(concat("parameter '", name, "' of '", module_key, "': the global shape, offsets and local ",
                            "shape must have the same number of dimensions"));
  }
  for (size_t d = 0; d < n; ++d) {
    if (placement.offsets[d] < 0 || placement.sizes[d] < 0 || placement.global_size[d] < 0 ||
        placement.offsets[d] + placement.sizes[d] > placement.global_size[d]) {
      throw StateError(concat("parameter '", name, "' of '", module_key, "': its shard does not fit in the global ",
                              "shape in dimension ", d));
    }
  }
  params_[module_key][name] = std::move(placement);
}

void ShardPlan::add_optimizer(const std::string& optimizer_key, const std::string& module_key) {
  optimizers_[optimizer_key] = module_key;
}

const Placement* ShardPlan::parameter(const std::string& module_key, const std::string& name) const {
  auto m = params_.find(module_key);
  if (m == params_.end()) return nullptr;
  auto p = m->second.find(name);
  return p == m->second.end() ? nullptr : &p->second;
}

std::string ShardPlan::module_of_optimizer(const std::string& optimizer_key) const {
  auto it = optimizers_.find(optimizer_key);
  return it == optimizers_.end() ? std::string() : it->second;
}

// (module, name) -> the parameter; (optimizer, 'state', name, field) -> that parameter.
const Placement* ShardPlan::parameter_at(const std::vector<PathItem>& path) const {
  auto text = [&](size_t i) -> const std::string* { return std::get_if<std::string>(&path[i]); };
  if (path.size() == 2 && text(0) && text(1)) return parameter(*text(0), *text(1));
  if (path.size() == 4 && text(0) && text(1) && *text(1) == "state" && text(2)) {
    std::string module = module_of_optimizer(*text(0));
    if (!module.empty()) return parameter(module, *text(2));
  }
  return nullptr;
}

std::optional<Placement> ShardPlan::for_local(const std::vector<PathItem>& path, const std::vector<int64_t>& sizes) const {
  const Placement* p = parameter_at(path);
  if (!p || p->sizes != sizes) return std::nullopt;
  return *p;
}

std::optional<Placement> ShardPlan::for_global(const std::vector<PathItem>& path,
                                               const std::vector<int64_t>& global_size) const {
  const Placement* p = parameter_at(path);
  if (!p || p->global_size != global_size) return std::nullopt;
  return *p;
}

// ------------------------------------------------------------------ helpers

namespace {

std::vector<int64_t> dims_of(const at::Tensor& t) { return t.sizes().vec(); }

const at::Tensor& tensor_of(const Value& v) {
  const auto& t = v.tensor_ref().tensor;
  if (!t || !t->defined()) throw StateError("cannot save an undefined tensor");
  return *t;
}

ValuePtr tensor(at::Tensor t) {
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(t));
  return Value::tensor(std::move(ref));
}

// The tensor as torch.distributed.checkpoint saves a chunk: detached, owning exactly its elements
// (a view into a bigger storage is cloned, as its _SerialCpuLoader does).
ValuePtr chunk_value(const at::Tensor& t) {
  at::Tensor c = t.detach();
  if (!c.is_contiguous() || c.storage_offset() != 0 ||
      c.storage().nbytes() != static_cast<size_t>(c.numel()) * c.element_size()) {
    c = c.contiguous().clone();
  }
  return tensor(std::move(c));
}

// What one rank wrote, reported to rank 0.
struct Written {
  std::string key;
  std::vector<PathItem> path;
  bool tensor = false;
  std::string dtype;
  std::vector<int64_t> global_size, offsets, sizes;
  uint64_t file_offset = 0, length = 0;
};

std::string encode_report(const std::vector<Written>& items) {
  MessageWriter message(MessageKind::ShardReport);
  message.count(items.size());
  for (const auto& w : items) {
    message.text(w.key).count(w.path.size());
    for (const auto& step : w.path) {
      const auto* name = std::get_if<std::string>(&step);
      message.boolean(name != nullptr);
      if (name) {
        message.text(*name);
      } else {
        message.integer(std::get<int64_t>(step));
      }
    }
    message.boolean(w.tensor).text(w.dtype).integers(w.global_size).integers(w.offsets).integers(w.sizes);
    message.integer(static_cast<int64_t>(w.file_offset)).integer(static_cast<int64_t>(w.length));
  }
  return message.bytes();
}

std::vector<Written> decode_report(const std::string& bytes, int rank) {
  MessageReader message(bytes, MessageKind::ShardReport, rank, "shard report");
  // An item's fields take at least 60 bytes (a path step at least 10): what bounds the counts.
  constexpr size_t kMinItemBytes = 60, kMinStepBytes = 10;
  std::vector<Written> out(message.count(kMinItemBytes));
  for (Written& w : out) {
    w.key = message.text();
    w.path.resize(message.count(kMinStepBytes));
    for (PathItem& step : w.path) {
      if (message.boolean()) {
        step = message.text();
      } else {
        step = message.integer();
      }
    }
    w.tensor = message.boolean();
    w.dtype = message.text();
    w.global_size = message.integers();
    w.offsets = message.integers();
    w.sizes = message.integers();
    const int64_t file_offset = message.integer(), length = message.integer();
    if (file_offset < 0 || length < 0) message.fail("'", w.key, "' has a negative offset or length in its file");
    if (w.tensor && (w.offsets.size() != w.global_size.size() || w.sizes.size() != w.global_size.size())) {
      message.fail("'", w.key, "' has a global shape, offsets and sizes of different dimensions");
    }
    w.file_offset = static_cast<uint64_t>(file_offset);
    w.length = static_cast<uint64_t>(length);
  }
  message.end();
  return out;
}

std::string random_uuid4() {
  std::random_device rd;
  std::uniform_int_distribution<int> nibble(0, 15);
  std::string out;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) {
    int v = nibble(rd);
    if (i == 12) v = 4;
    if (i == 16) v = 8 | (v & 3);
    if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
    out += hex[v];
  }
  return out;
}

// Runs `step` on rank 0 alone, then every rank learns whether it worked (and throws if not).
template <typename Step>
void on_rank_zero(ProcessGroup* group, const std::string& what, Step&& step) {
  const int rank = group ? group->rank() : 0;
  std::string failure;
  if (rank == 0) {
    try {
      step();
    } catch (const std::exception& e) {
      if (!group || group->world_size() == 1) throw;
      failure = e.what();
    }
  }
  if (!group || group->world_size() == 1) return;
  const std::string sent = group->broadcast(failure.empty() ? encode_success("") : encode_failure(failure), 0);
  group->barrier();
  const dist::Outcome outcome = decode_outcome(sent, 0, concat("outcome of ", what));
  if (!outcome.ok) {
    throw Error(rank == 0 ? outcome.detail
                          : concat(what, ": global rank 0 failed (on rank ", rank, "): ", outcome.detail));
  }
}

bool is_checkpoint_file(const std::string& name) {
  const bool distcp = name.size() > 7 && name.rfind("__", 0) == 0 && name.substr(name.size() - 7) == ".distcp";
  return distcp || name == dcp::kMetadataFile || name == dcp::kLightningMetaFile || name == ".metadata.tmp";
}

// A sharded save replaces the whole directory; one that holds anything else (the user's own files,
// other checkpoints) is refused before anything is written rather than lost with it.
void check_replaceable(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;  // absent, or a file (a single-file checkpoint, replaced)
  std::vector<std::string> foreign;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_checkpoint_file(name)) foreign.push_back(name);
  }
  if (ec) throw IoError(concat(dir, ": cannot list the directory: ", ec.message()));
  if (foreign.empty()) return;
  std::sort(foreign.begin(), foreign.end());
  std::string names;
  for (size_t i = 0; i < foreign.size() && i < 5; ++i) names += (i ? ", " : "") + foreign[i];
  if (foreign.size() > 5) names += concat(" and ", foreign.size() - 5, " more");
  throw IoError(concat(dir, ": holds entries that are not part of a sharded checkpoint (", names,
                       "); a sharded save replaces the whole directory, so it refuses to: save to another "
                       "directory or move them"));
}

// This rank's distcp file: values, then tensors (DCP's order), each a torch.save stream.
std::vector<Written> write_rank_file(const std::string& dir, int rank, const std::vector<dcp::FlatItem>& flat,
                                     const ShardPlan& plan, bool fsync) {
  std::vector<const dcp::FlatItem*> values, tensors;
  for (const auto& item : flat) {
    if (item.value->is(Kind::Tensor)) {
      auto placement = plan.for_local(item.path, dims_of(tensor_of(*item.value)));
      if (placement || rank == 0) tensors.push_back(&item);
    } else if (rank == 0) {
      values.push_back(&item);
    }
  }
  std::vector<Written> written;
  AtomicFileSink sink((fs::path(dir) / dcp::rank_file_name(rank)).string(), fsync);
  for (const auto* item : values) {
    Written w;
    w.key = item->key;
    w.path = item->path;
    w.file_offset = sink.position();
    write_torch_save(sink, item->value, "archive", /*allow_unsafe_globals=*/true);  // checked by save()
    w.length = sink.position() - w.file_offset;
    written.push_back(std::move(w));
  }
  for (const auto* item : tensors) {
    const at::Tensor& t = tensor_of(*item->value);
    Written w;
    w.key = item->key;
    w.path = item->path;
    w.tensor = true;
    w.dtype = torchsave::name_of_dtype(t.scalar_type());
    w.sizes = dims_of(t);
    if (auto placement = plan.for_local(item->path, w.sizes)) {
      w.global_size = placement->global_size;
      w.offsets = placement->offsets;
    } else {
      w.global_size = w.sizes;
      w.offsets.assign(w.sizes.size(), 0);
    }
    w.file_offset = sink.position();
    write_torch_save(sink, chunk_value(t), "archive", /*allow_unsafe_globals=*/true);  // a tensor
    w.length = sink.position() - w.file_offset;
    written.push_back(std::move(w));
  }
  sink.commit();
  // Reported in the state's order (the metadata lists keys in it), whatever the order in the file.
  std::map<std::string, size_t> order;
  for (size_t i = 0; i < flat.size(); ++i) order.emplace(flat[i].key, i);
  std::stable_sort(written.begin(), written.end(),
                   [&](const Written& a, const Written& b) { return order[a.key] < order[b.key]; });
  return written;
}

// .metadata from every rank's report (rank order).
dcp::Metadata build_metadata(const std::vector<std::vector<Written>>& reports, const SaveOptions& options) {
  dcp::Metadata m;
  m.has_planner_data = true;
  m.checkpoint_id = options.checkpoint_id;
  m.save_id = random_uuid4();
  std::map<std::string, size_t> entry_of;
  for (size_t rank = 0; rank < reports.size(); ++rank) {
    for (const auto& w : reports[rank]) {
      auto [it, fresh] = entry_of.emplace(w.key, m.entries.size());
      if (fresh) {
        dcp::Entry e{w.key, std::nullopt};
        if (w.tensor) e.tensor = dcp::TensorEntry{w.dtype, false, w.global_size, {}};
        m.entries.push_back(std::move(e));
        m.planner_data.emplace_back(w.key, w.path);
      }
      dcp::Entry& e = m.entries[it->second];
      if (e.tensor.has_value() != w.tensor) {
        throw StateError(concat("'", w.key, "' is a tensor on one rank and a value on another"));
      }
      dcp::StorageKey key{w.key, std::nullopt, std::nullopt};
      if (w.tensor) {
        if (e.tensor->size != w.global_size || e.tensor->dtype != w.dtype) {
          throw StateError(concat("the shards of '", w.key, "' disagree: rank ", rank, " has a ", w.dtype,
                                  " shard of a global shape of ", w.global_size.size(), " dimensions that differs"));
        }
        key.offset = w.offsets;
        key.index = static_cast<int64_t>(e.tensor->chunks.size());
        e.tensor->chunks.push_back({w.offsets, w.sizes});
      }
      m.storage.emplace_back(std::move(key),
                             dcp::StorageInfo{dcp::rank_file_name(static_cast<int>(rank)), w.file_offset, w.length, {}});
    }
  }
  return m;
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

int64_t volume(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

// `t` narrowed to [offsets, offsets + sizes) in every dimension.
at::Tensor region(at::Tensor t, const std::vector<int64_t>& offsets, const std::vector<int64_t>& sizes) {
  for (size_t d = 0; d < sizes.size(); ++d) t = t.narrow(static_cast<int64_t>(d), offsets[d], sizes[d]);
  return t;
}

}  // namespace

// ------------------------------------------------------------------ save

void save(const std::string& dir, const ValuePtr& state, const ValuePtr& meta, const ShardPlan& plan,
          ProcessGroup* group, const SaveOptions& options) {
  const int rank = group ? group->rank() : 0;
  const int world = group ? group->world_size() : 1;
  std::vector<dcp::FlatItem> flat = dcp::flatten_state_dict(state);

  // 1. Rank 0 checks the state's globals (it writes every value and meta.pt; their streams are then
  //    written without checking again), makes the new directory beside the old one (which stays a
  //    loadable checkpoint until the new one is complete) and tells every rank where it is.
  std::unique_ptr<AtomicDirectory> staging;
  std::string prepared;  // an outcome: the new directory, or why there is none
  if (rank == 0) {
    try {
      if (!options.allow_unsafe_globals) {
        check_weights_only_tree(state, dir);
        if (meta) check_weights_only_tree(meta, (fs::path(dir) / dcp::kLightningMetaFile).string());
      }
      check_replaceable(dir);
      staging = std::make_unique<AtomicDirectory>(dir, options.fsync);
      prepared = encode_success(staging->path());
    } catch (const std::exception& e) {
      if (world == 1) throw;
      prepared = encode_failure(e.what());
    }
  }
  if (group && world > 1) prepared = group->broadcast(prepared, 0);
  const dist::Outcome preparation = decode_outcome(prepared, 0, concat("preparation of ", dir));
  if (!preparation.ok) {
    throw Error(rank == 0 ? preparation.detail
                          : concat(dir, ": global rank 0 could not prepare the checkpoint (on rank ", rank,
                                   "): ", preparation.detail));
  }
  const std::string& staging_dir = preparation.detail;

  // 2. Every rank writes its file and reports to rank 0 (a failure is reported, not thrown, so that
  //    every rank still takes part in the gather).
  std::string report;
  std::string failure;
  try {
    report = encode_success(encode_report(write_rank_file(staging_dir, rank, flat, plan, options.fsync)));
  } catch (const std::exception& e) {
    failure = e.what();
    report = encode_failure(failure);
  }
  std::vector<std::string> reports = group && world > 1 ? group->gather(report, 0) : std::vector<std::string>{report};

  // 3. Rank 0 writes meta.pt and .metadata, then swaps the complete directory in; then everyone
  //    learns the outcome. A failure anywhere removes the new directory and leaves the old one.
  on_rank_zero(group, dir, [&] {
    std::vector<std::vector<Written>> written;
    for (int r = 0; r < world; ++r) {
      const dist::Outcome outcome = decode_outcome(reports[static_cast<size_t>(r)], r, "shard report");
      if (!outcome.ok) throw Error(concat(dir, ": rank ", r, " could not write its shard file: ", outcome.detail));
      written.push_back(decode_report(outcome.detail, r));
    }
    dcp::Metadata metadata = build_metadata(written, options);
    try {
      if (meta) {
        TorchSaveOptions meta_options;
        meta_options.archive_name = "meta";  // torch.save given the path meta.pt, as Lightning calls it
        meta_options.fsync = options.fsync;
        meta_options.allow_unsafe_globals = true;  // checked by save() before anything was written
        save_torch_file((fs::path(staging_dir) / dcp::kLightningMetaFile).string(), meta, meta_options);
      }
      std::string bytes = dcp::write_metadata(metadata);
      AtomicFileSink sink((fs::path(staging_dir) / dcp::kMetadataFile).string(), options.fsync);
      sink.write(bytes.data(), bytes.size());
      sink.commit();
      staging->commit();
    } catch (const IoError& e) {
      throw IoError(concat(dir, ": ", e.what()));  // the staging directory's name alone would puzzle
    }
  });
  if (!failure.empty()) throw Error(failure);
}

// ------------------------------------------------------------------ full state

namespace {

struct Region {
  std::vector<int64_t> offsets, sizes;
};

bool overlap(const Region& a, const Region& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] >= b.offsets[d] + b.sizes[d] || b.offsets[d] >= a.offsets[d] + a.sizes[d]) return false;
  }
  return volume(a.sizes) > 0 && volume(b.sizes) > 0;
}

// Rank 0's check that the shards every rank declared tile each global tensor exactly.
void check_tiling(const std::string& key, const std::vector<int64_t>& global, const std::vector<Region>& regions) {
  int64_t covered = 0;
  for (size_t r = 0; r < regions.size(); ++r) {
    const Region& g = regions[r];
    if (g.offsets.size() != global.size() || g.sizes.size() != global.size()) {
      throw StateError(concat("rank ", r, "'s shard of '", key, "' has ", g.sizes.size(), " dimensions, not ", global.size()));
    }
    for (size_t d = 0; d < global.size(); ++d) {
      if (g.offsets[d] < 0 || g.sizes[d] < 0 || g.offsets[d] + g.sizes[d] > global[d]) {
        throw StateError(concat("rank ", r, "'s shard of '", key, "' lies outside its global shape ", dims_text(global)));
      }
    }
    for (size_t q = 0; q < r; ++q) {
      if (overlap(regions[q], g)) throw StateError(concat("the shards of '", key, "' on ranks ", q, " and ", r, " overlap"));
    }
    covered += volume(g.sizes);
  }
  if (covered != volume(global)) {
    throw StateError(concat("the shards of '", key, "' cover ", covered, " of its ", volume(global),
                            " elements (global shape ", dims_text(global), ")"));
  }
}

}  // namespace

void gather_full(const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group) {
  const int rank = group ? group->rank() : 0;
  const int world = group ? group->world_size() : 1;
  struct Shard {
    const dcp::FlatItem* item;
    Placement placement;
  };
  std::vector<dcp::FlatItem> flat = dcp::flatten_state_dict(state);
  std::vector<Shard> shards;
  for (const auto& item : flat) {
    if (!item.value->is(Kind::Tensor)) continue;
    if (auto p = plan.for_local(item.path, dims_of(tensor_of(*item.value)))) shards.push_back({&item, *p});
  }
  // Every rank must send the same tensors in the same order.
  if (group && world > 1) {
    MessageWriter keys(MessageKind::ShardKeys);
    keys.count(shards.size());
    for (const auto& shard : shards) keys.text(shard.item->key);
    bool same = group->broadcast(keys.bytes(), 0) == keys.bytes();
    if (!group->all_agree(same)) {
      throw StateError(concat("rank ", rank, ": the ranks do not hold the same sharded tensors (",
                              same ? "another rank differs" : "this rank differs from rank 0", ")"));
    }
  }

  // 1. Rank 0 learns every rank's regions (one gather) and checks that they tile each tensor.
  MessageWriter header(MessageKind::ShardRegions);
  header.count(shards.size());
  for (const auto& shard : shards) header.integers(shard.placement.offsets).integers(shard.placement.sizes);
  std::vector<std::string> headers = group && world > 1 ? group->gather(header.bytes(), 0)
                                                        : std::vector<std::string>{header.bytes()};
  std::vector<std::vector<Region>> regions(shards.size());  // [tensor][rank], rank 0 only
  on_rank_zero(group, "gathering the full state", [&] {
    for (size_t r = 0; r < headers.size(); ++r) {
      MessageReader message(headers[r], MessageKind::ShardRegions, static_cast<int>(r), "shard description");
      const size_t count = message.count(/*min_item_bytes=*/18);
      if (count != shards.size()) message.fail("it describes ", count, " shards, not ", shards.size());
      for (size_t i = 0; i < shards.size(); ++i) {
        Region g;
        g.offsets = message.integers();
        g.sizes = message.integers();
        if (g.offsets.size() != g.sizes.size()) {
          message.fail("the shard of '", shards[i].item->key, "' has ", g.offsets.size(), " offsets but ",
                       g.sizes.size(), " sizes");
        }
        regions[i].push_back(std::move(g));
      }
      message.end();
    }
    for (size_t i = 0; i < shards.size(); ++i) {
      check_tiling(shards[i].item->key, shards[i].placement.global_size, regions[i]);
    }
  });

  // 2. The data: every other rank sends its shards to rank 0, which receives each straight into its
  //    place in the whole tensor when that place is contiguous (dimension-0 shards are).
  for (size_t i = 0; i < shards.size(); ++i) {
    const at::Tensor local = tensor_of(*shards[i].item->value).detach().contiguous();
    const int tag = static_cast<int>(i);
    if (rank != 0) {
      if (local.nbytes() > 0) group->send(local.data_ptr(), local.nbytes(), 0, tag);
      continue;
    }
    const Placement& p = shards[i].placement;
    at::Tensor full = at::empty(p.global_size, local.options());
    region(full, p.offsets, p.sizes).copy_(local);
    for (int r = 1; r < world; ++r) {
      const Region& g = regions[i][static_cast<size_t>(r)];
      at::Tensor place = region(full, g.offsets, g.sizes);
      const size_t nbytes = static_cast<size_t>(volume(g.sizes)) * local.element_size();
      if (nbytes == 0) continue;
      if (place.is_contiguous()) {
        group->recv(place.data_ptr(), nbytes, r, tag);
      } else {
        at::Tensor piece = at::empty(g.sizes, local.options());
        group->recv(piece.data_ptr(), nbytes, r, tag);
        place.copy_(piece);
      }
    }
    shards[i].item->value->tensor_ref().tensor = std::make_shared<at::Tensor>(std::move(full));
  }
}

void slice_to_plan(const ValuePtr& state, const ShardPlan& plan) {
  for (const auto& item : dcp::flatten_state_dict(state)) {
    if (!item.value->is(Kind::Tensor)) continue;
    const at::Tensor& t = tensor_of(*item.value);
    if (auto p = plan.for_global(item.path, dims_of(t)); p && p->sizes != p->global_size) {
      item.value->tensor_ref().tensor = std::make_shared<at::Tensor>(region(t, p->offsets, p->sizes).clone());
    }
  }
}

// ------------------------------------------------------------------ reading

bool is_sharded_checkpoint(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / dcp::kMetadataFile, ec);
}

Reader::Reader(std::string dir, bool map_chunks) : dir_(std::move(dir)), map_chunks_(map_chunks) {
  const std::string file = (fs::path(dir_) / dcp::kMetadataFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw FormatError(concat(dir_, ": not a sharded checkpoint (no ", dcp::kMetadataFile,
                             "; the save did not finish, or this is not a torch.distributed.checkpoint directory)"));
  }
  auto opened = MappedFile::open(file);
  metadata_ = dcp::read_metadata(opened->read_string(0, opened->size()), file);
  // Each entry's path once, and the entries of each top-level key: lookups by key are hash lookups.
  paths_.reserve(metadata_.entries.size());
  for (size_t i = 0; i < metadata_.entries.size(); ++i) {
    paths_.push_back(path_of(metadata_.entries[i].key));
    if (const auto* top = std::get_if<std::string>(&paths_.back()[0])) {
      auto [it, fresh] = by_top_key_.try_emplace(*top);
      if (fresh) top_keys_.push_back(*top);
      it->second.push_back(i);
    }
  }
}

std::vector<PathItem> Reader::path_of(const std::string& flat_key) const {
  if (const auto* path = metadata_.path_of(flat_key)) return *path;
  // No planner data (a custom planner): the first dotted part is the top-level key.
  size_t dot = flat_key.find('.');
  if (dot == std::string::npos) return {flat_key};
  return {flat_key.substr(0, dot), flat_key.substr(dot + 1)};
}

std::vector<std::string> Reader::top_level_keys() const { return top_keys_; }

void Reader::check_in_file(const dcp::StorageInfo& info, const std::string& fqn, const MappedFile& file) const {
  if (info.offset > file.size() || info.length > file.size() - info.offset) {
    throw FormatError(concat(file.path(), ": '", fqn, "' is recorded at bytes ", info.offset, "+", info.length,
                             " but the file has ", file.size(), " bytes (truncated?)"));
  }
}

// Before a tensor of `bytes` is allocated for `entry`: every chunk overlapping the region must
// have a stream that can hold it, inside its file. The metadata's checks (chunks tile the tensor,
// storage ranges disjoint) then bound what is allocated by the bytes of the files.
void Reader::check_chunks_fit(const dcp::Entry& entry, const std::vector<int64_t>& offsets,
                              const std::vector<int64_t>& sizes, size_t element_size) const {
  const dcp::TensorEntry& t = *entry.tensor;
  const std::string metadata_file = (fs::path(dir_) / dcp::kMetadataFile).string();
  // The chunks never overlap (the metadata was checked), so their intersections with the region
  // add up to the elements covered: a gap is refused here, before anything is allocated.
  uint64_t covered = 0;
  for (const auto& chunk : t.chunks) {
    bool overlaps = true;
    uint64_t common = 1;
    for (size_t d = 0; d < sizes.size() && overlaps; ++d) {
      const int64_t lo = std::max(chunk.offsets[d], offsets[d]);
      const int64_t hi = std::min(chunk.offsets[d] + chunk.sizes[d], offsets[d] + sizes[d]);
      overlaps = hi > lo;
      if (overlaps) common *= static_cast<uint64_t>(hi - lo);  // <= the chunk's checked volume
    }
    if (!overlaps) continue;
    covered += common;
    const dcp::StorageInfo* info = metadata_.storage_of(entry.key, &chunk.offsets);
    if (!info) {
      throw FormatError(concat(metadata_file, ": no storage recorded for '", entry.key, "' chunk at ",
                               dims_text(chunk.offsets)));
    }
    const auto elements = static_cast<uint64_t>(dcp::checked_volume(chunk.sizes, concat("'", entry.key, "'")));
    if (elements > info->length / element_size) {
      throw FormatError(concat(metadata_file, ": the chunk of '", entry.key, "' at ", dims_text(chunk.offsets), " has ",
                               elements, " elements of ", element_size, " bytes, but its stream is only ",
                               info->length, " bytes"));
    }
    auto& file = files_[info->relative_path];
    const std::string path = (fs::path(dir_) / info->relative_path).string();
    if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
    check_in_file(*info, entry.key, *file);
  }
  const auto wanted = static_cast<uint64_t>(dcp::checked_volume(sizes, concat("'", entry.key, "'")));
  if (covered < wanted) {
    throw FormatError(concat(dir_, ": the chunks of '", entry.key, "' cover ", covered, " of the ", wanted,
                             " elements requested (region ", dims_text(offsets), " + ", dims_text(sizes), " of ",
                             dims_text(t.size), "): a gap no chunk holds"));
  }
}

ValuePtr Reader::load_item(const std::string& fqn, const std::vector<int64_t>* offsets) const {
  const dcp::StorageInfo* info = metadata_.storage_of(fqn, offsets);
  const std::string metadata_file = (fs::path(dir_) / dcp::kMetadataFile).string();
  if (!info) {
    throw FormatError(concat(metadata_file, ": no storage recorded for '", fqn, "'",
                             offsets ? " chunk at " + dims_text(*offsets) : std::string()));
  }
  if (!info->transforms.empty()) {
    throw FormatError(concat(metadata_file, ": '", fqn, "' is stored through transforms (", info->transforms[0],
                             "), which are not supported"));
  }
  auto& file = files_[info->relative_path];
  const std::string path = (fs::path(dir_) / info->relative_path).string();
  // Mapped: chunk tensors can view a private mapping (as torch.load(mmap=True) gives them) instead
  // of being copied; writes to them stay in memory. Otherwise read with pread into owned memory.
  if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
  check_in_file(*info, fqn, *file);
  auto stream = MappedFile::slice(file, info->offset, info->length,
                                  concat(path, " ('", fqn, "' at byte ", info->offset, ")"));
  TorchLoadOptions options;
  options.mmap = map_chunks_;
  options.threads = 1;
  return load_torch_stream(stream, options).root;
}

ValuePtr Reader::read_entry(const dcp::Entry& entry, const std::optional<Placement>& placement) const {
  if (!entry.tensor) return load_item(entry.key, nullptr);
  const dcp::TensorEntry& t = *entry.tensor;
  auto dtype = torchsave::dtype_of_name(t.dtype);
  if (!dtype) throw FormatError(concat(dir_, ": '", entry.key, "' has the unknown dtype torch.", t.dtype));
  std::vector<int64_t> offsets(t.size.size(), 0), sizes = t.size;
  if (placement) {
    offsets = placement->offsets;
    sizes = placement->sizes;
  }
  // The common case of a load on the world size of the save: one chunk is exactly the region.
  for (const auto& chunk : t.chunks) {
    if (chunk.offsets == offsets && chunk.sizes == sizes) {
      ValuePtr loaded = load_item(entry.key, &chunk.offsets);
      if (loaded->is(Kind::Tensor) && dims_of(tensor_of(*loaded)) == sizes &&
          tensor_of(*loaded).scalar_type() == *dtype) {
        loaded->tensor_ref().requires_grad = false;
        return loaded;
      }
    }
  }
  const size_t element_size = c10::elementSize(*dtype);
  const auto elements = static_cast<uint64_t>(dcp::checked_volume(sizes, concat(dir_, ": '", entry.key, "'")));
  if (elements > (uint64_t{1} << 62) / element_size) {
    throw FormatError(concat(dir_, ": '", entry.key, "' of size ", dims_text(sizes), " is too large"));
  }
  check_chunks_fit(entry, offsets, sizes, element_size);
  at::Tensor out = at::empty(sizes, at::TensorOptions().dtype(*dtype));
  if (out.numel() == 0) return tensor(std::move(out));  // an empty shard (more ranks than rows)
  int64_t covered = 0;
  for (const auto& chunk : t.chunks) {
    std::vector<int64_t> lo(sizes.size()), len(sizes.size());
    bool overlaps = true;
    for (size_t d = 0; d < sizes.size(); ++d) {
      lo[d] = std::max(chunk.offsets[d], offsets[d]);
      int64_t hi = std::min(chunk.offsets[d] + chunk.sizes[d], offsets[d] + sizes[d]);
      len[d] = hi - lo[d];
      if (len[d] <= 0) overlaps = false;
    }
    if (!overlaps) continue;
    ValuePtr loaded = load_item(entry.key, &chunk.offsets);
    if (!loaded->is(Kind::Tensor) || dims_of(tensor_of(*loaded)) != chunk.sizes) {
      throw FormatError(concat(dir_, ": the chunk of '", entry.key, "' at ", dims_text(chunk.offsets), " is not a tensor of shape ",
                               dims_text(chunk.sizes)));
    }
    std::vector<int64_t> in_chunk(sizes.size()), in_out(sizes.size());
    for (size_t d = 0; d < sizes.size(); ++d) {
      in_chunk[d] = lo[d] - chunk.offsets[d];
      in_out[d] = lo[d] - offsets[d];
    }
    region(out, in_out, len).copy_(region(tensor_of(*loaded), in_chunk, len));
    covered += volume(len);
  }
  if (covered < out.numel()) {
    throw FormatError(concat(dir_, ": the chunks of '", entry.key, "' cover ", covered, " of the ", out.numel(),
                             " elements requested (region ", dims_text(offsets), " + ", dims_text(sizes), " of ",
                             dims_text(t.size), ")"));
  }
  return tensor(std::move(out));
}

ValuePtr Reader::read(const std::string& key, const ShardPlan& plan) const {
  ValuePtr root = Value::plain_dict();
  auto found = by_top_key_.find(key);
  if (found == by_top_key_.end()) return nullptr;
  for (size_t i : found->second) {
    const dcp::Entry& entry = metadata_.entries[i];
    const std::vector<PathItem>& path = paths_[i];
    std::optional<Placement> placement;
    if (entry.tensor) placement = plan.for_global(path, entry.tensor->size);
    ValuePtr value = read_entry(entry, placement);
    if (path.size() == 1) return value;
    dcp::set_element(root, path, value);
  }
  return root->dict().get(key);
}

std::string verify(const std::string& dir) {
  Reader reader(dir, /*map_chunks=*/false);
  reader.read_all();
  size_t tensors = 0, chunks = 0;
  std::set<std::string> files;
  uint64_t bytes = 0;
  for (const auto& e : reader.metadata().entries) {
    if (e.tensor) {
      ++tensors;
      chunks += e.tensor->chunks.size();
    }
  }
  for (const auto& [key, info] : reader.metadata().storage) {
    files.insert(info.relative_path);
    bytes += info.length;
  }
  return concat("OK: sharded checkpoint, ", reader.metadata().entries.size(), " keys (", tensors, " tensors in ", chunks,
                " chunks, ", reader.metadata().entries.size() - tensors, " values), ", files.size(), " shard files, ",
                bytes, " bytes, every CRC-32 checked and every tensor covered");
}

std::shared_ptr<const MappedFile> Reader::item_stream(const std::string& fqn) const {
  const dcp::StorageInfo* info = metadata_.storage_of(fqn, nullptr);
  if (!info) {
    throw FormatError(concat((fs::path(dir_) / dcp::kMetadataFile).string(), ": no storage recorded for '", fqn, "'"));
  }
  auto& file = files_[info->relative_path];
  const std::string path = (fs::path(dir_) / info->relative_path).string();
  if (!file) file = map_chunks_ ? MappedFile::open_private(path) : MappedFile::open(path);
  check_in_file(*info, fqn, *file);
  return MappedFile::slice(file, info->offset, info->length, concat(path, " ('", fqn, "' at byte ", info->offset, ")"));
}

std::vector<std::string> unsafe_globals(const std::string& dir) {
  Reader reader(dir, /*map_chunks=*/false);
  std::vector<std::string> found;
  auto add = [&](const std::vector<std::string>& names) {
    for (const auto& n : names) {
      if (std::find(found.begin(), found.end(), n) == found.end()) found.push_back(n);
    }
  };
  const std::string meta = (fs::path(dir) / dcp::kLightningMetaFile).string();
  std::error_code ec;
  if (fs::is_regular_file(meta, ec)) add(unsafe_globals_in_file(meta));
  for (const auto& entry : reader.metadata().entries) {
    if (entry.tensor) continue;
    auto stream = reader.item_stream(entry.key);
    if (!is_zip(*stream)) throw FormatError(concat(stream->path(), ": not a torch.save zip stream"));
    ZipReader zip(stream);
    const ZipRecord* record = zip.find("data.pkl");
    if (!record) throw FormatError(concat(stream->path(), ": no data.pkl record"));
    try {
      add(unsafe_globals_in_pickle(zip.data(*record, /*verify_crc=*/true)));
    } catch (const FormatError& e) {
      throw FormatError(concat(stream->path(), ": data.pkl: ", e.what()));
    }
  }
  return found;
}

ValuePtr Reader::read_all() const {
  ValuePtr root = Value::plain_dict();
  for (size_t i = 0; i < metadata_.entries.size(); ++i) {
    dcp::set_element(root, paths_[i], read_entry(metadata_.entries[i], std::nullopt));
  }
  return root;
}

}  // namespace fabricckpt::sharded
