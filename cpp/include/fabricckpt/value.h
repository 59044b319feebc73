// The Python object model that checkpoints are made of.
//
// A checkpoint is a tree (a DAG: pickle memo references share nodes) of
// Values. Node identity matters: the pickle writer memoizes by node, exactly as
// CPython's pickler memoizes by object id, so a tree read from a file and
// written back reproduces the same memo references and the same bytes.
//
// Tensors and storages are held through forward-declared libtorch types so that
// the format code does not pull in the ATen headers.
//
// Nodes are compact (a hostile pickle of a million Nones must not cost a
// million large nodes): the rare, large payloads (dicts, objects, globals,
// tensors, storages) live behind a pointer, and the immutable values CPython
// keeps as singletons (None, True, False, the small ints -5..256) are one shared
// node each. That sharing is invisible to the pickle writer, which never
// memoizes those values (CPython's pickler does not either).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace at {
class Tensor;
}

namespace fabricckpt {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

enum class Kind : int {
  None = 0,
  Bool = 1,
  Int = 2,       // fits in int64
  BigInt = 3,    // any other Python int: little-endian two's complement bytes (LONG1 payload)
  Float = 4,
  String = 5,    // UTF-8
  Bytes = 6,
  Tuple = 7,
  List = 8,
  Dict = 9,      // dict or collections.OrderedDict (see Dict::ordered)
  Set = 10,
  FrozenSet = 11,
  Global = 12,   // a reference to a module-level name: a class, function or constant
  Object = 13,   // any other object, kept as the recipe that builds it
  Tensor = 14,
  Storage = 15,  // a torch storage met while (un)pickling; never left in a finished tree
};

const char* kind_name(Kind kind);

// A module-level name such as collections.OrderedDict or torch.float32.
struct GlobalRef {
  std::string module;
  std::string name;
};

// Insertion-ordered mapping with Python key equality.
class Dict {
 public:
  bool ordered = false;  // collections.OrderedDict instead of dict
  ValuePtr state;        // BUILD state of an OrderedDict (state_dict()'s {'_metadata': ...}); null if none

  const std::vector<std::pair<ValuePtr, ValuePtr>>& items() const { return items_; }
  size_t size() const { return items_.size(); }
  // Python d[key] = value: replaces in place when the key exists, else appends.
  void set(ValuePtr key, ValuePtr value);
  // Returns the value for the key or null.
  ValuePtr get(const Value& key) const;
  ValuePtr get(std::string_view key) const;
  // Removes the key, keeping the order of the rest; false if absent.
  bool erase(const Value& key);

 private:
  std::vector<std::pair<ValuePtr, ValuePtr>> items_;
  std::unordered_multimap<size_t, size_t> index_;  // key hash -> position in items_
  void reindex();
};

// An object the library does not model, kept as the pickle recipe that builds it
// so that it survives a round trip: callable(*args) or cls.__new__(cls, *args),
// then BUILD(state), APPENDS(list_items), SETITEMS(dict_items).
struct Object {
  enum class Construct { Reduce, NewObj, NewObjEx };
  Construct construct = Construct::Reduce;
  ValuePtr callable;  // Global (or any value for REDUCE of a computed callable)
  ValuePtr args;      // Tuple
  ValuePtr kwargs;    // Dict, NEWOBJ_EX only
  ValuePtr state;     // null when no BUILD
  std::vector<ValuePtr> list_items;
  std::vector<std::pair<ValuePtr, ValuePtr>> dict_items;
};

// A tensor as torch.save records it.
struct TensorRef {
  std::shared_ptr<at::Tensor> tensor;  // always a CPU tensor
  bool requires_grad = false;
  bool is_parameter = false;  // torch.nn.Parameter (rebuilt with _rebuild_parameter)
  std::string location = "cpu";  // location tag in the file ("cuda:0" for tensors saved on a GPU)
};

// A storage met while reading a pickle (persistent id) before a tensor wraps it.
// The torch layer owns the concrete type.
struct StorageRef {
  std::shared_ptr<void> storage;  // the torch layer's storage object
  std::string type_name;          // e.g. "FloatStorage"
};

// A heap-held payload: keeps Value small. Copies are deep (value semantics);
// a moved-from Boxed is empty and only fit to be assigned to or destroyed.
template <typename T>
class Boxed {
 public:
  Boxed() : p_(std::make_unique<T>()) {}
  Boxed(T v) : p_(std::make_unique<T>(std::move(v))) {}  // NOLINT: implicit, so a T assigns to a Payload
  Boxed(const Boxed& o) : p_(std::make_unique<T>(*o.p_)) {}
  Boxed(Boxed&&) noexcept = default;
  Boxed& operator=(const Boxed& o) {
    if (this != &o) p_ = std::make_unique<T>(*o.p_);
    return *this;
  }
  Boxed& operator=(Boxed&&) noexcept = default;
  T& get() const { return *p_; }

 private:
  std::unique_ptr<T> p_;
};

struct Value {
  using Items = std::vector<ValuePtr>;
  using Payload = std::variant<std::monostate, bool, int64_t, double, std::string, Items, Boxed<Dict>,
                               Boxed<GlobalRef>, Boxed<Object>, Boxed<TensorRef>, Boxed<StorageRef>>;
  Kind kind = Kind::None;
  Payload payload;

  // Factories. Every call makes a new node (a new Python object), except
  // none(), boolean() and integer() of -5..256, which return CPython's
  // singletons: one shared node each, never to be changed in place.
  static ValuePtr none();
  static ValuePtr boolean(bool v);
  static ValuePtr integer(int64_t v);
  static ValuePtr big_integer(std::string twos_complement_le);  // normalised to Int when it fits
  static ValuePtr floating(double v);
  static ValuePtr string(std::string utf8);
  static ValuePtr bytes(std::string data);
  static ValuePtr tuple(Items items = {});
  static ValuePtr list(Items items = {});
  static ValuePtr set(Items items = {});
  static ValuePtr frozenset(Items items = {});
  static ValuePtr plain_dict();  // a dict; named apart from the dict() accessor, which it cannot overload
  static ValuePtr ordered_dict();
  static ValuePtr global(std::string module, std::string name);
  static ValuePtr object(Object obj);
  static ValuePtr tensor(TensorRef t);
  static ValuePtr storage(StorageRef s);

  bool is(Kind k) const { return kind == k; }
  // Checked accessors: throw FormatError naming the expected and actual kinds.
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;  // Float, or Int converted
  const std::string& as_string() const;  // String or Bytes or BigInt payload
  const Items& items() const;            // Tuple, List, Set, FrozenSet
  Items& items();
  const Dict& dict() const;
  Dict& dict();
  const GlobalRef& global_ref() const;
  const Object& object_ref() const;
  Object& object_ref();
  const TensorRef& tensor_ref() const;
  TensorRef& tensor_ref();
  const StorageRef& storage_ref() const;
};

// Python's == for values usable as dict keys (numbers, strings, bytes, tuples, None).
bool keys_equal(const Value& a, const Value& b);
size_t key_hash(const Value& v);

// Appends the nodes `v` refers to (container items, dict keys and values and the dict's state, an
// object's callable, args, kwargs, state and items) to `out`: for walks over a tree.
void push_children(const Value& v, std::vector<const Value*>& out);

// A short human-readable rendering for error messages and the CLI (not a repr round trip).
std::string describe(const Value& v, size_t max_length = 80);

}  // namespace fabricckpt
