// What ranks tell one another during a sharded save or a full-state gather, in one small codec:
// a header (a marker byte and the message's kind), then typed fields, each a one-byte tag and its
// value: booleans (one byte), integers (8 bytes, little-endian), texts (an 8-byte length, then the
// bytes), integer lists (an 8-byte count, then the integers). Every read is checked against what
// is left, so a truncated or garbled message is an Error naming the peer rank, the message and
// what was wrong, never an out-of-bounds read or an allocation the message did not pay for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fabricckpt/error.h"

namespace fabricckpt::dist {

// What a message holds: a reader refuses a message of another kind.
enum class MessageKind : uint8_t {
  Outcome = 1,       // whether a step worked: its result, or why not (encode_outcome)
  ShardReport = 2,   // what a rank wrote into its shard file
  ShardRegions = 3,  // where each of a rank's shards lies in its global tensor
  ShardKeys = 4,     // the keys of a rank's sharded tensors, in order (compared, not parsed)
};

class MessageWriter {
 public:
  explicit MessageWriter(MessageKind kind);

  MessageWriter& boolean(bool value);
  MessageWriter& integer(int64_t value);
  MessageWriter& text(std::string_view value);  // any bytes
  MessageWriter& integers(const std::vector<int64_t>& values);
  // How many items follow (each written by the caller).
  MessageWriter& count(size_t value);

  const std::string& bytes() const { return bytes_; }

 private:
  void put_tag(uint8_t tag);
  void put64(uint64_t value);

  std::string bytes_;
};

class MessageReader {
 public:
  // `bytes` are what rank `peer` sent as `what` ("its shard report"); they must be of `kind`.
  MessageReader(std::string_view bytes, MessageKind kind, int peer, std::string what);

  bool boolean();
  int64_t integer();
  std::string text();
  std::vector<int64_t> integers();
  // A count of items that follow, each taking at least `min_item_bytes` of the message: a count
  // the rest of the message cannot hold is refused before anything is allocated for it.
  size_t count(size_t min_item_bytes);
  // Error unless every byte was read.
  void end() const;

  // Error "rank <peer> sent a malformed <what>: <why>", for checks of the values read.
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    fail_text(concat(std::forward<Parts>(parts)...));
  }

 private:
  void expect_tag(uint8_t tag, const char* field);
  uint64_t get64(const char* field);
  [[noreturn]] void fail_text(const std::string& why) const;

  std::string_view bytes_;
  size_t at_ = 0;
  int peer_;
  std::string what_;
};

// A step's outcome for the other ranks: success with a result (any bytes, a message of its own
// for structured results), or failure with the reason.
std::string encode_success(std::string_view result);
std::string encode_failure(std::string_view reason);

struct Outcome {
  bool ok;
  std::string detail;  // the result when ok, the reason otherwise
};
Outcome decode_outcome(std::string_view bytes, int peer, const std::string& what);

}  // namespace fabricckpt::dist

