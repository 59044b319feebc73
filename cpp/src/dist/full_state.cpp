// Full state from a sharded one and back: gather_full assembles every sharded tensor on rank 0
// (regions checked to tile it, data sent rank to rank), slice_to_plan cuts whole tensors to a plan.
#include <ATen/ATen.h>

#include "fabricckpt/dcp.h"
#include "fabricckpt/dist.h"
#include "fabricckpt/error.h"
#include "fabricckpt/sharded.h"
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

}  // namespace fabricckpt::sharded
