// Exceptions thrown by the core. Every message names what was being read or
// written (file, record, byte offset) so that a user can act on it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fabricckpt {

// Base of every error the library raises.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The bytes are not a valid checkpoint: truncated, corrupt, hostile or unsupported.
class FormatError : public Error {
 public:
  using Error::Error;
};

// The operating system refused a read or write.
class IoError : public Error {
 public:
  using Error::Error;
};

// The checkpoint is well formed but does not fit what the caller asked for
// (missing keys, wrong shapes or dtypes, bad filter).
class StateError : public Error {
 public:
  using Error::Error;
};

// Builds a message from any streamable parts: concat("record ", name, " at ", 12).
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace fabricckpt
