// Whether a packet arrived intact, checked before conntrack lets it change anything: the IPv4
// header checksum, the TCP, UDP, ICMP and ICMPv6 checksums, and a UDP length that fits the
// datagram. Linux's conntrack does the same with nf_conntrack_checksum=1 (its default): a packet
// the endpoint will discard must not end a connection (a forged RST) nor open one (a forged SYN
// from inside). Header-only and free of DPDK: the caller decodes the mbuf's receive offload flags
// into a CtRxCsum, and only what the port left unknown is summed in software. A frame in several
// segments (layout.segmented) has its transport checksum summed across them by the caller
// (ct_l4_checksum says over which bytes; dataplane/conntrack/ct_checksum_mbuf.h) and passed in
// as the L4 part of CtRxCsum: here only the first segment is read. Context: fast path.
#pragma once

#include <cstdint>
#include <cstring>

#include "dataplane/flow_key.h"
#include "dataplane/ip_proto.h"
#include "dataplane/l4_payload.h"

namespace ferry {

/// What the receiving port's offload said about a packet's checksums: two 2-bit fields, the IP
/// header's and the transport's, as DPDK's RTE_MBUF_F_RX_{IP,L4}_CKSUM_* name them. kNone: the
/// checksum field is not filled in but the data is intact (a virtio guest left it to offload),
/// so it must not be verified. Unknown (0) is what a port without offload reports.
enum CtRxCsum : uint8_t {
    kCsumUnknown = 0,
    kCsumIpGood = 1,
    kCsumIpBad = 2,
    kCsumIpNone = 3,
    kCsumIpMask = 3,
    kCsumL4Good = 1 << 2,
    kCsumL4Bad = 2 << 2,
    kCsumL4None = 3 << 2,
    kCsumL4Mask = 3 << 2,
};

namespace csum_detail {

/// One's-complement sum of n bytes as native-order 16-bit words (RFC 1071: the byte order of
/// the words does not change whether a sum verifies, as long as all are summed alike).
/// Context: fast path. @return the unfolded sum added to acc
inline uint64_t add_bytes(const uint8_t* p, uint32_t n, uint64_t acc) {
    while (n >= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        acc += (v & 0xffffffffu) + (v >> 32);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t v;
        std::memcpy(&v, p, 4);
        acc += v;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t v;
        std::memcpy(&v, p, 2);
        acc += v;
        p += 2;
        n -= 2;
    }
    if (n == 1) {
        uint16_t v = 0;
        std::memcpy(&v, p, 1);  // the odd byte is the high half of a word padded with zero
        acc += v;
    }
    return acc;
}

/// acc folded to 16 bits (end-around carries added back). Context: fast path.
inline uint64_t fold16(uint64_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return acc;
}

/// Whether a sum over data that includes its own checksum field verifies. Context: fast path.
inline bool folds_to_ones(uint64_t acc) {
    return fold16(acc) == 0xffff;
}

/// add_bytes of one piece of data summed in pieces (the segments of a frame): odd says the
/// piece starts at an odd offset of the data, so its bytes sit in the other halves of the
/// words. Its sum is folded before it is byte-swapped (RFC 1071's byte-order independence), so
/// no carry is lost. Context: fast path. @return the unfolded sum added to acc
inline uint64_t add_piece(const uint8_t* p, uint32_t n, bool odd, uint64_t acc) {
    const uint64_t s = add_bytes(p, n, 0);
    if (!odd) return acc + s;
    const auto f = static_cast<uint16_t>(fold16(s));
    return acc + static_cast<uint16_t>(f << 8 | f >> 8);
}

/// The TCP/UDP/ICMPv6 pseudo-header of the packet (addresses, protocol, upper-layer length).
/// Context: fast path. @return its unfolded sum
inline uint64_t pseudo_header(const uint8_t* frame, uint32_t l3, uint8_t version, uint8_t proto,
                              uint32_t l4_len) {
    uint64_t acc = version == 4 ? add_bytes(frame + l3 + 12, 8, 0)   // IPv4 source, destination
                                : add_bytes(frame + l3 + 8, 32, 0);  // IPv6 source, destination
    const uint8_t tail[4] = {0, proto, static_cast<uint8_t>(l4_len >> 8),
                             static_cast<uint8_t>(l4_len)};
    return add_bytes(tail, 4, acc);
}

/// Whether the IP packet is a fragment of a larger datagram (first fragment included): its
/// transport checksum covers bytes this packet does not hold. Context: fast path.
inline bool is_fragment(const uint8_t* frame, const PacketLayout& l, const FlowKey& k) {
    const uint32_t l3 = l.l3_offset;
    if (k.ip_version == 4) return (load_be16(frame + l3 + 6) & 0x3fffu) != 0;  // MF or offset
    // IPv6: walk the extension headers the parser walked, looking for a fragment header.
    uint8_t next = frame[l3 + 6];
    uint32_t off = l3 + 40;
    while (off < l.l4_offset) {
        if (next == 44) return true;
        const uint8_t* h = frame + off;
        next = h[0];
        off += (uint32_t{h[1]} + 1) * 8;
    }
    return false;
}

/// Whether IPv4 options (the `len` bytes at opt) carry a loose or strict source route, or are
/// malformed. Context: fast path (only for headers with options, which are rare).
inline bool source_routed(const uint8_t* opt, uint32_t len) {
    constexpr uint8_t kEol = 0, kNop = 1, kLsrr = 131, kSsrr = 137;
    for (uint32_t i = 0; i < len;) {
        if (opt[i] == kEol) break;
        if (opt[i] == kNop) {
            ++i;
            continue;
        }
        if (opt[i] == kLsrr || opt[i] == kSsrr) return true;
        if (len - i < 2 || opt[i + 1] < 2 || opt[i + 1] > len - i) return true;  // malformed
        i += opt[i + 1];
    }
    return false;
}

}  // namespace csum_detail

/// The bytes a packet's transport checksum covers, for a verifier that sums them where they
/// lie: frame[offset, offset + length) with the pseudo-header's sum as the start.
struct CtL4Checksum {
    uint32_t offset;  // the transport header, in the frame
    uint32_t length;  // to the end of the IP packet (Ethernet padding excluded)
    uint64_t pseudo;  // unfolded sum of the pseudo-header; 0 for ICMPv4, which has none
};

/// Whether software has a transport checksum of the packet to verify, and over which bytes.
/// Reads only headers (the parser put them within the first segment). Context: fast path.
/// @param len  the whole frame's length (all segments)
/// @return true with *c filled; false when there is none: not TCP, UDP, ICMP or ICMPv6, a
///         fragment (the checksum covers the whole datagram), a zero UDP checksum ("none"), or
///         a transport header too short to hold one (the protocol's own parsing refuses it)
inline bool ct_l4_checksum(const uint8_t* frame, uint32_t len, const PacketLayout& l,
                           const FlowKey& k, CtL4Checksum* c) {
    using namespace csum_detail;
    if (k.ip_version != 4 && k.ip_version != 6) return false;
    const uint32_t l4 = l.l4_offset;
    if (l4 == 0) return false;  // a later fragment: no transport header here
    const uint32_t end = ip_end(frame, len, l, k);
    if (end <= l4) return false;
    const uint32_t l4_len = end - l4;
    const uint8_t* p = frame + l4;
    switch (k.ip_proto) {
        case IPPROTO_TCP:
            if (l4_len < 20) return false;
            break;
        case IPPROTO_UDP:
            // A zero checksum is "none": IPv4 allows it, and Linux's conntrack accepts it for
            // IPv6 as well (the receiving stack decides).
            if (l4_len < 8 || load_be16(p + 6) == 0) return false;
            break;
        case IPPROTO_ICMP:
        case IPPROTO_ICMPV6:
            if (l4_len < 4) return false;
            break;
        default:
            return false;  // no transport checksum conntrack knows
    }
    if (is_fragment(frame, l, k)) return false;
    c->offset = l4;
    c->length = l4_len;
    c->pseudo = k.ip_proto == IPPROTO_ICMP
                    ? 0
                    : pseudo_header(frame, l.l3_offset, k.ip_version, k.ip_proto, l4_len);
    return true;
}

/// Whether the packet's checksums are right and its UDP length fits, as far as the offload
/// flags `rx` leave to software, and it carries no IPv4 source route. A fragment's transport
/// checksum and UDP length are not checked (they cover the whole datagram). Packets the parser
/// accepted only: the headers are within the first segment at frame. Context: fast path.
/// @param len  the whole frame's length; when l.segmented, rx must carry the transport
///             checksum's verdict (a packet whose transport checksum is left unknown is invalid)
/// @return false when conntrack must treat the packet as invalid
inline bool ct_packet_intact(const uint8_t* frame, uint32_t len, const PacketLayout& l,
                             const FlowKey& k, uint8_t rx) {
    using namespace csum_detail;
    const uint32_t l3 = l.l3_offset;
    if (k.ip_version == 4) {
        const uint8_t ip = rx & kCsumIpMask;
        if (ip == kCsumIpBad) return false;
        const uint32_t ihl = uint32_t{frame[l3] & 0x0fu} * 4;
        if (l3 + ihl > len) return false;
        if (ip == kCsumUnknown && !folds_to_ones(add_bytes(frame + l3, ihl, 0))) return false;
        // A source-routed packet names in its header a hop, not the endpoint: tracking it would
        // make a router an endpoint. Linux routers discard it (accept_source_route=0), and so
        // does a malformed option list (ip_options_compile).
        if (ihl > 20 && source_routed(frame + l3 + 20, ihl - 20)) return false;
    } else if (k.ip_version != 6) {
        return true;
    }
    const uint32_t l4 = l.l4_offset;
    if (l4 == 0) return true;  // a later fragment: no transport header here
    const uint32_t end = ip_end(frame, len, l, k);
    if (end <= l4) return true;  // truncated: the protocol's own parsing refuses it
    const uint32_t l4_len = end - l4;
    const uint8_t* p = frame + l4;
    const bool udp = k.ip_proto == IPPROTO_UDP;
    // Linux: a UDP length beyond the datagram (or below the header) is malformed. A first
    // fragment holds part of the datagram only, and its UDP length and transport checksum cover
    // the whole (Linux checks both after nf_defrag has reassembled it).
    if (udp && l4_len >= 8 && (load_be16(p + 4) > l4_len || load_be16(p + 4) < 8) &&
        !is_fragment(frame, l, k))
        return false;
    const uint8_t l4rx = rx & kCsumL4Mask;
    if (l4rx == kCsumL4Bad) return false;
    if (l4rx != kCsumUnknown) return true;
    CtL4Checksum c;
    if (!ct_l4_checksum(frame, len, l, k, &c)) return true;
    // The bytes go on in segments not given here: the caller should have summed them.
    if (l.segmented) return false;
    return folds_to_ones(add_bytes(frame + c.offset, c.length, c.pseudo));
}

}  // namespace ferry
