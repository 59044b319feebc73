#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "fabricckpt/error.h"
#include "fabricckpt/value.h"

namespace fabricckpt {
namespace {

using namespace std::string_literals;

TEST(Value, FactoriesSetKind) {
  EXPECT_EQ(Value::none()->kind, Kind::None);
  EXPECT_TRUE(Value::boolean(true)->as_bool());
  EXPECT_EQ(Value::integer(-7)->as_int(), -7);
  EXPECT_EQ(Value::floating(2.5)->as_float(), 2.5);
  EXPECT_EQ(Value::string("s")->as_string(), "s");
  EXPECT_EQ(Value::bytes("b")->kind, Kind::Bytes);
  EXPECT_EQ(Value::tuple({Value::none()})->items().size(), 1u);
  EXPECT_EQ(Value::list()->kind, Kind::List);
  EXPECT_EQ(Value::set()->kind, Kind::Set);
  EXPECT_EQ(Value::frozenset()->kind, Kind::FrozenSet);
  EXPECT_FALSE(Value::plain_dict()->dict().ordered);
  EXPECT_TRUE(Value::ordered_dict()->dict().ordered);
  EXPECT_EQ(Value::global("torch", "float32")->global_ref().name, "float32");
  EXPECT_EQ(Value::object({})->kind, Kind::Object);
  EXPECT_EQ(Value::tensor({})->tensor_ref().location, "cpu");
  EXPECT_EQ(Value::storage({nullptr, "FloatStorage"})->storage_ref().type_name, "FloatStorage");
  // CPython's singletons are one node each; everything else is a new node per call.
  EXPECT_EQ(Value::none().get(), Value::none().get());
  EXPECT_EQ(Value::boolean(false).get(), Value::boolean(false).get());
  EXPECT_NE(Value::boolean(false).get(), Value::boolean(true).get());
  EXPECT_EQ(Value::integer(-5).get(), Value::integer(-5).get());
  EXPECT_EQ(Value::integer(256).get(), Value::integer(256).get());
  EXPECT_EQ(Value::integer(256)->as_int(), 256);
  EXPECT_NE(Value::integer(257).get(), Value::integer(257).get());
  EXPECT_NE(Value::integer(-6).get(), Value::integer(-6).get());
  EXPECT_NE(Value::floating(0.0).get(), Value::floating(0.0).get());
  EXPECT_NE(Value::string("s").get(), Value::string("s").get());
}

TEST(Value, BigIntegerNormalisesToIntWhenItFits) {
  EXPECT_EQ(Value::big_integer("")->as_int(), 0);
  EXPECT_EQ(Value::big_integer("\xff"s)->as_int(), -1);
  EXPECT_EQ(Value::big_integer("\x00\x00\x00"s)->as_int(), 0);
  EXPECT_EQ(Value::big_integer("\xff\x7f"s)->as_int(), 0x7fff);
  EXPECT_EQ(Value::big_integer("\x00\x80\xff\xff"s)->as_int(), -32768);
  EXPECT_EQ(Value::big_integer("\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00"s)->as_int(), INT64_MAX);
  EXPECT_EQ(Value::big_integer("\x00\x00\x00\x00\x00\x00\x00\x80\xff"s)->as_int(), INT64_MIN);

  ValuePtr big = Value::big_integer("\x00\x00\x00\x00\x00\x00\x00\x80\x00\x00\x00"s);  // 2**63, padded
  ASSERT_EQ(big->kind, Kind::BigInt);
  EXPECT_EQ(big->as_string(), "\x00\x00\x00\x00\x00\x00\x00\x80\x00"s);  // minimal form
  ValuePtr negative = Value::big_integer("\xff\xff\xff\xff\xff\xff\xff\x7f\xff\xff"s);  // -2**63-1
  EXPECT_EQ(negative->as_string(), "\xff\xff\xff\xff\xff\xff\xff\x7f\xff"s);
}

TEST(Value, CheckedAccessorsNameExpectedAndActualKinds) {
  try {
    Value::string("x")->as_int();
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_STREQ(e.what(), "expected int, got str");
  }
  EXPECT_THROW(Value::integer(1)->as_bool(), FormatError);
  EXPECT_THROW(Value::none()->items(), FormatError);
  EXPECT_THROW(Value::list()->dict(), FormatError);
  EXPECT_THROW(Value::plain_dict()->object_ref(), FormatError);
  EXPECT_THROW(Value::none()->global_ref(), FormatError);
  EXPECT_THROW(Value::none()->tensor_ref(), FormatError);
  EXPECT_THROW(Value::none()->storage_ref(), FormatError);
  EXPECT_THROW(Value::list()->as_string(), FormatError);
  EXPECT_EQ(Value::integer(3)->as_float(), 3.0);  // ints widen to float
  EXPECT_THROW(Value::string("1")->as_float(), FormatError);
}

TEST(Value, KindNames) {
  EXPECT_STREQ(kind_name(Kind::String), "str");
  EXPECT_STREQ(kind_name(Kind::FrozenSet), "frozenset");
  EXPECT_STREQ(kind_name(Kind::Storage), "storage");
}

TEST(Dict, SetReplacesInPlaceAndKeepsOrder) {
  Dict d;
  d.set(Value::string("a"), Value::integer(1));
  d.set(Value::string("b"), Value::integer(2));
  ValuePtr original_key = d.items()[0].first;
  d.set(Value::string("a"), Value::integer(3));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.items()[0].first, original_key);  // Python keeps the first key object
  EXPECT_EQ(d.items()[0].second->as_int(), 3);
  EXPECT_EQ(d.get("b")->as_int(), 2);
  EXPECT_EQ(d.get(*Value::string("a"))->as_int(), 3);
  EXPECT_EQ(d.get("missing"), nullptr);
  EXPECT_EQ(d.get(*Value::bytes("a")), nullptr);  // b'a' != 'a'
}

TEST(Dict, EraseKeepsOrderAndIndex) {
  Dict d;
  for (int i = 0; i < 10; ++i) d.set(Value::integer(i), Value::integer(i * 10));
  EXPECT_TRUE(d.erase(*Value::integer(3)));
  EXPECT_FALSE(d.erase(*Value::integer(3)));
  ASSERT_EQ(d.size(), 9u);
  EXPECT_EQ(d.items()[3].first->as_int(), 4);
  for (int i = 0; i < 10; ++i) {
    if (i == 3) continue;
    ASSERT_NE(d.get(*Value::integer(i)), nullptr) << i;
    EXPECT_EQ(d.get(*Value::integer(i))->as_int(), i * 10);
  }
}

TEST(Dict, NumericKeysFollowPythonEquality) {
  Dict d;
  d.set(Value::integer(1), Value::string("int"));
  d.set(Value::floating(1.0), Value::string("float"));
  d.set(Value::boolean(true), Value::string("bool"));
  ASSERT_EQ(d.size(), 1u);  // 1 == 1.0 == True
  EXPECT_EQ(d.items()[0].first->kind, Kind::Int);
  EXPECT_EQ(d.get(*Value::floating(1.0))->as_string(), "bool");

  ValuePtr two_70 = Value::big_integer(std::string(8, '\0') + "\x40"s);  // 2**70
  d.set(two_70, Value::string("big"));
  EXPECT_EQ(d.get(*Value::floating(std::ldexp(1.0, 70)))->as_string(), "big");
  EXPECT_EQ(d.get(*Value::floating(-std::ldexp(1.0, 70))), nullptr);
  EXPECT_EQ(d.get(*Value::floating(1.5)), nullptr);
}

TEST(Dict, UnhashableKeysThrow) {
  Dict d;
  EXPECT_THROW(d.set(Value::list(), Value::none()), FormatError);
  EXPECT_THROW(d.set(Value::plain_dict(), Value::none()), FormatError);
  EXPECT_THROW(d.set(Value::set(), Value::none()), FormatError);
  EXPECT_THROW(d.set(Value::tuple({Value::list()}), Value::none()), FormatError);
  try {
    key_hash(*Value::list());
  } catch (const FormatError& e) {
    EXPECT_STREQ(e.what(), "unhashable type: 'list'");
  }
}

TEST(KeysEqual, PythonEquality) {
  auto t = [](std::initializer_list<ValuePtr> items) { return Value::tuple(items); };
  EXPECT_TRUE(keys_equal(*t({Value::integer(1), Value::string("a")}), *t({Value::floating(1.0), Value::string("a")})));
  EXPECT_FALSE(keys_equal(*t({Value::integer(1)}), *Value::list({Value::integer(1)})));
  EXPECT_TRUE(keys_equal(*Value::frozenset({Value::integer(1), Value::integer(2)}),
                         *Value::frozenset({Value::integer(2), Value::integer(1)})));
  EXPECT_EQ(key_hash(*Value::frozenset({Value::integer(1), Value::integer(2)})),
            key_hash(*Value::frozenset({Value::integer(2), Value::integer(1)})));
  EXPECT_TRUE(keys_equal(*Value::set({Value::integer(1)}), *Value::frozenset({Value::integer(1)})));
  EXPECT_TRUE(keys_equal(*Value::none(), *Value::none()));
  EXPECT_TRUE(keys_equal(*Value::global("a", "b"), *Value::global("a", "b")));
  EXPECT_FALSE(keys_equal(*Value::global("a", "b"), *Value::global("a", "c")));
  EXPECT_FALSE(keys_equal(*Value::string("a"), *Value::bytes("a")));
  EXPECT_FALSE(keys_equal(*Value::object({}), *Value::object({})));  // identity
  ValuePtr nan = Value::floating(NAN);
  EXPECT_TRUE(keys_equal(*nan, *nan));  // the same object
  EXPECT_FALSE(keys_equal(*nan, *Value::floating(NAN)));
  EXPECT_EQ(key_hash(*Value::integer(-5)), key_hash(*Value::floating(-5.0)));
  EXPECT_EQ(key_hash(*Value::integer(1)), key_hash(*Value::boolean(true)));

  ValuePtr a = Value::plain_dict(), b = Value::plain_dict();
  a->dict().set(Value::string("x"), Value::integer(1));
  a->dict().set(Value::string("y"), Value::integer(2));
  b->dict().set(Value::string("y"), Value::integer(2));
  b->dict().set(Value::string("x"), Value::integer(1));
  EXPECT_TRUE(keys_equal(*a, *b));
}

TEST(Describe, ShortPythonLikeRendering) {
  ValuePtr d = Value::plain_dict();
  d->dict().set(Value::string("a"), Value::list({Value::integer(1), Value::floating(2.5), Value::none()}));
  d->dict().set(Value::integer(2), Value::tuple({Value::boolean(true)}));
  EXPECT_EQ(describe(*d), "{'a': [1, 2.5, None], 2: (True,)}");
  EXPECT_EQ(describe(*Value::floating(3.0)), "3.0");
  EXPECT_EQ(describe(*Value::bytes("a'\n\x01")), "b'a\\'\\n\\x01'");
  EXPECT_EQ(describe(*Value::big_integer(std::string(12, '\0') + "\x10"s)), "1267650600228229401496703205376");
  EXPECT_EQ(describe(*Value::big_integer(std::string(12, '\0') + "\xf0"s)), "-1267650600228229401496703205376");
  EXPECT_EQ(describe(*Value::global("torch", "float32")), "torch.float32");
  EXPECT_EQ(describe(*Value::set()), "set()");
  ValuePtr od = Value::ordered_dict();
  od->dict().set(Value::string("w"), Value::tensor({}));
  EXPECT_EQ(describe(*od), "OrderedDict({'w': <tensor on cpu>})");
  Object o;
  o.callable = Value::global("argparse", "Namespace");
  EXPECT_EQ(describe(*Value::object(o)), "<argparse.Namespace(...)>");
}

TEST(Describe, TruncatesAndStopsOnCycles) {
  Value::Items many;
  for (int i = 0; i < 1000; ++i) many.push_back(Value::integer(i));
  std::string s = describe(*Value::list(many), 20);
  EXPECT_EQ(s.size(), 20u);
  EXPECT_EQ(s.substr(17), "...");

  ValuePtr loop = Value::list();
  loop->items().push_back(loop);  // a list that contains itself
  EXPECT_EQ(describe(*loop, 10), "[[[[[[[...");
  loop->items().clear();
}

}  // namespace
}  // namespace fabricckpt
