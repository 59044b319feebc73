// convert to safetensors without libtorch: an outline tree flattened and written as the library
// writes the same checkpoint loaded (safetensors_plan.cpp does both), each tensor's bytes produced in
// order as the file is written: streamed from its record (whose CRC-32 is checked on the way), or,
// for a view that is not contiguous and a tensor assembled from chunks, gathered in memory of its
// size first. One tensor in memory at most, never the state.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safetensors.h"

namespace fabricckpt {

namespace st = safetensors;

namespace {

constexpr size_t kPieceBytes = size_t{8} << 20;

// One past the last byte of its storage the tensor's elements reach, counted from the storage's start.
uint64_t end_byte(const TensorOutline& t) {
  const uint64_t begin = static_cast<uint64_t>(t.offset) * t.dtype.element_size;
  if (t.numel() == 0) return begin;
  int64_t last = 0;
  for (size_t d = 0; d < t.sizes.size(); ++d) last += (t.sizes[d] - 1) * t.strides[d];
  return begin + static_cast<uint64_t>(last + 1) * t.dtype.element_size;
}

// Copies the elements of a strided view of `storage` into `out`, row-major (torch's contiguous()).
void gather(const TensorOutline& t, const uint8_t* storage, uint8_t* out) {
  const size_t es = t.dtype.element_size;
  const size_t dims = t.sizes.size();
  if (dims == 0) {
    std::memcpy(out, storage + static_cast<uint64_t>(t.offset) * es, es);
    return;
  }
  // The innermost dimension in runs: one memcpy when its elements touch, else element by element.
  const int64_t inner = t.sizes[dims - 1], inner_stride = t.strides[dims - 1];
  std::vector<int64_t> index(dims - 1, 0);
  for (;;) {
    int64_t at = t.offset;
    for (size_t d = 0; d + 1 < dims; ++d) at += index[d] * t.strides[d];
    if (inner_stride == 1) {
      std::memcpy(out, storage + static_cast<uint64_t>(at) * es, static_cast<size_t>(inner) * es);
      out += static_cast<size_t>(inner) * es;
    } else {
      for (int64_t k = 0; k < inner; ++k, out += es) {
        std::memcpy(out, storage + static_cast<uint64_t>(at + k * inner_stride) * es, es);
      }
    }
    size_t d = dims - 1;
    while (d > 0 && ++index[d - 1] == t.sizes[d - 1]) index[--d] = 0;
    if (d == 0) return;
  }
}

// Whether a storage's record has had its CRC-32 checked: shared by the tensors written from it, so
// that views of one storage (q, k, v split from one weight) read its record whole once, not once each.
struct RecordCheck {
  bool done = false;
};

// A tensor's bytes, contiguous, produced in order (TensorData::next).
class TensorBytes {
 public:
  TensorBytes(TensorOutline tensor, std::string target, std::shared_ptr<RecordCheck> check)
      : t_(std::move(tensor)), target_(std::move(target)), check_(std::move(check)) {}

  void next(void* dest, size_t size) {
    if (done_ + size > t_.nbytes()) throw Error(concat(target_, ": more bytes asked of a tensor than it holds"));
    const StorageOutline& s = *t_.storage;
    if (s.source && t_.contiguous()) {
      stream(s, dest, size);
    } else {
      if (gathered_.empty()) gather_from(s);
      std::memcpy(dest, gathered_.data() + gathered_at_ + done_, size);
      done_ += size;
    }
    if (done_ == t_.nbytes()) gathered_ = std::vector<uint8_t>();
  }

 private:
  // Straight from the record; unless another tensor of its storage checked it already, the rest of
  // the record is read too where it holds more, for its CRC-32.
  void stream(const StorageOutline& s, void* dest, size_t size) {
    const bool check = s.record && !check_->done;
    const uint64_t begin = static_cast<uint64_t>(t_.offset) * t_.dtype.element_size;
    if (done_ == 0 && check) crc_ = crc_of(s, 0, begin, 0);
    s.source->read_at(s.offset + begin + done_, dest, size);
    if (check) crc_ = crc32_update(crc_, dest, size);
    done_ += size;
    if (done_ == t_.nbytes() && check) {
      s.check_crc(crc_of(s, begin + done_, s.stored, crc_));
      check_->done = true;
    }
  }

  // `crc` continued over the record's bytes [from, to).
  static uint32_t crc_of(const StorageOutline& s, uint64_t from, uint64_t to, uint32_t crc) {
    std::vector<uint8_t> piece(static_cast<size_t>(std::min<uint64_t>(kPieceBytes, to > from ? to - from : 0)));
    for (uint64_t at = from; at < to;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(piece.size(), to - at));
      s.source->read_at(s.offset + at, piece.data(), n);
      crc = crc32_update(crc, piece.data(), n);
      at += n;
    }
    return crc;
  }

  // The tensor's bytes in memory: its storage read whole (CRC-32 checked) or assembled, served from
  // where a contiguous view's bytes lie in it, else gathered into memory of the tensor's size.
  void gather_from(const StorageOutline& s) {
    std::vector<uint8_t> storage = s.read_all();
    if (t_.contiguous()) {
      gathered_at_ = static_cast<uint64_t>(t_.offset) * t_.dtype.element_size;
      if (gathered_at_ + t_.nbytes() > storage.size()) {
        throw Error(concat(target_, ": a view reaches past the end of its storage"));
      }
      gathered_ = std::move(storage);
      return;
    }
    gathered_at_ = 0;
    gathered_.resize(static_cast<size_t>(t_.nbytes()));
    gather(t_, storage.data(), gathered_.data());
  }

  TensorOutline t_;
  std::string target_;
  std::shared_ptr<RecordCheck> check_;
  uint64_t done_ = 0;
  uint32_t crc_ = 0;
  std::vector<uint8_t> gathered_;
  uint64_t gathered_at_ = 0;  // where the tensor's first byte lies in gathered_
};

// The outline's tree flattened as the library flattens the loaded tensors (safetensors_torch.cpp).
st::FlatState flatten_outline(const ValuePtr& root, const std::string& target) {
  uintptr_t copies = 0;  // the storages torch's contiguous() would make: odd ids, no outline's address
  std::map<const StorageOutline*, std::shared_ptr<RecordCheck>> checks;
  return st::flatten(root, target, [&](const Value& node, const std::string& key, st::FlatState& flat) {
    const std::optional<TensorOutline> t = tensor_of(node);
    if (!t) return concat(key, " (", kind_name(node.kind), ")");
    const auto dtype = st::dtype_of_torch(t->dtype.name);
    // As the library loads every storage: on the CPU.
    if (!dtype) return concat(key, " (a ", t->dtype.name, " Strided tensor on cpu)");
    st::TensorData data;
    data.name = key;
    data.dtype = *dtype;
    for (const int64_t d : t->sizes) data.shape.push_back(static_cast<uint64_t>(d));
    if (*dtype == st::Dtype::F4) {
      if (data.shape.empty()) return concat(key, " (a 0-d float4_e2m1fn_x2 tensor)");
      data.shape.back() *= 2;
    }
    data.size = t->nbytes();
    if (data.size > 0) {
      std::shared_ptr<RecordCheck>& check = checks[t->storage];
      if (!check) check = std::make_shared<RecordCheck>();
      auto bytes = std::make_shared<TensorBytes>(*t, target, check);
      data.next = [bytes](void* dest, size_t size) { bytes->next(dest, size); };
    }
    const StorageOutline& s = *t->storage;
    const uintptr_t storage = s.nbytes() == 0 ? 0 : reinterpret_cast<uintptr_t>(&s);
    const bool contiguous = t->numel() == 0 || t->contiguous();
    st::TensorMemory memory;
    memory.storage = storage;
    memory.storage_bytes = s.nbytes();
    memory.begin = static_cast<uint64_t>(t->offset) * t->dtype.element_size;
    memory.end = end_byte(*t);
    memory.written_storage = contiguous ? storage : data.size == 0 ? 0 : (++copies << 1) | 1;
    memory.written_storage_bytes = contiguous ? s.nbytes() : data.size;
    flat.tensors.push_back(std::move(data));
    flat.memory.push_back(memory);
    return std::string();
  });
}

// The tree of `source` and what keeps it alive; a safetensors source's `__metadata__` (or its index's)
// added as string entries, as the library's convert writes them back.
struct SourceTree {
  ValuePtr root;
  std::shared_ptr<const void> owner;
};

SourceTree source_tree(const std::string& source, bool sharded) {
  if (sharded) {
    ShardedOutline outline = read_sharded_outline(source);
    return {outline.root, outline.owner};
  }
  FileOutline outline = read_file_outline(source);
  if (outline.format == OutlineFormat::Safetensors && outline.root && outline.root->is(Kind::Dict)) {
    const std::string index = safetensors_index_of(source);
    const st::Metadata metadata =
        index.empty() ? st::read_header(*MappedFile::open(source)).metadata.value_or(st::Metadata{})
                      : st::read_index(index).metadata;
    for (const auto& [key, value] : metadata) outline.root->dict().set(Value::string(key), Value::string(value));
  }
  return {outline.root, outline.owner};
}

}  // namespace

void convert_outline_to_safetensors(const std::string& source, bool sharded, const std::string& target,
                                    uint64_t max_shard_size, IoProgress* progress) {
  const SourceTree tree = source_tree(source, sharded);
  st::write_flat(target, flatten_outline(tree.root, target), /*fsync=*/true, progress, max_shard_size);
}

void convert_outline_to_safetensors(const std::string& source, bool sharded, OutputSink& out,
                                    const std::string& target) {
  const SourceTree tree = source_tree(source, sharded);
  st::write_flat_stream(out, flatten_outline(tree.root, target), target);
}

struct SafetensorsIndexOutline::Impl {
  SourceTree tree;  // what the tensors' bytes are read from
  st::IndexPlan plan;
};

SafetensorsIndexOutline::SafetensorsIndexOutline(const std::string& source, bool sharded,
                                                 const std::string& index_target, uint64_t max_shard_size)
    : impl_(std::make_unique<Impl>()) {
  std::string stem;
  if (!is_safetensors_index_name(index_target, &stem)) {
    throw StateError(concat(index_target, ": not a Hugging Face index name (*.safetensors.index.json)"));
  }
  impl_->tree = source_tree(source, sharded);
  impl_->plan = st::plan_index(flatten_outline(impl_->tree.root, index_target), index_target, stem, max_shard_size);
}

SafetensorsIndexOutline::~SafetensorsIndexOutline() = default;

size_t SafetensorsIndexOutline::shard_count() const { return impl_->plan.shards.size(); }

namespace {
const st::IndexShard& shard_of(const st::IndexPlan& plan, size_t i) {
  if (i >= plan.shards.size()) throw Error(concat("no shard ", i, " of ", plan.shards.size()));
  return plan.shards[i];
}
}  // namespace

const std::string& SafetensorsIndexOutline::shard_name(size_t i) const { return shard_of(impl_->plan, i).file; }

uint64_t SafetensorsIndexOutline::shard_size(size_t i) const { return shard_of(impl_->plan, i).layout.total; }

void SafetensorsIndexOutline::write_shard(size_t i, OutputSink& out) const {
  const st::IndexShard& shard = shard_of(impl_->plan, i);
  st::write_planned_stream(out, shard.tensors, shard.layout);
}

const std::string& SafetensorsIndexOutline::index_json() const { return impl_->plan.index; }

}  // namespace fabricckpt
