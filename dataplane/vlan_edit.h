// In-place 802.1Q tag edits on an mbuf's first segment. Context: fast path.
#pragma once

#include <rte_byteorder.h>
#include <rte_mbuf.h>

#include <cstring>

#include "dataplane/ether_type.h"

namespace ferry {

/// VID of the frame's outer 802.1Q/802.1ad tag, or kNoVlan (0xffff) when it has none.
inline uint16_t vlan_outer_vid(const rte_mbuf* m) {
    if (rte_pktmbuf_data_len(m) < 18) return 0xffff;
    const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
    uint16_t tpid = static_cast<uint16_t>(d[12] << 8 | d[13]);
    if (!is_vlan_tpid(tpid)) return 0xffff;
    return static_cast<uint16_t>((d[14] << 8 | d[15]) & 0xfff);
}

/// Removes the outer VLAN tag. @return false if the frame is too short to hold one.
inline bool vlan_pop(rte_mbuf* m) {
    if (rte_pktmbuf_data_len(m) < 18) return false;
    uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
    memmove(d + 4, d, 12);
    rte_pktmbuf_adj(m, 4);
    return true;
}

/// Inserts an outer 802.1Q tag with the given VID (PCP 0). @return false without headroom.
inline bool vlan_push(rte_mbuf* m, uint16_t vid) {
    uint8_t* d = reinterpret_cast<uint8_t*>(rte_pktmbuf_prepend(m, 4));
    if (d == nullptr) return false;
    memmove(d, d + 4, 12);
    uint16_t tpid = rte_cpu_to_be_16(kTpid8021Q);
    uint16_t tci = rte_cpu_to_be_16(vid & 0xfff);
    memcpy(d + 12, &tpid, 2);
    memcpy(d + 14, &tci, 2);
    return true;
}

/// Rewrites the VID of the outer tag, keeping PCP and DEI.
inline void vlan_set_vid(rte_mbuf* m, uint16_t vid) {
    uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
    uint16_t tci;
    memcpy(&tci, d + 14, 2);
    tci = rte_cpu_to_be_16(static_cast<uint16_t>((rte_be_to_cpu_16(tci) & 0xf000) | (vid & 0xfff)));
    memcpy(d + 14, &tci, 2);
}

}  // namespace ferry
