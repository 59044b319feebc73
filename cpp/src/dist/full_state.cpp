// Full state from a sharded one and back: save_full writes one torch.save file on rank 0 with every
// sharded tensor whole (regions checked to tile it, data sent rank to rank as the file is written),
// slice_to_plan cuts whole tensors to a plan.
#include <ATen/ATen.h>

#include <exception>
#include <memory>
#include <utility>

#include "fabricckpt/dcp.h"
#include "fabricckpt/dist.h"
#include "fabricckpt/error.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"
#include "message_codec.h"
#include "rank_zero.h"
#include "shard_tensors.h"

namespace fabricckpt::sharded {

using dist::MessageKind;
using dist::MessageReader;
using dist::MessageWriter;

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

namespace {

// A CPU tensor of `sizes` whose storage has its size but no memory: it stands in the tree for a
// whole tensor while the file's layout is planned (TorchFileWriter defers its bytes).
at::Tensor unallocated(const std::vector<int64_t>& sizes, const at::Tensor& like) {
  const size_t nbytes = static_cast<size_t>(volume(sizes)) * like.element_size();
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, c10::DataPtr(nullptr, c10::Device(c10::kCPU)),
                       /*allocator=*/nullptr, /*resizable=*/false);
  at::Tensor t = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                          like.dtype());
  t.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  return t;
}

// Puts the tree's own tensors back where placeholders stood, however the save ends.
class RestoreTensors {
 public:
  void replace(Value& node, at::Tensor stand_in) {
    auto& slot = node.tensor_ref().tensor;
    saved_.emplace_back(&slot, slot);
    slot = std::make_shared<at::Tensor>(std::move(stand_in));
  }
  ~RestoreTensors() {
    for (auto& [slot, tensor] : saved_) *slot = std::move(tensor);
  }

 private:
  std::vector<std::pair<std::shared_ptr<at::Tensor>*, std::shared_ptr<at::Tensor>>> saved_;
};

}  // namespace

void save_full(const std::string& path, const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group,
               const TorchSaveOptions& options) {
  const int rank = group ? group->rank() : 0;
  const int world = group ? group->world_size() : 1;
  struct Shard {
    const dcp::FlatItem* item;
    Placement placement;
    at::Tensor local;
  };
  std::vector<dcp::FlatItem> flat = dcp::flatten_state_dict(state);
  std::vector<Shard> shards;
  for (const auto& item : flat) {
    if (!item.value->is(Kind::Tensor)) continue;
    const at::Tensor& t = tensor_of(*item.value);
    if (auto p = plan.for_local(item.path, dims_of(t))) shards.push_back({&item, *p, t.detach().contiguous()});
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
  on_rank_zero(group, concat(path, ": gathering the full state"), [&] {
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

  // 2. Rank 0 plans the file with memoryless whole tensors in the tree, so that it never holds more
  //    than one whole tensor: each is assembled from the shards as they arrive, written to its place
  //    and freed. A failure of rank 0's writing keeps it receiving (the senders would wait), then
  //    every rank learns of it.
  RestoreTensors restore;
  std::unique_ptr<TorchFileWriter> file;
  std::exception_ptr failure;
  auto attempt = [&](auto&& step) {
    try {
      step();
    } catch (...) {
      if (!failure) failure = std::current_exception();
      file.reset();  // removes the temporary file: the target stays as it was
    }
  };
  std::vector<at::Tensor> stand_ins(shards.size());
  if (rank == 0) {
    for (size_t i = 0; i < shards.size(); ++i) {
      stand_ins[i] = unallocated(shards[i].placement.global_size, shards[i].local);
      restore.replace(*shards[i].item->value, stand_ins[i]);
    }
    attempt([&] { file = std::make_unique<TorchFileWriter>(path, state, options); });
  }

  // 3. The data, tensor by tensor: every other rank sends its shard to rank 0, which receives each
  //    straight into its place in the whole tensor when that place is contiguous (dimension-0 shards are).
  for (size_t i = 0; i < shards.size(); ++i) {
    const at::Tensor& local = shards[i].local;
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
    if (file && full.nbytes() > 0) {
      attempt([&] { file->write_storage(stand_ins[i].storage().unsafeGetStorageImpl(), full.data_ptr(), full.nbytes()); });
    }
  }
  if (file) attempt([&] { file->commit(); });
  on_rank_zero(group, concat(path, ": writing the full state"), [&] {
    if (failure) std::rethrow_exception(failure);
  });
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

}  // namespace fabricckpt::sharded
