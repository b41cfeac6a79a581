// Where reassembly for connection tracking meets the pipeline (docs/conntrack.md, "Fragments").
// A ct action given a fragment holds it in the worker's CtDefrag instead of tracking it; right
// after the packet that completed a datagram, the worker emits it: the first fragment is
// tracked as the datagram (its ports, the whole's length, checksum and UDP length), and every
// fragment, in offset order, runs the ct action and the actions after it with that tracking
// (NAT rewrites each: addresses on all, ports and the transport checksum on the first). Frames
// that never reach a ct action never come here. Context: fast path, worker lcore.
#pragma once

#include <cstdint>

#include "dataplane/drop_reason.h"

struct rte_mbuf;

namespace ferry {

struct WorkerState;
struct PortTable;
struct FlowKey;
struct PacketLayout;
struct CompiledRule;
class Classifier;

/// Takes a fragment whose ct action is action `index` of rule (in zone `zone`, after `hops`
/// hand-offs) into the worker's reassembly table, or drops it with a counted reason (no table,
/// malformed, overlapping, over a bound). Takes ownership of pkt. key and layout: pkt parsed.
void ct_defrag_hold(WorkerState& w, uint16_t in_port, rte_mbuf* pkt, const FlowKey& key,
                    const PacketLayout& layout, const CompiledRule& rule, unsigned index,
                    uint8_t hops, uint16_t zone);

/// Runs the datagrams completed since the last call through their rules (or hands them to the
/// owner of their connection). The pipeline calls it right after the packet that completed one
/// (CtDefrag::ready()), so the fragments leave where their last one came in the burst, before
/// the packets after it. cls null: the rules went away, the fragments are dropped as kNoRule.
void ct_defrag_emit(WorkerState& w, const PortTable& t, const Classifier* cls);

/// Once per loop iteration: drops the datagrams whose time is up, and emits the ones completed
/// outside a burst (by fragments other workers handed over).
void ct_defrag_run(WorkerState& w, const PortTable& t, const Classifier* cls);

/// Frees a held packet the table discards, counting reason on in_port. The CtDefrag release
/// hook of a worker's table; ctx is its WorkerState.
void ct_defrag_release(void* ctx, void* pkt, uint16_t in_port, DropReason reason);

}  // namespace ferry
