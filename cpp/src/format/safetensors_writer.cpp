// Writing safetensors as the crate's prepare() + serialize_to_file() do: sort, compact JSON padded
// with spaces to 8 bytes, data back to back. Tensor bytes go from their memory straight to their
// planned place in the file (pwrite), never through a copy of the state.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"
#include "safetensors_json.h"

namespace fabricckpt::safetensors {

namespace {

// Tensors at least this large are pwritten where they go; smaller ones pass through the sink's buffer.
constexpr uint64_t kPlacedTensor = uint64_t{1} << 20;
// Placed tensors go in pieces of this size, so that with fsync each piece's write-back starts while
// the next is written (as the torch.save writer's pieces do).
constexpr uint64_t kPiece = uint64_t{4} << 20;

// A tensor without memory: its bytes from `next`, in pieces through `piece`, to the sink's position.
void stream_tensor(const TensorData& t, OutputSink& out, std::vector<uint8_t>& piece, IoProgress* progress) {
  piece.resize(static_cast<size_t>(std::min(kPiece, t.size)));
  for (uint64_t done = 0; done < t.size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(piece.size(), t.size - done));
    t.next(piece.data(), n);
    out.write(piece.data(), n);
    if (progress) progress->add(n);
    done += n;
  }
}

void check_utf8(const std::string& text, const char* what, const std::string& target) {
  if (!valid_utf8(text)) throw StateError(concat(target, ": safetensors ", what, " is not UTF-8: ", text));
}

}  // namespace

Layout plan_layout(const std::vector<TensorData>& tensors, const std::optional<Metadata>& metadata,
                   const std::string& target) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (tensors[a].dtype != tensors[b].dtype) return tensors[a].dtype > tensors[b].dtype;
    return tensors[a].name < tensors[b].name;
  });
  std::string json;
  // serde_json writes "{}" at once for a map announced empty; later entries follow it (an edge the
  // crate cannot read back), so an empty header with empty metadata is written as valid JSON instead.
  json += '{';
  bool first = true;
  auto comma = [&]() {
    if (!first) json += ',';
    first = false;
  };
  if (metadata) {
    comma();
    json += "\"__metadata__\":{";
    std::unordered_set<std::string_view> keys;
    bool first_item = true;
    for (const auto& [key, value] : *metadata) {
      check_utf8(key, "metadata key", target);
      check_utf8(value, "metadata value", target);
      if (!keys.insert(key).second) throw StateError(concat(target, ": metadata key '", key, "' given twice"));
      if (!first_item) json += ',';
      first_item = false;
      append_json_string(json, key);
      json += ':';
      append_json_string(json, value);
    }
    json += '}';
  }
  Layout layout;
  layout.file_offset.assign(tensors.size(), 0);
  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  std::vector<uint64_t> relative(tensors.size());
  for (const size_t i : order) {
    const TensorData& t = tensors[i];
    check_utf8(t.name, "tensor name", target);
    if (t.name == "__metadata__") throw StateError(concat(target, ": a tensor cannot be named __metadata__"));
    if (!names.insert(t.name).second) throw StateError(concat(target, ": tensor '", t.name, "' given twice"));
    uint64_t bits = dtype_bits(t.dtype);
    for (const uint64_t d : t.shape) {
      if (d != 0 && bits > UINT64_MAX / d) throw StateError(concat(target, ": tensor '", t.name, "': shape overflows"));
      bits *= d;
    }
    if (bits % 8 != 0 || bits / 8 != t.size) {
      throw StateError(concat(target, ": tensor '", t.name, "' has ", t.size, " bytes, its ", dtype_name(t.dtype),
                              " shape needs ", bits / 8, bits % 8 ? " and a fraction" : ""));
    }
    if (t.size > 0 && t.data == nullptr && !t.next) {
      throw StateError(concat(target, ": tensor '", t.name, "' has no memory"));
    }
    comma();
    append_json_string(json, t.name);
    json += ":{\"dtype\":\"";
    json += dtype_name(t.dtype);
    json += "\",\"shape\":[";
    for (size_t k = 0; k < t.shape.size(); ++k) {
      if (k) json += ',';
      json += std::to_string(t.shape[k]);
    }
    json += "],\"data_offsets\":[";
    json += std::to_string(offset);
    json += ',';
    json += std::to_string(offset + t.size);
    json += "]}";
    relative[i] = offset;
    offset += t.size;
  }
  json += '}';
  json.resize((json.size() + 7) / 8 * 8, ' ');
  if (json.size() > kMaxHeaderSize) {
    throw StateError(concat(target, ": safetensors header of ", json.size(), " bytes is over the ", kMaxHeaderSize,
                            "-byte limit"));
  }
  const uint64_t n = json.size();
  for (int k = 0; k < 8; ++k) layout.prefix += static_cast<char>((n >> (8 * k)) & 0xff);
  layout.prefix += json;
  for (size_t i = 0; i < tensors.size(); ++i) layout.file_offset[i] = layout.prefix.size() + relative[i];
  layout.total = layout.prefix.size() + offset;
  return layout;
}

std::unique_ptr<AtomicFileSink> write_planned(const std::string& path, const std::vector<TensorData>& tensors,
                                              const Layout& layout, bool fsync, IoProgress* progress) {
  const std::vector<size_t> order = file_order(layout);
  auto sink = std::make_unique<AtomicFileSink>(path, fsync);
  sink->preallocate(layout.total);
  sink->write(layout.prefix.data(), layout.prefix.size());
  std::vector<uint8_t> piece;  // for tensors produced piece by piece
  for (const size_t i : order) {
    const TensorData& t = tensors[i];
    if (!t.data && t.size > 0) {
      stream_tensor(t, *sink, piece, progress);
    } else if (t.size >= kPlacedTensor) {
      const auto* bytes = static_cast<const uint8_t*>(t.data);
      for (uint64_t done = 0; done < t.size; done += kPiece) {
        const uint64_t n = std::min(kPiece, t.size - done);
        sink->write_at(layout.file_offset[i] + done, bytes + done, static_cast<size_t>(n));
        if (progress) progress->add(n);
      }
      sink->skip(t.size);
    } else {
      sink->write(t.data, t.size);
      if (progress) progress->add(t.size);
    }
  }
  if (sink->position() != layout.total) throw Error("safetensors layout differs from its plan");
  return sink;
}

void write_file(const std::string& path, const std::vector<TensorData>& tensors,
                const std::optional<Metadata>& metadata, bool fsync, IoProgress* progress) {
  const Layout layout = plan_layout(tensors, metadata, path);  // every check before the file exists
  if (progress) progress->total = layout.total;
  write_planned(path, tensors, layout, fsync, progress)->commit();
}

void write_stream(OutputSink& out, const std::vector<TensorData>& tensors, const std::optional<Metadata>& metadata,
                  const std::string& target) {
  write_planned_stream(out, tensors, plan_layout(tensors, metadata, target));
}

void write_planned_stream(OutputSink& out, const std::vector<TensorData>& tensors, const Layout& layout) {
  const std::vector<size_t> order = file_order(layout);
  out.write(layout.prefix.data(), layout.prefix.size());
  std::vector<uint8_t> piece;
  for (const size_t i : order) {
    if (!tensors[i].data && tensors[i].size > 0) {
      stream_tensor(tensors[i], out, piece, nullptr);
    } else {
      out.write(tensors[i].data, tensors[i].size);
    }
  }
}

std::vector<size_t> file_order(const Layout& layout) {
  std::vector<size_t> order(layout.file_offset.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return layout.file_offset[a] < layout.file_offset[b]; });
  return order;
}

void fill_planned(const std::string& target, const Layout& layout, const std::vector<TensorData>& tensors,
                  const std::vector<size_t>& by_offset, uint64_t offset, void* dest, size_t size) {
  check_read_range(target, layout.total, offset, size);
  const uint64_t end = offset + size;
  auto* out = static_cast<uint8_t*>(dest);
  uint64_t done = offset;  // bytes before it are in `dest`
  auto copy = [&](uint64_t start, const void* from, uint64_t length) {
    const uint64_t a = std::max(start, offset);
    const uint64_t b = std::min(start + length, end);
    if (a >= b) return;
    if (a != done) throw Error(concat(target, ": safetensors layout has a gap at byte ", done));
    if (!from) throw Error(concat(target, ": a tensor produced in order cannot be sent in parts"));
    std::memcpy(out + (a - offset), static_cast<const uint8_t*>(from) + (a - start), static_cast<size_t>(b - a));
    done = b;
  };
  copy(0, layout.prefix.data(), layout.prefix.size());
  // The first tensor that ends after `offset`, then each in file order until `end`.
  auto it = std::lower_bound(by_offset.begin(), by_offset.end(), offset, [&](size_t i, uint64_t at) {
    return layout.file_offset[i] + tensors[i].size <= at;
  });
  for (; it != by_offset.end() && layout.file_offset[*it] < end; ++it) {
    copy(layout.file_offset[*it], tensors[*it].data, tensors[*it].size);
  }
  if (done != end) throw Error(concat(target, ": safetensors layout has a gap at byte ", done));
}

}  // namespace fabricckpt::safetensors
