// No checkpoint is ever lost: a save killed with SIGKILL at any moment, or whose disk fails
// (EIO, EDQUOT, ENOSPC injected by tools/io_fault_shim.cpp), leaves the previous checkpoint
// loadable and whole (or, killed after its rename, the new one), and the next save removes what
// it left. The saves run in a child process (tools/checkpoint_writer.cpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "fabricckpt/files.h"
#include "fabricckpt/sharded.h"
#include "fabricckpt/torch_save.h"

extern char** environ;

namespace fabricckpt {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kMiB = 64;

// Starts the writer; `fault` (FABRICCKPT_FAULT's syntax, see io_fault_shim.cpp) makes its writes
// fail, and its stderr then goes to `errors`.
pid_t start_writer(const std::string& kind, const std::string& path, int64_t seed, const std::string& fault = "",
                   const std::string& errors = "") {
  std::vector<std::string> args{FABRICCKPT_CHECKPOINT_WRITER, kind, path, std::to_string(kMiB), std::to_string(seed)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  if (!fault.empty()) {
    env_strings.push_back(std::string("LD_PRELOAD=") + FABRICCKPT_IO_FAULT_SHIM);
    env_strings.push_back("FABRICCKPT_FAULT=" + fault);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (!errors.empty()) {
    ::posix_spawn_file_actions_addopen(&actions, 2, errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  pid_t pid = 0;
  EXPECT_EQ(::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()), 0);
  ::posix_spawn_file_actions_destroy(&actions);
  return pid;
}

// The seed of the whole checkpoint at `path`; a failure if it is not one save's complete state.
int64_t seed_of(const std::string& kind, const std::string& path) {
  ValuePtr tensors;
  int64_t seed = -1;
  if (kind == "file") {
    tensors = load_torch_file(path).root;
    seed = tensors->dict().get("seed")->as_int();
  } else {
    tensors = sharded::Reader(path).read_all();
    seed = load_torch_file(path + "/meta.pt").root->dict().get("seed")->as_int();
  }
  for (int i = 0; i < 8; ++i) {
    const at::Tensor& t = *tensors->dict().get("w" + std::to_string(i))->tensor_ref().tensor;
    EXPECT_EQ(t.numel(), kMiB * (1 << 20) / 8 / 4);
    EXPECT_TRUE(t.eq(static_cast<float>(seed * 100 + i)).all().item<bool>()) << path << " w" << i << " is not seed " << seed;
  }
  return seed;
}

std::vector<std::string> leftovers(const fs::path& target) {
  std::vector<std::string> out;
  const std::string prefix = "." + target.filename().string() + ".";
  for (const auto& e : fs::directory_iterator(target.parent_path())) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().filename().string());
  }
  return out;
}

void kill_at_many_points(const std::string& kind) {
  const fs::path dir = fs::temp_directory_path() / ("fabricckpt-kill-" + kind + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string target = (dir / (kind == "file" ? "ckpt.pt" : "ckpt")).string();

  // A complete save first, timed: the kill points spread over that time.
  auto begin = Clock::now();
  int status = 0;
  ::waitpid(start_writer(kind, target, 1), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the first save failed";
  const auto full = Clock::now() - begin;
  ASSERT_EQ(seed_of(kind, target), 1);

  constexpr int kPoints = 16;
  int64_t last_complete = 1;
  int old_kept = 0, new_in_place = 0, finished = 0, left_behind = 0;
  for (int k = 0; k < kPoints; ++k) {
    const int64_t seed = k + 2;
    const pid_t pid = start_writer(kind, target, seed);
    std::this_thread::sleep_for(full * (k + 0.5) / kPoints * 1.1);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status)) ++finished;
    const int64_t found = seed_of(kind, target);  // loadable and whole, whatever the moment
    if (found == seed) {
      ++new_in_place;
      last_complete = seed;
    } else {
      EXPECT_EQ(found, last_complete) << "kill point " << k << ": neither the previous checkpoint nor the new one";
      ++old_kept;
    }
    left_behind += static_cast<int>(leftovers(target).size());
  }
  std::printf("[ kill -9 ] %s saves of %d MiB (%.0f ms each): %d kill points, previous checkpoint kept %d, "
              "new one complete %d (%d finished before the kill), leftovers seen %d\n",
              kind.c_str(), kMiB, std::chrono::duration<double, std::milli>(full).count(), kPoints, old_kept,
              new_in_place, finished, left_behind);
  EXPECT_GT(old_kept, 0) << "no kill landed inside a save: the test did not test anything";

  // What the killed writers left is removed by the next save once they are seen to be dead.
  std::this_thread::sleep_for(std::chrono::milliseconds(5500));
  ::waitpid(start_writer(kind, target, 99), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(seed_of(kind, target), 99);
  EXPECT_EQ(leftovers(target), std::vector<std::string>{}) << "stale temporaries survived the next save";
  fs::remove_all(dir);
}

TEST(KillDuringSave, SingleFileSavesNeverLoseTheCheckpoint) { kill_at_many_points("file"); }

TEST(KillDuringSave, ShardedSavesNeverLoseTheCheckpoint) { kill_at_many_points("sharded"); }

std::string contents(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Disk faults: the save fails with an error naming the file and the errno's reason; the previous
// checkpoint is whole and nothing is left beside it.
TEST(DiskFaults, AFailingDiskLeavesThePreviousCheckpoint) {
  const fs::path dir = fs::temp_directory_path() / ("fabricckpt-faults-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  struct Case {
    std::string fault, reason;
  };
  const std::vector<Case> cases{{"pwrite:EIO:0", "Input/output error"},
                                {"pwrite:EIO:20000000", "Input/output error"},
                                {"pwrite:EDQUOT:5000000", "Disk quota exceeded"},
                                {"pwrite:ENOSPC:40000000", "No space left on device"},
                                {"fsync:EIO", "Input/output error"},
                                {"fallocate:ENOSPC", "No space left on device"}};
  int injected = 0;
  for (const std::string kind : {"file", "sharded"}) {
    const std::string target = (dir / (kind == "file" ? "ckpt.pt" : "ckpt")).string();
    int status = 0;
    ::waitpid(start_writer(kind, target, 1), &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (const Case& c : cases) {
      const std::string errors = (dir / "stderr.txt").string();
      ::waitpid(start_writer(kind, target, 2, c.fault, errors), &status, 0);
      const std::string message = contents(errors);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << kind << " " << c.fault << ": " << message;
      EXPECT_NE(message.find(c.reason), std::string::npos) << kind << " " << c.fault << ": " << message;
      EXPECT_NE(message.find(target), std::string::npos) << kind << " " << c.fault << ": " << message;
      EXPECT_EQ(seed_of(kind, target), 1) << kind << " " << c.fault;
      EXPECT_EQ(leftovers(target), std::vector<std::string>{}) << kind << " " << c.fault;
      ++injected;
    }
  }
  std::printf("[ faults ] %d disk faults injected into single-file and sharded saves: every one reported, "
              "previous checkpoint kept\n", injected);
  fs::remove_all(dir);
}

// Two processes saving one sharded directory at once: every moment the directory is a whole checkpoint.
TEST(ConcurrentSaves, TwoWritersOfOneDirectoryLeaveAWholeCheckpoint) {
  const fs::path dir = fs::temp_directory_path() / ("fabricckpt-race-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string target = (dir / "ckpt").string();
  for (int round = 0; round < 5; ++round) {
    const pid_t a = start_writer("sharded", target, 10 + round * 2);
    const pid_t b = start_writer("sharded", target, 11 + round * 2);
    int sa = 0, sb = 0;
    ::waitpid(a, &sa, 0);
    ::waitpid(b, &sb, 0);
    ASSERT_TRUE(WIFEXITED(sa) && WEXITSTATUS(sa) == 0 && WIFEXITED(sb) && WEXITSTATUS(sb) == 0) << "round " << round;
    const int64_t seed = seed_of("sharded", target);
    EXPECT_TRUE(seed == 10 + round * 2 || seed == 11 + round * 2) << "round " << round;
    EXPECT_EQ(leftovers(target), std::vector<std::string>{}) << "round " << round;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fabricckpt
