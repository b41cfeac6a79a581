// The L2 learning bridge, ferry's default (`normal`) behaviour: VLAN access and trunk ports,
// MAC learning through events to the control thread, unicast to learned ports, flooding of
// broadcast, multicast and unknown destinations, never back out of the ingress port.
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct FlowKey;

/// Switches one received burst from one port. Every packet is either queued for transmission
/// or freed with a counted drop reason. Context: fast path, worker lcore.
/// @param n at most kRxBurst packets
void l2_switch_burst(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf** pkts,
                     uint16_t n);

/// The `normal` action for packets already parsed: keys[i] belongs to pkts[i], all received on
/// in_port. Same contract as l2_switch_burst. Context: fast path, worker lcore.
void l2_switch_parsed(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf** pkts,
                      const FlowKey* keys, uint16_t n);

}  // namespace ferry
