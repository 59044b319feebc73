#include "message_codec.h"

#include "fabricckpt/error.h"

namespace fabricckpt::dist {

namespace {

constexpr uint8_t kMarker = 0xFC;  // first byte of every message
constexpr size_t kHeaderSize = 2;  // the marker and the kind

// Field tags: what the next value is.
constexpr uint8_t kBoolTag = 'b';
constexpr uint8_t kIntTag = 'i';
constexpr uint8_t kTextTag = 's';
constexpr uint8_t kIntsTag = 'l';
constexpr uint8_t kCountTag = 'n';

const char* tag_name(uint8_t tag) {
  switch (tag) {
    case kBoolTag: return "a boolean";
    case kIntTag: return "an integer";
    case kTextTag: return "a text";
    case kIntsTag: return "an integer list";
    case kCountTag: return "a count";
    default: return nullptr;
  }
}

}  // namespace

MessageWriter::MessageWriter(MessageKind kind) {
  bytes_.push_back(static_cast<char>(kMarker));
  bytes_.push_back(static_cast<char>(kind));
}

void MessageWriter::put_tag(uint8_t tag) { bytes_.push_back(static_cast<char>(tag)); }

void MessageWriter::put64(uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

MessageWriter& MessageWriter::boolean(bool value) {
  put_tag(kBoolTag);
  bytes_.push_back(value ? 1 : 0);
  return *this;
}

MessageWriter& MessageWriter::integer(int64_t value) {
  put_tag(kIntTag);
  put64(static_cast<uint64_t>(value));
  return *this;
}

MessageWriter& MessageWriter::text(std::string_view value) {
  put_tag(kTextTag);
  put64(value.size());
  bytes_.append(value);
  return *this;
}

MessageWriter& MessageWriter::integers(const std::vector<int64_t>& values) {
  put_tag(kIntsTag);
  put64(values.size());
  for (int64_t v : values) put64(static_cast<uint64_t>(v));
  return *this;
}

MessageWriter& MessageWriter::count(size_t value) {
  put_tag(kCountTag);
  put64(value);
  return *this;
}

MessageReader::MessageReader(std::string_view bytes, MessageKind kind, int peer, std::string what)
    : bytes_(bytes), peer_(peer), what_(std::move(what)) {
  if (bytes_.size() < kHeaderSize) fail("it is ", bytes_.size(), " bytes long, shorter than a message header");
  if (static_cast<uint8_t>(bytes_[0]) != kMarker) fail("it does not start with the message marker");
  const auto got = static_cast<uint8_t>(bytes_[1]);
  if (got != static_cast<uint8_t>(kind)) {
    fail("it is a message of kind ", int{got}, ", expected kind ", int{static_cast<uint8_t>(kind)});
  }
  at_ = kHeaderSize;
}

void MessageReader::fail_text(const std::string& why) const {
  throw DistributedError(concat("rank ", peer_, " sent a malformed ", what_, ": ", why), -1,
                         concat("message from rank ", peer_));
}

void MessageReader::expect_tag(uint8_t tag, const char* field) {
  if (at_ >= bytes_.size()) fail("it ends at byte ", at_, " where ", field, " was expected");
  const auto got = static_cast<uint8_t>(bytes_[at_]);
  if (got != tag) {
    const char* name = tag_name(got);
    fail("byte ", at_, " holds ", name ? name : "an unknown field", " where ", field, " was expected");
  }
  ++at_;
}

uint64_t MessageReader::get64(const char* field) {
  if (bytes_.size() - at_ < 8) fail("it ends inside ", field, " at byte ", at_);
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[at_ + i])) << (8 * i);
  at_ += 8;
  return value;
}

bool MessageReader::boolean() {
  expect_tag(kBoolTag, "a boolean");
  if (at_ >= bytes_.size()) fail("it ends inside a boolean at byte ", at_);
  const auto value = static_cast<uint8_t>(bytes_[at_]);
  if (value > 1) fail("the boolean at byte ", at_, " is ", int{value}, ", neither 0 nor 1");
  ++at_;
  return value == 1;
}

int64_t MessageReader::integer() {
  expect_tag(kIntTag, "an integer");
  return static_cast<int64_t>(get64("an integer"));
}

std::string MessageReader::text() {
  expect_tag(kTextTag, "a text");
  const size_t start = at_;
  const uint64_t length = get64("a text's length");
  if (length > bytes_.size() - at_) {
    fail("the text at byte ", start, " claims ", length, " bytes, but only ", bytes_.size() - at_, " follow");
  }
  std::string value(bytes_.substr(at_, static_cast<size_t>(length)));
  at_ += static_cast<size_t>(length);
  return value;
}

std::vector<int64_t> MessageReader::integers() {
  expect_tag(kIntsTag, "an integer list");
  const size_t start = at_;
  const uint64_t n = get64("an integer list's length");
  if (n > (bytes_.size() - at_) / 8) {
    fail("the integer list at byte ", start, " claims ", n, " integers, but only ", bytes_.size() - at_,
         " bytes follow");
  }
  std::vector<int64_t> values;
  values.reserve(static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; ++i) values.push_back(static_cast<int64_t>(get64("an integer list")));
  return values;
}

size_t MessageReader::count(size_t min_item_bytes) {
  expect_tag(kCountTag, "a count");
  const size_t start = at_;
  const uint64_t n = get64("a count");
  const uint64_t room = bytes_.size() - at_;
  if (min_item_bytes > 0 ? n > room / min_item_bytes : n > room) {
    fail("the count at byte ", start, " claims ", n, " items, more than the ", room, " bytes that follow can hold");
  }
  return static_cast<size_t>(n);
}

void MessageReader::end() const {
  if (at_ != bytes_.size()) fail(bytes_.size() - at_, " bytes follow its last field (from byte ", at_, ")");
}

std::string encode_success(std::string_view result) {
  return MessageWriter(MessageKind::Outcome).boolean(true).text(result).bytes();
}

std::string encode_failure(std::string_view reason) {
  return MessageWriter(MessageKind::Outcome).boolean(false).text(reason).bytes();
}

Outcome decode_outcome(std::string_view bytes, int peer, const std::string& what) {
  MessageReader reader(bytes, MessageKind::Outcome, peer, what);
  Outcome outcome;
  outcome.ok = reader.boolean();
  outcome.detail = reader.text();
  reader.end();
  return outcome;
}

}  // namespace fabricckpt::dist
