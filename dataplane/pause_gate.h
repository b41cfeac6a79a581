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
// Context: request/parked/release on the control thread; requested/hold on the worker lcore.
#pragma once

#include <atomic>
#include <cstdint>

namespace ferry {

class PauseGate {
public:
    /// Asks the worker to park. @return the epoch to wait for with parked(). Context: control.
    uint32_t request() {
        if (++next_epoch_ == 0) next_epoch_ = 1;  // 0 means "no pause"
        // Release: what the control thread wrote before asking is visible to the worker that
        // acquires the epoch.
        request_.store(next_epoch_, std::memory_order_release);
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

private:
    alignas(64) std::atomic<uint32_t> request_{0};  // written by the control thread only
    uint32_t next_epoch_ = 0;                       // the control thread's counter
    alignas(64) std::atomic<uint32_t> ack_{0};      // written by the worker only
};

}  // namespace ferry
