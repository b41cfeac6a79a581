// The port table: an immutable snapshot of every port's forwarding attributes and of which
// worker polls which (port, queue). Built by the control thread, published by a pointer swap,
// freed after an RCU grace period. Workers load it once per poll iteration.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>

#include "dataplane/port_security.h"

namespace ferry {

inline constexpr uint16_t kPortSlots = 64;    // ferry port indices 0..63
inline constexpr uint16_t kWorkerSlots = 16;  // worker indices 0..15
inline constexpr uint16_t kRxPerWorker = 64;  // (port, queue) pairs one worker may poll
inline constexpr uint16_t kVlanIds = 4096;

enum class PortVlanMode : uint8_t { kTrunk, kAccess };

struct PortSlot {
    bool active = false;   // slot holds a started port
    bool link_up = false;  // link (or vhost peer) is up: flooding skips ports that are down
    uint16_t dpdk_port = 0;
    PortVlanMode vlan_mode = PortVlanMode::kTrunk;
    uint16_t tag = 0;  // access: the VLAN; trunk: native VLAN carried untagged (0 = none)
    // Largest L3 packet the port takes in and sends out (Ethernet header and VLAN tags not
    // counted); a larger frame is dropped as kMtuExceeded on this port.
    uint16_t mtu = 1500;
    std::bitset<kVlanIds> trunks;  // trunk: VLANs carried tagged
    PortSecurity security;         // addresses the port may send from (off unless configured)
};

struct RxAssignment {
    uint16_t port;   // ferry port index
    uint16_t queue;  // rx queue on that port
};

struct PortTable {
    uint64_t generation = 0;
    std::array<PortSlot, kPortSlots> ports{};
    uint16_t port_limit = 0;  // one past the highest active slot, to bound flood loops
    std::array<std::array<RxAssignment, kRxPerWorker>, kWorkerSlots> rx{};
    std::array<uint16_t, kWorkerSlots> rx_count{};
};

/// Whether a trunk's VLAN set holds vid. std::bitset::test() would check the index and throw
/// std::out_of_range, which the fast path must never do (no exceptions in dataplane/); the mask
/// keeps the unchecked operator[] in range whatever the caller passes, at the cost of one AND.
/// Context: fast path.
inline bool carries_tagged(const PortSlot& p, uint16_t vid) {
    static_assert((kVlanIds & (kVlanIds - 1)) == 0, "the mask needs a power of two");
    return p.trunks[vid & (kVlanIds - 1)];
}

/// Internal VLAN of a frame arriving on a port, or -1 when the port does not carry it.
/// @param frame_vlan VID of the outer tag, kNoVlan (0xffff) when untagged; VID 0 is a priority
///        tag and counts as untagged. Context: fast path.
inline int ingress_vlan(const PortSlot& p, uint16_t frame_vlan) {
    bool untagged = frame_vlan == 0xffff || frame_vlan == 0;
    if (p.vlan_mode == PortVlanMode::kAccess) return untagged ? p.tag : -1;
    if (untagged) return p.tag;
    return carries_tagged(p, frame_vlan) ? frame_vlan : -1;
}

/// Whether a port carries an internal VLAN on egress. Context: fast path.
inline bool port_carries(const PortSlot& p, uint16_t vlan) {
    if (vlan == p.tag) return true;
    return p.vlan_mode == PortVlanMode::kTrunk && vlan != 0 && carries_tagged(p, vlan);
}

/// Whether frames of an internal VLAN leave the port untagged. Context: fast path.
inline bool egress_untagged(const PortSlot& p, uint16_t vlan) {
    return vlan == p.tag;
}

}  // namespace ferry
