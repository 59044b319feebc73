// Sharded saves: torch.distributed.checkpoint directories written over c10d (sharded.h).
//
// Saving follows torch.distributed.checkpoint's FileSystemWriter with one file per rank: each rank
// writes its items back to back into __{rank}_0.distcp (values first, then tensors, each one a
// torch.save stream with archive folder "archive"), reports what it wrote to rank 0, and rank 0
// writes .metadata from all the reports. Whole (replicated) tensors and values are written once,
// by rank 0, as DCP's deduplication does.
#include <ATen/ATen.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include "fabricckpt/dcp.h"
#include "fabricckpt/dist.h"
#include "fabricckpt/dtypes.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "message_codec.h"
#include "rank_zero.h"
#include "shard_tensors.h"

namespace fabricckpt::sharded {

namespace fs = std::filesystem;
using dcp::PathItem;
using dist::decode_outcome;
using dist::encode_failure;
using dist::encode_success;
using dist::MessageKind;
using dist::MessageReader;
using dist::MessageWriter;

namespace {

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

// An item of this rank's file: what will be reported of it but its place in the file, and the
// state's value (a tensor as the state holds it: see chunk_of).
struct RankItem {
  Written written;
  ValuePtr value;
};

// The value the item's stream holds: a tensor as its chunk. Made when the item is written, so that
// a clone of a view lives only while its stream does.
ValuePtr chunk_of(const RankItem& r) { return r.written.tensor ? chunk_value(tensor_of(*r.value)) : r.value; }

// This rank's items in the order its file holds them: values, then tensors (DCP's order). Rank 0
// alone holds the values and the tensors the plan does not shard (written once, as DCP
// deduplicates them).
std::vector<RankItem> rank_items(int rank, const std::vector<dcp::FlatItem>& flat, const ShardPlan& plan) {
  std::vector<RankItem> values, tensors;
  for (const auto& item : flat) {
    RankItem r;
    Written& w = r.written;
    w.key = item.key;
    w.path = item.path;
    if (!item.value->is(Kind::Tensor)) {
      if (rank != 0) continue;
      r.value = item.value;
      values.push_back(std::move(r));
      continue;
    }
    const at::Tensor& t = tensor_of(*item.value);
    w.tensor = true;
    w.dtype = torchsave::name_of_dtype(t.scalar_type());
    w.sizes = dims_of(t);
    const auto placement = plan.for_local(item.path, w.sizes);
    if (!placement && rank != 0) continue;
    if (placement) {
      w.global_size = placement->global_size;
      w.offsets = placement->offsets;
    } else {
      w.global_size = w.sizes;
      w.offsets.assign(w.sizes.size(), 0);
    }
    r.value = item.value;
    tensors.push_back(std::move(r));
  }
  for (auto& t : tensors) values.push_back(std::move(t));
  return values;
}

// The report of what was written, in the state's order (the metadata lists keys in it), whatever
// the order in the file.
std::vector<Written> in_state_order(std::vector<Written> written, const std::vector<dcp::FlatItem>& flat) {
  std::map<std::string, size_t> order;
  for (size_t i = 0; i < flat.size(); ++i) order.emplace(flat[i].key, i);
  std::stable_sort(written.begin(), written.end(),
                   [&](const Written& a, const Written& b) { return order[a.key] < order[b.key]; });
  return written;
}

// This rank's distcp file, each item a torch.save stream; with Serialization::Safetensors the
// tensors together as one safetensors blob at the end, every item of it recorded at the blob's
// start with its own length (as FileSystemWriter records them).
std::vector<Written> write_rank_file(const std::string& dir, int rank, const std::vector<dcp::FlatItem>& flat,
                                     const ShardPlan& plan, const SaveOptions& options) {
  const bool blob = options.serialization == Serialization::Safetensors;
  const std::string file = (fs::path(dir) / dcp::rank_file_name(rank)).string();
  std::vector<Written> written;
  AtomicFileSink sink(file, options.fsync);
  ValuePtr blob_tensors = Value::plain_dict();
  std::vector<std::pair<std::string, std::vector<int64_t>>> blob_chunks;
  for (RankItem& r : rank_items(rank, flat, plan)) {
    Written& w = r.written;
    w.file_offset = sink.position();  // a blob's tensors write nothing here: the blob's start
    ValuePtr stored = chunk_of(r);
    if (blob && w.tensor) {
      const at::Tensor& t = tensor_of(*stored);
      w.length = static_cast<uint64_t>(t.numel()) * t.element_size();
      blob_tensors->dict().set(Value::string(w.key), stored);
      blob_chunks.emplace_back(w.key, w.offsets);
    } else {
      write_torch_save(sink, stored, "archive", /*allow_unsafe_globals=*/true);  // checked by save()
      w.length = sink.position() - w.file_offset;
    }
    written.push_back(std::move(w));
  }
  if (blob) write_safetensors_stream(sink, blob_tensors, dcp::safetensors_blob_metadata(blob_chunks), file);
  sink.commit();
  return in_state_order(std::move(written), flat);
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

}  // namespace

bool is_checkpoint_file(const std::string& name) {
  const bool distcp = name.size() > 7 && name.rfind("__", 0) == 0 && name.substr(name.size() - 7) == ".distcp";
  return distcp || name == dcp::kMetadataFile || name == dcp::kLightningMetaFile || name == ".metadata.tmp";
}

struct RankFileLayout::Impl {
  // A part of the file: one item's torch.save stream, or the safetensors blob at the end.
  struct Stream {
    uint64_t start;
    uint64_t size;
    std::function<void(uint64_t, void*, size_t)> fill;
  };
  std::string target;
  std::vector<ValuePtr> chunks;  // each item's stored value: keeps the chunks the layouts read from alive
  std::vector<std::unique_ptr<TorchFileLayout>> items;
  std::unique_ptr<SafetensorsLayout> blob;
  std::vector<Stream> streams;  // in file order
  uint64_t total = 0;
  std::string report;

  template <typename Layout>
  void append(const Layout& layout) {
    streams.push_back({total, layout.size(), [&layout](uint64_t at, void* dest, size_t n) { layout.fill(at, dest, n); }});
    total += layout.size();
  }
};

RankFileLayout::RankFileLayout(const ValuePtr& state, const ShardPlan& plan, int rank, Serialization serialization,
                               bool allow_unsafe_globals, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  Impl& l = *impl_;
  l.target = target;
  if (rank == 0 && !allow_unsafe_globals) check_weights_only_tree(state, target);  // rank 0 holds the values
  const bool blob = serialization == Serialization::Safetensors;
  const std::vector<dcp::FlatItem> flat = dcp::flatten_state_dict(state);
  std::vector<RankItem> items = rank_items(rank, flat, plan);
  TorchSaveOptions options;  // each item as write_rank_file streams it
  options.archive_name = "archive";
  options.allow_unsafe_globals = true;
  ValuePtr blob_tensors = Value::plain_dict();
  std::vector<std::pair<std::string, std::vector<int64_t>>> blob_chunks;
  std::vector<Written> written;
  for (RankItem& r : items) {
    Written& w = r.written;
    w.file_offset = l.total;  // a blob's tensors add no stream here: the blob's start
    l.chunks.push_back(chunk_of(r));
    if (blob && w.tensor) {
      const at::Tensor& t = tensor_of(*l.chunks.back());
      w.length = static_cast<uint64_t>(t.numel()) * t.element_size();
      blob_tensors->dict().set(Value::string(w.key), l.chunks.back());
      blob_chunks.emplace_back(w.key, w.offsets);
    } else {
      l.items.push_back(std::make_unique<TorchFileLayout>(l.chunks.back(), options, target));
      l.append(*l.items.back());
      w.length = l.items.back()->size();
    }
    written.push_back(w);
  }
  if (blob) {
    l.blob = std::make_unique<SafetensorsLayout>(blob_tensors, dcp::safetensors_blob_metadata(blob_chunks), target);
    l.append(*l.blob);
  }
  l.report = encode_report(in_state_order(std::move(written), flat));
}

RankFileLayout::~RankFileLayout() = default;

uint64_t RankFileLayout::size() const { return impl_->total; }

const std::string& RankFileLayout::report() const { return impl_->report; }

void RankFileLayout::fill(uint64_t offset, void* dest, size_t size) const {
  const Impl& l = *impl_;
  check_read_range(l.target, l.total, offset, size);
  auto* out = static_cast<uint8_t*>(dest);
  // The first stream that ends after `offset`, then each in turn.
  auto it = std::upper_bound(l.streams.begin(), l.streams.end(), offset,
                             [](uint64_t at, const Impl::Stream& s) { return at < s.start + s.size; });
  while (size > 0) {
    const Impl::Stream& stream = *it++;
    const uint64_t within = offset - stream.start;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size, stream.size - within));
    stream.fill(within, out, n);
    out += n;
    offset += n;
    size -= n;
  }
}

std::string metadata_from_reports(const std::vector<std::string>& reports, const SaveOptions& options) {
  std::vector<std::vector<Written>> written;
  for (size_t rank = 0; rank < reports.size(); ++rank) {
    written.push_back(decode_report(reports[rank], static_cast<int>(rank)));
  }
  return dcp::write_metadata(build_metadata(written, options));
}

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
  std::exception_ptr own_failure;  // rank 0 rethrows its own error with its type
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
      own_failure = std::current_exception();
      prepared = encode_failure(e.what());
    }
  }
  if (group && world > 1) prepared = group->broadcast(prepared, 0);
  const dist::Outcome preparation = decode_outcome(prepared, 0, concat("preparation of ", dir));
  if (!preparation.ok) {
    if (own_failure) std::rethrow_exception(own_failure);
    throw DistributedError(concat(dir, ": global rank 0 could not prepare the checkpoint (on rank ", rank, "): ",
                                  preparation.detail),
                           rank, "sharded save: preparation on rank 0");
  }
  const std::string& staging_dir = preparation.detail;

  // 2. Every rank writes its file and reports to rank 0 (a failure is reported, not thrown, so that
  //    every rank still takes part in the gather).
  std::string report;
  std::exception_ptr failure;  // this rank's own write error, rethrown with its type once all know
  try {
    report = encode_success(encode_report(write_rank_file(staging_dir, rank, flat, plan, options)));
  } catch (const IoError& e) {
    // named after the checkpoint: the staging directory's name alone would puzzle
    failure = std::make_exception_ptr(IoError(concat(dir, ": ", e.what()), e.error_number(), e.path()));
    report = encode_failure(e.what());
  } catch (const std::exception& e) {
    failure = std::current_exception();
    report = encode_failure(e.what());
  }
  std::vector<std::string> reports = group && world > 1 ? group->gather(report, 0) : std::vector<std::string>{report};

  // 3. Rank 0 writes meta.pt and .metadata, then swaps the complete directory in; then everyone
  //    learns the outcome. A failure anywhere removes the new directory and leaves the old one.
  try {
    on_rank_zero(group, dir, [&] {
      std::vector<std::vector<Written>> written;
      for (int r = 0; r < world; ++r) {
        const dist::Outcome outcome = decode_outcome(reports[static_cast<size_t>(r)], r, "shard report");
        if (!outcome.ok) {
          if (r == rank && failure) std::rethrow_exception(failure);
          throw DistributedError(concat(dir, ": rank ", r, " could not write its shard file: ", outcome.detail), rank,
                                 concat("sharded save: shard write on rank ", r));
        }
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
        // the staging directory's name alone would puzzle
        throw IoError(concat(dir, ": ", e.what()), e.error_number(), e.path());
      }
    });
  } catch (const DistributedError&) {
    if (failure) std::rethrow_exception(failure);  // this rank's own error tells more than rank 0's report of it
    throw;
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace fabricckpt::sharded
