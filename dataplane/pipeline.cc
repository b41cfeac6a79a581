#include "dataplane/pipeline.h"

#include <rte_mbuf.h>
#include <rte_prefetch.h>

#include "dataplane/actions.h"
#include "dataplane/classifier.h"
#include "dataplane/flow_cache.h"
#include "dataplane/l2_bridge.h"
#include "dataplane/packet_parse.h"
#include "dataplane/tx.h"
#include "dataplane/worker.h"

namespace ferry {

void pipeline_burst(WorkerState& w, const PortTable& t, const Classifier* cls, uint16_t in_port,
                    rte_mbuf** pkts, uint16_t n) {
    if (cls == nullptr || cls->table_empty(0)) {
        l2_switch_burst(w, t, in_port, pkts, n);
        return;
    }
    FlowKey keys[kRxBurst];
    PacketLayout layout;
    rte_mbuf* live[kRxBurst];
    const CompiledRule* rules[kRxBurst];

    // Stage 1: parse.
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; ++i) {
        if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
        auto bad = parse_frame(rte_pktmbuf_mtod(pkts[i], const uint8_t*),
                               rte_pktmbuf_data_len(pkts[i]), in_port, &keys[m], &layout);
        if (bad) {
            drop(w, in_port, pkts[i], *bad);
            continue;
        }
        live[m++] = pkts[i];
    }
    if (m == 0) return;

    // Stage 2: flow cache for the whole batch; the classifier only for the misses.
    uint64_t gen = cls->generation();
    uint64_t hits = w.flow_cache->lookup_bulk(keys, m, 0, gen, rules);
    uint64_t all = m == 64 ? ~0ULL : (1ULL << m) - 1;
    if (hits != all) {
        FlowKey miss_keys[kRxBurst];
        const CompiledRule* miss_rules[kRxBurst];
        uint16_t miss_idx[kRxBurst];
        uint16_t nm = 0;
        for (uint16_t i = 0; i < m; ++i) {
            if (hits & (1ULL << i)) continue;
            miss_keys[nm] = keys[i];
            miss_idx[nm++] = i;
        }
        cls->lookup_bulk(miss_keys, nm, 0, miss_rules);
        for (uint16_t j = 0; j < nm; ++j) {
            rules[miss_idx[j]] = miss_rules[j];
            w.flow_cache->insert(miss_keys[j], 0, gen, miss_rules[j]);
        }
        counter_add(w.counters.cache_misses, nm);
    }
    counter_add(w.counters.cache_hits, static_cast<uint64_t>(__builtin_popcountll(hits)));

    // Stage 3: actions; packets that end in `normal` go to the bridge together.
    NormalBatch normal;
    for (uint16_t i = 0; i < m; ++i)
        run_actions(w, t, *cls, in_port, live[i], &keys[i], rules[i], normal);
    if (normal.n != 0) {
        FlowKey normal_keys[kRxBurst];
        for (uint16_t i = 0; i < normal.n; ++i) normal_keys[i] = *normal.keys[i];
        l2_switch_parsed(w, t, in_port, normal.pkts, normal_keys, normal.n);
    }
}

}  // namespace ferry
