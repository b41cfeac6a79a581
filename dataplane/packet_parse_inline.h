// Frame parser of the fast path, inline so that the pipeline specialises it (packet_parse.h
// declares what callers use): Ethernet -> up to two VLAN tags -> IPv4/IPv6 -> transport ports.
// A frame with more tags, or with a tag behind a priority tag (VID 0), is dropped.
// One forward pass over the frame, every read bounds-checked against the bytes the layer below
// says are there. No DPDK here: the same object is linked into unit tests, fuzzers and tools.
//
// Length policy, so that padding is never mistaken for headers:
//  - L2 and the IP headers are checked against the frame length;
//  - the transport header is checked against the end of the IP payload (IPv4 total length,
//    IPv6 payload length), not the frame: Ethernet pads short frames to 60 bytes.
// Hence a frame cut inside its IP packet is kBadL3 (the IP length claims more than is there), and
// kBadL4 means the IP packet itself is too short for the transport header it announces.
//
// Segments: a multi-segment mbuf gives the parser its first segment (head bytes) and the frame's
// length (len). Each header is first checked against len, as if the frame were contiguous (so a
// truncated frame gets the same reason either way), then against head: a header that exists but
// runs past the first segment is kSplitHeaders. Nothing past head is ever read.
//
// Layout offsets: l3_offset is the first byte after the L2 header (the last ethertype) for every
// accepted frame, IP or not (ARP, LLC...), so VLAN push/pop has it without re-parsing; check
// FlowKey::ip_version, not l3_offset, to know whether the frame is IP. l4_offset is the start of
// the transport header of any unfragmented or first-fragment IP packet, whatever the protocol, and
// 0 for non-IP frames and non-first fragments.
//
// Filling the key is a template parameter: parse_frame_as<false> checks a frame exactly as
// parse_frame does (same reasons, same layout) and writes nothing into the key, for pipelines
// whose rules read no key field (Classifier::in_port_only).
#pragma once

#include <netinet/in.h>

#include <cstring>
#include <optional>

#include "dataplane/byte_order.h"
#include "dataplane/drop_reason.h"
#include "dataplane/ether_type.h"
#include "dataplane/flow_key.h"

namespace ferry {
namespace parse_detail {

constexpr uint32_t kEthHeaderLen = 14;
constexpr uint32_t kVlanTagLen = 4;
constexpr uint32_t kMaxVlanTags = 2;
constexpr uint32_t kIpv4MinHeaderLen = 20;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kIpv6ExtMinLen = 8;
// RFC 8200 allows each of the four walked headers once (destination options twice): five at most
// in a well-formed packet. A longer chain is malformed or an attempt to make us walk.
constexpr uint32_t kMaxIpv6ExtHeaders = 8;

constexpr uint32_t kTcpMinHeaderLen = 20;
constexpr uint32_t kUdpHeaderLen = 8;
constexpr uint32_t kIcmpMinLen = 4;
constexpr uint32_t kSctpCommonHeaderLen = 12;
// Type, code, checksum and the 32-bit word after them (echo identifier and sequence).
constexpr uint32_t kIcmpHeaderLen = 8;

/// Where the IP layer says the transport header lies. Filled by the L3 parsers, read by parse_l4.
struct L4Span {
    uint32_t begin;  // offset of the transport header in the frame
    uint32_t end;    // one past the last byte of the IP payload (Ethernet padding excluded)
    bool present;    // false for non-first fragments: this packet carries no transport header
    bool fragment;   // a fragment of a larger datagram, first one included
};

/// True for the IPv6 extension headers walked to reach the transport protocol. AH and ESP are not
/// walked: ESP hides what follows, and AH is rare enough to be reported as the protocol itself.
/// Context: fast path.
inline bool is_ipv6_ext_header(uint8_t next_header) {
    return next_header == IPPROTO_HOPOPTS || next_header == IPPROTO_ROUTING ||
           next_header == IPPROTO_FRAGMENT || next_header == IPPROTO_DSTOPTS;
}

/// Parses the IPv4 header at data[off]. Context: fast path.
/// @param head, len readable bytes and frame length; off <= head <= len
/// @return nullopt with key->ip_* and *span filled, or kBadL3 if the header is truncated, not
///         version 4, or its lengths disagree with each other or with the frame, or
///         kSplitHeaders if it runs past head.
template <bool kFillKey>
inline std::optional<DropReason> parse_ipv4(const uint8_t* data, uint32_t off, uint32_t head,
                                            uint32_t len, FlowKey* key, uint8_t* proto,
                                            L4Span* span) {
    const uint32_t avail = len - off;
    if (avail < kIpv4MinHeaderLen) return DropReason::kBadL3;
    if (head - off < kIpv4MinHeaderLen) return DropReason::kSplitHeaders;
    const uint8_t* ip = data + off;
    const uint32_t header_len = (ip[0] & 0x0fu) * 4;
    const uint32_t total_len = load_be16(ip + 2);
    if ((ip[0] >> 4) != 4 || header_len < kIpv4MinHeaderLen || header_len > avail ||
        total_len < header_len || total_len > avail) {
        return DropReason::kBadL3;
    }
    if (header_len > head - off) return DropReason::kSplitHeaders;
    *proto = ip[9];
    if constexpr (kFillKey) {
        key->ip_version = 4;
        key->ip_proto = ip[9];
        std::memcpy(key->ip_src, ip + 12, 4);
        std::memcpy(key->ip_dst, ip + 16, 4);
    }
    const uint16_t flags_offset = load_be16(ip + 6);
    span->begin = off + header_len;
    span->end = off + total_len;
    span->present = (flags_offset & 0x1fffu) == 0;
    span->fragment = (flags_offset & 0x3fffu) != 0;  // MF or an offset
    return std::nullopt;
}

/// Parses the IPv6 header at data[off] and walks hop-by-hop, routing, destination options and
/// fragment headers to the transport protocol. Context: fast path.
/// @param head, len readable bytes and frame length; off <= head <= len
/// @return nullopt with key->ip_* (ip_proto = last next-header seen) and *span filled, or kBadL3
///         if the fixed header is truncated or not version 6, the payload length exceeds the
///         frame, an extension header runs past the payload, or the chain is longer than
///         kMaxIpv6ExtHeaders; kSplitHeaders if a header read runs past head.
template <bool kFillKey>
inline std::optional<DropReason> parse_ipv6(const uint8_t* data, uint32_t off, uint32_t head,
                                            uint32_t len, FlowKey* key, uint8_t* proto,
                                            L4Span* span) {
    const uint32_t avail = len - off;
    if (avail < kIpv6HeaderLen) return DropReason::kBadL3;
    if (head - off < kIpv6HeaderLen) return DropReason::kSplitHeaders;
    const uint8_t* ip = data + off;
    const uint32_t payload_len = load_be16(ip + 4);
    if ((ip[0] >> 4) != 6 || payload_len > avail - kIpv6HeaderLen) return DropReason::kBadL3;
    if constexpr (kFillKey) {
        key->ip_version = 6;
        std::memcpy(key->ip_src, ip + 8, 16);
        std::memcpy(key->ip_dst, ip + 24, 16);
    }

    const uint32_t end = off + kIpv6HeaderLen + payload_len;
    uint32_t pos = off + kIpv6HeaderLen;
    uint8_t next_header = ip[6];
    bool present = true;
    bool fragment = false;
    for (uint32_t walked = 0; is_ipv6_ext_header(next_header); ++walked) {
        if (walked == kMaxIpv6ExtHeaders || end - pos < kIpv6ExtMinLen) return DropReason::kBadL3;
        if (pos + kIpv6ExtMinLen > head) return DropReason::kSplitHeaders;
        const uint8_t* ext = data + pos;
        if (next_header == IPPROTO_FRAGMENT) {
            next_header = ext[0];
            pos += kIpv6ExtMinLen;
            // An atomic fragment (offset 0, M clear) is a whole datagram (RFC 6946).
            fragment = fragment || (load_be16(ext + 2) & 0xfff9u) != 0;
            // Fragment offset in the upper 13 bits: a non-first fragment has no transport header.
            if ((load_be16(ext + 2) & 0xfff8u) != 0) {
                present = false;
                break;
            }
            continue;
        }
        // Hop-by-hop, routing and destination options share the layout {next, len in 8-octet
        // units not counting the first}.
        const uint32_t ext_len = (ext[1] + 1u) * 8;
        if (end - pos < ext_len) return DropReason::kBadL3;
        next_header = ext[0];
        pos += ext_len;
    }
    *proto = next_header;
    if constexpr (kFillKey) key->ip_proto = next_header;
    span->begin = pos;
    span->end = end;
    span->present = present;
    span->fragment = fragment;
    return std::nullopt;
}

/// True for the ICMP and ICMPv6 errors that quote the packet they concern and that connection
/// tracking relates to a connection: destination unreachable, time exceeded, parameter problem
/// (and ICMPv6's packet too big). Context: fast path.
inline bool is_quoting_icmp_error(uint8_t proto, uint8_t type) {
    if (proto == IPPROTO_ICMP) return type == 3 || type == 11 || type == 12;
    return type >= 1 && type <= 4;
}

/// Reads the transport ports (ICMP: type and code) and TCP flags of key->ip_proto from the span
/// the IP layer delimited. Context: fast path.
/// @param span present, begin <= end <= frame length, begin <= head
/// @return nullopt with key->l4_src/l4_dst/tcp_flags filled (left 0 for protocols without
///         ports), kBadL4 if the IP payload is too short for the transport header, or
///         kSplitHeaders if the transport header (an ICMP error: the whole message) runs past
///         head.
template <bool kFillKey>
inline std::optional<DropReason> parse_l4(const uint8_t* data, const L4Span& span, uint32_t head,
                                          uint8_t proto, FlowKey* key) {
    const uint8_t* l4 = data + span.begin;
    const uint32_t avail = span.end - span.begin;
    // An IPv6 extension header may end past head: then nothing of the transport header is here.
    const uint32_t in_head = span.begin <= head ? head - span.begin : 0;
    switch (proto) {
        case IPPROTO_TCP: {
            if (avail < kTcpMinHeaderLen) return DropReason::kBadL4;
            if (in_head < kTcpMinHeaderLen) return DropReason::kSplitHeaders;
            const uint32_t header_len = (l4[12] >> 4) * 4u;
            if (header_len < kTcpMinHeaderLen || header_len > avail) return DropReason::kBadL4;
            if (header_len > in_head) return DropReason::kSplitHeaders;
            if constexpr (kFillKey) {
                key->l4_src = load_be16(l4);
                key->l4_dst = load_be16(l4 + 2);
                key->tcp_flags = l4[13];  // CWR ECE URG ACK PSH RST SYN FIN
            }
            return std::nullopt;
        }
        case IPPROTO_UDP:
            if (avail < kUdpHeaderLen) return DropReason::kBadL4;
            if (in_head < kUdpHeaderLen) return DropReason::kSplitHeaders;
            if constexpr (kFillKey) {
                key->l4_src = load_be16(l4);
                key->l4_dst = load_be16(l4 + 2);
            }
            return std::nullopt;
        case IPPROTO_ICMP:
        case IPPROTO_ICMPV6: {
            if (avail < kIcmpMinLen) return DropReason::kBadL4;
            if (in_head < kIcmpMinLen) return DropReason::kSplitHeaders;
            // Echo identifiers (at 4) are read by conntrack and NAT; an error's quote as well.
            const uint32_t need = is_quoting_icmp_error(proto, l4[0]) || avail < kIcmpHeaderLen
                                      ? avail
                                      : kIcmpHeaderLen;
            if (need > in_head) return DropReason::kSplitHeaders;
            if constexpr (kFillKey) {
                key->l4_src = l4[0];  // type
                key->l4_dst = l4[1];  // code
            }
            return std::nullopt;
        }
        case IPPROTO_SCTP:
            if (avail < kSctpCommonHeaderLen) return DropReason::kBadL4;
            if (in_head < kSctpCommonHeaderLen) return DropReason::kSplitHeaders;
            if constexpr (kFillKey) {
                key->l4_src = load_be16(l4);
                key->l4_dst = load_be16(l4 + 2);
            }
            return std::nullopt;
        default:
            return std::nullopt;
    }
}

}  // namespace parse_detail

/// parse_frame (packet_parse.h), with the key filled only when kFillKey; without it, key is not
/// touched (it may be null) and everything else (the checks, their order, the reasons, the
/// layout) is the same. Context: fast path.
template <bool kFillKey>
inline std::optional<DropReason> parse_frame_as(const uint8_t* data, uint32_t head, uint32_t len,
                                                uint16_t in_port, FlowKey* key,
                                                PacketLayout* layout) {
    if constexpr (kFillKey) {
        std::memset(key, 0, sizeof(*key));
        key->in_port = in_port;
        key->vlan = kNoVlan;
    }
    using namespace parse_detail;
    std::memset(layout, 0, sizeof(*layout));
    uint16_t first_vid = kNoVlan;
    if (head > len) head = len;  // a caller's inconsistency must not make us read past len
    if (len < kEthHeaderLen) return DropReason::kRunt;
    if (head < kEthHeaderLen) return DropReason::kSplitHeaders;
    if constexpr (kFillKey) {
        std::memcpy(key->eth_dst, data, 6);
        std::memcpy(key->eth_src, data + 6, 6);
    }

    // off: offset of the current ethertype field.
    uint32_t off = 12;
    uint16_t ethertype = load_be16(data + off);
    uint32_t tags = 0;
    while (tags < kMaxVlanTags && is_vlan_tpid(ethertype)) {
        // The tag is TPID + TCI; the inner ethertype must follow it.
        if (len - off < kVlanTagLen + 2) return DropReason::kBadVlan;
        if (head - off < kVlanTagLen + 2) return DropReason::kSplitHeaders;
        if (tags == 0) first_vid = load_be16(data + off + 2) & 0x0fffu;
        off += kVlanTagLen;
        ethertype = load_be16(data + off);
        ++tags;
    }
    // A priority tag only carries a priority: the frame behind it is untagged, so a VLAN tag
    // there is an attempt to choose a VLAN past the port's (an access port would take the
    // frame into its own VLAN and a trunk whose native VLAN that is would send it out with the
    // inner tag, in another VLAN). A tag beyond the ones read would hide the frame's real
    // protocol from the rules and connection tracking.
    if (tags == 2 && first_vid == 0) return DropReason::kVlanAfterPriorityTag;
    if (is_vlan_tpid(ethertype)) return DropReason::kVlanTooDeep;
    const uint32_t l3 = off + 2;
    if constexpr (kFillKey) {
        key->vlan = first_vid;
        key->ethertype = ethertype;
    }
    layout->vlan_tags = static_cast<uint8_t>(tags);
    layout->l3_offset = static_cast<uint16_t>(l3);
    layout->segmented = head < len ? 1 : 0;

    L4Span span;
    uint8_t proto = 0;
    std::optional<DropReason> drop;
    if (ethertype == kEtherTypeIpv4) {
        drop = parse_ipv4<kFillKey>(data, l3, head, len, key, &proto, &span);
    } else if (ethertype == kEtherTypeIpv6) {
        drop = parse_ipv6<kFillKey>(data, l3, head, len, key, &proto, &span);
    } else {
        return std::nullopt;
    }
    if (drop) return drop;
    layout->fragment = span.fragment ? 1 : 0;
    if (!span.present) return std::nullopt;
    // Fits: IPv4 puts it below l3 + 60, IPv6 below l3 + 40 + 8 * 2048 (eight maximal ext headers).
    layout->l4_offset = static_cast<uint16_t>(span.begin);
    return parse_l4<kFillKey>(data, span, head, proto, key);
}

}  // namespace ferry
