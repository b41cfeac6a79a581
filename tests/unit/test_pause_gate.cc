// PauseGate: the control thread's pause of a worker. Step by step, an acknowledgement left from
// an earlier pause is not taken for a new one (the 0/1 flag it replaces took it); under stress,
// a worker thread never runs a burst while the control thread believes it parked.
#include "dataplane/pause_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

namespace ferry {
namespace {

/// A busy-wait step the compiler cannot remove.
inline void spin_hint() {
    static std::atomic<uint32_t> sink{0};
    sink.fetch_add(1, std::memory_order_relaxed);
}

TEST(PauseGate, NoPauseUntilRequested) {
    PauseGate g;
    EXPECT_FALSE(g.requested());
    const uint32_t e = g.request();
    EXPECT_TRUE(g.requested());
    EXPECT_FALSE(g.parked(e));
    g.release();
    EXPECT_FALSE(g.requested());
}

// The interleaving that fooled the 0/1 flags: the worker leaves pause 1 (it read "released"),
// the control thread asks for pause 2 before the worker has cleared its flag, and reads the
// flag pause 1 left. Here each side is driven by hand through the worker's wait callback.
TEST(PauseGate, EarlierAcknowledgementIsNotANewPause) {
    // The previous handshake, modelled: request and paused as 0/1 flags.
    {
        std::atomic<uint32_t> request{1}, paused{0};
        paused.store(1);                               // worker parks for pause 1
        request.store(0);                              // control releases it
        const bool worker_runs = request.load() == 0;  // worker leaves, not yet cleared paused
        request.store(1);                              // control asks for pause 2
        const bool control_believes_parked = paused.load() == 1;
        EXPECT_TRUE(worker_runs && control_believes_parked) << "the old flags were unambiguous";
    }
    // The gate: the same steps, and then the worker acknowledging pause 2 without leaving.
    PauseGate g;
    std::atomic<bool> stop{false};
    const uint32_t first = g.request();
    uint32_t second = 0;
    bool stale_taken = true, second_parked = false;
    g.hold(stop, [&](uint64_t spins) {
        if (spins == 1) {
            ASSERT_TRUE(g.parked(first));
            g.release();
            second = g.request();
            stale_taken = g.parked(second);  // the worker has not seen pause 2 yet
        } else if (spins == 2) {
            second_parked = g.parked(second);
            g.release();
        } else {
            FAIL() << "hold() did not return after the release";
        }
    });
    EXPECT_NE(first, second);
    EXPECT_FALSE(stale_taken);
    EXPECT_TRUE(second_parked);
}

// A sleeping worker is woken by the control thread instead of sleeping its time out: each
// sleep below asks for 20 s, and the test fails (it would also take 20 s) if the wake is lost.
TEST(PauseGate, RequestWakesAnIdleSleeper) {
    PauseGate g;
    std::atomic<bool> asleep{false};
    std::chrono::steady_clock::duration slept{};
    std::thread worker([&] {
        asleep.store(true);
        const auto t0 = std::chrono::steady_clock::now();
        while (!g.requested()) g.sleep_unless_requested(20 * 1000 * 1000);
        slept = std::chrono::steady_clock::now() - t0;
    });
    while (!asleep.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // into the futex, most likely
    g.request();
    worker.join();
    EXPECT_LT(slept, std::chrono::seconds(10));
    g.release();
}

TEST(PauseGate, ReleaseWakesAParkedSleeper) {
    PauseGate g;
    std::atomic<bool> stop{false};
    const uint32_t e = g.request();
    std::chrono::steady_clock::duration held{};
    std::thread worker([&] {
        const auto t0 = std::chrono::steady_clock::now();
        g.hold(stop, [&](uint64_t) { g.sleep_while_held(20 * 1000 * 1000); });
        held = std::chrono::steady_clock::now() - t0;
    });
    while (!g.parked(e)) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    g.release();
    worker.join();
    EXPECT_LT(held, std::chrono::seconds(10));
}

// Sleeps return at once when the word already says otherwise: a request that came before the
// sleep is not slept through.
TEST(PauseGate, NoSleepWhenAlreadyRequested) {
    PauseGate g;
    g.request();
    const auto t0 = std::chrono::steady_clock::now();
    g.sleep_unless_requested(20 * 1000 * 1000);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
    g.release();
    const auto t1 = std::chrono::steady_clock::now();
    g.sleep_while_held(20 * 1000 * 1000);  // nothing held
    EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(10));
}

TEST(PauseGate, StopEndsTheHold) {
    PauseGate g;
    std::atomic<bool> stop{false};
    g.request();
    int waits = 0;
    g.hold(stop, [&](uint64_t) {
        if (++waits == 3) stop.store(true);
    });
    EXPECT_EQ(waits, 3);
}

// A worker thread runs "bursts" (reads of a table the control thread edits only while the worker
// is parked, writes of state it owns) and parks when asked; the control thread pauses, reads the
// worker's state and edits the table, and releases, as fast as it can. Any burst that sees an
// edit in progress or a table that changes under it, and any change of the worker's state while
// the control thread reads it, is work done while the control thread believed the worker
// parked. The window the 0/1 flags left is a few instructions wide: three runs of 2,000,000
// cycles against them found nothing on the development host, so the step-by-step test above is
// what shows it; this one shows the gate holds under load.
TEST(PauseGate, NoBurstWhileParkedUnderStress) {
    constexpr uint64_t kMaxCycles = 2'000'000;
    constexpr auto kBudget = std::chrono::seconds(8);
    PauseGate g;
    std::atomic<bool> stop{false};
    std::atomic<bool> editing{false};
    std::atomic<uint64_t> table{0};
    std::atomic<uint64_t> violations{0}, bursts{0};
    std::atomic<uint64_t> owned{0};  // the worker's own state: it writes, control reads parked
    uint64_t control_violations = 0;

    std::thread worker([&] {
        uint64_t n = 0, bad = 0;
        while (!stop.load(std::memory_order_acquire)) {
            if (g.requested()) {
                g.hold(stop, [](uint64_t spins) {
                    if (spins > 64) std::this_thread::yield();
                });
                owned.fetch_add(1, std::memory_order_relaxed);  // resuming touches its state
                continue;
            }
            const uint64_t before = table.load(std::memory_order_relaxed);
            if (editing.load(std::memory_order_relaxed)) ++bad;
            if (table.load(std::memory_order_relaxed) != before) ++bad;
            owned.fetch_add(1, std::memory_order_relaxed);
            ++n;
        }
        bursts.store(n);
        violations.store(bad);
    });

    const auto end = std::chrono::steady_clock::now() + kBudget;
    uint64_t cycles = 0;
    while (cycles < kMaxCycles && std::chrono::steady_clock::now() < end) {
        const uint32_t e = g.request();
        uint64_t spins = 0;
        while (!g.parked(e)) {
            if (++spins > 64) std::this_thread::yield();
        }
        const uint64_t seen = owned.load(std::memory_order_relaxed);
        editing.store(true, std::memory_order_relaxed);
        table.fetch_add(1, std::memory_order_relaxed);
        table.fetch_add(1, std::memory_order_relaxed);
        editing.store(false, std::memory_order_relaxed);
        if (owned.load(std::memory_order_relaxed) != seen) ++control_violations;
        g.release();
        ++cycles;
        // A varying gap before the next pause, so that some requests land while the worker is
        // on its way out of the previous one.
        for (uint64_t i = (cycles * 2654435761u) % 97; i > 0; --i) spin_hint();
    }
    stop.store(true, std::memory_order_release);
    worker.join();
    std::printf("pause/resume cycles: %llu, worker bursts: %llu\n",
                static_cast<unsigned long long>(cycles),
                static_cast<unsigned long long>(bursts.load()));
    EXPECT_GT(cycles, 1000u);
    EXPECT_EQ(violations.load(), 0u) << "bursts run while the control thread edited";
    EXPECT_EQ(control_violations, 0u) << "pauses in which the worker's state changed";
}

}  // namespace
}  // namespace ferry
