// Snapshots for background saves: a copy of a state tree that owns its tensor data.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Storage.h>

#include <cstring>
#include <unordered_map>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/torch_save.h"
#include "parallel.h"
#include "storage_memory.h"

namespace fabricckpt {

using torchsave::allocate_storage;
using torchsave::pick_threads;
using torchsave::Piece;
using torchsave::run_parallel;
using torchsave::split;

namespace {

class Snapshot {
 public:
  ValuePtr copy(const ValuePtr& v) {
    if (!v) return v;
    if (auto it = copies_.find(v.get()); it != copies_.end()) return it->second;
    switch (v->kind) {
      case Kind::None: case Kind::Bool: case Kind::Int: case Kind::BigInt: case Kind::Float:
      case Kind::String: case Kind::Bytes: case Kind::Global: case Kind::Storage:
        return v;  // immutable: the copy shares the node (and so keeps its identity)
      default:
        break;
    }
    auto out = std::make_shared<Value>();
    out->kind = v->kind;
    copies_.emplace(v.get(), out);  // before the children: containers may contain themselves
    switch (v->kind) {
      case Kind::Tuple: case Kind::List: case Kind::Set: case Kind::FrozenSet: {
        Value::Items items;
        items.reserve(v->items().size());
        for (const auto& item : v->items()) items.push_back(copy(item));
        out->payload = std::move(items);
        break;
      }
      case Kind::Dict: {
        Dict dict;
        dict.ordered = v->dict().ordered;
        for (const auto& [key, value] : v->dict().items()) dict.set(copy(key), copy(value));
        dict.state = copy(v->dict().state);
        out->payload = std::move(dict);
        break;
      }
      case Kind::Object: {
        const Object& o = v->object_ref();
        Object c;
        c.construct = o.construct;
        c.callable = copy(o.callable);
        c.args = copy(o.args);
        c.kwargs = copy(o.kwargs);
        c.state = copy(o.state);
        for (const auto& item : o.list_items) c.list_items.push_back(copy(item));
        for (const auto& [key, value] : o.dict_items) c.dict_items.emplace_back(copy(key), copy(value));
        out->payload = std::move(c);
        break;
      }
      case Kind::Tensor:
        out->payload = copy_tensor(v->tensor_ref());
        break;
      default:
        throw Error(concat("cannot snapshot a ", kind_name(v->kind)));
    }
    return out;
  }

  // Copies the storages' bytes (after copy(): all storages are known then).
  void copy_data(int threads, IoProgress* progress) {
    std::vector<uint64_t> sizes;
    uint64_t total = 0;
    for (const auto& c : storage_copies_) {
      sizes.push_back(c.size);
      total += c.size;
    }
    if (progress) progress->total = total;
    const auto pieces = split(sizes);
    run_parallel(pieces.size(), pick_threads(threads, total, pieces.size()), [&](size_t i) {
      const Piece& piece = pieces[i];
      const StorageCopy& c = storage_copies_[piece.item];
      std::memcpy(static_cast<uint8_t*>(c.dest) + piece.offset, static_cast<const uint8_t*>(c.source) + piece.offset,
                  piece.size);
      if (progress) progress->add(piece.size);
    });
  }

 private:
  struct StorageCopy {
    const void* source;
    void* dest;
    uint64_t size;
  };
  std::unordered_map<const Value*, ValuePtr> copies_;
  std::unordered_map<const c10::StorageImpl*, c10::Storage> storages_;
  std::vector<StorageCopy> storage_copies_;

  TensorRef copy_tensor(const TensorRef& ref) {
    if (!ref.tensor || !ref.tensor->defined()) throw Error("cannot save an undefined tensor");
    const at::Tensor& t = *ref.tensor;
    if (!t.device().is_cpu()) throw Error("only CPU tensors can be saved");
    if (t.is_sparse() || t.is_quantized() || !t.has_storage()) {
      throw Error(concat("cannot save a ", t.toString(), " tensor: only dense strided tensors are supported"));
    }
    const c10::Storage& source = t.storage();
    auto [it, inserted] = storages_.try_emplace(source.unsafeGetStorageImpl());
    if (inserted) {
      it->second = allocate_storage(source.nbytes());
      if (source.nbytes() > 0) {
        storage_copies_.push_back(StorageCopy{source.data(), it->second.mutable_data(), source.nbytes()});
      }
    }
    at::Tensor copy = at::empty({0}, at::TensorOptions().dtype(t.scalar_type()));
    copy.set_(it->second, t.storage_offset(), t.sizes(), t.strides());
    TensorRef out;
    out.tensor = std::make_shared<at::Tensor>(std::move(copy));
    out.requires_grad = ref.requires_grad || t.requires_grad();
    out.is_parameter = ref.is_parameter;
    out.location = ref.location;
    return out;
  }
};

}  // namespace

ValuePtr snapshot_tensors(const ValuePtr& root, int threads, IoProgress* progress) {
  Snapshot snapshot;
  ValuePtr copy = snapshot.copy(root);
  snapshot.copy_data(threads, progress);
  return copy;
}

}  // namespace fabricckpt
