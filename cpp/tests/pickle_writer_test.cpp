#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

using namespace std::string_literals;

std::string fixture(const std::string& name) {
  std::ifstream in(std::string(FABRICCKPT_TEST_DATA) + "/pickle/" + name, std::ios::binary);
  EXPECT_TRUE(in) << name;
  return {std::istreambuf_iterator<char>(in), {}};
}

// Equality of two pickles, reporting the first differing byte.
testing::AssertionResult same_bytes(const std::string& actual, const std::string& expected) {
  if (actual == expected) return testing::AssertionSuccess();
  size_t i = 0;
  while (i < actual.size() && i < expected.size() && actual[i] == expected[i]) ++i;
  auto window = [&](const std::string& s) {
    std::string out;
    for (size_t k = i < 8 ? 0 : i - 8; k < std::min(s.size(), i + 16); ++k) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%02x ", static_cast<uint8_t>(s[k]));
      out += buf;
    }
    return out;
  };
  return testing::AssertionFailure() << "first difference at byte " << i << " (sizes " << actual.size() << " and "
                                     << expected.size() << ")\n  actual:   " << window(actual)
                                     << "\n  expected: " << window(expected);
}

// Graph building shorthands.
ValuePtr I(int64_t v) { return Value::integer(v); }
ValuePtr F(double v) { return Value::floating(v); }
ValuePtr S(std::string s) { return Value::string(std::move(s)); }
ValuePtr B(std::string s) { return Value::bytes(std::move(s)); }
ValuePtr N() { return Value::none(); }
ValuePtr L(Value::Items items = {}) { return Value::list(std::move(items)); }
ValuePtr T(Value::Items items = {}) { return Value::tuple(std::move(items)); }
ValuePtr G(std::string module, std::string name) { return Value::global(std::move(module), std::move(name)); }

ValuePtr D(std::vector<std::pair<ValuePtr, ValuePtr>> items, bool ordered = false) {
  ValuePtr d = ordered ? Value::ordered_dict() : Value::plain_dict();
  for (auto& [k, v] : items) d->dict().set(k, v);
  return d;
}

ValuePtr ordered_with_metadata() {
  ValuePtr od = D({{S("a"), I(1)}, {S("b"), L({I(2)})}}, true);
  ValuePtr metadata = D({{S(""), D({{S("version"), I(1)}})}}, true);
  od->dict().state = D({{S("_metadata"), metadata}});
  return od;
}

// 2**k as minimal two's complement.
std::string pow2(int k) {
  std::string s(static_cast<size_t>(k / 8), '\0');
  s += static_cast<char>(1 << (k % 8));
  if (k % 8 == 7) s += '\0';
  return s;
}

ValuePtr namespace_object(ValuePtr state) {
  Object o;
  o.construct = Object::Construct::NewObj;
  o.callable = G("argparse", "Namespace");
  o.args = T();
  o.state = std::move(state);
  return Value::object(std::move(o));
}

// The graphs of make_pickle_fixtures.py's writer_cases(), built in C++.
ValuePtr writer_case(const std::string& name) {
  if (name == "ints") {
    Value::Items items;
    for (int64_t v : std::initializer_list<int64_t>{0, 1, 255, 256, 65535, 65536, (1LL << 31) - 1, 1LL << 31, -1,
                                                    -(1LL << 31), -(1LL << 31) - 1, INT64_MAX, INT64_MIN}) {
      items.push_back(I(v));
    }
    items.push_back(Value::big_integer(pow2(100)));
    for (int64_t v : {-128, -129, -256, -32768}) items.push_back(I(v));
    items.push_back(Value::big_integer(pow2(2100)));
    return L(items);
  }
  if (name == "floats") return L({F(0.0), F(-0.0), F(1.5), F(1e300), F(5e-324), F(INFINITY), F(-INFINITY)});
  if (name == "strings") return L({S(""), S("ascii"), S("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"), S("")});
  if (name == "bytes") {
    ValuePtr x = B("x");  // one object in Python; empty bytes are shared by value
    return L({B(""), B("ab\xff"), B(""), x, x, B("\x00\x01\x02"s), B("\x80")});
  }
  if (name == "batches") {
    auto dict_of = [](int n) {
      ValuePtr d = Value::plain_dict();
      for (int i = 0; i < n; ++i) d->dict().set(I(i), N());
      return d;
    };
    auto list_of = [](size_t n) {
      Value::Items items;
      for (size_t i = 0; i < n; ++i) items.push_back(N());
      return L(items);
    };
    return D({{S("d0"), dict_of(0)},
              {S("d1"), D({{I(1), I(2)}})},
              {S("d1000"), dict_of(1000)},
              {S("d1001"), dict_of(1001)},
              {S("l0"), L()},
              {S("l1"), L({I(1)})},
              {S("l1000"), list_of(1000)},
              {S("l1001"), list_of(1001)}});
  }
  if (name == "tuples") {
    return L({T(), T({I(1)}), T({I(1), I(2)}), T({I(1), I(2), I(3)}), T({I(1), I(2), I(3), I(4)}), T({T()})});
  }
  if (name == "sets") {
    return L({Value::set(), Value::set({I(5)}), Value::set({I(1), I(2), I(3)}), Value::frozenset({I(4)}),
              Value::frozenset()});
  }
  if (name == "ordered") return ordered_with_metadata();
  if (name == "shared") {
    ValuePtr shared = D({{S("k"), L({I(1)})}});
    return L({shared, shared, T({shared})});
  }
  if (name == "memo300") {
    Value::Items strs;
    for (int i = 0; i < 300; ++i) strs.push_back(S("s" + std::to_string(i)));
    strs.push_back(strs[0]);
    strs.push_back(strs[299]);
    return L(strs);
  }
  if (name == "namespace") return namespace_object(D({{S("lr"), F(0.1)}, {S("name"), S("x")}}));
  if (name == "globals") {
    // Python 3 names; protocol 2 writes their Python 2 spellings.
    return L({G("builtins", "int"), G("builtins", "str"), G("builtins", "set"), G("collections", "OrderedDict"),
              G("builtins", "int"), G("builtins", "ValueError")});
  }
  if (name == "nested") return D({{S("a"), D({{S("b"), D({{S("c"), L({I(1), T({I(2), L({I(3)})})})}})}})}});
  ADD_FAILURE() << "no case " << name;
  return N();
}

const char* const kWriterCases[] = {"ints",    "floats", "strings", "bytes",     "batches", "tuples", "sets",
                                    "ordered", "shared", "memo300", "namespace", "globals", "nested"};

class WriterCase : public testing::TestWithParam<const char*> {};

TEST_P(WriterCase, MatchesCPythonByteForByte) {
  std::string name = GetParam();
  EXPECT_TRUE(same_bytes(pickle(writer_case(name)), fixture("w_" + name + ".pkl")));
}

TEST_P(WriterCase, RoundTripsPythonBytes) {
  std::string data = fixture("w_" + std::string(GetParam()) + ".pkl");
  EXPECT_TRUE(same_bytes(pickle(unpickle(data).value), data));
}

INSTANTIATE_TEST_SUITE_P(Pickle, WriterCase, testing::ValuesIn(kWriterCases));

TEST(PickleWriter, RoundTripsNestedProtocol2) {
  std::string data = fixture("nested_p2.pkl");
  EXPECT_TRUE(same_bytes(pickle(unpickle(data).value), data));
}

TEST(PickleWriter, RoundTripsPersistentIdsThroughHooks) {
  std::string data = fixture("persid_p2.pkl");
  std::unordered_map<const Value*, ValuePtr> pid_of;
  UnpickleHooks load_hooks;
  load_hooks.persistent_load = [&](const ValuePtr& pid) {
    ValuePtr storage = Value::storage({nullptr, "FloatStorage"});
    pid_of[storage.get()] = pid;
    return storage;
  };
  PickleHooks save_hooks;
  save_hooks.persistent_id = [&](const ValuePtr& storage) { return pid_of.at(storage.get()); };
  EXPECT_TRUE(same_bytes(pickle(unpickle(data, load_hooks).value, save_hooks), data));
}

TEST(PickleWriter, Scalars) {
  EXPECT_EQ(pickle(N()), "\x80\x02N."s);
  EXPECT_EQ(pickle(Value::boolean(true)), "\x80\x02\x88."s);
  EXPECT_EQ(pickle(Value::boolean(false)), "\x80\x02\x89."s);
  EXPECT_EQ(pickle(I(0)), "\x80\x02K\x00."s);
  EXPECT_EQ(pickle(I(-1)), "\x80\x02J\xff\xff\xff\xff."s);
  EXPECT_EQ(pickle(I(INT64_MIN)), "\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."s);
  EXPECT_EQ(pickle(F(1.5)), "\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00."s);
  EXPECT_EQ(pickle(S("")), "\x80\x02X\x00\x00\x00\x00q\x00."s);
}

TEST(PickleWriter, RecursiveTuplesLikeCPython) {
  // l = []; t = (l,); l.append(t); pickle.dumps(t, 2)
  ValuePtr l = L();
  ValuePtr t = T({l});
  l->items().push_back(t);
  EXPECT_TRUE(same_bytes(pickle(t), "\x80\x02]q\x00h\x00\x85q\x01" "a0h\x01."s));
  l->items().clear();

  // The same with a 4-tuple: POP_MARK instead of POPs.
  t = T({l, I(1), I(2), I(3)});
  l->items().push_back(t);
  EXPECT_TRUE(same_bytes(pickle(t), "\x80\x02(]q\x00(h\x00K\x01K\x02K\x03tq\x01" "aK\x01K\x02K\x03" "1h\x01."s));
  l->items().clear();
}

TEST(PickleWriter, OrderedDictItemsUseTheIteratorBatching) {
  // pickle.dumps([OrderedDict(), OrderedDict([(1, 2), (3, 4)])], 2)
  ValuePtr v = L({D({}, true), D({{I(1), I(2)}, {I(3), I(4)}}, true)});
  EXPECT_TRUE(same_bytes(pickle(v), "\x80\x02]q\x00(ccollections\nOrderedDict\nq\x01)Rq\x02"
                                    "h\x01)Rq\x03(K\x01K\x02K\x03K\x04ue."s));
}

TEST(PickleWriter, ObjectItemsAndState) {
  Object o;
  o.callable = G("foo", "Bag");
  o.args = T();
  o.list_items = {I(1)};
  o.dict_items = {{S("k"), I(2)}, {S("j"), I(3)}};
  o.state = N();
  ValuePtr v = Value::object(o);
  EXPECT_TRUE(same_bytes(pickle(v), "\x80\x02" "cfoo\nBag\nq\x00)Rq\x01K\x01" "a"  // REDUCE, memo, APPEND
                                    "(X\x01\x00\x00\x00kq\x02K\x02X\x01\x00\x00\x00jq\x03K\x03u"  // SETITEMS
                                    "Nb."s));  // BUILD
  ValuePtr back = unpickle(pickle(v)).value;
  EXPECT_EQ(back->object_ref().dict_items.size(), 2u);
  EXPECT_EQ(back->object_ref().state->kind, Kind::None);
}

TEST(PickleWriter, NewObjExRoundTripsAsTheSameRecipe) {
  ValuePtr v = unpickle(fixture("newobj_ex_p4.pkl")).value;
  ValuePtr back = unpickle(pickle(v)).value;
  const Object& o = back->items()[0]->object_ref();
  EXPECT_EQ(o.construct, Object::Construct::NewObjEx);
  EXPECT_EQ(o.kwargs->dict().get("b")->as_int(), 2);
  EXPECT_EQ(o.state->dict().get("a")->as_int(), 1);
}

TEST(PickleWriter, TensorsGoThroughHooksAndAreMemoizedByTensorNode) {
  ValuePtr tensor = Value::tensor({});
  ValuePtr storage = Value::storage({nullptr, "FloatStorage"});
  int reduces = 0, pids = 0;
  PickleHooks hooks;
  hooks.tensor_reduce = [&](const ValuePtr& t) {
    EXPECT_EQ(t.get(), tensor.get());
    ++reduces;
    Object o;
    o.callable = G("torch._utils", "_rebuild_tensor_v2");
    o.args = T({storage, I(0)});
    return Value::object(o);
  };
  hooks.persistent_id = [&](const ValuePtr& s) {
    EXPECT_EQ(s.get(), storage.get());
    ++pids;
    return T({S("storage"), S("0")});
  };
  std::string out = pickle(L({tensor, tensor}), hooks);
  EXPECT_EQ(reduces, 1);
  EXPECT_EQ(pids, 1);
  EXPECT_TRUE(same_bytes(out,
                         "\x80\x02]q\x00(ctorch._utils\n_rebuild_tensor_v2\nq\x01X\x07\x00\x00\x00storageq\x02"
                         "X\x01\x00\x00\x00" "0q\x03\x86q\x04QK\x00\x86q\x05Rq\x06h\x06" "e."s));
}

TEST(PickleWriter, MissingHooksAreErrors) {
  EXPECT_THROW(pickle(Value::tensor({})), Error);
  EXPECT_THROW(pickle(Value::storage({})), Error);
  EXPECT_THROW(pickle(nullptr), Error);
  PickleHooks bad;
  bad.tensor_reduce = [](const ValuePtr&) { return Value::none(); };
  EXPECT_THROW(pickle(Value::tensor({}), bad), Error);
}

// Frees a chain of singly nested lists without recursing through destructors.
void dismantle(ValuePtr node) {
  while (node && node->kind == Kind::List && !node->items().empty()) {
    ValuePtr next = node->items()[0];
    node->items().clear();
    node = next;
  }
}

TEST(PickleWriter, DeepGraphsDoNotRecurse) {
  const int depth = 20000;
  ValuePtr root = L();
  ValuePtr cur = root;
  for (int i = 0; i < depth; ++i) {
    ValuePtr next = L();
    cur->items().push_back(next);
    cur = next;
  }
  std::string out = pickle(root);
  UnpickleLimits limits;
  limits.max_depth = depth + 1;
  ValuePtr back = unpickle(out, {}, limits).value;
  int seen = 0;
  for (ValuePtr n = back; !n->items().empty(); n = n->items()[0]) ++seen;
  EXPECT_EQ(seen, depth);
  dismantle(back);
  dismantle(root);
}

TEST(PickleWriter, RecursionThroughReduceArgumentsIsAnError) {
  ValuePtr v = Value::object({});
  v->object_ref().callable = G("foo", "f");
  v->object_ref().args = T({v});  // Python raises RecursionError for this
  EXPECT_THROW(pickle(v), Error);
  v->object_ref().args.reset();
}

}  // namespace
}  // namespace fabricckpt
