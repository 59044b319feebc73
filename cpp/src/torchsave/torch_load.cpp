// torch.load for the Value model: the zip format (torch >= 1.6) and the legacy pickle stream.
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"
#include "parallel.h"
#include "storage_source.h"
#include "torch_rebuild.h"

namespace fabricckpt {

using torchsave::reduce_torch;
using torchsave::require_string;
using torchsave::storage_dtype;
using torchsave::TorchStorage;

namespace {

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
  // The refused globals met so far, in order of first appearance.
  const std::vector<std::string>& found() const { return found_; }
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
  // Storages are handed out as the pickle names them; eager ones are filled once it is read.
  const auto source = torchsave::StorageSource::for_load(file, zip, options);
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
    auto payload = std::make_shared<TorchStorage>(
        TorchStorage{source->storage_for(*record, nbytes, element_size), dtype, location});
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

  source->fill();
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

}  // namespace

TorchCheckpoint load_torch_file(const std::string& path, const TorchLoadOptions& options) {
  auto file = options.mmap ? MappedFile::open_private(path) : MappedFile::open(path);
  if (file->size() == 0) throw FormatError(concat(path, ": file is empty"));
  if (is_zip(*file)) return load_zip(file, options);
  return load_legacy(file, options.weights_only);
}

TorchCheckpoint load_torch_bytes(std::string bytes, const std::string& name, const TorchLoadOptions& options) {
  return load_torch_bytes(MappedFile::from_bytes(std::move(bytes), name, /*writable=*/true), options);
}

TorchCheckpoint load_torch_bytes(const std::shared_ptr<const MappedFile>& file, const TorchLoadOptions& options) {
  const std::string& name = file->path();
  if (file->size() == 0) throw FormatError(concat(name, ": object is empty"));
  if (!file->writable()) throw Error(concat(name, ": bytes to load in place must be writable"));
  if (!is_zip(*file)) throw FormatError(concat(name, ": not a torch.save zip file"));
  TorchLoadOptions views = options;
  if (options.verify_crc) {
    // The views skip the storages' CRCs (as mmap loads do): check every record here, in parallel.
    ZipReader zip(file);
    const auto& records = zip.records();
    uint64_t bytes_total = 0;
    for (const auto& r : records) bytes_total += r.size;
    torchsave::run_parallel(records.size(), torchsave::pick_threads(options.threads, bytes_total, records.size()),
                            [&](size_t i) { zip.verify(records[i]); });
  }
  views.mmap = true;  // storages view the downloaded bytes (StorageSource::for_load: writable, mapped)
  return load_zip(file, views);
}

TorchCheckpoint load_torch_stream(const std::shared_ptr<const MappedFile>& stream, const TorchLoadOptions& options) {
  if (stream->size() == 0) throw FormatError(concat(stream->path(), ": empty torch.save stream"));
  if (!is_zip(*stream)) throw FormatError(concat(stream->path(), ": not a torch.save zip stream"));
  return load_zip(stream, options);
}

}  // namespace fabricckpt
