// Executing a rule's actions on one packet. Context: fast path, worker lcore.
#pragma once

#include <cstdint>

#include "dataplane/rule.h"

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct CtPacketState;
class Classifier;

/// Packets whose actions end in `normal`, gathered so the L2 bridge handles them as one batch.
struct NormalBatch {
    uint16_t n = 0;
    rte_mbuf* pkts[32];
    FlowKey* keys[32];
};

/// Hands the gathered `normal` packets, all from in_port, to the L2 bridge and empties the
/// batch. Context: fast path.
void normal_flush(WorkerState& w, const PortTable& t, uint16_t in_port, NormalBatch& normal);

/// A CompiledRule::index that counts no hits: the remainder of a rule run by another worker.
inline constexpr uint32_t kUncountedRule = 0xffffffffu;

/// Runs rule's actions on pkt (and, through goto_table, those of the rules it leads to). Takes
/// ownership of pkt: it is queued for tx, handed to `normal`, handed to another worker by a ct
/// action, or dropped with a counted reason. key is updated by VLAN and ct actions.
/// rule == nullptr means a table miss (dropped, `no_rule`). ct_hops: how often another worker
/// handed the packet over already (0: from a port); see ct_action. ct_state: the packet's
/// tracking by an earlier stage (null: none yet).
void run_actions(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf* pkt, FlowKey* key, const CompiledRule* rule, NormalBatch& normal,
                 uint8_t ct_hops = 0, CtPacketState* ct_state = nullptr);

/// Whether rule's only action is an output of the packet itself: what run_actions would do is
/// count the hit and queue the packet, which output_run does for a whole run of packets.
/// Context: fast path.
inline bool rule_only_outputs(const CompiledRule& rule) {
    return rule.n_actions == 1 && rule.actions[0].type == ActionType::kOutput;
}

/// run_actions for n packets from in_port that all hit rule, a rule_only_outputs() one: the
/// rule's counters move once for the run, the output port is checked once, and the packets
/// are queued in order. Takes ownership of the packets. Context: fast path.
void output_run(WorkerState& w, const PortTable& t, uint16_t in_port, const CompiledRule& rule,
                rte_mbuf* const* pkts, uint16_t n);

/// The rule of `table` for key, through the flow cache unless the table is direct.
/// Context: fast path.
const CompiledRule* table_lookup(WorkerState& w, const Classifier& cls, const FlowKey& key,
                                 uint8_t table);

}  // namespace ferry
