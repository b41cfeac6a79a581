// Two-rate three-colour meters (RFC 2698, rte_meter's trTCM), one set per worker. A meter's
// configured rates are split evenly over the workers, so no state is shared between lcores;
// with one worker the meter is exact, with several it is exact only when traffic is spread
// evenly. Red packets are dropped; green and yellow pass.
#pragma once

#include <rte_cycles.h>
#include <rte_meter.h>

#include <array>
#include <cstdint>

namespace ferry {

inline constexpr uint32_t kMaxMeters = 256;  // meter ids 0..255

struct MeterSet {
    std::array<bool, kMaxMeters> present{};
    std::array<rte_meter_trtcm_profile, kMaxMeters> profiles{};
    std::array<rte_meter_trtcm, kMaxMeters> states{};
    std::array<uint64_t, kMaxMeters> red{};  // packets dropped by each meter (owner-written)
};

/// Whether a packet of len bytes passes meter id (green or yellow). An id without a configured
/// meter passes. Context: fast path, owner worker.
inline bool meter_pass(MeterSet& m, uint32_t id, uint32_t len, uint64_t tsc) {
    if (id >= kMaxMeters || !m.present[id]) return true;
    rte_color c = rte_meter_trtcm_color_blind_check(&m.states[id], &m.profiles[id], tsc, len);
    if (c != RTE_COLOR_RED) return true;
    __atomic_store_n(&m.red[id], m.red[id] + 1, __ATOMIC_RELAXED);
    return false;
}

}  // namespace ferry
