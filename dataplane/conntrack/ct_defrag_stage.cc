#include "dataplane/conntrack/ct_defrag_stage.h"

#include <rte_mbuf.h>

#include <cstring>

#include "dataplane/actions.h"
#include "dataplane/conntrack/ct_action.h"
#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/mbuf_frame.h"
#include "dataplane/tx.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

/// Whether a fragment's IPv4 header checksum holds (the one check Linux makes of every fragment
/// before reassembly; IPv6 has none). Context: fast path.
bool ipv4_header_intact(const uint8_t* frame, const PacketLayout& l, const FlowKey& k) {
    if (k.ip_version != 4) return true;
    const uint32_t ihl = uint32_t{frame[l.l3_offset] & 0x0fu} * 4;
    return csum_detail::folds_to_ones(csum_detail::add_bytes(frame + l.l3_offset, ihl, 0));
}

/// Runs one complete datagram: hands it to its connection's owner, or tracks it through its
/// first fragment and sends every fragment through the rule with that tracking.
void run_datagram(WorkerState& w, const PortTable& t, const Classifier* cls, const CtDatagram& d) {
    auto* const* pkts = reinterpret_cast<rte_mbuf* const*>(d.pkts);
    const uint16_t in_port = d.key->in_port;
    if (cls == nullptr) {
        for (uint32_t i = 0; i < d.n; ++i) drop(w, in_port, pkts[i], DropReason::kNoRule);
        return;
    }
    FlowKey k0;
    PacketLayout l0;
    // Parsed when held, and nothing has changed it since.
    if (parse_mbuf(pkts[0], in_port, &k0, &l0) || l0.l4_offset == 0) {
        for (uint32_t i = 0; i < d.n; ++i) drop(w, in_port, pkts[i], DropReason::kCtFragBad);
        return;
    }
    const auto* f0 = rte_pktmbuf_mtod(pkts[0], const uint8_t*);
    if (w.n_workers > 1 && d.hops == 0) {
        CtTuple tuple;
        bool icmp_error;
        if (ct_packet_tuple(f0, rte_pktmbuf_pkt_len(pkts[0]), l0, k0, d.key->zone, &tuple,
                            &icmp_error)) {
            const uint16_t owner = ct_owner(tuple, w.n_workers);
            if (owner != w.index) {
                // In order on one ring: the owner holds them again and completes the datagram.
                for (uint32_t i = 0; i < d.n; ++i)
                    hand_off(w, owner, pkts[i], in_port, *d.rule, 0, 1);
                return;
            }
        }
    }
    CtPacketState st{};
    st.datagram = 1;
    st.datagram_rx = ct_datagram_l4_verdict(f0, l0, k0, d.l4_length, d.l4_sum);
    st.l4_length = d.l4_length;
    FlowKey keys[kCtDefragMaxFragments];
    NormalBatch normal;
    for (uint32_t i = 0; i < d.n; ++i) {
        if (normal.n == sizeof(normal.pkts) / sizeof(normal.pkts[0]))
            normal_flush(w, t, in_port, normal);
        std::memset(&keys[i], 0, sizeof(FlowKey));
        keys[i].in_port = in_port;
        run_actions(w, t, *cls, in_port, pkts[i], &keys[i], d.rule, normal, d.hops, &st);
    }
    normal_flush(w, t, in_port, normal);
    counter_add(w.counters.ct_reassembled, 1);
}

}  // namespace

void ct_defrag_hold(WorkerState& w, uint16_t in_port, rte_mbuf* pkt, const FlowKey& key,
                    const PacketLayout& layout, const CompiledRule& rule, unsigned index,
                    uint8_t hops, uint16_t zone) {
    CtDefrag* table = w.ct_defrag;
    const auto* frame = rte_pktmbuf_mtod(pkt, const uint8_t*);
    const uint32_t len = rte_pktmbuf_pkt_len(pkt);
    CtFragment f;
    std::optional<DropReason> bad;
    if (table == nullptr) bad = DropReason::kCtFragFull;
    if (!bad) bad = ct_frag_parse(frame, len, layout, key, &f);
    if (!bad && !ipv4_header_intact(frame, layout, key)) bad = DropReason::kCtFragBad;
    if (bad) {
        drop(w, in_port, pkt, *bad);
        return;
    }
    // The bytes this fragment adds to the transport message, summed where they lie (a fragment
    // in several segments included). Every piece starts at an even offset of the message.
    const uint32_t from = f.offset == 0 ? f.l4_at : f.payload_at;
    uint64_t sum = 0;
    if (!for_each_piece(pkt, from, f.payload_at + f.length - from,
                        [&sum](const uint8_t* p, uint32_t n, uint32_t done) {
                            sum = csum_detail::add_piece(p, n, (done & 1) != 0, sum);
                            return true;
                        })) {
        drop(w, in_port, pkt, DropReason::kCtFragBad);
        return;
    }
    CtFragKey fk{};
    std::memcpy(fk.src, key.ip_src, 16);
    std::memcpy(fk.dst, key.ip_dst, 16);
    fk.id = f.id;
    fk.in_port = in_port;
    fk.zone = zone;
    fk.proto = key.ip_proto;
    fk.ip_version = key.ip_version;
    // The first fragment's rule, from its ct action on, by value as a hand-off carries it.
    CompiledRule rest{};
    if (f.offset == 0) {
        rest.index = kUncountedRule;
        rest.ct_mark = rule.ct_mark;
        rest.nat = rule.nat;
        rest.n_actions = static_cast<uint8_t>(rule.n_actions - index);
        for (unsigned j = 0; j < rest.n_actions; ++j) rest.actions[j] = rule.actions[index + j];
    }
    DropReason why;
    if (table->add(fk, f, sum, pkt, f.offset == 0 ? &rest : nullptr, hops, w.now_ms, &why) ==
        CtFragAdd::kRefused)
        drop(w, in_port, pkt, why);
}

void ct_defrag_emit(WorkerState& w, const PortTable& t, const Classifier* cls) {
    w.ct_defrag->emit([&](const CtDatagram& d) { run_datagram(w, t, cls, d); });
}

void ct_defrag_run(WorkerState& w, const PortTable& t, const Classifier* cls) {
    CtDefrag& table = *w.ct_defrag;
    table.expire(w.now_ms);
    if (table.ready()) ct_defrag_emit(w, t, cls);
}

void ct_defrag_release(void* ctx, void* pkt, uint16_t in_port, DropReason reason) {
    drop(*static_cast<WorkerState*>(ctx), in_port, static_cast<rte_mbuf*>(pkt), reason);
}

}  // namespace ferry
