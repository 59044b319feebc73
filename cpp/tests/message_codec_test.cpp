#include "dist/message_codec.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "fabricckpt/error.h"

namespace fabricckpt::dist {
namespace {

template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no Error";
  } catch (const Error& e) {
    for (const auto& fragment : fragments) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what() << "\nwanted: " << fragment;
    }
  }
}

std::string sample() {
  MessageWriter w(MessageKind::ShardReport);
  w.count(2).boolean(true).boolean(false).integer(-7).integer(INT64_MAX).integer(INT64_MIN);
  w.text("").text(std::string("a\0b\n", 4)).integers({}).integers({0, -1, 1LL << 40});
  return w.bytes();
}

TEST(MessageCodec, RoundTripsEveryField) {
  const std::string bytes = sample();
  MessageReader r(bytes, MessageKind::ShardReport, 3, "shard report");
  EXPECT_EQ(r.count(1), 2u);
  EXPECT_TRUE(r.boolean());
  EXPECT_FALSE(r.boolean());
  EXPECT_EQ(r.integer(), -7);
  EXPECT_EQ(r.integer(), INT64_MAX);
  EXPECT_EQ(r.integer(), INT64_MIN);
  EXPECT_EQ(r.text(), "");
  EXPECT_EQ(r.text(), std::string("a\0b\n", 4));
  EXPECT_EQ(r.integers(), std::vector<int64_t>{});
  EXPECT_EQ(r.integers(), (std::vector<int64_t>{0, -1, 1LL << 40}));
  EXPECT_NO_THROW(r.end());
}

TEST(MessageCodec, LayoutIsLittleEndianAndTagged) {
  const std::string bytes = MessageWriter(MessageKind::ShardRegions).integer(0x0102).text("ab").bytes();
  EXPECT_EQ(bytes, std::string("\xFC\x03"
                               "i\x02\x01\0\0\0\0\0\0"
                               "s\x02\0\0\0\0\0\0\0ab",
                               2 + 9 + 11));
}

TEST(MessageCodec, OutcomesRoundTrip) {
  const Outcome ok = decode_outcome(encode_success("/tmp/.ckpt.tmp-1"), 0, "preparation");
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.detail, "/tmp/.ckpt.tmp-1");
  const Outcome failed = decode_outcome(encode_failure("disk full"), 2, "shard report");
  EXPECT_FALSE(failed.ok);
  EXPECT_EQ(failed.detail, "disk full");
  // A structured result travels inside a success.
  const std::string inner = sample();
  EXPECT_EQ(decode_outcome(encode_success(inner), 1, "shard report").detail, inner);
}

TEST(MessageCodec, EveryTruncationIsAnErrorNamingThePeer) {
  const std::string bytes = sample();
  for (size_t length = 0; length < bytes.size(); ++length) {
    expect_error(
        [&] {
          MessageReader r(std::string_view(bytes).substr(0, length), MessageKind::ShardReport, 5, "shard report");
          r.count(1);
          r.boolean();
          r.boolean();
          r.integer();
          r.integer();
          r.integer();
          r.text();
          r.text();
          r.integers();
          r.integers();
          r.end();
        },
        {"rank 5 sent a malformed shard report: "});
  }
}

TEST(MessageCodec, GarbledMessagesAreRefused) {
  const std::string bytes = sample();
  auto read_all = [](const std::string& b) {
    MessageReader r(b, MessageKind::ShardReport, 1, "shard report");
    r.count(1);
    r.boolean();
    r.boolean();
    r.integer();
    r.integer();
    r.integer();
    r.text();
    r.text();
    r.integers();
    r.integers();
    r.end();
  };
  std::string marker = bytes;
  marker[0] = 'x';
  expect_error([&] { read_all(marker); }, {"rank 1 sent a malformed shard report: it does not start with the message marker"});
  expect_error([&] { read_all(MessageWriter(MessageKind::Outcome).bytes()); }, {"kind 1, expected kind 2"});
  std::string tag = bytes;
  tag[2] = 'i';  // the count's tag says integer
  expect_error([&] { read_all(tag); }, {"byte 2 holds an integer where a count was expected"});
  std::string unknown = bytes;
  unknown[2] = '?';
  expect_error([&] { read_all(unknown); }, {"byte 2 holds an unknown field where a count was expected"});
  std::string flag = bytes;
  flag[12] = 7;  // the first boolean's value
  expect_error([&] { read_all(flag); }, {"the boolean at byte 12 is 7, neither 0 nor 1"});
  expect_error([&] { read_all(bytes + "x"); }, {"1 bytes follow its last field"});
  expect_error([&] { decode_outcome("ok/tmp/dir", 0, "preparation of /tmp/c"); },
               {"rank 0 sent a malformed preparation of /tmp/c"});
}

TEST(MessageCodec, LengthsAndCountsAreBoundedByTheMessage) {
  // A text claiming more bytes than follow, an integer list claiming 2^61 integers, a count of 2^40.
  MessageWriter w(MessageKind::ShardReport);
  w.text("abc");
  std::string text = w.bytes();
  text[3] = 100;  // length 100, 3 bytes follow
  expect_error([&] { MessageReader(text, MessageKind::ShardReport, 2, "shard report").text(); },
               {"rank 2", "the text at byte 3 claims 100 bytes, but only 3 follow"});
  std::string list = MessageWriter(MessageKind::ShardReport).integers({1}).bytes();
  list[3 + 7] = 0x20;  // length's top byte: 2^61 + 1
  expect_error([&] { MessageReader(list, MessageKind::ShardReport, 2, "shard report").integers(); },
               {"the integer list at byte 3 claims", "integers, but only 8 bytes follow"});
  std::string count = MessageWriter(MessageKind::ShardReport).count(uint64_t{1} << 40).integer(1).bytes();
  expect_error([&] { MessageReader(count, MessageKind::ShardReport, 2, "shard report").count(9); },
               {"the count at byte 3 claims 1099511627776 items, more than the 9 bytes that follow can hold"});
}

TEST(MessageCodec, RandomBytesNeverCrash) {
  std::mt19937 random(11);
  const std::string good = sample();
  for (int round = 0; round < 2000; ++round) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int f = 0; f < flips; ++f) bytes[random() % bytes.size()] = static_cast<char>(random());
    try {
      MessageReader r(bytes, MessageKind::ShardReport, 0, "shard report");
      for (size_t i = 0, n = r.count(1); i < n; ++i) r.boolean();
      r.integer();
      r.integer();
      r.integer();
      r.text();
      r.text();
      r.integers();
      r.integers();
      r.end();
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace fabricckpt::dist
