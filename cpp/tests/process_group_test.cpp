// Background process groups (ProcessGroup::background_group): two ranks as threads of this process,
// over a real TCPStore and Gloo on loopback.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "fabricckpt/dist.h"
#include "fabricckpt/error.h"

namespace fabricckpt {
namespace {

// A port nobody listens on now (the kernel's pick for a socket bound to port 0).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error("bind() failed");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// Runs `body(rank)` for ranks 0 and 1 on two threads; rethrows the first failure.
void on_two_ranks(const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        body(rank);
      } catch (...) {
        errors[static_cast<size_t>(rank)] = std::current_exception();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

ProcessGroupOptions options(int port, int rank, std::chrono::milliseconds timeout) {
  ProcessGroupOptions o;
  o.port = port;
  o.rank = rank;
  o.world_size = 2;
  o.timeout = timeout;
  return o;
}

// The caller's collectives and a background thread's run at once on each rank, in a different order
// on each: on one group their messages would cross (a payload of one arriving in the other).
TEST(BackgroundGroup, CollectivesBesideTheMainGroupNeverInterleave) {
  const int port = free_port();
  constexpr int kRounds = 40;
  on_two_ranks([&](int rank) {
    ProcessGroup main(options(port, rank, std::chrono::seconds(60)));
    std::unique_ptr<ProcessGroup> background = main.background_group("async-save");
    EXPECT_EQ(background->rank(), rank);
    EXPECT_EQ(background->world_size(), 2);
    std::exception_ptr background_error;
    std::thread saver([&] {
      try {
        for (int i = 0; i < kRounds; ++i) {
          const int root = (i + 1) % 2;
          std::string got = background->broadcast(concat("background ", i, " from ", root), root);
          EXPECT_EQ(got, concat("background ", i, " from ", root));
          std::vector<std::string> all = background->gather(concat("b", i, "r", rank), 0);
          if (rank == 0) {
            EXPECT_EQ(all, (std::vector<std::string>{concat("b", i, "r0"), concat("b", i, "r1")}));
          }
        }
      } catch (...) {
        background_error = std::current_exception();
      }
    });
    std::exception_ptr main_error;
    try {
      for (int i = 0; i < kRounds; ++i) {
        const int root = i % 2;
        // Rank 1 lags a little, so the two ranks' threads interleave differently.
        if (rank == 1 && i % 7 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
        EXPECT_EQ(main.broadcast(concat("main ", i, " from ", root), root), concat("main ", i, " from ", root));
        EXPECT_EQ(main.all_reduce_sum(rank + i), 1 + 2 * i);
      }
    } catch (...) {
      main_error = std::current_exception();
    }
    saver.join();
    if (main_error) std::rethrow_exception(main_error);
    if (background_error) std::rethrow_exception(background_error);
    background->barrier();
    main.barrier();
  });
}

// A rank whose background group is gone makes the other's background collective fail, with a clear
// error, instead of hanging: what makes every rank's async save fail when one rank's does.
TEST(BackgroundGroup, APeerThatLeavesFailsTheOthersBackgroundCollective) {
  const int port = free_port();
  on_two_ranks([&](int rank) {
    ProcessGroup main(options(port, rank, std::chrono::seconds(20)));
    std::unique_ptr<ProcessGroup> background = main.background_group("async-save");
    background->barrier();
    if (rank == 1) {
      background->close();
      EXPECT_THROW(background->barrier(), Error);  // closed: refused locally
      return;
    }
    try {
      background->broadcast("never received", 0);
      background->barrier();
      ADD_FAILURE() << "a collective with a departed peer succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank 0 of 2"), std::string::npos) << e.what();
    }
  });
}

TEST(BackgroundGroup, NeedsAPrefixAndAnOpenGroup) {
  const int port = free_port();
  on_two_ranks([&](int rank) {
    ProcessGroup main(options(port, rank, std::chrono::seconds(20)));
    EXPECT_THROW(main.background_group(""), Error);
    main.barrier();
    main.close();
    EXPECT_THROW(main.background_group("late"), Error);
  });
}

}  // namespace
}  // namespace fabricckpt
