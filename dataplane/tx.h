// Queuing packets on a worker's per-port tx buffers. Context: fast path, owner worker.
#pragma once

#include <rte_mbuf.h>

#include "dataplane/worker.h"

namespace ferry {

inline void count_drop(WorkerState& w, uint16_t port, DropReason r) {
    counter_add(w.port_counters[port].drops[static_cast<size_t>(r)], 1);
}

/// Queues m unchanged on port `out`'s tx buffer (flushed at the end of the batch, or now if the
/// buffer is full). Takes ownership of m.
inline void tx_enqueue(WorkerState& w, const PortTable& t, uint16_t out, rte_mbuf* m) {
    TxBuffer& b = w.tx[out];
    if (b.count == 0) w.tx_dirty[w.tx_dirty_count++] = out;
    b.pkts[b.count++] = m;
    if (b.count == kTxBurst) worker_flush_tx(w, t);
}

/// Frees a packet and counts why. Takes ownership of m.
inline void drop(WorkerState& w, uint16_t port, rte_mbuf* m, DropReason r) {
    count_drop(w, port, r);
    rte_pktmbuf_free(m);
}

}  // namespace ferry
