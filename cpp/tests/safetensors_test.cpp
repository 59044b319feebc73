// The torch-free safetensors reader and writer: layouts as safetensors 0.8's save_file writes them
// (the bytes below are its output), and every hostile header refused with the file and the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safetensors.h"

namespace fs = std::filesystem;
using namespace fabricckpt;
namespace st = fabricckpt::safetensors;

namespace {

std::string with_length(const std::string& json, const std::string& data = {}) {
  std::string out;
  const uint64_t n = json.size();
  for (int k = 0; k < 8; ++k) out += static_cast<char>((n >> (8 * k)) & 0xff);
  return out + json + data;
}

st::Header parse(const std::string& bytes) { return st::read_header(MemorySource(bytes, "bad.safetensors")); }

std::string error_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "no error";
}

std::string written(const std::vector<st::TensorData>& tensors, const std::optional<st::Metadata>& metadata = {}) {
  StringSink sink;
  st::write_stream(sink, tensors, metadata);
  return sink.str();
}

}  // namespace

TEST(Safetensors, DtypesAreTheCratesWithTheirSizes) {
  EXPECT_EQ(st::dtype_of_name("BF16"), st::Dtype::BF16);
  EXPECT_EQ(st::dtype_bits(st::Dtype::F4), 4u);
  EXPECT_EQ(st::dtype_bits(st::Dtype::F6_E3M2), 6u);
  EXPECT_EQ(st::dtype_bits(st::Dtype::C64), 64u);
  EXPECT_EQ(st::dtype_bits(st::Dtype::F8_E8M0), 8u);
  EXPECT_EQ(st::dtype_name(st::Dtype::F8_E4M3FNUZ), "F8_E4M3FNUZ");
  EXPECT_FALSE(st::dtype_of_name("F128").has_value());
  for (const char* name : {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
                           "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2",
                           "C64"}) {
    const auto dtype = st::dtype_of_name(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_EQ(st::dtype_name(*dtype), name);
  }
}

TEST(Safetensors, WritesWhatSaveFileWrites) {
  // save_file({'a': torch.zeros(1)}) in safetensors 0.8.0.
  const float zero = 0;
  const std::string bytes = written({{"a", st::Dtype::F32, {1}, &zero, 4}});
  const std::string json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}  ";
  EXPECT_EQ(bytes, with_length(json, std::string(4, '\0')));
  // save({}) and save({}, metadata={'format': 'pt'})
  EXPECT_EQ(written({}), with_length("{}      "));
  EXPECT_EQ(written({}, st::Metadata{{"format", "pt"}}), with_length("{\"__metadata__\":{\"format\":\"pt\"}}"));
}

TEST(Safetensors, SortsByDtypeThenNameAndEscapesAsSerde) {
  // save({'b': zeros(3), 'a': int8 [2], 'c': float64 [2,2], 'z0': bfloat16 0-d, 'e': zeros(0, 3),
  //       'bo': bool [2], 'f8': float8_e4m3fn [3], 'u': uint16 [2], 'c64': complex64 [1],
  //       'e8': float8_e8m0fnu [2]}, metadata={'format': 'pt', 'x': 'é"\\\n\x01'}) (one metadata
  // order of the two the Rust HashMap picks from).
  std::string data(67, '\0');
  const std::vector<st::TensorData> tensors = {
      {"b", st::Dtype::F32, {3}, data.data(), 12},       {"a", st::Dtype::I8, {2}, data.data(), 2},
      {"c", st::Dtype::F64, {2, 2}, data.data(), 32},    {"z0", st::Dtype::BF16, {}, data.data(), 2},
      {"e", st::Dtype::F32, {0, 3}, nullptr, 0},         {"bo", st::Dtype::BOOL, {2}, data.data(), 2},
      {"f8", st::Dtype::F8_E4M3, {3}, data.data(), 3},   {"u", st::Dtype::U16, {2}, data.data(), 4},
      {"c64", st::Dtype::C64, {1}, data.data(), 8},      {"e8", st::Dtype::F8_E8M0, {2}, data.data(), 2},
  };
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"\xc3\xa9\\\"\\\\\\n\\u0001\"},"
      "\"c\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[0,32]},"
      "\"c64\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[32,40]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[40,52]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[52,52]},"
      "\"z0\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[52,54]},"
      "\"u\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[54,58]},"
      "\"e8\":{\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[58,60]},"
      "\"f8\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[60,63]},"
      "\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[63,65]},"
      "\"bo\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[65,67]}}    ";
  const std::string bytes = written(tensors, st::Metadata{{"format", "pt"}, {"x", "\xc3\xa9\"\\\n\x01"}});
  ASSERT_EQ(bytes.substr(0, 8 + json.size()), with_length(json));
  EXPECT_EQ(bytes.size(), 8 + json.size() + 67);

  // And it reads back: data order, metadata in order, escapes decoded.
  const st::Header header = parse(bytes);
  ASSERT_EQ(header.tensors.size(), 10u);
  EXPECT_EQ(header.tensors[0].name, "c");
  EXPECT_EQ(header.tensors[9].name, "bo");
  EXPECT_EQ(header.find("z0")->shape.size(), 0u);
  EXPECT_EQ(header.find("e")->nbytes(), 0u);
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ((*header.metadata)[1].second, "\xc3\xa9\"\\\n\x01");
  EXPECT_EQ(header.data_start(), 8 + json.size());
}

TEST(Safetensors, WriteFileIsAtomicAndPlacesLargeTensors) {
  const fs::path dir = fs::temp_directory_path() / "fabricckpt_st_write";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<uint8_t> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  const uint16_t small[3] = {1, 2, 3};
  const std::vector<st::TensorData> tensors = {{"big", st::Dtype::U8, {big.size()}, big.data(), big.size()},
                                               {"small", st::Dtype::F16, {3}, small, 6}};
  const std::string path = (dir / "m.safetensors").string();
  st::write_file(path, tensors, st::Metadata{{"format", "pt"}}, false);
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(file, written(tensors, st::Metadata{{"format", "pt"}}));
  const auto mapped = MappedFile::open(path);
  const st::Header header = st::read_header(*mapped);
  EXPECT_EQ(header.find("big")->begin, 6u);  // after the three F16s: larger dtypes first
  // A refused write leaves the old file as it was.
  const std::vector<st::TensorData> bad = {{"x", st::Dtype::F32, {2}, small, 6}};
  EXPECT_THROW(st::write_file(path, bad, {}, false), StateError);
  EXPECT_EQ(fs::file_size(path), file.size());
  fs::remove_all(dir);
}

TEST(Safetensors, WriterRefusesWhatTheFormatCannotHold) {
  const float f[2] = {};
  auto message = [](const std::vector<st::TensorData>& t, const std::optional<st::Metadata>& m = {}) {
    try {
      st::plan_layout(t, m, "out.safetensors");
    } catch (const StateError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"a", st::Dtype::F32, {3}, f, 8}}).find("'a' has 8 bytes"), std::string::npos);
  EXPECT_NE(message({{"a", st::Dtype::F32, {2}, f, 8}, {"a", st::Dtype::F32, {2}, f, 8}}).find("twice"),
            std::string::npos);
  EXPECT_NE(message({{"\xff", st::Dtype::F32, {2}, f, 8}}).find("not UTF-8"), std::string::npos);
  EXPECT_NE(message({}, st::Metadata{{"k", "\xc0\x80"}}).find("not UTF-8"), std::string::npos);
  EXPECT_NE(message({{"__metadata__", st::Dtype::F32, {2}, f, 8}}).find("__metadata__"), std::string::npos);
  EXPECT_NE(message({{"odd", st::Dtype::F4, {3}, f, 1}}).find("odd"), std::string::npos);
}

TEST(Safetensors, ReadsWhatTheCrateReads) {
  // White space, unknown tensor fields, null metadata, escapes in names, empty files of tensors.
  const std::string json =
      " { \"__metadata__\" : null , \"w\\u00e9\\ud83d\\ude00\" : {\"shape\":[2],\"extra\":{\"a\":[1,2.5e3,true,null]},"
      "\"dtype\":\"F16\",\"data_offsets\":[0,4]}}\n\t ";
  const st::Header header = parse(with_length(json, "abcd"));
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].name, "w\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_FALSE(header.metadata.has_value());
  EXPECT_TRUE(parse(with_length("{}")).tensors.empty());
  EXPECT_TRUE(st::looks_like_safetensors(MemorySource(with_length("{}"), "x")));
  EXPECT_FALSE(st::looks_like_safetensors(MemorySource("PK\x03\x04 and more bytes", "x")));
}

TEST(Safetensors, HostileHeadersAreRefusedWithTheFileAndTheProblem) {
  const std::string t = "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
  struct Case {
    std::string bytes;
    std::string expected;
  };
  std::string giant(8, '\0');
  giant[0] = '\x01';
  giant[4] = '\x01';  // 2^32 + 1
  const std::vector<Case> cases = {
      {"abc", "too small"},
      {giant + "{}", "over the 100000000-byte limit"},
      {std::string("\x10\0\0\0\0\0\0\0{}", 10), "runs past the end"},
      {with_length("{" + t + "}", "ab"), "offsets past the end"},
      {with_length("{" + t + "}", "abcdef"), "bytes left over"},
      {with_length("{" + t + "," + t + "}", "abcd"), "appears twice"},
      {with_length("{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"), "unknown dtype 'F33'"},
      {with_length("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "abcd"), "needs 8 bytes"},
      {with_length("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "abcdefgh"), "a hole"},
      {with_length("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", "abcdef"), "overlaps"},
      {with_length("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", "abcd"), "reversed"},
      {with_length("{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", "a"), "byte boundary"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}", "a"),
       "overflows"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", "a"), "non-negative integer"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", "a"), "not an integer"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,1]}}", "a"),
       "too large"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "a"),
       "duplicate field"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", "a"), "lacks data_offsets"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", "a"), "exactly two"},
      {with_length("{\"t\xff\":{}}"), "not UTF-8"},
      {with_length("{\"t\\ud800\":{}}"), "lone leading surrogate"},
      {with_length("{\"t\\q\":{}}"), "invalid escape"},
      {with_length(std::string("{\"t\x01\":{}}")), "control character"},
      {with_length("{\"__metadata__\":{\"a\":1}}"), "expected a string"},
      {with_length("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}"), "duplicate __metadata__ key"},
      {with_length("{} x"), "trailing characters"},
      {with_length("[]"), "'{' opening the header"},
      {with_length("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]"), "unexpected end"},
      {with_length("{\"t\":{\"x\":" + std::string(200, '[') + std::string(200, ']') +
                   ",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "a"), "deeper than 128"},
      {with_length("{\"t\":{\"x\":01,\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "a"), "expected"},
  };
  for (const auto& c : cases) {
    const std::string message = error_of(c.bytes);
    EXPECT_NE(message.find("bad.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << "expected '" << c.expected << "' in: " << message;
  }
}

TEST(Safetensors, ShardIndexAsHuggingFaceHubWritesIt) {
  // save_torch_state_dict(..., max_shard_size=2048) of huggingface_hub 2.4.0.
  const std::string json = R"({
  "metadata": {
    "total_size": 5120
  },
  "weight_map": {
    "l0.w": "model-00001-of-00003.safetensors",
    "l1.w": "model-00001-of-00003.safetensors",
    "l2.w": "model-00002-of-00003.safetensors"
  }
})";
  const st::ShardIndex index = st::parse_index(json, "model.safetensors.index.json");
  ASSERT_EQ(index.weight_map.size(), 3u);
  EXPECT_EQ(index.weight_map[2], (std::pair<std::string, std::string>{"l2.w", "model-00002-of-00003.safetensors"}));
  EXPECT_EQ(index.files, (std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"}));
  for (const auto& [bad, expected] : std::vector<std::pair<std::string, std::string>>{
           {R"({"weight_map": {"a": "../etc/passwd"}})", "not a file name beside the index"},
           {R"({"weight_map": {"a": ".."}})", "not a file name beside the index"},
           {R"({"weight_map": {"a": "x", "a": "y"}})", "mapped twice"},
           {R"({"metadata": {}})", "no weight_map"},
           {R"({"weight_map": {"a": 1}})", "expected a string"},
           {R"({"weight_map": {}, "weight_map": {}})", "appears twice"}}) {
    try {
      st::parse_index(bad, "idx.json");
      ADD_FAILURE() << "no error for " << bad;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("idx.json"), std::string::npos) << e.what();
    }
  }
}

namespace {

// huggingface_hub 2.4's split_torch_state_dict_into_shards, on its own docstring's example and on
// the cases it treats apart (expected shards written down from running it).
TEST(HuggingFaceIndex, SplitsAsSaveTorchStateDictDoes) {
  auto items = [](const std::vector<std::pair<uintptr_t, uint64_t>>& storages) {
    std::vector<st::ShardItem> out;
    for (size_t i = 0; i < storages.size(); ++i) out.push_back({"t" + std::to_string(i), storages[i].first, storages[i].second});
    return out;
  };
  // [6, 6, 2, 6, 2, 2] GB with 10 GB shards: [6], [6+2], [6+2+2], in order, no packing.
  st::ShardSplit split = st::split_into_shards(items({{1, 6}, {2, 6}, {3, 2}, {4, 6}, {5, 2}, {6, 2}}), 10);
  EXPECT_EQ(split.shards, (std::vector<std::vector<size_t>>{{0}, {1, 2}, {3, 4, 5}}));
  EXPECT_EQ(split.total_size, 24u);
  // A storage larger than a shard gets one of its own at once, before the shard being filled.
  split = st::split_into_shards(items({{1, 4}, {2, 20}, {3, 4}, {4, 4}}), 10);
  EXPECT_EQ(split.shards, (std::vector<std::vector<size_t>>{{1}, {0, 2}, {3}}));
  // Tensors viewing one storage count it once and follow its first tensor's shard, at its end.
  split = st::split_into_shards(items({{1, 8}, {2, 8}, {1, 8}, {0, 0}, {3, 1}, {0, 0}}), 10);
  EXPECT_EQ(split.shards, (std::vector<std::vector<size_t>>{{0, 2}, {1, 3, 4, 5}}));
  EXPECT_EQ(split.total_size, 17u);
  EXPECT_TRUE(st::split_into_shards({}, 10).shards.empty());
}

TEST(HuggingFaceIndex, IndexTextIsWhatJsonDumpWrites) {
  // Python: json.dumps({"metadata": {"total_size": 12, "n": ...}, "weight_map": {...}}, indent=2)
  EXPECT_EQ(st::index_json(12, {{"n", "a\"\\\n\x01\x7f \xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80 ~"}},
                           {{"a", "f1"}, {"b", "f2"}}),
            "{\n  \"metadata\": {\n    \"total_size\": 12,\n    \"n\": \"a\\\"\\\\\\n\\u0001\\u007f \\u00e9 \\u65e5 "
            "\\ud83d\\ude00 ~\"\n  },\n  \"weight_map\": {\n    \"a\": \"f1\",\n    \"b\": \"f2\"\n  }\n}");
  EXPECT_EQ(st::index_json(0, {}, {}), "{\n  \"metadata\": {\n    \"total_size\": 0\n  },\n  \"weight_map\": {}\n}");
  EXPECT_EQ(st::shard_file_name("model", 2, 13), "model-00002-of-00013.safetensors");
  std::string stem;
  EXPECT_TRUE(is_safetensors_index_name("dir/model.safetensors.index.json", &stem));
  EXPECT_EQ(stem, "dir/model");
  EXPECT_FALSE(is_safetensors_index_name("dir/model.safetensors"));
  for (const char* name : {"model.safetensors", "model-00002-of-00013.safetensors", "model.safetensors.index.json",
                           "model-00001-of-00001.safetensors.index.json"}) {
    EXPECT_TRUE(st::is_file_of_pattern(name, "model")) << name;
  }
  for (const char* name : {"config.json", "model-1-of-2.safetensors", "model-0000a-of-00002.safetensors",
                           "other.safetensors", "model.safetensors.bak"}) {
    EXPECT_FALSE(st::is_file_of_pattern(name, "model")) << name;
  }
}

TEST(HuggingFaceIndex, ReadsMetadataStringsAndMergesShardsInTheIndexsOrder) {
  const std::string text = st::index_json(9, {{"note", "\xc3\xa9"}, {"tied", "a"}}, {{"b", "f1"}, {"a", "f2"}, {"c", "f1"}});
  const st::ShardIndex index = st::parse_index(text, "m.safetensors.index.json");
  EXPECT_EQ(index.metadata, (st::Metadata{{"note", "\xc3\xa9"}, {"tied", "a"}}));  // total_size is not a string
  EXPECT_EQ(index.files, (std::vector<std::string>{"f1", "f2"}));

  auto shard = [](std::vector<std::string> names) {
    ValuePtr d = Value::plain_dict();
    for (const auto& n : names) d->dict().set(Value::string(n), Value::string("tensor " + n));
    return d;
  };
  const ValuePtr merged = st::merge_shards(index, {shard({"c", "b", "extra"}), shard({"a"})}, "m.safetensors.index.json");
  std::vector<std::string> order;
  for (const auto& [k, v] : merged->dict().items()) order.push_back(k->as_string());
  EXPECT_EQ(order, (std::vector<std::string>{"b", "a", "c", "extra"}));
  for (const auto& [shards, expected] : std::vector<std::pair<std::vector<ValuePtr>, std::string>>{
           {{shard({"b", "c"}), shard({"a", "b"})}, "tensor 'b' is in both f1 and f2"},
           {{shard({"b", "c", "a"}), shard({})}, "maps tensor 'a' to f2, which does not hold it"}}) {
    try {
      st::merge_shards(index, shards, "m.safetensors.index.json");
      ADD_FAILURE() << "no error for " << expected;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("m.safetensors.index.json"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
