// convert without libtorch: a torch.save zip file written again record by record. The pickle is
// re-written from the outline tree (tensors are their own rebuild recipes, so they come out as the
// libtorch writer would write them for a file torch or this library wrote), storages are
// renumbered in order of first appearance and streamed from the source in pieces.
#include <algorithm>
#include <unordered_map>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/outline.h"
#include "fabricckpt/pickle.h"
#include "fabricckpt/safety.h"

namespace fabricckpt {
namespace {

constexpr size_t kPieceBytes = size_t{8} << 20;

// The persistent ids the libtorch writer (torch_save.cpp's StorageCollector) gives storages: keys
// "0", "1", ... in order of first appearance, one "storage" and one "cpu" string for the whole pickle.
class Renumbering {
 public:
  PickleHooks hooks() {
    PickleHooks h;
    h.persistent_id = [this](const ValuePtr& node) {
      const auto* s = static_cast<const StorageOutline*>(node->storage_ref().storage.get());
      auto [it, inserted] = keys_.try_emplace(s, nullptr);
      if (inserted) {
        it->second = Value::string(std::to_string(order_.size()));
        order_.push_back(s);
      }
      ValuePtr location = s->location == "cpu" ? cpu_ : Value::string(s->location);
      const std::string& type = node->storage_ref().type_name;
      ValuePtr type_global = type == "UntypedStorage" ? Value::global("torch.storage", "UntypedStorage")
                                                      : Value::global("torch", type);
      return Value::tuple({storage_word_, type_global, it->second, location,
                           Value::integer(static_cast<int64_t>(s->numel))});
    };
    return h;
  }
  const std::vector<const StorageOutline*>& order() const { return order_; }

 private:
  std::unordered_map<const StorageOutline*, ValuePtr> keys_;
  std::vector<const StorageOutline*> order_;
  ValuePtr storage_word_ = Value::string("storage");
  ValuePtr cpu_ = Value::string("cpu");
};

// Streams a storage's bytes into the open record, checking the source record's CRC-32 on the way
// (the whole record: it may hold more than the storage).
void copy_storage(const StorageOutline& s, TorchZipWriter& zip, std::vector<uint8_t>& buffer, IoProgress* progress) {
  const uint64_t nbytes = s.nbytes();
  uint32_t crc = 0;
  for (uint64_t done = 0; done < s.stored;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), s.stored - done));
    s.source->read_at(s.offset + done, buffer.data(), n);
    crc = crc32_update(crc, buffer.data(), n);
    if (done < nbytes) {
      const size_t used = static_cast<size_t>(std::min<uint64_t>(n, nbytes - done));
      zip.write_data(buffer.data(), used);
      if (progress) progress->add(used);
    }
    done += n;
  }
  s.check_crc(crc);
}

}  // namespace

namespace {

// Lightning's torch.save of a state writes "archive" when the source names no folder of its own.
std::string archive_of(const FileOutline& in) { return in.archive_name.empty() ? "archive" : in.archive_name; }

}  // namespace

void convert_outline(const std::string& source, const std::string& target, bool allow_unsafe_globals,
                     IoProgress* progress) {
  const FileOutline in = read_file_outline(source);
  write_outline_file(in.root, target, archive_of(in), allow_unsafe_globals, progress);
}

void convert_outline(const std::string& source, OutputSink& out, const std::string& target,
                     bool allow_unsafe_globals, IoProgress* progress) {
  const FileOutline in = read_file_outline(source);
  write_outline_tree(in.root, out, target, archive_of(in), allow_unsafe_globals, progress);
}

void write_outline_file(const ValuePtr& root, const std::string& target, const std::string& archive_name,
                        bool allow_unsafe_globals, IoProgress* progress) {
  if (!allow_unsafe_globals) check_weights_only_tree(root, target);  // before the file (or its folder) exists
  AtomicFileSink sink(target, /*fsync=*/true);
  write_outline_tree(root, sink, target, archive_name, /*allow_unsafe_globals=*/true /* checked above */, progress);
  sink.commit();
}

void write_outline_tree(const ValuePtr& root, OutputSink& out, const std::string& target,
                        const std::string& archive_name, bool allow_unsafe_globals, IoProgress* progress) {
  if (!allow_unsafe_globals) check_weights_only_tree(root, target);  // before anything is written
  Renumbering storages;
  const std::string pickled = pickle(root, storages.hooks());
  if (progress) {
    uint64_t total = 0;
    for (const StorageOutline* s : storages.order()) total += s->nbytes();
    progress->total = total;
  }
  TorchZipWriter zip(out, archive_name);
  // The records in torch_save.cpp's torch_records order.
  zip.write_record("data.pkl", pickled.data(), pickled.size());
  zip.write_record(".format_version", "1", 1);
  zip.write_record(".storage_alignment", "64", 2);
  zip.write_record("byteorder", "little", 6);
  std::vector<uint8_t> buffer(kPieceBytes);
  for (size_t i = 0; i < storages.order().size(); ++i) {
    const StorageOutline& s = *storages.order()[i];
    zip.begin_record("data/" + std::to_string(i), s.nbytes());
    if (s.source) {
      copy_storage(s, zip, buffer, progress);
    } else {  // assembled in a buffer of its own size: the one tensor-sized allocation
      std::vector<uint8_t> whole(s.nbytes());
      s.assemble(whole.data());
      zip.write_data(whole.data(), whole.size());
      if (progress) progress->add(whole.size());
    }
    zip.end_record();
  }
  zip.write_record("version", "3\n", 2);
  zip.finish();
}

}  // namespace fabricckpt
