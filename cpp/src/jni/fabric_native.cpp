#include "fabric_native.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/safetensors.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/state.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/value.h"
#include "fabricckpt/zip.h"

namespace fabricckpt::jni {
namespace {

std::string from_bytes(const signed char* data, long long length) {
  if (length < 0 || (length > 0 && data == nullptr)) throw Error("invalid byte string from the JVM");
  return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(length));
}

NativeValue wrap_or_none(const ValuePtr& v) { return v ? NativeValue(v) : NativeValue(); }

size_t checked_index(int index, size_t size, const char* what) {
  if (index < 0 || static_cast<size_t>(index) >= size) {
    throw Error(concat(what, " index ", index, " out of range (size ", size, ")"));
  }
  return static_cast<size_t>(index);
}

}  // namespace

NativeValue::NativeValue() : value_(Value::none()) {}
NativeValue::NativeValue(std::shared_ptr<Value> value) : value_(std::move(value)) {
  if (!value_) value_ = Value::none();
}

int NativeValue::kind() const { return static_cast<int>(value_->kind); }
long long NativeValue::identity() const { return static_cast<long long>(reinterpret_cast<intptr_t>(value_.get())); }
bool NativeValue::boolValue() const { return value_->as_bool(); }
long long NativeValue::longValue() const { return value_->as_int(); }
double NativeValue::doubleValue() const { return value_->as_float(); }
std::string NativeValue::bytesValue() const { return value_->as_string(); }

int NativeValue::size() const {
  if (value_->is(Kind::Dict)) return static_cast<int>(value_->dict().size());
  return static_cast<int>(value_->items().size());
}
NativeValue NativeValue::item(int index) const {
  const auto& items = value_->items();
  return NativeValue(items[checked_index(index, items.size(), "item")]);
}
NativeValue NativeValue::key(int index) const {
  const auto& items = value_->dict().items();
  return NativeValue(items[checked_index(index, items.size(), "dict")].first);
}
NativeValue NativeValue::value(int index) const {
  const auto& items = value_->dict().items();
  return NativeValue(items[checked_index(index, items.size(), "dict")].second);
}
bool NativeValue::ordered() const { return value_->dict().ordered; }
NativeValue NativeValue::dictState() const { return wrap_or_none(value_->dict().state); }

std::string NativeValue::globalModule() const { return value_->global_ref().module; }
std::string NativeValue::globalName() const { return value_->global_ref().name; }

int NativeValue::construct() const { return static_cast<int>(value_->object_ref().construct); }
NativeValue NativeValue::callable() const { return wrap_or_none(value_->object_ref().callable); }
NativeValue NativeValue::args() const { return wrap_or_none(value_->object_ref().args); }
NativeValue NativeValue::kwargs() const { return wrap_or_none(value_->object_ref().kwargs); }
NativeValue NativeValue::objectState() const { return wrap_or_none(value_->object_ref().state); }
bool NativeValue::hasObjectState() const { return value_->object_ref().state != nullptr; }
int NativeValue::listItemCount() const { return static_cast<int>(value_->object_ref().list_items.size()); }
NativeValue NativeValue::listItem(int index) const {
  const auto& items = value_->object_ref().list_items;
  return NativeValue(items[checked_index(index, items.size(), "list item")]);
}
int NativeValue::dictItemCount() const { return static_cast<int>(value_->object_ref().dict_items.size()); }
NativeValue NativeValue::dictItemKey(int index) const {
  const auto& items = value_->object_ref().dict_items;
  return NativeValue(items[checked_index(index, items.size(), "dict item")].first);
}
NativeValue NativeValue::dictItemValue(int index) const {
  const auto& items = value_->object_ref().dict_items;
  return NativeValue(items[checked_index(index, items.size(), "dict item")].second);
}

void* NativeValue::tensor() const { return value_->tensor_ref().tensor.get(); }
bool NativeValue::requiresGrad() const { return value_->tensor_ref().requires_grad; }
bool NativeValue::isParameter() const { return value_->tensor_ref().is_parameter; }
std::string NativeValue::location() const { return value_->tensor_ref().location; }

NativeValue NativeValue::newNone() { return NativeValue(Value::none()); }
NativeValue NativeValue::newBool(bool v) { return NativeValue(Value::boolean(v)); }
NativeValue NativeValue::newLong(long long v) { return NativeValue(Value::integer(v)); }
NativeValue NativeValue::newBigInt(const signed char* data, long long length) {
  return NativeValue(Value::big_integer(from_bytes(data, length)));
}
NativeValue NativeValue::newDouble(double v) { return NativeValue(Value::floating(v)); }
NativeValue NativeValue::newString(const signed char* utf8, long long length) {
  return NativeValue(Value::string(from_bytes(utf8, length)));
}
NativeValue NativeValue::newInternedString(const signed char* utf8, long long length) {
  return NativeValue(state::interned_string(from_bytes(utf8, length)));
}
NativeValue NativeValue::newBytes(const signed char* data, long long length) {
  return NativeValue(Value::bytes(from_bytes(data, length)));
}
NativeValue NativeValue::newTuple() { return NativeValue(Value::tuple()); }
NativeValue NativeValue::newList() { return NativeValue(Value::list()); }
NativeValue NativeValue::newSet(bool frozen) { return NativeValue(frozen ? Value::frozenset() : Value::set()); }
NativeValue NativeValue::newDict(bool ordered) { return NativeValue(ordered ? Value::ordered_dict() : Value::plain_dict()); }
NativeValue NativeValue::newGlobal(const signed char* module, long long module_length, const signed char* name,
                                   long long name_length) {
  return NativeValue(Value::global(from_bytes(module, module_length), from_bytes(name, name_length)));
}
NativeValue NativeValue::newObject(int construct, const NativeValue& callable, const NativeValue& args) {
  if (construct < 0 || construct > static_cast<int>(Object::Construct::NewObjEx)) {
    throw Error(concat("invalid object construction ", construct));
  }
  Object obj;
  obj.construct = static_cast<Object::Construct>(construct);
  obj.callable = callable.value_;
  obj.args = args.value_;
  return NativeValue(Value::object(std::move(obj)));
}
NativeValue NativeValue::newTensor(void* tensor, bool requires_grad, bool is_parameter, const signed char* location,
                                   long long location_length) {
  if (tensor == nullptr) throw Error("null tensor");
  const auto& source = *static_cast<const at::Tensor*>(tensor);
  if (!source.defined()) throw Error("undefined tensor");
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(source);  // shares the tensor; no data copy
  ref.requires_grad = requires_grad;
  ref.is_parameter = is_parameter;
  ref.location = from_bytes(location, location_length);
  return NativeValue(Value::tensor(std::move(ref)));
}

void NativeValue::append(const NativeValue& item) { value_->items().push_back(item.value_); }
void NativeValue::put(const NativeValue& key, const NativeValue& value) { value_->dict().set(key.value_, value.value_); }
void NativeValue::setDictState(const NativeValue& state) { value_->dict().state = state.value_; }
void NativeValue::setKwargs(const NativeValue& kwargs) { value_->object_ref().kwargs = kwargs.value_; }
void NativeValue::setObjectState(const NativeValue& state) { value_->object_ref().state = state.value_; }
void NativeValue::addListItem(const NativeValue& item) { value_->object_ref().list_items.push_back(item.value_); }
void NativeValue::addDictItem(const NativeValue& key, const NativeValue& value) {
  value_->object_ref().dict_items.emplace_back(key.value_, value.value_);
}

bool NativeValue::contains(const signed char* key, long long length) const {
  return value_->dict().get(from_bytes(key, length)) != nullptr;
}
NativeValue NativeValue::get(const signed char* key, long long length) const {
  const std::string name = from_bytes(key, length);
  ValuePtr found = value_->dict().get(name);
  if (!found) throw StateError(concat("no key '", name, "'"));
  return NativeValue(found);
}
bool NativeValue::erase(const signed char* key, long long length) {
  return value_->dict().erase(*Value::string(from_bytes(key, length)));
}

NativeValue moduleStateDict(void* module) {
  if (module == nullptr) throw Error("null module");
  return NativeValue(state::module_state_dict(*static_cast<torch::nn::Module*>(module)));
}

std::string loadModuleStateDict(void* module, const NativeValue& state_dict, bool strict) {
  if (module == nullptr) throw Error("null module");
  auto report = state::load_module_state_dict(*static_cast<torch::nn::Module*>(module), *state_dict.get(), strict);
  // "missing\tk1\tk2\nunexpected\tk3": parameter names never hold tabs or newlines.
  std::string out = "missing";
  for (const auto& key : report.missing_keys) out += "\t" + key;
  out += "\nunexpected";
  for (const auto& key : report.unexpected_keys) out += "\t" + key;
  return out;
}

NativeValue optimizerStateDict(void* optimizer) {
  if (optimizer == nullptr) throw Error("null optimizer");
  return NativeValue(state::optimizer_state_dict(*static_cast<torch::optim::Optimizer*>(optimizer)));
}

void loadOptimizerStateDict(void* optimizer, const NativeValue& state_dict) {
  if (optimizer == nullptr) throw Error("null optimizer");
  state::load_optimizer_state_dict(*static_cast<torch::optim::Optimizer*>(optimizer), *state_dict.get());
}

NativeValue lrSchedulerStateDict(void* scheduler) {
  if (scheduler == nullptr) throw Error("null LR scheduler");
  return NativeValue(state::lr_scheduler_state_dict(*static_cast<torch::optim::LRScheduler*>(scheduler)));
}

void loadLrSchedulerStateDict(void* scheduler, const NativeValue& state_dict) {
  if (scheduler == nullptr) throw Error("null LR scheduler");
  state::load_lr_scheduler_state_dict(*static_cast<torch::optim::LRScheduler*>(scheduler), *state_dict.get());
}

bool lrSchedulerDrives(void* scheduler, void* optimizer) {
  if (scheduler == nullptr || optimizer == nullptr) throw Error("null LR scheduler or optimizer");
  return state::lr_scheduler_drives(*static_cast<torch::optim::LRScheduler*>(scheduler),
                                    *static_cast<torch::optim::Optimizer*>(optimizer));
}

NativeValue scheduledOptimizerStateDict(void* optimizer, void* scheduler) {
  if (scheduler == nullptr || optimizer == nullptr) throw Error("null LR scheduler or optimizer");
  auto& opt = *static_cast<torch::optim::Optimizer*>(optimizer);
  const auto& sched = *static_cast<torch::optim::LRScheduler*>(scheduler);
  if (!state::lr_scheduler_drives(sched, opt)) throw StateError("the LR scheduler does not drive this optimizer");
  return NativeValue(state::optimizer_state_dict(opt, state::lr_scheduler_base_lrs(sched)));
}

NativeValue plateauSchedulerStateDict(void* scheduler, void* optimizer) {
  if (scheduler == nullptr || optimizer == nullptr) throw Error("null ReduceLROnPlateau scheduler or optimizer");
  return NativeValue(state::plateau_scheduler_state_dict(
      *static_cast<torch::optim::ReduceLROnPlateauScheduler*>(scheduler), *static_cast<torch::optim::Optimizer*>(optimizer)));
}

void loadPlateauSchedulerStateDict(void* scheduler, const NativeValue& state_dict) {
  if (scheduler == nullptr) throw Error("null ReduceLROnPlateau scheduler");
  state::load_plateau_scheduler_state_dict(*static_cast<torch::optim::ReduceLROnPlateauScheduler*>(scheduler),
                                           *state_dict.get());
}

NativeValue loadTorchFile(const std::string& path, bool verify_crc) {
  TorchLoadOptions options;
  options.verify_crc = verify_crc;
  return NativeValue(load_torch_file(path, options).root);
}

std::string torchFileArchiveName(const std::string& path) {
  auto file = MappedFile::open(path);
  if (!is_zip(*file)) return "";
  return ZipReader(file).archive_name();
}

std::string verifyTorchFile(const std::string& path) {
  // The format layer's, as the command line's: bounded memory (a sharded directory item by item, every
  // record's CRC-32 in pieces), and staged object-storage files read through their holes.
  if (sharded::is_sharded_checkpoint(path)) {
    return verify_sharded_outline(path) + unsafe_globals_warning(unsafe_globals_of_sharded(path));
  }
  return verify_outline(path);  // every record, the pickle, storages and views
}

std::string removeStaleTemporaries(const std::string& target) {
  std::string out;
  for (const std::string& path : remove_stale_temporaries(target)) out += (out.empty() ? "" : "\n") + path;
  return out;
}

void saveTorchFile(const std::string& path, const NativeValue& root, const std::string& archive_name, bool fsync) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.fsync = fsync;
  save_torch_file(path, root.get(), options);
}

}  // namespace fabricckpt::jni

// --- throughput: mapped and parallel loads, parallel saves, snapshots, progress ----------------
namespace fabricckpt::jni {

NativeProgress::NativeProgress() : progress_(std::make_shared<IoProgress>()) {}
long long NativeProgress::bytesDone() const { return static_cast<long long>(progress_->done.load()); }
long long NativeProgress::bytesTotal() const { return static_cast<long long>(progress_->total.load()); }

NativeValue loadTorchFileWith(const std::string& path, bool verify_crc, bool mmap, int threads,
                              NativeProgress* progress) {
  TorchLoadOptions options;
  options.verify_crc = verify_crc;
  options.mmap = mmap;
  options.threads = threads;
  options.progress = progress ? progress->get() : nullptr;
  return NativeValue(load_torch_file(path, options).root);
}

void saveTorchFileWith(const std::string& path, const NativeValue& root, const std::string& archive_name,
                       bool fsync, int threads, NativeProgress* progress) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.fsync = fsync;
  options.threads = threads;
  options.progress = progress ? progress->get() : nullptr;
  save_torch_file(path, root.get(), options);
}

bool isSafetensorsFile(const std::string& path) {
  if (!safetensors_index_of(path).empty()) return true;  // a Hugging Face sharded checkpoint
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) return false;
  try {
    return safetensors::looks_like_safetensors(*MappedFile::open(path));
  } catch (const Error&) {
    return false;  // a probe only: the reader chosen instead reports what is wrong with the file
  }
}

NativeValue loadSafetensorsFile(const std::string& path, bool mmap, int threads, NativeProgress* progress) {
  TorchLoadOptions options;
  options.mmap = mmap;
  options.threads = threads;
  options.progress = progress ? progress->get() : nullptr;
  return NativeValue(load_safetensors_file(path, options));
}

void saveSafetensorsFile(const std::string& path, const NativeValue& root, bool fsync, long long max_shard_size,
                         NativeProgress* progress) {
  if (max_shard_size <= 0) throw StateError(concat(path, ": the largest shard size must be positive"));
  save_safetensors_file(path, root.get(), fsync, progress ? progress->get() : nullptr,
                        static_cast<uint64_t>(max_shard_size));
}

NativeValue safetensorsMetadata(const std::string& path) {
  const std::string index = safetensors_index_of(path);
  const safetensors::Metadata metadata =
      index.empty() ? safetensors::read_header(*MappedFile::open(path)).metadata.value_or(safetensors::Metadata{})
                    : safetensors::read_index(index).metadata;
  return metadataDict(metadata);
}

NativeValue metadataDict(const std::vector<std::pair<std::string, std::string>>& metadata) {
  ValuePtr dict = Value::plain_dict();
  for (const auto& [key, value] : metadata) dict->dict().set(Value::string(key), Value::string(value));
  return NativeValue(dict);
}

NativeValue loadTorchFileOptions(const std::string& path, bool verify_crc, bool mmap, int threads, bool weights_only,
                                 NativeProgress* progress) {
  TorchLoadOptions options;
  options.verify_crc = verify_crc;
  options.mmap = mmap;
  options.threads = threads;
  options.weights_only = weights_only;
  options.progress = progress ? progress->get() : nullptr;
  return NativeValue(load_torch_file(path, options).root);
}

void saveTorchFileOptions(const std::string& path, const NativeValue& root, const std::string& archive_name,
                          bool fsync, int threads, bool allow_unsafe_globals, NativeProgress* progress) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.fsync = fsync;
  options.threads = threads;
  options.allow_unsafe_globals = allow_unsafe_globals;
  options.progress = progress ? progress->get() : nullptr;
  save_torch_file(path, root.get(), options);
}

namespace {
std::vector<std::string> unsafe_globals_of(const std::string& path) {
  return sharded::is_sharded_checkpoint(path) ? unsafe_globals_of_sharded(path) : unsafe_globals_of_file(path);
}
}  // namespace

std::string unsafeGlobals(const std::string& path) {
  std::string out;
  for (const auto& name : unsafe_globals_of(path)) out += name + "\n";
  return out;
}

std::string unsafeGlobalsOfTree(const NativeValue& root) {
  std::string out;
  for (const auto& g : unsafe_globals_in_tree(root.get())) out += g.name + "\t" + g.where + "\n";
  return out;
}

NativeValue snapshotTensors(const NativeValue& root, int threads, NativeProgress* progress) {
  return NativeValue(snapshot_tensors(root.get(), threads, progress ? progress->get() : nullptr));
}

}  // namespace fabricckpt::jni

// --- dist --------------------------------------------------------------------------------------
#include <algorithm>

#include "fabricckpt/dist.h"

namespace fabricckpt::jni {

NativeProcessGroup::NativeProcessGroup(const signed char* host, long long host_length, int port, int rank,
                                       int world_size, long long timeout_millis) {
  ProcessGroupOptions options;
  options.host = std::string(reinterpret_cast<const char*>(host), static_cast<size_t>(std::max(0LL, host_length)));
  options.port = port;
  options.rank = rank;
  options.world_size = world_size;
  options.timeout = std::chrono::milliseconds(timeout_millis);
  group_ = std::make_shared<ProcessGroup>(options);
}

NativeProcessGroup::NativeProcessGroup(const NativeProcessGroup& parent, const signed char* prefix,
                                       long long prefix_length) {
  if (prefix_length < 0 || (prefix_length > 0 && prefix == nullptr)) throw Error("invalid prefix from the JVM");
  group_ = parent.group_->background_group(
      std::string(reinterpret_cast<const char*>(prefix), static_cast<size_t>(prefix_length)));
}

int NativeProcessGroup::rank() const { return group_->rank(); }
int NativeProcessGroup::worldSize() const { return group_->world_size(); }
long long NativeProcessGroup::timeoutMillis() const { return static_cast<long long>(group_->timeout().count()); }
void NativeProcessGroup::barrier() { group_->barrier(); }
bool NativeProcessGroup::allAgree(bool ok) { return group_->all_agree(ok); }
long long NativeProcessGroup::allReduceSum(long long value) { return group_->all_reduce_sum(value); }

std::string NativeProcessGroup::broadcastBytes(const signed char* data, long long length, int src) {
  if (length < 0 || (length > 0 && data == nullptr)) throw Error("invalid byte string from the JVM");
  return group_->broadcast(std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(length)), src);
}

std::string NativeProcessGroup::gatherBytes(const signed char* data, long long length, int dst) {
  if (length < 0 || (length > 0 && data == nullptr)) throw Error("invalid byte string from the JVM");
  std::string framed;
  for (const std::string& bytes :
       group_->gather(std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(length)), dst)) {
    for (int i = 0; i < 8; ++i) framed += static_cast<char>((static_cast<uint64_t>(bytes.size()) >> (8 * i)) & 0xff);
    framed += bytes;
  }
  return framed;
}

void NativeProcessGroup::close() { group_->close(); }

}  // namespace fabricckpt::jni

// --- sharded checkpoints -----------------------------------------------------------------------

namespace fabricckpt::jni {

NativeShardPlan::NativeShardPlan() : plan_(std::make_shared<sharded::ShardPlan>()) {}

void NativeShardPlan::addParameter(const signed char* module_key, long long module_key_length, const signed char* name,
                                   long long name_length, const long long* global_shape, const long long* offsets,
                                   const long long* shape, int ndim) {
  if (ndim < 0 || (ndim > 0 && (!global_shape || !offsets || !shape))) throw Error("invalid shard shape from the JVM");
  sharded::Placement p;
  p.global_size.assign(global_shape, global_shape + ndim);
  p.offsets.assign(offsets, offsets + ndim);
  p.sizes.assign(shape, shape + ndim);
  plan_->add_parameter(from_bytes(module_key, module_key_length), from_bytes(name, name_length), std::move(p));
}

void NativeShardPlan::addOptimizer(const signed char* optimizer_key, long long optimizer_key_length,
                                   const signed char* module_key, long long module_key_length) {
  plan_->add_optimizer(from_bytes(optimizer_key, optimizer_key_length), from_bytes(module_key, module_key_length));
}

NativeValue optimizerStateDictByName(void* optimizer, void* module) {
  if (optimizer == nullptr || module == nullptr) throw Error("null optimizer or module");
  auto& opt = *static_cast<torch::optim::Optimizer*>(optimizer);
  auto names = state::optimizer_parameter_names(opt, *static_cast<torch::nn::Module*>(module));
  return NativeValue(state::optimizer_state_by_name(*state::optimizer_state_dict(opt), names));
}

void loadOptimizerStateDictByName(void* optimizer, void* module, const NativeValue& state_dict) {
  if (optimizer == nullptr || module == nullptr) throw Error("null optimizer or module");
  auto& opt = *static_cast<torch::optim::Optimizer*>(optimizer);
  auto names = state::optimizer_parameter_names(opt, *static_cast<torch::nn::Module*>(module));
  state::load_optimizer_state_dict(opt, *state::optimizer_state_by_index(*state_dict.get(), names));
}

void saveSharded(const std::string& dir, const NativeValue& state, const NativeValue& meta, const NativeShardPlan& plan,
                 NativeProcessGroup* group, bool fsync, bool allow_unsafe_globals, bool safetensors) {
  sharded::SaveOptions options;
  options.fsync = fsync;
  options.checkpoint_id = dir;
  options.allow_unsafe_globals = allow_unsafe_globals;
  options.serialization = safetensors ? sharded::Serialization::Safetensors : sharded::Serialization::TorchSave;
  sharded::save(dir, state.get(), meta.get()->is(Kind::None) ? nullptr : meta.get(), plan.get(),
                group ? group->get() : nullptr, options);
}

void saveFull(const std::string& path, const NativeValue& state, const NativeShardPlan& plan, NativeProcessGroup* group,
              const std::string& archive_name, bool fsync, bool allow_unsafe_globals) {
  TorchSaveOptions options;
  options.archive_name = archive_name.empty() ? "archive" : archive_name;
  options.fsync = fsync;
  options.allow_unsafe_globals = allow_unsafe_globals;
  sharded::save_full(path, state.get(), plan.get(), group ? group->get() : nullptr, options);
}

void sliceToPlan(const NativeValue& state, const NativeShardPlan& plan) { sharded::slice_to_plan(state.get(), plan.get()); }

bool isShardedCheckpoint(const std::string& path) { return sharded::is_sharded_checkpoint(path); }

namespace {

std::optional<at::Tensor> find_parameter(void* module, const std::string& name) {
  if (module == nullptr) throw Error("null module");
  auto params = static_cast<torch::nn::Module*>(module)->named_parameters(true);
  const auto* found = params.find(name);
  return found ? std::optional<at::Tensor>(*found) : std::nullopt;
}

// {key: value}: the one-entry state the plan's paths are relative to.
ValuePtr under(const std::string& key, const ValuePtr& value) {
  ValuePtr root = Value::plain_dict();
  root->dict().set(Value::string(key), value);
  return root;
}

}  // namespace

std::string parameterNames(void* module) {
  if (module == nullptr) throw Error("null module");
  std::string out;
  for (const auto& item : static_cast<torch::nn::Module*>(module)->named_parameters(true)) out += item.key() + "\n";
  return out;
}

int parameterDims(void* module, const signed char* name, long long name_length) {
  auto p = find_parameter(module, from_bytes(name, name_length));
  return p ? static_cast<int>(p->dim()) : -1;
}

long long parameterSize(void* module, const signed char* name, long long name_length, int dim) {
  const std::string n = from_bytes(name, name_length);
  auto p = find_parameter(module, n);
  if (!p) throw StateError(concat("the model has no parameter '", n, "'"));
  return p->size(dim);
}

NativeValue shardedOptimizerStateDict(void* optimizer, void* module, const signed char* module_key,
                                      long long module_key_length, const NativeShardPlan& plan) {
  if (optimizer == nullptr || module == nullptr) throw Error("null optimizer or module");
  auto& opt = *static_cast<torch::optim::Optimizer*>(optimizer);
  auto names = state::optimizer_parameter_names(opt, *static_cast<torch::nn::Module*>(module));
  // Keyed by name, the state follows its parameters' placements as in a sharded save.
  ValuePtr by_name = state::optimizer_state_by_name(*state::optimizer_state_dict(opt), names);
  sharded::ShardPlan with_optimizer = plan.get();
  with_optimizer.add_optimizer("optimizer", from_bytes(module_key, module_key_length));
  sharded::slice_to_plan(under("optimizer", by_name), with_optimizer);
  return NativeValue(state::optimizer_state_by_index(*by_name, names));
}

void shardModuleParameters(void* module, const signed char* module_key, long long module_key_length,
                           const NativeShardPlan& plan) {
  if (module == nullptr) throw Error("null module");
  auto& m = *static_cast<torch::nn::Module*>(module);
  const std::string key = from_bytes(module_key, module_key_length);
  ValuePtr state_dict = state::module_state_dict(m);
  sharded::slice_to_plan(under(key, state_dict), plan.get());
  torch::NoGradGuard no_grad;
  for (auto& item : m.named_parameters(true)) {
    const sharded::Placement* p = plan.get().parameter(key, item.key());
    if (!p) continue;
    at::Tensor& param = item.value();
    if (param.sizes().vec() != p->global_size) {
      throw StateError(concat("parameter '", item.key(), "' has shape ", state::detail::torch_size_repr(param.sizes()),
                              ", not the global shape it is to be sharded from"));
    }
    // The same tensor object takes its shard's data, so optimizers holding it see the shard.
    param.set_data(*state_dict->dict().get(item.key())->tensor_ref().tensor);
  }
}

NativeShardedReader::NativeShardedReader(const std::string& dir)
    : reader_(std::make_shared<sharded::Reader>(dir)), keys_(reader_->top_level_keys()) {}

int NativeShardedReader::topLevelKeyCount() const { return static_cast<int>(keys_.size()); }

std::string NativeShardedReader::topLevelKey(int index) const {
  return keys_[checked_index(index, keys_.size(), "top-level key")];
}

NativeValue NativeShardedReader::read(const signed char* key, long long key_length, const NativeShardPlan& plan) const {
  return wrap_or_none(reader_->read(from_bytes(key, key_length), plan.get()));
}

NativeValue NativeShardedReader::readInto(const signed char* key, long long key_length, const NativeShardPlan& plan,
                                          void* module) const {
  if (module == nullptr) throw Error("null module");
  auto& m = *static_cast<torch::nn::Module*>(module);
  std::unordered_map<std::string, at::Tensor> destinations;
  for (const auto& item : m.named_parameters(/*recurse=*/true)) destinations.emplace(item.key(), item.value());
  for (const auto& item : m.named_buffers(/*recurse=*/true)) destinations.emplace(item.key(), item.value());
  return wrap_or_none(reader_->read(from_bytes(key, key_length), plan.get(), destinations));
}

NativeValue NativeShardedReader::readAll() const { return NativeValue(reader_->read_all()); }

}  // namespace fabricckpt::jni
