// Protocol 2 pickle writer that makes CPython's C pickler's choices: the same
// opcodes, the same batching, memo ids assigned in the same order. Python
// object identity is node identity here, so a tree read by unpickle() is
// written back byte for byte. The writer keeps its own job stack instead of
// recursing, so deep graphs cannot overflow the C++ stack.
#include <algorithm>
#include <bit>
#include <deque>
#include <optional>
#include <unordered_map>

#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

namespace op {
constexpr char MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', BININT = 'J', BININT1 = 'K', BININT2 = 'M',
               NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b',
               GLOBAL = 'c', EMPTY_DICT = '}', APPENDS = 'e', BINGET = 'h', LONG_BINGET = 'j', EMPTY_LIST = ']',
               BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u',
               BINFLOAT = 'G';
constexpr char PROTO = '\x80', NEWOBJ = '\x81', TUPLE1 = '\x85', NEWTRUE = '\x88', NEWFALSE = '\x89',
               LONG1 = '\x8a', LONG4 = '\x8b', NEWOBJ_EX = '\x92';
}  // namespace op

constexpr size_t kBatchSize = 1000;       // CPython's BATCHSIZE
constexpr size_t kMaxOpenJobs = 1000000;  // structural jobs pending: a guard against recursive graphs

// Protocols below 3 write Python 2 names (CPython's fix_imports with
// _compat_pickle's REVERSE_NAME_MAPPING, then REVERSE_IMPORT_MAPPING).
struct NameFix {
  const char* module;
  const char* name;
  const char* py2_module;
  const char* py2_name;
};

constexpr NameFix kNameFixes[] = {
    {"_functools", "reduce", "__builtin__", "reduce"},
    {"_socket", "socket", "socket", "_socketobject"},
    {"builtins", "BrokenPipeError", "exceptions", "OSError"},
    {"builtins", "ChildProcessError", "exceptions", "OSError"},
    {"builtins", "ConnectionAbortedError", "exceptions", "OSError"},
    {"builtins", "ConnectionError", "exceptions", "OSError"},
    {"builtins", "ConnectionRefusedError", "exceptions", "OSError"},
    {"builtins", "ConnectionResetError", "exceptions", "OSError"},
    {"builtins", "FileExistsError", "exceptions", "OSError"},
    {"builtins", "FileNotFoundError", "exceptions", "OSError"},
    {"builtins", "InterruptedError", "exceptions", "OSError"},
    {"builtins", "IsADirectoryError", "exceptions", "OSError"},
    {"builtins", "ModuleNotFoundError", "exceptions", "ImportError"},
    {"builtins", "NotADirectoryError", "exceptions", "OSError"},
    {"builtins", "PermissionError", "exceptions", "OSError"},
    {"builtins", "ProcessLookupError", "exceptions", "OSError"},
    {"builtins", "TimeoutError", "exceptions", "OSError"},
    {"builtins", "chr", "__builtin__", "unichr"},
    {"builtins", "filter", "itertools", "ifilter"},
    {"builtins", "int", "__builtin__", "long"},
    {"builtins", "map", "itertools", "imap"},
    {"builtins", "range", "__builtin__", "xrange"},
    {"builtins", "str", "__builtin__", "unicode"},
    {"builtins", "zip", "itertools", "izip"},
    {"collections", "UserDict", "UserDict", "IterableUserDict"},
    {"collections", "UserList", "UserList", "UserList"},
    {"collections", "UserString", "UserString", "UserString"},
    {"dbm", "whichdb", "whichdb", "whichdb"},
    {"functools", "reduce", "__builtin__", "reduce"},
    {"http.server", "CGIHTTPRequestHandler", "CGIHTTPServer", "CGIHTTPRequestHandler"},
    {"http.server", "SimpleHTTPRequestHandler", "SimpleHTTPServer", "SimpleHTTPRequestHandler"},
    {"itertools", "filterfalse", "itertools", "ifilterfalse"},
    {"itertools", "zip_longest", "itertools", "izip_longest"},
    {"multiprocessing.connection", "Connection", "_multiprocessing", "Connection"},
    {"multiprocessing.context", "AuthenticationError", "multiprocessing", "AuthenticationError"},
    {"multiprocessing.context", "BufferTooShort", "multiprocessing", "BufferTooShort"},
    {"multiprocessing.context", "Process", "multiprocessing.process", "Process"},
    {"multiprocessing.context", "ProcessError", "multiprocessing", "ProcessError"},
    {"multiprocessing.context", "TimeoutError", "multiprocessing", "TimeoutError"},
    {"multiprocessing.popen_fork", "Popen", "multiprocessing.forking", "Popen"},
    {"socket", "fromfd", "_socket", "fromfd"},
    {"sys", "intern", "__builtin__", "intern"},
    {"tkinter.filedialog", "FileDialog", "FileDialog", "FileDialog"},
    {"tkinter.filedialog", "LoadFileDialog", "FileDialog", "LoadFileDialog"},
    {"tkinter.filedialog", "SaveFileDialog", "FileDialog", "SaveFileDialog"},
    {"tkinter.simpledialog", "SimpleDialog", "SimpleDialog", "SimpleDialog"},
    {"urllib.error", "ContentTooShortError", "urllib", "ContentTooShortError"},
    {"urllib.error", "HTTPError", "urllib2", "HTTPError"},
    {"urllib.error", "URLError", "urllib2", "URLError"},
    {"urllib.parse", "quote", "urllib", "quote"},
    {"urllib.parse", "quote_plus", "urllib", "quote_plus"},
    {"urllib.parse", "unquote", "urllib", "unquote"},
    {"urllib.parse", "unquote_plus", "urllib", "unquote_plus"},
    {"urllib.parse", "urlencode", "urllib", "urlencode"},
    {"urllib.request", "getproxies", "urllib", "getproxies"},
    {"urllib.request", "pathname2url", "urllib", "pathname2url"},
    {"urllib.request", "url2pathname", "urllib", "url2pathname"},
    {"urllib.request", "urlcleanup", "urllib", "urlcleanup"},
    {"urllib.request", "urlopen", "urllib", "urlopen"},
    {"urllib.request", "urlretrieve", "urllib", "urlretrieve"},
    {"xmlrpc.server", "DocCGIXMLRPCRequestHandler", "DocXMLRPCServer", "DocCGIXMLRPCRequestHandler"},
    {"xmlrpc.server", "DocXMLRPCRequestHandler", "DocXMLRPCServer", "DocXMLRPCRequestHandler"},
    {"xmlrpc.server", "DocXMLRPCServer", "DocXMLRPCServer", "DocXMLRPCServer"},
    {"xmlrpc.server", "ServerHTMLDoc", "DocXMLRPCServer", "ServerHTMLDoc"},
    {"xmlrpc.server", "XMLRPCDocGenerator", "DocXMLRPCServer", "XMLRPCDocGenerator"},
};

// builtins.<name> -> exceptions.<name>, the rest of REVERSE_NAME_MAPPING.
constexpr const char* kPython2Exceptions[] = {
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError", "BytesWarning",
    "DeprecationWarning", "EOFError", "EnvironmentError", "Exception", "FloatingPointError", "FutureWarning",
    "GeneratorExit", "IOError", "ImportError", "ImportWarning", "IndentationError", "IndexError", "KeyError",
    "KeyboardInterrupt", "LookupError", "MemoryError", "NameError", "NotImplementedError", "OSError",
    "OverflowError", "PendingDeprecationWarning", "ReferenceError", "RuntimeError", "RuntimeWarning",
    "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "SystemExit", "TabError", "TypeError",
    "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError", "UnicodeTranslateError",
    "UnicodeWarning", "UserWarning", "ValueError", "Warning", "ZeroDivisionError",
};

constexpr std::pair<const char*, const char*> kModuleFixes[] = {
    {"_bz2", "bz2"}, {"_dbm", "dbm"}, {"_dummy_thread", "dummy_thread"}, {"_functools", "functools"},
    {"_gdbm", "gdbm"}, {"_markupbase", "markupbase"}, {"_pickle", "pickle"}, {"_thread", "thread"},
    {"builtins", "__builtin__"}, {"collections.abc", "_abcoll"}, {"configparser", "ConfigParser"},
    {"copyreg", "copy_reg"}, {"dbm", "anydbm"}, {"dbm.bsd", "dbhash"}, {"dbm.dumb", "dumbdbm"},
    {"dbm.gnu", "gdbm"}, {"dbm.ndbm", "dbm"}, {"html.entities", "htmlentitydefs"},
    {"html.parser", "HTMLParser"}, {"http.client", "httplib"}, {"http.cookiejar", "cookielib"},
    {"http.cookies", "Cookie"}, {"http.server", "BaseHTTPServer"}, {"queue", "Queue"}, {"reprlib", "repr"},
    {"socketserver", "SocketServer"}, {"subprocess", "commands"}, {"test.support", "test.test_support"},
    {"tkinter", "Tkinter"}, {"tkinter.colorchooser", "tkColorChooser"},
    {"tkinter.commondialog", "tkCommonDialog"}, {"tkinter.constants", "Tkconstants"},
    {"tkinter.dialog", "Dialog"}, {"tkinter.dnd", "Tkdnd"}, {"tkinter.filedialog", "tkFileDialog"},
    {"tkinter.font", "tkFont"}, {"tkinter.messagebox", "tkMessageBox"},
    {"tkinter.scrolledtext", "ScrolledText"}, {"tkinter.simpledialog", "tkSimpleDialog"},
    {"tkinter.tix", "Tix"}, {"tkinter.ttk", "ttk"}, {"urllib.parse", "urlparse"},
    {"urllib.request", "urllib2"}, {"urllib.robotparser", "robotparser"}, {"winreg", "_winreg"},
    {"xmlrpc.client", "xmlrpclib"}, {"xmlrpc.server", "SimpleXMLRPCServer"},
};

std::pair<std::string, std::string> python2_name(const std::string& module, const std::string& name) {
  for (const auto& fix : kNameFixes) {
    if (module == fix.module && name == fix.name) return {fix.py2_module, fix.py2_name};
  }
  if (module == "builtins") {
    for (const char* exception : kPython2Exceptions) {
      if (name == exception) return {"exceptions", name};
    }
  }
  for (const auto& [py3, py2] : kModuleFixes) {
    if (module == py3) return {py2, name};
  }
  return {module, name};
}

void append_utf8_latin1(std::string& out, uint8_t b) {
  if (b < 0x80) {
    out += static_cast<char>(b);
  } else {
    out += static_cast<char>(0xc0 | (b >> 6));
    out += static_cast<char>(0x80 | (b & 0x3f));
  }
}

// Minimal little-endian two's complement, as CPython's encode_long.
std::string twos_complement(int64_t v) {
  std::string bytes;
  auto u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>(static_cast<uint8_t>(u >> (8 * i)));
  while (bytes.size() > 1) {
    auto top = static_cast<uint8_t>(bytes.back());
    auto next = static_cast<uint8_t>(bytes[bytes.size() - 2]);
    if (!((top == 0x00 && !(next & 0x80)) || (top == 0xff && (next & 0x80)))) break;
    bytes.pop_back();
  }
  return bytes;
}

class Writer {
 public:
  explicit Writer(const PickleHooks& hooks) : hooks_(hooks) {}

  std::string run(const ValuePtr& root) {
    out_ += op::PROTO;
    out_ += '\x02';
    push_save(&root);
    while (!jobs_.empty()) {
      Job job = jobs_.back();
      jobs_.pop_back();
      if (job.task != Task::Save) --open_jobs_;
      execute(job);
    }
    out_ += op::STOP;
    return std::move(out_);
  }

 private:
  enum class Task : uint8_t { Save, Opcode, PutFresh, Latin1, EndTuple, EndReduce, Batch };
  enum class Seq : uint8_t { Items, ObjectListItems, DictItems, ObjectDictItems };
  struct Job {
    Task task;
    const ValuePtr* slot = nullptr;  // Save: where the value sits (hooks take the ValuePtr)
    const Value* node = nullptr;     // the container the job belongs to
    const Value* key = nullptr;      // EndReduce: the identity memoized (a tensor, for its substitute)
    char opcode = 0;
    Seq seq = Seq::Items;
    bool exact = false;  // Batch: CPython's fast path for exact lists and dicts batches differently
    size_t start = 0;
  };

  const PickleHooks& hooks_;
  std::string out_;
  std::vector<Job> jobs_;  // run last-pushed first
  size_t open_jobs_ = 0;
  std::unordered_map<const Value*, uint32_t> memo_;
  std::unordered_map<std::string, uint32_t> value_memo_;   // singletons in CPython, see memo_key
  std::unordered_map<std::string, uint32_t> global_memo_;  // "module\nname": a class is one object
  std::optional<uint32_t> latin1_id_;                      // the interned 'latin1' of bytes reductions
  uint32_t next_id_ = 0;
  std::deque<ValuePtr> keep_alive_;  // hook results: memoized by address, and Save jobs point into it

  // ---- job stack ----

  void push(Job job) {
    if (job.task != Task::Save && ++open_jobs_ > kMaxOpenJobs) {
      throw Error("pickle: object graph too deep to write (or recursive through tuples or reductions)");
    }
    jobs_.push_back(job);
  }

  void push_save(const ValuePtr* slot) { push({Task::Save, slot}); }
  void push_opcode(char opcode) { push({.task = Task::Opcode, .opcode = opcode}); }

  void execute(const Job& job) {
    switch (job.task) {
      case Task::Save: save(*job.slot); break;
      case Task::Opcode: out_ += job.opcode; break;
      case Task::PutFresh: put(next_id_++); break;
      case Task::Latin1: save_latin1(); break;
      case Task::EndTuple: end_tuple(*job.node); break;
      case Task::EndReduce: end_reduce(*job.node, *job.key); break;
      case Task::Batch: batch(job); break;
    }
  }

  // ---- output ----

  void write_le(uint64_t v, int width) {
    for (int i = 0; i < width; ++i) out_ += static_cast<char>(static_cast<uint8_t>(v >> (8 * i)));
  }

  void put(uint32_t id) {
    if (id < 256) {
      out_ += op::BINPUT;
      write_le(id, 1);
    } else {
      out_ += op::LONG_BINPUT;
      write_le(id, 4);
    }
  }

  void get(uint32_t id) {
    if (id < 256) {
      out_ += op::BINGET;
      write_le(id, 1);
    } else {
      out_ += op::LONG_BINGET;
      write_le(id, 4);
    }
  }

  void write_int(int64_t v) {
    if (v >= 0 && v <= 0xff) {
      out_ += op::BININT1;
      write_le(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v <= 0xffff) {
      out_ += op::BININT2;
      write_le(static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += op::BININT;
      write_le(static_cast<uint64_t>(v), 4);
    } else {
      write_long(twos_complement(v));
    }
  }

  void write_long(const std::string& bytes) {
    if (bytes.size() <= 0xff) {
      out_ += op::LONG1;
      write_le(bytes.size(), 1);
    } else {
      out_ += op::LONG4;
      write_le(bytes.size(), 4);
    }
    out_ += bytes;
  }

  void write_unicode(const std::string& utf8) {
    if (utf8.size() > 0xffffffffu) throw Error("pickle: string longer than 4 GiB cannot be written at protocol 2");
    out_ += op::BINUNICODE;
    write_le(utf8.size(), 4);
    out_ += utf8;
  }

  void write_global(const std::string& module, const std::string& name) {
    auto [py2_module, py2_name] = python2_name(module, name);
    if (py2_module.find('\n') != std::string::npos || py2_name.find('\n') != std::string::npos) {
      throw Error(concat("pickle: global name ", module, ".", name, " contains a newline"));
    }
    std::string key = py2_module + '\n' + py2_name;
    if (auto it = global_memo_.find(key); it != global_memo_.end()) {
      get(it->second);
      return;
    }
    out_ += op::GLOBAL;
    out_ += key;
    out_ += '\n';
    global_memo_.emplace(std::move(key), next_id_);
    put(next_id_++);
  }

  // ---- memo ----

  // CPython's empty str and empty bytes are singletons, so equal ones are one
  // object there and are memoized by value here.
  static std::optional<std::string> memo_key(const Value& v) {
    if (v.kind == Kind::String && std::get<std::string>(v.payload).empty()) return std::string("s");
    if (v.kind == Kind::Bytes && std::get<std::string>(v.payload).empty()) return std::string("b");
    return std::nullopt;
  }

  std::optional<uint32_t> memo_id(const Value& v) const {
    if (auto key = memo_key(v)) {
      auto it = value_memo_.find(*key);
      if (it != value_memo_.end()) return it->second;
      return std::nullopt;
    }
    auto it = memo_.find(&v);
    if (it != memo_.end()) return it->second;
    return std::nullopt;
  }

  bool get_if_memoized(const Value& v) {
    auto id = memo_id(v);
    if (id) get(*id);
    return id.has_value();
  }

  void memoize(const Value& v) {
    if (auto key = memo_key(v)) value_memo_.emplace(std::move(*key), next_id_);
    else memo_.emplace(&v, next_id_);
    put(next_id_++);
  }

  // ---- values ----

  void save(const ValuePtr& slot) {
    if (!slot) throw Error("pickle: null value in the object graph");
    const Value& v = *slot;
    switch (v.kind) {
      case Kind::None: out_ += op::NONE; return;
      case Kind::Bool: out_ += std::get<bool>(v.payload) ? op::NEWTRUE : op::NEWFALSE; return;
      case Kind::Int: write_int(std::get<int64_t>(v.payload)); return;
      case Kind::BigInt: write_long(std::get<std::string>(v.payload)); return;
      case Kind::Float: {
        auto bits = std::bit_cast<uint64_t>(std::get<double>(v.payload));  // big-endian, as PyFloat_Pack8
        out_ += op::BINFLOAT;
        for (int i = 7; i >= 0; --i) out_ += static_cast<char>(bits >> (8 * i));
        return;
      }
      case Kind::Global: {
        const GlobalRef& g = std::get<Boxed<GlobalRef>>(v.payload).get();
        write_global(g.module, g.name);
        return;
      }
      case Kind::Storage: {
        if (!hooks_.persistent_id) throw Error("pickle: a storage in the object graph but no persistent_id hook");
        ValuePtr pid = hooks_.persistent_id(slot);
        if (!pid) throw Error("pickle: persistent_id hook returned nothing for a storage");
        keep_alive_.push_back(std::move(pid));
        push_opcode(op::BINPERSID);
        push_save(&keep_alive_.back());
        return;
      }
      default: break;
    }
    if (get_if_memoized(v)) return;
    switch (v.kind) {
      case Kind::String:
        write_unicode(std::get<std::string>(v.payload));
        memoize(v);
        return;
      case Kind::Bytes: save_bytes(v); return;
      case Kind::Tuple: save_tuple(v); return;
      case Kind::List:
        out_ += op::EMPTY_LIST;
        memoize(v);
        if (!v.items().empty()) push({.task = Task::Batch, .node = &v, .seq = Seq::Items, .exact = true});
        return;
      case Kind::Dict:
        if (v.dict().ordered) {
          // OrderedDict.__reduce__: (OrderedDict, (), state, None, iter(items)).
          write_global("collections", "OrderedDict");
          out_ += op::EMPTY_TUPLE;
          out_ += op::REDUCE;
          end_reduce(v, v);
        } else {
          out_ += op::EMPTY_DICT;
          memoize(v);
          if (v.dict().size()) push({.task = Task::Batch, .node = &v, .seq = Seq::DictItems, .exact = true});
        }
        return;
      case Kind::Set:
      case Kind::FrozenSet:
        // Below protocol 4: (set, (list(items),)) through save_reduce.
        write_global("builtins", v.kind == Kind::Set ? "set" : "frozenset");
        out_ += op::EMPTY_LIST;
        put(next_id_++);
        push({.task = Task::EndReduce, .node = &v, .key = &v});
        push_opcode(op::REDUCE);
        push({.task = Task::PutFresh});
        push_opcode(op::TUPLE1);
        if (!v.items().empty()) push({.task = Task::Batch, .node = &v, .seq = Seq::Items, .exact = true});
        return;
      case Kind::Object: schedule_reduce(v, v); return;
      case Kind::Tensor: {
        if (!hooks_.tensor_reduce) throw Error("pickle: a tensor in the object graph but no tensor_reduce hook");
        ValuePtr recipe = hooks_.tensor_reduce(slot);
        if (!recipe || recipe->kind != Kind::Object) throw Error("pickle: tensor_reduce hook must return an object");
        keep_alive_.push_back(recipe);
        schedule_reduce(*recipe, v);
        return;
      }
      default: throw Error(concat("pickle: cannot write a ", kind_name(v.kind)));
    }
  }

  // Python 3 bytes at protocol 2 (CPython's save_bytes): bytes() when empty,
  // else _codecs.encode(<the bytes decoded as Latin-1>, 'latin1').
  void save_bytes(const Value& v) {
    const std::string& data = std::get<std::string>(v.payload);
    if (data.empty()) {
      write_global("builtins", "bytes");
      out_ += op::EMPTY_TUPLE;
    } else {
      write_global("_codecs", "encode");
      std::string text;
      for (char c : data) append_utf8_latin1(text, static_cast<uint8_t>(c));
      write_unicode(text);
      put(next_id_++);
      save_latin1();
      out_ += static_cast<char>(op::TUPLE1 + 1);
      put(next_id_++);
    }
    out_ += op::REDUCE;
    memoize(v);
  }

  // The encoding name of bytes reductions: one interned str in CPython.
  void save_latin1() {
    if (latin1_id_) {
      get(*latin1_id_);
    } else {
      write_unicode("latin1");
      latin1_id_ = next_id_;
      put(next_id_++);
    }
  }

  // _codecs.encode(text, 'latin1') kept as an Object by the reader (see
  // pickle_reader.cpp): its 'latin1' is the interned one of the bytes reductions.
  static bool is_latin1_encode(const Object& o) {
    if (o.construct != Object::Construct::Reduce || !o.callable || o.callable->kind != Kind::Global) return false;
    const GlobalRef& g = std::get<Boxed<GlobalRef>>(o.callable->payload).get();
    if (g.module != "_codecs" || g.name != "encode" || o.args->kind != Kind::Tuple) return false;
    const auto& args = std::get<Value::Items>(o.args->payload);
    return args.size() == 2 && args[1] && args[1]->kind == Kind::String &&
           std::get<std::string>(args[1]->payload) == "latin1";
  }

  void save_tuple(const Value& v) {
    const auto& items = v.items();
    if (items.empty()) {
      out_ += op::EMPTY_TUPLE;  // the empty tuple is never memoized
      return;
    }
    if (items.size() > 3) out_ += op::MARK;
    push({.task = Task::EndTuple, .node = &v});
    for (size_t i = items.size(); i-- > 0;) push_save(&items[i]);
  }

  void end_tuple(const Value& v) {
    size_t n = v.items().size();
    // The tuple got memoized while its items were written: it is recursive.
    // CPython then drops what it pushed and fetches the memoized tuple.
    if (auto id = memo_id(v)) {
      if (n <= 3) out_.append(n, op::POP);
      else out_ += op::POP_MARK;
      get(*id);
      return;
    }
    out_ += n <= 3 ? static_cast<char>(op::TUPLE1 + n - 1) : op::TUPLE;
    memoize(v);
  }

  void schedule_reduce(const Value& recipe, const Value& key) {
    const Object& o = std::get<Boxed<Object>>(recipe.payload).get();
    if (!o.callable || !o.args) throw Error("pickle: object without a callable or arguments");
    push({.task = Task::EndReduce, .node = &recipe, .key = &key});
    switch (o.construct) {
      case Object::Construct::Reduce: push_opcode(op::REDUCE); break;
      case Object::Construct::NewObj: push_opcode(op::NEWOBJ); break;
      case Object::Construct::NewObjEx:
        // Protocol 2 has no NEWOBJ_EX; CPython would go through functools.partial.
        // The opcode is kept so that such an object survives a round trip.
        if (!o.kwargs) throw Error("pickle: NEWOBJ_EX object without keyword arguments");
        push_opcode(op::NEWOBJ_EX);
        push_save(&o.kwargs);
        break;
    }
    if (is_latin1_encode(o) && !memo_id(*o.args)) {
      push({.task = Task::EndTuple, .node = o.args.get()});
      push({.task = Task::Latin1});
      push_save(&o.args->items()[0]);
    } else {
      push_save(&o.args);
    }
    push_save(&o.callable);
  }

  // After REDUCE/NEWOBJ: memoize, then list items, dict items, BUILD state,
  // in save_reduce's order.
  void end_reduce(const Value& node, const Value& key) {
    if (auto id = memo_id(key)) {  // recursive reduction: CPython drops the result and fetches the memo
      out_ += op::POP;
      get(*id);
      return;
    }
    memoize(key);
    const ValuePtr* state = nullptr;
    bool list_items = false, dict_items = false;
    if (node.kind == Kind::Object) {
      const Object& o = std::get<Boxed<Object>>(node.payload).get();
      state = o.state ? &o.state : nullptr;
      list_items = !o.list_items.empty();
      dict_items = !o.dict_items.empty();
    } else if (node.kind == Kind::Dict) {
      const Dict& d = std::get<Boxed<Dict>>(node.payload).get();
      state = d.state ? &d.state : nullptr;
      dict_items = d.size() > 0;
    }
    if (state) {
      push_opcode(op::BUILD);
      push_save(state);
    }
    Seq dict_seq = node.kind == Kind::Object ? Seq::ObjectDictItems : Seq::DictItems;
    if (dict_items) push({.task = Task::Batch, .node = &node, .seq = dict_seq});
    if (list_items) push({.task = Task::Batch, .node = &node, .seq = Seq::ObjectListItems});
  }

  // One batch of APPENDS/SETITEMS (or a lone APPEND/SETITEM), scheduling the
  // next. CPython's exact-list and exact-dict paths use the single form only
  // for a one-item container, and the exact-dict path ends only after a short
  // batch (so 1000 items get a trailing empty MARK SETITEMS); the generic
  // iterator path uses the single form for a last lone item.
  void batch(const Job& job) {
    const Value& node = *job.node;
    const Value::Items* items = nullptr;
    const std::vector<std::pair<ValuePtr, ValuePtr>>* pairs = nullptr;
    switch (job.seq) {
      case Seq::Items: items = &node.items(); break;
      case Seq::ObjectListItems: items = &node.object_ref().list_items; break;
      case Seq::DictItems: pairs = &node.dict().items(); break;
      case Seq::ObjectDictItems: pairs = &node.object_ref().dict_items; break;
    }
    size_t n = items ? items->size() : pairs->size();
    size_t start = job.start;
    auto push_element = [&](size_t i) {
      if (items) {
        push_save(&(*items)[i]);
      } else {
        push_save(&(*pairs)[i].second);
        push_save(&(*pairs)[i].first);
      }
    };
    if (job.exact ? n == 1 : n - start == 1) {
      push_opcode(items ? op::APPEND : op::SETITEM);
      push_element(start);
      return;
    }
    size_t end = std::min(n, start + kBatchSize);
    bool more = job.exact && pairs ? end - start == kBatchSize : end < n;
    out_ += op::MARK;
    if (more) {
      Job next = job;
      next.start = end;
      push(next);
    }
    push_opcode(items ? op::APPENDS : op::SETITEMS);
    for (size_t i = end; i-- > start;) push_element(i);
  }
};

}  // namespace

std::string pickle(const ValuePtr& root, const PickleHooks& hooks) { return Writer(hooks).run(root); }

std::pair<std::string, std::string> python2_global_name(const std::string& module, const std::string& name) {
  return python2_name(module, name);
}

}  // namespace fabricckpt
