// Pickle reader for protocols 0 to 5. It runs the pickle machine over the
// Value model without executing anything: globals become GlobalRef values, the
// few builtins a checkpoint needs are recognised, every other construction is
// kept as an Object recipe. Hostile input is expected: every read is bounds
// checked, lengths are checked before allocating, and the machine is a loop, so
// nothing recurses on the C++ stack.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

namespace op {
constexpr uint8_t MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', FLOAT = 'F', INT = 'I',
                  BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N', PERSID = 'P',
                  BINPERSID = 'Q', REDUCE = 'R', STRING = 'S', BINSTRING = 'T', SHORT_BINSTRING = 'U',
                  UNICODE = 'V', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd',
                  EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h', INST = 'i', LONG_BINGET = 'j',
                  LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', PUT = 'p', BINPUT = 'q', LONG_BINPUT = 'r',
                  SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G';
constexpr uint8_t PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85,
                  TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b;
constexpr uint8_t BINBYTES = 'B', SHORT_BINBYTES = 'C';
constexpr uint8_t SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e, EMPTY_SET = 0x8f,
                  ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94,
                  FRAME = 0x95, BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98;
}  // namespace op

constexpr int kHighestProtocol = 5;
constexpr size_t kMaxDecimalDigits = 4300;  // CPython's default int_max_str_digits
constexpr size_t kMaxKeyNodes = size_t{1} << 20;

bool is_container(Kind k) {
  return k == Kind::Tuple || k == Kind::List || k == Kind::Dict || k == Kind::Set || k == Kind::FrozenSet ||
         k == Kind::Object;
}

bool is_immutable_collection(const Value& v) { return v.kind == Kind::Tuple || v.kind == Kind::FrozenSet; }

// Python 2 module names that CPython's fix_imports maps on load. Used only to
// recognise builtins; the GlobalRef keeps the name the file spelled.
std::string_view py3_module(std::string_view module) {
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

// Code point -> UTF-8; surrogates get the 3-byte form (Python's surrogatepass),
// which is what CPython writes for them in BINUNICODE.
void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Decodes one UTF-8 sequence (surrogates allowed, as CPython's surrogatepass
// decoding of BINUNICODE allows). Returns false on malformed input.
bool next_code_point(std::string_view s, size_t& i, uint32_t& cp) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t b0 = byte(i);
  size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xe ? 3 : (b0 >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > s.size()) return false;
  cp = len == 1 ? b0 : b0 & (0x7f >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return false;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinForLength[len] || cp > 0x10ffff) return false;
  i += len;
  return true;
}

bool valid_utf8(std::string_view s) {
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    if (!next_code_point(s, i, cp)) return false;
  }
  return true;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct KeyCost {
  size_t nodes = 1;
  size_t depth = 0;
};

class Reader {
 public:
  Reader(std::string_view data, const UnpickleHooks& hooks, const UnpickleLimits& limits)
      : data_(data), hooks_(hooks), limits_(limits) {}

  UnpickleResult run() {
    try {
      ValuePtr result = parse();
      keep_shared_chars();
      check_graph();
      return {std::move(result), pos_};
    } catch (...) {
      tear_down();
      throw;
    }
  }

 private:
  std::string_view data_;
  const UnpickleHooks& hooks_;
  const UnpickleLimits& limits_;
  size_t pos_ = 0;
  size_t op_start_ = 0;
  uint8_t op_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;  // stack heights at each MARK
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::vector<ValuePtr> created_;  // every container built here, for the graph check and tear-down
  std::vector<ValuePtr> foreign_;  // containers the hooks returned, for the graph check
  std::unordered_map<const Value*, KeyCost> key_costs_;
  // One-byte bytes from _codecs.encode(text, 'latin1'), and what keep_shared_chars needs.
  struct OneByteBytes {
    ValuePtr node, callable, args;
  };
  std::vector<OneByteBytes> one_byte_bytes_;
  std::unordered_set<ValuePtr> fetched_chars_;      // one-character str met through the memo
  std::unordered_set<const Value*> hashed_bytes_;   // bytes used as (part of) a dict key or set item

  [[noreturn]] void fail(const std::string& what) const {
    char code[8];
    std::snprintf(code, sizeof code, "0x%02x", op_);
    throw FormatError(concat("pickle: ", what, " at byte ", op_start_, " (opcode ", code, ")"));
  }

  // ---- input ----

  size_t left() const { return data_.size() - pos_; }

  std::string_view take(size_t n) {
    if (n > left()) fail(concat("truncated data: need ", n, " bytes, ", left(), " left"));
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  uint64_t read_le(size_t width) {
    std::string_view s = take(width);
    uint64_t v = 0;
    for (size_t i = width; i-- > 0;) v = (v << 8) | static_cast<uint8_t>(s[i]);
    return v;
  }

  uint64_t read_be8() {
    std::string_view s = take(8);
    uint64_t v = 0;
    for (char c : s) v = (v << 8) | static_cast<uint8_t>(c);
    return v;
  }

  // A length prefix, checked against the bytes left before anything is allocated.
  size_t read_length(size_t width, bool is_signed = false) {
    uint64_t n = read_le(width);
    if (is_signed && width == 4 && (n & 0x80000000u)) fail("negative length");
    if (n > left()) fail(concat("length ", n, " exceeds the ", left(), " bytes left"));
    return static_cast<size_t>(n);
  }

  std::string_view read_line() {
    size_t end = data_.find('\n', pos_);
    if (end == std::string_view::npos) fail("truncated data: line has no newline");
    std::string_view line = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return line;
  }

  std::string read_utf8(std::string_view raw, const char* what) {
    if (!valid_utf8(raw)) fail(concat("invalid UTF-8 in ", what));
    return std::string(raw);
  }

  // ---- stack and memo ----

  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }

  void push(ValuePtr v) {
    if (stack_.size() >= limits_.max_stack) fail(concat("stack grows beyond ", limits_.max_stack, " values"));
    stack_.push_back(std::move(v));
  }

  ValuePtr pop() {
    if (stack_.size() <= fence()) fail("stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }

  const ValuePtr& top() const {
    if (stack_.size() <= fence()) fail("stack underflow");
    return stack_.back();
  }

  Value::Items pop_mark() {
    if (marks_.empty()) fail("MARK missing");
    size_t start = marks_.back();
    marks_.pop_back();
    Value::Items items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(start)),
                       std::make_move_iterator(stack_.end()));
    stack_.resize(start);
    return items;
  }

  void memo_put(uint64_t index) {
    const ValuePtr& v = top();
    auto it = memo_.find(index);
    if (it != memo_.end()) {
      it->second = v;
      return;
    }
    if (memo_.size() >= limits_.max_memo) fail(concat("memo grows beyond ", limits_.max_memo, " entries"));
    memo_.emplace(index, v);
  }

  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail(concat("memo key ", index, " missing"));
    const ValuePtr& v = it->second;
    if (v->kind == Kind::String && std::get<std::string>(v->payload).size() <= 2) fetched_chars_.insert(v);
    push(v);
  }

  // ---- values ----

  ValuePtr track(ValuePtr v) {
    if (is_container(v->kind)) created_.push_back(v);
    return v;
  }

  ValuePtr adopt(ValuePtr v) {
    if (v && is_container(v->kind)) foreign_.push_back(v);
    return v;
  }

  // Decimal text of protocol 0 (INT, LONG); Python 2 also wrote ints beyond 64 bits.
  ValuePtr parse_decimal(std::string_view text) {
    bool negative = !text.empty() && text[0] == '-';
    std::string_view digits = text.substr(negative ? 1 : 0);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fail(concat("bad integer text '", text.substr(0, 40), "'"));
    }
    if (digits.size() > kMaxDecimalDigits) fail(concat("integer text longer than ", kMaxDecimalDigits, " digits"));
    int64_t small = 0;
    auto res = std::from_chars(text.data(), text.data() + text.size(), small);
    if (res.ec == std::errc{} && res.ptr == text.data() + text.size()) return Value::integer(small);
    std::string bytes;  // little-endian magnitude
    for (char c : digits) {
      unsigned carry = static_cast<unsigned>(c - '0');
      for (char& b : bytes) {
        unsigned x = static_cast<uint8_t>(b) * 10u + carry;
        b = static_cast<char>(x & 0xff);
        carry = x >> 8;
      }
      if (carry) bytes += static_cast<char>(carry);
    }
    bytes += '\0';  // room for the sign bit
    if (negative) {
      unsigned carry = 1;
      for (char& b : bytes) {
        unsigned x = static_cast<uint8_t>(~static_cast<uint8_t>(b)) + carry;
        b = static_cast<char>(x & 0xff);
        carry = x >> 8;
      }
    }
    return Value::big_integer(std::move(bytes));
  }

  uint64_t parse_index(std::string_view text) {
    uint64_t v = 0;
    auto res = std::from_chars(text.data(), text.data() + text.size(), v);
    if (res.ec != std::errc{} || res.ptr != text.data() + text.size()) fail("bad memo index text");
    return v;
  }

  double parse_float(std::string_view text) {
    if (!text.empty() && text[0] == '+') text.remove_prefix(1);
    double d = 0;
    auto res = std::from_chars(text.data(), text.data() + text.size(), d);
    if (res.ec != std::errc{} || res.ptr != text.data() + text.size()) {
      fail(concat("bad float text '", text.substr(0, 40), "'"));
    }
    return d;
  }

  // Python 2 str (STRING, BINSTRING, SHORT_BINSTRING) decoded as torch.load
  // decodes it: UTF-8 into a str.
  ValuePtr py2_string(std::string_view raw) { return Value::string(read_utf8(raw, "Python 2 string")); }

  // The body of a STRING opcode: a quoted repr with backslash escapes.
  std::string unescape_quoted(std::string_view line) {
    if (line.size() < 2 || line.front() != line.back() || (line.front() != '\'' && line.front() != '"')) {
      fail("STRING argument is not quoted");
    }
    std::string_view s = line.substr(1, line.size() - 2);
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\') {
        out += s[i];
        continue;
      }
      if (++i == s.size()) fail("trailing backslash in STRING");
      char c = s[i];
      switch (c) {
        case '\n': break;
        case '\\': case '\'': case '"': out += c; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': {
          int hi = i + 1 < s.size() ? hex_digit(s[i + 1]) : -1;
          int lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
          if (hi < 0 || lo < 0) fail("invalid \\x escape in STRING");
          out += static_cast<char>(hi * 16 + lo);
          i += 2;
          break;
        }
        default:
          if (c >= '0' && c <= '7') {
            unsigned v = static_cast<unsigned>(c - '0');
            for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
              v = v * 8 + static_cast<unsigned>(s[++i] - '0');
            }
            out += static_cast<char>(v & 0xff);
          } else {  // unknown escapes stay as written
            out += '\\';
            out += c;
          }
      }
    }
    return out;
  }

  // raw-unicode-escape: bytes are Latin-1 code points except \uXXXX and \UXXXXXXXX.
  std::string raw_unicode_escape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      auto c = static_cast<uint8_t>(s[i++]);
      if (c != '\\' || i == s.size()) {
        append_utf8(out, c);
        continue;
      }
      char kind = s[i++];
      if (kind != 'u' && kind != 'U') {
        out += '\\';
        append_utf8(out, static_cast<uint8_t>(kind));
        continue;
      }
      size_t count = kind == 'u' ? 4 : 8;
      if (count > s.size() - i) fail("truncated \\u escape in UNICODE");
      uint32_t cp = 0;
      for (size_t k = 0; k < count; ++k) {
        int d = hex_digit(s[i + k]);
        if (d < 0) fail("truncated \\u escape in UNICODE");
        cp = cp * 16 + static_cast<uint32_t>(d);
      }
      if (cp > 0x10ffff) fail("\\U escape out of range in UNICODE");
      i += count;
      append_utf8(out, cp);
    }
    return out;
  }

  // How big a key is before hashing it: tuples can nest and share (a DAG whose
  // unfolding is exponential), so their size is measured first. Tuples and
  // frozensets are immutable, hence acyclic, and their cost never changes.
  KeyCost key_cost(const Value& root) {
    if (!is_immutable_collection(root)) return {};
    std::vector<std::pair<const Value*, size_t>> work{{&root, 0}};
    while (!work.empty()) {
      const Value* v = work.back().first;
      const auto& items = std::get<Value::Items>(v->payload);
      size_t next = work.back().second++;
      if (next < items.size()) {
        const Value* child = items[next].get();
        if (child->kind == Kind::Bytes) hashed_bytes_.insert(child);
        if (is_immutable_collection(*child) && !key_costs_.count(child)) work.emplace_back(child, 0);
        continue;
      }
      KeyCost cost{1, 1};
      for (const auto& item : items) {
        auto it = key_costs_.find(item.get());
        KeyCost c = it == key_costs_.end() ? KeyCost{} : it->second;
        cost.nodes = std::min(kMaxKeyNodes + 1, cost.nodes + c.nodes);
        cost.depth = std::max(cost.depth, c.depth + 1);
      }
      key_costs_[v] = cost;
      work.pop_back();
    }
    return key_costs_[&root];
  }

  void check_key(const Value& key) {
    if (key.kind == Kind::Bytes) hashed_bytes_.insert(&key);
    KeyCost cost = key_cost(key);
    if (cost.nodes > kMaxKeyNodes || cost.depth > limits_.max_depth) fail("dict or set key too large or too deep");
    try {
      key_hash(key);
    } catch (const FormatError& e) {
      fail(e.what());
    }
  }

  void dict_set(Dict& d, ValuePtr key, ValuePtr value) {
    check_key(*key);
    d.set(std::move(key), std::move(value));
  }

  // ---- calls ----

  ValuePtr recognise(const ValuePtr& callable, const ValuePtr& arg_tuple) {
    const GlobalRef& g = callable->global_ref();
    const Value::Items& args = arg_tuple->items();
    std::string_view module = py3_module(g.module);
    if (module == "collections" && g.name == "OrderedDict") {
      if (args.empty()) return track(Value::ordered_dict());
      // Python 2 pickled an OrderedDict as OrderedDict([[key, value], ...]).
      if (args.size() != 1 || (args[0]->kind != Kind::List && args[0]->kind != Kind::Tuple)) return nullptr;
      const auto& pairs = args[0]->items();
      for (const auto& p : pairs) {
        if ((p->kind != Kind::List && p->kind != Kind::Tuple) || p->items().size() != 2) return nullptr;
      }
      ValuePtr od = track(Value::ordered_dict());
      for (const auto& p : pairs) dict_set(od->dict(), p->items()[0], p->items()[1]);
      return od;
    }
    if (module == "builtins" && (g.name == "set" || g.name == "frozenset")) {
      Value::Items items;
      if (args.size() == 1 && args[0]->kind != Kind::Dict && args[0]->kind != Kind::Object &&
          is_container(args[0]->kind)) {  // any tuple, list or set of items
        items = args[0]->items();
      } else if (!args.empty()) {
        return nullptr;
      }
      for (const auto& item : items) check_key(*item);
      return track(g.name == "set" ? Value::set(std::move(items)) : Value::frozenset(std::move(items)));
    }
    if (module == "builtins" && g.name == "bytes" && args.empty()) return Value::bytes("");
    if (module == "_codecs" && g.name == "encode" && args.size() == 2 && args[0]->kind == Kind::String &&
        args[1]->kind == Kind::String) {
      const std::string& encoding = args[1]->as_string();
      if (encoding != "latin1" && encoding != "latin-1") return nullptr;
      // How Python 3 pickles bytes at protocols 0-2: _codecs.encode(text, 'latin1').
      const std::string& text = args[0]->as_string();
      std::string out;
      uint32_t cp = 0;
      for (size_t i = 0; i < text.size();) {
        if (!next_code_point(text, i, cp) || cp > 0xff) fail("bytes payload is not Latin-1");
        out += static_cast<char>(cp);
      }
      ValuePtr bytes = Value::bytes(std::move(out));
      if (bytes->as_string().size() == 1) one_byte_bytes_.push_back({bytes, callable, arg_tuple});
      return bytes;
    }
    return nullptr;
  }

  ValuePtr call(ValuePtr callable, ValuePtr args, Object::Construct how, ValuePtr kwargs = nullptr) {
    if (args->kind != Kind::Tuple) fail(concat("call arguments are a ", kind_name(args->kind), ", not a tuple"));
    if (kwargs && kwargs->kind != Kind::Dict) fail(concat("keyword arguments are a ", kind_name(kwargs->kind)));
    if (callable->kind == Kind::Global) {
      const GlobalRef& g = callable->global_ref();
      if (hooks_.reduce && (!kwargs || kwargs->dict().size() == 0)) {
        if (ValuePtr built = hooks_.reduce(g, args)) return adopt(std::move(built));
      }
      if (how == Object::Construct::Reduce) {
        if (ValuePtr known = recognise(callable, args)) return known;
      }
    }
    Object obj;
    obj.construct = how;
    obj.callable = std::move(callable);
    obj.args = std::move(args);
    obj.kwargs = std::move(kwargs);
    return track(Value::object(std::move(obj)));
  }

  void persistent(ValuePtr pid) {
    if (!hooks_.persistent_load) fail(concat("persistent id ", describe(*pid, 60), " but no persistent loader"));
    ValuePtr v = hooks_.persistent_load(pid);
    if (!v) fail(concat("persistent loader returned nothing for ", describe(*pid, 60)));
    push(adopt(std::move(v)));
  }

  // ---- container mutation ----

  void append(const ValuePtr& target, Value::Items items) {
    if (target->kind == Kind::List) {
      auto& dst = target->items();
      dst.insert(dst.end(), std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
    } else if (target->kind == Kind::Object) {
      auto& dst = target->object_ref().list_items;
      dst.insert(dst.end(), std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
    } else {
      fail(concat("append to a ", kind_name(target->kind)));
    }
  }

  void set_items(const ValuePtr& target, Value::Items items) {
    if (items.size() % 2) fail("odd number of items for SETITEMS");
    if (target->kind == Kind::Dict) {
      for (size_t i = 0; i < items.size(); i += 2) dict_set(target->dict(), items[i], items[i + 1]);
    } else if (target->kind == Kind::Object) {
      for (size_t i = 0; i < items.size(); i += 2) target->object_ref().dict_items.emplace_back(items[i], items[i + 1]);
    } else {
      fail(concat("set items of a ", kind_name(target->kind)));
    }
  }

  void build(const ValuePtr& target, ValuePtr state) {
    if (target->kind == Kind::Dict && target->dict().ordered) {
      target->dict().state = std::move(state);
    } else if (target->kind == Kind::Object) {
      target->object_ref().state = std::move(state);
    } else {
      fail(concat("BUILD on a ", kind_name(target->kind)));
    }
  }

  ValuePtr make_tuple(Value::Items items) { return track(Value::tuple(std::move(items))); }

  ValuePtr make_dict(Value::Items items) {
    if (items.size() % 2) fail("odd number of items for DICT");
    ValuePtr d = track(Value::plain_dict());
    for (size_t i = 0; i < items.size(); i += 2) dict_set(d->dict(), items[i], items[i + 1]);
    return d;
  }

  ValuePtr make_frozenset(Value::Items items) {
    for (const auto& item : items) check_key(*item);
    return track(Value::frozenset(std::move(items)));
  }

  ValuePtr make_global(std::string_view module, std::string_view name) {
    // No importable name has a newline, and GLOBAL could not write it back.
    if (module.find('\n') != std::string_view::npos || name.find('\n') != std::string_view::npos) {
      fail("global name contains a newline");
    }
    ValuePtr g = Value::global(read_utf8(module, "global name"), read_utf8(name, "global name"));
    if (hooks_.on_global) hooks_.on_global(g->global_ref().module, g->global_ref().name);
    return g;
  }

  // ---- the machine ----

  ValuePtr parse() {
    for (;;) {
      op_start_ = pos_;
      if (left() == 0) {
        op_ = 0;
        fail("truncated data: no STOP opcode");
      }
      op_ = static_cast<uint8_t>(data_[pos_++]);
      switch (op_) {
        case op::PROTO: {
          auto proto = read_le(1);
          if (proto > kHighestProtocol) fail(concat("unsupported protocol ", proto));
          break;
        }
        case op::FRAME: read_length(8); break;  // frames only group bytes; the data is read as one buffer
        case op::STOP: return pop();

        case op::MARK:
          if (marks_.size() >= limits_.max_depth) fail(concat("MARKs nested deeper than ", limits_.max_depth));
          marks_.push_back(stack_.size());
          break;
        case op::POP:
          // CPython pops a MARK sitting on top of the stack before popping a value.
          if (!marks_.empty() && marks_.back() == stack_.size()) marks_.pop_back();
          else pop();
          break;
        case op::POP_MARK: pop_mark(); break;
        case op::DUP: push(top()); break;

        case op::NONE: push(Value::none()); break;
        case op::NEWTRUE: push(Value::boolean(true)); break;
        case op::NEWFALSE: push(Value::boolean(false)); break;
        case op::INT: {
          std::string_view line = read_line();
          // Protocols 0 and 1 write True and False as INT 01 and 00.
          if (line == "01" || line == "00") push(Value::boolean(line == "01"));
          else push(parse_decimal(line));
          break;
        }
        case op::LONG: {
          std::string_view line = read_line();
          if (!line.empty() && line.back() == 'L') line.remove_suffix(1);
          push(parse_decimal(line));
          break;
        }
        case op::BININT: push(Value::integer(static_cast<int32_t>(read_le(4)))); break;
        case op::BININT1: push(Value::integer(static_cast<int64_t>(read_le(1)))); break;
        case op::BININT2: push(Value::integer(static_cast<int64_t>(read_le(2)))); break;
        case op::LONG1: push(Value::big_integer(std::string(take(read_length(1))))); break;
        case op::LONG4: push(Value::big_integer(std::string(take(read_length(4, true))))); break;
        case op::FLOAT: push(Value::floating(parse_float(read_line()))); break;
        case op::BINFLOAT: push(Value::floating(std::bit_cast<double>(read_be8()))); break;

        case op::STRING: push(py2_string(unescape_quoted(read_line()))); break;
        case op::BINSTRING: push(py2_string(take(read_length(4, true)))); break;
        case op::SHORT_BINSTRING: push(py2_string(take(read_length(1)))); break;
        case op::UNICODE: push(Value::string(raw_unicode_escape(read_line()))); break;
        case op::BINUNICODE: push(Value::string(read_utf8(take(read_length(4)), "string"))); break;
        case op::SHORT_BINUNICODE: push(Value::string(read_utf8(take(read_length(1)), "string"))); break;
        case op::BINUNICODE8: push(Value::string(read_utf8(take(read_length(8)), "string"))); break;
        case op::BINBYTES: push(Value::bytes(std::string(take(read_length(4))))); break;
        case op::SHORT_BINBYTES: push(Value::bytes(std::string(take(read_length(1))))); break;
        case op::BINBYTES8: push(Value::bytes(std::string(take(read_length(8))))); break;
        case op::BYTEARRAY8: {
          // Kept as the recipe of protocols 2-4: bytearray(b'...'), or bytearray() when empty.
          std::string data(take(read_length(8)));
          Object obj;
          obj.callable = Value::global("builtins", "bytearray");
          obj.args = data.empty() ? make_tuple({}) : make_tuple({Value::bytes(std::move(data))});
          push(track(Value::object(std::move(obj))));
          break;
        }

        case op::EMPTY_TUPLE: push(make_tuple({})); break;
        case op::TUPLE: push(make_tuple(pop_mark())); break;
        case op::TUPLE1:
        case op::TUPLE2:
        case op::TUPLE3: {
          size_t n = op_ - op::TUPLE1 + 1;
          if (stack_.size() < fence() + n) fail("stack underflow");
          Value::Items items(std::make_move_iterator(stack_.end() - static_cast<std::ptrdiff_t>(n)),
                             std::make_move_iterator(stack_.end()));
          stack_.resize(stack_.size() - n);
          push(make_tuple(std::move(items)));
          break;
        }
        case op::EMPTY_LIST: push(track(Value::list())); break;
        case op::LIST: push(track(Value::list(pop_mark()))); break;
        case op::EMPTY_DICT: push(track(Value::plain_dict())); break;
        case op::DICT: push(make_dict(pop_mark())); break;
        case op::EMPTY_SET: push(track(Value::set())); break;
        case op::FROZENSET: push(make_frozenset(pop_mark())); break;

        case op::APPEND: {
          ValuePtr v = pop();
          append(top(), {std::move(v)});
          break;
        }
        case op::APPENDS: {
          Value::Items items = pop_mark();
          append(top(), std::move(items));
          break;
        }
        case op::SETITEM: {
          ValuePtr v = pop();
          ValuePtr k = pop();
          set_items(top(), {std::move(k), std::move(v)});
          break;
        }
        case op::SETITEMS: {
          Value::Items items = pop_mark();
          set_items(top(), std::move(items));
          break;
        }
        case op::ADDITEMS: {
          Value::Items items = pop_mark();
          const ValuePtr& target = top();
          if (target->kind != Kind::Set) fail(concat("ADDITEMS to a ", kind_name(target->kind)));
          for (const auto& item : items) check_key(*item);
          auto& dst = target->items();
          dst.insert(dst.end(), std::make_move_iterator(items.begin()), std::make_move_iterator(items.end()));
          break;
        }
        case op::BUILD: {
          ValuePtr state = pop();
          build(top(), std::move(state));
          break;
        }

        case op::GLOBAL: {
          std::string_view module = read_line();
          std::string_view name = read_line();
          push(make_global(module, name));
          break;
        }
        case op::STACK_GLOBAL: {
          ValuePtr name = pop();
          ValuePtr module = pop();
          if (name->kind != Kind::String || module->kind != Kind::String) fail("STACK_GLOBAL needs two str");
          push(make_global(module->as_string(), name->as_string()));
          break;
        }
        case op::REDUCE: {
          ValuePtr args = pop();
          ValuePtr callable = pop();
          push(call(std::move(callable), std::move(args), Object::Construct::Reduce));
          break;
        }
        case op::NEWOBJ: {
          ValuePtr args = pop();
          ValuePtr cls = pop();
          push(call(std::move(cls), std::move(args), Object::Construct::NewObj));
          break;
        }
        case op::NEWOBJ_EX: {
          ValuePtr kwargs = pop();
          ValuePtr args = pop();
          ValuePtr cls = pop();
          push(call(std::move(cls), std::move(args), Object::Construct::NewObjEx, std::move(kwargs)));
          break;
        }
        case op::INST: {
          std::string_view module = read_line();
          std::string_view name = read_line();
          ValuePtr cls = make_global(module, name);
          ValuePtr args = make_tuple(pop_mark());
          push(call(std::move(cls), std::move(args), Object::Construct::Reduce));
          break;
        }
        case op::OBJ: {
          Value::Items items = pop_mark();
          if (items.empty()) fail("OBJ without a class");
          ValuePtr cls = std::move(items.front());
          items.erase(items.begin());
          push(call(std::move(cls), make_tuple(std::move(items)), Object::Construct::Reduce));
          break;
        }

        case op::PERSID: {
          std::string_view line = read_line();
          if (!std::all_of(line.begin(), line.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
            fail("protocol 0 persistent id is not ASCII");
          }
          persistent(Value::string(std::string(line)));
          break;
        }
        case op::BINPERSID: persistent(pop()); break;

        case op::PUT: memo_put(parse_index(read_line())); break;
        case op::BINPUT: memo_put(read_le(1)); break;
        case op::LONG_BINPUT: memo_put(read_le(4)); break;
        case op::MEMOIZE: memo_put(memo_.size()); break;
        case op::GET: memo_get(parse_index(read_line())); break;
        case op::BINGET: memo_get(read_le(1)); break;
        case op::LONG_BINGET: memo_get(read_le(4)); break;

        case op::EXT1:
        case op::EXT2:
        case op::EXT4: fail("extension registry codes (EXT1/EXT2/EXT4) are unsupported");
        case op::NEXT_BUFFER:
        case op::READONLY_BUFFER: fail("out-of-band buffers (protocol 5) are unsupported");
        default: fail("unknown opcode");
      }
    }
  }

  // ---- after STOP ----

  static size_t child_count(const Value& v) {
    switch (v.kind) {
      case Kind::Tuple:
      case Kind::List:
      case Kind::Set:
      case Kind::FrozenSet: return std::get<Value::Items>(v.payload).size();
      case Kind::Dict: return 2 * std::get<Boxed<Dict>>(v.payload).get().size() + 1;
      case Kind::Object: {
        const Object& o = std::get<Boxed<Object>>(v.payload).get();
        return 4 + o.list_items.size() + 2 * o.dict_items.size();
      }
      default: return 0;
    }
  }

  static const Value* child_at(const Value& v, size_t i) {
    if (v.kind == Kind::Dict) {
      const Dict& d = std::get<Boxed<Dict>>(v.payload).get();
      if (i == 2 * d.size()) return d.state.get();
      const auto& item = d.items()[i / 2];
      return (i % 2 ? item.second : item.first).get();
    }
    if (v.kind == Kind::Object) {
      const Object& o = std::get<Boxed<Object>>(v.payload).get();
      switch (i) {
        case 0: return o.callable.get();
        case 1: return o.args.get();
        case 2: return o.kwargs.get();
        case 3: return o.state.get();
      }
      i -= 4;
      if (i < o.list_items.size()) return o.list_items[i].get();
      i -= o.list_items.size();
      const auto& item = o.dict_items[i / 2];
      return (i % 2 ? item.second : item.first).get();
    }
    return std::get<Value::Items>(v.payload)[i].get();
  }

  // For one byte, CPython's _codecs.encode argument is its cached one-character
  // str, which other parts of the pickle may reference through the memo. Such
  // bytes go back to being the call, so that writing them reproduces those
  // references (bytes used as keys stay bytes: their hash must not change).
  void keep_shared_chars() {
    for (auto& b : one_byte_bytes_) {
      if (!fetched_chars_.count(b.args->items()[0]) || hashed_bytes_.count(b.node.get())) continue;
      Object call;
      call.callable = b.callable;
      call.args = b.args;
      b.node->kind = Kind::Object;
      b.node->payload = std::move(call);
      created_.push_back(b.node);
    }
  }

  // Mutation through the memo can chain containers without the stack ever
  // growing, so nesting and cycles are checked on the finished graph, over
  // every container built (garbage included: it is destroyed on return too).
  // What passes is acyclic and at most max_depth deep, so freeing it and
  // walking it recursively later are safe.
  void check_graph() {
    constexpr size_t kOnPath = ~size_t{0};
    std::unordered_map<const Value*, size_t> depth;  // finished nesting depth, or kOnPath
    struct Frame {
      const Value* node;
      size_t next;
      size_t depth;
    };
    std::vector<Frame> path;
    auto deeper = [&](size_t& d, size_t child) {
      d = std::max(d, child + 1);
      if (d > limits_.max_depth) fail(concat("containers nested deeper than ", limits_.max_depth));
    };
    for (const auto* roots : {&created_, &foreign_}) {
      for (const auto& root : *roots) {
        if (!depth.try_emplace(root.get(), kOnPath).second) continue;
        path.push_back({root.get(), 0, 1});
        while (!path.empty()) {
          Frame& f = path.back();
          if (f.next < child_count(*f.node)) {
            const Value* child = child_at(*f.node, f.next++);
            if (!child || !is_container(child->kind)) continue;
            auto [it, fresh] = depth.try_emplace(child, kOnPath);
            if (!fresh) {
              if (it->second == kOnPath) fail("reference cycle in the object graph (unsupported)");
              deeper(f.depth, it->second);
              continue;
            }
            if (path.size() >= limits_.max_depth) fail(concat("containers nested deeper than ", limits_.max_depth));
            path.push_back({child, 0, 1});
            continue;
          }
          size_t d = f.depth;
          depth[f.node] = d;
          path.pop_back();
          if (!path.empty()) deeper(path.back().depth, d);
        }
      }
    }
  }

  // On failure the graph may be cyclic or arbitrarily deep; emptying every
  // container built here first lets it all be freed without recursion or leaks.
  void tear_down() {
    for (auto& v : created_) {
      v->payload = std::monostate{};
      v->kind = Kind::None;
    }
  }
};

}  // namespace

UnpickleResult unpickle(std::string_view data, const UnpickleHooks& hooks, const UnpickleLimits& limits) {
  return Reader(data, hooks, limits).run();
}

}  // namespace fabricckpt
