// The JSON a safetensors header is made of, and nothing more: a bounds-checked reader of the few
// shapes the header holds (objects, strings, non-negative integers, arrays of them; anything else
// only skipped), the writer of serde_json's compact form, which is what the crate writes, and of
// Python's json strings, which Hugging Face's index files hold.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fabricckpt::safetensors {

// Whether `text` is UTF-8 as Rust's str::from_utf8 accepts it (no overlong forms, no surrogates).
bool valid_utf8(std::string_view text);

// A cursor over JSON text. Every method throws FormatError "<name>: safetensors header: <problem>
// at byte N" on text it does not expect.
class JsonCursor {
 public:
  JsonCursor(std::string_view text, std::string name) : text_(text), name_(std::move(name)) {}

  void skip_space();
  // Consumes `c` (after white space) or fails naming what was expected.
  void expect(char c, const char* what);
  // Consumes `c` after white space if it is next.
  bool take(char c);
  // Whether `c` is next (after white space), consuming nothing.
  bool peek_is(char c);
  // Consumes `word` (after white space) if it is next.
  bool take_word(std::string_view word);
  // A string with its escapes decoded (serde_json's rules: \uXXXX pairs for astral code points,
  // no lone surrogates, no raw control characters).
  std::string string();
  // A non-negative integer that fits 64 bits (what Rust's usize holds here).
  uint64_t unsigned_integer(const char* what);
  // Any JSON value, checked and dropped; nesting deeper than serde_json's 128 levels is refused.
  void skip_value(int depth = 0);
  bool at_end();  // only white space is left
  [[noreturn]] void fail(const std::string& problem) const;
  size_t position() const { return pos_; }

 private:
  char peek() const;
  void skip_literal(std::string_view word);
  void skip_number();

  std::string_view text_;
  std::string name_;
  size_t pos_ = 0;
};

// `text` as serde_json writes a string: quoted, with \" \\ \b \f \n \r \t and \u00xx (lower-case
// hex) for the other control characters; everything else as it is.
void append_json_string(std::string& out, std::string_view text);

// `text` (valid UTF-8) as Python's json.dumps writes a string with ensure_ascii: printable ASCII as
// it is except \" and \\, \n \r \t \b \f, everything else \uxxxx (lower-case hex; a surrogate
// pair above U+FFFF). What huggingface_hub's index file holds.
void append_python_json_string(std::string& out, std::string_view text);

}  // namespace fabricckpt::safetensors
