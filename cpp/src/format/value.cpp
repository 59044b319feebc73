// The Python object model: factories, checked accessors, Python key equality
// and hashing, and a short rendering for messages.
#include "fabricckpt/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>

#include "fabricckpt/error.h"

namespace fabricckpt {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::BigInt: return "big int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::FrozenSet: return "frozenset";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
    case Kind::Tensor: return "tensor";
    case Kind::Storage: return "storage";
  }
  return "unknown";
}

namespace {

ValuePtr make(Kind kind, Value::Payload payload) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  v->payload = std::move(payload);
  return v;
}

[[noreturn]] void wrong_kind(const char* expected, Kind actual) {
  throw FormatError(concat("expected ", expected, ", got ", kind_name(actual)));
}

bool is_sequence(Kind k) {
  return k == Kind::Tuple || k == Kind::List || k == Kind::Set || k == Kind::FrozenSet;
}

// Drops redundant sign bytes so that equal numbers have equal encodings
// (the same minimal form CPython's encode_long writes).
std::string trim_twos_complement(std::string bytes) {
  while (bytes.size() > 1) {
    auto top = static_cast<unsigned char>(bytes.back());
    auto next = static_cast<unsigned char>(bytes[bytes.size() - 2]);
    bool redundant = (top == 0x00 && !(next & 0x80)) || (top == 0xff && (next & 0x80));
    if (!redundant) break;
    bytes.pop_back();
  }
  if (bytes.size() == 1 && bytes[0] == 0) bytes.clear();
  return bytes;
}

// The exact integer value of an integral double as minimal two's complement
// bytes, to compare and hash floats against big ints as Python does.
std::string integral_double_to_twos(double d) {
  int exponent = 0;
  double mantissa = std::frexp(std::fabs(d), &exponent);  // |d| = mantissa * 2^exponent
  auto bits = static_cast<uint64_t>(std::ldexp(mantissa, 53));
  int shift = exponent - 53;
  std::string magnitude;
  if (shift <= 0) {
    bits >>= -shift;
    shift = 0;
  }
  magnitude.assign(static_cast<size_t>(shift / 8) + 10, '\0');
  int byte_shift = shift / 8, bit_shift = shift % 8;
  unsigned __int128 wide = static_cast<unsigned __int128>(bits) << bit_shift;
  for (int i = 0; i < 9; ++i) {
    magnitude[static_cast<size_t>(byte_shift + i)] = static_cast<char>(static_cast<uint8_t>(wide >> (8 * i)));
  }
  if (d < 0) {  // two's complement negation: invert, add one
    unsigned carry = 1;
    for (char& c : magnitude) {
      unsigned b = static_cast<uint8_t>(~static_cast<uint8_t>(c)) + carry;
      c = static_cast<char>(static_cast<uint8_t>(b));
      carry = b >> 8;
    }
  }
  return trim_twos_complement(std::move(magnitude));
}

bool is_integral(double d) { return std::isfinite(d) && d == std::trunc(d); }

// Integral doubles in [-2^63, 2^63) convert to int64 exactly.
bool double_fits_int64(double d) { return d >= -9223372036854775808.0 && d < 9223372036854775808.0; }

size_t mix(size_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

size_t hash_int(int64_t v) { return mix(static_cast<size_t>(v)); }

size_t hash_bytes(std::string_view s) { return std::hash<std::string_view>{}(s); }

bool numbers_equal(const Value& a, const Value& b) {
  auto int_of = [](const Value& v) {
    return v.kind == Kind::Bool ? int64_t{std::get<bool>(v.payload)} : std::get<int64_t>(v.payload);
  };
  bool a_int = a.kind == Kind::Int || a.kind == Kind::Bool;
  bool b_int = b.kind == Kind::Int || b.kind == Kind::Bool;
  if (a_int && b_int) return int_of(a) == int_of(b);
  if (a.kind == Kind::BigInt && b.kind == Kind::BigInt) {
    return std::get<std::string>(a.payload) == std::get<std::string>(b.payload);
  }
  if (a.kind == Kind::Float && b.kind == Kind::Float) return std::get<double>(a.payload) == std::get<double>(b.payload);
  if (b.kind == Kind::Float) return numbers_equal(b, a);
  if (a.kind != Kind::Float) return false;  // Int against BigInt: normalised, never equal
  double d = std::get<double>(a.payload);
  if (!is_integral(d)) return false;
  if (b_int) return double_fits_int64(d) && static_cast<int64_t>(d) == int_of(b);
  return !double_fits_int64(d) && integral_double_to_twos(d) == std::get<std::string>(b.payload);
}

bool is_number(Kind k) { return k == Kind::Bool || k == Kind::Int || k == Kind::BigInt || k == Kind::Float; }

bool contains_equal(const Value::Items& items, const Value& x) {
  for (const auto& item : items) {
    if (keys_equal(*item, x)) return true;
  }
  return false;
}

}  // namespace

// CPython's singletons. Function-local statics: built on first use, thread-safe,
// and shared ownership keeps them valid for whoever still holds one at exit.
ValuePtr Value::none() {
  static const ValuePtr node = make(Kind::None, std::monostate{});
  return node;
}

ValuePtr Value::boolean(bool v) {
  static const ValuePtr true_node = make(Kind::Bool, true);
  static const ValuePtr false_node = make(Kind::Bool, false);
  return v ? true_node : false_node;
}

namespace {
constexpr int64_t kSmallIntMin = -5, kSmallIntMax = 256;  // CPython's small int cache
}

ValuePtr Value::integer(int64_t v) {
  if (v < kSmallIntMin || v > kSmallIntMax) return make(Kind::Int, v);
  static const std::vector<ValuePtr> small = [] {
    std::vector<ValuePtr> nodes;
    for (int64_t i = kSmallIntMin; i <= kSmallIntMax; ++i) nodes.push_back(make(Kind::Int, i));
    return nodes;
  }();
  return small[static_cast<size_t>(v - kSmallIntMin)];
}

ValuePtr Value::big_integer(std::string twos_complement_le) {
  std::string bytes = trim_twos_complement(std::move(twos_complement_le));
  if (bytes.size() <= 8) {
    uint64_t v = bytes.empty() || !(static_cast<uint8_t>(bytes.back()) & 0x80) ? 0 : ~uint64_t{0};
    for (size_t i = 0; i < bytes.size(); ++i) {
      v &= ~(uint64_t{0xff} << (8 * i));
      v |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
    }
    return integer(static_cast<int64_t>(v));
  }
  return make(Kind::BigInt, std::move(bytes));
}

ValuePtr Value::floating(double v) { return make(Kind::Float, v); }
ValuePtr Value::string(std::string utf8) { return make(Kind::String, std::move(utf8)); }
ValuePtr Value::bytes(std::string data) { return make(Kind::Bytes, std::move(data)); }
ValuePtr Value::tuple(Items items) { return make(Kind::Tuple, std::move(items)); }
ValuePtr Value::list(Items items) { return make(Kind::List, std::move(items)); }
ValuePtr Value::set(Items items) { return make(Kind::Set, std::move(items)); }
ValuePtr Value::frozenset(Items items) { return make(Kind::FrozenSet, std::move(items)); }
ValuePtr Value::plain_dict() { return make(Kind::Dict, Dict{}); }

ValuePtr Value::ordered_dict() {
  Dict d;
  d.ordered = true;
  return make(Kind::Dict, std::move(d));
}

ValuePtr Value::global(std::string module, std::string name) {
  return make(Kind::Global, GlobalRef{std::move(module), std::move(name)});
}

ValuePtr Value::object(Object obj) { return make(Kind::Object, std::move(obj)); }
ValuePtr Value::tensor(TensorRef t) { return make(Kind::Tensor, std::move(t)); }
ValuePtr Value::storage(StorageRef s) { return make(Kind::Storage, std::move(s)); }

bool Value::as_bool() const {
  if (kind != Kind::Bool) wrong_kind("bool", kind);
  return std::get<bool>(payload);
}

int64_t Value::as_int() const {
  if (kind != Kind::Int) wrong_kind("int", kind);
  return std::get<int64_t>(payload);
}

double Value::as_float() const {
  if (kind == Kind::Int) return static_cast<double>(std::get<int64_t>(payload));
  if (kind != Kind::Float) wrong_kind("float", kind);
  return std::get<double>(payload);
}

const std::string& Value::as_string() const {
  if (kind != Kind::String && kind != Kind::Bytes && kind != Kind::BigInt) wrong_kind("str or bytes", kind);
  return std::get<std::string>(payload);
}

const Value::Items& Value::items() const {
  if (!is_sequence(kind)) wrong_kind("tuple, list or set", kind);
  return std::get<Items>(payload);
}

Value::Items& Value::items() {
  if (!is_sequence(kind)) wrong_kind("tuple, list or set", kind);
  return std::get<Items>(payload);
}

const Dict& Value::dict() const {
  if (kind != Kind::Dict) wrong_kind("dict", kind);
  return std::get<Boxed<Dict>>(payload).get();
}

Dict& Value::dict() {
  if (kind != Kind::Dict) wrong_kind("dict", kind);
  return std::get<Boxed<Dict>>(payload).get();
}

const GlobalRef& Value::global_ref() const {
  if (kind != Kind::Global) wrong_kind("global", kind);
  return std::get<Boxed<GlobalRef>>(payload).get();
}

const Object& Value::object_ref() const {
  if (kind != Kind::Object) wrong_kind("object", kind);
  return std::get<Boxed<Object>>(payload).get();
}

Object& Value::object_ref() {
  if (kind != Kind::Object) wrong_kind("object", kind);
  return std::get<Boxed<Object>>(payload).get();
}

const TensorRef& Value::tensor_ref() const {
  if (kind != Kind::Tensor) wrong_kind("tensor", kind);
  return std::get<Boxed<TensorRef>>(payload).get();
}

TensorRef& Value::tensor_ref() {
  if (kind != Kind::Tensor) wrong_kind("tensor", kind);
  return std::get<Boxed<TensorRef>>(payload).get();
}

const StorageRef& Value::storage_ref() const {
  if (kind != Kind::Storage) wrong_kind("storage", kind);
  return std::get<Boxed<StorageRef>>(payload).get();
}

// ---- Dict ----------------------------------------------------------------

void Dict::set(ValuePtr key, ValuePtr value) {
  size_t h = key_hash(*key);
  auto [first, last] = index_.equal_range(h);
  for (auto it = first; it != last; ++it) {
    if (keys_equal(*items_[it->second].first, *key)) {
      items_[it->second].second = std::move(value);  // Python keeps the original key object
      return;
    }
  }
  index_.emplace(h, items_.size());
  items_.emplace_back(std::move(key), std::move(value));
}

ValuePtr Dict::get(const Value& key) const {
  auto [first, last] = index_.equal_range(key_hash(key));
  for (auto it = first; it != last; ++it) {
    if (keys_equal(*items_[it->second].first, key)) return items_[it->second].second;
  }
  return nullptr;
}

ValuePtr Dict::get(std::string_view key) const {
  auto [first, last] = index_.equal_range(hash_bytes(key));
  for (auto it = first; it != last; ++it) {
    const Value& k = *items_[it->second].first;
    if (k.kind == Kind::String && std::get<std::string>(k.payload) == key) return items_[it->second].second;
  }
  return nullptr;
}

bool Dict::erase(const Value& key) {
  auto [first, last] = index_.equal_range(key_hash(key));
  for (auto it = first; it != last; ++it) {
    if (keys_equal(*items_[it->second].first, key)) {
      items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
      reindex();
      return true;
    }
  }
  return false;
}

void Dict::reindex() {
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_.emplace(key_hash(*items_[i].first), i);
}

// ---- Python equality and hashing -------------------------------------------

bool keys_equal(const Value& a, const Value& b) {
  if (&a == &b) return true;  // Python compares identity first (a NaN key finds itself)
  if (is_number(a.kind) && is_number(b.kind)) return numbers_equal(a, b);
  bool a_set = a.kind == Kind::Set || a.kind == Kind::FrozenSet;
  bool b_set = b.kind == Kind::Set || b.kind == Kind::FrozenSet;
  if (a_set && b_set) {
    const auto& x = std::get<Value::Items>(a.payload);
    const auto& y = std::get<Value::Items>(b.payload);
    if (x.size() != y.size()) return false;
    for (const auto& item : x) {
      if (!contains_equal(y, *item)) return false;
    }
    return true;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::None: return true;
    case Kind::String:
    case Kind::Bytes: return std::get<std::string>(a.payload) == std::get<std::string>(b.payload);
    case Kind::Tuple:
    case Kind::List: {
      const auto& x = std::get<Value::Items>(a.payload);
      const auto& y = std::get<Value::Items>(b.payload);
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!keys_equal(*x[i], *y[i])) return false;
      }
      return true;
    }
    case Kind::Dict: {
      const Dict& x = std::get<Boxed<Dict>>(a.payload).get();
      const Dict& y = std::get<Boxed<Dict>>(b.payload).get();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.items()) {
        ValuePtr other = y.get(*k);
        if (!other || !keys_equal(*v, *other)) return false;
      }
      return true;
    }
    case Kind::Global: {
      const auto& x = std::get<Boxed<GlobalRef>>(a.payload).get();
      const auto& y = std::get<Boxed<GlobalRef>>(b.payload).get();
      return x.module == y.module && x.name == y.name;
    }
    default: return false;  // objects, tensors and storages compare by identity
  }
}

size_t key_hash(const Value& v) {
  switch (v.kind) {
    case Kind::None: return 0x5bd1e995;
    case Kind::Bool: return hash_int(std::get<bool>(v.payload));
    case Kind::Int: return hash_int(std::get<int64_t>(v.payload));
    case Kind::BigInt: return hash_bytes(std::get<std::string>(v.payload));
    case Kind::Float: {
      // Equal numbers must hash equal: 2.0 == 2 and 2.0**70 == 2**70.
      double d = std::get<double>(v.payload);
      // CPython (3.10+) hashes a NaN by identity: NaNs never compare equal, so
      // hashing them alike would chain every NaN key in one bucket (quadratic).
      // keys_equal compares identity first, so a NaN key still finds itself.
      if (std::isnan(d)) return mix(reinterpret_cast<uintptr_t>(&v));
      if (is_integral(d)) {
        return double_fits_int64(d) ? hash_int(static_cast<int64_t>(d)) : hash_bytes(integral_double_to_twos(d));
      }
      return std::hash<double>{}(d);
    }
    case Kind::String: return hash_bytes(std::get<std::string>(v.payload));
    case Kind::Bytes: return mix(hash_bytes(std::get<std::string>(v.payload)) + 1);
    case Kind::Tuple: {
      size_t h = 0x345678;
      for (const auto& item : std::get<Value::Items>(v.payload)) h = mix(h * 31 + key_hash(*item));
      return h;
    }
    case Kind::FrozenSet: {
      size_t h = 0x1f3d5b79;  // order-independent: the same set in any order hashes equal
      for (const auto& item : std::get<Value::Items>(v.payload)) h += mix(key_hash(*item));
      return h;
    }
    case Kind::Global: {
      const auto& g = std::get<Boxed<GlobalRef>>(v.payload).get();
      return mix(hash_bytes(g.module) * 31 + hash_bytes(g.name));
    }
    case Kind::Object:
    case Kind::Tensor:
    case Kind::Storage: return std::hash<const void*>{}(&v);
    case Kind::List:
    case Kind::Dict:
    case Kind::Set: break;
  }
  throw FormatError(concat("unhashable type: '", kind_name(v.kind), "'"));
}

// ---- describe ----------------------------------------------------------------

namespace {

// Little-endian two's complement -> decimal digits.
std::string big_to_decimal(const std::string& twos) {
  std::vector<uint8_t> mag(twos.begin(), twos.end());
  bool negative = !mag.empty() && (mag.back() & 0x80);
  if (negative) {
    unsigned carry = 1;
    for (auto& b : mag) {
      unsigned x = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(x);
      carry = x >> 8;
    }
  }
  std::string digits;
  while (!mag.empty()) {
    unsigned rem = 0;
    for (size_t i = mag.size(); i-- > 0;) {
      unsigned cur = (rem << 8) | mag[i];
      mag[i] = static_cast<uint8_t>(cur / 10);
      rem = cur % 10;
    }
    digits.push_back(static_cast<char>('0' + rem));
    while (!mag.empty() && mag.back() == 0) mag.pop_back();
  }
  if (digits.empty()) digits = "0";
  if (negative) digits.push_back('-');
  return {digits.rbegin(), digits.rend()};
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// Renders into `out`, stopping once past the budget. Every container writes at
// least one character before descending, so the recursion depth stays below
// the budget even for deep or self-referencing graphs.
class Describer {
 public:
  explicit Describer(size_t budget) : budget_(budget) {}
  std::string out;

  void value(const Value& v) {
    if (out.size() > budget_) return;
    switch (v.kind) {
      case Kind::None: out += "None"; break;
      case Kind::Bool: out += std::get<bool>(v.payload) ? "True" : "False"; break;
      case Kind::Int: out += std::to_string(std::get<int64_t>(v.payload)); break;
      case Kind::BigInt: out += big_to_decimal(std::get<std::string>(v.payload)); break;
      case Kind::Float: out += float_repr(std::get<double>(v.payload)); break;
      case Kind::String: quoted(std::get<std::string>(v.payload)); break;
      case Kind::Bytes:
        out += 'b';
        quoted(std::get<std::string>(v.payload));
        break;
      case Kind::Tuple: {
        const auto& items = std::get<Value::Items>(v.payload);
        sequence("(", items, items.size() == 1 ? ",)" : ")");
        break;
      }
      case Kind::List: sequence("[", std::get<Value::Items>(v.payload), "]"); break;
      case Kind::Set: {
        const auto& items = std::get<Value::Items>(v.payload);
        if (items.empty()) out += "set()";
        else sequence("{", items, "}");
        break;
      }
      case Kind::FrozenSet: sequence("frozenset({", std::get<Value::Items>(v.payload), "})"); break;
      case Kind::Dict: {
        const Dict& d = std::get<Boxed<Dict>>(v.payload).get();
        out += d.ordered ? "OrderedDict({" : "{";
        bool first = true;
        for (const auto& [k, val] : d.items()) {
          if (out.size() > budget_) return;
          if (!first) out += ", ";
          first = false;
          value(*k);
          out += ": ";
          value(*val);
        }
        out += d.ordered ? "})" : "}";
        break;
      }
      case Kind::Global: {
        const auto& g = std::get<Boxed<GlobalRef>>(v.payload).get();
        out += g.module + "." + g.name;
        break;
      }
      case Kind::Object: {
        const Object& o = std::get<Boxed<Object>>(v.payload).get();
        out += "<";
        if (o.callable) value(*o.callable);
        out += "(...)>";
        break;
      }
      case Kind::Tensor: {
        const TensorRef& t = std::get<Boxed<TensorRef>>(v.payload).get();
        out += t.is_parameter ? "<Parameter on " : "<tensor on ";
        out += t.location + ">";
        break;
      }
      case Kind::Storage: out += "<storage " + std::get<Boxed<StorageRef>>(v.payload).get().type_name + ">"; break;
    }
  }

 private:
  size_t budget_;

  void sequence(const char* open, const Value::Items& items, const char* close) {
    out += open;
    for (size_t i = 0; i < items.size(); ++i) {
      if (out.size() > budget_) return;
      if (i) out += ", ";
      value(*items[i]);
    }
    out += close;
  }

  void quoted(const std::string& s) {
    out += '\'';
    for (char c : s) {
      if (out.size() > budget_) return;
      auto u = static_cast<unsigned char>(c);
      if (c == '\'' || c == '\\') {
        out += '\\';
        out += c;
      } else if (c == '\n') {
        out += "\\n";
      } else if (u < 0x20 || u == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", u);
        out += buf;
      } else {
        out += c;
      }
    }
    out += '\'';
  }
};

}  // namespace

void push_children(const Value& v, std::vector<const Value*>& out) {
  switch (v.kind) {
    case Kind::Tuple: case Kind::List: case Kind::Set: case Kind::FrozenSet:
      for (const auto& item : v.items()) out.push_back(item.get());
      break;
    case Kind::Dict:
      for (const auto& [key, value] : v.dict().items()) {
        out.push_back(key.get());
        out.push_back(value.get());
      }
      if (v.dict().state) out.push_back(v.dict().state.get());
      break;
    case Kind::Object: {
      const Object& o = v.object_ref();
      for (const ValuePtr& part : {o.callable, o.args, o.kwargs, o.state}) {
        if (part) out.push_back(part.get());
      }
      for (const auto& item : o.list_items) out.push_back(item.get());
      for (const auto& [key, value] : o.dict_items) {
        out.push_back(key.get());
        out.push_back(value.get());
      }
      break;
    }
    default:
      break;
  }
}

std::string describe(const Value& v, size_t max_length) {
  if (max_length < 4) max_length = 4;
  Describer d(max_length);
  d.value(v);
  if (d.out.size() > max_length) {
    d.out.resize(max_length - 3);
    d.out += "...";
  }
  return d.out;
}

}  // namespace fabricckpt
