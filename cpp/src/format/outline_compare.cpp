// diff without libtorch: two tensors of outlines compared piece by piece. Equal pieces are
// found with memcmp at memory bandwidth; only pieces that differ are decoded to compute the
// largest absolute difference (what torch's (a.double() - b.double()).abs().max() gives).
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/outline.h"

namespace fabricckpt {
namespace {

constexpr size_t kPieceBytes = size_t{8} << 20;  // per file: two of these are all diff holds of a tensor

enum class Decode { F32, F64, F16, BF16, I8, U8, I16, U16, I32, U32, I64, U64, Bool, C64, C128, C32, F8E4M3, F8E5M2 };

std::optional<Decode> decoder(const std::string& dtype) {
  static const std::pair<const char*, Decode> kTable[] = {
      {"Float", Decode::F32},         {"Double", Decode::F64},          {"Half", Decode::F16},
      {"BFloat16", Decode::BF16},     {"Char", Decode::I8},             {"Byte", Decode::U8},
      {"Short", Decode::I16},         {"UInt16", Decode::U16},          {"Int", Decode::I32},
      {"UInt32", Decode::U32},        {"Long", Decode::I64},            {"UInt64", Decode::U64},
      {"Bool", Decode::Bool},         {"ComplexFloat", Decode::C64},    {"ComplexDouble", Decode::C128},
      {"ComplexHalf", Decode::C32},   {"Float8_e4m3fn", Decode::F8E4M3}, {"Float8_e5m2", Decode::F8E5M2},
  };
  for (const auto& [name, d] : kTable) {
    if (dtype == name) return d;
  }
  return std::nullopt;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

double half_to_double(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double v;
  if (exponent == 0) v = std::ldexp(mantissa, -24);
  else if (exponent == 31) v = mantissa ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(mantissa + 1024, exponent - 25);
  return (h & 0x8000) ? -v : v;
}

double e4m3fn_to_double(uint8_t b) {
  const int exponent = (b >> 3) & 0xf;
  const int mantissa = b & 0x7;
  double v;
  if (exponent == 15 && mantissa == 7) v = std::numeric_limits<double>::quiet_NaN();  // no infinities
  else if (exponent == 0) v = std::ldexp(mantissa, -9);
  else v = std::ldexp(mantissa + 8, exponent - 10);
  return (b & 0x80) ? -v : v;
}

// The element as torch's .to(double) gives it (complex: the real part, as torch does with a warning).
double to_double(const uint8_t* p, Decode d) {
  switch (d) {
    case Decode::F32: return load<float>(p);
    case Decode::F64: return load<double>(p);
    case Decode::F16: return half_to_double(load<uint16_t>(p));
    case Decode::BF16: {
      const uint32_t bits = uint32_t{load<uint16_t>(p)} << 16;
      return load<float>(reinterpret_cast<const uint8_t*>(&bits));
    }
    case Decode::I8: return load<int8_t>(p);
    case Decode::U8: return load<uint8_t>(p);
    case Decode::I16: return load<int16_t>(p);
    case Decode::U16: return load<uint16_t>(p);
    case Decode::I32: return load<int32_t>(p);
    case Decode::U32: return load<uint32_t>(p);
    case Decode::I64: return static_cast<double>(load<int64_t>(p));
    case Decode::U64: return static_cast<double>(load<uint64_t>(p));
    case Decode::Bool: return load<uint8_t>(p) != 0;
    case Decode::C64: return load<float>(p);
    case Decode::C128: return load<double>(p);
    case Decode::C32: return half_to_double(load<uint16_t>(p));
    case Decode::F8E4M3: return e4m3fn_to_double(*p);
    case Decode::F8E5M2: return half_to_double(uint16_t{*p} << 8);
  }
  return 0;
}

// Folds |a - b| of `count` elements into `max` (NaN sticks, as torch's max propagates it).
void fold(const uint8_t* a, const uint8_t* b, size_t count, size_t element_size, Decode d, double& max) {
  for (size_t i = 0; i < count; ++i) {
    const double diff = std::fabs(to_double(a + i * element_size, d) - to_double(b + i * element_size, d));
    if (std::isnan(diff) || diff > max) max = std::isnan(max) ? max : diff;
  }
}

// The bytes of a tensor's view, from its first element: read from its file, or, for a tensor
// assembled from chunks (a sharded checkpoint's), from the storage assembled once in memory.
class ViewBytes {
 public:
  explicit ViewBytes(const TensorOutline& t)
      : t_(t), first_(static_cast<uint64_t>(t.offset) * t.dtype.element_size) {
    if (!t.storage->source) assembled_ = t.storage->read_all();
  }
  void read(uint64_t at, uint8_t* out, size_t n) const {
    if (t_.storage->source) {
      t_.storage->source->read_at(t_.storage->offset + first_ + at, out, n);
    } else {
      std::memcpy(out, assembled_.data() + first_ + at, n);  // inside: the view was bounds-checked
    }
  }

 private:
  const TensorOutline& t_;
  uint64_t first_;
  std::vector<uint8_t> assembled_;
};

// The bytes a strided view spans in its storage, from its first element to its last.
uint64_t span_elements(const TensorOutline& t) {
  uint64_t last = 0;
  for (size_t d = 0; d < t.sizes.size(); ++d) last += static_cast<uint64_t>(t.sizes[d] - 1) * t.strides[d];
  return last + 1;
}

// Element offsets (in elements, from the view's first) in row-major order, one at a time.
class Strided {
 public:
  explicit Strided(const TensorOutline& t) : t_(t), index_(t.sizes.size(), 0) {}
  uint64_t next() {
    const uint64_t at = offset_;
    for (size_t d = index_.size(); d-- > 0;) {
      if (++index_[d] < t_.sizes[d]) {
        offset_ += t_.strides[d];
        break;
      }
      offset_ -= static_cast<uint64_t>(index_[d] - 1) * t_.strides[d];
      index_[d] = 0;
    }
    return at;
  }

 private:
  const TensorOutline& t_;
  std::vector<int64_t> index_;
  uint64_t offset_ = 0;
};

}  // namespace

double max_abs_difference(const TensorOutline& a, const TensorOutline& b) {
  if (a.dtype.name != b.dtype.name || a.sizes != b.sizes) {
    throw Error("max_abs_difference: the tensors differ in dtype or shape");
  }
  const uint64_t numel = a.numel();
  if (numel == 0) return 0;
  const std::optional<Decode> d = decoder(a.dtype.name);
  const size_t es = a.dtype.element_size;
  double max = 0;
  const ViewBytes va(a), vb(b);
  if (a.contiguous() && b.contiguous()) {
    const size_t piece = kPieceBytes / es * es;
    std::vector<uint8_t> x(std::min<uint64_t>(piece, numel * es)), y(x.size());
    for (uint64_t done = 0; done < numel * es; done += piece) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(piece, numel * es - done));
      va.read(done, x.data(), n);
      vb.read(done, y.data(), n);
      if (std::memcmp(x.data(), y.data(), n) == 0) continue;
      if (!d) throw Error(concat("cannot compare the values of ", a.dtype.name, " tensors without libtorch"));
      fold(x.data(), y.data(), n / es, es, *d, max);
    }
    return max;
  }
  // Views with gaps or repeats (expand, transpose, slices): the spans they cover, element by element.
  std::vector<uint8_t> x(span_elements(a) * es), y(span_elements(b) * es);
  va.read(0, x.data(), x.size());
  vb.read(0, y.data(), y.size());
  if (!d) throw Error(concat("cannot compare the values of ", a.dtype.name, " tensors without libtorch"));
  Strided ia(a), ib(b);
  for (uint64_t i = 0; i < numel; ++i) {
    const uint8_t* pa = x.data() + ia.next() * es;
    const uint8_t* pb = y.data() + ib.next() * es;
    if (std::memcmp(pa, pb, es) != 0) fold(pa, pb, 1, es, *d, max);
  }
  return max;
}

}  // namespace fabricckpt
