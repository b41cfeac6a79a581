// The ct action on the fast path: find the connection's owner worker, hand the packet over if
// it is another one, otherwise track it in this worker's shard and continue (next action or
// another table). Also the receiving side of the hand-off rings. Context: fast path.
#pragma once

#include <cstdint>

#include "dataplane/rule.h"

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct FlowKey;
struct PacketLayout;
struct NormalBatch;
struct CtPacketState;
class Classifier;

/// A packet handed to the owner of its connection: everything needed to run the ct action and
/// what follows it in the rule, by value (the sender's classifier snapshot may be gone by the
/// time the owner reads the message).
/// With pkt == nullptr the message is a shard's CtNotice instead (kind, owner, tuple).
struct CtHandoff {
    rte_mbuf* pkt;
    uint16_t in_port;  // notice: the owner worker
    uint8_t n_rest;    // actions after the ct action, in rest[]
    uint8_t notice;    // notice: CtNotice::Kind
    uint32_t mark;     // the rule's ct_mark
    Action ct;
    Action rest[kMaxActions - 1];
    NatSpec nat;
    uint8_t hops;  // hand-offs so far: 1 by the owner hash, 2 after a redirect as well
    uint8_t pad1[7];
};
static_assert(sizeof(CtHandoff) == 128);

inline constexpr unsigned kCtRingSize = 1024;  // messages per (sender, owner) ring

/// What the caller does after a ct action.
enum class CtStep : uint8_t {
    kNextAction,  // run the rule's next action
    kGotoRule,    // continue with *next (the ct action's table matched)
    kConsumed,    // the packet was handed over or dropped
};

/// Runs action `index` of rule (a ct action) on pkt. key is refreshed from the frame and gets
/// the ct fields. hops: how often the packet was handed over already; from 1 on it is tracked
/// here whatever the owner hash says, and a redirect is followed only while hops < 2.
/// Context: fast path.
CtStep ct_action(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf* pkt, FlowKey* key, const CompiledRule& rule, unsigned index,
                 uint8_t hops, CtPacketState* st, const CompiledRule** next);

/// The ct stage of a burst, between rule lookup and actions. Packets whose table-0 rule starts
/// with a ct action have their connections looked up together (one bulk lookup, buckets and
/// entries prefetched). Those whose rule is just `ct(..., table=T)`, a firewall's usual first
/// step, are tracked here and their rule becomes table T's; the ones handed to another worker
/// or dropped leave the burst. Context: fast path.
/// @return packets left; pkts, keys, layouts, rules and states are compacted in order
uint16_t ct_stage(WorkerState& w, const Classifier& cls, uint16_t in_port, rte_mbuf** pkts,
                  FlowKey* keys, PacketLayout* layouts, const CompiledRule** rules,
                  CtPacketState* states, uint16_t n);

/// Queues pkt for worker `owner` with action `index` of rule (a ct action) and the actions
/// after it; counts kCtHandoff when the ring is full. Takes ownership. Context: fast path.
void hand_off(WorkerState& w, uint16_t owner, rte_mbuf* pkt, uint16_t in_port,
              const CompiledRule& rule, unsigned index, uint8_t hops);

/// Sends the notices this worker's shard queued to the workers they concern. Context: fast
/// path, worker lcore.
void ct_send_notices(WorkerState& w);

/// Runs the packets other workers handed to this one and applies their notices. Context: fast
/// path, worker lcore.
/// @return the number of packets taken from the rings
uint32_t ct_handoff_drain(WorkerState& w, const PortTable& t, const Classifier* cls);

}  // namespace ferry
