// Globals outside torch 2.10's weights_only allowlist (issue 9, item 5): listed as torch lists
// them, found with where they sit before a write, and the two scans agree on what the writer emits.
#include "fabricckpt/safety.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

const std::string kPickles = std::string(FABRICCKPT_TEST_DATA) + "/pickle/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ValuePtr object(Object::Construct how, ValuePtr callable, Value::Items args) {
  Object o;
  o.construct = how;
  o.callable = std::move(callable);
  o.args = Value::tuple(std::move(args));
  return Value::object(std::move(o));
}

TEST(SafeGlobals, AllowlistIsTorchs) {
  const auto allowlist = weights_only_allowlist();
  EXPECT_EQ(allowlist.size(), 144u);  // len(_get_allowed_globals()) in torch 2.10.0
  EXPECT_TRUE(std::is_sorted(allowlist.begin(), allowlist.end()));  // looked up by binary search
  for (const char* ok : {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                         "torch.storage.UntypedStorage", "torch.bfloat16", "builtins.set", "_codecs.encode",
                         "torch.nn.parameter.Parameter", "torch._utils._rebuild_parameter"}) {
    EXPECT_TRUE(is_weights_only_global(ok)) << ok;
  }
  for (const char* refused : {"argparse.Namespace", "posix.system", "builtins.eval", "builtins.frozenset",
                              "builtins.bytes", "subprocess.Popen", "torch.load", "collections.defaultdict"}) {
    EXPECT_FALSE(is_weights_only_global(refused)) << refused;
  }
}

TEST(SafeGlobals, PythonTwoNamesAreReadAsTorchReadsThem) {
  EXPECT_EQ(python3_global_name("__builtin__", "set"), "builtins.set");
  EXPECT_EQ(python3_global_name("__builtin__", "long"), "builtins.int");
  EXPECT_EQ(python3_global_name("copy_reg", "_reconstructor"), "copyreg._reconstructor");
  EXPECT_EQ(python3_global_name("exceptions", "ValueError"), "exceptions.ValueError");  // torch's own table
  EXPECT_EQ(python3_global_name("argparse", "Namespace"), "argparse.Namespace");
}

TEST(SafeGlobals, PythonPicklesListWhatTorchLists) {
  // The expectations are torch 2.10's: get_globals_in_pkl(file) minus _get_allowed_globals().
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(unsafe_globals_in_pickle(read_file(kPickles + "w_globals.pkl"))),
            (std::vector<std::string>{"builtins.int", "builtins.str", "exceptions.ValueError"}));
  EXPECT_EQ(unsafe_globals_in_pickle(read_file(kPickles + "w_namespace.pkl")),
            std::vector<std::string>{"argparse.Namespace"});
  EXPECT_EQ(unsafe_globals_in_pickle(read_file(kPickles + "w_sets.pkl")),
            std::vector<std::string>{"builtins.frozenset"});
  EXPECT_EQ(unsafe_globals_in_pickle(read_file(kPickles + "w_bytes.pkl")), std::vector<std::string>{"builtins.bytes"});
  EXPECT_TRUE(unsafe_globals_in_pickle(read_file(kPickles + "w_ordered.pkl")).empty());
  // Protocol 4 (STACK_GLOBAL), which torch's scan cannot read, and protocol 0 (GLOBAL lines, INST).
  for (const char* name : {"nested_p0.pkl", "nested_p4.pkl"}) {
    auto found = unsafe_globals_in_pickle(read_file(kPickles + name));
    EXPECT_NE(std::find(found.begin(), found.end(), "argparse.Namespace"), found.end()) << name;
  }
}

TEST(SafeGlobals, GarbageGlobalsCountToo) {
  // posix.system pushed and popped again: nothing in the tree, but the file names it.
  const std::string p = "\x80\x02" "cposix\nsystem\n0N.";
  EXPECT_EQ(unsafe_globals_in_pickle(p), std::vector<std::string>{"posix.system"});
}

ValuePtr hostile_tree() {
  ValuePtr root = Value::plain_dict();
  Dict& d = root->dict();
  d.set(Value::string("model"), Value::ordered_dict());
  d.set(Value::string("dtype"), Value::global("torch", "float32"));
  d.set(Value::string("hparams"), object(Object::Construct::NewObj, Value::global("argparse", "Namespace"), {}));
  ValuePtr call = object(Object::Construct::Reduce, Value::global("posix", "system"), {Value::string("echo pwned")});
  d.set(Value::string("callbacks"), Value::list({Value::integer(1), call, call}));
  d.set(Value::string("tags"), Value::frozenset({Value::string("a")}));
  d.set(Value::string("blob"), Value::bytes(""));
  d.set(Value::string("nonempty"), Value::bytes("x"));
  d.set(Value::string("s"), Value::set({Value::integer(1)}));
  d.set(Value::string("py2"), Value::list({Value::global("__builtin__", "set"), Value::global("__builtin__", "eval")}));
  return root;
}

TEST(SafeGlobals, TreeScanNamesEachGlobalAndWhereItSits) {
  auto found = unsafe_globals_in_tree(hostile_tree());
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& g : found) got.emplace_back(g.name, g.where);
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{
                     {"argparse.Namespace", "['hparams']"},
                     {"posix.system", "['callbacks'][1]"},
                     {"builtins.frozenset", "['tags']"},
                     {"builtins.bytes", "['blob']"},
                     {"builtins.eval", "['py2'][1]"},
                 }));
  // The shared call is one object, reported once.
  EXPECT_EQ(found[1].count, 1u);
  EXPECT_TRUE(unsafe_globals_in_tree(Value::list({Value::ordered_dict(), Value::bytes("ab")})).empty());
}

TEST(SafeGlobals, TreeScanAgreesWithWhatTheWriterEmits) {
  for (const ValuePtr& tree :
       {hostile_tree(), Value::list({Value::frozenset(), Value::set(), Value::bytes(""), Value::global("builtins", "range"),
                                     Value::global("builtins", "int"), Value::global("collections", "Counter")})}) {
    std::set<std::string> from_tree, from_bytes;
    for (const auto& g : unsafe_globals_in_tree(tree)) from_tree.insert(g.name);
    for (const auto& name : unsafe_globals_in_pickle(pickle(tree))) from_bytes.insert(name);
    EXPECT_EQ(from_tree, from_bytes);
    EXPECT_FALSE(from_tree.empty());
  }
}

TEST(SafeGlobals, WritersRefuseWithEveryGlobalAndPlace) {
  try {
    check_weights_only_tree(hostile_tree(), "/tmp/out.ckpt");
    FAIL() << "accepted";
  } catch (const UnsafeGlobalsError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("/tmp/out.ckpt"), std::string::npos) << m;
    EXPECT_NE(m.find("argparse.Namespace at ['hparams']"), std::string::npos) << m;
    EXPECT_NE(m.find("posix.system at ['callbacks'][1]"), std::string::npos) << m;
    EXPECT_EQ(e.names().size(), 5u);
  }
  EXPECT_NO_THROW(check_weights_only_tree(Value::list({Value::global("torch", "float32")}), "ok"));
}

}  // namespace
}  // namespace fabricckpt
