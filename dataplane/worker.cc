#include "dataplane/worker.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_rcu_qsbr.h>

#include "dataplane/conntrack/ct_action.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "dataplane/conntrack/ct_defrag_stage.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_action.h"
#include "dataplane/pipeline.h"

namespace ferry {
namespace {

/// Parks the worker until the control thread releases its pause. Buffered packets are sent
/// first and the lcore goes RCU-offline, so neither a pause nor a grace period waits on the
/// other. Context: worker lcore.
void park(WorkerState& w) {
    const PortTable* t = w.table->load(std::memory_order_acquire);
    worker_flush_tx(w, *t);
    rte_rcu_qsbr_thread_offline(w.qsbr, w.index);
    w.pause.hold(w.stop, [&w](uint64_t spins) {
        if (spins < 4096)
            rte_pause();  // short pauses resume fastest by spinning
        else
            w.pause.sleep_while_held(1000);  // long ones must not burn a core the VMs need
    });
    rte_rcu_qsbr_thread_online(w.qsbr, w.index);
}

/// Sleeps about us microseconds while idle. A pause request wakes it at once (PauseGate); a
/// stop is seen within about kIdleSliceUs, so that a long back-off (max_us up to a second)
/// does not hold up a shutdown. Context: worker lcore, not the packet path.
void idle_sleep(const WorkerState& w, uint32_t us) {
    constexpr uint32_t kIdleSliceUs = 1000;
    while (us > 0 && !w.pause.requested() && !w.stop.load(std::memory_order_acquire)) {
        const uint32_t slice = us < kIdleSliceUs ? us : kIdleSliceUs;
        w.pause.sleep_unless_requested(slice);
        us -= slice;
    }
}

}  // namespace

void worker_flush_tx(WorkerState& w, const PortTable& t) {
    for (uint16_t d = 0; d < w.tx_dirty_count; ++d) {
        uint16_t port = w.tx_dirty[d];
        TxBuffer& b = w.tx[port];
        if (b.count == 0) continue;
        uint64_t bytes = b.bytes;
        uint16_t sent = 0;
        if (t.ports[port].active)
            sent = rte_eth_tx_burst(t.ports[port].dpdk_port, w.index, b.pkts, b.count);
        PortCounters& c = w.port_counters[port];
        if (sent < b.count) {
            for (uint16_t i = sent; i < b.count; ++i) {
                bytes -= rte_pktmbuf_pkt_len(b.pkts[i]);
                rte_pktmbuf_free(b.pkts[i]);
            }
            counter_add(c.drops[static_cast<size_t>(t.ports[port].active ? DropReason::kTxFull
                                                                         : DropReason::kPortDown)],
                        b.count - sent);
        }
        counter_add(c.tx_packets, sent);
        counter_add(c.tx_bytes, bytes);
        b.count = 0;
        b.bytes = 0;
    }
    w.tx_dirty_count = 0;
}

namespace {

/// The features a worker loop runs, from the WorkerState fields the control thread sets before
/// the lcore starts: connection tracking (its shard and clock; the reassembly table with it),
/// hand-offs between workers (conntrack with more than one worker), payload inspection.
struct LoopFeatures {
    bool ct;
    bool handoff;
    bool dpi;
};

LoopFeatures features_of(const WorkerState& w) {
    const bool ct = w.ct != nullptr && w.ct_clock != nullptr;
    return {ct, ct && w.n_workers > 1, w.dpi != nullptr};
}

/// The poll loop, specialised on the features it runs so that none is tested per iteration
/// (let alone per packet). Runs until a stop, or until a pause request: then it parks and
/// returns, so that the caller chooses the loop again from the features as they are after the
/// pause. Context: worker lcore. @return true when stopped
template <bool kCt, bool kHandoff, bool kDpi>
bool run_loop(WorkerState& w) {
    uint32_t idle_polls = 0;
    uint32_t sleep_us = w.backoff.min_us;
    rte_mbuf* pkts[kRxBurst];
    // One TSC read per iteration: the end of one is the start of the next (rdtsc costs tens of
    // nanoseconds on some hypervisors).
    uint64_t t0 = rte_rdtsc();
    if constexpr (kCt) w.next_ms_tsc = 0;  // the clock may have been set while stopped

    while (!w.stop.load(std::memory_order_acquire)) {
        if (w.pause.requested()) {
            park(w);
            return false;
        }
        // Acquire: pairs with the control thread's release store when it publishes a table, so
        // the table's contents are visible before its pointer.
        const PortTable* t = w.table->load(std::memory_order_acquire);
        // Acquire, as for the port table: a published classifier is complete when seen.
        const Classifier* cls =
            w.classifier != nullptr ? w.classifier->load(std::memory_order_acquire) : nullptr;
        w.now_tsc = t0;
        if constexpr (kCt) {
            // The millisecond clock moves once per millisecond: one division then, a comparison
            // on the other iterations (a 64-bit division costs tens of cycles).
            if (t0 >= w.next_ms_tsc) {
                const CtClock& c = *w.ct_clock;
                w.now_ms = c.now_ms(t0);
                w.next_ms_tsc = c.tsc0 + (w.now_ms + 1) * c.cycles_per_ms;
            }
        }
        // Packets other workers handed over first: they waited in a ring already.
        uint32_t handed = 0;
        if constexpr (kHandoff) handed = ct_handoff_drain(w, *t, cls);
        uint32_t got = 0;
        for (uint16_t r = 0; r < t->rx_count[w.index]; ++r) {
            const RxAssignment& a = t->rx[w.index][r];
            const PortSlot& p = t->ports[a.port];
            uint16_t n = rte_eth_rx_burst(p.dpdk_port, a.queue, pkts, kRxBurst);
            if (n == 0) continue;
            uint64_t bytes = 0;
            for (uint16_t i = 0; i < n; ++i) bytes += rte_pktmbuf_pkt_len(pkts[i]);
            counter_add(w.port_counters[a.port].rx_packets, n);
            counter_add(w.port_counters[a.port].rx_bytes, bytes);
            got += n;
            if (p.security.enabled) {
                n = port_security_filter(w, p.security, a.port, pkts, n);
                if (n == 0) continue;
            }
            pipeline_burst(w, *t, cls, a.port, pkts, n);
        }
        if constexpr (kCt) {
            // Datagrams whose last fragment came in this iteration leave in it; expiry looks at
            // the oldest datagram's deadline only, and with none held there is nothing to do.
            if (w.ct_defrag != nullptr && w.ct_defrag->datagrams() != 0) ct_defrag_run(w, *t, cls);
            // Redirect notices leave before the packets that caused them, so that a reply
            // cannot overtake the notice it depends on.
            if (w.ct->notice_count() != 0) ct_send_notices(w);
        }
        if constexpr (kDpi) {
            if (w.dpi->alert_count() != 0) dpi_send_alerts(w);
        }
        worker_flush_tx(w, *t);
        if constexpr (kCt) {
            // Expiry walks the table once a second or so, a slice per millisecond: timeouts are
            // seconds long, and a slice per iteration would cost the busy loop memory traffic.
            if (w.now_ms != w.ct_swept_ms) {
                w.ct_swept_ms = w.now_ms;
                w.ct->expire(w.now_ms, w.ct_expire_budget);
            }
        }
        rte_rcu_qsbr_quiescent(w.qsbr, w.index);
        counter_add(w.counters.iterations, 1);

        uint64_t t1 = rte_rdtsc();
        if (got != 0 || handed != 0) {
            counter_add(w.counters.packets, got);
            counter_add(w.counters.busy_cycles, t1 - t0);
            idle_polls = 0;
            sleep_us = w.backoff.min_us;
            t0 = t1;
            continue;
        }
        if (w.backoff.enabled && ++idle_polls >= w.backoff.idle_polls) {
            // Idle: give the core back for a bounded, growing while. Not the packet path.
            idle_sleep(w, sleep_us);
            counter_add(w.counters.sleeps, 1);
            sleep_us = sleep_us * 2 > w.backoff.max_us ? w.backoff.max_us : sleep_us * 2;
            t1 = rte_rdtsc();
        }
        counter_add(w.counters.idle_cycles, t1 - t0);
        t0 = t1;
    }
    return true;
}

using LoopFn = bool (*)(WorkerState&);

/// The loop for a set of features. Hand-offs exist only with conntrack. Context: worker lcore.
LoopFn choose_loop(const LoopFeatures& f) {
    if (!f.ct) return f.dpi ? run_loop<false, false, true> : run_loop<false, false, false>;
    if (!f.handoff) return f.dpi ? run_loop<true, false, true> : run_loop<true, false, false>;
    return f.dpi ? run_loop<true, true, true> : run_loop<true, true, false>;
}

}  // namespace

int worker_main(void* arg) {
    WorkerState& w = *static_cast<WorkerState*>(arg);
    rte_rcu_qsbr_thread_register(w.qsbr, w.index);
    rte_rcu_qsbr_thread_online(w.qsbr, w.index);
    w.running.store(true, std::memory_order_release);
    // Chosen at launch and after each pause, never per iteration: the features can only change
    // while the worker is stopped or parked.
    while (!choose_loop(features_of(w))(w)) {
    }
    const PortTable* t = w.table->load(std::memory_order_acquire);
    worker_flush_tx(w, *t);
    rte_rcu_qsbr_thread_offline(w.qsbr, w.index);
    rte_rcu_qsbr_thread_unregister(w.qsbr, w.index);
    w.running.store(false, std::memory_order_release);
    return 0;
}

}  // namespace ferry
