#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <random>
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

std::string le(uint64_t v, int width) {
  std::string s;
  for (int i = 0; i < width; ++i) s += static_cast<char>(v >> (8 * i));
  return s;
}

// Runs a pickle body (opcodes without STOP) and returns its value.
ValuePtr load(const std::string& body, const UnpickleHooks& hooks = {}) { return unpickle(body + ".", hooks).value; }

std::string error_of(const std::string& data, const UnpickleHooks& hooks = {}, const UnpickleLimits& limits = {}) {
  try {
    unpickle(data, hooks, limits);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "no error";
}

// dict[key] for a str key; None when missing, so that the accessors after it fail the test.
ValuePtr at(const ValuePtr& dict, std::string_view key) {
  ValuePtr v = dict->dict().get(key);
  if (!v) {
    ADD_FAILURE() << "missing key " << key;
    return Value::none();
  }
  return v;
}

// -2**k..2**k as minimal little-endian two's complement.
std::string pow2(int k, bool negative) {
  std::string s(static_cast<size_t>(k / 8), '\0');
  int bit = 1 << (k % 8);
  if (!negative) {
    s += static_cast<char>(bit);
    if (bit == 0x80) s += '\0';
  } else {
    s += static_cast<char>(0x100 - bit);
  }
  return s;
}

void expect_ints(const ValuePtr& list, const std::vector<int64_t>& expected) {
  ASSERT_EQ(list->kind, Kind::List);
  ASSERT_EQ(list->items().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(list->items()[i]->as_int(), expected[i]) << i;
}

void expect_global(const ValuePtr& v, const std::string& module, const std::string& name) {
  ASSERT_EQ(v->kind, Kind::Global);
  EXPECT_EQ(v->global_ref().module, module);
  EXPECT_EQ(v->global_ref().name, name);
}

// The object of make_pickle_fixtures.py's nested(), as each protocol records it.
void check_nested(const ValuePtr& root, int proto) {
  ASSERT_EQ(root->kind, Kind::Dict);
  EXPECT_FALSE(root->dict().ordered);
  EXPECT_EQ(root->dict().size(), 14u);

  const auto& ints = at(root, "ints")->items();
  ASSERT_EQ(ints.size(), 19u);
  std::vector<int64_t> small = {0,         1,          -1,         255,       256,      65535,    65536,
                                INT32_MAX, 1LL << 31, INT32_MIN, -(1LL << 31) - 1, INT64_MAX, INT64_MIN};
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(ints[i]->as_int(), small[i]) << i;
  std::vector<std::string> big = {pow2(63, false), "\xff\xff\xff\xff\xff\xff\xff\x7f\xff"s, pow2(64, false),
                                  pow2(100, false), pow2(100, true), pow2(2100, false)};
  for (size_t i = 0; i < big.size(); ++i) {
    ASSERT_EQ(ints[13 + i]->kind, Kind::BigInt) << i;
    EXPECT_EQ(ints[13 + i]->as_string(), big[i]) << i;
  }

  const auto& floats = at(root, "floats")->items();
  ASSERT_EQ(floats.size(), 9u);
  EXPECT_EQ(floats[0]->as_float(), 0.0);
  EXPECT_FALSE(std::signbit(floats[0]->as_float()));
  EXPECT_TRUE(std::signbit(floats[1]->as_float()));
  EXPECT_EQ(floats[2]->as_float(), 1.5);
  EXPECT_EQ(floats[3]->as_float(), -2.25);
  EXPECT_EQ(floats[4]->as_float(), 1e300);
  EXPECT_EQ(floats[5]->as_float(), 1e-310);
  EXPECT_EQ(floats[6]->as_float(), INFINITY);
  EXPECT_EQ(floats[7]->as_float(), -INFINITY);
  EXPECT_TRUE(std::isnan(floats[8]->as_float()));

  const auto& strs = at(root, "strs")->items();
  ASSERT_EQ(strs.size(), 4u);
  EXPECT_EQ(strs[0]->as_string(), "");
  EXPECT_EQ(strs[1]->as_string(), "ascii");
  EXPECT_EQ(strs[2]->as_string(), "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80");
  EXPECT_EQ(strs[3]->as_string(), "back\\slash\nnew\"line'quote\r\0\x1a"s);
  for (const auto& s : strs) EXPECT_EQ(s->kind, Kind::String);

  const auto& bytes = at(root, "bytes")->items();
  ASSERT_EQ(bytes.size(), 4u);
  EXPECT_EQ(bytes[0]->kind, Kind::Bytes);
  EXPECT_EQ(bytes[0]->as_string(), "");
  EXPECT_EQ(bytes[1]->as_string(), "a");
  EXPECT_EQ(bytes[2]->as_string(), "\x00\xff" "raw"s);
  const Object& bytearray = bytes[3]->object_ref();
  expect_global(bytearray.callable, proto < 3 ? "__builtin__" : "builtins", "bytearray");
  ASSERT_EQ(bytearray.args->items().size(), 1u);
  EXPECT_EQ(bytearray.args->items()[0]->kind, Kind::Bytes);
  EXPECT_EQ(bytearray.args->items()[0]->as_string(), "ba\0"s);

  const auto& tuples = at(root, "tuples")->items();
  ASSERT_EQ(tuples.size(), 6u);
  for (size_t n = 0; n < tuples.size(); ++n) {
    ASSERT_EQ(tuples[n]->kind, Kind::Tuple);
    ASSERT_EQ(tuples[n]->items().size(), n);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(tuples[n]->items()[i]->as_int(), static_cast<int64_t>(i + 1));
  }

  const auto& lists = at(root, "lists")->items();
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_TRUE(lists[0]->items().empty());
  EXPECT_EQ(lists[1]->items()[0]->kind, Kind::None);
  EXPECT_TRUE(lists[1]->items()[1]->as_bool());
  EXPECT_FALSE(lists[1]->items()[2]->as_bool());
  EXPECT_EQ(lists[2]->items()[1]->items()[1]->items()[0]->as_int(), 3);

  const Dict& d = at(root, "dict")->dict();
  ASSERT_EQ(d.size(), 6u);
  EXPECT_EQ(d.get(*Value::integer(1))->as_string(), "one");
  EXPECT_EQ(d.get("two")->as_int(), 2);
  EXPECT_EQ(d.get(*Value::tuple({Value::integer(3), Value::integer(4)}))->items()[0]->as_int(), 5);
  EXPECT_EQ(d.get(*Value::none())->kind, Kind::None);
  EXPECT_EQ(d.get(*Value::floating(2.5))->as_string(), "f");
  EXPECT_EQ(d.get(*Value::integer(-7))->as_string(), "neg");
  EXPECT_EQ(d.items()[2].first->kind, Kind::Tuple);  // insertion order

  ASSERT_EQ(at(root, "set")->kind, Kind::Set);
  expect_ints(Value::list(at(root, "set")->items()), {1, 2, 3});
  ASSERT_EQ(at(root, "frozenset")->kind, Kind::FrozenSet);
  expect_ints(Value::list(at(root, "frozenset")->items()), {8, 7});
  EXPECT_EQ(at(root, "empty_set")->kind, Kind::Set);
  EXPECT_TRUE(at(root, "empty_set")->items().empty());

  const ValuePtr& od = at(root, "ordered");
  ASSERT_TRUE(od->dict().ordered);
  ASSERT_EQ(od->dict().size(), 2u);
  EXPECT_EQ(od->dict().items()[0].first->as_string(), "a");
  EXPECT_EQ(od->dict().get("b")->items()[0]->as_int(), 2);
  ASSERT_NE(od->dict().state, nullptr);
  const ValuePtr& metadata = at(od->dict().state, "_metadata");
  ASSERT_TRUE(metadata->dict().ordered);
  EXPECT_EQ(at(at(metadata, ""), "version")->as_int(), 1);

  const auto& shared = at(root, "shared")->items();
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0].get(), shared[1].get());  // one node, as in Python
  expect_ints(at(shared[0], "k"), {1, 2});

  for (const char* name : {"namespace", "point"}) {
    SCOPED_TRACE(name);
    ValuePtr node = at(root, name);
    const Object& o = node->object_ref();
    bool ns = std::string(name) == "namespace";
    const char* module = ns ? "argparse" : "fabric_fixture";
    const char* cls = ns ? "Namespace" : "Point";
    if (proto < 2) {  // copy_reg._reconstructor(cls, object, None)
      EXPECT_EQ(o.construct, Object::Construct::Reduce);
      expect_global(o.callable, "copy_reg", "_reconstructor");
      ASSERT_EQ(o.args->items().size(), 3u);
      expect_global(o.args->items()[0], module, cls);
      expect_global(o.args->items()[1], "__builtin__", "object");
      EXPECT_EQ(o.args->items()[2]->kind, Kind::None);
    } else {  // cls.__new__(cls)
      EXPECT_EQ(o.construct, Object::Construct::NewObj);
      expect_global(o.callable, module, cls);
      EXPECT_TRUE(o.args->items().empty());
    }
    ASSERT_NE(o.state, nullptr);
    if (ns) {
      EXPECT_EQ(at(o.state, "lr")->as_float(), 0.1);
      EXPECT_EQ(at(o.state, "name")->as_string(), "run");
    } else {
      EXPECT_EQ(at(o.state, "x")->as_int(), 1);
      EXPECT_EQ(at(o.state, "y")->as_int(), 2);
    }
  }
}

class ProtocolFixture : public testing::TestWithParam<int> {};

TEST_P(ProtocolFixture, ReadsEveryValue) {
  std::string data = fixture("nested_p" + std::to_string(GetParam()) + ".pkl");
  UnpickleResult r = unpickle(data);
  EXPECT_EQ(r.consumed, data.size());
  check_nested(r.value, GetParam());
}

TEST_P(ProtocolFixture, EveryTruncationIsAFormatError) {
  std::string data = fixture("nested_p" + std::to_string(GetParam()) + ".pkl");
  for (size_t n = 0; n < data.size(); ++n) {
    EXPECT_THROW(unpickle(std::string_view(data).substr(0, n)), FormatError) << "prefix " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Pickle, ProtocolFixture, testing::Range(0, 6));

TEST(PickleReader, NewObjEx) {
  ValuePtr v = unpickle(fixture("newobj_ex_p4.pkl")).value;
  const Object& o = v->items()[0]->object_ref();
  EXPECT_EQ(o.construct, Object::Construct::NewObjEx);
  expect_global(o.callable, "fabric_fixture", "Keyword");
  EXPECT_EQ(o.args->items()[0]->as_int(), 1);
  EXPECT_EQ(at(o.kwargs, "b")->as_int(), 2);
  EXPECT_EQ(at(o.state, "a")->as_int(), 1);
  EXPECT_EQ(o.kwargs->dict().items()[0].first.get(), o.state->dict().items()[1].first.get());  // memo
}

TEST(PickleReader, PersistentIds) {
  for (int proto : {0, 2}) {
    std::vector<ValuePtr> pids;
    UnpickleHooks hooks;
    hooks.persistent_load = [&](const ValuePtr& pid) {
      pids.push_back(pid);
      return Value::storage({nullptr, "S" + std::to_string(pids.size())});
    };
    ValuePtr v = unpickle(fixture("persid_p" + std::to_string(proto) + ".pkl"), hooks).value;
    ASSERT_EQ(pids.size(), 2u);
    EXPECT_EQ(at(v, "w")->storage_ref().type_name, "S1");
    EXPECT_EQ(at(v, "b")->items()[0]->storage_ref().type_name, "S2");
    EXPECT_EQ(at(v, "b")->items()[1]->as_int(), 5);
    if (proto == 0) {
      EXPECT_EQ(pids[0]->as_string(), "k0");
    } else {
      EXPECT_EQ(pids[1]->items()[1]->as_string(), "k1");
      EXPECT_EQ(pids[0]->items()[0].get(), pids[1]->items()[0].get());  // 'storage' is memoized once
    }
  }
  EXPECT_NE(error_of(fixture("persid_p2.pkl")).find("but no persistent loader"), std::string::npos);
}

TEST(PickleReader, Protocol0Text) {
  EXPECT_TRUE(load("I01\n")->as_bool());
  EXPECT_FALSE(load("I00\n")->as_bool());
  EXPECT_EQ(load("I-5\n")->as_int(), -5);
  EXPECT_EQ(load("I0\n")->as_int(), 0);
  EXPECT_EQ(load("I123456789012\n")->as_int(), 123456789012);
  EXPECT_EQ(describe(*load("I123456789012345678901234567890\n")), "123456789012345678901234567890");
  EXPECT_EQ(describe(*load("L-123456789012345678901234567890L\n")), "-123456789012345678901234567890");
  EXPECT_EQ(load("L-5L\n")->as_int(), -5);
  EXPECT_EQ(load("L9223372036854775808\n")->as_string(), pow2(63, false));
  EXPECT_EQ(load("F1.25\n")->as_float(), 1.25);
  EXPECT_EQ(load("F-inf\n")->as_float(), -INFINITY);
  EXPECT_EQ(load("S'a\\n\\x41\\101\\'b'\n")->as_string(), "a\nAA'b");
  EXPECT_EQ(load("S\"q\\\"t\\z\"\n")->as_string(), "q\"t\\z");
  EXPECT_EQ(load("Vx\\u00e9\\U0001f600\\\\y\\n\n")->as_string(), "x\xc3\xa9\xf0\x9f\x98\x80\\\\y\\n");
  EXPECT_EQ(load("V\xe9\n")->as_string(), "\xc3\xa9");  // raw bytes are Latin-1
  ValuePtr t = load("(lp0\nI1\na(g0\nNp1\ng1\nt");  // PUT and GET in text
  EXPECT_EQ(t->items()[0]->items()[0]->as_int(), 1);
  EXPECT_EQ(t->items()[1].get(), t->items()[2].get());
}

TEST(PickleReader, BinaryScalars) {
  EXPECT_EQ(load("J\xff\xff\xff\xff")->as_int(), -1);
  EXPECT_EQ(load("J\x00\x00\x00\x80"s)->as_int(), INT32_MIN);
  EXPECT_EQ(load("K\xff")->as_int(), 255);
  EXPECT_EQ(load("M\xff\xff")->as_int(), 65535);
  EXPECT_EQ(load("\x8a\x00"s)->as_int(), 0);
  EXPECT_EQ(load("\x8a\x02\xff\x7f"s)->as_int(), 32767);
  EXPECT_EQ(load("\x8a\x01\x80"s)->as_int(), -128);
  EXPECT_EQ(load("\x8b" + le(2, 4) + "\x00\x80"s)->as_int(), -32768);
  EXPECT_EQ(load("\x8b" + le(9, 4) + pow2(64, false))->as_string(), pow2(64, false));
  EXPECT_EQ(load("G\x3f\xf8\x00\x00\x00\x00\x00\x00"s)->as_float(), 1.5);
  EXPECT_EQ(load("N")->kind, Kind::None);
  EXPECT_TRUE(load("\x88")->as_bool());
  EXPECT_FALSE(load("\x89")->as_bool());
}

TEST(PickleReader, StringsAndBytes) {
  EXPECT_EQ(load("T" + le(3, 4) + "abc")->as_string(), "abc");  // Python 2 str decodes as UTF-8, like torch.load
  EXPECT_EQ(load("U\x02\xc3\xa9")->as_string(), "\xc3\xa9");
  EXPECT_EQ(load("X" + le(2, 4) + "hi")->as_string(), "hi");
  EXPECT_EQ(load("\x8c\x02hi")->as_string(), "hi");
  EXPECT_EQ(load("\x8d" + le(2, 8) + "hi")->as_string(), "hi");
  EXPECT_EQ(load("X" + le(3, 4) + "\xed\xa0\x80")->as_string(), "\xed\xa0\x80");  // lone surrogate (surrogatepass)
  ValuePtr b = load("B" + le(1, 4) + "z");
  EXPECT_EQ(b->kind, Kind::Bytes);
  EXPECT_EQ(b->as_string(), "z");
  EXPECT_EQ(load("C\x01z")->as_string(), "z");
  EXPECT_EQ(load("\x8e" + le(1, 8) + "z")->as_string(), "z");
  ValuePtr ba_value = load("\x96" + le(2, 8) + "xy");
  const Object& ba = ba_value->object_ref();
  expect_global(ba.callable, "builtins", "bytearray");
  EXPECT_EQ(ba.args->items()[0]->as_string(), "xy");
  EXPECT_TRUE(load("\x96" + le(0, 8))->object_ref().args->items().empty());
}

TEST(PickleReader, Containers) {
  expect_ints(load("(K\x01K\x02l"), {1, 2});
  expect_ints(load("]K\x01" "a"), {1});
  expect_ints(load("](K\x01K\x02" "e"), {1, 2});
  EXPECT_EQ(load("(K\x01K\x02K\x03K\x04t")->items().size(), 4u);
  EXPECT_EQ(load(")")->items().size(), 0u);
  EXPECT_EQ(load("K\x01\x85")->items().size(), 1u);
  EXPECT_EQ(load("K\x01K\x02\x86")->items()[1]->as_int(), 2);
  EXPECT_EQ(load("K\x01K\x02K\x03\x87")->items()[2]->as_int(), 3);
  EXPECT_EQ(load("(K\x01K\x02" "d")->dict().get(*Value::integer(1))->as_int(), 2);
  EXPECT_EQ(load("}K\x01K\x02s")->dict().size(), 1u);
  EXPECT_EQ(load("}(K\x01K\x02K\x03K\x04u")->dict().size(), 2u);
  ValuePtr s = load("\x8f(K\x01K\x02\x90");
  EXPECT_EQ(s->kind, Kind::Set);
  EXPECT_EQ(s->items().size(), 2u);
  ValuePtr f = load("(K\x01\x91");
  EXPECT_EQ(f->kind, Kind::FrozenSet);
  EXPECT_EQ(f->items().size(), 1u);
}

TEST(PickleReader, StackOpcodes) {
  EXPECT_EQ(load("K\x01K\x02" "0")->as_int(), 1);
  EXPECT_EQ(load("K\x01(0")->as_int(), 1);  // POP right after MARK pops the MARK
  EXPECT_EQ(load("K\x01(K\x02K\x03" "1")->as_int(), 1);
  ValuePtr t = load("]2\x86");
  EXPECT_EQ(t->items()[0].get(), t->items()[1].get());
}

TEST(PickleReader, MemoOpcodes) {
  ValuePtr t = load("]p5\ng5\n\x86");
  EXPECT_EQ(t->items()[0].get(), t->items()[1].get());
  t = load("]q\x07h\x07\x86");
  EXPECT_EQ(t->items()[0].get(), t->items()[1].get());
  t = load("]r" + le(70000, 4) + "j" + le(70000, 4) + "\x86");
  EXPECT_EQ(t->items()[0].get(), t->items()[1].get());
  t = load("N\x94]\x94h\x01\x86");  // MEMOIZE numbers entries in order
  EXPECT_EQ(t->items()[0].get(), t->items()[1].get());
  EXPECT_EQ(load("\x80\x04\x95" + le(2, 8) + "K\x07")->as_int(), 7);  // FRAME
}

TEST(PickleReader, GlobalsAndCalls) {
  expect_global(load("cfoo.mod\nBar\n"), "foo.mod", "Bar");
  expect_global(load("\x8c\x03" "foo\x8c\x03" "bar\x93"), "foo", "bar");

  ValuePtr r_value = load("cfoo\nf\nK\x01\x85R");
  const Object& r = r_value->object_ref();
  EXPECT_EQ(r.construct, Object::Construct::Reduce);
  expect_global(r.callable, "foo", "f");
  EXPECT_EQ(r.args->items()[0]->as_int(), 1);

  ValuePtr n_value = load("cfoo\nC\n)\x81}K\x01K\x02sb");
  const Object& n = n_value->object_ref();
  EXPECT_EQ(n.construct, Object::Construct::NewObj);
  EXPECT_EQ(n.state->dict().size(), 1u);

  ValuePtr inst_value = load("(K\x01ifoo\nOld\n");
  const Object& inst = inst_value->object_ref();
  expect_global(inst.callable, "foo", "Old");
  EXPECT_EQ(inst.args->items()[0]->as_int(), 1);

  ValuePtr obj_value = load("(cfoo\nOld\nK\x02o");
  const Object& obj = obj_value->object_ref();
  expect_global(obj.callable, "foo", "Old");
  EXPECT_EQ(obj.args->items()[0]->as_int(), 2);

  // A computed callable: getattr(...)(...) stays an Object calling an Object.
  ValuePtr nested_value = load("cbuiltins\ngetattr\nN\x85R)R");
  const Object& nested = nested_value->object_ref();
  EXPECT_EQ(nested.callable->kind, Kind::Object);

  // Items and state of an object of a dict or list subclass.
  ValuePtr sub_value = load("cfoo\nD\n)\x81(K\x01K\x02u");
  const Object& sub = sub_value->object_ref();
  ASSERT_EQ(sub.dict_items.size(), 1u);
  EXPECT_EQ(sub.dict_items[0].second->as_int(), 2);
  ValuePtr lsub_value = load("cfoo\nL\n)\x81K\x03" "a(K\x04K\x05" "e");
  const Object& lsub = lsub_value->object_ref();
  EXPECT_EQ(lsub.list_items.size(), 3u);
}

TEST(PickleReader, RecognisedBuiltins) {
  ValuePtr od = load("ccollections\nOrderedDict\n)RK\x01K\x02s");
  ASSERT_TRUE(od->dict().ordered);
  EXPECT_EQ(od->dict().size(), 1u);

  // Python 2's OrderedDict([[key, value], ...]).
  od = load("ccollections\nOrderedDict\n](K\x01K\x02l" "a\x85R");
  ASSERT_TRUE(od->dict().ordered);
  EXPECT_EQ(od->dict().get(*Value::integer(1))->as_int(), 2);

  ValuePtr s = load("c__builtin__\nset\n](K\x01K\x02" "e\x85R");
  EXPECT_EQ(s->kind, Kind::Set);
  EXPECT_EQ(s->items().size(), 2u);
  EXPECT_EQ(load("cbuiltins\nfrozenset\n)R")->kind, Kind::FrozenSet);
  ValuePtr b = load("c__builtin__\nbytes\n)R");
  EXPECT_EQ(b->kind, Kind::Bytes);
  EXPECT_EQ(b->as_string(), "");
  b = load("c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86R"s);
  EXPECT_EQ(b->as_string(), "\xe9");
  EXPECT_EQ(load("c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00utf-8\x86R"s)->kind, Kind::Object);
  EXPECT_EQ(load("ccollections\nOrderedDict\nK\x01\x85R")->kind, Kind::Object);
  EXPECT_EQ(load("c__builtin__\nbytearray\n)R")->kind, Kind::Object);
  EXPECT_EQ(load("ccopy_reg\n_reconstructor\n)R")->kind, Kind::Object);
  EXPECT_NE(error_of("c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x9c\x93X\x06\x00\x00\x00latin1\x86R."s).find("Latin-1"),
            std::string::npos);
}

TEST(PickleReader, ReduceHookComesFirst) {
  std::vector<std::string> seen;
  UnpickleHooks hooks;
  hooks.reduce = [&](const GlobalRef& g, const ValuePtr& args) -> ValuePtr {
    seen.push_back(g.module + "." + g.name + "/" + std::to_string(args->items().size()));
    if (g.name == "rebuild") return Value::tensor({});
    return nullptr;
  };
  ValuePtr v = load("(ctorch\nrebuild\nK\x01\x85Rccollections\nOrderedDict\n)Rcfoo\nC\n)\x81l", hooks);
  EXPECT_EQ(v->items()[0]->kind, Kind::Tensor);
  EXPECT_TRUE(v->items()[1]->dict().ordered);
  EXPECT_EQ(v->items()[2]->kind, Kind::Object);
  EXPECT_EQ(seen, (std::vector<std::string>{"torch.rebuild/1", "collections.OrderedDict/0", "foo.C/0"}));
}

TEST(PickleReader, UnsupportedOpcodes) {
  EXPECT_NE(error_of("\x82\x01."s).find("extension registry"), std::string::npos);
  EXPECT_NE(error_of("\x83\x01\x00."s).find("extension registry"), std::string::npos);
  EXPECT_NE(error_of("\x84\x01\x00\x00\x00."s).find("extension registry"), std::string::npos);
  EXPECT_NE(error_of("\x97."s).find("out-of-band"), std::string::npos);
  EXPECT_NE(error_of("\x98."s).find("out-of-band"), std::string::npos);
}

TEST(PickleReader, ConsumedStopsAfterStop) {
  std::string two = "\x80\x02K\x01.\x80\x02K\x02."s;
  UnpickleResult first = unpickle(two);
  EXPECT_EQ(first.value->as_int(), 1);
  EXPECT_EQ(first.consumed, 5u);
  EXPECT_EQ(unpickle(std::string_view(two).substr(first.consumed)).value->as_int(), 2);
}

TEST(PickleReader, ErrorsNameOffsetAndOpcode) {
  EXPECT_EQ(error_of("\x80\x02h\x05."s), "pickle: memo key 5 missing at byte 2 (opcode 0x68)");
  EXPECT_EQ(error_of("\x80\x02\xff."s), "pickle: unknown opcode at byte 2 (opcode 0xff)");
  EXPECT_EQ(error_of("\x80\x06."s), "pickle: unsupported protocol 6 at byte 0 (opcode 0x80)");
  EXPECT_EQ(error_of("."), "pickle: stack underflow at byte 0 (opcode 0x2e)");
  EXPECT_EQ(error_of(""), "pickle: truncated data: no STOP opcode at byte 0 (opcode 0x00)");
}

TEST(PickleReader, HostileLengthsAreRejectedBeforeAllocating) {
  EXPECT_NE(error_of("X\xff\xff\xff\xff."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("\x8e\xff\xff\xff\xff\xff\xff\xff\xff."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("\x96\xff\xff\xff\xff\xff\xff\xff\xff."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("\x8b\xff\xff\xff\x7f."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("\x8b\xff\xff\xff\xff."s).find("negative"), std::string::npos);
  EXPECT_NE(error_of("T\xff\xff\xff\xff."s).find("negative"), std::string::npos);
  EXPECT_NE(error_of("\x95\xff\xff\xff\xff\xff\xff\xff\xff."s).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of("L" + std::string(5000, '7') + "\n.").find("digits"), std::string::npos);
}

TEST(PickleReader, MalformedInput) {
  auto fails = [](const std::string& data) {
    EXPECT_THROW(unpickle(data), FormatError) << describe(*Value::bytes(data));
  };
  fails("]e.");                          // APPENDS without MARK
  fails("](a.");                         // APPEND with nothing above the MARK
  fails("K\x01" "a.");                   // APPEND to an int
  fails("]N\x85" "b.");                  // BUILD on a tuple
  fails("]]b.");                         // BUILD on a list
  fails("}]K\x01s.");                    // list as dict key
  fails("}(]K\x01u.");                   // list as dict key, SETITEMS
  fails("}(K\x01u.");                    // odd SETITEMS
  fails("(K\x01" "d.");                  // odd DICT
  fails("\x8f(]\x90.");                  // list in a set
  fails("K\x01K\x02\x93.");              // STACK_GLOBAL of ints
  fails("\x8c\x02" "a\n\x8c\x01" "b\x93.");  // newline in a global name
  fails("K\x01K\x02R.");                 // REDUCE with non-tuple args
  fails("X\x01\x00\x00\x00\xff."s);      // invalid UTF-8
  fails("X\x02\x00\x00\x00\xc0\x80."s);  // overlong UTF-8
  fails("cfoo\n");                       // truncated line
  fails("S'abc\n.");                     // unterminated quote
  fails("Vab\\u12\n.");                  // truncated \u escape
  fails("Ix\n.");                        // bad int text
  fails("Fx\n.");                        // bad float text
  fails("gx\n.");                        // bad memo index
  fails("p1\n.");                        // PUT on empty stack
  fails("o.");                           // OBJ without MARK
  fails("(o.");                          // OBJ without class
  fails("K\x01\x86.");                   // TUPLE2 underflow
  fails("Px\n.");                        // PERSID without loader
}

TEST(PickleReader, Limits) {
  UnpickleLimits tiny;
  tiny.max_stack = 3;
  EXPECT_NE(error_of("NNNN....", {}, tiny).find("stack grows"), std::string::npos);
  tiny = {};
  tiny.max_memo = 2;
  EXPECT_NE(error_of("Nq\x00q\x01q\x02."s, {}, tiny).find("memo grows"), std::string::npos);
  tiny = {};
  tiny.max_depth = 3;
  EXPECT_NE(error_of("((((.", {}, tiny).find("MARKs nested"), std::string::npos);
  EXPECT_NE(error_of("]]]]aaa.", {}, tiny).find("nested deeper"), std::string::npos);
  EXPECT_EQ(unpickle("]]]aa.", {}, tiny).value->items()[0]->items()[0]->items().size(), 0u);
}

TEST(PickleReader, DeepNestingIsAnErrorNotACrash) {
  const size_t n = 100000;
  EXPECT_NE(error_of(std::string(n, '(') + ".").find("MARKs nested deeper than 1000"), std::string::npos);
  EXPECT_NE(error_of(std::string(n, ']') + std::string(n - 1, 'a') + ".").find("nested deeper than 1000"),
            std::string::npos);
  EXPECT_NE(error_of(")" + std::string(n, '\x85') + ".").find("nested deeper than 1000"), std::string::npos);

  // A chain built through the memo, with a constant stack: [[[[...]]]].
  std::string chain = "]r" + le(0, 4);
  for (uint32_t i = 1; i < n; ++i) chain += "j" + le(i - 1, 4) + "]r" + le(i, 4) + "a0";
  EXPECT_NE(error_of(chain + ".").find("nested deeper"), std::string::npos);
  // The same chain dropped from the stack is still checked (it would be freed recursively).
  EXPECT_NE(error_of(chain + "0N.").find("nested deeper"), std::string::npos);
  // A truncated chain is torn down without recursion.
  EXPECT_THROW(unpickle(chain), FormatError);
}

TEST(PickleReader, CyclesAreRejected) {
  EXPECT_NE(error_of("]q\x00h\x00" "a."s).find("cycle"), std::string::npos);
  EXPECT_NE(error_of("]q\x00h\x00\x85q\x01" "a0h\x01."s).find("cycle"), std::string::npos);
  EXPECT_NE(error_of("cfoo\nC\n)\x81q\x00}K\x01h\x00sb."s).find("cycle"), std::string::npos);
}

TEST(PickleReader, HugeKeysAreRejected) {
  // A tuple DAG whose unfolding has 2**200 nodes, used as a dict key.
  std::string dag = "}K\x01";
  for (int i = 0; i < 200; ++i) dag += "2\x86";
  EXPECT_NE(error_of(dag + "Ns.").find("key too large"), std::string::npos);
  // Without being hashed, the same DAG is a fine value.
  EXPECT_EQ(unpickle(dag + ".").value->kind, Kind::Tuple);
  EXPECT_NE(error_of("})" + std::string(2000, '\x85') + "Ns.").find("key"),
            std::string::npos);
}

TEST(PickleReader, RandomCorruptionNeverCrashes) {
  std::mt19937 rng(1234);
  for (const char* name : {"nested_p0.pkl", "nested_p2.pkl", "nested_p4.pkl", "nested_p5.pkl", "persid_p2.pkl",
                           "w_batches.pkl"}) {
    std::string data = fixture(name);
    for (int round = 0; round < 1500; ++round) {
      std::string bad = data;
      int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) bad[rng() % bad.size()] = static_cast<char>(rng());
      try {
        unpickle(bad);
      } catch (const FormatError&) {
      }
    }
  }
}

}  // namespace
}  // namespace fabricckpt
