#include "dataplane/conntrack/ct_action.h"

#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <cstring>

#include "dataplane/actions.h"
#include "dataplane/classifier.h"
#include "dataplane/conntrack/ct_checksum_mbuf.h"
#include "dataplane/conntrack/ct_defrag_stage.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/mbuf_frame.h"
#include "dataplane/tx.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

CtParams params_of(const Action& a, const CompiledRule& rule) {
    CtParams p;
    p.zone = a.arg16;
    p.commit = (a.arg32 & kCtCommit) != 0;
    p.nat = (a.arg32 & kCtNat) != 0;
    p.set_mark = (a.arg32 & kCtSetMark) != 0;
    p.mark = rule.ct_mark;
    p.spec = &rule.nat;
    return p;
}

static_assert(sizeof(CtTuple) <= sizeof(CtHandoff::rest), "a notice's tuple travels in rest");

/// What a port's offload found about a packet's checksums (its mbuf's ol_flags), as conntrack
/// takes it: two masks and shifts, no branch. Context: fast path.
constexpr uint8_t rx_csum_of_flags(uint64_t f) {
    // IP: BAD is bit 4, GOOD bit 7, NONE both; L4: BAD bit 3, GOOD bit 8, NONE both.
    const auto ip = static_cast<uint8_t>(((f >> 7) & 1) | ((f >> 3) & 2));
    const auto l4 = static_cast<uint8_t>(((f >> 8) & 1) | ((f >> 2) & 2));
    return static_cast<uint8_t>(ip | l4 << 2);
}
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_IP_CKSUM_GOOD) == kCsumIpGood);
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_IP_CKSUM_BAD) == kCsumIpBad);
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_IP_CKSUM_NONE) == kCsumIpNone);
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_L4_CKSUM_GOOD) == kCsumL4Good);
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_L4_CKSUM_BAD) == kCsumL4Bad);
static_assert(rx_csum_of_flags(RTE_MBUF_F_RX_L4_CKSUM_NONE) == kCsumL4None);
static_assert(rx_csum_of_flags(~(RTE_MBUF_F_RX_IP_CKSUM_MASK | RTE_MBUF_F_RX_L4_CKSUM_MASK)) ==
              kCsumUnknown);

/// What conntrack takes about m's checksums: rx_csum_of_flags of its ol_flags, with the
/// transport checksum of a frame in several segments verified across them when the port left
/// it unknown. Context: fast path. @return a CtRxCsum
uint8_t rx_csum_of(const rte_mbuf* m, const PacketLayout& l, const FlowKey& k) {
    return ct_rx_csum_mbuf(m, l, k, rx_csum_of_flags(m->ol_flags));
}

}  // namespace

void hand_off(WorkerState& w, uint16_t owner, rte_mbuf* pkt, uint16_t in_port,
              const CompiledRule& rule, unsigned index, uint8_t hops) {
    CtHandoff m{};
    m.pkt = pkt;
    m.in_port = in_port;
    m.mark = rule.ct_mark;
    m.ct = rule.actions[index];
    m.n_rest = static_cast<uint8_t>(rule.n_actions - index - 1);
    for (unsigned j = 0; j < m.n_rest; ++j) m.rest[j] = rule.actions[index + 1 + j];
    m.nat = rule.nat;
    m.hops = hops;
    if (rte_ring_sp_enqueue_elem(w.ct_out[owner], &m, sizeof(m)) != 0) {
        drop(w, in_port, pkt, DropReason::kCtHandoff);
        return;
    }
    counter_add(w.counters.ct_handoff_out, 1);
}

namespace {

/// ct_action's tracking of a fragment of a reassembled datagram on its way out (st->datagram):
/// the first fragment is tracked as the datagram (its ports, the whole's length and checks),
/// unless the datagram is tracked in this zone already; the others take that tracking, and the
/// datagram's ports into their keys. Context: fast path.
CtVerdict track_fragment(WorkerState& w, rte_mbuf* pkt, const PacketLayout& layout, FlowKey* key,
                         const CtParams& p, CtPacketState* st) {
    auto* data = rte_pktmbuf_mtod(pkt, uint8_t*);
    const uint32_t len = rte_pktmbuf_pkt_len(pkt);
    const bool tracked = st->index != kCtNone && st->zone == p.zone;
    if (layout.l4_offset != 0 && !tracked) {
        CtKeyed keyed{};
        keyed.l4_length = st->l4_length;
        const uint8_t rx = static_cast<uint8_t>((rx_csum_of(pkt, layout, *key) & kCsumIpMask) |
                                                (st->datagram_rx & kCsumL4Mask));
        const bool have =
            ct_packet_tuple(data, len, layout, *key, p.zone, &keyed.tuple, &keyed.icmp_error);
        const CtVerdict v =
            w.ct->process(data, len, layout, key, p, w.now_ms, have ? &keyed : nullptr, st, rx);
        if (st->index == kCtNone || st->zone != p.zone) {
            // No connection (invalid, or new and not committed): the later fragments are told.
            st->zone = p.zone;
            st->ct_state = key->ct_state;
        }
        st->l4_src = key->l4_src;
        st->l4_dst = key->l4_dst;
        st->tcp_flags = key->tcp_flags;
        return v;
    }
    CtVerdict v = CtVerdict::kContinue;
    if (tracked) {
        v = w.ct->process(data, len, layout, key, p, w.now_ms, nullptr, st);
    } else {
        key->ct_zone = p.zone;
        key->ct_mark = 0;
        // Another zone than the one the datagram was tracked in, or a ct action its first
        // fragment did not reach: a later fragment alone has no ports to be tracked by.
        key->ct_state =
            st->zone == p.zone && st->ct_state != 0 ? st->ct_state : (kCtTracked | kCtInvalid);
    }
    if (layout.l4_offset == 0) {  // later tables match the datagram's ports and TCP flags
        key->l4_src = st->l4_src;
        key->l4_dst = st->l4_dst;
        key->tcp_flags = st->tcp_flags;
    }
    return v;
}

}  // namespace

CtStep ct_action(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf* pkt, FlowKey* key, const CompiledRule& rule, unsigned index,
                 uint8_t hops, CtPacketState* st, const CompiledRule** next) {
    (void)t;
    const Action& a = rule.actions[index];
    // Headers from the first segment, lengths from the whole chain (mbuf_frame.h).
    auto* data = rte_pktmbuf_mtod(pkt, uint8_t*);
    const uint32_t len = rte_pktmbuf_pkt_len(pkt);
    // Actions before ct may have moved the headers (VLAN edits): parse again for fresh offsets.
    // The frame parsed on arrival, and VLAN edits keep it parseable.
    PacketLayout layout;
    if (auto bad = parse_mbuf(pkt, in_port, key, &layout)) {
        drop(w, in_port, pkt, *bad);
        return CtStep::kConsumed;
    }
    const CtParams p = params_of(a, rule);
    // Fragments are held until their datagram is whole (ct_defrag_stage.h), before the owner
    // is chosen: only the first fragment has the ports that choose it.
    const bool datagram = layout.fragment && st != nullptr && st->datagram;
    if (layout.fragment && !datagram) {
        ct_defrag_hold(w, in_port, pkt, *key, layout, rule, index, hops, p.zone);
        return CtStep::kConsumed;
    }
    if (w.n_workers > 1 && hops == 0 && !datagram) {
        CtTuple tuple;
        bool icmp_error;
        if (ct_packet_tuple(data, len, layout, *key, p.zone, &tuple, &icmp_error)) {
            const uint16_t owner = ct_owner(tuple, w.n_workers);
            if (owner != w.index) {
                hand_off(w, owner, pkt, in_port, rule, index, 1);
                return CtStep::kConsumed;
            }
        }
    }
    CtVerdict verdict;
    uint16_t redirect_to;
    if (!datagram) {
        verdict = w.ct->process(data, len, layout, key, p, w.now_ms, nullptr, st,
                                rx_csum_of(pkt, layout, *key));
        redirect_to = w.ct->redirect_to();
    } else if (st->verdict != static_cast<uint8_t>(CtVerdict::kContinue)) {
        // The datagram's first fragment was dropped or sent to another worker: so are the rest.
        verdict = static_cast<CtVerdict>(st->verdict);
        redirect_to = st->redirect_to;
    } else {
        verdict = track_fragment(w, pkt, layout, key, p, st);
        redirect_to = w.ct->redirect_to();
        st->verdict = static_cast<uint8_t>(verdict);
        st->redirect_to = redirect_to;
    }
    switch (verdict) {
        case CtVerdict::kContinue:
            break;
        case CtVerdict::kLimit:
            drop(w, in_port, pkt, DropReason::kCtLimit);
            return CtStep::kConsumed;
        case CtVerdict::kFull:
            drop(w, in_port, pkt, DropReason::kCtFull);
            return CtStep::kConsumed;
        case CtVerdict::kBlocked:
            drop(w, in_port, pkt, DropReason::kDpiDrop);
            return CtStep::kConsumed;
        case CtVerdict::kDormant:
            drop(w, in_port, pkt, DropReason::kCtMigrating);
            return CtStep::kConsumed;
        case CtVerdict::kRedirect:
            // A translated connection whose reply tuple hashes here; its owner is elsewhere.
            // The reply reached the worker its hash names, directly or handed over once; one
            // more hop reaches the owner. Never more: a stale redirect must not loop.
            if (hops >= 2) {
                drop(w, in_port, pkt, DropReason::kCtHandoff);
                return CtStep::kConsumed;
            }
            hand_off(w, redirect_to, pkt, in_port, rule, index, 2);
            return CtStep::kConsumed;
    }
    if ((a.arg32 & kCtHasTable) == 0) return CtStep::kNextAction;
    const auto table = static_cast<uint8_t>(a.arg32 >> kCtTableShift);
    *next = table_lookup(w, cls, *key, table);
    if (*next == nullptr) {
        drop(w, in_port, pkt, DropReason::kNoRule);
        return CtStep::kConsumed;
    }
    return CtStep::kGotoRule;
}

uint16_t ct_stage(WorkerState& w, const Classifier& cls, uint16_t in_port, rte_mbuf** pkts,
                  FlowKey* keys, PacketLayout* layouts, const CompiledRule** rules,
                  CtPacketState* states, uint16_t n) {
    CtTuple tuples[kRxBurst];
    bool icmp_errors[kRxBurst];
    uint16_t which[kRxBurst];  // packet of each tuple
    unsigned nt = 0;
    bool whole = false;  // some packet's rule is only a ct(table=T): tracked in this stage
    for (uint16_t i = 0; i < n; ++i) {
        const CompiledRule* r = rules[i];
        if (r == nullptr || r->n_actions == 0 || r->actions[0].type != ActionType::kCt) continue;
        // Fragments go to reassembly through their rule's ct action (ct_action).
        if (layouts[i].fragment) continue;
        if (!ct_packet_tuple(rte_pktmbuf_mtod(pkts[i], const uint8_t*),
                             rte_pktmbuf_pkt_len(pkts[i]), layouts[i], keys[i], r->actions[0].arg16,
                             &tuples[nt], &icmp_errors[nt]))
            continue;
        whole = whole || (r->n_actions == 1 && (r->actions[0].arg32 & kCtHasTable));
        which[nt++] = i;
    }
    if (nt == 0) return n;
    CtRef refs[kRxBurst];
    w.ct->table().lookup_bulk(tuples, nt, refs);  // also warms the cache for run_actions
    if (!whole) return n;

    bool gone[kRxBurst] = {};
    uint8_t next_table[kRxBurst];
    uint16_t cont[kRxBurst];  // packets tracked here that continue in a table
    unsigned nc = 0;
    for (unsigned j = 0; j < nt; ++j) {
        const uint16_t i = which[j];
        const CompiledRule& r = *rules[i];
        if (r.n_actions != 1 || !(r.actions[0].arg32 & kCtHasTable)) continue;
        if (r.index < w.rule_slots) {
            RuleCounters& rc = w.rule_counters[r.index];
            counter_add(rc.packets, 1);
            counter_add(rc.bytes, rte_pktmbuf_pkt_len(pkts[i]));
        }
        gone[i] = true;
        if (w.n_workers > 1) {
            const uint16_t owner = ct_owner(tuples[j], w.n_workers);
            if (owner != w.index) {
                hand_off(w, owner, pkts[i], in_port, r, 0, 1);
                continue;
            }
        }
        const Action& a = r.actions[0];
        const CtKeyed keyed{tuples[j], icmp_errors[j], refs[j]};
        const uint8_t rx = rx_csum_of(pkts[i], layouts[i], keys[i]);
        switch (w.ct->process(rte_pktmbuf_mtod(pkts[i], uint8_t*), rte_pktmbuf_pkt_len(pkts[i]),
                              layouts[i], &keys[i], params_of(a, r), w.now_ms, &keyed, &states[i],
                              rx)) {
            case CtVerdict::kContinue:
                break;
            case CtVerdict::kLimit:
                drop(w, in_port, pkts[i], DropReason::kCtLimit);
                continue;
            case CtVerdict::kFull:
                drop(w, in_port, pkts[i], DropReason::kCtFull);
                continue;
            case CtVerdict::kRedirect:
                hand_off(w, w.ct->redirect_to(), pkts[i], in_port, r, 0, 2);
                continue;
            case CtVerdict::kBlocked:
                drop(w, in_port, pkts[i], DropReason::kDpiDrop);
                continue;
            case CtVerdict::kDormant:
                drop(w, in_port, pkts[i], DropReason::kCtMigrating);
                continue;
        }
        next_table[i] = static_cast<uint8_t>(a.arg32 >> kCtTableShift);
        cont[nc++] = i;
    }
    // The tables they continue in: one bulk classifier lookup when they agree (the usual case).
    if (nc != 0) {
        const uint8_t t0 = next_table[cont[0]];
        bool same = cls.direct(t0);
        for (unsigned k = 1; k < nc && same; ++k) same = next_table[cont[k]] == t0;
        const CompiledRule* next[kRxBurst];
        if (same) {
            FlowKey ck[kRxBurst];
            for (unsigned k = 0; k < nc; ++k) ck[k] = keys[cont[k]];
            cls.lookup_bulk(ck, nc, t0, next);
        } else {
            for (unsigned k = 0; k < nc; ++k)
                next[k] = table_lookup(w, cls, keys[cont[k]], next_table[cont[k]]);
        }
        for (unsigned k = 0; k < nc; ++k) {
            const uint16_t i = cont[k];
            if (next[k] == nullptr) {
                drop(w, in_port, pkts[i], DropReason::kNoRule);
                continue;
            }
            rules[i] = next[k];
            gone[i] = false;
        }
    }
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; ++i) {
        if (gone[i]) continue;
        if (m != i) {
            pkts[m] = pkts[i];
            keys[m] = keys[i];
            layouts[m] = layouts[i];
            rules[m] = rules[i];
            states[m] = states[i];
        }
        ++m;
    }
    return m;
}

void ct_send_notices(WorkerState& w) {
    const unsigned n = w.ct->notice_count();
    for (unsigned i = 0; i < n; ++i) {
        const CtNotice& c = w.ct->notices()[i];
        CtHandoff m{};
        m.pkt = nullptr;
        m.notice = c.kind;
        m.in_port = c.owner;
        std::memcpy(m.rest, &c.tuple, sizeof(CtTuple));
        if (c.to >= w.n_workers || c.to == w.index ||
            rte_ring_sp_enqueue_elem(w.ct_out[c.to], &m, sizeof(m)) != 0)
            w.ct->count_lost_notice();
    }
    w.ct->clear_notices();
}

uint32_t ct_handoff_drain(WorkerState& w, const PortTable& t, const Classifier* cls) {
    uint32_t total = 0;
    CtHandoff msgs[kRxBurst];
    FlowKey keys[kRxBurst];
    for (uint16_t j = 0; j < w.n_workers; ++j) {
        if (w.ct_in[j] == nullptr) continue;
        const unsigned n =
            rte_ring_sc_dequeue_burst_elem(w.ct_in[j], msgs, sizeof(CtHandoff), kRxBurst, nullptr);
        if (n == 0) continue;
        total += n;
        counter_add(w.counters.ct_handoff_in, n);
        NormalBatch normal;
        uint16_t normal_port = 0;
        for (unsigned i = 0; i < n; ++i) {
            const CtHandoff& m = msgs[i];
            if (m.pkt == nullptr) {
                CtNotice c{};
                c.kind = static_cast<CtNotice::Kind>(m.notice);
                c.owner = m.in_port;
                c.to = w.index;
                std::memcpy(&c.tuple, m.rest, sizeof(CtTuple));
                w.ct->apply_notice(c, w.now_ms);
                continue;
            }
            if (cls == nullptr) {  // the rules went away while the packet was in the ring
                drop(w, m.in_port, m.pkt, DropReason::kNoRule);
                continue;
            }
            // `normal` hands a batch to the bridge with one ingress port: flush on a change.
            if (m.in_port != normal_port) normal_flush(w, t, normal_port, normal);
            normal_port = m.in_port;
            CompiledRule rest{};
            rest.index = kUncountedRule;
            rest.ct_mark = m.mark;
            rest.nat = m.nat;
            rest.n_actions = static_cast<uint8_t>(1 + m.n_rest);
            rest.actions[0] = m.ct;
            for (unsigned k = 0; k < m.n_rest; ++k) rest.actions[1 + k] = m.rest[k];
            std::memset(&keys[i], 0, sizeof(FlowKey));
            keys[i].in_port = m.in_port;
            run_actions(w, t, *cls, m.in_port, m.pkt, &keys[i], &rest, normal, m.hops);
        }
        normal_flush(w, t, normal_port, normal);
    }
    return total;
}

}  // namespace ferry
