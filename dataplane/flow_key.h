// The compact flow key every packet is parsed into: the input of the MAC table today and of the
// classifier and flow cache later. Fixed layout, zero-filled, so it can be hashed and compared
// as bytes.
#pragma once

#include <cstdint>
#include <cstring>

namespace ferry {

inline constexpr uint16_t kNoVlan = 0xffff;

struct FlowKey {
    uint16_t in_port;    // ferry port index (not the DPDK port id)
    uint16_t vlan;       // 802.1Q VID of the outer tag, kNoVlan when untagged
    uint16_t ethertype;  // after VLAN tags, host order
    uint8_t ip_proto;    // 0 when not IP
    uint8_t tcp_flags;   // 0 when not TCP
    uint8_t eth_dst[6];
    uint8_t eth_src[6];
    uint16_t l4_src;     // host order; ICMP: type
    uint16_t l4_dst;     // host order; ICMP: code
    uint8_t ip_version;  // 0, 4 or 6
    // Connection-tracking results, zero until a ct action fills them; rules match on them.
    uint8_t ct_state;  // CtState bits
    uint16_t ct_zone;
    uint32_t ct_mark;
    uint8_t ip_src[16];  // IPv4 in the first 4 bytes, network order
    uint8_t ip_dst[16];
};
static_assert(sizeof(FlowKey) == 64, "FlowKey must stay one cache line");

/// ct_state bits, as OpenFlow and Open vSwitch name them.
enum CtState : uint8_t {
    kCtNew = 1 << 0,
    kCtEstablished = 1 << 1,
    kCtRelated = 1 << 2,
    kCtReply = 1 << 3,
    kCtInvalid = 1 << 4,
    kCtTracked = 1 << 5,
};

/// Where the parser found the layers, for actions that rewrite the packet. Offsets from the start
/// of the frame; 0 means absent.
struct PacketLayout {
    uint16_t l3_offset;
    uint16_t l4_offset;
    uint8_t vlan_tags;  // number of 802.1Q/802.1ad tags seen (outer one is in FlowKey::vlan)
    // 1 when the frame goes on past the buffer its headers lie in (a multi-segment mbuf): every
    // header the parser read is there, but payload bytes may be in later segments, which only
    // mbuf-aware code reads (payload checksums, payload inspection).
    uint8_t segmented;
    // 1 for a fragment of a larger IP datagram, first one included (IPv4 MF or offset, an IPv6
    // fragment header with M or an offset; not an IPv6 atomic fragment): connection tracking
    // reassembles these (dataplane/conntrack/ct_defrag.h).
    uint8_t fragment;
};

}  // namespace ferry
