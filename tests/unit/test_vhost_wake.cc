// vhost_events_wake (control/vhost_wake.h): DPDK 22.11's vhost-user event thread takes up a new
// server socket only when its poll() returns. Against a thread of that name blocked in a 5 s
// poll(), expects the wake to end the poll at once (EINTR); with no such thread, that nothing is
// woken; and a read the signal arrives during to go on (SA_RESTART).
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "control/vhost_wake.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

TEST(VhostWake, NoEventThreadNothingWoken) { EXPECT_FALSE(vhost_events_wake()); }

TEST(VhostWake, EndsTheEventThreadsPollAtOnce) {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    std::atomic<bool> polling{false};
    int result = 0;
    int error = 0;
    std::thread events([&] {
        pthread_setname_np(pthread_self(), "vhost-events");
        pollfd p{pipefd[0], POLLIN, 0};
        polling = true;
        result = poll(&p, 1, 5000);
        error = errno;
    });
    while (!polling) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // inside poll() by now
    const auto t0 = Clock::now();
    EXPECT_TRUE(vhost_events_wake());
    events.join();
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));
    EXPECT_EQ(result, -1);
    EXPECT_EQ(error, EINTR);
    close(pipefd[0]);
    close(pipefd[1]);
}

TEST(VhostWake, AReadInProgressGoesOn) {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    std::atomic<bool> reading{false};
    ssize_t got = 0;
    char byte = 0;
    std::thread events([&] {
        pthread_setname_np(pthread_self(), "vhost-events");
        reading = true;
        got = read(pipefd[0], &byte, 1);  // a vhost-user message being read
    });
    while (!reading) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(vhost_events_wake());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(write(pipefd[1], "m", 1), 1);
    events.join();
    EXPECT_EQ(got, 1);
    EXPECT_EQ(byte, 'm');
    close(pipefd[0]);
    close(pipefd[1]);
}

}  // namespace
}  // namespace ferry
