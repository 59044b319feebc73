// A step that global rank 0 takes alone, whose outcome every rank learns (as Lightning's
// rank-zero-only saves followed by a barrier).
#pragma once

#include <exception>
#include <string>

#include "fabricckpt/dist.h"
#include "fabricckpt/error.h"
#include "message_codec.h"

namespace fabricckpt::sharded {

// Runs `step` on rank 0 alone, then every rank learns whether it worked (and throws if not).
template <typename Step>
void on_rank_zero(ProcessGroup* group, const std::string& what, Step&& step) {
  const int rank = group ? group->rank() : 0;
  std::string failure;
  std::exception_ptr own_failure;  // rank 0 rethrows its own error with its type once all know
  if (rank == 0) {
    try {
      step();
    } catch (const std::exception& e) {
      if (!group || group->world_size() == 1) throw;
      failure = e.what();
      own_failure = std::current_exception();
    }
  }
  if (!group || group->world_size() == 1) return;
  const std::string sent = group->broadcast(failure.empty() ? dist::encode_success("") : dist::encode_failure(failure), 0);
  group->barrier();
  const dist::Outcome outcome = dist::decode_outcome(sent, 0, concat("outcome of ", what));
  if (!outcome.ok) {
    if (own_failure) std::rethrow_exception(own_failure);
    throw DistributedError(concat(what, ": global rank 0 failed (on rank ", rank, "): ", outcome.detail), rank,
                           "outcome from rank 0");
  }
}

}  // namespace fabricckpt::sharded
