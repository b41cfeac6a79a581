// The per-burst pipeline: parse, flow cache, classifier on a miss, actions; with no rule in
// table 0 the whole burst goes to the L2 bridge, so a switch without rules is a plain bridge.
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct PortSecurity;
class Classifier;

/// Drops (and counts) the frames of a burst that the port's security refuses, and frames the
/// parser refuses, keeping the others in order; runs before pipeline_burst on ports with port
/// security on. Context: fast path, worker lcore.
/// @return the number of frames left at the front of pkts.
uint16_t port_security_filter(WorkerState& w, const PortSecurity& s, uint16_t in_port,
                              rte_mbuf** pkts, uint16_t n);

/// Handles one received burst from in_port. Every packet is queued for tx or dropped with a
/// counted reason. cls may be null (no rules). Context: fast path, worker lcore.
void pipeline_burst(WorkerState& w, const PortTable& t, const Classifier* cls, uint16_t in_port,
                    rte_mbuf** pkts, uint16_t n);

}  // namespace ferry
