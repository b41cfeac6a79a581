// Frame parsing into a FlowKey. Fast path: no allocation, no exceptions; a malformed frame is
// reported through the returned DropReason and counted by the caller.
#pragma once

#include <cstdint>
#include <optional>

#include "dataplane/drop_reason.h"
#include "dataplane/flow_key.h"

namespace ferry {

/// Parses one Ethernet frame (up to two VLAN tags, IPv4 with options, IPv6 with the common
/// extension headers, TCP/UDP/ICMP/ICMPv6) whose first `head` bytes lie at data and whose
/// remaining len - head bytes (a multi-segment mbuf's later segments) are not read. Every
/// header it reads must lie within head: the L2 and IP headers (with the extension headers
/// walked), the whole transport header (TCP with its options, UDP, the 8-byte ICMP header, the
/// SCTP common header) and, for an ICMP error, the whole message (the packet it quotes is read
/// by connection tracking and NAT; such errors are at most 576 or 1,280 bytes). Lengths (the IP
/// total or payload length against the frame) are checked against len. Context: fast path.
/// @param data  first byte of the frame; may be any alignment
/// @param head  bytes readable at data (an mbuf's first segment); head <= len
/// @param len   bytes in the whole frame
/// @param in_port ferry port index stored into the key
/// @return std::nullopt on success (key and layout filled, unused key bytes zero; layout
///         segmented when head < len), otherwise the reason the frame must be dropped (key
///         contents then unspecified): kSplitHeaders for a well-formed frame whose headers
///         run past head.
std::optional<DropReason> parse_frame(const uint8_t* data, uint32_t head, uint32_t len,
                                      uint16_t in_port, FlowKey* key, PacketLayout* layout);

/// parse_frame of a frame that lies whole at data (len bytes). Context: fast path.
inline std::optional<DropReason> parse_frame(const uint8_t* data, uint32_t len, uint16_t in_port,
                                             FlowKey* key, PacketLayout* layout) {
    return parse_frame(data, len, len, in_port, key, layout);
}

}  // namespace ferry
