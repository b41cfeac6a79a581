#include "dataplane/actions.h"

#include <rte_mbuf.h>

#include "dataplane/classifier.h"
#include "dataplane/conntrack/ct_action.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_action.h"
#include "dataplane/flow_cache.h"
#include "dataplane/l2_bridge.h"
#include "dataplane/meter.h"
#include "dataplane/rule.h"
#include "dataplane/tx.h"
#include "dataplane/vlan_edit.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

/// Sends a copy of pkt to port out, unchanged. Context: fast path.
void send_copy(WorkerState& w, const PortTable& t, uint16_t out, rte_mbuf* pkt) {
    if (out >= kPortSlots || !t.ports[out].active || !t.ports[out].link_up) {
        count_drop(w, out < kPortSlots ? out : 0, DropReason::kPortDown);
        return;
    }
    rte_mbuf* c = rte_pktmbuf_copy(pkt, w.pool, 0, UINT32_MAX);
    if (c == nullptr) {
        count_drop(w, out, DropReason::kNoMbuf);
        return;
    }
    tx_enqueue(w, t, out, c);
}

/// Sends pkt itself to port out, unchanged. Takes ownership.
void send(WorkerState& w, const PortTable& t, uint16_t in_port, uint16_t out, rte_mbuf* pkt) {
    if (out >= kPortSlots || !t.ports[out].active || !t.ports[out].link_up) {
        drop(w, in_port, pkt, DropReason::kPortDown);
        return;
    }
    tx_enqueue(w, t, out, pkt);
}

/// OpenFlow FLOOD: every other port that is up, frames unchanged. Takes ownership.
void flood_all(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf* pkt) {
    int last = -1;
    for (uint16_t q = 0; q < t.port_limit; ++q) {
        if (q == in_port || !t.ports[q].active || !t.ports[q].link_up) continue;
        if (last >= 0) send_copy(w, t, static_cast<uint16_t>(last), pkt);
        last = q;
    }
    if (last < 0)
        drop(w, in_port, pkt, DropReason::kNoDestination);
    else
        tx_enqueue(w, t, static_cast<uint16_t>(last), pkt);
}

}  // namespace

void normal_flush(WorkerState& w, const PortTable& t, uint16_t in_port, NormalBatch& normal) {
    if (normal.n == 0) return;
    // The bridge takes keys in one array; the batch points into its caller's.
    FlowKey keys[kRxBurst];
    for (uint16_t i = 0; i < normal.n; ++i) keys[i] = *normal.keys[i];
    l2_switch_parsed(w, t, in_port, normal.pkts, keys, normal.n);
    normal.n = 0;
}

void output_run(WorkerState& w, const PortTable& t, uint16_t in_port, const CompiledRule& rule,
                rte_mbuf* const* pkts, uint16_t n) {
    if (rule.index < w.rule_slots) {
        uint64_t bytes = 0;
        for (uint16_t i = 0; i < n; ++i) bytes += rte_pktmbuf_pkt_len(pkts[i]);
        RuleCounters& rc = w.rule_counters[rule.index];
        counter_add(rc.packets, n);
        counter_add(rc.bytes, bytes);
    }
    const uint16_t out = rule.actions[0].arg16;
    if (out >= kPortSlots || !t.ports[out].active || !t.ports[out].link_up) {
        for (uint16_t i = 0; i < n; ++i) drop(w, in_port, pkts[i], DropReason::kPortDown);
        return;
    }
    tx_enqueue_run(w, t, out, pkts, n);
}

const CompiledRule* table_lookup(WorkerState& w, const Classifier& cls, const FlowKey& key,
                                 uint8_t table) {
    if (cls.direct(table)) return cls.lookup(key, table);
    const CompiledRule* hit = nullptr;
    const uint64_t gen = cls.generation();
    if (w.flow_cache->lookup_bulk(&key, 1, table, gen, &hit, &cls) == 0) {
        hit = cls.lookup(key, table);
        w.flow_cache->insert(key, table, gen, hit);
    }
    return hit;
}

void run_actions(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf* pkt, FlowKey* key, const CompiledRule* rule, NormalBatch& normal,
                 uint8_t ct_hops, CtPacketState* ct_state) {
    CtPacketState own;
    CtPacketState* st = ct_state != nullptr ? ct_state : &own;
    // goto_table and ct(table=N) only go forward, so this loop ends within kMaxTables rules.
    while (rule != nullptr) {
        if (rule->index < w.rule_slots) {
            RuleCounters& rc = w.rule_counters[rule->index];
            counter_add(rc.packets, 1);
            counter_add(rc.bytes, rte_pktmbuf_pkt_len(pkt));
        }
        const CompiledRule* next = nullptr;
        bool sent = false;  // an output already sent a copy (a mirror copy does not count)
        for (unsigned i = 0; i < rule->n_actions; ++i) {
            const Action& a = rule->actions[i];
            switch (a.type) {
                case ActionType::kOutput:
                    if (a.flags & kActionSendCopy) {  // mark_output_copies: used later
                        send_copy(w, t, a.arg16, pkt);
                        sent = true;
                        break;
                    }
                    send(w, t, in_port, a.arg16, pkt);
                    return;
                case ActionType::kDrop:
                    drop(w, in_port, pkt, DropReason::kRuleDrop);
                    return;
                case ActionType::kNormal:
                    normal.pkts[normal.n] = pkt;
                    normal.keys[normal.n] = key;
                    ++normal.n;
                    return;
                case ActionType::kFlood:
                    flood_all(w, t, in_port, pkt);
                    return;
                case ActionType::kPushVlan:
                    if (!vlan_push(pkt, a.arg16)) {
                        drop(w, in_port, pkt, DropReason::kNoMbuf);
                        return;
                    }
                    key->vlan = a.arg16;
                    break;
                case ActionType::kPopVlan:
                    if (key->vlan != kNoVlan && vlan_pop(pkt)) key->vlan = vlan_outer_vid(pkt);
                    break;
                case ActionType::kSetVlan:
                    if (key->vlan == kNoVlan) {
                        if (!vlan_push(pkt, a.arg16)) {
                            drop(w, in_port, pkt, DropReason::kNoMbuf);
                            return;
                        }
                    } else {
                        vlan_set_vid(pkt, a.arg16);
                    }
                    key->vlan = a.arg16;
                    break;
                case ActionType::kMirror:
                    send_copy(w, t, a.arg16, pkt);
                    break;
                case ActionType::kMeter:
                    if (w.meters != nullptr &&
                        !meter_pass(*w.meters, a.arg32, rte_pktmbuf_pkt_len(pkt), w.now_tsc)) {
                        drop(w, in_port, pkt, DropReason::kMeter);
                        return;
                    }
                    break;
                case ActionType::kGotoTable: {
                    const CompiledRule* hit =
                        table_lookup(w, cls, *key, static_cast<uint8_t>(a.arg16));
                    if (hit == nullptr) {
                        drop(w, in_port, pkt, DropReason::kNoRule);
                        return;
                    }
                    next = hit;
                    i = rule->n_actions;  // goto is the last action
                    break;
                }
                case ActionType::kCt: {
                    const CompiledRule* hit = nullptr;
                    const CtStep step =
                        ct_action(w, t, cls, in_port, pkt, key, *rule, i, ct_hops, st, &hit);
                    if (step == CtStep::kConsumed) return;
                    if (step == CtStep::kGotoRule) {
                        next = hit;
                        i = rule->n_actions;  // ct(table=N) is the last action
                    }
                    break;
                }
                case ActionType::kDpi:
                    if (dpi_action(w, in_port, pkt, key, *st) == DpiOutcome::kDrop) return;
                    break;
                case ActionType::kCount:
                    break;
            }
        }
        if (next == nullptr) {
            if (sent)
                rte_pktmbuf_free(pkt);  // copies of it went out: nothing was dropped
            else
                drop(w, in_port, pkt, DropReason::kRuleDrop);  // the rule sent it nowhere
            return;
        }
        rule = next;
    }
    drop(w, in_port, pkt, DropReason::kNoRule);
}

}  // namespace ferry
