// The state layer: libtorch modules and optimizers <-> Python-shaped state dicts, against
// files Python wrote (python-compat-tests/fixtures/make_state_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <functional>
#include <iterator>
#include <map>

#include "fabricckpt/error.h"
#include "fabricckpt/files.h"
#include "fabricckpt/state.h"
#include "fabricckpt/torch_save.h"
#include "fabricckpt/zip.h"

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

std::string record(const std::string& file_bytes, const std::string& name) {
  ZipReader zip(MappedFile::from_bytes(file_bytes, "bytes"));
  const ZipRecord* r = zip.find(name);
  EXPECT_TRUE(r) << name;
  return r ? std::string(zip.data(*r)) : std::string();
}

const at::Tensor& tensor_of(const Value& dict, std::string_view key) {
  ValuePtr v = dict.dict().get(key);
  if (!v || !v->is(Kind::Tensor)) throw std::runtime_error("no tensor " + std::string(key));
  return *v->tensor_ref().tensor;
}

// Shows where two byte strings part, for failure messages.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return concat("sizes ", a.size(), " and ", b.size(), ", first difference at byte ", i);
}

// ---- modules, the same trees as the fixture script builds -----------------------------------

struct BlockImpl : torch::nn::Module {
  BlockImpl() {
    proj = register_module("proj", torch::nn::Linear(4, 4));
    scale = register_buffer("scale", torch::ones({4}));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
  }
  torch::Tensor forward(torch::Tensor x) { return norm(proj(x)) * scale; }
  torch::nn::Linear proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(Block);

struct NetImpl : torch::nn::Module {
  NetImpl() {
    alpha = register_parameter("alpha", torch::tensor(0.5));
    encoder = register_module("encoder", torch::nn::Sequential(torch::nn::Linear(3, 4), torch::nn::ReLU(), Block()));
    steps = register_buffer("steps", torch::zeros({}, torch::kLong));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(4, 2).bias(false)));
  }
  torch::Tensor alpha, steps;
  torch::nn::Sequential encoder{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Net);

std::shared_ptr<torch::nn::Module> make_module(const std::string& name) {
  using namespace torch::nn;
  if (name == "seq") return Sequential(Linear(3, 4), BatchNorm1d(4), ReLU(), Linear(4, 2)).ptr();
  if (name == "nested") return Net().ptr();
  if (name == "lstm") return LSTM(LSTMOptions(3, 4).num_layers(2).bidirectional(true)).ptr();
  if (name == "gru") return GRU(GRUOptions(2, 3)).ptr();
  if (name == "lstm_proj") return LSTM(LSTMOptions(3, 4).num_layers(2).proj_size(2)).ptr();
  if (name == "rnn") return RNN(RNNOptions(2, 3).bias(false)).ptr();
  if (name == "attention") return MultiheadAttention(MultiheadAttentionOptions(4, 2)).ptr();
  if (name == "encoder_layer") {
    return TransformerEncoderLayer(TransformerEncoderLayerOptions(4, 2).dim_feedforward(8)).ptr();
  }
  if (name == "conv") {
    return Sequential(Conv2d(Conv2dOptions(2, 3, 3)), BatchNorm2d(3), InstanceNorm1d(InstanceNorm1dOptions(3).affine(true)),
                      Conv1d(Conv1dOptions(3, 2, 2).bias(false)))
        .ptr();
  }
  if (name == "embedding") return Embedding(10, 3).ptr();
  if (name == "layernorm") return LayerNorm(LayerNormOptions({2, 3})).ptr();
  if (name == "linear") return Linear(3, 2).ptr();
  if (name == "seq3") return Sequential(Linear(3, 2), ReLU(), Linear(2, 1)).ptr();
  if (name == "linear_nobias") return Linear(LinearOptions(3, 2).bias(false)).ptr();
  if (name == "bn") return BatchNorm1d(2).ptr();
  if (name == "instancenorm") return InstanceNorm1d(2).ptr();
  throw std::runtime_error("no module " + name);
}

class ModuleBytes : public ::testing::TestWithParam<std::string> {};

// Loading Python's state dict into the libtorch module and taking it back out writes
// exactly what torch.save(model.state_dict()) wrote.
TEST_P(ModuleBytes, StateDictIsPythonByteForByte) {
  const std::string file = "module_" + GetParam() + ".pt";
  auto module = make_module(GetParam());
  ValuePtr python = load(file);
  LoadReport report = load_module_state_dict(*module, *python, /*strict=*/true);
  EXPECT_TRUE(report.missing_keys.empty());
  EXPECT_TRUE(report.unexpected_keys.empty());

  ValuePtr sd = module_state_dict(*module);
  ASSERT_TRUE(sd->dict().ordered);
  ASSERT_EQ(sd->dict().size(), python->dict().size());
  for (size_t i = 0; i < sd->dict().size(); ++i) {
    EXPECT_EQ(sd->dict().items()[i].first->as_string(), python->dict().items()[i].first->as_string());
  }
  const std::string expected = read_file(kData + file);
  const std::string actual = saved(sd);
  EXPECT_TRUE(actual == expected) << first_difference(actual, expected);
  EXPECT_TRUE(record(actual, "data.pkl") == record(expected, "data.pkl"));
}

INSTANTIATE_TEST_SUITE_P(State, ModuleBytes,
                         ::testing::Values("seq", "nested", "lstm", "gru", "lstm_proj", "rnn", "attention",
                                           "encoder_layer", "conv", "embedding", "layernorm", "linear"));

TEST(ModuleState, TensorsAreDetachedViewsOfTheParameters) {
  auto module = make_module("seq");
  ValuePtr sd = module_state_dict(*module);
  const auto params = module->named_parameters();
  for (const auto& item : params) {
    const at::Tensor& t = tensor_of(*sd, item.key());
    EXPECT_FALSE(t.requires_grad()) << item.key();
    EXPECT_TRUE(t.is_alias_of(item.value())) << item.key();
    EXPECT_FALSE(sd->dict().get(item.key())->tensor_ref().is_parameter);
  }
  EXPECT_TRUE(tensor_of(*sd, "1.num_batches_tracked").is_alias_of(module->named_buffers()["1.num_batches_tracked"]));
}

TEST(ModuleState, MetadataHasEveryModuleWithPythonVersions) {
  auto module = make_module("conv");
  ValuePtr sd = module_state_dict(*module);
  ASSERT_TRUE(sd->dict().state);
  const Dict& meta = sd->dict().state->dict().get("_metadata")->dict();
  ASSERT_TRUE(meta.ordered);
  std::vector<std::pair<std::string, int64_t>> seen;
  for (const auto& [k, v] : meta.items()) seen.emplace_back(k->as_string(), v->dict().get("version")->as_int());
  const std::vector<std::pair<std::string, int64_t>> expected = {{"", 1}, {"0", 1}, {"1", 2}, {"2", 2}, {"3", 1}};
  EXPECT_EQ(seen, expected);
  // InstanceNorm1d without running stats and Conv1d without bias: undefined tensors are left out.
  EXPECT_FALSE(sd->dict().get("2.running_mean"));
  EXPECT_FALSE(sd->dict().get("3.bias"));
  // One 'version' string for all, as CPython's interned literal.
  EXPECT_EQ(meta.items()[0].second->dict().items()[0].first.get(), meta.items()[3].second->dict().items()[0].first.get());
}

TEST(ModuleState, PythonClassNames) {
  EXPECT_EQ(python_class_name(*make_module("seq")), "Sequential");
  EXPECT_EQ(python_class_name(*make_module("bn")), "BatchNorm1d");
  EXPECT_EQ(python_class_name(*make_module("nested")), "Net");
  EXPECT_EQ(python_module_version(*make_module("bn")), 2);
  EXPECT_EQ(python_module_version(*make_module("instancenorm")), 2);
  EXPECT_EQ(python_module_version(*make_module("lstm")), 1);
}

// Every case of load_cases.pt: Python's error text, or its missing/unexpected keys.
TEST(ModuleLoad, MatchesPythonOutcomes) {
  ValuePtr cases = load("load_cases.pt");
  ASSERT_GE(cases->dict().size(), 10u);
  for (const auto& [name_value, entry] : cases->dict().items()) {
    const std::string name = name_value->as_string();
    const Dict& c = entry->dict();
    auto module = make_module(c.get("model")->as_string());
    const bool strict = c.get("strict")->as_bool();
    ValuePtr error = c.get("error");
    try {
      LoadReport report = load_module_state_dict(*module, *c.get("state_dict"), strict);
      EXPECT_TRUE(error->is(Kind::None)) << name << ": expected " << error->as_string();
      auto strings = [](const Value& list) {
        std::vector<std::string> out;
        for (const auto& item : list.items()) out.push_back(item->as_string());
        return out;
      };
      if (!error->is(Kind::None)) continue;
      EXPECT_EQ(report.missing_keys, strings(*c.get("missing"))) << name;
      EXPECT_EQ(report.unexpected_keys, strings(*c.get("unexpected"))) << name;
    } catch (const StateError& e) {
      ASSERT_TRUE(error->is(Kind::String)) << name << ": unexpected error " << e.what();
      EXPECT_EQ(std::string(e.what()), error->as_string()) << name;
    }
  }
}

TEST(ModuleLoad, NonStrictLoadsWhatMatches) {
  auto with_bias = make_module("linear");
  auto without_bias = make_module("linear_nobias");
  {
    torch::NoGradGuard no_grad;
    with_bias->named_parameters()["weight"].copy_(torch::arange(6.0).reshape({2, 3}));
  }
  LoadReport report = load_module_state_dict(*without_bias, *module_state_dict(*with_bias), false);
  EXPECT_TRUE(report.missing_keys.empty());
  EXPECT_EQ(report.unexpected_keys, std::vector<std::string>{"bias"});
  EXPECT_TRUE(torch::equal(without_bias->named_parameters()["weight"], torch::arange(6.0).reshape({2, 3})));
  EXPECT_TRUE(without_bias->named_parameters()["weight"].requires_grad());
}

TEST(ModuleLoad, ConvertsDtypesAndCopies) {
  auto module = make_module("linear");
  auto sd = Value::plain_dict();
  auto put = [&](const char* key, const at::Tensor& t) {
    TensorRef ref;
    ref.tensor = std::make_shared<at::Tensor>(t);
    sd->dict().set(Value::string(key), Value::tensor(ref));
  };
  auto weight = torch::ones({2, 3}, torch::kFloat64);
  put("weight", weight);
  put("bias", torch::tensor({1.0f, 2.0f}));
  load_module_state_dict(*module, *sd, true);
  const auto& w = module->named_parameters()["weight"];
  EXPECT_EQ(w.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(w, torch::ones({2, 3})));
  weight.fill_(5.0);  // a copy, not a share
  EXPECT_TRUE(torch::equal(w, torch::ones({2, 3})));
}

TEST(ModuleLoad, RefusesNonDicts) {
  auto module = make_module("linear");
  try {
    load_module_state_dict(*module, *Value::list(), true);
    FAIL();
  } catch (const StateError& e) {
    EXPECT_EQ(std::string(e.what()), "Expected state_dict to be dict-like, got <class 'list'>.");
  }
  auto int_keys = Value::plain_dict();
  int_keys->dict().set(Value::integer(1), Value::none());
  EXPECT_THROW(load_module_state_dict(*module, *int_keys, true), StateError);
}

// ---- optimizers -----------------------------------------------------------------------------

using torch::optim::OptimizerParamGroup;

// The optimizer the fixture script makes for `name`, over groups [model[0]], [model[2], lr=0.05].
template <typename Opt, typename Options>
std::unique_ptr<torch::optim::Optimizer> with_groups(torch::nn::Sequential& model, Options defaults) {
  Options second = defaults;
  second.lr(0.05);
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(model[0]->parameters());
  groups.emplace_back(model[2]->parameters(), std::make_unique<Options>(second));
  return std::make_unique<Opt>(groups, defaults);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, torch::nn::Sequential& model) {
  using namespace torch::optim;
  if (name == "adam") return with_groups<Adam>(model, AdamOptions(0.01));
  if (name == "adam_amsgrad") {
    return with_groups<Adam>(model, AdamOptions(0.01).betas({0.8, 0.99}).weight_decay(0.1).amsgrad(true));
  }
  if (name == "adamw") return with_groups<AdamW>(model, AdamWOptions(0.01));
  if (name == "sgd") return with_groups<SGD>(model, SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
  if (name == "sgd_nesterov") return with_groups<SGD>(model, SGDOptions(0.1).momentum(0.9).nesterov(true));
  if (name == "sgd_plain") return with_groups<SGD>(model, SGDOptions(0.1));
  if (name == "rmsprop") return with_groups<RMSprop>(model, RMSpropOptions(0.01).momentum(0.5).centered(true));
  if (name == "rmsprop_plain") return with_groups<RMSprop>(model, RMSpropOptions(0.01));
  if (name == "adagrad") {
    return with_groups<Adagrad>(model, AdagradOptions(0.1).lr_decay(0.01).initial_accumulator_value(0.1));
  }
  throw std::runtime_error("no optimizer " + name);
}

torch::nn::Sequential optim_model(const Value& weights) {
  torch::nn::Sequential model(torch::nn::Linear(4, 3), torch::nn::Tanh(), torch::nn::Linear(3, 2));
  load_module_state_dict(*model.ptr(), weights, true);
  return model;
}

void train_step(torch::nn::Sequential& model, torch::optim::Optimizer& opt, const at::Tensor& x, const at::Tensor& y) {
  opt.zero_grad();
  torch::mse_loss(model->forward(x), y).backward();
  opt.step();
}

void expect_params_close(torch::nn::Sequential& model, const Value& python, const std::string& what) {
  for (const auto& item : model->named_parameters()) {
    EXPECT_TRUE(torch::allclose(item.value(), tensor_of(python, item.key()), 1e-5, 1e-7)) << what << " " << item.key();
  }
}

// Every tensor of two state dicts of the same layout, compared with allclose.
void expect_state_close(const Value& actual, const Value& expected, const std::string& what) {
  const Dict& a = actual.dict().get("state")->dict();
  const Dict& e = expected.dict().get("state")->dict();
  ASSERT_EQ(a.size(), e.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    const Dict& ap = a.items()[i].second->dict();
    const Dict& ep = e.items()[i].second->dict();
    ASSERT_EQ(ap.size(), ep.size()) << what;
    for (size_t j = 0; j < ap.size(); ++j) {
      const at::Tensor& at_ = *ap.items()[j].second->tensor_ref().tensor;
      const at::Tensor& et = *ep.items()[j].second->tensor_ref().tensor;
      EXPECT_EQ(at_.scalar_type(), et.scalar_type());
      // libtorch's kernels round differently from Python's (lerp vs mul+add, ...); centered
      // RMSprop divides by a difference of squares, so the tolerance scales with the values.
      const double atol = 1e-6 * std::max(1.0, et.abs().max().item<double>());
      EXPECT_TRUE(torch::allclose(at_, et, 1e-5, atol))
          << what << " state " << i << " " << ap.items()[j].first->as_string() << " max abs diff "
          << (at_ - et).abs().max().item<double>() << " of max " << et.abs().max().item<double>();
    }
  }
}

class OptimizerState : public ::testing::TestWithParam<std::string> {
 protected:
  ValuePtr init = load("optim_init.pt");
  const at::Tensor& x() { return tensor_of(*init, "x"); }
  const at::Tensor& y() { return tensor_of(*init, "y"); }
};

// The same model, data and optimizer trained in libtorch: the pickle (everything but the
// tensor bytes) is Python's exactly; the tensors agree to float rounding.
TEST_P(OptimizerState, AfterTrainingMatchesPython) {
  const std::string name = GetParam();
  auto model = optim_model(*init->dict().get("model"));
  auto opt = make_optimizer(name, model);
  for (int i = 0; i < kSteps; ++i) train_step(model, *opt, x(), y());
  expect_params_close(model, *load("optim_" + name + "_params.pt"), name);

  ValuePtr sd = optimizer_state_dict(*opt);
  const std::string expected = read_file(kData + "optim_" + name + ".pt");
  const std::string actual = saved(sd);
  const std::string actual_pkl = record(actual, "data.pkl"), expected_pkl = record(expected, "data.pkl");
  EXPECT_TRUE(actual_pkl == expected_pkl) << name << ": " << first_difference(actual_pkl, expected_pkl);
  expect_state_close(*sd, *load("optim_" + name + ".pt"), name);
  std::cout << "[ info     ] " << name << ": whole file "
            << (actual == expected ? "byte-identical" : "differs in tensor bytes only") << "\n";
}

// The same optimizer fed Python's gradients: only the update arithmetic can differ.
TEST_P(OptimizerState, WithPythonGradientsMatchesPython) {
  const std::string name = GetParam();
  auto model = optim_model(*init->dict().get("model"));
  auto opt = make_optimizer(name, model);
  ValuePtr grads = load("optim_" + name + "_grads.pt");
  ASSERT_EQ(grads->items().size(), static_cast<size_t>(kSteps));
  for (const auto& step_grads : grads->items()) {
    for (auto& item : model->named_parameters()) item.value().mutable_grad() = tensor_of(*step_grads, item.key()).clone();
    opt->step();
  }
  expect_params_close(model, *load("optim_" + name + "_params.pt"), name);
  ValuePtr sd = optimizer_state_dict(*opt);
  const std::string expected = read_file(kData + "optim_" + name + ".pt");
  const std::string actual = saved(sd);
  EXPECT_TRUE(record(actual, "data.pkl") == record(expected, "data.pkl")) << name;
  expect_state_close(*sd, *load("optim_" + name + ".pt"), name);
  std::cout << "[ info     ] " << name << " with Python's gradients: whole file "
            << (actual == expected ? "byte-identical" : "differs in tensor bytes only") << "\n";
}

// Python's state dict loaded into a fresh libtorch optimizer is written back byte for
// byte, and training goes on from it as it does in Python.
TEST_P(OptimizerState, LoadsPythonStateAndContinues) {
  const std::string name = GetParam();
  auto model = optim_model(*load("optim_" + name + "_params.pt"));
  auto opt = make_optimizer(name, model);
  ValuePtr python = load("optim_" + name + ".pt");
  load_optimizer_state_dict(*opt, *python);

  const std::string expected = read_file(kData + "optim_" + name + ".pt");
  const std::string actual = saved(optimizer_state_dict(*opt));
  EXPECT_TRUE(actual == expected) << name << ": " << first_difference(actual, expected);

  train_step(model, *opt, x(), y());
  expect_params_close(model, *load("optim_" + name + "_next.pt"), name);
}

INSTANTIATE_TEST_SUITE_P(State, OptimizerState,
                         ::testing::Values("adam", "adam_amsgrad", "adamw", "sgd", "sgd_nesterov", "sgd_plain", "rmsprop",
                                           "rmsprop_plain", "adagrad"));

TEST(OptimizerStateDict, PythonLayout) {
  ValuePtr init = load("optim_init.pt");
  auto model = optim_model(*init->dict().get("model"));
  auto opt = make_optimizer("adam", model);
  train_step(model, *opt, tensor_of(*init, "x"), tensor_of(*init, "y"));
  ValuePtr sd = optimizer_state_dict(*opt);
  const auto& groups = sd->dict().get("param_groups")->items();
  ASSERT_EQ(groups.size(), 2u);
  std::vector<std::string> keys;
  for (const auto& [k, v] : groups[0]->dict().items()) keys.push_back(k->as_string());
  const std::vector<std::string> expected = {"lr",      "betas",          "eps",   "weight_decay",
                                             "amsgrad", "maximize",       "foreach", "capturable",
                                             "differentiable", "fused", "decoupled_weight_decay", "params"};
  EXPECT_EQ(keys, expected);
  EXPECT_TRUE(groups[0]->dict().get("weight_decay")->is(Kind::Int));
  EXPECT_EQ(groups[1]->dict().get("params")->items()[0]->as_int(), 2);
  // The default betas tuple is one object; the keys are shared between the groups.
  EXPECT_EQ(groups[0]->dict().get("betas").get(), groups[1]->dict().get("betas").get());
  EXPECT_EQ(groups[0]->dict().items()[0].first.get(), groups[1]->dict().items()[0].first.get());
  const at::Tensor& step = tensor_of(*sd->dict().get("state")->dict().items()[0].second, "step");
  EXPECT_EQ(step.scalar_type(), at::kFloat);
  EXPECT_EQ(step.dim(), 0);
  EXPECT_EQ(step.item<float>(), 1.0f);
}

TEST(OptimizerLoad, PythonErrors) {
  ValuePtr init = load("optim_init.pt");
  auto model = optim_model(*init->dict().get("model"));
  auto opt = make_optimizer("adam", model);
  ValuePtr python = load("optim_adam.pt");

  auto expect_error = [&](const ValuePtr& sd, const std::string& message) {
    try {
      load_optimizer_state_dict(*opt, *sd);
      ADD_FAILURE() << "no error, expected " << message;
    } catch (const StateError& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  // One group fewer.
  auto one_group = Value::plain_dict();
  one_group->dict().set(Value::string("state"), python->dict().get("state"));
  one_group->dict().set(Value::string("param_groups"),
                        Value::list({python->dict().get("param_groups")->items()[0]}));
  expect_error(one_group, "loaded state dict has a different number of parameter groups");
  // A group of another size.
  auto resized = load("optim_adam.pt");
  resized->dict().get("param_groups")->items()[1]->dict().get("params")->items().pop_back();
  expect_error(resized, "loaded state dict contains a parameter group that doesn't match the size of optimizer's group");
  // Keyed by parameter name (FSDP full state dicts).
  auto by_name = load("optim_adam.pt");
  by_name->dict().get("param_groups")->items()[0]->dict().get("params")->items()[0] = Value::string("0.weight");
  expect_error(by_name, "keyed by parameter name");
  // A state without the tensors Adam needs.
  auto broken = load("optim_adam.pt");
  broken->dict().get("state")->dict().items()[0].second->dict().erase(*Value::string("exp_avg"));
  expect_error(broken, "has no 'exp_avg'");
  // Nothing changed on failure: Python's full state still loads and writes back identically.
  load_optimizer_state_dict(*opt, *python);
  EXPECT_TRUE(saved(optimizer_state_dict(*opt)) == read_file(kData + "optim_adam.pt"));

  torch::optim::LBFGS lbfgs(model->parameters());
  EXPECT_THROW(optimizer_state_dict(lbfgs), StateError);
  EXPECT_THROW(load_optimizer_state_dict(lbfgs, *python), StateError);
}

TEST(OptimizerLoad, CastsStateToTheParameterDtype) {
  ValuePtr init = load("optim_init.pt");
  auto model = optim_model(*init->dict().get("model"));
  auto opt = make_optimizer("adam", model);
  ValuePtr python = load("optim_adam.pt");
  for (const auto& [k, entry] : python->dict().get("state")->dict().items()) {
    auto& t = entry->dict().get("exp_avg")->tensor_ref().tensor;
    *t = t->to(torch::kFloat64);
  }
  load_optimizer_state_dict(*opt, *python);
  ValuePtr back = optimizer_state_dict(*opt);
  const at::Tensor& exp_avg = tensor_of(*back->dict().get("state")->dict().items()[0].second, "exp_avg");
  EXPECT_EQ(exp_avg.scalar_type(), torch::kFloat);
  // A copy: the loaded dict's tensor is not the optimizer's.
  const at::Tensor& source = tensor_of(*python->dict().get("state")->dict().items()[0].second, "exp_avg");
  EXPECT_FALSE(exp_avg.is_alias_of(source));
}

// Module and optimizer dicts in one checkpoint share the strings CPython interns
// ('version', '_metadata', 'weight', 'step', ...) exactly as Python's pickle does.
TEST(StateCombined, InternedStringsAcrossDicts) {
  ValuePtr python = load("combined.pt");
  torch::nn::Linear a(2, 2), b(2, 2);
  load_module_state_dict(*a.ptr(), *python->dict().get("a"), true);
  load_module_state_dict(*b.ptr(), *python->dict().get("b"), true);
  torch::optim::Adam opt(a->parameters());
  load_optimizer_state_dict(opt, *python->dict().get("opt"));

  auto root = Value::plain_dict();
  root->dict().set(interned_string("a"), module_state_dict(*a.ptr()));
  root->dict().set(interned_string("b"), module_state_dict(*b.ptr()));
  root->dict().set(interned_string("opt"), optimizer_state_dict(opt));
  root->dict().set(interned_string("step"), Value::integer(1));
  const std::string expected = read_file(kData + "combined.pt");
  const std::string actual = saved(root);
  EXPECT_TRUE(actual == expected) << first_difference(actual, expected);
}

}  // namespace
}  // namespace fabricckpt::state
