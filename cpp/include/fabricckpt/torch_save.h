// The torch.save file format: the zip container ("new" format, torch >= 1.6)
// for reading and writing, and the legacy pickle-stream format for reading.
// Tensors come out as CPU tensors whatever location tag the file carries.
#pragma once

#include <string>

#include "fabricckpt/value.h"

namespace fabricckpt {

class OutputSink;

struct TorchLoadOptions {
  bool verify_crc = true;  // check each record's CRC-32 before using it
};

struct TorchCheckpoint {
  ValuePtr root;
  std::string archive_name;  // folder inside the zip ("archive" for Lightning files); empty for legacy files
  bool legacy = false;       // pre-1.6 pickle-stream format
};

// Reads a torch.save file (zip or legacy). FormatError names the file and record.
TorchCheckpoint load_torch_file(const std::string& path, const TorchLoadOptions& options = {});

struct TorchSaveOptions {
  std::string archive_name = "archive";  // what torch.save writes when given a file object, as Lightning does
  bool fsync = true;                     // make the file durable before it replaces the target
};

// Writes `root` as torch.save(root, f) does: atomically (temp file + rename),
// byte for byte what torch 2.10 writes for the same object graph.
void save_torch_file(const std::string& path, const ValuePtr& root, const TorchSaveOptions& options = {});

// The same stream written to any sink.
void write_torch_save(OutputSink& out, const ValuePtr& root, const std::string& archive_name);

}  // namespace fabricckpt
