// The handshake by which the control thread parks one worker lcore and lets it go again.
//
// Each pause has its own epoch: the control thread stores a new non-zero epoch in request_, the
// worker acknowledges exactly that epoch in ack_ once it has flushed and parked, and it leaves
// only when request_ is 0 again. The control thread treats a worker as parked only when ack_
// equals the epoch it asked for, so an acknowledgement left from an earlier pause (the worker
// may still be on its way out of that one) is never taken for the new one. Both sides only
// store their own word and load the other's, with release/acquire pairs: no store-then-load
// race (Dekker) decides anything, unlike a 0/1 "paused" flag, where the control thread could
// read the previous pause's 1 while the worker had already read "no pause" and run a burst.
//
// A worker that sleeps (idle, or parked for a long pause) waits on the request word with a
// futex, so that request() and release() wake it at once instead of at the end of its sleep:
// a pause of an idle worker takes microseconds, not the rest of its back-off slice.
// Context: request/parked/release on the control thread; requested/hold/sleeps on the worker
// lcore.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace ferry {

class PauseGate {
public:
    /// Asks the worker to park. @return the epoch to wait for with parked(). Context: control.
    uint32_t request() {
        if (++next_epoch_ == 0) next_epoch_ = 1;  // 0 means "no pause"
        // Release: what the control thread wrote before asking is visible to the worker that
        // acquires the epoch.
        request_.store(next_epoch_, std::memory_order_release);
        wake();  // a worker asleep in sleep_unless_requested()
        return next_epoch_;
    }

    /// @return true once the worker has parked for this epoch. Context: control.
    bool parked(uint32_t epoch) const {
        // Acquire: pairs with the worker's release of the acknowledgement, so everything the
        // worker wrote before parking (counters, its tables, tx buffers sent) is visible.
        return ack_.load(std::memory_order_acquire) == epoch;
    }

    /// Lets the worker go. Context: control, after request().
    void release() {
        // Release: whatever the control thread changed while the worker was parked is ordered
        // before the worker's next iteration (its acquire of 0 in hold()).
        request_.store(0, std::memory_order_release);
        wake();  // a worker asleep in sleep_while_held()
    }

    /// @return true when a pause is requested. Context: worker, once per iteration.
    bool requested() const { return request_.load(std::memory_order_acquire) != 0; }

    /// Acknowledges the requested pause and waits until it is released or stop becomes true,
    /// calling wait(spins) between polls. A new request that arrives before the worker saw
    /// the release is acknowledged in turn without leaving. The caller has flushed everything
    /// it buffered; it must not touch its state between hold()'s start and its return.
    /// Context: worker.
    template <typename Wait>
    void hold(const std::atomic<bool>& stop, Wait&& wait) {
        uint32_t acked = 0;
        uint64_t spins = 0;
        for (;;) {
            // Acquire: pairs with release(), so the control thread's changes are visible when
            // this returns; and with request(), as at the top of the worker's loop.
            const uint32_t epoch = request_.load(std::memory_order_acquire);
            if (epoch == 0 || stop.load(std::memory_order_acquire)) return;
            if (epoch != acked) {
                // Release: pairs with parked()'s acquire.
                ack_.store(epoch, std::memory_order_release);
                acked = epoch;
            }
            wait(++spins);
        }
    }

    /// Sleeps up to us microseconds, or until a pause is requested (request() wakes it).
    /// Context: worker, idle: not the packet path (a system call).
    void sleep_unless_requested(uint32_t us) const { wait_while(0, us); }

    /// Sleeps up to us microseconds while the pause it holds goes on: until release() or a new
    /// request changes the request word. Context: worker, inside hold()'s wait.
    void sleep_while_held(uint32_t us) const {
        const uint32_t epoch = request_.load(std::memory_order_acquire);
        if (epoch != 0) wait_while(epoch, us);
    }

private:
    static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                      std::atomic<uint32_t>::is_always_lock_free,
                  "a futex waits on the request word itself");

    uint32_t* word() const { return reinterpret_cast<uint32_t*>(&request_); }

    /// Blocks while the request word holds `value`, at most us microseconds. It returns at
    /// once when the word already differs, and early on a wake or a signal: callers re-check.
    void wait_while(uint32_t value, uint32_t us) const {
        const timespec t{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000};
        syscall(SYS_futex, word(), FUTEX_WAIT_PRIVATE, value, &t, nullptr, 0);
    }

    void wake() { syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0); }

    // Mutable: the worker's sleeps take the word's address for the kernel; only request() and
    // release() write it.
    alignas(64) mutable std::atomic<uint32_t> request_{0};  // written by the control thread only
    uint32_t next_epoch_ = 0;                               // the control thread's counter
    alignas(64) std::atomic<uint32_t> ack_{0};              // written by the worker only
};

}  // namespace ferry
