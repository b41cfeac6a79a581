#include "dataplane/port_security.h"

#include <netinet/in.h>

#include <cstring>

#include "dataplane/byte_order.h"
#include "dataplane/ether_type.h"
#include "dataplane/l4_payload.h"

namespace ferry {
namespace {

constexpr uint16_t kDhcpClientPort = 68;
constexpr uint16_t kDhcpServerPort = 67;

// ICMPv6 types (RFC 4443, 4861, 3810).
constexpr uint16_t kIcmpv6MldQuery = 130;
constexpr uint16_t kIcmpv6MldReport = 131;
constexpr uint16_t kIcmpv6MldDone = 132;
constexpr uint16_t kIcmpv6RouterAdvert = 134;
constexpr uint16_t kIcmpv6NeighSolicit = 135;
constexpr uint16_t kIcmpv6NeighAdvert = 136;
constexpr uint16_t kIcmpv6Redirect = 137;
constexpr uint16_t kIcmpv6Mld2Report = 143;

// Neighbor Discovery options (RFC 4861 §4.6.1) and message layout: type, code, checksum, a
// 32-bit word, then the target address (NS, NA) and the options.
constexpr uint8_t kNdOptSourceLinkAddr = 1;
constexpr uint8_t kNdOptTargetLinkAddr = 2;
constexpr uint32_t kNdTargetOffset = 8;
constexpr uint32_t kNdOptionsOffset = 24;

// ARP for Ethernet and IPv4 (RFC 826): htype, ptype, hlen, plen, op, sha, spa, tha, tpa.
constexpr uint32_t kArpLen = 28;
constexpr uint32_t kArpShaOffset = 8;
constexpr uint32_t kArpSpaOffset = 14;

bool prefix_matches(const uint8_t* a, const uint8_t* b, uint8_t bits) {
    const uint8_t whole = bits / 8;
    if (std::memcmp(a, b, whole) != 0) return false;
    const uint8_t rest = bits % 8;
    if (rest == 0) return true;
    const uint8_t mask = static_cast<uint8_t>(0xff00u >> rest);
    return (a[whole] & mask) == (b[whole] & mask);
}

// fe80::/64 with the modified EUI-64 interface identifier of mac (RFC 4291 appendix A).
bool is_eui64_link_local(const uint8_t* ip, const uint8_t* mac) {
    static constexpr uint8_t kLinkLocal[8] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0};
    if (std::memcmp(ip, kLinkLocal, 8) != 0) return false;
    const uint8_t iid[8] = {
        static_cast<uint8_t>(mac[0] ^ 0x02), mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]};
    return std::memcmp(ip + 8, iid, 8) == 0;
}

bool all_zero(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (p[i] != 0) return false;
    return true;
}

std::optional<DropReason> check_arp(const PortSecurity& s, const uint8_t* frame, uint32_t len,
                                    const PacketLayout& layout) {
    const uint32_t off = layout.l3_offset;
    if (off == 0 || len < off + kArpLen) return DropReason::kPortSecArp;
    const uint8_t* arp = frame + off;
    // Ethernet hardware (1), IPv4 protocol, 6- and 4-byte addresses: anything else claims nothing
    // a port should send.
    if (load_be16(arp) != 1 || load_be16(arp + 2) != kEtherTypeIpv4 || arp[4] != 6 || arp[5] != 4)
        return DropReason::kPortSecArp;
    const uint8_t* sha = arp + kArpShaOffset;
    const uint8_t* spa = arp + kArpSpaOffset;
    if (all_zero(spa, 4)) {  // a probe (RFC 5227) claims no address
        return port_security_mac_allowed(s, sha) ? std::nullopt
                                                 : std::optional(DropReason::kPortSecArp);
    }
    if (!port_security_ip_allowed(s, sha, 4, spa)) return DropReason::kPortSecArp;
    return std::nullopt;
}

std::optional<DropReason> check_ipv4(const PortSecurity& s, const FlowKey& key) {
    if (all_zero(key.ip_src, 4)) {
        // Only a DHCP client without an address yet sends from 0.0.0.0.
        const bool dhcp = key.ip_proto == IPPROTO_UDP && key.l4_src == kDhcpClientPort &&
                          key.l4_dst == kDhcpServerPort;
        return dhcp ? std::nullopt : std::optional(DropReason::kPortSecIp);
    }
    if (!port_security_ip_allowed(s, key.eth_src, 4, key.ip_src)) return DropReason::kPortSecIp;
    return std::nullopt;
}

// The Neighbor Discovery link-layer address options of an NS or NA: each claims that the
// message's address (NS: the source, NA: the target) lives at that MAC.
std::optional<DropReason> check_nd_options(const PortSecurity& s, const uint8_t* icmp,
                                           uint32_t avail, uint8_t wanted_type,
                                           const uint8_t* claimed_ip, bool unspecified_source) {
    for (uint32_t pos = kNdOptionsOffset; pos < avail;) {
        if (avail - pos < 2) return DropReason::kPortSecNd;
        const uint32_t opt_len = icmp[pos + 1] * 8u;
        if (opt_len == 0 || opt_len > avail - pos) return DropReason::kPortSecNd;
        if (icmp[pos] == wanted_type) {
            // RFC 4861 §7.1.1: no source link-layer option when the source is unspecified.
            if (unspecified_source || opt_len < 8) return DropReason::kPortSecNd;
            if (!port_security_ip_allowed(s, icmp + pos + 2, 6, claimed_ip))
                return DropReason::kPortSecNd;
        }
        pos += opt_len;
    }
    return std::nullopt;
}

std::optional<DropReason> check_ipv6(const PortSecurity& s, const uint8_t* frame, uint32_t len,
                                     const FlowKey& key, const PacketLayout& layout) {
    const bool unspecified = all_zero(key.ip_src, 16);
    const bool icmp = key.ip_proto == IPPROTO_ICMPV6 && layout.l4_offset != 0;
    const uint16_t type = icmp ? key.l4_src : 0;
    if (icmp && (type == kIcmpv6RouterAdvert || type == kIcmpv6Redirect))
        return DropReason::kPortSecRa;
    if (unspecified) {
        // Duplicate address detection sends solicitations and MLD reports from :: (RFC 4862 §5.4).
        const bool dad = icmp && (type == kIcmpv6NeighSolicit || type == kIcmpv6MldReport ||
                                  type == kIcmpv6MldDone || type == kIcmpv6Mld2Report ||
                                  type == kIcmpv6MldQuery);
        if (!dad) return DropReason::kPortSecIp;
    } else if (!port_security_ip_allowed(s, key.eth_src, 6, key.ip_src)) {
        return DropReason::kPortSecIp;
    }
    if (!icmp || (type != kIcmpv6NeighSolicit && type != kIcmpv6NeighAdvert)) return std::nullopt;

    const uint32_t end = ip_end(frame, len, layout, key);
    if (end == 0 || end < layout.l4_offset + kNdOptionsOffset) return DropReason::kPortSecNd;
    const uint8_t* nd = frame + layout.l4_offset;
    const uint32_t avail = end - layout.l4_offset;
    if (type == kIcmpv6NeighAdvert) {
        // An advertisement claims its target address: the sender must own it.
        const uint8_t* target = nd + kNdTargetOffset;
        if (!port_security_ip_allowed(s, key.eth_src, 6, target)) return DropReason::kPortSecNd;
        return check_nd_options(s, nd, avail, kNdOptTargetLinkAddr, target, false);
    }
    // A solicitation from :: is duplicate address detection: only for an address of the port's
    // own, or a VM could make another guest give up its address (RFC 4862 §5.4.3).
    if (unspecified && !port_security_ip_allowed(s, key.eth_src, 6, nd + kNdTargetOffset))
        return DropReason::kPortSecNd;
    return check_nd_options(s, nd, avail, kNdOptSourceLinkAddr, key.ip_src, unspecified);
}

}  // namespace

bool port_security_mac_allowed(const PortSecurity& s, const uint8_t* mac) {
    for (uint8_t i = 0; i < s.count; ++i)
        if (std::memcmp(s.allowed[i].mac.data(), mac, 6) == 0) return true;
    return false;
}

bool port_security_ip_allowed(const PortSecurity& s, const uint8_t* mac, uint8_t family,
                              const uint8_t* ip) {
    bool mac_known = false;
    for (uint8_t i = 0; i < s.count; ++i) {
        const AllowedAddress& a = s.allowed[i];
        if (std::memcmp(a.mac.data(), mac, 6) != 0) continue;
        mac_known = true;
        if (a.family == family && prefix_matches(a.ip.data(), ip, a.prefix)) return true;
    }
    return family == 6 && mac_known && is_eui64_link_local(ip, mac);
}

bool port_security_source_allowed(const PortSecurity& s, uint8_t family, const uint8_t* ip) {
    for (uint8_t i = 0; i < s.count; ++i)
        if (port_security_ip_allowed(s, s.allowed[i].mac.data(), family, ip)) return true;
    return false;
}

std::optional<DropReason> port_security_check(const PortSecurity& s, const uint8_t* frame,
                                              uint32_t len, const FlowKey& key,
                                              const PacketLayout& layout) {
    if (!port_security_mac_allowed(s, key.eth_src)) return DropReason::kPortSecMac;
    switch (key.ethertype) {
        case kEtherTypeArp:
            return check_arp(s, frame, len, layout);
        case kEtherTypeIpv4:
            return check_ipv4(s, key);
        case kEtherTypeIpv6:
            return check_ipv6(s, frame, len, key, layout);
        default:
            return std::nullopt;
    }
}

}  // namespace ferry
