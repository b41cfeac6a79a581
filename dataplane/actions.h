// Executing a rule's actions on one packet. Context: fast path, worker lcore.
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct FlowKey;
struct CompiledRule;
class Classifier;

/// Packets whose actions end in `normal`, gathered so the L2 bridge handles them as one batch.
struct NormalBatch {
    uint16_t n = 0;
    rte_mbuf* pkts[32];
    FlowKey* keys[32];
};

/// Runs rule's actions on pkt (and, through goto_table, those of the rules it leads to). Takes
/// ownership of pkt: it is queued for tx, handed to `normal`, or dropped with a counted reason.
/// key is updated by VLAN actions. rule == nullptr means a table miss (dropped, `no_rule`).
void run_actions(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf* pkt, FlowKey* key, const CompiledRule* rule, NormalBatch& normal);

}  // namespace ferry
