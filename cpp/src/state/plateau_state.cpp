// libtorch's ReduceLROnPlateauScheduler <-> Python's torch.optim.lr_scheduler.ReduceLROnPlateau
// state_dict() (torch 2.10). Every field is a private member (private_access.h).
//
// What maps, Python <- libtorch:
//   factor, min_lrs, best      <- float32 members: written as the shortest decimal that reads back
//                                 as the same float (0.1f -> 0.1, what was written in the source)
//   default_min_lr             <- min_lrs' common value, None when the groups differ
//   patience, cooldown, eps, last_epoch, threshold, cooldown_counter, num_bad_epochs  <- the same
//   mode, threshold_mode       <- the enums, as 'min'/'max' and 'rel'/'abs'
//   mode_worse                 <- inf / -inf by mode (libtorch keeps FLT_MAX / FLT_MIN); a best
//                                 still at libtorch's mode_worse is written as Python's
//   _last_lr                   <- the optimizer's current lrs: libtorch keeps that optimizer in a
//                                 private reference, so the caller names it
// Python's last_epoch starts at 0 and each step adds one, as libtorch's does.
#include <torch/optim/schedulers/reduce_on_plateau_scheduler.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "fabricckpt/error.h"
#include "fabricckpt/state.h"
#include "private_access.h"
#include "state_values.h"

namespace fabricckpt::state {
namespace {

using Plateau = torch::optim::ReduceLROnPlateauScheduler;

FABRICCKPT_PRIVATE_MEMBER(Mode, Plateau, Plateau::SchedulerMode, mode);
FABRICCKPT_PRIVATE_MEMBER(ModeWorse, Plateau, float, mode_worse);
FABRICCKPT_PRIVATE_MEMBER(Factor, Plateau, float, factor);
FABRICCKPT_PRIVATE_MEMBER(Patience, Plateau, int, patience);
FABRICCKPT_PRIVATE_MEMBER(Threshold, Plateau, double, threshold);
FABRICCKPT_PRIVATE_MEMBER(ThresholdMode, Plateau, Plateau::ThresholdMode, threshold_mode);
FABRICCKPT_PRIVATE_MEMBER(Cooldown, Plateau, int, cooldown);
FABRICCKPT_PRIVATE_MEMBER(CooldownCounter, Plateau, int, cooldown_counter);
FABRICCKPT_PRIVATE_MEMBER(MinLrs, Plateau, std::vector<float>, min_lrs);
FABRICCKPT_PRIVATE_MEMBER(Eps, Plateau, double, eps);
FABRICCKPT_PRIVATE_MEMBER(Best, Plateau, float, best);
FABRICCKPT_PRIVATE_MEMBER(LastEpoch, Plateau, int, last_epoch);
FABRICCKPT_PRIVATE_MEMBER(NumBadEpochs, Plateau, int, num_bad_epochs);

template <typename Tag>
auto& field(Plateau& s) {
  return s.*member_pointer(Tag{});
}
template <typename Tag>
const auto& field(const Plateau& s) {
  return s.*member_pointer(Tag{});
}

// The double a float32 stands for: its shortest decimal, unless that reads back as another float.
double as_written(float f) {
  char buffer[32];
  auto end = std::to_chars(buffer, buffer + sizeof buffer - 1, f).ptr;
  *end = '\0';
  const double d = std::strtod(buffer, nullptr);
  return static_cast<float>(d) == f ? d : static_cast<double>(f);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

double python_mode_worse(const Plateau& s) { return field<Mode>(s) == Plateau::min ? kInf : -kInf; }

ValuePtr ints_or_floats(const std::vector<float>& values) {
  auto list = Value::list();
  for (float x : values) list->items().push_back(detail::int_zero_or_float(as_written(x)));
  return list;
}

int int_of(const Value& v, const std::string& what) {
  const int64_t i = detail::integer(v, what);
  if (i < std::numeric_limits<int>::min() || i > std::numeric_limits<int>::max()) {
    throw StateError(concat(what, " is ", i, ", more than libtorch's int holds"));
  }
  return static_cast<int>(i);
}

template <typename Enum>
Enum choice(const Value& v, const std::string& what, const char* first, Enum first_value, const char* second,
            Enum second_value) {
  if (v.is(Kind::String) && v.as_string() == first) return first_value;
  if (v.is(Kind::String) && v.as_string() == second) return second_value;
  throw StateError(concat(what, " is ", describe(v), ", expected '", first, "' or '", second, "'"));
}

// Python's keys in Python's order: how each is written and read.
struct PlateauKey {
  const char* name;
  ValuePtr (*write)(const Plateau&, const std::vector<double>& lrs);
  void (*read)(Plateau&, const Value&, const std::string& what);  // null: not read back
};

const std::vector<PlateauKey>& plateau_keys() {
  using L = const std::vector<double>&;
  static const std::vector<PlateauKey> keys{
      {"factor", [](const Plateau& s, L) { return Value::floating(as_written(field<Factor>(s))); },
       [](Plateau& s, const Value& v, const std::string& w) { field<Factor>(s) = static_cast<float>(detail::number(v, w)); }},
      {"default_min_lr",
       [](const Plateau& s, L) {
         const auto& m = field<MinLrs>(s);
         for (float x : m) {
           if (x != m.front()) return Value::none();
         }
         return m.empty() ? Value::none() : detail::int_zero_or_float(as_written(m.front()));
       },
       nullptr},
      {"min_lrs", [](const Plateau& s, L) { return ints_or_floats(field<MinLrs>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) {
         const std::vector<double> saved = detail::numbers(v, w);
         auto& m = field<MinLrs>(s);
         if (saved.size() != m.size()) {
           throw StateError(concat(w, " has ", saved.size(), " values, the scheduler's optimizer ", m.size(), " groups"));
         }
         for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(saved[i]);
       }},
      {"patience", [](const Plateau& s, L) { return Value::integer(field<Patience>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<Patience>(s) = int_of(v, w); }},
      {"cooldown", [](const Plateau& s, L) { return Value::integer(field<Cooldown>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<Cooldown>(s) = int_of(v, w); }},
      {"eps", [](const Plateau& s, L) { return Value::floating(field<Eps>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<Eps>(s) = detail::number(v, w); }},
      {"last_epoch", [](const Plateau& s, L) { return Value::integer(field<LastEpoch>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<LastEpoch>(s) = int_of(v, w); }},
      {"_last_lr",
       [](const Plateau&, L lrs) {
         auto list = Value::list();
         for (double lr : lrs) list->items().push_back(Value::floating(lr));
         return list;
       },
       nullptr},
      {"mode_worse", [](const Plateau& s, L) { return Value::floating(python_mode_worse(s)); }, nullptr},
      {"mode", [](const Plateau& s, L) { return interned_string(field<Mode>(s) == Plateau::min ? "min" : "max"); },
       [](Plateau& s, const Value& v, const std::string& w) {
         field<Mode>(s) = choice(v, w, "min", Plateau::min, "max", Plateau::max);
       }},
      {"threshold", [](const Plateau& s, L) { return Value::floating(field<Threshold>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<Threshold>(s) = detail::number(v, w); }},
      {"threshold_mode",
       [](const Plateau& s, L) { return interned_string(field<ThresholdMode>(s) == Plateau::rel ? "rel" : "abs"); },
       [](Plateau& s, const Value& v, const std::string& w) {
         field<ThresholdMode>(s) = choice(v, w, "rel", Plateau::rel, "abs", Plateau::abs);
       }},
      {"best",
       [](const Plateau& s, L) {
         const float best = field<Best>(s);
         return Value::floating(best == field<ModeWorse>(s) ? python_mode_worse(s) : as_written(best));
       },
       [](Plateau& s, const Value& v, const std::string& w) { field<Best>(s) = static_cast<float>(detail::number(v, w)); }},
      {"cooldown_counter", [](const Plateau& s, L) { return Value::integer(field<CooldownCounter>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<CooldownCounter>(s) = int_of(v, w); }},
      {"num_bad_epochs", [](const Plateau& s, L) { return Value::integer(field<NumBadEpochs>(s)); },
       [](Plateau& s, const Value& v, const std::string& w) { field<NumBadEpochs>(s) = int_of(v, w); }},
  };
  return keys;
}

}  // namespace

ValuePtr plateau_scheduler_state_dict(const Plateau& scheduler, const torch::optim::Optimizer& optimizer) {
  std::vector<double> lrs;
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  if (lrs.size() != field<MinLrs>(scheduler).size()) {
    throw StateError(concat("the optimizer has ", lrs.size(), " parameter groups, the ReduceLROnPlateauScheduler ",
                            field<MinLrs>(scheduler).size(), ": it is not the scheduler's optimizer"));
  }
  auto out = Value::plain_dict();
  for (const auto& key : plateau_keys()) out->dict().set(interned_string(key.name), key.write(scheduler, lrs));
  return out;
}

void load_plateau_scheduler_state_dict(Plateau& scheduler, const Value& state_dict) {
  const Dict& saved = detail::dict_of(state_dict, "ReduceLROnPlateau state_dict");
  Plateau updated = scheduler;  // read into a copy: a bad value leaves the scheduler as it was
  for (const auto& key : plateau_keys()) {
    ValuePtr v = saved.get(key.name);
    if (v && key.read) key.read(updated, *v, concat("scheduler['", key.name, "']"));
  }
  // Python's load_state_dict ends with _init_is_better, which sets mode_worse from the mode.
  field<ModeWorse>(updated) = static_cast<float>(python_mode_worse(updated));
  // Copy the fields back one by one: the class holds a reference, so it cannot be assigned whole.
  field<Mode>(scheduler) = field<Mode>(updated);
  field<ModeWorse>(scheduler) = field<ModeWorse>(updated);
  field<Factor>(scheduler) = field<Factor>(updated);
  field<Patience>(scheduler) = field<Patience>(updated);
  field<Threshold>(scheduler) = field<Threshold>(updated);
  field<ThresholdMode>(scheduler) = field<ThresholdMode>(updated);
  field<Cooldown>(scheduler) = field<Cooldown>(updated);
  field<CooldownCounter>(scheduler) = field<CooldownCounter>(updated);
  field<MinLrs>(scheduler) = field<MinLrs>(updated);
  field<Eps>(scheduler) = field<Eps>(updated);
  field<Best>(scheduler) = field<Best>(updated);
  field<LastEpoch>(scheduler) = field<LastEpoch>(updated);
  field<NumBadEpochs>(scheduler) = field<NumBadEpochs>(updated);
}

}  // namespace fabricckpt::state
