// torch.distributed.checkpoint metadata and state-dict flattening, against what Python wrote
// (python-compat-tests/fixtures/make_dcp_fixtures.py).
#include "fabricckpt/dcp.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "fabricckpt/error.h"

namespace fabricckpt::dcp {
namespace {

const std::string kData = std::string(FABRICCKPT_TEST_DATA) + "/dcp/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Metadata fixture() { return read_metadata(read_file(kData + "single/.metadata"), "single/.metadata"); }

// Python's flatten_state_dict(STATE) of the fixture script: key -> repr(path), in order.
std::vector<std::pair<std::string, std::string>> python_flat_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(read_file(kData + "flat_keys.txt"));
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.find('\t');
    out.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return out;
}

TEST(DcpMetadata, ReadsWhatPythonWrote) {
  Metadata m = fixture();
  EXPECT_EQ(m.version, "1.0.0");
  EXPECT_EQ(m.entries.size(), python_flat_keys().size());
  const Entry* weight = m.find("model.fc.weight");
  ASSERT_TRUE(weight && weight->tensor);
  EXPECT_EQ(weight->tensor->dtype, "float32");
  EXPECT_EQ(weight->tensor->size, (std::vector<int64_t>{4, 3}));
  ASSERT_EQ(weight->tensor->chunks.size(), 1u);
  EXPECT_EQ(weight->tensor->chunks[0].offsets, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(weight->tensor->chunks[0].sizes, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(m.find("model.fc.bias")->tensor->dtype, "float64");
  EXPECT_EQ(m.find("model.count")->tensor->size, std::vector<int64_t>{});  // a 0-dim tensor
  EXPECT_FALSE(m.find("epoch")->tensor);                                   // a value: torch.save'd bytes
  EXPECT_FALSE(m.find("optimizer.param_groups.0.params")->tensor);
  EXPECT_EQ(m.find("missing"), nullptr);

  // Every item lies inside the one data file.
  const size_t data_size = read_file(kData + "single/__0_0.distcp").size();
  ASSERT_EQ(m.storage.size(), m.entries.size());
  for (const auto& [key, info] : m.storage) {
    EXPECT_EQ(info.relative_path, "__0_0.distcp");
    EXPECT_LE(info.offset + info.length, data_size) << key.fqn;
    EXPECT_EQ(key.offset.has_value(), m.find(key.fqn)->tensor.has_value()) << key.fqn;
  }
  std::vector<int64_t> origin{0, 0};
  EXPECT_NE(m.storage_of("model.fc.weight", &origin), nullptr);
  EXPECT_NE(m.storage_of("epoch", nullptr), nullptr);
}

TEST(DcpMetadata, PlannerDataIsPythonsFlattening) {
  Metadata m = fixture();
  ASSERT_TRUE(m.has_planner_data);
  auto expected = python_flat_keys();
  ASSERT_EQ(m.planner_data.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto* path = m.path_of(expected[i].first);
    ASSERT_NE(path, nullptr) << expected[i].first;
    EXPECT_EQ(path_text(*path), expected[i].second);
  }
}

TEST(DcpMetadata, WriteThenReadKeepsEverything) {
  Metadata m = fixture();
  m.checkpoint_id = "/tmp/some dir/ckpt";
  Metadata back = read_metadata(write_metadata(m), "round trip");
  ASSERT_EQ(back.entries.size(), m.entries.size());
  for (size_t i = 0; i < m.entries.size(); ++i) {
    EXPECT_EQ(back.entries[i].key, m.entries[i].key);
    ASSERT_EQ(back.entries[i].tensor.has_value(), m.entries[i].tensor.has_value());
    if (m.entries[i].tensor) {
      EXPECT_EQ(back.entries[i].tensor->dtype, m.entries[i].tensor->dtype);
      EXPECT_EQ(back.entries[i].tensor->size, m.entries[i].tensor->size);
      EXPECT_EQ(back.entries[i].tensor->chunks.size(), m.entries[i].tensor->chunks.size());
    }
  }
  ASSERT_EQ(back.storage.size(), m.storage.size());
  for (size_t i = 0; i < m.storage.size(); ++i) {
    EXPECT_EQ(back.storage[i].first.fqn, m.storage[i].first.fqn);
    EXPECT_EQ(back.storage[i].first.offset, m.storage[i].first.offset);
    EXPECT_EQ(back.storage[i].second.offset, m.storage[i].second.offset);
    EXPECT_EQ(back.storage[i].second.length, m.storage[i].second.length);
  }
  EXPECT_EQ(back.planner_data, m.planner_data);
  EXPECT_EQ(back.checkpoint_id, "/tmp/some dir/ckpt");
  EXPECT_EQ(back.save_id, m.save_id);
}

TEST(DcpMetadata, StoragePathsCannotLeaveTheDirectory) {
  for (const char* bad : {"../outside.distcp", "/etc/passwd", "sub/__0_0.distcp", "..", ".", "", "a\\b"}) {
    Metadata m = fixture();
    m.storage[0].second.relative_path = bad;
    try {
      read_metadata(write_metadata(m), "ckpt/.metadata");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("ckpt/.metadata"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(is_plain_file_name("__0_0.distcp"));
}

TEST(DcpMetadata, ChunksMustLieInsideTheirTensor) {
  Metadata m = fixture();
  for (auto& e : m.entries) {
    if (e.tensor && !e.tensor->size.empty()) {
      e.tensor->chunks[0].sizes[0] += 1;
      break;
    }
  }
  EXPECT_THROW(read_metadata(write_metadata(m), "ckpt/.metadata"), FormatError);
}

TEST(DcpMetadata, EveryTruncationIsAFormatError) {
  const std::string bytes = read_file(kData + "single/.metadata");
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(read_metadata(std::string_view(bytes.data(), n), "cut"), FormatError) << n;
  }
}

TEST(DcpMetadata, OtherPicklesAreRefused) {
  Metadata m = fixture();
  std::string not_metadata = write_metadata(m);
  // Rename the class in the GLOBAL opcode: still a valid pickle, but not a Metadata.
  auto at = not_metadata.find("\nMetadata\n");
  ASSERT_NE(at, std::string::npos);
  not_metadata.replace(at, 10, "\nMetadatb\n");
  try {
    read_metadata(not_metadata, "x/.metadata");
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("x/.metadata"), std::string::npos);
  }
}

// The fixture script's STATE with placeholder tensors (flattening looks at kinds only).
ValuePtr fixture_state() {
  auto tensor = [] { return Value::tensor(TensorRef{}); };
  auto dict = [](std::vector<std::pair<std::string, ValuePtr>> items) {
    ValuePtr d = Value::plain_dict();
    for (auto& [k, v] : items) d->dict().set(Value::string(k), v);
    return d;
  };
  ValuePtr group = dict({{"lr", Value::floating(0.01)},
                         {"betas", Value::tuple({Value::floating(0.9), Value::floating(0.999)})},
                         {"foreach", Value::none()},
                         {"params", Value::list({Value::string("fc.weight"), Value::string("fc.bias")})}});
  return dict({
      {"model", dict({{"fc.weight", tensor()}, {"fc.bias", tensor()}, {"count", tensor()}})},
      {"optimizer", dict({{"state", dict({{"fc.weight", dict({{"step", tensor()}, {"exp_avg", tensor()}})}})},
                          {"param_groups", Value::list({group})}})},
      {"epoch", Value::integer(2)},
      {"tensors", Value::list({tensor(), dict({{"inner", tensor()}})})},
      {"names", Value::list({Value::string("a"), Value::string("b")})},
  });
}

TEST(DcpFlatten, MatchesPython) {
  auto flat = flatten_state_dict(fixture_state());
  auto expected = python_flat_keys();
  ASSERT_EQ(flat.size(), expected.size());
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_EQ(flat[i].key, expected[i].first);
    EXPECT_EQ(path_text(flat[i].path), expected[i].second);
  }
}

TEST(DcpFlatten, SetElementRebuildsTheNesting) {
  auto flat = flatten_state_dict(fixture_state());
  ValuePtr rebuilt = Value::plain_dict();
  for (const auto& item : flat) set_element(rebuilt, item.path, item.value);
  auto again = flatten_state_dict(rebuilt);
  ASSERT_EQ(again.size(), flat.size());
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_EQ(again[i].key, flat[i].key);
    EXPECT_EQ(again[i].value.get(), flat[i].value.get());
  }
  EXPECT_TRUE(rebuilt->dict().get("tensors")->is(Kind::List));
}

TEST(DcpFlatten, DuplicateKeysAreRefused) {
  ValuePtr state = Value::plain_dict();
  ValuePtr inner = Value::plain_dict();
  inner->dict().set(Value::string("b"), Value::integer(1));
  state->dict().set(Value::string("a"), inner);
  state->dict().set(Value::string("a.b"), Value::integer(2));
  EXPECT_THROW(flatten_state_dict(state), StateError);
}

}  // namespace
}  // namespace fabricckpt::dcp
