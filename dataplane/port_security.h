// Port security: the addresses a port may send from, as OpenStack Neutron has them (the port's
// MAC with its fixed IPs, and allowed address pairs), enforced on every frame the port receives
// before any other stage sees it (pipeline.h, port_security_filter). Off unless configured. The
// table is part of the immutable port snapshot, so a worker reads it without synchronisation.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "dataplane/drop_reason.h"
#include "dataplane/flow_key.h"

namespace ferry {

inline constexpr uint8_t kPortSecurityEntries = 16;

/// One (MAC, IP prefix) pair a port may send from. family 0 allows the MAC alone: frames from it
/// that carry no IP (and IP frames only through another entry of the same MAC).
struct AllowedAddress {
    std::array<uint8_t, 6> mac{};
    uint8_t family = 0;  // 0, 4 or 6
    uint8_t prefix = 0;  // leading bits of ip a source must share: 32 / 128 for one address
    std::array<uint8_t, 16> ip{};  // IPv4 in the first 4 bytes, network order
};

struct PortSecurity {
    bool enabled = false;
    uint8_t count = 0;  // entries in use
    std::array<AllowedAddress, kPortSecurityEntries> allowed{};
};

/// Whether frames may come from mac (any entry names it). Context: any.
bool port_security_mac_allowed(const PortSecurity& s, const uint8_t* mac);

/// Whether mac may use ip as a source (an entry of that MAC and family covers it; for IPv6 also
/// the link-local address derived from the MAC, as a guest configures it by default).
/// @param family 4 or 6; ip 4 or 16 bytes, network order. Context: any.
bool port_security_ip_allowed(const PortSecurity& s, const uint8_t* mac, uint8_t family,
                              const uint8_t* ip);

/// Whether any MAC the port may send from may use ip as a source (port_security_ip_allowed).
/// Context: any (the control thread uses it for addresses reported from elsewhere).
bool port_security_source_allowed(const PortSecurity& s, uint8_t family, const uint8_t* ip);

/// The verdict on one frame a port received. Checks, in order: the source MAC; ARP's sender
/// (hardware, protocol) pair; the IPv4/IPv6 source for that MAC (0.0.0.0 only for a DHCP client,
/// :: only for duplicate address detection and MLD); Router Advertisements and Redirects, which a
/// VM port may not send; Neighbor Solicitations' and Advertisements' address claims.
/// @param frame, len  the frame's first segment; key and layout as parse_frame filled them.
/// @return nullopt when the frame may pass, else the port-security drop reason. Context: fast path.
std::optional<DropReason> port_security_check(const PortSecurity& s, const uint8_t* frame,
                                              uint32_t len, const FlowKey& key,
                                              const PacketLayout& layout);

}  // namespace ferry
