// A legacy (pre-1.6) torch.save file outlined without libtorch: five pickles back to back (magic
// number, protocol version, sys_info, the object, the sorted storage keys), then each storage as a
// little-endian int64 element count and its bytes. Only the pickles are read; each storage becomes a
// reference to its byte range, every range checked to lie inside the file.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"

namespace fabricckpt {
namespace {

// 0x1950a86a20f9469cfc6c, as pickle's LONG1 writes it (little-endian).
const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
constexpr int64_t kProtocolVersion = 1001;
// The pickles come first and are small next to the storages: read a prefix, larger until they fit.
constexpr size_t kFirstPrefix = size_t{1} << 20;

// What outlining a legacy file holds: the file and the storages the tree's nodes point to.
struct LegacyFile {
  std::shared_ptr<const MappedFile> file;
  std::vector<std::shared_ptr<StorageOutline>> storages;
};

// Unpickles the five pickles from a prefix of the file; false when the prefix ends inside them.
struct Pickles {
  ValuePtr magic, protocol, sys_info, root, keys;
  size_t end = 0;  // where the storages' bytes begin
};

bool try_unpickle(std::string_view data, const std::function<UnpickleHooks(int)>& hooks_for, Pickles& out) {
  size_t pos = 0;
  ValuePtr* slots[] = {&out.magic, &out.protocol, &out.sys_info, &out.root, &out.keys};
  for (int i = 0; i < 5; ++i) {
    try {
      auto result = unpickle(data.substr(pos), hooks_for(i));
      *slots[i] = std::move(result.value);
      pos += result.consumed;
    } catch (const FormatError& e) {
      if (std::string_view(e.what()).find("truncated data") != std::string_view::npos) return false;
      throw;
    }
  }
  out.end = pos;
  return true;
}

// The pickles of `file`, read from the shortest prefix that holds them; `hooks_for(i)` gives the
// hooks of pickle i (state they collect is reset by `restart` before each attempt).
Pickles read_pickles(const MappedFile& file, const std::function<UnpickleHooks(int)>& hooks_for,
                     const std::function<void()>& restart) {
  for (size_t prefix = std::min<uint64_t>(file.size(), kFirstPrefix);; prefix = std::min<uint64_t>(file.size(), prefix * 4)) {
    const std::string data = file.read_string(0, prefix);
    restart();
    Pickles out;
    if (try_unpickle(data, hooks_for, out)) return out;
    if (prefix == file.size()) throw FormatError("truncated data: the file ends inside its pickles");
  }
}

const std::string& require_string(const Value& v, const char* what) {
  if (!v.is(Kind::String)) throw FormatError(concat(what, " is a ", kind_name(v.kind), ", expected a string"));
  return v.as_string();
}

void check_header(const Pickles& p) {
  if (!p.magic->is(Kind::BigInt) || p.magic->as_string() != kMagic) {
    throw FormatError("not a torch.save file (neither a zip archive nor the legacy magic number)");
  }
  if (!p.protocol->is(Kind::Int) || p.protocol->as_int() != kProtocolVersion) {
    throw FormatError("unsupported legacy protocol version");
  }
  if (p.sys_info->is(Kind::Dict)) {
    auto little = p.sys_info->dict().get("little_endian");
    if (little && little->is(Kind::Bool) && !little->as_bool()) throw FormatError("big-endian checkpoints are not supported");
  }
}

}  // namespace

FileOutline read_legacy_outline(std::shared_ptr<const MappedFile> opened) {
  auto legacy = std::make_shared<LegacyFile>();
  legacy->file = std::move(opened);
  const MappedFile& file = *legacy->file;
  const std::string& path = file.path();
  struct Known {
    ValuePtr node;  // one node per storage, shared by its views
    std::shared_ptr<StorageOutline> storage;
  };
  std::unordered_map<std::string, Known> by_key;
  UnpickleHooks object_hooks;
  object_hooks.persistent_load = [&](const ValuePtr& pid) -> ValuePtr {
    // ('storage', storage_type, key, location, numel, view_metadata)
    if (!pid->is(Kind::Tuple) || pid->items().size() < 6 || !pid->items()[0]->is(Kind::String) ||
        pid->items()[0]->as_string() != "storage") {
      throw FormatError(concat("persistent id ", describe(*pid), " is not a storage reference"));
    }
    const auto& id = pid->items();
    if (!id[5]->is(Kind::None)) throw FormatError("legacy storage views are not supported");
    if (!id[1]->is(Kind::Global)) throw FormatError("storage type in a persistent id is not a class");
    const GlobalRef& type = id[1]->global_ref();
    auto dtype = dtype_of_storage_class_name(type.name);
    if (!dtype) throw FormatError(concat("unsupported storage type ", type.module, ".", type.name));
    const std::string& key = require_string(*id[2], "storage key");
    if (auto it = by_key.find(key); it != by_key.end()) return it->second.node;
    const int64_t numel = id[4]->as_int();
    if (numel < 0 || static_cast<uint64_t>(numel) > file.size() / dtype->element_size) {
      throw FormatError(concat("storage ", key, " of ", numel, " elements is larger than the file"));
    }
    auto storage = std::make_shared<StorageOutline>();
    storage->source = &file;
    storage->key = key;
    storage->location = require_string(*id[3], "storage location");
    storage->dtype = *dtype;
    storage->numel = static_cast<uint64_t>(numel);
    storage->stored = storage->nbytes();
    legacy->storages.push_back(storage);
    auto node = Value::storage(StorageRef{storage, type.name});
    by_key.emplace(key, Known{node, storage});
    return node;
  };
  object_hooks.reduce = [](const GlobalRef& callable, const ValuePtr& args) -> ValuePtr {
    Object probe;  // rebuild calls stay recipes; checking them here puts the pickle's offset in the error
    probe.callable = Value::global(callable.module, callable.name);
    probe.args = args;
    tensor_of(*Value::object(std::move(probe)));
    return nullptr;
  };
  FileOutline out;
  out.format = OutlineFormat::Legacy;
  try {
    const Pickles p = read_pickles(
        file, [&](int i) { return i == 3 ? object_hooks : UnpickleHooks{}; },
        [&] {
          by_key.clear();
          legacy->storages.clear();
        });
    check_header(p);
    if (!p.keys->is(Kind::List)) throw FormatError("legacy storage key list is not a list");
    // The storages follow in the key list's order, each after its element count.
    uint64_t pos = p.end;
    std::unordered_map<std::string, bool> placed;
    for (const auto& key_value : p.keys->items()) {
      const std::string& key = require_string(*key_value, "storage key");
      auto it = by_key.find(key);
      if (it == by_key.end()) throw FormatError(concat("storage ", key, " is listed but never used"));
      if (placed[key]) throw FormatError(concat("storage ", key, " is listed twice"));
      placed[key] = true;
      StorageOutline& storage = *it->second.storage;
      if (file.size() - pos < 8) throw FormatError(concat("storage ", key, " is truncated"));
      int64_t count = 0;
      file.read_at(pos, &count, 8);
      pos += 8;
      if (count != static_cast<int64_t>(storage.numel) || file.size() - pos < storage.stored) {
        throw FormatError(concat("storage ", key, " is truncated or has a wrong size"));
      }
      storage.offset = pos;
      pos += storage.stored;
    }
    if (placed.size() != by_key.size()) throw FormatError("a storage the pickle uses is missing from the key list");
    out.root = p.root;
  } catch (const FormatError& e) {
    throw FormatError(concat(path, ": ", e.what()));
  }
  for (const auto& s : legacy->storages) out.storages.push_back(s.get());
  out.owner = legacy;
  return out;
}

std::vector<std::string> unsafe_globals_of_legacy_file(const MappedFile& file) {
  std::vector<std::string> found;
  UnpickleHooks hooks;
  hooks.persistent_load = [](const ValuePtr&) { return Value::none(); };
  hooks.on_global = [&](const std::string& module, const std::string& name) {
    std::string full = python3_global_name(module, name);
    if (!is_weights_only_global(full) && std::find(found.begin(), found.end(), full) == found.end()) {
      found.push_back(std::move(full));
    }
  };
  try {
    read_pickles(file, [&](int) { return hooks; }, [&] { found.clear(); });
  } catch (const FormatError& e) {
    throw FormatError(concat(file.path(), ": ", e.what()));
  }
  return found;
}

}  // namespace fabricckpt
