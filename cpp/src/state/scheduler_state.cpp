// LR schedulers <-> Python's torch.optim.lr_scheduler state dicts (torch 2.10): libtorch's StepLR,
// the one LRScheduler the preset exposes, as Python's StepLR.state_dict().
//
// libtorch keeps a scheduler's state in protected and private members without accessors; they
// are reached here through a derived class (protected) and private_access.h (private).
// ReduceLROnPlateauScheduler, the preset's other scheduler, is in plateau_state.cpp.
//
// What maps, Python <- libtorch:
//   step_size, gamma            <- StepLR::step_size_, gamma_ (const: a load must match them)
//   _step_count, last_epoch     <- step_count_, step_count_ - 1. Python's constructor takes one step
//                                  that libtorch's does not; libtorch's first step() keeps the lr as
//                                  Python's initial step does, so both count the same steps and the
//                                  next lr is the same on either side.
//   _last_lr                    <- the optimizer's current lrs
//   base_lrs (= 'initial_lr')   <- derived: the lr each group had before the decays step_count_
//                                  implies (see base_lr below); libtorch does not keep it
//   _is_initial, _get_lr_called_within_step  <- False, as after any completed step
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/optim/schedulers/step_lr.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"
#include "private_access.h"
#include "state_values.h"

namespace fabricckpt::state {
namespace {

using torch::optim::LRScheduler;
using torch::optim::Optimizer;
using torch::optim::StepLR;

// ---- access to libtorch's scheduler internals --------------------------------------------------

// Protected members, through the derived-class rule for member pointers.
struct SchedulerInternals : LRScheduler {
  static unsigned& step_count(LRScheduler& s) { return s.*(&SchedulerInternals::step_count_); }
  static unsigned step_count(const LRScheduler& s) { return s.*(&SchedulerInternals::step_count_); }
  static std::vector<double> current_lrs(const LRScheduler& s) { return (s.*(&SchedulerInternals::get_current_lrs))(); }
};

FABRICCKPT_PRIVATE_MEMBER(StepSize, StepLR, const unsigned, step_size_);
FABRICCKPT_PRIVATE_MEMBER(Gamma, StepLR, const double, gamma_);

// ---- the state, as plain values ----------------------------------------------------------------

struct StepLRView {
  int64_t step_size = 0;
  double gamma = 0;
  int64_t step_count = 0;  // libtorch's step() calls = Python's _step_count
  std::vector<double> lrs;  // the optimizer's, now
};

const StepLR& as_step_lr(const LRScheduler& scheduler) {
  const auto* step_lr = dynamic_cast<const StepLR*>(&scheduler);
  if (!step_lr) throw StateError("unsupported LR scheduler: only StepLR has a Python state dict layout here");
  return *step_lr;
}

StepLRView view_of(const LRScheduler& scheduler) {
  const StepLR& s = as_step_lr(scheduler);
  return {static_cast<int64_t>(s.*member_pointer(StepSize{})), s.*member_pointer(Gamma{}),
          static_cast<int64_t>(SchedulerInternals::step_count(scheduler)), SchedulerInternals::current_lrs(scheduler)};
}

// The decays libtorch's StepLR has applied after `step_count` steps: the k-th step multiplies
// by gamma when k - 1 is a positive multiple of step_size.
int64_t decays(const StepLRView& v) { return v.step_count == 0 ? 0 : (v.step_count - 1) / v.step_size; }

double decayed(double base, double gamma, int64_t n) {
  for (int64_t i = 0; i < n; ++i) base = gamma * base;  // libtorch's product, in its order
  return base;
}

int shortest_digits(double x) {
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, x);
  return static_cast<int>(result.ptr - buffer);
}

// Python's base lr of a group whose lr is now `lr`: of the doubles that decay to exactly `lr`
// (the quotient and its neighbours), the one with the shortest decimal form, which is the number a
// person wrote when the lr was set by hand. The lr alone cannot tell more: when it was changed
// outside the scheduler, this is what the base would have been.
double base_lr(double lr, const StepLRView& v, size_t group) {
  const int64_t n = decays(v);
  if (n == 0 || v.gamma == 1.0) return lr;
  if (v.gamma == 0.0 || !std::isfinite(v.gamma)) {
    throw StateError(concat("StepLR with gamma ", v.gamma, " after ", n, " decays: the base lr of group ", group,
                            " (Python's base_lrs) cannot be derived from its lr"));
  }
  double quotient = lr;
  for (int64_t i = 0; i < n && std::isfinite(quotient); ++i) quotient /= v.gamma;
  constexpr int64_t kMaxExactDecays = 4096;  // past this the search costs more than it is worth
  if (!std::isfinite(quotient) || n > kMaxExactDecays) return quotient;
  double best = quotient;
  int best_digits = std::numeric_limits<int>::max();
  double below = quotient, above = quotient;
  for (int i = 0; i <= 64; ++i) {
    for (double candidate : {below, above}) {
      if (decayed(candidate, v.gamma, n) == lr && shortest_digits(candidate) < best_digits) {
        best = candidate;
        best_digits = shortest_digits(candidate);
      }
    }
    below = std::nextafter(below, -std::numeric_limits<double>::infinity());
    above = std::nextafter(above, std::numeric_limits<double>::infinity());
  }
  return best;
}

std::vector<double> base_lrs(const StepLRView& v) {
  std::vector<double> out;
  for (size_t g = 0; g < v.lrs.size(); ++g) out.push_back(base_lr(v.lrs[g], v, g));
  return out;
}

ValuePtr float_list(const std::vector<double>& values) {
  auto list = Value::list();
  for (double x : values) list->items().push_back(Value::floating(x));
  return list;
}

// ---- the table: Python's keys in Python's order ------------------------------------------------

struct StepLRKey {
  const char* name;
  ValuePtr (*write)(const StepLRView&);
  // Applies a saved value to the view (null: the key is informational and only type-checked).
  void (*read)(StepLRView&, const Value&, const std::string& what);
};

[[noreturn]] void built_differently(const std::string& what, const Value& saved, const std::string& ours) {
  throw StateError(concat(what, " is ", describe(saved), " but this StepLR was built with ", ours,
                          ": libtorch's StepLR cannot change it, so construct it with the saved step_size and gamma"));
}

const std::vector<StepLRKey>& step_lr_keys() {
  static const std::vector<StepLRKey> keys{
      {"step_size", [](const StepLRView& v) { return Value::integer(v.step_size); },
       [](StepLRView& v, const Value& saved, const std::string& what) {
         if (detail::integer(saved, what) != v.step_size) built_differently(what, saved, concat("step_size ", v.step_size));
       }},
      {"gamma", [](const StepLRView& v) { return Value::floating(v.gamma); },
       [](StepLRView& v, const Value& saved, const std::string& what) {
         if (detail::number(saved, what) != v.gamma) built_differently(what, saved, concat("gamma ", v.gamma));
       }},
      {"base_lrs", [](const StepLRView& v) { return float_list(base_lrs(v)); },
       [](StepLRView&, const Value& saved, const std::string& what) { detail::numbers(saved, what); }},
      {"last_epoch", [](const StepLRView& v) { return Value::integer(v.step_count - 1); },
       [](StepLRView& v, const Value& saved, const std::string& what) {
         const int64_t epoch = detail::integer(saved, what);
         if (epoch < -1 || epoch >= int64_t{std::numeric_limits<unsigned>::max()}) {
           throw StateError(concat(what, " is ", epoch, ", outside what libtorch's step count can hold"));
         }
         v.step_count = epoch + 1;  // the schedule follows last_epoch, as Python's get_lr does
       }},
      {"_step_count", [](const StepLRView& v) { return Value::integer(v.step_count); },
       [](StepLRView&, const Value& saved, const std::string& what) { detail::integer(saved, what); }},
      {"_is_initial", [](const StepLRView&) { return Value::boolean(false); }, nullptr},
      {"_get_lr_called_within_step", [](const StepLRView&) { return Value::boolean(false); }, nullptr},
      {"_last_lr", [](const StepLRView& v) { return float_list(v.lrs); },
       [](StepLRView&, const Value& saved, const std::string& what) { detail::numbers(saved, what); }},
  };
  return keys;
}

}  // namespace

ValuePtr lr_scheduler_state_dict(const LRScheduler& scheduler) {
  const StepLRView view = view_of(scheduler);
  auto out = Value::plain_dict();
  for (const auto& key : step_lr_keys()) out->dict().set(interned_string(key.name), key.write(view));
  return out;
}

void load_lr_scheduler_state_dict(LRScheduler& scheduler, const Value& state_dict) {
  StepLRView view = view_of(scheduler);
  const Dict& saved = detail::dict_of(state_dict, "LR scheduler state_dict");
  // Python's load is __dict__.update: keys the file lacks keep their value, unknown keys are kept aside.
  for (const auto& key : step_lr_keys()) {
    ValuePtr v = saved.get(key.name);
    if (v && key.read) key.read(view, *v, concat("scheduler['", key.name, "']"));
  }
  SchedulerInternals::step_count(scheduler) = static_cast<unsigned>(view.step_count);
}

std::vector<double> lr_scheduler_base_lrs(const LRScheduler& scheduler) { return base_lrs(view_of(scheduler)); }

bool lr_scheduler_drives(const LRScheduler& scheduler, Optimizer& optimizer) {
  // libtorch keeps the scheduler's optimizer in a private reference, which no member pointer can
  // name; the scheduler reads that optimizer's lrs, though, so an lr changed for a moment here
  // shows there only if it is this optimizer.
  auto& groups = optimizer.param_groups();
  if (groups.empty() || !groups[0].has_options()) return false;
  auto& options = groups[0].options();
  const double lr = options.get_lr();
  const double probe = lr == -1.0 ? -2.0 : -1.0;  // no lr a scheduler would hold
  options.set_lr(probe);
  std::vector<double> seen;
  try {
    seen = SchedulerInternals::current_lrs(scheduler);
  } catch (...) {
    options.set_lr(lr);
    throw;
  }
  options.set_lr(lr);
  return seen.size() == groups.size() && seen[0] == probe;
}

}  // namespace fabricckpt::state
