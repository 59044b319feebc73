// Exceptions thrown by the core. Every message names what was being read or
// written (file, record, byte offset) so that a user can act on it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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

// The operating system refused a read or write. `error_number` is the errno
// when one applies (0 otherwise) and `path` the file it concerns when known,
// so that callers can tell a missing file from a full disk.
class IoError : public Error {
 public:
  explicit IoError(const std::string& message, int error_number = 0, std::string path = {})
      : Error(message), error_number_(error_number), path_(std::move(path)) {}
  int error_number() const noexcept { return error_number_; }
  const std::string& path() const noexcept { return path_; }

 private:
  int error_number_;
  std::string path_;
};

// The checkpoint is well formed but does not fit what the caller asked for
// (missing keys, wrong shapes or dtypes, bad filter).
class StateError : public Error {
 public:
  using Error::Error;
};

// A state dict that does not match its module: Python's _IncompatibleKeys
// plus the size mismatches, kept as lists so that callers need not parse the
// message (which is Python's wording).
class StateMismatchError : public StateError {
 public:
  StateMismatchError(const std::string& message, std::vector<std::string> missing_keys,
                     std::vector<std::string> unexpected_keys, std::vector<std::string> shape_mismatches)
      : StateError(message),
        missing_keys(std::move(missing_keys)),
        unexpected_keys(std::move(unexpected_keys)),
        shape_mismatches(std::move(shape_mismatches)) {}
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  std::vector<std::string> shape_mismatches;  // "key: checkpoint [2, 3], model [3, 3]"
};

// A collective operation failed: the rendezvous, or a peer that died, stalled
// or reported an error. The message names this rank and the operation.
class DistributedError : public Error {
 public:
  DistributedError(const std::string& message, int rank, std::string operation)
      : Error(message), rank(rank), operation(std::move(operation)) {}
  int rank;               // this process's rank in the group
  std::string operation;  // "TCPStore rendezvous", "barrier", "broadcast from rank 0", ...
};

// Builds a message from any streamable parts: concat("record ", name, " at ", 12).
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace fabricckpt
