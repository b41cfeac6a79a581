// Queuing packets on a worker's per-port tx buffers. Context: fast path, owner worker.
#pragma once

#include <rte_mbuf.h>

#include "dataplane/mbuf_frame.h"
#include "dataplane/worker.h"

namespace ferry {

inline void count_drop(WorkerState& w, uint16_t port, DropReason r) {
    counter_add(w.port_counters[port].drops[static_cast<size_t>(r)], 1);
}

/// Frees a packet (every segment of it) and counts why. Takes ownership of m.
inline void drop(WorkerState& w, uint16_t port, rte_mbuf* m, DropReason r) {
    count_drop(w, port, r);
    rte_pktmbuf_free(m);
}

/// Queues m unchanged on port `out`'s tx buffer (flushed at the end of the batch, or now if the
/// buffer is full), or drops it as kMtuExceeded (counted on `out`) when it is larger than the
/// port's MTU. Takes ownership of m.
inline void tx_enqueue(WorkerState& w, const PortTable& t, uint16_t out, rte_mbuf* m) {
    if (unlikely(!frame_fits_mtu(m, t.ports[out].mtu))) {
        drop(w, out, m, DropReason::kMtuExceeded);
        return;
    }
    TxBuffer& b = w.tx[out];
    if (b.count == 0) w.tx_dirty[w.tx_dirty_count++] = out;
    b.bytes += rte_pktmbuf_pkt_len(m);  // read while the mbuf is at hand, not again at flush
    b.pkts[b.count++] = m;
    if (b.count == kTxBurst) worker_flush_tx(w, t);
}

/// tx_enqueue of n packets, in order, all to port `out` (a run of packets that share a rule).
/// Takes ownership of every packet. Context: fast path, owner worker.
inline void tx_enqueue_run(WorkerState& w, const PortTable& t, uint16_t out, rte_mbuf* const* pkts,
                           uint16_t n) {
    const uint16_t mtu = t.ports[out].mtu;
    TxBuffer& b = w.tx[out];
    for (uint16_t i = 0; i < n; ++i) {
        rte_mbuf* m = pkts[i];
        if (unlikely(!frame_fits_mtu(m, mtu))) {
            drop(w, out, m, DropReason::kMtuExceeded);
            continue;
        }
        if (b.count == 0) w.tx_dirty[w.tx_dirty_count++] = out;
        b.bytes += rte_pktmbuf_pkt_len(m);
        b.pkts[b.count++] = m;
        if (b.count == kTxBurst) worker_flush_tx(w, t);
    }
}

}  // namespace ferry
