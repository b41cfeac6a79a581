#include "dataplane/pipeline.h"

#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include <cstring>
#include <new>

#include "dataplane/actions.h"
#include "dataplane/classifier.h"
#include "dataplane/conntrack/ct_action.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "dataplane/conntrack/ct_defrag_stage.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/ether_type.h"
#include "dataplane/flow_cache.h"
#include "dataplane/l2_bridge.h"
#include "dataplane/mbuf_frame.h"
#include "dataplane/offload_mark.h"
#include "dataplane/port_security.h"
#include "dataplane/tx.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

/// Table-0 rules of n keys: the flow cache for all, the classifier for its misses, whose
/// answers are cached. Context: fast path.
void resolve(WorkerState& w, const Classifier& cls, const FlowKey* keys, uint16_t n,
             const CompiledRule** rules) {
    if (cls.direct(0)) {
        cls.lookup_bulk(keys, n, 0, rules);
        return;
    }
    uint64_t gen = cls.generation();
    uint64_t hits = w.flow_cache->lookup_bulk(keys, n, 0, gen, rules, &cls);
    uint64_t all = n == 64 ? ~0ULL : (1ULL << n) - 1;
    if (hits != all) {
        FlowKey miss_keys[kRxBurst];
        const CompiledRule* miss_rules[kRxBurst];
        uint16_t miss_idx[kRxBurst];
        uint16_t nm = 0;
        for (uint16_t i = 0; i < n; ++i) {
            if (hits & (1ULL << i)) continue;
            miss_keys[nm] = keys[i];
            miss_idx[nm++] = i;
        }
        cls.lookup_bulk(miss_keys, nm, 0, miss_rules);
        for (uint16_t j = 0; j < nm; ++j) {
            rules[miss_idx[j]] = miss_rules[j];
            if (!w.cache_thrashing || ++w.cache_insert_tick % kThrashInsertEvery == 0)
                w.flow_cache->insert(miss_keys[j], 0, gen, miss_rules[j]);
        }
        counter_add(w.counters.cache_misses, nm);
        w.cache_window_misses += nm;
    }
    w.cache_window_lookups += n;
    if (w.cache_window_lookups >= kCacheWindow) {
        w.cache_thrashing = w.cache_window_misses * 2 > w.cache_window_lookups;
        w.cache_window_lookups = 0;
        w.cache_window_misses = 0;
    }
    counter_add(w.counters.cache_hits, static_cast<uint64_t>(__builtin_popcountll(hits)));
}

/// Tells the control thread which source address a guest sent a frame from that port security
/// let through, unless this worker told it within the last second. Context: fast path.
void observe_source(WorkerState& w, uint16_t in_port, const uint8_t* frame, uint32_t len,
                    const FlowKey& key, const PacketLayout& layout) {
    AddressEvent ev{in_port, 0, 0, {}};
    if (key.ethertype == kEtherTypeArp) {
        // ARP for Ethernet/IPv4 (port security checked the layout): the sender's address.
        if (len < layout.l3_offset + 18u) return;
        std::memcpy(ev.ip, frame + layout.l3_offset + 14, 4);
        ev.family = 4;
    } else if (key.ip_version != 0) {
        std::memcpy(ev.ip, key.ip_src, 16);
        ev.family = key.ip_version;
    } else {
        return;
    }
    uint64_t lo;
    uint64_t hi;
    std::memcpy(&lo, ev.ip, 8);
    std::memcpy(&hi, ev.ip + 8, 8);
    if ((lo | hi) == 0) return;  // 0.0.0.0 or ::, an address being acquired
    const uint64_t h = ((lo * 0x9e3779b97f4a7c15ULL) ^ hi ^ (uint64_t{in_port} << 48 | ev.family)) *
                       0xff51afd7ed558ccdULL;
    const uint32_t slot = static_cast<uint32_t>(h >> 58);
    const uint32_t now = w.clock_s->load(std::memory_order_relaxed);
    if (w.address_recent[slot] == h && w.address_recent_s[slot] == now) return;
    w.address_recent[slot] = h;
    w.address_recent_s[slot] = now;
    if (rte_ring_sp_enqueue_elem(w.address_ring, &ev, sizeof(ev)) != 0)
        counter_add(w.counters.address_ring_full, 1);
}

}  // namespace

uint16_t port_security_filter(WorkerState& w, const PortSecurity& s, uint16_t in_port,
                              rte_mbuf** pkts, uint16_t n) {
    uint16_t kept = 0;
    for (uint16_t i = 0; i < n; ++i) {
        const uint8_t* frame = rte_pktmbuf_mtod(pkts[i], const uint8_t*);
        // Port security reads past the parsed headers (ARP bodies, Neighbor Discovery options)
        // within the first segment only: a frame in several segments (a jumbo frame) is parsed
        // whole, but an ARP or ND message longer than a segment is refused as malformed.
        const uint32_t len = rte_pktmbuf_data_len(pkts[i]);
        FlowKey key;
        PacketLayout layout;
        auto bad = parse_mbuf(pkts[i], in_port, &key, &layout);
        if (!bad) bad = port_security_check(s, frame, len, key, layout);
        if (bad) {
            drop(w, in_port, pkts[i], *bad);
            continue;
        }
        if (w.address_ring != nullptr) observe_source(w, in_port, frame, len, key, layout);
        pkts[kept++] = pkts[i];
    }
    return kept;
}

namespace {

/// pipeline_burst past the bridge check, with table 0's rules in cls. kInPortOnly: table 0 is
/// Classifier::in_port_only and in_port has an answer in its port array; then frames are
/// checked without filling their keys (the same drops, for the same reasons), the rule is
/// read once for the burst, and no stage that reads a key runs (no ct action can be met).
/// Context: fast path.
template <bool kInPortOnly>
void rules_burst(WorkerState& w, const PortTable& t, const Classifier& cls, uint16_t in_port,
                 rte_mbuf** pkts, uint16_t n) {
    FlowKey keys[kInPortOnly ? 1 : kRxBurst];
    PacketLayout layouts[kInPortOnly ? 1 : kRxBurst];
    rte_mbuf* live[kRxBurst];
    const CompiledRule* rules[kRxBurst];
    // Each packet's tracking, constructed only for bursts that meet a ct stage: the 32
    // default-initialised states cost a burst of any other switch more than its lookup.
    union CtStates {
        CtStates() {}
        CtPacketState at[kRxBurst];
    } ct_states;
    CtPacketState* states = nullptr;
    // The key run_actions gets when no rule reads it: in_port only, the rest zero.
    FlowKey port_key;
    const CompiledRule* port_rule = nullptr;
    if constexpr (kInPortOnly) {
        std::memset(&port_key, 0, sizeof(port_key));
        port_key.in_port = in_port;
        port_rule = cls.lookup_port(in_port, 0);
    }

    // Stage 1: parse (or only check). A frame a NIC flow rule marked names its rule (read here,
    // while the mbuf is at hand).
    const PortSlot& in = t.ports[in_port];
    uint16_t m = 0;
    uint64_t marked = 0;
    for (uint16_t i = 0; i < n; ++i) {
        if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
        std::optional<DropReason> bad;
        if constexpr (kInPortOnly) {
            bad = check_received(pkts[i], in, &layouts[0]);
            rules[m] = port_rule;
        } else {
            bad = parse_received(pkts[i], in, in_port, &keys[m], &layouts[m]);
        }
        if (bad) {
            drop(w, in_port, pkts[i], *bad);
            continue;
        }
        uint32_t mark;
        if (unlikely(offload_mark(pkts[i], &mark)) && mark != 0) {
            const CompiledRule* r = cls.rule_by_index(mark - 1);
            if (r != nullptr) {  // null: a rule deleted since the NIC marked the frame
                rules[m] = r;
                marked |= 1ULL << m;
            }
        }
        live[m++] = pkts[i];
    }
    if (m == 0) return;

    // Stage 2: rules. The frames no NIC rule marked go to the flow cache as one batch, and only
    // the cache's misses to the classifier. With kInPortOnly stage 1 gave every frame its rule.
    if constexpr (!kInPortOnly) {
        if (marked == 0) {
            resolve(w, cls, keys, m, rules);
        } else if (__builtin_popcountll(marked) != m) {
            FlowKey rest_keys[kRxBurst];
            const CompiledRule* rest_rules[kRxBurst];
            uint16_t rest_idx[kRxBurst];
            uint16_t nr = 0;
            for (uint16_t i = 0; i < m; ++i) {
                if (marked & (1ULL << i)) continue;
                rest_keys[nr] = keys[i];
                rest_idx[nr++] = i;
            }
            resolve(w, cls, rest_keys, nr, rest_rules);
            for (uint16_t j = 0; j < nr; ++j) rules[rest_idx[j]] = rest_rules[j];
        }

        // Stage 3: connection tracking of the whole burst, for rules that start with ct.
        if (w.ct != nullptr && cls.has_ct(0)) {
            states = ct_states.at;
            for (uint16_t i = 0; i < m; ++i) new (&states[i]) CtPacketState();
            m = ct_stage(w, cls, in_port, live, keys, layouts, rules, states, m);
            if (m == 0) return;
        }
    }

    // Stage 4: actions; packets that end in `normal` go to the bridge together. A run of
    // packets whose rule only outputs (port forwarding, an ACL's permit) is counted and queued
    // as one: such a rule needs neither the key nor a per-packet walk of its actions.
    NormalBatch normal;
    for (uint16_t i = 0; i < m;) {
        const CompiledRule* r = rules[i];
        if (r != nullptr && rule_only_outputs(*r)) {
            uint16_t end = i + 1;
            while (end < m && rules[end] == r) ++end;
            output_run(w, t, in_port, *r, live + i, static_cast<uint16_t>(end - i));
            i = end;
            continue;
        }
        run_actions(w, t, cls, in_port, live[i], kInPortOnly ? &port_key : &keys[i], r, normal, 0,
                    states != nullptr ? &states[i] : nullptr);
        // A fragment that completes its datagram (held by a ct action) sends the datagram's
        // fragments on before the packets after it, as a reassembling router would. Only
        // run_actions holds fragments, so only packets that went through it are followed by
        // this check.
        if (w.ct_defrag != nullptr && w.ct_defrag->ready()) ct_defrag_emit(w, t, &cls);
        ++i;
    }
    normal_flush(w, t, in_port, normal);
}

}  // namespace

void pipeline_burst(WorkerState& w, const PortTable& t, const Classifier* cls, uint16_t in_port,
                    rte_mbuf** pkts, uint16_t n) {
    if (cls == nullptr || cls->table_empty(0)) {
        l2_switch_burst(w, t, in_port, pkts, n);
        return;
    }
    // Chosen per burst from the snapshot's summary of its rules: a rule change switches paths
    // at the next burst.
    if (cls->in_port_only(0) && in_port < Classifier::kIndexedPorts)
        rules_burst<true>(w, t, *cls, in_port, pkts, n);
    else
        rules_burst<false>(w, t, *cls, in_port, pkts, n);
}

}  // namespace ferry
