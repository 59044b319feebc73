// The torch.save layer: tensors, storages, records, against files real torch wrote
// (python-compat-tests/fixtures/make_torch_fixtures.py).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"

namespace fabricckpt {
namespace {

const std::string kData = std::string(FABRICCKPT_TEST_DATA) + "/torch/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const at::Tensor& tensor_at(const Value& dict, std::string_view key) {
  auto v = dict.dict().get(key);
  EXPECT_TRUE(v && v->is(Kind::Tensor)) << key;
  return *v->tensor_ref().tensor;
}

class TempDir : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("fabricckpt-torch-" + std::to_string(::getpid()) + "-" +
                               ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
};

TEST(TorchLoad, ReadsWhatPythonWrote) {
  TorchCheckpoint ckpt = load_torch_file(kData + "state.pt");
  EXPECT_EQ(ckpt.archive_name, "archive");
  const Value& root = *ckpt.root;
  ASSERT_TRUE(root.is(Kind::Dict));

  const Value& model = *root.dict().get("model");
  ASSERT_TRUE(model.dict().ordered);
  EXPECT_TRUE(at::equal(tensor_at(model, "weight"), at::arange(12.0).reshape({3, 4})));
  ASSERT_TRUE(model.dict().state);  // {'_metadata': ...}
  EXPECT_TRUE(model.dict().state->dict().get("_metadata"));

  // Views share the weight's storage, at the offsets and strides Python recorded.
  const at::Tensor& weight = tensor_at(model, "weight");
  const at::Tensor& col = tensor_at(root, "col");
  EXPECT_TRUE(col.storage().is_alias_of(weight.storage()));
  EXPECT_EQ(col.storage_offset(), 2);
  EXPECT_EQ(col.stride(0), 4);
  EXPECT_TRUE(at::equal(col, at::arange(12.0).reshape({3, 4}).select(1, 2)));

  EXPECT_EQ(tensor_at(root, "half").scalar_type(), at::kHalf);
  EXPECT_EQ(tensor_at(root, "u16").scalar_type(), at::kUInt16);  // _rebuild_tensor_v3
  EXPECT_EQ(tensor_at(root, "f8").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_TRUE(root.dict().get("param")->tensor_ref().is_parameter);
  EXPECT_TRUE(root.dict().get("grad")->tensor_ref().requires_grad);
  EXPECT_EQ(root.dict().get("step")->as_int(), 3);
}

TEST(TorchSave, RewritesPythonFileByteForByte) {
  const std::string original = read_file(kData + "state.pt");
  TorchCheckpoint ckpt = load_torch_file(kData + "state.pt");
  StringSink out;
  write_torch_save(out, ckpt.root, ckpt.archive_name);
  EXPECT_EQ(out.str().size(), original.size());
  EXPECT_TRUE(out.str() == original);
}

TEST(TorchLoad, ReadsTheLegacyFormat) {
  TorchCheckpoint ckpt = load_torch_file(kData + "legacy.pt");
  EXPECT_TRUE(ckpt.legacy);
  EXPECT_TRUE(at::equal(tensor_at(*ckpt.root, "w"), at::arange(6.0).reshape({2, 3})));
  EXPECT_TRUE(at::equal(tensor_at(*ckpt.root, "i"), at::arange(3)));
  EXPECT_EQ(ckpt.root->dict().get("step")->as_int(), 7);
}

// The torch-free outline of a legacy file (outline.h, what the command line reads): the same tree the
// libtorch loader gives, so both converts write the same bytes; verify says what the library's did.
TEST_F(TempDir, LegacyOutlineConvertsToTheBytesOfTheLibrarysConvert) {
  const std::string source = kData + "legacy.pt";
  const FileOutline outline = read_file_outline(source);
  EXPECT_EQ(outline.format, OutlineFormat::Legacy);
  EXPECT_EQ(outline.storages.size(), 2u);
  const std::string by_library = (dir / "by_library.ckpt").string(), by_outline = (dir / "by_outline.ckpt").string();
  save_torch_file(by_library, load_torch_file(source).root);
  convert_outline(source, by_outline, /*allow_unsafe_globals=*/false);
  EXPECT_EQ(read_file(by_library), read_file(by_outline));
  EXPECT_EQ(verify_outline(source),
            source + ": OK (legacy format, 2 tensors over 2 storages of 48 bytes)");
  EXPECT_TRUE(unsafe_globals_of_file(source).empty());

  // A file cut inside its storages: an error naming the file, never a read past its end.
  const std::string original = read_file(source);
  const std::string cut = (dir / "cut.pt").string();
  std::ofstream(cut, std::ios::binary).write(original.data(), static_cast<std::streamsize>(original.size() - 5));
  try {
    read_file_outline(cut);
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(cut + ": storage"), std::string::npos) << e.what();
  }
}

TEST_F(TempDir, SaveAndLoadKeepDtypesViewsAndSharing) {
  auto base = at::arange(20, at::kInt).reshape({4, 5});
  auto root = Value::plain_dict();
  auto add = [&](const char* key, const at::Tensor& t) {
    TensorRef ref;
    ref.tensor = std::make_shared<at::Tensor>(t);
    root->dict().set(Value::string(key), Value::tensor(ref));
  };
  add("base", base);
  add("slice", base.narrow(1, 1, 3));
  add("bf16", at::arange(3.0).to(at::kBFloat16));
  add("complex", at::ones({2}, at::kComplexDouble));
  add("bits", at::arange(4).to(at::kUInt32));
  add("empty", at::empty({0, 3}));
  add("scalar", at::scalar_tensor(2.5));
  const auto path = (dir / "t.pt").string();
  save_torch_file(path, root, {});

  TorchCheckpoint back = load_torch_file(path);
  for (const auto& [key, value] : root->dict().items()) {
    const at::Tensor& expected = *value->tensor_ref().tensor;
    const at::Tensor& actual = tensor_at(*back.root, key->as_string());
    EXPECT_EQ(expected.scalar_type(), actual.scalar_type()) << key->as_string();
    EXPECT_EQ(expected.sizes(), actual.sizes()) << key->as_string();
    EXPECT_TRUE(at::equal(expected, actual)) << key->as_string();
  }
  EXPECT_TRUE(tensor_at(*back.root, "slice").storage().is_alias_of(tensor_at(*back.root, "base").storage()));
  // One record per storage: base and slice share "data/0".
  ZipReader zip(MappedFile::open(path));
  EXPECT_TRUE(zip.find("data/0"));
  EXPECT_TRUE(zip.find("data/5"));
  EXPECT_FALSE(zip.find("data/6"));
}

// A pickle whose tensor view reaches past its storage must be refused, not read out of bounds.
TEST_F(TempDir, RejectsViewsOutsideTheirStorage) {
  auto storage_tensor = at::arange(4.0);
  auto root = Value::plain_dict();
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(storage_tensor);
  root->dict().set(Value::string("t"), Value::tensor(ref));
  StringSink good;
  write_torch_save(good, root, "archive");

  // Rewrite the size tuple (4,) to (40,) in data.pkl: BININT1 4 TUPLE1 -> BININT1 40 TUPLE1.
  ZipReader zip(MappedFile::from_bytes(good.str(), "good.pt"));
  std::string pickled(zip.data(*zip.find("data.pkl")));
  const std::string from("K\x04\x85", 3), to("K\x28\x85", 3);
  auto at_pos = pickled.find(from, pickled.find("Q"));
  ASSERT_NE(at_pos, std::string::npos);
  pickled.replace(at_pos, 3, to);
  StringSink bad;
  TorchZipWriter writer(bad, "archive");
  writer.write_record("data.pkl", pickled.data(), pickled.size());
  for (const auto& record : zip.records()) {
    const std::string name = record.name.substr(std::string("archive/").size());
    if (name == "data.pkl" || name == ".data/serialization_id") continue;
    auto bytes = zip.data(record);
    writer.write_record(name, bytes.data(), bytes.size());
  }
  writer.finish();
  const auto path = (dir / "bad.pt").string();
  std::ofstream(path, std::ios::binary) << bad.str();

  try {
    load_torch_file(path);
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.pt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("storage"), std::string::npos) << e.what();
  }
}

TEST_F(TempDir, FailedSaveKeepsTheOldFile) {
  const auto path = (dir / "keep.pt").string();
  auto ok = Value::plain_dict();
  ok->dict().set(Value::string("x"), Value::integer(1));
  save_torch_file(path, ok, {});
  const std::string before = read_file(path);

  auto bad = Value::plain_dict();
  TensorRef undefined;
  undefined.tensor = std::make_shared<at::Tensor>();
  bad->dict().set(Value::string("t"), Value::tensor(undefined));
  EXPECT_THROW(save_torch_file(path, bad, {}), Error);
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
}

// Another program truncating the file, or rewriting it in place (as torch.save does), while it
// is read: the default load gives an error or one whole version, never a fault, and tensors
// already loaded never change afterwards.
TEST_F(TempDir, AFileChangedUnderTheReaderGivesAnErrorOrOneWholeVersion) {
  auto state_of = [](float fill) {
    ValuePtr root = Value::plain_dict();
    for (int i = 0; i < 4; ++i) {
      TensorRef ref;
      ref.tensor = std::make_shared<at::Tensor>(at::full({1 << 18}, fill));
      root->dict().set(Value::string("w" + std::to_string(i)), Value::tensor(std::move(ref)));
    }
    return root;
  };
  const std::string a = (dir / "a.pt").string(), b = (dir / "b.pt").string(), target = (dir / "c.pt").string();
  save_torch_file(a, state_of(1));
  save_torch_file(b, state_of(2));
  const std::string bytes_a = read_file(a), bytes_b = read_file(b);
  ASSERT_EQ(bytes_a.size(), bytes_b.size());
  save_torch_file(target, state_of(1));

  std::atomic<bool> stop{false};
  std::thread mutator([&] {
    std::mt19937 random(7);
    for (int round = 0; !stop; ++round) {
      if (round % 3 == 0) {
        ::truncate(target.c_str(), std::uniform_int_distribution<long>(0, bytes_a.size())(random));
      }
      const std::string& bytes = round % 2 ? bytes_b : bytes_a;
      int fd = ::open(target.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);  // in place, as open(path, "wb")
      if (fd < 0) continue;
      for (size_t at = 0; at < bytes.size();) {
        const ssize_t n = ::write(fd, bytes.data() + at, std::min<size_t>(bytes.size() - at, 64 << 10));
        if (n <= 0) break;
        at += static_cast<size_t>(n);
      }
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // leave room for whole reads too
    }
  });
  int whole = 0, refused = 0;
  std::vector<std::pair<at::Tensor, float>> loaded;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < until) {
    try {
      ValuePtr root = load_torch_file(target).root;
      const float fill = tensor_at(*root, "w0")[0].item<float>();
      for (int i = 0; i < 4; ++i) {
        const at::Tensor& t = tensor_at(*root, "w" + std::to_string(i));
        ASSERT_TRUE(t.eq(fill).all().item<bool>()) << "a load mixed two versions of the file";
        loaded.emplace_back(t, fill);
      }
      ++whole;
    } catch (const Error&) {
      ++refused;
    }
  }
  stop = true;
  mutator.join();
  for (const auto& [t, fill] : loaded) ASSERT_TRUE(t.eq(fill).all().item<bool>()) << "a loaded tensor changed";
  std::printf("[ changed ] %d loads gave one whole version, %d were refused with an error\n", whole, refused);
  EXPECT_GT(whole + refused, 10);
}

// torch.save with compute_crc32 = False (python-compat-tests/fixtures/make_zip_fixtures.py) stores
// CRC 0 everywhere: torch loads it, so do we; a file where only some records store 0 is corrupt.
TEST_F(TempDir, FilesWithoutCrcsLoadButOneZeroCrcIsCorruption) {
  const std::string fixture = std::string(FABRICCKPT_TEST_DATA) + "/zip/no_crc.pt";
  TorchCheckpoint loaded = load_torch_file(fixture);
  EXPECT_TRUE(tensor_at(*loaded.root, "a").equal(at::arange(4.0, at::kFloat)));
  EXPECT_TRUE(ZipReader(MappedFile::open(fixture)).crc_less());

  const std::string good = (dir / "good.pt").string();
  ValuePtr state = Value::plain_dict();
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(at::arange(16.0, at::kFloat));
  state->dict().set(Value::string("t"), Value::tensor(std::move(ref)));
  save_torch_file(good, state);
  ZipReader zip(MappedFile::open(good));
  EXPECT_FALSE(zip.crc_less());
  const ZipRecord* data = zip.find("data/0");
  ASSERT_NE(data, nullptr);
  std::string bytes = read_file(good);
  // Zero the storage's CRC in its central directory entry (the one readers trust).
  auto zero_crc_at = [&](size_t offset) {
    ASSERT_EQ(bytes.substr(offset, 4), std::string(reinterpret_cast<const char*>(&data->crc32), 4));
    bytes.replace(offset, 4, std::string(4, '\0'));
  };
  const std::string central_signature("PK\x01\x02", 4);
  size_t entry = bytes.find(central_signature);
  while (entry != std::string::npos && bytes.compare(entry + 46, data->name.size(), data->name) != 0) {
    entry = bytes.find(central_signature, entry + 4);
  }
  ASSERT_NE(entry, std::string::npos);
  zero_crc_at(entry + 16);
  const std::string broken = (dir / "one_zero_crc.pt").string();
  std::ofstream(broken, std::ios::binary) << bytes;
  try {
    load_torch_file(broken);
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("CRC-32 mismatch (stored 0x00000000"), std::string::npos) << e.what();
  }
}

// A tree with two placed storages (large enough to span many parts), a small and an empty one.
ValuePtr layout_tree() {
  auto root = Value::plain_dict();
  auto add = [&](const char* key, const at::Tensor& t) {
    TensorRef ref;
    ref.tensor = std::make_shared<at::Tensor>(t);
    root->dict().set(Value::string(key), Value::tensor(ref));
  };
  add("big", at::arange(700000, at::kFloat));
  add("small", at::arange(10, at::kLong));
  add("bigger", at::arange(1 << 20, at::kDouble));
  add("empty", at::empty({0}));
  return root;
}

// The layout an object-storage upload sends part by part: any cut of it gives the bytes
// save_torch_file writes, large storages included (placed records come from tensor memory).
TEST_F(TempDir, LayoutFillsTheBytesOfTheFileInAnyPieces) {
  auto root = layout_tree();
  const auto path = (dir / "l.pt").string();
  save_torch_file(path, root, {});
  const std::string file = read_file(path);

  TorchSaveOptions options;
  TorchFileLayout layout(root, options, "s3://bucket/l.pt");
  ASSERT_EQ(layout.size(), file.size());
  std::string whole(file.size(), '\0');
  layout.fill(0, whole.data(), whole.size());
  EXPECT_TRUE(whole == file);
  // Parts of odd sizes, filled out of order, each cutting records and headers anywhere.
  std::string parts(file.size(), '\0');
  const size_t part = 1000003;
  for (size_t start = (file.size() / part) * part;; start -= part) {
    layout.fill(start, parts.data() + start, std::min(part, file.size() - start));
    if (start == 0) break;
  }
  EXPECT_TRUE(parts == file);
  char past[2];
  EXPECT_THROW(layout.fill(file.size() - 1, past, 2), FormatError);
}

// An upload's workers: four threads fill parts concurrently, taken in file order (each CRC comes
// from the copies), in a shuffled order (descriptors wait for or compute what is missing), and the
// whole file twice at once (overlapping fills). Every cut gives the file's bytes.
TEST_F(TempDir, LayoutFillsFromConcurrentThreadsInAnyOrder) {
  auto root = layout_tree();
  const auto path = (dir / "c.pt").string();
  save_torch_file(path, root, {});
  const std::string file = read_file(path);

  auto fill_parallel = [&](std::vector<size_t> starts, size_t part) {
    TorchFileLayout layout(root, {}, "s3://bucket/c.pt");
    std::string out(file.size(), '\0');
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&] {
        for (size_t i; (i = next++) < starts.size();) {
          const size_t start = starts[i];
          layout.fill(start, out.data() + start, std::min(part, file.size() - start));
        }
      });
    }
    for (auto& t : workers) t.join();
    return out;
  };
  for (size_t part : {size_t{4099}, size_t{65536}, size_t{1} << 20}) {
    std::vector<size_t> starts;
    for (size_t s = 0; s < file.size(); s += part) starts.push_back(s);
    EXPECT_TRUE(fill_parallel(starts, part) == file) << "in order, part " << part;
    std::shuffle(starts.begin(), starts.end(), std::mt19937(static_cast<unsigned>(part)));
    EXPECT_TRUE(fill_parallel(starts, part) == file) << "shuffled, part " << part;
  }
  EXPECT_TRUE(fill_parallel({0, 0, 0, 0}, file.size()) == file) << "overlapping";
}

// A stand-in for `like` as an FSDP full save plans with: its storage has the size but no memory.
at::Tensor memoryless(const at::Tensor& like) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), like.nbytes(), c10::DataPtr(nullptr, c10::Device(c10::kCPU)),
                       /*allocator=*/nullptr, /*resizable=*/false);
  at::Tensor t = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                          like.dtype());
  t.unsafeGetTensorImpl()->set_sizes_contiguous(like.sizes());
  return t;
}

// An FSDP full save sent in parts: "big" and "bigger" are deferred (planned without memory) and
// arrive while four threads fill 64 KiB parts in file order, as an upload's workers do. The bytes
// are the file's whether they arrive in the file's order or the reverse (then the layout takes the
// second before the first is sent, instead of waiting forever), each arrival is let go of once all
// its bytes are in parts, and abandon() fails the fills still waiting.
TEST_F(TempDir, LayoutWaitsForDeferredStoragesAndLetsGoOfThemOnceSent) {
  auto root = layout_tree();
  const auto path = (dir / "d.pt").string();
  save_torch_file(path, root, {});
  const std::string file = read_file(path);
  const at::Tensor big = tensor_at(*root, "big");
  const at::Tensor bigger = tensor_at(*root, "bigger");
  for (const bool reversed : {false, true}) {
    auto deferred = layout_tree();
    const at::Tensor big_in = memoryless(big), bigger_in = memoryless(bigger);
    deferred->dict().get("big")->tensor_ref().tensor = std::make_shared<at::Tensor>(big_in);
    deferred->dict().get("bigger")->tensor_ref().tensor = std::make_shared<at::Tensor>(bigger_in);
    TorchFileLayout layout(deferred, {}, "s3://bucket/d.pt");
    ASSERT_EQ(layout.size(), file.size());
    std::string out(file.size(), '\0');
    std::atomic<size_t> next{0};
    const size_t part = 65536;
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&] {
        for (size_t start; (start = part * next++) < file.size();) {
          layout.fill(start, out.data() + start, std::min(part, file.size() - start));
        }
      });
    }
    auto big_copy = std::make_shared<at::Tensor>(big.clone());
    auto bigger_copy = std::make_shared<at::Tensor>(bigger.clone());
    const std::weak_ptr<at::Tensor> big_held = big_copy, bigger_held = bigger_copy;
    auto provide = [&](const at::Tensor& stand_in, std::shared_ptr<at::Tensor>& copy) {
      const void* data = copy->const_data_ptr();
      layout.provide(stand_in.storage().unsafeGetStorageImpl(), std::move(copy), data);
    };
    if (reversed) {
      provide(bigger_in, bigger_copy);
      provide(big_in, big_copy);
    } else {
      provide(big_in, big_copy);
      provide(bigger_in, bigger_copy);
    }
    for (auto& t : workers) t.join();
    EXPECT_TRUE(out == file) << (reversed ? "reversed" : "in order");
    EXPECT_TRUE(big_held.expired() && bigger_held.expired()) << "let go of once sent";
    EXPECT_THROW(layout.fill(0, out.data(), out.size()), StateError);  // the deferred bytes are gone
    EXPECT_THROW(layout.provide(tensor_at(*deferred, "small").storage().unsafeGetStorageImpl(), nullptr,
                                out.data()), StateError);  // not deferred
  }

  auto deferred = layout_tree();
  const at::Tensor big_in = memoryless(big);
  deferred->dict().get("big")->tensor_ref().tensor = std::make_shared<at::Tensor>(big_in);
  TorchFileLayout layout(deferred, {}, "s3://bucket/d.pt");
  std::string out(layout.size(), '\0');
  std::atomic<bool> failed{false};
  std::thread waiting([&] {
    try {
      layout.fill(0, out.data(), out.size());
    } catch (const StateError& e) {
      failed = std::string(e.what()).find("the upload failed") != std::string::npos;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  layout.abandon("s3://bucket/d.pt: the upload failed");
  waiting.join();
  EXPECT_TRUE(failed);
  EXPECT_THROW(layout.provide(big_in.storage().unsafeGetStorageImpl(), std::make_shared<at::Tensor>(big), big.const_data_ptr()),
               StateError);
}

// The CRCs are those of the bytes sent: a tensor changed between planning and filling (which the
// caller must not do) gives a file whose CRCs match what it holds, never a file that fails its
// own check.
TEST_F(TempDir, LayoutCrcsComeFromTheBytesFilled) {
  auto root = layout_tree();
  TorchFileLayout layout(root, {}, "s3://bucket/m.pt");
  at::Tensor big = tensor_at(*root, "big");
  big.fill_(7.0f);
  const auto expected_path = (dir / "expected.pt").string();
  save_torch_file(expected_path, root, {});
  const std::string expected = read_file(expected_path);
  std::string out(layout.size(), '\0');
  ASSERT_EQ(out.size(), expected.size());
  layout.fill(0, out.data(), out.size());
  EXPECT_TRUE(out == expected);
  const auto path = (dir / "m.pt").string();
  std::ofstream(path, std::ios::binary) << out;
  TorchCheckpoint back = load_torch_file(path);  // checks every CRC
  EXPECT_TRUE(at::equal(tensor_at(*back.root, "big"), big));
}

TEST_F(TempDir, BytesInMemoryLoadAsViewsAndTheirCrcsAreChecked) {
  auto root = Value::plain_dict();
  TensorRef ref;
  ref.tensor = std::make_shared<at::Tensor>(at::arange(300000, at::kFloat));
  root->dict().set(Value::string("w"), Value::tensor(ref));
  StringSink out;
  write_torch_save(out, root, "archive");
  std::string bytes = out.str();

  TorchCheckpoint back = load_torch_bytes(bytes, "s3://bucket/w.pt", {});
  EXPECT_TRUE(at::equal(tensor_at(*back.root, "w"), *ref.tensor));
  EXPECT_EQ(back.archive_name, "archive");

  ZipReader zip(MappedFile::from_bytes(bytes, "mem"));
  const ZipRecord* data = zip.find("data/0");
  ASSERT_TRUE(data);
  std::string broken = bytes;
  broken[data->data_offset + 100] ^= 1;
  try {
    load_torch_bytes(broken, "s3://bucket/w.pt", {});
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("CRC-32 mismatch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("s3://bucket/w.pt"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_torch_bytes("not a zip", "s3://bucket/x", {}), FormatError);

  // Fresh anonymous memory filled in pieces (as a download fills it): the tensors view it and keep
  // it alive after every other reference is gone.
  at::Tensor viewed;
  {
    auto memory = MappedFile::anonymous(bytes.size(), "s3://bucket/w.pt");
    for (size_t at = 0; at < bytes.size(); at += 65536) {
      std::memcpy(memory->mutable_data() + at, bytes.data() + at, std::min<size_t>(65536, bytes.size() - at));
    }
    TorchCheckpoint mapped = load_torch_bytes(memory, {});
    viewed = tensor_at(*mapped.root, "w");
    const uint8_t* begin = memory->data();
    EXPECT_TRUE(static_cast<const uint8_t*>(viewed.data_ptr()) >= begin &&
                static_cast<const uint8_t*>(viewed.data_ptr()) < begin + bytes.size());
  }
  EXPECT_TRUE(at::equal(viewed, *ref.tensor));
  EXPECT_EQ(MappedFile::anonymous(0, "empty")->size(), 0u);
}

}  // namespace
}  // namespace fabricckpt
