// LR schedulers and the optimizer descriptor tables, against files Python wrote
// (python-compat-tests/fixtures/make_state_fixtures.py: sched_<name>.pt, sched_<name>_next.pt).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <set>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/state.h"
#include "fabricckpt/torch_save.h"
#include "state/optimizer_descriptor.h"

namespace fabricckpt::state {
namespace {

const std::string kData = std::string(FABRICCKPT_TEST_DATA) + "/state/";
constexpr int kSteps = 3;  // K in the fixture script

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ValuePtr load(const std::string& name) { return load_torch_file(kData + name).root; }

std::string saved(const ValuePtr& root) {
  StringSink out;
  write_torch_save(out, root, "archive");
  return out.str();
}

// The fixture script's model and groups: [model[0]], [model[2], lr=0.05].
struct Scheduled {
  torch::nn::Sequential model{torch::nn::Linear(4, 3), torch::nn::Tanh(), torch::nn::Linear(3, 2)};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<torch::optim::StepLR> scheduler;

  template <typename Opt, typename Options>
  void with_groups(Options defaults) {
    Options second = defaults;
    second.lr(0.05);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model[0]->parameters());
    groups.emplace_back(model[2]->parameters(), std::make_unique<Options>(second));
    optimizer = std::make_unique<Opt>(groups, defaults);
  }

  explicit Scheduled(const std::string& name) {
    if (name == "steplr_sgd") {
      with_groups<torch::optim::SGD>(torch::optim::SGDOptions(0.1));
      scheduler = std::make_unique<torch::optim::StepLR>(*optimizer, 2, 0.5);
    } else if (name == "steplr_adam") {
      with_groups<torch::optim::Adam>(torch::optim::AdamOptions(0.01));
      scheduler = std::make_unique<torch::optim::StepLR>(*optimizer, 1, 0.1);
    } else {
      throw std::runtime_error("no scheduler fixture " + name);
    }
  }

  std::vector<double> lrs() const {
    std::vector<double> out;
    for (const auto& g : optimizer->param_groups()) out.push_back(g.options().get_lr());
    return out;
  }

  // What Lightning's fabric.save writes for {'optimizer': ..., 'scheduler': ...}.
  ValuePtr checkpoint() const {
    auto root = Value::plain_dict();
    root->dict().set(interned_string("optimizer"),
                     optimizer_state_dict(*optimizer, lr_scheduler_base_lrs(*scheduler)));
    root->dict().set(interned_string("scheduler"), lr_scheduler_state_dict(*scheduler));
    return root;
  }
};

std::vector<std::vector<double>> python_next_lrs(const std::string& name) {
  std::vector<std::vector<double>> out;
  ValuePtr steps = load("sched_" + name + "_next.pt");
  for (const auto& step : steps->items()) {
    out.emplace_back();
    for (const auto& lr : step->items()) out.back().push_back(lr->as_float());
  }
  return out;
}

class SchedulerState : public ::testing::TestWithParam<std::string> {};

// libtorch's StepLR stepped once more than Python's (whose constructor steps once) writes
// Python's file byte for byte: scheduler dict, and the optimizer's groups with 'initial_lr'.
TEST_P(SchedulerState, AfterStepsIsPythonByteForByte) {
  Scheduled s(GetParam());
  for (int i = 0; i < kSteps + 1; ++i) s.scheduler->step();
  EXPECT_TRUE(saved(s.checkpoint()) == read_file(kData + "sched_" + GetParam() + ".pt")) << GetParam();
}

// Python's state loaded into a fresh libtorch optimizer and StepLR is written back byte for
// byte, and the next lrs are Python's exactly.
TEST_P(SchedulerState, LoadsPythonStateAndContinues) {
  Scheduled s(GetParam());
  ValuePtr python = load("sched_" + GetParam() + ".pt");
  load_optimizer_state_dict(*s.optimizer, *python->dict().get("optimizer"));
  load_lr_scheduler_state_dict(*s.scheduler, *python->dict().get("scheduler"));
  EXPECT_TRUE(saved(s.checkpoint()) == read_file(kData + "sched_" + GetParam() + ".pt")) << GetParam();
  for (const auto& expected : python_next_lrs(GetParam())) {
    s.scheduler->step();
    EXPECT_EQ(s.lrs(), expected) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(State, SchedulerState, ::testing::Values("steplr_sgd", "steplr_adam"));

TEST(SchedulerState, FreshSchedulerIsPythonBeforeItsInitialStep) {
  Scheduled s("steplr_sgd");
  ValuePtr sd = lr_scheduler_state_dict(*s.scheduler);
  EXPECT_EQ(sd->dict().get("last_epoch")->as_int(), -1);
  EXPECT_EQ(sd->dict().get("_step_count")->as_int(), 0);
  s.scheduler->step();  // libtorch's first step keeps the lr, as Python's initial step does
  EXPECT_EQ(s.lrs(), (std::vector<double>{0.1, 0.05}));
  sd = lr_scheduler_state_dict(*s.scheduler);
  EXPECT_EQ(sd->dict().get("last_epoch")->as_int(), 0);
  EXPECT_EQ(sd->dict().get("_step_count")->as_int(), 1);
}

// base_lrs come back as the lr that was written, even after products that round.
TEST(SchedulerState, BaseLrsAreTheWrittenLrsAfterManyDecays) {
  Scheduled s("steplr_adam");  // step_size 1, gamma 0.1
  for (int i = 0; i < 21; ++i) s.scheduler->step();  // 20 decays
  double quotient = s.lrs()[0];
  for (int i = 0; i < 20; ++i) quotient /= 0.1;
  EXPECT_NE(quotient, 0.01);  // the products round: dividing them back does not give the lr written
  EXPECT_EQ(lr_scheduler_base_lrs(*s.scheduler), (std::vector<double>{0.01, 0.05}));
}

TEST(SchedulerState, KnowsWhichOptimizerItDrives) {
  Scheduled s("steplr_sgd"), other("steplr_sgd");
  EXPECT_TRUE(lr_scheduler_drives(*s.scheduler, *s.optimizer));
  EXPECT_FALSE(lr_scheduler_drives(*s.scheduler, *other.optimizer));
  EXPECT_EQ(s.lrs(), (std::vector<double>{0.1, 0.05}));  // the probe leaves the lrs as they were
  EXPECT_EQ(other.lrs(), (std::vector<double>{0.1, 0.05}));
}

TEST(SchedulerLoad, RefusesWhatLibtorchCannotChange) {
  Scheduled s("steplr_sgd");
  ValuePtr python = load("sched_steplr_sgd.pt")->dict().get("scheduler");
  auto with = [&](const char* key, ValuePtr v) {
    auto copy = Value::plain_dict();
    for (const auto& [k, value] : python->dict().items()) copy->dict().set(k, value);
    copy->dict().set(interned_string(key), std::move(v));
    return copy;
  };
  auto expect_error = [&](const ValuePtr& sd, const std::string& needle) {
    try {
      load_lr_scheduler_state_dict(*s.scheduler, *sd);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const StateError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(with("step_size", Value::integer(3)), "scheduler['step_size'] is 3 but this StepLR was built with step_size 2");
  expect_error(with("gamma", Value::floating(0.1)), "construct it with the saved step_size and gamma");
  expect_error(with("last_epoch", Value::string("x")), "scheduler['last_epoch'] is");
  expect_error(with("last_epoch", Value::integer(-2)), "outside what libtorch's step count can hold");
  ValuePtr not_a_dict = Value::list();
  expect_error(not_a_dict, "LR scheduler state_dict is");
  // Nothing changed: the failed loads left the fresh scheduler as it was.
  EXPECT_EQ(lr_scheduler_state_dict(*s.scheduler)->dict().get("_step_count")->as_int(), 0);
}

struct CustomScheduler : torch::optim::LRScheduler {
  using LRScheduler::LRScheduler;
  std::vector<double> get_lrs() override { return get_current_lrs(); }
};

TEST(SchedulerLoad, OnlyStepLRHasALayout) {
  Scheduled s("steplr_sgd");
  CustomScheduler custom(*s.optimizer);
  EXPECT_THROW(lr_scheduler_state_dict(custom), StateError);
}

// ---- ReduceLROnPlateau ----------------------------------------------------------------------

const std::vector<float> kPlateauMetrics{1.0f, 0.9f, 0.95f, 0.97f, 0.99f, 0.8f};  // the fixture script's
const std::vector<float> kPlateauNext{1.0f, 1.0f, 1.0f, 1.0f};

struct Plateau {
  Scheduled base{"steplr_sgd"};  // its SGD with two groups; its StepLR is not used
  torch::optim::ReduceLROnPlateauScheduler scheduler{*base.optimizer, torch::optim::ReduceLROnPlateauScheduler::min,
                                                     0.5f, 1, 1e-4, torch::optim::ReduceLROnPlateauScheduler::rel, 1,
                                                     std::vector<float>{0.001f, 0.001f}};
  ValuePtr checkpoint() const {
    auto root = Value::plain_dict();
    root->dict().set(interned_string("optimizer"), optimizer_state_dict(*base.optimizer));
    root->dict().set(interned_string("scheduler"), plateau_scheduler_state_dict(scheduler, *base.optimizer));
    return root;
  }
};

TEST(PlateauState, AfterStepsIsPythonByteForByte) {
  Plateau p;
  for (float metric : kPlateauMetrics) p.scheduler.step(metric);
  EXPECT_TRUE(saved(p.checkpoint()) == read_file(kData + "sched_plateau.pt"));
}

TEST(PlateauState, LoadsPythonStateAndContinues) {
  Plateau p;
  ValuePtr python = load("sched_plateau.pt");
  load_optimizer_state_dict(*p.base.optimizer, *python->dict().get("optimizer"));
  load_plateau_scheduler_state_dict(p.scheduler, *python->dict().get("scheduler"));
  EXPECT_TRUE(saved(p.checkpoint()) == read_file(kData + "sched_plateau.pt"));
  const auto expected = python_next_lrs("plateau");
  ASSERT_EQ(expected.size(), kPlateauNext.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    p.scheduler.step(kPlateauNext[i]);
    EXPECT_EQ(p.base.lrs(), expected[i]) << "step " << i;
  }
}

TEST(PlateauState, FreshSchedulerWritesPythonsInfinities) {
  Plateau p;
  ValuePtr sd = plateau_scheduler_state_dict(p.scheduler, *p.base.optimizer);
  EXPECT_EQ(sd->dict().get("best")->as_float(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(sd->dict().get("mode_worse")->as_float(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(sd->dict().get("default_min_lr")->as_float(), 0.001);  // 0.001f as written
}

TEST(PlateauLoad, RefusesBadValuesAndChangesNothing) {
  Plateau p;
  ValuePtr python = load("sched_plateau.pt")->dict().get("scheduler");
  auto copy = Value::plain_dict();
  for (const auto& [k, value] : python->dict().items()) copy->dict().set(k, value);
  copy->dict().set(interned_string("mode"), Value::string("sideways"));
  try {
    load_plateau_scheduler_state_dict(p.scheduler, *copy);
    ADD_FAILURE() << "no error";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("scheduler['mode'] is 'sideways', expected 'min' or 'max'"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(plateau_scheduler_state_dict(p.scheduler, *p.base.optimizer)->dict().get("last_epoch")->as_int(), 0);
  torch::nn::Linear one(2, 2);
  torch::optim::SGD other(one->parameters(), torch::optim::SGDOptions(0.1));  // one group, not two
  EXPECT_THROW(plateau_scheduler_state_dict(p.scheduler, other), StateError);
}

// ---- the optimizer tables ------------------------------------------------------------------

TEST(OptimizerDescriptors, OnePerOptimizerInTheRegistry) {
  std::set<std::string> names;
  for (const auto* d : optim::optimizer_descriptors()) names.insert(d->name());
  EXPECT_EQ(names, (std::set<std::string>{"Adam", "AdamW", "SGD", "RMSprop", "Adagrad"}));
  Scheduled s("steplr_adam");
  EXPECT_STREQ(optim::descriptor_of(*s.optimizer).name(), "Adam");
  torch::optim::LBFGS lbfgs(s.model->parameters());
  try {
    optim::descriptor_of(lbfgs);
    ADD_FAILURE() << "LBFGS has no descriptor";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("only Adam, AdamW, SGD, RMSprop and Adagrad have a Python state dict layout"),
              std::string::npos)
        << e.what();
  }
}

// Each table's group keys are Python's, in Python's order (the fixtures' param groups).
TEST(OptimizerDescriptors, GroupKeysArePythons) {
  for (const char* name : {"adam", "sgd_plain"}) {
    Scheduled s(std::string(name) == "adam" ? "steplr_adam" : "steplr_sgd");
    ValuePtr file = load(std::string("optim_") + name + ".pt");
    const Dict& python = file->dict().get("param_groups")->items()[0]->dict();
    const auto groups = optim::descriptor_of(*s.optimizer).write_groups(*s.optimizer);
    ASSERT_EQ(groups[0]->dict().size() + 1, python.size()) << name;  // all but 'params'
    for (size_t i = 0; i < groups[0]->dict().size(); ++i) {
      EXPECT_EQ(groups[0]->dict().items()[i].first->as_string(), python.items()[i].first->as_string()) << name;
    }
  }
}

TEST(OptimizerDescriptors, InitialLrsMustMatchTheGroups) {
  Scheduled s("steplr_sgd");
  EXPECT_THROW(optimizer_state_dict(*s.optimizer, {0.1}), StateError);
  const Dict& group = optimizer_state_dict(*s.optimizer, {0.1, 0.05})->dict().get("param_groups")->items()[1]->dict();
  EXPECT_EQ(group.items()[group.size() - 2].first->as_string(), "initial_lr");
  EXPECT_EQ(group.items()[group.size() - 1].first->as_string(), "params");
}

}  // namespace
}  // namespace fabricckpt::state
