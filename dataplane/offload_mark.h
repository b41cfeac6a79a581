// The per-packet half of rule offload: the NIC's mark on a received frame names the table-0 rule
// that a MARK + PASSTHRU flow matched (control/offload/ translates and installs those flows on the
// control thread), so the worker skips the lookup for it.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>

namespace ferry {

/// The NIC's mark on a received frame, if a MARK flow matched it. Context: fast path.
/// @return true with *mark set when RTE_MBUF_F_RX_FDIR_ID is set (mark in hash.fdir.hi)
inline bool offload_mark(const rte_mbuf* m, uint32_t* mark) {
    if ((m->ol_flags & RTE_MBUF_F_RX_FDIR_ID) == 0) return false;
    *mark = m->hash.fdir.hi;
    return true;
}

}  // namespace ferry
