// A frame as the fast path reads it from an mbuf, which may be a chain of segments (frames
// larger than one buffer: jumbo frames, docs/architecture.md#jumbo-frames). The headers are read
// from the first segment, where parse_frame checks that they lie; lengths are the chain's; the
// few readers that go past the headers (payload checksums, payload inspection) walk the
// segments with for_each_piece. Also the ports' MTU checks. Context: fast path.
#pragma once

#include <rte_branch_prediction.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "dataplane/ether_type.h"
#include "dataplane/packet_parse.h"
#include "dataplane/packet_parse_inline.h"
#include "dataplane/port_table.h"

namespace ferry {

inline constexpr uint32_t kEthernetHeaderLen = 14;

/// parse_frame of an mbuf: headers from its first segment, lengths from the whole chain.
/// Context: fast path. @return as parse_frame (kSplitHeaders: the headers run past the first
///         segment)
inline std::optional<DropReason> parse_mbuf(const rte_mbuf* m, uint16_t in_port, FlowKey* key,
                                            PacketLayout* layout) {
    return parse_frame(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m),
                       rte_pktmbuf_pkt_len(m), in_port, key, layout);
}

/// parse_mbuf of a frame just received on port `in`, which must also fit the port's MTU: its
/// L3 packet (what follows the Ethernet header and its VLAN tags) at most in.mtu bytes.
/// Context: fast path. @return as parse_frame, or kMtuExceeded
inline std::optional<DropReason> parse_received(const rte_mbuf* m, const PortSlot& in,
                                                uint16_t in_port, FlowKey* key,
                                                PacketLayout* layout) {
    auto bad = parse_mbuf(m, in_port, key, layout);
    if (unlikely(!bad && rte_pktmbuf_pkt_len(m) - layout->l3_offset > in.mtu))
        return DropReason::kMtuExceeded;
    return bad;
}

/// parse_received without the key: the same checks and reasons, layout filled, no key written
/// (parse_frame_as<false>), for pipelines whose rules read no key field. Inline, so that a
/// burst's loop runs the checks without a call per frame. Context: fast path.
/// @return as parse_received
inline std::optional<DropReason> check_received(const rte_mbuf* m, const PortSlot& in,
                                                PacketLayout* layout) {
    auto bad = parse_frame_as<false>(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m),
                                     rte_pktmbuf_pkt_len(m), 0, nullptr, layout);
    if (unlikely(!bad && rte_pktmbuf_pkt_len(m) - layout->l3_offset > in.mtu))
        return DropReason::kMtuExceeded;
    return bad;
}

/// Whether a frame about to leave on a port of the given MTU fits it: its L3 packet, after the
/// Ethernet header and up to two VLAN tags (read from the frame: actions may have pushed or
/// popped one), is at most mtu bytes. Context: fast path.
inline bool frame_fits_mtu(const rte_mbuf* m, uint16_t mtu) {
    const uint32_t len = rte_pktmbuf_pkt_len(m);
    if (likely(len <= mtu + kEthernetHeaderLen)) return true;
    const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
    const uint32_t head = rte_pktmbuf_data_len(m);
    uint32_t l2 = kEthernetHeaderLen;  // the ethertype or TPID field ends at l2
    for (int tags = 0; tags < 2 && head >= l2; ++tags) {
        const unsigned tpid = unsigned{d[l2 - 2]} << 8 | d[l2 - 1];
        if (!is_vlan_tpid(static_cast<uint16_t>(tpid))) break;
        l2 += 4;
    }
    return len <= mtu + l2;
}

/// Calls fn(const uint8_t* bytes, uint32_t n, uint32_t done) for each contiguous piece of the
/// bytes [off, off + len) of m's chain, in order (done: bytes of the range before this piece),
/// until fn returns false. Context: fast path.
/// @return true when every piece was given to fn and fn accepted it; false when the chain is
///         shorter than off + len or fn stopped
template <class Fn>
inline bool for_each_piece(const rte_mbuf* m, uint32_t off, uint32_t len, Fn&& fn) {
    while (m != nullptr && off >= rte_pktmbuf_data_len(m)) {
        off -= rte_pktmbuf_data_len(m);
        m = m->next;
    }
    uint32_t done = 0;
    while (done < len) {
        if (m == nullptr) return false;
        const uint32_t n = std::min<uint32_t>(rte_pktmbuf_data_len(m) - off, len - done);
        if (n != 0 && !fn(rte_pktmbuf_mtod_offset(m, const uint8_t*, off), n, done)) return false;
        done += n;
        off = 0;
        m = m->next;
    }
    return true;
}

}  // namespace ferry
