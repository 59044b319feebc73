// dcp::Metadata -> torch.distributed.checkpoint's .metadata pickle, with the object sharing the
// CPython pickler gives it (dcp.h). The reader is dcp_metadata.cpp.
#include <string>
#include <vector>

#include "dcp_names.h"
#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"
#include "safetensors_json.h"

namespace fabricckpt::dcp {

namespace {

// ------------------------------------------------------------------ writing: Python objects

// Builds the object graph with Python's sharing: one node per class global and per field name,
// as the CPython pickler memoizes one class object and one interned name.
class Builder {
 public:
  ValuePtr cls(const std::string& module, const std::string& name) {
    auto& node = globals_[module + "." + name];
    if (!node) node = Value::global(module, name);
    return node;
  }
  ValuePtr name(const std::string& text) {
    auto& node = names_[text];
    if (!node) node = Value::string(text);
    return node;
  }
  // cls.__new__(cls) + BUILD(state); no BUILD when state is null.
  ValuePtr instance(const std::string& module, const std::string& class_name, ValuePtr state) {
    Object obj;
    obj.construct = Object::Construct::NewObj;
    obj.callable = cls(module, class_name);
    obj.args = Value::tuple();
    obj.state = std::move(state);
    return Value::object(std::move(obj));
  }
  ValuePtr reduce(ValuePtr callable, Value::Items args) {
    Object obj;
    obj.construct = Object::Construct::Reduce;
    obj.callable = std::move(callable);
    obj.args = Value::tuple(std::move(args));
    return Value::object(std::move(obj));
  }
  ValuePtr size(const std::vector<int64_t>& dims) {
    Value::Items items;
    for (int64_t d : dims) items.push_back(Value::integer(d));
    return reduce(cls("torch", "Size"), {Value::tuple(std::move(items))});
  }
  void field(const ValuePtr& dict, const std::string& key, ValuePtr value) {
    dict->dict().set(name(key), std::move(value));
  }

 private:
  std::unordered_map<std::string, ValuePtr> globals_, names_;
};

ValuePtr path_value(const std::vector<PathItem>& path) {
  Value::Items items;
  for (const auto& step : path) {
    if (const auto* s = std::get_if<std::string>(&step)) {
      items.push_back(Value::string(*s));
    } else {
      items.push_back(Value::integer(std::get<int64_t>(step)));
    }
  }
  return Value::tuple(std::move(items));
}

// pathlib.PosixPath(*parts): Python pickles a path as its parts ('/' first when absolute).
ValuePtr posix_path(Builder& b, const std::string& path) {
  Value::Items parts;
  if (!path.empty() && path[0] == '/') parts.push_back(Value::string("/"));
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(Value::string(path.substr(start, end - start)));
    start = end + 1;
  }
  return b.reduce(b.cls("pathlib", "PosixPath"), std::move(parts));
}

}  // namespace

ValuePtr metadata_to_value(const Metadata& m) {
  Builder b;
  ValuePtr state_dict_metadata = Value::plain_dict();
  for (const auto& e : m.entries) {
    ValuePtr node;
    if (!e.tensor) {
      node = b.instance(kMetadataModule, "BytesStorageMetadata", nullptr);
    } else {
      const TensorEntry& t = *e.tensor;
      ValuePtr properties = b.instance(
          kMetadataModule, "TensorProperties",
          Value::tuple({Value::global("torch", t.dtype),
                        b.reduce(b.cls("torch.serialization", "_get_layout"), {Value::string("torch.strided")}),
                        Value::boolean(t.requires_grad),
                        b.reduce(b.cls(kMetadataModule, "_MEM_FORMAT_ENCODING"), {Value::integer(0)}),
                        Value::boolean(false)}));
      ValuePtr chunks = Value::list();
      for (const auto& c : t.chunks) {
        ValuePtr fields = Value::plain_dict();
        b.field(fields, "offsets", b.size(c.offsets));
        b.field(fields, "sizes", b.size(c.sizes));
        chunks->items().push_back(b.instance(kMetadataModule, "ChunkStorageMetadata", fields));
      }
      ValuePtr fields = Value::plain_dict();
      b.field(fields, "properties", properties);
      b.field(fields, "size", b.size(t.size));
      b.field(fields, "chunks", chunks);
      node = b.instance(kMetadataModule, "TensorStorageMetadata", fields);
    }
    state_dict_metadata->dict().set(Value::string(e.key), node);
  }

  ValuePtr planner_data = Value::none();
  if (m.has_planner_data) {
    planner_data = Value::plain_dict();
    for (const auto& [key, path] : m.planner_data) planner_data->dict().set(Value::string(key), path_value(path));
  }

  ValuePtr storage_data = Value::plain_dict();
  for (const auto& [key, info] : m.storage) {
    ValuePtr index_fields = Value::plain_dict();
    b.field(index_fields, "fqn", Value::string(key.fqn));
    b.field(index_fields, "index", key.index ? Value::integer(*key.index) : Value::none());
    if (key.offset) b.field(index_fields, "offset", b.size(*key.offset));
    ValuePtr info_fields = Value::plain_dict();
    b.field(info_fields, "relative_path", Value::string(info.relative_path));
    b.field(info_fields, "offset", Value::integer(static_cast<int64_t>(info.offset)));
    b.field(info_fields, "length", Value::integer(static_cast<int64_t>(info.length)));
    if (!info.transforms.empty()) {
      ValuePtr list = Value::list();
      for (const auto& t : info.transforms) list->items().push_back(Value::string(t));
      b.field(info_fields, "transform_descriptors", list);
    }
    storage_data->dict().set(b.instance(kMetadataModule, "MetadataIndex", index_fields),
                             b.instance(kFilesystemModule, "_StorageInfo", info_fields));
  }

  ValuePtr storage_meta_fields = Value::plain_dict();
  // A directory as FileSystemWriter records it (a PosixPath), a URL as FsspecWriter does (the str).
  const bool url = m.checkpoint_id.find("://") != std::string::npos;
  b.field(storage_meta_fields, "checkpoint_id",
          m.checkpoint_id.empty() ? Value::none()
          : url                   ? Value::string(m.checkpoint_id)
                                  : posix_path(b, m.checkpoint_id));
  b.field(storage_meta_fields, "save_id", m.save_id.empty() ? Value::none() : Value::string(m.save_id));
  b.field(storage_meta_fields, "load_id", Value::none());
  b.field(storage_meta_fields, "modules", Value::list());

  ValuePtr fields = Value::plain_dict();
  b.field(fields, "state_dict_metadata", state_dict_metadata);
  b.field(fields, "planner_data", planner_data);
  b.field(fields, "storage_data", storage_data);
  b.field(fields, "storage_meta", b.instance(kMetadataModule, "StorageMeta", storage_meta_fields));
  b.field(fields, "version", Value::string(m.version));
  return b.instance(kMetadataModule, "Metadata", fields);
}

std::string write_metadata(const Metadata& metadata) { return pickle(metadata_to_value(metadata)); }

std::vector<std::pair<std::string, std::string>> safetensors_blob_metadata(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& chunks) {
  std::string info = "{";  // json.dumps' default separators: ", " and ": "
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i) info += ", ";
    safetensors::append_python_json_string(info, chunks[i].first);
    info += ": {\"saved_offsets\": [";
    for (size_t d = 0; d < chunks[i].second.size(); ++d) info += (d ? ", " : "") + std::to_string(chunks[i].second[d]);
    info += "]}";
  }
  info += "}";
  return {{"DCP_SHARDING_INFO", info}, {"DCP_VERSION", "1.0"}, {"format", "pt"}};
}

}  // namespace fabricckpt::dcp
