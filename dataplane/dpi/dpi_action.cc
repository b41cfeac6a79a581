#include "dataplane/dpi/dpi_action.h"

#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/mbuf_frame.h"
#include "dataplane/tx.h"
#include "dataplane/worker.h"

namespace ferry {

DpiOutcome dpi_action(WorkerState& w, uint16_t in_port, rte_mbuf* pkt, FlowKey* key,
                      const CtPacketState& st) {
    if (w.dpi == nullptr || w.dpi_version == nullptr) return DpiOutcome::kPass;
    // Acquire: pairs with the control thread's release when it publishes a database.
    DpiVersion* v = w.dpi_version->load(std::memory_order_acquire);
    if (v == nullptr) return DpiOutcome::kPass;
    // Earlier actions may have moved the headers (VLAN edits): fresh offsets, without
    // touching the key's ct fields.
    FlowKey parsed;
    PacketLayout layout;
    if (parse_mbuf(pkt, in_port, &parsed, &layout)) return DpiOutcome::kPass;
    // Headers from the first segment; the payload is scanned segment by segment, in order.
    DpiScan scan;
    switch (w.dpi->scan_begin(*v, *w.ct, st, rte_pktmbuf_mtod(pkt, const uint8_t*),
                              rte_pktmbuf_pkt_len(pkt), layout, key, &scan)) {
        case DpiStep::kPass:
            return DpiOutcome::kPass;
        case DpiStep::kDrop:
            break;
        case DpiStep::kScan:
            for_each_piece(pkt, scan.offset, scan.length,
                           [&w, &scan](const uint8_t* bytes, uint32_t n, uint32_t) {
                               return w.dpi->scan_piece(scan, bytes, n);
                           });
            if (w.dpi->scan_end(scan, w.now_ms) == DpiOutcome::kPass) return DpiOutcome::kPass;
            break;
    }
    drop(w, in_port, pkt, DropReason::kDpiDrop);
    return DpiOutcome::kDrop;
}

void dpi_send_alerts(WorkerState& w) {
    const unsigned n = w.dpi->alert_count();
    const unsigned sent = w.dpi_alerts == nullptr
                              ? 0
                              : rte_ring_sp_enqueue_burst_elem(w.dpi_alerts, w.dpi->alerts(),
                                                               sizeof(DpiAlert), n, nullptr);
    if (sent < n) w.dpi->count_lost_alerts(n - sent);
    w.dpi->clear_alerts();
}

}  // namespace ferry
