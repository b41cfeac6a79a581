// The transport checksum of a frame that lies in several mbuf segments, summed across them for
// connection tracking (ct_checksum.h reads only the first segment). DPDK's rte_raw_cksum_mbuf
// would do it, but in 22.11 it cuts the partial sum of a segment that starts at an odd offset to
// 16 bits before byte-swapping it, losing that segment's carries; here each piece is folded
// first (csum_detail::add_piece). Context: fast path.
#pragma once

#include <rte_branch_prediction.h>
#include <rte_mbuf.h>

#include <cstdint>

#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/mbuf_frame.h"

namespace ferry {

/// The CtRxCsum conntrack takes for m: rx (what the port's offload said), and for a frame in
/// several segments whose transport checksum the port left unknown, software's verdict over
/// every segment in its place. Reads the payload only in that case. Context: fast path.
/// @param l, k  m's layout and key from parse_mbuf
inline uint8_t ct_rx_csum_mbuf(const rte_mbuf* m, const PacketLayout& l, const FlowKey& k,
                               uint8_t rx) {
    if (likely(!l.segmented) || (rx & kCsumL4Mask) != kCsumUnknown) return rx;
    CtL4Checksum c;
    if (!ct_l4_checksum(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_pkt_len(m), l, k, &c))
        return rx;
    uint64_t acc = c.pseudo;
    const bool whole =
        for_each_piece(m, c.offset, c.length, [&acc](const uint8_t* p, uint32_t n, uint32_t done) {
            acc = csum_detail::add_piece(p, n, (done & 1) != 0, acc);
            return true;
        });
    const bool good = whole && csum_detail::folds_to_ones(acc);
    return static_cast<uint8_t>(rx | (good ? kCsumL4Good : kCsumL4Bad));
}

}  // namespace ferry
