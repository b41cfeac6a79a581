// Rewriting a packet's addresses and ports for NAT, with incremental checksum updates
// (RFC 1624): the IPv4 header checksum, the TCP/UDP checksum (a zero IPv4 UDP checksum stays
// zero), the ICMP echo identifier with the ICMP checksum (ICMPv6: its checksum covers the
// pseudo-header, so address changes update it too). No DPDK: works on the frame's bytes.
#pragma once

#include <cstdint>

#include "dataplane/flow_key.h"

namespace ferry {

/// The addresses and ports a packet should carry after translation. For ICMP echo, sport is
/// the new identifier and dport is ignored.
struct NatTarget {
    uint8_t src[16];  // IPv4 in the first 4 bytes
    uint8_t dst[16];
    uint16_t sport;  // host order
    uint16_t dport;
};

/// Rewrites an IPv4/IPv6 packet (TCP, UDP, ICMP/ICMPv6 echo; other protocols: addresses only)
/// in place so that it carries `to`. Fields already equal are left alone. Non-first fragments
/// (layout.l4_offset == 0) get addresses only. Context: fast path.
/// @param frame  the Ethernet frame; layout from parse_frame; key->ip_version/ip_proto say which
/// @param len    bytes at frame
/// @return false if the packet is too short for the headers it announces (nothing changed)
bool nat_rewrite(uint8_t* frame, uint32_t len, const PacketLayout& layout, const FlowKey& key,
                 const NatTarget& to);

/// Rewrites an ICMP/ICMPv6 error (destination unreachable, time exceeded, parameter problem,
/// packet too big) that quotes a translated packet: the outer destination becomes outer_dst,
/// the quoted packet's source/destination addresses and ports become `inner` (its IPv4 header
/// checksum and the ICMP checksum are updated; the quoted L4 checksum is left alone, as it may
/// be truncated). Context: fast path.
/// @return false if the packet is not such an error or is too short (nothing changed)
bool nat_rewrite_icmp_error(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                            const FlowKey& key, const uint8_t* outer_dst, const NatTarget& inner);

/// Parses the packet quoted by an ICMP/ICMPv6 error into the tuple of the connection it belongs
/// to, as that connection's packet would carry it (src/dst as in the quoted header). Context:
/// fast path. @return false when the packet is not an ICMP error quoting TCP/UDP/ICMP echo or
/// the quote is too short for addresses and ports (8 bytes of L4 are required).
struct CtTuple;
bool icmp_error_inner_tuple(const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                            const FlowKey& key, uint16_t zone, CtTuple* inner);

}  // namespace ferry
