// torch.save / torch.load for the Value model: tensors <-> storages and records.
#include "fabricckpt/torch_save.h"
#include "fabricckpt/safety.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Storage.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "dtypes.h"
#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {
namespace {

// --- parallel work ---------------------------------------------------------------------------

// Pieces of storage data handled by one thread at a time: large enough that a
// system call or a CRC restart costs nothing, small enough to stay in cache
// between the CRC and the copy.
constexpr size_t kChunk = size_t{4} << 20;
// Below this many bytes in all, one thread does the work (starting threads costs more).
constexpr uint64_t kParallelThreshold = uint64_t{16} << 20;

int pick_threads(int requested, uint64_t bytes, size_t pieces) {
  if (requested <= 0) {
    if (bytes < kParallelThreshold) return 1;
    const unsigned cores = std::thread::hardware_concurrency();
    requested = static_cast<int>(std::clamp(cores == 0 ? 2u : cores, 1u, 8u));
  }
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(requested), pieces)));
}

// Runs work(i) for every i in [0, count) on `threads` threads, the caller's included.
// After the first exception the others stop picking up work; it is rethrown here.
void run_parallel(size_t count, int threads, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto loop = [&] {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) return;
      try {
        work(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < threads && static_cast<size_t>(t) < count; ++t) helpers.emplace_back(loop);
  loop();
  for (auto& h : helpers) h.join();
  if (error) std::rethrow_exception(error);
}

// A piece [offset, offset + size) of item `item`.
struct Piece {
  size_t item;
  uint64_t offset;
  size_t size;
};

std::vector<Piece> split(const std::vector<uint64_t>& sizes) {
  std::vector<Piece> pieces;
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (uint64_t at = 0; at < sizes[i]; at += kChunk) {
      pieces.push_back(Piece{i, at, static_cast<size_t>(std::min<uint64_t>(kChunk, sizes[i] - at))});
    }
  }
  return pieces;
}

// --- storage memory --------------------------------------------------------------------------

// Large storages that this library fills itself (eager loads, snapshots) come
// from anonymous mappings advised to use transparent huge pages: one page fault
// per 2 MiB instead of per 4 KiB makes filling fresh memory several times faster.
// Small ones use libtorch's CPU allocator.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kSmallPage = 4096;

struct Mapping {
  void* base;
  size_t length;
};

void unmap_storage(void* context) {
  auto* mapping = static_cast<Mapping*>(context);
  ::munmap(mapping->base, mapping->length);
  delete mapping;
}

class LargeAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePage) return c10::GetCPUAllocator()->allocate(nbytes);
    // Whole pages, not whole huge pages: a huge page at the end would be resident
    // in full as soon as the data's last bytes are written.
    const size_t length = (nbytes + kSmallPage - 1) / kSmallPage * kSmallPage;
    void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      // Fall back to libtorch's allocator (which reports out-of-memory its own way).
      return c10::GetCPUAllocator()->allocate(nbytes);
    }
#ifdef MADV_HUGEPAGE
    ::madvise(base, length, MADV_HUGEPAGE);
#endif
    return c10::DataPtr(base, new Mapping{base, length}, &unmap_storage, c10::Device(c10::DeviceType::CPU));
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    if (count > 0) std::memcpy(dest, src, count);
  }
};

c10::Allocator* large_allocator() {
  static LargeAllocator allocator;
  return &allocator;
}

c10::Storage allocate_storage(size_t nbytes) {
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, large_allocator(), /*resizable=*/false);
}

// Storages of at least this size may be read with O_DIRECT (when not cached).
constexpr size_t kDirectMin = kHugePage;

// Memory for a storage whose bytes start at `file_offset` in a file, laid out so
// that file pages and memory pages line up (the data starts at file_offset % 4096
// into the mapping, with room for whole pages at both ends): a direct read of the
// page-aligned range around the record can land in it as is. `*aligned` gets the
// start of that range's memory. Returns an empty storage where mmap fails.
c10::Storage allocate_file_aligned(size_t nbytes, uint64_t file_offset, uint8_t** aligned) {
  constexpr uint64_t kPage = DirectFile::kAlignment;
  const size_t shift = static_cast<size_t>(file_offset % kPage);
  const size_t length = (shift + nbytes + kPage - 1) / kPage * kPage;
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return {};
#ifdef MADV_HUGEPAGE
  ::madvise(base, length, MADV_HUGEPAGE);
#endif
  *aligned = static_cast<uint8_t*>(base);
  c10::DataPtr ptr(static_cast<uint8_t*>(base) + shift, new Mapping{base, length}, &unmap_storage,
                   c10::Device(c10::DeviceType::CPU));
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

// A storage that views bytes of a copy-on-write mapping and keeps the mapping alive.
void release_mapping(void* context) { delete static_cast<std::shared_ptr<const MappedFile>*>(context); }

c10::Storage mapped_storage(const std::shared_ptr<const MappedFile>& file, uint64_t offset, size_t nbytes) {
  void* data = file->mutable_data() + offset;
  c10::DataPtr ptr(data, new std::shared_ptr<const MappedFile>(file), &release_mapping,
                   c10::Device(c10::DeviceType::CPU));
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

using torchsave::dtype_of_name;
using torchsave::dtype_of_storage_class;
using torchsave::storage_class_of_dtype;

// The payload of a Kind::Storage node while a tensor is being rebuilt or written.
struct TorchStorage {
  c10::Storage storage;
  c10::ScalarType dtype;  // element type the file declares for the storage
  std::string location;
};

const TorchStorage& torch_storage(const Value& v) {
  const auto& ref = v.storage_ref();
  if (!ref.storage) throw StateError("a bare storage (not inside a tensor) cannot be saved");
  return *std::static_pointer_cast<TorchStorage>(ref.storage);
}

std::vector<int64_t> int_list(const Value& tuple, const char* what) {
  if (!tuple.is(Kind::Tuple) && !tuple.is(Kind::List)) {
    throw FormatError(concat("tensor ", what, " is a ", kind_name(tuple.kind), ", expected a tuple"));
  }
  std::vector<int64_t> out;
  out.reserve(tuple.items().size());
  for (const auto& item : tuple.items()) out.push_back(item->as_int());
  return out;
}

// Builds the tensor that _rebuild_tensor_v2/_v3 describes, checking that the
// view stays inside its storage (a hostile file must not read out of bounds).
ValuePtr rebuild_tensor(const Value::Items& args, std::optional<c10::ScalarType> explicit_dtype) {
  if (args.size() < 4) throw FormatError("tensor rebuild takes at least 4 arguments");
  if (!args[0]->is(Kind::Storage)) {
    throw FormatError(concat("tensor rebuild expects a storage, got ", kind_name(args[0]->kind)));
  }
  const TorchStorage& storage = torch_storage(*args[0]);
  const c10::ScalarType dtype = explicit_dtype.value_or(storage.dtype);
  const int64_t offset = args[1]->as_int();
  const auto sizes = int_list(*args[2], "size");
  const auto strides = int_list(*args[3], "stride");
  if (sizes.size() != strides.size()) {
    throw FormatError(concat("tensor has ", sizes.size(), " sizes but ", strides.size(), " strides"));
  }
  const auto element_size = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t capacity = static_cast<int64_t>(storage.storage.nbytes()) / element_size;
  if (offset < 0) throw FormatError(concat("tensor storage offset ", offset, " is negative"));
  bool empty = false;
  int64_t last = offset;  // highest element index the view touches
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) throw FormatError("tensor has a negative size or stride");
    if (sizes[d] == 0) empty = true;
    if (sizes[d] > 0 && strides[d] > 0) {
      if (sizes[d] - 1 > (INT64_MAX - last) / strides[d]) throw FormatError("tensor view overflows");
      last += (sizes[d] - 1) * strides[d];
    }
  }
  if (!empty && last >= capacity) {
    throw FormatError(concat("tensor view reaches element ", last, " of a storage of ", capacity,
                             " elements"));
  }
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(dtype));
  tensor.set_(storage.storage, offset, sizes, strides);

  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(std::move(tensor));
  ref.location = storage.location;
  if (args.size() > 4) ref.requires_grad = args[4]->is(Kind::Bool) && args[4]->as_bool();
  if (ref.requires_grad && (at::isFloatingType(dtype) || at::isComplexType(dtype))) {
    ref.tensor->requires_grad_(true);
  }
  return Value::tensor(std::move(ref));
}

// The reduce hook: torch._utils rebuild functions become Tensor values.
ValuePtr reduce_torch(const GlobalRef& callable, const ValuePtr& args) {
  if (callable.module != "torch._utils" || !args || !args->is(Kind::Tuple)) return nullptr;
  const auto& a = args->items();
  if (callable.name == "_rebuild_tensor_v2" || callable.name == "_rebuild_tensor") {
    return rebuild_tensor(a, std::nullopt);
  }
  if (callable.name == "_rebuild_tensor_v3") {
    if (a.size() < 7 || !a[6]->is(Kind::Global)) throw FormatError("_rebuild_tensor_v3 without a dtype");
    auto dtype = dtype_of_name(a[6]->global_ref().name);
    if (!dtype) throw FormatError(concat("unknown dtype torch.", a[6]->global_ref().name));
    return rebuild_tensor(a, dtype);
  }
  if (callable.name == "_rebuild_parameter" || callable.name == "_rebuild_parameter_with_state") {
    if (a.size() < 2 || !a[0]->is(Kind::Tensor)) throw FormatError("_rebuild_parameter without a tensor");
    auto param = Value::tensor(a[0]->tensor_ref());
    auto& ref = param->tensor_ref();
    ref.is_parameter = true;
    ref.requires_grad = a[1]->is(Kind::Bool) && a[1]->as_bool();
    if (ref.requires_grad && ref.tensor->is_floating_point()) ref.tensor->requires_grad_(true);
    return param;
  }
  return nullptr;
}

// Storage class of a persistent id: a typed storage name, or UntypedStorage (bytes).
c10::ScalarType storage_dtype(const Value& type) {
  if (!type.is(Kind::Global)) throw FormatError("storage type in a persistent id is not a class");
  const auto& g = type.global_ref();
  if (g.name == "UntypedStorage") return c10::ScalarType::Byte;
  auto dtype = dtype_of_storage_class(g.name);
  if (!dtype) throw FormatError(concat("unsupported storage type ", g.module, ".", g.name));
  return *dtype;
}

c10::Storage new_storage(const void* data, size_t nbytes) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator(), /*resizable=*/false);
  if (nbytes > 0) std::memcpy(storage.mutable_data(), data, nbytes);
  return storage;
}

std::string require_string(const Value& v, const char* what) {
  if (!v.is(Kind::String)) throw FormatError(concat(what, " is a ", kind_name(v.kind), ", expected a string"));
  return v.as_string();
}

std::string hex32(uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", v);
  return text;
}

// A storage to fill from its zip record (eager loads).
struct PendingRead {
  const ZipRecord* record;
  uint8_t* dest;
  uint8_t* aligned = nullptr;  // memory laid out by allocate_file_aligned(), or null
};

// Fills the storages of an eager load from several threads. A record whose pages
// are mostly not in the page cache, in memory laid out for it, is read with
// O_DIRECT straight into place (half the memory traffic, no page cache to fill);
// the others with pread(2), with the kernel asked to fetch a few pieces ahead.
// Each piece's CRC is taken right after it lands (still in cache) and the pieces'
// CRCs are combined per record.
void fill_storages(const MappedFile& file, const std::vector<PendingRead>& pending, const TorchLoadOptions& options) {
  constexpr uint64_t kPage = DirectFile::kAlignment;
  constexpr uint64_t kDirectChunk = uint64_t{8} << 20;
  std::unique_ptr<DirectFile> direct_file;
  bool direct_tried = false;

  struct Read {
    size_t item;
    uint64_t offset;  // in the file
    size_t size;
    uint8_t* dest;
    bool direct;
    uint64_t data_begin, data_end;  // the part that is the record's data (file offsets)
  };
  std::vector<Read> reads;
  uint64_t total = 0;
  bool any_direct = false;
  for (size_t i = 0; i < pending.size(); ++i) {
    const PendingRead& p = pending[i];
    const uint64_t begin = p.record->data_offset;
    const uint64_t end = begin + p.record->size;
    total += p.record->size;
    bool direct = false;
    if (p.aligned && file.resident_bytes(begin, p.record->size) < p.record->size / 2) {
      if (!direct_tried) {
        direct_file = DirectFile::open(file);
        direct_tried = true;
      }
      direct = direct_file != nullptr;
    }
    if (direct) {
      any_direct = true;
      const uint64_t first = begin / kPage * kPage;
      const uint64_t last = (end + kPage - 1) / kPage * kPage;
      for (uint64_t at = first; at < last; at += kDirectChunk) {
        const uint64_t stop = std::min(last, at + kDirectChunk);
        reads.push_back(Read{i, at, static_cast<size_t>(stop - at), p.aligned + (at - first), true,
                             std::max(at, begin), std::min(stop, end)});
      }
    } else {
      for (uint64_t at = begin; at < end; at += kChunk) {
        const uint64_t stop = std::min(end, at + kChunk);
        reads.push_back(
            Read{i, at, static_cast<size_t>(stop - at), p.dest + (at - begin), false, at, stop});
      }
    }
  }
  if (options.progress) options.progress->total = total;

  int threads = pick_threads(options.threads, total, reads.size());
  // Direct reads wait on the disk, not on a core: more of them in flight keeps it busy.
  if (any_direct && options.threads <= 0) threads = static_cast<int>(std::min<size_t>(reads.size(), 4));
  constexpr size_t kAhead = 8;
  auto prefetch = [&](size_t i) {
    if (i < reads.size() && !reads[i].direct) file.prefetch(reads[i].offset, reads[i].size);
  };
  for (size_t i = 0; i < kAhead; ++i) prefetch(i);
  std::vector<uint32_t> crcs(reads.size());
  run_parallel(reads.size(), threads, [&](size_t i) {
    prefetch(i + kAhead);
    const Read& r = reads[i];
    uint8_t* data = r.dest + (r.data_begin - r.offset);
    const size_t data_size = static_cast<size_t>(r.data_end - r.data_begin);
    if (r.direct) {
      const int64_t got = direct_file->read(r.offset, r.dest, r.size);
      if (got < 0) {
        file.read_at(r.data_begin, data, data_size);  // alignment refused: read it the usual way
      } else if (static_cast<uint64_t>(got) < r.data_end - r.offset) {
        throw IoError(concat("cannot read ", file.path(), ": the file got shorter while it was read"));
      }
    } else {
      file.read_at(r.offset, r.dest, r.size);
    }
    if (options.verify_crc) crcs[i] = crc32_update(0, data, data_size);
    if (options.progress) options.progress->add(data_size);
  });
  if (!options.verify_crc) return;
  size_t i = 0;
  for (size_t item = 0; item < pending.size(); ++item) {
    const ZipRecord& record = *pending[item].record;
    uint32_t crc = 0;
    for (; i < reads.size() && reads[i].item == item; ++i) {
      crc = crc32_combine(crc, crcs[i], reads[i].data_end - reads[i].data_begin);
    }
    if (crc != record.crc32) {
      throw FormatError(concat(file.path(), ": record ", record.name, ": CRC-32 mismatch (stored ",
                               hex32(record.crc32), ", computed ", hex32(crc), ")"));
    }
  }
}

// torch.load(weights_only=True)'s refusal: collects the refused globals a pickle names, then
// refuses the file listing them all (torch stops at the first).
class WeightsOnlyGuard {
 public:
  explicit WeightsOnlyGuard(bool enabled) : enabled_(enabled) {}
  void install(UnpickleHooks& hooks) {
    if (!enabled_) return;
    hooks.on_global = [this](const std::string& module, const std::string& name) {
      std::string full = python3_global_name(module, name);
      if (!is_weights_only_global(full) && std::find(found_.begin(), found_.end(), full) == found_.end()) {
        found_.push_back(std::move(full));
      }
    };
  }
  void check(const std::string& where) const {
    if (found_.empty()) return;
    std::string list;
    for (const auto& name : found_) list += (list.empty() ? "" : ", ") + name;
    throw UnsafeGlobalsError(concat(where, ": weights_only load refused: the pickle names globals outside torch's "
                                    "weights_only allowlist: ", list, " (read without weights_only to load them inertly)"),
                             found_);
  }

 private:
  bool enabled_;
  std::vector<std::string> found_;
};

TorchCheckpoint load_zip(const std::shared_ptr<const MappedFile>& file, TorchLoadOptions options) {
  // The directory and the local headers are scattered pages: read just those.
  file->advise(MappedFile::Access::Random);
  ZipReader zip(file);
  options.verify_crc = options.verify_crc && !zip.crc_less();  // torch reads CRC-less files unchecked
  const std::string& path = file->path();
  const ZipRecord* pickle_record = zip.find("data.pkl");
  if (!pickle_record) throw FormatError(concat(path, ": no data.pkl record: not a torch.save checkpoint"));
  file->prefetch(pickle_record->data_offset, pickle_record->size);
  if (const ZipRecord* order = zip.find("byteorder")) {
    if (zip.data(*order, options.verify_crc) != "little") {
      throw FormatError(concat(path, ": big-endian checkpoints are not supported"));
    }
  }

  std::unordered_map<std::string, ValuePtr> storages;  // key -> storage node (shared by views)
  // Storages to fill once the pickle is read: all at once, from several threads.
  std::vector<PendingRead> pending;
  UnpickleHooks hooks;
  hooks.reduce = reduce_torch;
  hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
    if (!pid->is(Kind::Tuple) || pid->items().size() < 5) {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const auto& id = pid->items();
    if (!id[0]->is(Kind::String) || id[0]->as_string() != "storage") {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const c10::ScalarType dtype = storage_dtype(*id[1]);
    const std::string key = require_string(*id[2], "storage key");
    if (auto it = storages.find(key); it != storages.end()) return it->second;
    const std::string location = require_string(*id[3], "storage location");
    const int64_t numel = id[4]->as_int();
    const std::string record_name = "data/" + key;
    const ZipRecord* record = zip.find(record_name);
    if (!record) throw FormatError(concat("record ", record_name, " is missing"));
    const auto element_size = c10::elementSize(dtype);
    if (numel < 0 || static_cast<uint64_t>(numel) > record->size / element_size) {
      throw FormatError(concat("record ", record_name, " holds ", record->size, " bytes, the pickle expects ",
                               numel, " elements of ", element_size, " bytes"));
    }
    const size_t nbytes = static_cast<size_t>(numel) * element_size;
    std::shared_ptr<TorchStorage> payload;
    if (options.mmap && file->writable() && file->mapped() && record->data_offset % element_size == 0) {
      // The tensor views the mapping; the data is read when it is first touched.
      payload = std::make_shared<TorchStorage>(TorchStorage{mapped_storage(file, record->data_offset, nbytes),
                                                            dtype, location});
    } else if (record->size == nbytes && nbytes > 0) {
      uint8_t* aligned = nullptr;
      c10::Storage storage;
      if (nbytes >= kDirectMin) storage = allocate_file_aligned(nbytes, record->data_offset, &aligned);
      if (!storage) {
        storage = allocate_storage(nbytes);
        aligned = nullptr;
      }
      payload = std::make_shared<TorchStorage>(TorchStorage{std::move(storage), dtype, location});
      pending.push_back(PendingRead{record, static_cast<uint8_t*>(payload->storage.mutable_data()), aligned});
    } else {  // a record longer than its storage (the CRC covers it all), or empty
      const std::string bytes = zip.data(*record, options.verify_crc);
      payload = std::make_shared<TorchStorage>(TorchStorage{new_storage(bytes.data(), nbytes), dtype, location});
    }
    auto node = Value::storage(StorageRef{payload, id[1]->global_ref().name});
    storages.emplace(key, node);
    return node;
  };

  WeightsOnlyGuard guard(options.weights_only);
  guard.install(hooks);
  TorchCheckpoint out;
  try {
    const std::string pickled = zip.data(*pickle_record, options.verify_crc);
    out.root = unpickle(pickled, hooks).value;
    out.archive_name = zip.archive_name();
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", zip.archive_name(), "/data.pkl: ", e.what()));
  }
  guard.check(concat(path, ": ", zip.archive_name(), "/data.pkl"));
  // Tensors viewing the mapping read their pages later: with the usual read-around again.
  file->advise(MappedFile::Access::Normal);

  fill_storages(*file, pending, options);
  return out;
}

// The pre-1.6 format: magic, protocol, sys_info, the object pickle, the storage
// key list, then each storage as a little-endian int64 element count and its bytes.
// Read whole into memory first (such files are small): parsing never touches a mapping.
TorchCheckpoint load_legacy(const std::shared_ptr<const MappedFile>& file, bool weights_only) {
  const std::string whole = file->read_string(0, file->size());
  const std::string_view all(whole);
  const std::string& path = file->path();
  size_t pos = 0;
  WeightsOnlyGuard guard(weights_only);
  auto next_pickle = [&](const UnpickleHooks& given) {
    UnpickleHooks hooks = given;
    guard.install(hooks);
    auto result = unpickle(all.substr(pos), hooks);
    pos += result.consumed;
    guard.check(path);
    return result.value;
  };
  try {
    const ValuePtr magic = next_pickle({});
    static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);  // 0x1950a86a20f9469cfc6c
    if (!magic->is(Kind::BigInt) || magic->as_string() != kMagic) {
      throw FormatError("not a torch.save file (neither a zip archive nor the legacy magic number)");
    }
    if (next_pickle({})->as_int() != 1001) throw FormatError("unsupported legacy protocol version");
    const ValuePtr sys_info = next_pickle({});
    if (sys_info->is(Kind::Dict)) {
      auto little = sys_info->dict().get("little_endian");
      if (little && little->is(Kind::Bool) && !little->as_bool()) {
        throw FormatError("big-endian checkpoints are not supported");
      }
    }

    struct Pending {
      std::shared_ptr<TorchStorage> storage;
      int64_t numel;
    };
    std::map<std::string, Pending> pending;
    std::unordered_map<std::string, ValuePtr> nodes;
    UnpickleHooks hooks;
    hooks.reduce = reduce_torch;
    hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
      if (!pid->is(Kind::Tuple) || pid->items().size() < 6) {
        throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
      }
      const auto& id = pid->items();
      if (!id[5]->is(Kind::None)) throw FormatError("legacy storage views are not supported");
      const std::string key = require_string(*id[2], "storage key");
      if (auto it = nodes.find(key); it != nodes.end()) return it->second;
      const c10::ScalarType dtype = storage_dtype(*id[1]);
      const int64_t numel = id[4]->as_int();
      if (numel < 0 || static_cast<uint64_t>(numel) > all.size()) throw FormatError("storage size out of range");
      // The bytes come after the pickles; the storage is filled once they are reached.
      auto payload = std::make_shared<TorchStorage>(TorchStorage{
          c10::Storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(numel) * c10::elementSize(dtype),
                       c10::GetCPUAllocator(), false),
          dtype, require_string(*id[3], "storage location")});
      pending.emplace(key, Pending{payload, numel});
      auto node = Value::storage(StorageRef{payload, id[1]->global_ref().name});
      nodes.emplace(key, node);
      return node;
    };
    TorchCheckpoint out;
    out.legacy = true;
    out.root = next_pickle(hooks);
    const ValuePtr keys = next_pickle({});
    if (!keys->is(Kind::List)) throw FormatError("legacy storage key list is not a list");
    for (const auto& key_value : keys->items()) {
      const std::string key = require_string(*key_value, "storage key");
      auto it = pending.find(key);
      if (it == pending.end()) throw FormatError(concat("storage ", key, " is listed but never used"));
      if (all.size() - pos < 8) throw FormatError(concat("storage ", key, " is truncated"));
      int64_t count = 0;
      std::memcpy(&count, all.data() + pos, 8);
      pos += 8;
      const size_t nbytes = it->second.storage->storage.nbytes();
      if (count != it->second.numel || all.size() - pos < nbytes) {
        throw FormatError(concat("storage ", key, " is truncated or has a wrong size"));
      }
      if (nbytes > 0) std::memcpy(it->second.storage->storage.mutable_data(), all.data() + pos, nbytes);
      pos += nbytes;
    }
    return out;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", e.what()));
  }
}

// Writes tensors as torch.save does: each distinct storage once, keyed "0", "1", ...
// in order of first use, with the object identities CPython's pickler would see
// (one 'storage' string, one 'cpu' string, one key string per storage).
class StorageCollector {
 public:
  struct Entry {
    std::string key;
    c10::Storage storage;
  };

  PickleHooks hooks() {
    PickleHooks h;
    h.tensor_reduce = [this](const ValuePtr& t) { return reduce(*t); };
    h.persistent_id = [this](const ValuePtr& s) { return persistent_id(*s); };
    return h;
  }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  struct Known {
    size_t index;
    ValuePtr key;
  };
  std::vector<Entry> entries_;
  std::unordered_map<const c10::StorageImpl*, Known> known_;
  ValuePtr storage_word_ = Value::string("storage");
  ValuePtr cpu_ = Value::string("cpu");

  ValuePtr tensor_args(const at::Tensor& t, bool requires_grad, const std::string& location) {
    if (!t.device().is_cpu()) throw Error("only CPU tensors can be saved");
    if (t.is_sparse() || t.is_quantized() || !t.has_storage()) {
      throw Error(concat("cannot save a ", t.toString(), " tensor: only dense strided tensors are supported"));
    }
    const c10::ScalarType dtype = t.scalar_type();
    const auto storage_class = storage_class_of_dtype(dtype);
    auto payload = std::make_shared<TorchStorage>(TorchStorage{t.storage(), dtype, location});
    auto storage = Value::storage(StorageRef{payload, storage_class.value_or("UntypedStorage")});

    Value::Items sizes, strides;
    for (int64_t s : t.sizes()) sizes.push_back(Value::integer(s));
    for (int64_t s : t.strides()) strides.push_back(Value::integer(s));
    Value::Items args{storage,
                      Value::integer(t.storage_offset()),
                      Value::tuple(std::move(sizes)),
                      Value::tuple(std::move(strides)),
                      Value::boolean(requires_grad),
                      Value::ordered_dict()};  // backward hooks: a fresh OrderedDict() per tensor
    if (!storage_class) args.push_back(Value::global("torch", torchsave::name_of_dtype(dtype)));
    Object rebuild;
    rebuild.callable = Value::global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    rebuild.args = Value::tuple(std::move(args));
    return Value::object(std::move(rebuild));
  }

  ValuePtr reduce(const Value& node) {
    const TensorRef& ref = node.tensor_ref();
    if (!ref.tensor || !ref.tensor->defined()) throw Error("cannot save an undefined tensor");
    const bool requires_grad = ref.requires_grad || ref.tensor->requires_grad();
    if (!ref.is_parameter) return tensor_args(*ref.tensor, requires_grad, ref.location);
    // nn.Parameter: _rebuild_parameter(data, requires_grad, OrderedDict())
    Object param;
    param.callable = Value::global("torch._utils", "_rebuild_parameter");
    param.args = Value::tuple({tensor_args(*ref.tensor, false, ref.location), Value::boolean(requires_grad),
                               Value::ordered_dict()});
    return Value::object(std::move(param));
  }

  ValuePtr persistent_id(const Value& node) {
    const TorchStorage& s = torch_storage(node);
    const auto* impl = s.storage.unsafeGetStorageImpl();
    auto [it, inserted] = known_.try_emplace(impl, Known{entries_.size(), nullptr});
    if (inserted) {
      it->second.key = Value::string(std::to_string(entries_.size()));
      entries_.push_back(Entry{it->second.key->as_string(), s.storage});
    }
    const auto storage_class = storage_class_of_dtype(s.dtype);
    const size_t element_size = storage_class ? c10::elementSize(s.dtype) : 1;
    ValuePtr location = s.location == "cpu" ? cpu_ : Value::string(s.location);
    return Value::tuple({storage_word_,
                         storage_class ? Value::global("torch", *storage_class)
                                       : Value::global("torch.storage", "UntypedStorage"),
                         it->second.key, location,
                         Value::integer(static_cast<int64_t>(s.storage.nbytes() / element_size))});
  }
};

}  // namespace

TorchCheckpoint load_torch_file(const std::string& path, const TorchLoadOptions& options) {
  auto file = options.mmap ? MappedFile::open_private(path) : MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (is_zip(*file)) return load_zip(file, options);
  return load_legacy(file, options.weights_only);
}

std::vector<std::string> unsafe_globals_in_file(const std::string& path) {
  auto file = MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (is_zip(*file)) {
    ZipReader zip(file);
    const ZipRecord* record = zip.find("data.pkl");
    if (!record) throw FormatError(concat(path, ": no data.pkl record: not a torch.save checkpoint"));
    try {
      return unsafe_globals_in_pickle(zip.data(*record, /*verify_crc=*/true));
    } catch (const FormatError& e) {
      throw FormatError(concat(path, ": ", zip.archive_name(), "/data.pkl: ", e.what()));
    }
  }
  // Legacy: magic, protocol, sys_info, the object pickle, the storage keys; then raw bytes.
  const std::string whole = file->read_string(0, file->size());
  const std::string_view all(whole);
  std::vector<std::string> found;
  UnpickleHooks hooks;
  hooks.persistent_load = [](const ValuePtr&) { return Value::none(); };
  hooks.on_global = [&](const std::string& module, const std::string& name) {
    std::string full = python3_global_name(module, name);
    if (!is_weights_only_global(full) && std::find(found.begin(), found.end(), full) == found.end()) {
      found.push_back(std::move(full));
    }
  };
  size_t pos = 0;
  try {
    for (int i = 0; i < 5; ++i) pos += unpickle(all.substr(pos), hooks).consumed;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", e.what()));
  }
  return found;
}

TorchCheckpoint load_torch_stream(const std::shared_ptr<const MappedFile>& stream, const TorchLoadOptions& options) {
  if (stream->size() == 0) throw FormatError(concat(stream->path(), ": empty torch.save stream"));
  if (!is_zip(*stream)) throw FormatError(concat(stream->path(), ": not a torch.save zip stream"));
  return load_zip(stream, options);
}

namespace {

// One record of a torch.save file, in the order torch writes them.
struct RecordSpec {
  std::string name;
  const void* data;
  uint64_t size;
};

// The pickle and the storages it refers to; `pickled` must outlive the records.
std::vector<RecordSpec> torch_records(const ValuePtr& root, std::string& pickled, StorageCollector& storages) {
  pickled = pickle(root, storages.hooks());
  std::vector<RecordSpec> records;
  records.push_back({"data.pkl", pickled.data(), pickled.size()});
  records.push_back({".format_version", "1", 1});
  records.push_back({".storage_alignment", "64", 2});
  records.push_back({"byteorder", "little", 6});
  for (const auto& entry : storages.entries()) {
    records.push_back({"data/" + entry.key, entry.storage.data(), entry.storage.nbytes()});
  }
  records.push_back({"version", "3\n", 2});
  return records;
}

// Records this large are written by the parallel writers; smaller ones go through the sink's buffer.
constexpr uint64_t kPlacedRecord = uint64_t{1} << 20;

// Writes the records into `sink` (an empty temp file): plans where every byte
// goes, writes the large records' data from several threads at their planned
// offsets (pwrite, CRC per piece), then the headers, small records, descriptors
// and the directory in one sequential pass that skips over the placed data.
void write_planned(AtomicFileSink& sink, const std::vector<RecordSpec>& records, const std::string& archive_name,
                   const TorchSaveOptions& options) {
  // 1. The layout: the same writer over a sink that only counts. CRCs do not move anything.
  PlanningSink plan;
  {
    TorchZipWriter zip(plan, archive_name);
    for (const auto& r : records) zip.write_record_placed(r.name, r.size, 0, r.data);
    zip.finish();
  }
  const uint64_t total = plan.position();
  std::vector<uint64_t> data_offset(records.size(), 0);
  {
    size_t next = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      if (records[i].size == 0) continue;
      if (next >= plan.skipped_offsets().size()) throw Error("zip layout plan lost a record");
      data_offset[i] = plan.skipped_offsets()[next++];
    }
  }
  if (options.progress) options.progress->total = total;

  // 2. The large records' data, straight from tensor memory.
  std::vector<size_t> placed;
  std::vector<uint64_t> sizes;
  uint64_t placed_bytes = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].size >= kPlacedRecord) {
      placed.push_back(i);
      sizes.push_back(records[i].size);
      placed_bytes += records[i].size;
    }
  }
  sink.preallocate(total);
  const std::vector<Piece> pieces = split(sizes);
  std::vector<uint32_t> piece_crcs(pieces.size());
  run_parallel(pieces.size(), pick_threads(options.threads, placed_bytes, pieces.size()), [&](size_t p) {
    const Piece& piece = pieces[p];
    const size_t r = placed[piece.item];
    const auto* data = static_cast<const uint8_t*>(records[r].data) + piece.offset;
    piece_crcs[p] = crc32_update(0, data, piece.size);
    sink.write_at(data_offset[r] + piece.offset, data, piece.size);
    if (options.progress) options.progress->add(piece.size);
  });
  std::vector<uint32_t> crc(records.size(), 0);
  for (size_t p = 0; p < pieces.size(); ++p) {
    uint32_t& c = crc[placed[pieces[p].item]];
    c = crc32_combine(c, piece_crcs[p], pieces[p].size);
  }

  // 3. Everything else, in order, around the placed data (which must be where planned).
  class Gaps : public OutputSink {
   public:
    explicit Gaps(AtomicFileSink& file) : file_(file) {}
    void write(const void* data, size_t size) override { file_.write(data, size); }
    uint64_t position() const override { return file_.position(); }
    void skip(uint64_t size) override {
      if (file_.position() != expected) throw Error("zip layout differs from its plan");
      file_.skip(size);
    }
    uint64_t expected = 0;

   private:
    AtomicFileSink& file_;
  } gaps(sink);
  TorchZipWriter zip(gaps, archive_name);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.size >= kPlacedRecord) {
      gaps.expected = data_offset[i];
      zip.write_record_placed(r.name, r.size, crc[i], r.data);
    } else {
      zip.write_record(r.name, r.data, r.size);
    }
  }
  zip.finish();
  if (sink.position() != total) throw Error("zip layout differs from its plan");
  if (options.progress) options.progress->done = total;
}

}  // namespace

void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name,
                      bool allow_unsafe_globals, const std::string& target) {
  if (!allow_unsafe_globals) check_weights_only_tree(root, target);
  StorageCollector storages;
  std::string pickled;
  const auto records = torch_records(root, pickled, storages);
  TorchZipWriter zip(out, archive_name);
  for (const auto& r : records) zip.write_record(r.name, r.data, r.size);
  zip.finish();
}

void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options) {
  if (!options.allow_unsafe_globals) check_weights_only_tree(root, path);  // before anything is written
  StorageCollector storages;
  std::string pickled;
  const auto records = torch_records(root, pickled, storages);
  AtomicFileSink sink(path, options.fsync);
  write_planned(sink, records, options.archive_name, options);
  sink.commit();
}

// --- snapshots -------------------------------------------------------------------------------

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
