#include "dataplane/l2_bridge.h"

#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include "dataplane/flow_key.h"
#include "dataplane/mac_table.h"
#include "dataplane/mbuf_frame.h"
#include "dataplane/tx.h"
#include "dataplane/vlan_edit.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

constexpr uint16_t kPrefetchAhead = 4;

/// Queues a packet on a port's tx buffer after fitting its VLAN tag to the egress port; flushes
/// the buffer when it fills. Takes ownership of m. Context: fast path.
inline void emit(WorkerState& w, const PortTable& t, uint16_t out, rte_mbuf* m, uint16_t vlan,
                 uint16_t frame_vlan) {
    const PortSlot& p = t.ports[out];
    bool tagged = frame_vlan != kNoVlan;
    bool want_tag = !egress_untagged(p, vlan);
    bool ok = true;
    if (tagged && !want_tag) {
        ok = vlan_pop(m);
    } else if (!tagged && want_tag) {
        ok = vlan_push(m, vlan);
    } else if (tagged && frame_vlan != vlan) {
        vlan_set_vid(m, vlan);  // a priority tag (VID 0) entering a trunk's native VLAN
    }
    if (!ok) {
        drop(w, out, m, DropReason::kNoMbuf);
        return;
    }
    tx_enqueue(w, t, out, m);
}

/// Sends a packet to every other port of its VLAN whose link is up. Context: fast path.
inline void flood(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf* m, uint16_t vlan,
                  uint16_t frame_vlan) {
    uint16_t targets[kPortSlots];
    uint16_t n = 0;
    for (uint16_t q = 0; q < t.port_limit; ++q) {
        const PortSlot& p = t.ports[q];
        if (q != in_port && p.active && p.link_up && port_carries(p, vlan)) targets[n++] = q;
    }
    if (n == 0) {
        drop(w, in_port, m, DropReason::kNoDestination);
        return;
    }
    for (uint16_t i = 0; i + 1 < n; ++i) {
        rte_mbuf* c = rte_pktmbuf_copy(m, w.pool, 0, UINT32_MAX);
        if (c == nullptr) {
            count_drop(w, targets[i], DropReason::kNoMbuf);
            continue;
        }
        emit(w, t, targets[i], c, vlan, frame_vlan);
    }
    emit(w, t, targets[n - 1], m, vlan, frame_vlan);
}

/// Tells the control thread about a source address unless this worker told it within the last
/// second (a tiny direct-mapped filter keeps one burst of a new flow from flooding the ring).
inline void send_learn(WorkerState& w, uint64_t key, uint16_t port, uint32_t now) {
    uint32_t slot = static_cast<uint32_t>((key * 0x9e3779b97f4a7c15ULL) >> 56);
    if (w.learn_recent_key[slot] == (key | (uint64_t{port} << 60)) && w.learn_recent_s[slot] == now)
        return;
    w.learn_recent_key[slot] = key | (uint64_t{port} << 60);
    w.learn_recent_s[slot] = now;
    LearnEvent ev{key, port, {0, 0, 0}};
    if (rte_ring_sp_enqueue_elem(w.learn_ring, &ev, sizeof(ev)) == 0)
        counter_add(w.counters.learn_events, 1);
    else
        counter_add(w.counters.learn_ring_full, 1);
}

}  // namespace

void l2_switch_burst(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf** pkts,
                     uint16_t n) {
    FlowKey keys[kRxBurst];
    PacketLayout layout;
    rte_mbuf* live[kRxBurst];
    const PortSlot& in = t.ports[in_port];
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; ++i) {
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        auto bad = parse_received(pkts[i], in, in_port, &keys[m], &layout);
        if (bad) {
            drop(w, in_port, pkts[i], *bad);
            continue;
        }
        live[m++] = pkts[i];
    }
    l2_switch_parsed(w, t, in_port, live, keys, m);
}

void l2_switch_parsed(WorkerState& w, const PortTable& t, uint16_t in_port, rte_mbuf** pkts,
                      const FlowKey* keys, uint16_t n) {
    rte_mbuf* live[kRxBurst];
    uint16_t idx[kRxBurst];  // index into keys of each live packet
    uint16_t vlans[kRxBurst];
    uint64_t lookup[kRxBurst];  // source keys, for learning
    uint64_t values[2 * kRxBurst];
    const PortSlot& in = t.ports[in_port];

    // Stage 1: classify the ingress VLAN; drop what the port does not carry.
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; ++i) {
        int vlan = ingress_vlan(in, keys[i].vlan);
        if (vlan < 0) {
            drop(w, in_port, pkts[i], DropReason::kVlanNotAllowed);
            continue;
        }
        vlans[m] = static_cast<uint16_t>(vlan);
        live[m] = pkts[i];
        idx[m] = i;
        ++m;
    }
    if (m == 0) return;

    // Stage 2: one bulk lookup of the distinct keys. Frames of a burst mostly share their
    // addresses (one VM talking to one peer), so a key equal to the previous one of its kind
    // reuses that lookup: src_at/dst_at give each packet's position among the looked-up keys.
    uint64_t uniq[2 * kRxBurst];
    uint8_t src_at[kRxBurst];
    uint8_t dst_at[kRxBurst];
    unsigned nu = 0;
    for (uint16_t i = 0; i < m; ++i) {
        uint64_t k = mac_key(keys[idx[i]].eth_src, vlans[i]);
        lookup[i] = k;
        if (i == 0 || k != lookup[i - 1]) uniq[nu++] = k;
        src_at[i] = static_cast<uint8_t>(nu - 1);
    }
    uint64_t prev_dst = 0;
    for (uint16_t i = 0; i < m; ++i) {
        uint64_t k = mac_key(keys[idx[i]].eth_dst, vlans[i]);
        if (i == 0 || k != prev_dst) uniq[nu++] = k;
        prev_dst = k;
        dst_at[i] = static_cast<uint8_t>(nu - 1);
    }
    uint64_t uhits = w.macs->lookup_bulk(uniq, nu, values);
    uint64_t hits = 0;
    for (uint16_t i = 0; i < m; ++i) {
        hits |= ((uhits >> src_at[i]) & 1) << i;
        hits |= ((uhits >> dst_at[i]) & 1) << (m + i);
    }

    // Stage 3: learn sources, then forward.
    uint32_t now = w.clock_s->load(std::memory_order_relaxed);
    for (uint16_t i = 0; i < m; ++i) {
        if (keys[idx[i]].eth_src[0] & 1) continue;  // a group address is never a source
        bool known = hits & (1ULL << i);
        MacEntry e = known ? mac_value_unpack(values[src_at[i]]) : MacEntry{};
        if (!known || e.port != in_port || now - e.stamp_s >= w.mac_refresh_s)
            send_learn(w, lookup[i], in_port, now);
    }
    for (uint16_t i = 0; i < m; ++i) {
        rte_mbuf* pkt = live[i];
        const FlowKey& key = keys[idx[i]];
        bool group = key.eth_dst[0] & 1;
        bool known = hits & (1ULL << (m + i));
        if (group || !known) {
            flood(w, t, in_port, pkt, vlans[i], key.vlan);
            continue;
        }
        uint16_t out = mac_value_unpack(values[dst_at[i]]).port;
        if (out == in_port) {
            drop(w, in_port, pkt, DropReason::kHairpin);
        } else if (out >= kPortSlots || !t.ports[out].active || !t.ports[out].link_up ||
                   !port_carries(t.ports[out], vlans[i])) {
            drop(w, in_port, pkt, DropReason::kPortDown);
        } else {
            emit(w, t, out, pkt, vlans[i], key.vlan);
        }
    }
}

}  // namespace ferry
