// The dpi action on the fast path: scan the payload of the packet's tracked connection with the
// published database, and report alerts to the control thread. Context: fast path.
#pragma once

#include <cstdint>

#include "dataplane/dpi/dpi_engine.h"

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct FlowKey;
struct CtPacketState;

/// Runs the dpi action on pkt, tracked as st by an earlier ct action. On kDrop the packet was
/// dropped (`dpi_drop`) and the connection ended; on kPass processing goes on (key->ct_mark
/// may have changed). Context: fast path, worker lcore.
DpiOutcome dpi_action(WorkerState& w, uint16_t in_port, rte_mbuf* pkt, FlowKey* key,
                      const CtPacketState& st);

/// Sends the alerts this worker's inspection queued to the control thread (what does not fit
/// in the ring is counted lost). Context: fast path, worker lcore.
void dpi_send_alerts(WorkerState& w);

}  // namespace ferry
