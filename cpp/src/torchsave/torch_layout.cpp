// TorchFileLayout: torch.save's bytes by byte range, for writers that send a file in pieces from
// several threads (the parts of a multipart upload). Planning reads no tensor memory: each
// storage's CRC-32 is computed from the bytes a fill copies out ("on the way"), and the bytes that
// carry CRCs (each storage's data descriptor, the serialization id, the central directory) are
// put in once the CRCs they need are known. A descriptor always follows its data and the tail
// follows every record, so a fill only ever needs bytes that come before it: fills taken in file
// order (as an upload's workers take parts) find them recorded or being copied by another fill,
// and wait for it; bytes nobody copies are read from tensor memory by the fill that needs them.
// Deferred storages (an FSDP full save's whole tensors) arrive while the file is sent: fills wait for
// them, and each is let go of once all its bytes went into fills.
#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fabricckpt/crc32.h"
#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/read_source.h"
#include "fabricckpt/safety.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"
#include "torch_rebuild.h"
#include "torch_records.h"

namespace fabricckpt {

using torchsave::RecordSpec;
using torchsave::StorageCollector;

namespace {

// Bytes copied between two CRC updates: small enough that the CRC reads the copy from cache.
constexpr size_t kCrcStep = size_t{256} << 10;

// A storage's data in the file.
struct PlacedData {
  const uint8_t* data;  // null for a deferred storage: see Arrival
  uint64_t size;
  const c10::StorageImpl* storage;
  bool deferred;
  uint64_t offset = 0;  // in the file, once planned
};

// The zip writer's output as consecutive segments: the bytes it emits are kept, each range it skips
// is the data of the next placed storage (in the order the writer reaches them).
class SegmentSink : public OutputSink {
 public:
  struct Segment {
    uint64_t offset;
    uint64_t size;
    long placed;      // index of the placed storage whose data this is; -1 for kept bytes
    size_t owned_at;  // kept bytes: where they start in bytes()
  };

  explicit SegmentSink(size_t placed_count) : placed_count_(placed_count) {}

  void write(const void* data, size_t size) override {
    if (size == 0) return;
    if (!segments_.empty() && segments_.back().placed < 0) {
      segments_.back().size += size;
    } else {
      segments_.push_back({position_, size, -1, owned_.size()});
    }
    owned_.append(static_cast<const char*>(data), size);
    position_ += size;
  }
  uint64_t position() const override { return position_; }
  void skip(uint64_t size) override {
    if (next_ >= placed_count_) throw Error("zip layout differs from its plan");
    segments_.push_back({position_, size, static_cast<long>(next_++), 0});
    position_ += size;
  }

  bool all_placed() const { return next_ == placed_count_; }
  std::vector<Segment>& segments() { return segments_; }
  std::string& bytes() { return owned_; }

 private:
  size_t placed_count_;
  size_t next_ = 0;
  std::vector<Segment> segments_;
  std::string owned_;
  uint64_t position_ = 0;
};

// Byte ranges [start, end) of one storage's data, disjoint, keyed by start; each with the CRC-32 of
// its bytes once they are copied.
struct Span {
  uint64_t end;
  uint32_t crc = 0;
};
using Ranges = std::map<uint64_t, Span>;

// Whether a range of `ranges` overlaps [start, end).
bool overlaps(const Ranges& ranges, uint64_t start, uint64_t end) {
  auto after = ranges.lower_bound(end);
  return after != ranges.begin() && std::prev(after)->second.end > start;
}

// Adds [start, end) to `ranges`, merging it with the ranges it touches.
void add_range(Ranges& ranges, uint64_t start, uint64_t end) {
  auto it = ranges.lower_bound(start);
  if (it != ranges.begin() && std::prev(it)->second.end >= start) --it;
  while (it != ranges.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second.end);
    it = ranges.erase(it);
  }
  ranges.emplace(start, Span{end});
}

void put_le32(uint8_t* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

struct TorchFileLayout::Impl {
  std::string target;
  std::string archive_name;
  StorageCollector storages;  // keeps the storages the records point into alive
  std::string pickled;
  std::vector<RecordSpec> records;
  std::vector<PlacedData> placed;  // every nonempty storage, in file order
  std::vector<SegmentSink::Segment> segments;
  std::string kept;        // the bytes that are not storage data, every storage's CRC taken as 0
  uint64_t tail = 0;       // where the serialization id record starts: all after it needs every CRC
  uint64_t total = 0;

  // What fills have computed: per storage, the pieces copied (with their CRCs), the pieces being
  // copied now, and the CRC once known. Guarded by `mutex`.
  struct StorageCrc {
    Ranges pieces;
    Ranges copying;
    std::optional<uint32_t> crc;
  };
  // A deferred storage's bytes from provide() until all of them went into fills. Guarded by `mutex`.
  struct Arrival {
    std::shared_ptr<const void> owner;
    const uint8_t* data = nullptr;
    bool provided = false;
    bool released = false;
    Ranges sent;  // the ranges copied into fills (merged; no CRC)
    std::array<uint8_t, 8> head{};  // the first bytes, kept for the serialization id (zeros until provided)
    int waiters = 0;                // fills waiting for it
  };
  mutable std::mutex mutex;
  mutable std::condition_variable changed;  // a piece copied, a storage provided or let go of, a fill waiting
  mutable std::vector<StorageCrc> crcs;
  mutable std::vector<Arrival> arrivals;  // per placed storage (used for deferred ones)
  mutable size_t held = 0;                // provided deferred storages not let go of yet
  mutable std::optional<std::string> abandoned;
  mutable std::optional<std::string> final_kept;  // `kept` with the real CRCs, once all are known

  // Where storage k's bytes are, and what keeps them alive while they are read: a deferred storage's
  // are waited for. `lock` holds `mutex`.
  std::pair<const uint8_t*, std::shared_ptr<const void>> source(size_t k, std::unique_lock<std::mutex>& lock) const {
    if (!placed[k].deferred) return {placed[k].data, nullptr};
    Arrival& a = arrivals[k];
    if (!a.provided && !abandoned) {
      ++a.waiters;
      changed.notify_all();  // a provide() held back may go on: the file needs a storage it has not got
      changed.wait(lock, [&] { return a.provided || abandoned.has_value(); });
      --a.waiters;
    }
    if (abandoned) throw StateError(*abandoned);
    if (a.released) {
      throw StateError(concat(target, ": the bytes of storage ", k, " were sent and let go of already"));
    }
    return {a.data, a.owner};
  }

  // Records that [from, from + n) of storage k went into a fill; lets go of a deferred storage once
  // all of it did (its CRC taken first, while its bytes are here).
  void sent(size_t k, uint64_t from, uint64_t n) const {
    if (!placed[k].deferred) return;
    {
      std::lock_guard<std::mutex> lock(mutex);
      Ranges& sent = arrivals[k].sent;
      add_range(sent, from, from + n);
      if (sent.size() != 1 || sent.begin()->first != 0 || sent.begin()->second.end != placed[k].size) return;
    }
    crc_of(k);
    std::shared_ptr<const void> drop;  // freed outside the lock
    {
      std::lock_guard<std::mutex> lock(mutex);
      Arrival& a = arrivals[k];
      if (a.released) return;
      drop = std::move(a.owner);
      a.data = nullptr;
      a.released = true;
      --held;
    }
    changed.notify_all();
  }

  // The zip writer's output for `crc` (one per placed storage): the same layout whatever the CRCs
  // and the data's first bytes (which only the serialization id, in the tail, is made of).
  SegmentSink replay(const std::vector<uint32_t>& crc, uint64_t* tail_at) const {
    SegmentSink sink(placed.size());
    TorchZipWriter zip(sink, archive_name);
    size_t k = 0;
    for (const auto& r : records) {
      if (r.storage != nullptr && r.size > 0) {
        const void* head = placed[k].deferred ? arrivals[k].head.data() : r.data;
        zip.write_record_placed(r.name, r.size, crc[k], head);
        ++k;
      } else {
        zip.write_record(r.name, r.data, r.size);
      }
    }
    if (tail_at) *tail_at = zip.offset();
    zip.finish();
    if (!sink.all_placed()) throw Error(concat(target, ": zip layout differs from its plan"));
    return sink;
  }

  // Copies [from, from + n) of storage k's data to `out`; records the piece's CRC unless another
  // fill copies or copied any of it (then this copy only moves bytes).
  void copy_data(size_t k, uint64_t from, uint8_t* out, size_t n) const {
    const uint8_t* bytes = nullptr;
    std::shared_ptr<const void> keep;  // a deferred storage's memory, while this reads it
    bool record = false;
    {
      std::unique_lock<std::mutex> lock(mutex);
      std::tie(bytes, keep) = source(k, lock);
      StorageCrc& s = crcs[k];
      record = !s.crc && !overlaps(s.pieces, from, from + n) && !overlaps(s.copying, from, from + n);
      if (record) s.copying.emplace(from, Span{from + n});
    }
    if (!record) {
      std::memcpy(out, bytes + from, n);
      sent(k, from, n);
      return;
    }
    uint32_t crc = 0;
    for (size_t at = 0; at < n; at += kCrcStep) {
      const size_t step = std::min(kCrcStep, n - at);
      std::memcpy(out + at, bytes + from + at, step);
      crc = crc32_update(crc, out + at, step);  // the bytes sent, read back from cache
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      crcs[k].copying.erase(from);
      crcs[k].pieces.emplace(from, Span{from + n, crc});
    }
    changed.notify_all();
    sent(k, from, n);
  }

  // Storage k's CRC-32 from its pieces: waits for pieces other fills are copying, computes the rest
  // from tensor memory.
  uint32_t crc_of(size_t k) const {
    std::unique_lock<std::mutex> lock(mutex);
    StorageCrc& s = crcs[k];
    const uint64_t size = placed[k].size;
    for (;;) {
      if (s.crc) return *s.crc;
      if (abandoned) throw StateError(*abandoned);
      uint64_t at = 0;
      uint32_t crc = 0;
      auto it = s.pieces.begin();
      for (; it != s.pieces.end() && it->first == at; ++it) {
        crc = crc32_combine(crc, it->second.crc, it->second.end - at);
        at = it->second.end;
      }
      if (at == size) {
        s.crc = crc;
        s.pieces.clear();
        return crc;
      }
      const uint64_t gap_end = it == s.pieces.end() ? size : it->first;
      if (overlaps(s.copying, at, gap_end)) {
        changed.wait(lock);
        continue;
      }
      const auto [bytes, keep] = source(k, lock);  // may wait (unlocked) for a deferred storage
      if (overlaps(s.copying, at, gap_end) || overlaps(s.pieces, at, gap_end)) continue;  // copied meanwhile
      s.copying.emplace(at, Span{gap_end});  // nobody copies these bytes: read them here
      lock.unlock();
      const uint32_t gap = crc32_update(0, bytes + at, gap_end - at);
      lock.lock();
      s.copying.erase(at);
      s.pieces.emplace(at, Span{gap_end, gap});
      changed.notify_all();
    }
  }

  // The non-data bytes with every CRC in place.
  const std::string& final_bytes() const {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (final_kept) return *final_kept;
    }
    std::vector<uint32_t> crc(placed.size());
    for (size_t k = 0; k < placed.size(); ++k) crc[k] = crc_of(k);
    SegmentSink rebuilt = replay(crc, nullptr);
    if (rebuilt.position() != total || rebuilt.bytes().size() != kept.size()) {
      throw Error(concat(target, ": zip layout differs from its plan"));
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (!final_kept) final_kept = std::move(rebuilt.bytes());
    return *final_kept;
  }
};

TorchFileLayout::TorchFileLayout(const ValuePtr& root, const TorchSaveOptions& options, const std::string& target)
    : impl_(std::make_unique<Impl>()) {
  if (!options.allow_unsafe_globals) check_weights_only_tree(root, target);
  Impl& l = *impl_;
  l.target = target;
  l.archive_name = options.archive_name;
  l.records = torchsave::torch_records(root, l.pickled, l.storages);
  for (const auto& r : l.records) {
    if (r.storage != nullptr && r.size > 0) {
      l.placed.push_back({static_cast<const uint8_t*>(r.data), r.size, r.storage, r.deferred});
    }
  }
  l.arrivals.resize(l.placed.size());
  SegmentSink sink = l.replay(std::vector<uint32_t>(l.placed.size(), 0), &l.tail);
  l.total = sink.position();
  l.kept = std::move(sink.bytes());
  l.segments = std::move(sink.segments());
  for (const auto& s : l.segments) {
    if (s.placed >= 0) l.placed[static_cast<size_t>(s.placed)].offset = s.offset;
  }
  l.crcs.resize(l.placed.size());
}

TorchFileLayout::~TorchFileLayout() = default;

uint64_t TorchFileLayout::size() const { return impl_->total; }

void TorchFileLayout::provide(const c10::StorageImpl* storage, std::shared_ptr<const void> owner, const void* data) {
  Impl& l = *impl_;
  auto placed = std::find_if(l.placed.begin(), l.placed.end(),
                             [&](const PlacedData& p) { return p.deferred && p.storage == storage; });
  if (placed == l.placed.end()) throw StateError(concat(l.target, ": provide() of a storage that is not deferred"));
  if (data == nullptr) throw StateError(concat(l.target, ": provide() without bytes"));
  Impl::Arrival& a = l.arrivals[static_cast<size_t>(placed - l.placed.begin())];
  {
    std::unique_lock<std::mutex> lock(l.mutex);
    if (a.provided) throw StateError(concat(l.target, ": a deferred storage was provided twice"));
    l.changed.wait(lock, [&] {
      return l.abandoned.has_value() || l.held == 0 ||
             std::any_of(l.arrivals.begin(), l.arrivals.end(), [](const Impl::Arrival& w) { return !w.provided && w.waiters > 0; });
    });
    if (l.abandoned) throw StateError(*l.abandoned);
    a.owner = std::move(owner);
    a.data = static_cast<const uint8_t*>(data);
    std::memcpy(a.head.data(), data, static_cast<size_t>(std::min<uint64_t>(a.head.size(), placed->size)));
    a.provided = true;
    ++l.held;
  }
  l.changed.notify_all();
}

void TorchFileLayout::abandon(const std::string& why) {
  Impl& l = *impl_;
  std::vector<std::shared_ptr<const void>> drop;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(l.mutex);
    if (!l.abandoned) l.abandoned = why;
    for (auto& a : l.arrivals) {
      if (a.owner) drop.push_back(std::move(a.owner));
      a.data = nullptr;
    }
  }
  l.changed.notify_all();
}

void TorchFileLayout::fill(uint64_t offset, void* dest, size_t size) const {
  const Impl& l = *impl_;
  check_read_range(l.target, l.total, offset, size);
  const uint64_t end = offset + size;
  auto* out = static_cast<uint8_t*>(dest);
  // 1. The bytes as planned: storage data copied from tensor memory (each piece's CRC recorded),
  //    the rest with every storage's CRC as 0. The first segment that ends after `offset`.
  auto it = std::upper_bound(l.segments.begin(), l.segments.end(), offset,
                             [](uint64_t at, const SegmentSink::Segment& s) { return at < s.offset + s.size; });
  for (uint64_t at = offset; at < end; ++it) {
    if (it == l.segments.end()) throw Error(concat(l.target, ": layout has no segment at offset ", at));
    const uint64_t within = at - it->offset;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(end - at, it->size - within));
    if (it->placed >= 0) {
      l.copy_data(static_cast<size_t>(it->placed), within, out + (at - offset), n);
    } else {
      std::memcpy(out + (at - offset), l.kept.data() + it->owned_at + within, n);
    }
    at += n;
  }
  // 2. The CRC in each data descriptor in range (4 bytes after its signature, right after the data).
  auto k = std::lower_bound(l.placed.begin(), l.placed.end(), offset, [](const PlacedData& p, uint64_t at) {
    return p.offset + p.size + 8 <= at;
  });
  for (; k != l.placed.end() && k->offset + k->size + 4 < end; ++k) {
    uint8_t crc[4];
    put_le32(crc, l.crc_of(static_cast<size_t>(k - l.placed.begin())));
    const uint64_t field = k->offset + k->size + 4;
    for (uint64_t b = std::max(field, offset); b < std::min(field + 4, end); ++b) out[b - offset] = crc[b - field];
  }
  // 3. The tail (serialization id, central directory, end records): kept bytes only, rebuilt with
  //    every CRC. Its bytes sit at the end of `kept`.
  if (end > l.tail) {
    const std::string& final_kept = l.final_bytes();
    const uint64_t from = std::max(offset, l.tail);
    const size_t kept_at = l.kept.size() - static_cast<size_t>(l.total - from);
    std::memcpy(out + (from - offset), final_kept.data() + kept_at, static_cast<size_t>(end - from));
  }
}

}  // namespace fabricckpt
