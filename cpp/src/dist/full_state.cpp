// Full state from a sharded one and back: save_full writes one torch.save file on rank 0 with every
// sharded tensor whole (regions checked to tile it, data sent rank to rank as the file is written),
// FullFileLayout gives the same file by byte range as the tensors arrive (a multipart upload),
// slice_to_plan cuts whole tensors to a plan.
#include <ATen/ATen.h>

#include <exception>
#include <functional>
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

namespace {

// What every rank of a full save does to bring the sharded tensors whole to rank 0: the checks and
// regions exchange (constructor), memoryless stand-ins for the whole tensors in rank 0's tree while
// the file is planned (install_stand_ins, put back when this ends), and the data, tensor by tensor
// (run). Collective: every rank constructs it and calls run().
class FullGather {
 public:
  FullGather(const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group, const std::string& target)
      : group_(group), rank_(group ? group->rank() : 0), world_(group ? group->world_size() : 1),
        flat_(dcp::flatten_state_dict(state)) {
    for (const auto& item : flat_) {
      if (!item.value->is(Kind::Tensor)) continue;
      const at::Tensor& t = tensor_of(*item.value);
      if (auto p = plan.for_local(item.path, dims_of(t))) shards_.push_back({&item, *p, t.detach().contiguous()});
    }
    // Every rank must send the same tensors in the same order.
    if (group && world_ > 1) {
      MessageWriter keys(MessageKind::ShardKeys);
      keys.count(shards_.size());
      for (const auto& shard : shards_) keys.text(shard.item->key);
      bool same = group->broadcast(keys.bytes(), 0) == keys.bytes();
      if (!group->all_agree(same)) {
        throw StateError(concat("rank ", rank_, ": the ranks do not hold the same sharded tensors (",
                                same ? "another rank differs" : "this rank differs from rank 0", ")"));
      }
    }

    // Rank 0 learns every rank's regions (one gather) and checks that they tile each tensor.
    MessageWriter header(MessageKind::ShardRegions);
    header.count(shards_.size());
    for (const auto& shard : shards_) header.integers(shard.placement.offsets).integers(shard.placement.sizes);
    std::vector<std::string> headers = group && world_ > 1 ? group->gather(header.bytes(), 0)
                                                           : std::vector<std::string>{header.bytes()};
    regions_.resize(shards_.size());
    on_rank_zero(group, concat(target, ": gathering the full state"), [&] {
      for (size_t r = 0; r < headers.size(); ++r) {
        MessageReader message(headers[r], MessageKind::ShardRegions, static_cast<int>(r), "shard description");
        const size_t count = message.count(/*min_item_bytes=*/18);
        if (count != shards_.size()) message.fail("it describes ", count, " shards, not ", shards_.size());
        for (size_t i = 0; i < shards_.size(); ++i) {
          Region g;
          g.offsets = message.integers();
          g.sizes = message.integers();
          if (g.offsets.size() != g.sizes.size()) {
            message.fail("the shard of '", shards_[i].item->key, "' has ", g.offsets.size(), " offsets but ",
                         g.sizes.size(), " sizes");
          }
          regions_[i].push_back(std::move(g));
        }
        message.end();
      }
      for (size_t i = 0; i < shards_.size(); ++i) {
        check_tiling(shards_[i].item->key, shards_[i].placement.global_size, regions_[i]);
      }
    });
  }

  int rank() const { return rank_; }
  ProcessGroup* group() const { return group_; }

  // Rank 0: puts a stand-in for each whole tensor into the tree (TorchFileWriter and TorchFileLayout
  // defer their bytes), so that the file is planned without holding any of them.
  void install_stand_ins() {
    stand_ins_.resize(shards_.size());
    for (size_t i = 0; i < shards_.size(); ++i) {
      stand_ins_[i] = unallocated(shards_[i].placement.global_size, shards_[i].local);
      restore_.replace(*shards_[i].item->value, stand_ins_[i]);
    }
  }

  // The data: every other rank sends its shard to rank 0, which receives each straight into its
  // place in the whole tensor when that place is contiguous (dimension-0 shards are) and hands the
  // whole tensor to `put` with the storage it stands in for, holding one at a time itself.
  void run(const std::function<void(const c10::StorageImpl* stand_in, const at::Tensor& full)>& put) {
    for (size_t i = 0; i < shards_.size(); ++i) {
      const at::Tensor& local = shards_[i].local;
      const int tag = static_cast<int>(i);
      if (rank_ != 0) {
        if (local.nbytes() > 0) group_->send(local.data_ptr(), local.nbytes(), 0, tag);
        continue;
      }
      const Placement& p = shards_[i].placement;
      at::Tensor full = at::empty(p.global_size, local.options());
      region(full, p.offsets, p.sizes).copy_(local);
      for (int r = 1; r < world_; ++r) {
        const Region& g = regions_[i][static_cast<size_t>(r)];
        at::Tensor place = region(full, g.offsets, g.sizes);
        const size_t nbytes = static_cast<size_t>(volume(g.sizes)) * local.element_size();
        if (nbytes == 0) continue;
        if (place.is_contiguous()) {
          group_->recv(place.data_ptr(), nbytes, r, tag);
        } else {
          at::Tensor piece = at::empty(g.sizes, local.options());
          group_->recv(piece.data_ptr(), nbytes, r, tag);
          place.copy_(piece);
        }
      }
      if (full.nbytes() > 0) put(stand_ins_[i].storage().unsafeGetStorageImpl(), full);
    }
  }

 private:
  struct Shard {
    const dcp::FlatItem* item;
    Placement placement;
    at::Tensor local;
  };
  ProcessGroup* group_;
  int rank_, world_;
  std::vector<dcp::FlatItem> flat_;
  std::vector<Shard> shards_;
  std::vector<std::vector<Region>> regions_;  // [tensor][rank], rank 0 only
  std::vector<at::Tensor> stand_ins_;
  RestoreTensors restore_;  // declared last: the tree gets its tensors back first
};

// Runs `step`, keeping the first failure in `failure`: a failure of rank 0's writing keeps it
// receiving (the senders would wait), then every rank learns of it.
template <typename Step>
void attempt(std::exception_ptr& failure, Step&& step) {
  try {
    step();
  } catch (...) {
    if (!failure) failure = std::current_exception();
  }
}

}  // namespace

void save_full(const std::string& path, const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group,
               const TorchSaveOptions& options) {
  FullGather gather(state, plan, group, path);
  // Rank 0 plans the file with stand-ins, so that it never holds more than one whole tensor: each
  // is written to its place as it is assembled, and freed.
  std::unique_ptr<TorchFileWriter> file;
  std::exception_ptr failure;
  auto write = [&](auto&& step) {
    attempt(failure, step);
    if (failure) file.reset();  // removes the temporary file: the target stays as it was
  };
  if (gather.rank() == 0) {
    gather.install_stand_ins();
    write([&] { file = std::make_unique<TorchFileWriter>(path, state, options); });
  }
  gather.run([&](const c10::StorageImpl* stand_in, const at::Tensor& full) {
    if (file) write([&] { file->write_storage(stand_in, full.data_ptr(), full.nbytes()); });
  });
  if (file) write([&] { file->commit(); });
  on_rank_zero(group, concat(path, ": writing the full state"), [&] {
    if (failure) std::rethrow_exception(failure);
  });
}

struct FullFileLayout::Impl {
  std::string target;
  std::unique_ptr<FullGather> gather;
  std::unique_ptr<TorchFileLayout> layout;  // rank 0, once planned
  std::exception_ptr failure;                // rank 0's planning or gathering failure
};

FullFileLayout::FullFileLayout(const ValuePtr& state, const ShardPlan& plan, ProcessGroup* group,
                               const TorchSaveOptions& options, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  Impl& l = *impl_;
  l.target = target;
  l.gather = std::make_unique<FullGather>(state, plan, group, target);
  if (l.gather->rank() != 0) return;
  l.gather->install_stand_ins();
  attempt(l.failure, [&] { l.layout = std::make_unique<TorchFileLayout>(state, options, target); });
}

FullFileLayout::~FullFileLayout() = default;

bool FullFileLayout::planned() const { return impl_->layout != nullptr; }

uint64_t FullFileLayout::size() const {
  if (!impl_->layout) throw StateError(concat(impl_->target, ": the full file was not planned on this rank"));
  return impl_->layout->size();
}

void FullFileLayout::fill(uint64_t offset, void* dest, size_t size) const {
  if (!impl_->layout) throw StateError(concat(impl_->target, ": the full file was not planned on this rank"));
  impl_->layout->fill(offset, dest, size);
}

void FullFileLayout::gather() {
  Impl& l = *impl_;
  try {
    l.gather->run([&](const c10::StorageImpl* stand_in, const at::Tensor& full) {
      if (!l.layout || l.failure) return;  // keeps receiving what the senders send
      attempt(l.failure, [&] { l.layout->provide(stand_in, std::make_shared<at::Tensor>(full), full.data_ptr()); });
    });
  } catch (const std::exception& e) {  // a rank gone: the upload must not complete
    abandon(concat(l.target, ": gathering the full state failed: ", e.what()));
    throw;
  }
  if (l.failure) abandon(concat(l.target, ": the full state could not be gathered"));
  on_rank_zero(l.gather->group(), concat(l.target, ": gathering the full state"), [&] {
    if (l.failure) std::rethrow_exception(l.failure);
  });
}

void FullFileLayout::abandon(const std::string& why) {
  if (impl_->layout) impl_->layout->abandon(why);
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
