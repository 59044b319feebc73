// Reading a safetensors header with the Rust crate's rules (safetensors/src/tensor.rs, 0.8):
// read_metadata's bounds, HashMetadata's JSON shape, Metadata::validate's offsets and sizes.
#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"
#include "safetensors_json.h"

namespace fabricckpt::safetensors {

namespace {

struct DtypeRow {
  Dtype dtype;
  std::string_view name;
  unsigned bits;
};

constexpr std::array<DtypeRow, 22> kDtypes = {{
    {Dtype::BOOL, "BOOL", 8},       {Dtype::F4, "F4", 4},
    {Dtype::F6_E2M3, "F6_E2M3", 6}, {Dtype::F6_E3M2, "F6_E3M2", 6},
    {Dtype::U8, "U8", 8},           {Dtype::I8, "I8", 8},
    {Dtype::F8_E5M2, "F8_E5M2", 8}, {Dtype::F8_E4M3, "F8_E4M3", 8},
    {Dtype::F8_E8M0, "F8_E8M0", 8}, {Dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {Dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {Dtype::I16, "I16", 16},        {Dtype::U16, "U16", 16},
    {Dtype::F16, "F16", 16},        {Dtype::BF16, "BF16", 16},
    {Dtype::I32, "I32", 32},        {Dtype::U32, "U32", 32},
    {Dtype::F32, "F32", 32},        {Dtype::C64, "C64", 64},
    {Dtype::F64, "F64", 64},        {Dtype::I64, "I64", 64},
    {Dtype::U64, "U64", 64},
}};

const DtypeRow& row(Dtype dtype) { return kDtypes.at(static_cast<size_t>(dtype)); }

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw FormatError(concat(name, ": safetensors header: ", problem));
}

// One tensor entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}; other fields are
// ignored, as serde does for a struct without deny_unknown_fields.
TensorInfo parse_tensor(JsonCursor& json, std::string tensor_name) {
  TensorInfo info;
  info.name = std::move(tensor_name);
  bool has_dtype = false, has_shape = false, has_offsets = false;
  json.expect('{', concat("an object for tensor '", info.name, "'").c_str());
  if (!json.take('}')) {
    do {
      const std::string field = json.string();
      json.expect(':', "':'");
      auto once = [&](bool& seen) {
        if (seen) json.fail(concat("duplicate field '", field, "' in tensor '", info.name, "'"));
        seen = true;
      };
      if (field == "dtype") {
        once(has_dtype);
        const std::string name = json.string();
        const auto dtype = dtype_of_name(name);
        if (!dtype) json.fail(concat("unknown dtype '", name, "' of tensor '", info.name, "'"));
        info.dtype = *dtype;
      } else if (field == "shape") {
        once(has_shape);
        json.expect('[', "'[' opening a shape");
        if (!json.take(']')) {
          do {
            info.shape.push_back(json.unsigned_integer("a dimension"));
          } while (json.take(','));
          json.expect(']', "',' or ']' in a shape");
        }
      } else if (field == "data_offsets") {
        once(has_offsets);
        json.expect('[', "'[' opening data_offsets");
        info.begin = json.unsigned_integer("a data offset");
        json.expect(',', "two data offsets");
        info.end = json.unsigned_integer("a data offset");
        json.expect(']', "exactly two data offsets");
      } else {
        json.skip_value(2);
      }
    } while (json.take(','));
    json.expect('}', "',' or '}'");
  }
  if (!has_dtype || !has_shape || !has_offsets) {
    json.fail(concat("tensor '", info.name, "' lacks ", !has_dtype ? "dtype" : !has_shape ? "shape" : "data_offsets"));
  }
  return info;
}

Metadata parse_metadata(JsonCursor& json) {
  Metadata metadata;
  std::unordered_set<std::string> seen;
  json.expect('{', "an object of strings for __metadata__");
  if (json.take('}')) return metadata;
  do {
    std::string key = json.string();
    json.expect(':', "':'");
    json.skip_space();
    std::string value = json.string();
    if (!seen.insert(key).second) json.fail(concat("duplicate __metadata__ key '", key, "'"));
    metadata.emplace_back(std::move(key), std::move(value));
  } while (json.take(','));
  json.expect('}', "',' or '}'");
  return metadata;
}

// Metadata::validate: in offset order, each tensor starts where the last ended (the first at 0),
// and holds exactly shape x bits / 8 bytes.
void validate(std::vector<TensorInfo>& tensors, uint64_t data_size, const std::string& name) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t next = 0;
  for (const auto& t : tensors) {
    if (t.begin != next || t.end < t.begin) {
      fail(name, concat("tensor '", t.name, "' has data_offsets [", t.begin, ", ", t.end, "] where ", next,
                        t.begin < next ? " was expected (it overlaps the tensor before it)"
                                       : " was expected (a hole or a reversed range)"));
    }
    next = t.end;
    uint64_t elements = 1;
    for (const uint64_t d : t.shape) {
      if (d != 0 && elements > UINT64_MAX / d) fail(name, concat("tensor '", t.name, "': shape overflows"));
      elements *= d;
    }
    const unsigned bits = dtype_bits(t.dtype);
    if (elements > UINT64_MAX / bits) fail(name, concat("tensor '", t.name, "': shape overflows"));
    const uint64_t total_bits = elements * bits;
    if (total_bits % 8 != 0) {
      fail(name, concat("tensor '", t.name, "' of ", dtype_name(t.dtype), " does not end on a byte boundary"));
    }
    if (t.nbytes() != total_bits / 8) {
      fail(name, concat("tensor '", t.name, "' of ", dtype_name(t.dtype), " and ", t.shape.size(),
                        "-d shape needs ", total_bits / 8, " bytes, its data_offsets give ", t.nbytes()));
    }
  }
  if (next != data_size) {
    fail(name, concat("the tensors' data ends at ", next, " but the file holds ", data_size,
                      " bytes after the header", next > data_size ? " (offsets past the end)" : " (bytes left over)"));
  }
}

}  // namespace

std::string_view dtype_name(Dtype dtype) { return row(dtype).name; }

unsigned dtype_bits(Dtype dtype) { return row(dtype).bits; }

std::optional<Dtype> dtype_of_name(std::string_view name) {
  for (const auto& r : kDtypes) {
    if (r.name == name) return r.dtype;
  }
  return std::nullopt;
}

const TensorInfo* Header::find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Header parse_header(std::string_view json_text, uint64_t data_size, const std::string& name) {
  if (!valid_utf8(json_text)) fail(name, "not UTF-8");
  JsonCursor json(json_text, name);
  Header header;
  header.header_size = json_text.size();
  std::unordered_set<std::string> seen;
  json.expect('{', "'{' opening the header");
  if (!json.take('}')) {
    do {
      std::string key = json.string();
      json.expect(':', "':'");
      if (!seen.insert(key).second) json.fail(concat("key '", key, "' appears twice"));
      if (key == "__metadata__") {
        if (!json.take_word("null")) {  // `null`: no metadata, as serde reads Option::None
          header.metadata = parse_metadata(json);
        }
      } else {
        header.tensors.push_back(parse_tensor(json, std::move(key)));
      }
    } while (json.take(','));
    json.expect('}', "',' or '}'");
  }
  if (!json.at_end()) json.fail("trailing characters after the header");
  validate(header.tensors, data_size, name);
  return header;
}

Header read_header(const ReadSource& source) {
  const std::string& name = source.name();
  if (source.size() < 8) fail(name, concat("file of ", source.size(), " bytes is too small (no header length)"));
  uint8_t raw[8];
  source.read_at(0, raw, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
  if (n > kMaxHeaderSize) fail(name, concat("length ", n, " is over the ", kMaxHeaderSize, "-byte limit"));
  if (n > source.size() - 8) {
    fail(name, concat("length ", n, " runs past the end of the ", source.size(), "-byte file"));
  }
  const std::string text = source.read_string(8, static_cast<size_t>(n));
  return parse_header(text, source.size() - 8 - n, name);
}

bool looks_like_safetensors(const ReadSource& source, uint64_t offset) {
  if (offset > source.size() || source.size() - offset < 9) return false;
  uint8_t raw[9];
  source.read_at(offset, raw, 9);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
  return n <= kMaxHeaderSize && n <= source.size() - offset - 8 && raw[8] == '{';
}

std::vector<int64_t> torch_sizes(const TensorInfo& t, const std::string& path) {
  std::vector<int64_t> sizes;
  for (const uint64_t d : t.shape) {
    if (d > static_cast<uint64_t>(INT64_MAX)) throw FormatError(concat(path, ": tensor '", t.name, "': dimension too large"));
    sizes.push_back(static_cast<int64_t>(d));
  }
  if (t.dtype == Dtype::F4) {
    if (sizes.empty() || sizes.back() % 2 != 0) {
      throw FormatError(concat(path, ": tensor '", t.name, "' of F4 needs an even last dimension for torch"));
    }
    sizes.back() /= 2;
  }
  return sizes;
}

}  // namespace fabricckpt::safetensors
