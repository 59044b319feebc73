// Bounded cost for hostile input (issue 9, item 3/4): time near-linear in the input, memory within a
// small factor of it, and DCP metadata whose lists, indices, totals and chunks are checked before
// anything is built from them. Each test is sized so that the old behaviour fails it clearly
// (quadratic NaN keys: minutes; 176-byte nodes; linear DCP lookups: seconds; padding to 10^12).
#include <gtest/gtest.h>
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>

#include "fabricckpt/dcp.h"
#include "fabricckpt/error.h"
#include "fabricckpt/pickle.h"

namespace fabricckpt {
namespace {

using namespace std::string_literals;

double seconds(const std::function<void()>& work) {
  auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Heap bytes in use (small chunks and mmapped large ones), for comparing before and after.
size_t heap_in_use() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

std::string header() { return "\x80\x02"s; }

// {nan: None, nan: None, ...} with `n` distinct NaN objects, as CPython pickles them (floats are
// never memoized). 10 bytes a key: 100k keys is 1 MB.
std::string nan_keys_pickle(size_t n) {
  std::string p = header() + "}q\x00("s;
  for (size_t i = 0; i < n; ++i) {
    if (i % 1000 == 0 && i) p += "u("s;  // SETITEMS every 1000, as CPython batches
    p += "G\x7f\xf8\x00\x00\x00\x00\x00\x00"s;
    p += 'N';
  }
  return p + "u."s;
}

TEST(BoundedCost, NanDictKeysHashByIdentity) {
  const size_t n = 100000;  // 1 MB: the old one-bucket chain took over 200 s
  const std::string p = nan_keys_pickle(n);
  ASSERT_GE(p.size(), 1000000u);
  UnpickleResult r;
  double t = seconds([&] { r = unpickle(p); });
  EXPECT_LT(t, 2.0) << "1 MB of NaN dict keys took " << t << " s";
  const Dict& d = r.value->dict();
  ASSERT_EQ(d.size(), n);  // NaNs never compare equal: every key stays
  // A NaN key finds itself (identity first, as Python), and no other NaN.
  EXPECT_TRUE(d.get(*d.items()[123].first));
  EXPECT_FALSE(d.get(*Value::floating(std::nan(""))));
  // And a dict built directly behaves the same.
  Dict direct;
  double t2 = seconds([&] {
    for (size_t i = 0; i < n; ++i) direct.set(Value::floating(std::nan("")), Value::none());
  });
  EXPECT_EQ(direct.size(), n);
  EXPECT_LT(t2, 2.0);
}

TEST(BoundedCost, NanKeysInsideTuplesToo) {
  // (nan,) tuples: their hash combines the NaN's identity hash.
  std::string p = header() + "}("s;
  const size_t n = 50000;
  for (size_t i = 0; i < n; ++i) {
    p += "G\x7f\xf8\x00\x00\x00\x00\x00\x01\x85"s;  // BINFLOAT nan, TUPLE1
    p += 'N';
  }
  p += "u."s;
  UnpickleResult r;
  double t = seconds([&] { r = unpickle(p); });
  EXPECT_EQ(r.value->dict().size(), n);
  EXPECT_LT(t, 2.0);
}

TEST(BoundedCost, NoneAndSmallIntsCostOnlyTheirSlot) {
  const size_t n = 1000000;
  std::string p = header() + "]("s;
  for (size_t i = 0; i < n; ++i) p += (i % 3 == 0) ? "N"s : (i % 3 == 1) ? "\x88"s : "K\x07"s;
  p += "e."s;
  const size_t before = heap_in_use();
  UnpickleResult r = unpickle(p);
  const size_t used = heap_in_use() - before;
  ASSERT_EQ(r.value->items().size(), n);
  // One shared node each (CPython's None, True, small ints): a 16-byte pointer per item, twice
  // that at most for the vector's growth. The old nodes cost ~176 bytes an item.
  EXPECT_LT(static_cast<double>(used) / n, 40.0) << used << " bytes for " << n << " items";
  EXPECT_EQ(r.value->items()[0].get(), Value::none().get());
}

TEST(BoundedCost, ValueNodesAreCompact) {
  EXPECT_LE(sizeof(Value), 48u);  // was 136: every payload held inline
  const size_t n = 500000;
  std::string p = header() + "]("s;
  for (size_t i = 0; i < n; ++i) {
    p += 'J';
    const auto v = static_cast<int32_t>(100000 + i);  // beyond the small int cache: a node each
    p.append(reinterpret_cast<const char*>(&v), 4);
  }
  p += "e."s;
  const size_t before = heap_in_use();
  UnpickleResult r = unpickle(p);
  const size_t used = heap_in_use() - before;
  ASSERT_EQ(r.value->items().size(), n);
  EXPECT_LT(static_cast<double>(used) / n, 120.0) << used << " bytes for " << n << " ints (was ~176 each)";
}

TEST(BoundedCost, SharedSingletonsKeepWriterBytes) {
  // CPython never memoizes None, bools or ints, so one shared node for each changes no byte.
  std::string p = header() + "]q\x00(NN\x88\x88\x89K\x01K\x01J\xa0\x86\x01\x00J\xa0\x86\x01\x00(K\x01N\x88\x89tq\x01h\x01" "e."s;
  UnpickleResult r = unpickle(p);
  EXPECT_EQ(pickle(r.value), p);
  // And a tree built with the factories writes ints inline however often it shares them.
  auto one = Value::integer(1);
  EXPECT_EQ(pickle(Value::list({one, one, Value::none(), Value::none()})), header() + "]q\x00(K\x01K\x01NNe."s);
}

// ---- DCP .metadata -----------------------------------------------------------------------

dcp::Metadata tensors_metadata(size_t count) {
  dcp::Metadata m;
  m.has_planner_data = true;
  for (size_t i = 0; i < count; ++i) {
    std::string key = "model.layer" + std::to_string(i) + ".weight";
    dcp::TensorEntry t{"float32", false, {4}, {dcp::Chunk{{0}, {4}}}};
    m.entries.push_back({key, t});
    m.planner_data.emplace_back(key, std::vector<dcp::PathItem>{"model", "layer" + std::to_string(i) + ".weight"});
    m.storage.push_back({dcp::StorageKey{key, std::vector<int64_t>{0}, 0},
                         dcp::StorageInfo{"__0_0.distcp", 100 * i, 100, {}}});
  }
  return m;
}

TEST(BoundedCost, DcpLookupsAreHashed) {
  const size_t n = 20000;  // linear scans: 3 x 20000^2 / 2 comparisons, seconds
  const std::string bytes = dcp::write_metadata(tensors_metadata(n));
  dcp::Metadata m = dcp::read_metadata(bytes, "big/.metadata");
  double t = seconds([&] {
    for (size_t i = 0; i < n; ++i) {
      const std::string key = "model.layer" + std::to_string(i) + ".weight";
      const std::vector<int64_t> zero{0};
      ASSERT_TRUE(m.find(key));
      ASSERT_TRUE(m.path_of(key));
      const dcp::StorageInfo* info = m.storage_of(key, &zero);
      ASSERT_TRUE(info);
      ASSERT_EQ(info->offset, 100 * i);
    }
  });
  EXPECT_LT(t, 0.5) << "3 x 20k DCP lookups took " << t << " s";
  // A stale index (the vectors changed since) is not used.
  m.entries.push_back({"late", std::nullopt});
  EXPECT_TRUE(m.find("late"));
  EXPECT_FALSE(m.find("absent"));
}

dcp::Metadata planner_index_metadata(int64_t index) {
  dcp::Metadata m;
  m.has_planner_data = true;
  m.entries.push_back({"optimizer.param_groups.x.lr", std::nullopt});
  m.planner_data.emplace_back("optimizer.param_groups.x.lr",
                              std::vector<dcp::PathItem>{"optimizer", "param_groups", index, "lr"});
  m.storage.push_back({dcp::StorageKey{"optimizer.param_groups.x.lr", std::nullopt, std::nullopt},
                       dcp::StorageInfo{"__0_0.distcp", 0, 10, {}}});
  return m;
}

TEST(BoundedCost, PlannerListIndicesAreCheckedBeforeAnythingIsPadded) {
  for (int64_t index : {int64_t{1000000000000}, int64_t{30000000}}) {
    const std::string bytes = dcp::write_metadata(planner_index_metadata(index));
    ASSERT_LT(bytes.size(), 2048u);
    const size_t before = heap_in_use();
    double t = seconds([&] {
      try {
        dcp::read_metadata(bytes, "huge/.metadata");
        ADD_FAILURE() << "index " << index << " accepted";
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("list index " + std::to_string(index)), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("huge/.metadata"), std::string::npos) << e.what();
      }
    });
    EXPECT_LT(t, 1.0);
    EXPECT_LT(heap_in_use() - before, size_t{1} << 20);  // nothing was padded
  }
  // Ordinary indices pass.
  dcp::Metadata ok = dcp::read_metadata(dcp::write_metadata(planner_index_metadata(3)), "ok/.metadata");
  EXPECT_EQ(std::get<int64_t>(ok.path_of("optimizer.param_groups.x.lr")->at(2)), 3);
}

TEST(BoundedCost, PlannerListSlotsAreLimitedInTotal) {
  // Every key pads its own list to a moderate index: each one passes alone, together they would
  // build 2000 * 20000 slots from a small file.
  dcp::Metadata m;
  m.has_planner_data = true;
  for (int i = 0; i < 2000; ++i) {
    std::string key = "k" + std::to_string(i);
    m.entries.push_back({key, std::nullopt});
    m.planner_data.emplace_back(key, std::vector<dcp::PathItem>{key, int64_t{20000}});
    m.storage.push_back({dcp::StorageKey{key, std::nullopt, std::nullopt},
                         dcp::StorageInfo{"__0_0.distcp", 10u * i, 10, {}}});
  }
  EXPECT_THROW(dcp::read_metadata(dcp::write_metadata(m), "many/.metadata"), FormatError);
}

TEST(BoundedCost, SharedChunkListsCountInTotal) {
  // 2000 tensors of [2000] that all reference one list of 2000 row chunks (memo references: a
  // small file, each tensor valid alone) would make 4 million chunks. The total budget refuses it.
  dcp::Metadata base;
  dcp::TensorEntry t{"float32", false, {2000}, {}};
  for (int64_t i = 0; i < 2000; ++i) t.chunks.push_back({{i}, {1}});
  base.entries.push_back({"t", t});
  ValuePtr root = dcp::metadata_to_value(base);
  Dict& sdm = root->object_ref().state->dict().get("state_dict_metadata")->dict();
  ValuePtr first = sdm.items()[0].second;
  for (int i = 0; i < 2000; ++i) sdm.set(Value::string("t" + std::to_string(i)), first);
  const std::string bytes = pickle(root);
  ASSERT_LT(bytes.size(), 400000u);
  const size_t before = heap_in_use();
  try {
    dcp::read_metadata(bytes, "shared/.metadata");
    FAIL() << "accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("more than its size allows"), std::string::npos) << e.what();
  }
  EXPECT_LT(heap_in_use() - before, size_t{64} << 20);
}

std::string tiling_error(const std::vector<int64_t>& size, const std::vector<dcp::Chunk>& chunks) {
  dcp::Metadata m;
  m.entries.push_back({"w", dcp::TensorEntry{"float32", false, size, chunks}});
  for (size_t i = 0; i < chunks.size(); ++i) {
    m.storage.push_back({dcp::StorageKey{"w", chunks[i].offsets, static_cast<int64_t>(i)},
                         dcp::StorageInfo{"__0_0.distcp", 1000 * i, 1000, {}}});
  }
  try {
    dcp::read_metadata(dcp::write_metadata(m), "tiles/.metadata");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(ChunkCoverage, OverlapsAreRefusedEvenWhenTheSizesAddUp) {
  // Rows 0-1 and rows 1-2 of a 4x4 tensor: 8 + 8 = 16 elements, the old sum said "covered", and
  // row 3 read as zeros.
  std::string e = tiling_error({4, 4}, {{{0, 0}, {2, 4}}, {{1, 0}, {2, 4}}});
  EXPECT_NE(e.find("tensor 'w'"), std::string::npos) << e;
  EXPECT_NE(e.find("chunks 0 (offsets [0, 0] sizes [2, 4]) and 1 (offsets [1, 0] sizes [2, 4]) overlap"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("tiles/.metadata"), std::string::npos) << e;
  // Overlap along the second dimension only (the sweep axis is the first).
  e = tiling_error({2, 4}, {{{0, 0}, {2, 3}}, {{0, 2}, {2, 2}}});
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  // A 0-d tensor saved twice.
  e = tiling_error({}, {{{}, {}}, {{}, {}}});
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
}

std::string gap_error(const std::vector<int64_t>& size, const std::vector<dcp::Chunk>& chunks) {
  try {
    dcp::check_chunk_tiling("w", size, chunks);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(ChunkCoverage, GapsAreFoundAsAUnion) {
  std::string e = gap_error({4, 4}, {{{0, 0}, {2, 4}}, {{2, 0}, {1, 4}}});
  EXPECT_NE(e.find("tensor 'w': its chunks cover 12 of its 16 elements"), std::string::npos) << e;
  e = gap_error({4}, {});
  EXPECT_NE(e.find("cover 0 of its 4"), std::string::npos) << e;
  // A .metadata with a gap still reads (the covered regions can be served); reading the gap is
  // refused before allocation (BoundedTorch.GapsAreRefusedWhenRead, ShardedSave.AShardAloneDoesNotCoverItsTensor).
  EXPECT_EQ(tiling_error({4, 4}, {{{0, 0}, {2, 4}}, {{2, 0}, {1, 4}}}), "");
}

TEST(ChunkCoverage, ExactTilingsPass) {
  EXPECT_EQ(tiling_error({4, 4}, {{{0, 0}, {2, 4}}, {{2, 0}, {2, 4}}}), "");
  EXPECT_EQ(tiling_error({4, 6}, {{{0, 0}, {2, 3}}, {{0, 3}, {2, 3}}, {{2, 0}, {2, 3}}, {{2, 3}, {2, 3}}}), "");
  EXPECT_EQ(tiling_error({3, 2}, {{{0, 0}, {3, 2}}, {{3, 0}, {0, 2}}}), "");  // an empty shard (more ranks than rows)
  EXPECT_EQ(tiling_error({0, 5}, {}), "");
  EXPECT_EQ(tiling_error({}, {{{}, {}}}), "");
}

TEST(ChunkCoverage, ManyChunksAreCheckedFast) {
  // 20000 row shards: the sweep compares neighbours only (pairwise would be 2*10^8 comparisons).
  std::vector<dcp::Chunk> chunks;
  for (int64_t i = 0; i < 20000; ++i) chunks.push_back({{i, 0}, {1, 8}});
  double t = seconds([&] { dcp::check_chunk_tiling("w", {20000, 8}, chunks); });
  EXPECT_LT(t, 1.0);
  chunks.push_back({{19999, 7}, {1, 1}});
  EXPECT_THROW(dcp::check_chunk_tiling("w", {20000, 8}, chunks), FormatError);
}

TEST(BoundedCost, HugeSizesOverflowCleanly) {
  const int64_t big = int64_t{1} << 40;
  std::string e = tiling_error({big, big}, {{{0, 0}, {big, big}}});
  EXPECT_NE(e.find("more than 2^63 elements"), std::string::npos) << e;
  // [2^40] with one chunk of [2^40] tiles: the reader refuses it against the file (sharded_test).
  EXPECT_EQ(tiling_error({big}, {{{0}, {big}}}), "");
}

TEST(BoundedCost, StorageRangesOfOneFileAreDisjoint) {
  dcp::Metadata m;
  m.entries.push_back({"a", std::nullopt});
  m.entries.push_back({"b", std::nullopt});
  m.storage.push_back({dcp::StorageKey{"a", std::nullopt, std::nullopt}, dcp::StorageInfo{"__0_0.distcp", 0, 100, {}}});
  m.storage.push_back({dcp::StorageKey{"b", std::nullopt, std::nullopt}, dcp::StorageInfo{"__0_0.distcp", 50, 100, {}}});
  try {
    dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata");
    FAIL() << "accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'a' (bytes 0+100) and 'b' (bytes 50+100) overlap in __0_0.distcp"),
              std::string::npos)
        << e.what();
  }
  m.storage[1].second.offset = 100;  // touching is fine
  EXPECT_NO_THROW(dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata"));
  m.storage[1].second.relative_path = "__1_0.distcp";
  m.storage[1].second.offset = 0;  // another file
  EXPECT_NO_THROW(dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata"));

  // Items starting at one offset (a SAFETENSORS blob's tensors) count as one range of their summed lengths.
  m.entries.push_back({"c", std::nullopt});
  m.storage[1].second = dcp::StorageInfo{"__0_0.distcp", 200, 24, {}};
  m.storage.push_back({dcp::StorageKey{"c", std::nullopt, std::nullopt}, dcp::StorageInfo{"__0_0.distcp", 200, 4, {}}});
  EXPECT_NO_THROW(dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata"));
  m.storage[0].second.offset = 220;  // inside the blob's 28 bytes
  EXPECT_THROW(dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata"), FormatError);
  m.storage[0].second.offset = 228;
  EXPECT_NO_THROW(dcp::read_metadata(dcp::write_metadata(m), "ranges/.metadata"));
}

}  // namespace
}  // namespace fabricckpt
