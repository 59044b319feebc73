// The safetensors header's JSON: reading with every byte bounds-checked, writing as serde_json does.
#include "safetensors_json.h"

#include "fabricckpt/error.h"

namespace fabricckpt::safetensors {

namespace {

constexpr int kMaxDepth = 128;  // serde_json's recursion limit

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

}  // namespace

bool valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char lead = s[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((lead & 0xe0) == 0xc0) {
      len = 2;
      cp = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      len = 3;
      cp = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      len = 4;
      cp = lead & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

void JsonCursor::fail(const std::string& problem) const {
  throw FormatError(concat(name_, ": safetensors header: ", problem, " at byte ", pos_, " of the JSON"));
}

char JsonCursor::peek() const {
  if (pos_ >= text_.size()) fail("unexpected end");
  return text_[pos_];
}

void JsonCursor::skip_space() {
  while (pos_ < text_.size()) {
    const char c = text_[pos_];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    ++pos_;
  }
}

void JsonCursor::expect(char c, const char* what) {
  skip_space();
  if (peek() != c) fail(concat("expected ", what));
  ++pos_;
}

bool JsonCursor::peek_is(char c) {
  skip_space();
  return pos_ < text_.size() && text_[pos_] == c;
}

bool JsonCursor::take(char c) {
  skip_space();
  if (pos_ < text_.size() && text_[pos_] == c) {
    ++pos_;
    return true;
  }
  return false;
}

bool JsonCursor::take_word(std::string_view word) {
  skip_space();
  if (text_.substr(pos_, word.size()) != word) return false;
  pos_ += word.size();
  return true;
}

bool JsonCursor::at_end() {
  skip_space();
  return pos_ == text_.size();
}

std::string JsonCursor::string() {
  expect('"', "a string");
  std::string out;
  auto hex4 = [&]() -> uint32_t {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const int d = hex_value(text_[pos_ + k]);
      if (d < 0) fail("invalid \\u escape");
      v = (v << 4) | static_cast<uint32_t>(d);
    }
    pos_ += 4;
    return v;
  };
  for (;;) {
    const char c = peek();
    ++pos_;
    if (c == '"') return out;
    if (static_cast<unsigned char>(c) < 0x20) {
      --pos_;
      fail("control character in a string");
    }
    if (c != '\\') {
      out += c;  // the whole header was checked to be UTF-8 before parsing
      continue;
    }
    const char e = peek();
    ++pos_;
    switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        uint32_t cp = hex4();
        if (cp >= 0xdc00 && cp <= 0xdfff) fail("lone trailing surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (text_.size() - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
            fail("lone leading surrogate in a \\u escape");
          }
          pos_ += 2;
          const uint32_t low = hex4();
          if (low < 0xdc00 || low > 0xdfff) fail("invalid surrogate pair in a \\u escape");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        append_utf8(out, cp);
        break;
      }
      default:
        --pos_;
        fail("invalid escape in a string");
    }
  }
}

uint64_t JsonCursor::unsigned_integer(const char* what) {
  skip_space();
  const size_t start = pos_;
  if (peek() < '0' || peek() > '9') fail(concat("expected ", what, " (a non-negative integer)"));
  uint64_t v = 0;
  while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
    const uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
    if (v > (UINT64_MAX - digit) / 10) fail(concat(what, " too large"));
    v = v * 10 + digit;
    ++pos_;
  }
  if (text_[start] == '0' && pos_ - start > 1) fail("leading zero in a number");
  if (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
    fail(concat(what, " is not an integer"));
  }
  return v;
}

void JsonCursor::skip_literal(std::string_view word) {
  if (text_.substr(pos_, word.size()) != word) fail("invalid literal");
  pos_ += word.size();
}

void JsonCursor::skip_number() {
  auto digits = [&]() {
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    if (pos_ == start) fail("invalid number");
  };
  if (text_[pos_] == '-') ++pos_;
  if (pos_ < text_.size() && text_[pos_] == '0') {
    ++pos_;
  } else {
    digits();
  }
  if (pos_ < text_.size() && text_[pos_] == '.') {
    ++pos_;
    digits();
  }
  if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
    ++pos_;
    if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
    digits();
  }
}

void JsonCursor::skip_value(int depth) {
  if (depth >= kMaxDepth) fail("nesting deeper than 128 levels");
  skip_space();
  const char c = peek();
  if (c == '"') {
    string();
  } else if (c == '{') {
    ++pos_;
    if (take('}')) return;
    do {
      string();
      expect(':', "':'");
      skip_value(depth + 1);
    } while (take(','));
    expect('}', "',' or '}'");
  } else if (c == '[') {
    ++pos_;
    if (take(']')) return;
    do {
      skip_value(depth + 1);
    } while (take(','));
    expect(']', "',' or ']'");
  } else if (c == 't') {
    skip_literal("true");
  } else if (c == 'f') {
    skip_literal("false");
  } else if (c == 'n') {
    skip_literal("null");
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    skip_number();
  } else {
    fail("expected a value");
  }
}

namespace {

constexpr char kHex[] = "0123456789abcdef";

// The escapes both serde_json and Python write for an ASCII character: \" \\ \b \f \n \r \t, and
// \u00xx for the other control characters (and DEL with `escape_del`). False: `c` goes as it is.
bool append_ascii_escape(std::string& out, unsigned char c, bool escape_del) {
  switch (c) {
    case '"': out += "\\\""; return true;
    case '\\': out += "\\\\"; return true;
    case '\b': out += "\\b"; return true;
    case '\f': out += "\\f"; return true;
    case '\n': out += "\\n"; return true;
    case '\r': out += "\\r"; return true;
    case '\t': out += "\\t"; return true;
    default:
      if (c >= 0x20 && !(escape_del && c == 0x7f)) return false;
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
      return true;
  }
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    if (!append_ascii_escape(out, static_cast<unsigned char>(c), /*escape_del=*/false)) out += c;
  }
  out += '"';
}

void append_python_json_string(std::string& out, std::string_view text) {
  auto unit = [&](uint32_t u) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(u >> shift) & 0xf];
  };
  out += '"';
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      if (!append_ascii_escape(out, c, /*escape_del=*/true)) out += static_cast<char>(c);
      continue;
    }
    // A multi-byte sequence (the caller checked the text is UTF-8): its code point.
    const int length = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (i + static_cast<size_t>(length) > text.size()) throw Error("append_python_json_string: text is not UTF-8");
    uint32_t cp = c & (0x7f >> length);
    for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
    i += static_cast<size_t>(length);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      unit(0xd800 | (cp >> 10));
      unit(0xdc00 | (cp & 0x3ff));
    } else {
      unit(cp);
    }
  }
  out += '"';
}

}  // namespace fabricckpt::safetensors
