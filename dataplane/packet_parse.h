// Frame parsing into a FlowKey. Fast path: no allocation, no exceptions; a malformed frame is
// reported through the returned DropReason and counted by the caller.
#pragma once

#include <cstdint>
#include <optional>

#include "dataplane/drop_reason.h"
#include "dataplane/flow_key.h"

namespace ferry {

/// Parses one Ethernet frame (up to two VLAN tags, IPv4 with options, IPv6 with the common
/// extension headers, TCP/UDP/ICMP/ICMPv6). Context: fast path.
/// @param data  first byte of the frame; may be any alignment
/// @param len   bytes available at data
/// @param in_port ferry port index stored into the key
/// @return std::nullopt on success (key and layout filled, unused key bytes zero), otherwise the
///         reason the frame must be dropped (key contents then unspecified).
std::optional<DropReason> parse_frame(const uint8_t* data, uint32_t len, uint16_t in_port,
                                      FlowKey* key, PacketLayout* layout);

}  // namespace ferry
