// The EtherTypes and VLAN TPIDs ferry reads and writes, in host byte order as FlowKey::ethertype
// and load_be16 give them: one list for the parser, port security, the VLAN edits, the rule
// compiler and rule offload. DPDK's RTE_ETHER_TYPE_* would need rte_ether.h, which the DPDK-free
// parts (parser, port security, rule compiler) do not include.
#pragma once

#include <cstdint>

namespace ferry {

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86dd;

inline constexpr uint16_t kTpid8021Q = 0x8100;       // a VLAN tag, and the one ferry pushes
inline constexpr uint16_t kTpid8021ad = 0x88a8;      // a service (outer) tag
inline constexpr uint16_t kTpidQinQLegacy = 0x9100;  // pre-standard QinQ

/// True for the TPIDs accepted as a VLAN tag (802.1Q, 802.1ad, the pre-standard QinQ 0x9100).
/// Context: any.
constexpr bool is_vlan_tpid(uint16_t ethertype) {
    return ethertype == kTpid8021Q || ethertype == kTpid8021ad || ethertype == kTpidQinQLegacy;
}

}  // namespace ferry
