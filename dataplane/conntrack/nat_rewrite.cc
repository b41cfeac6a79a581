// NAT rewriting of a frame in place: addresses, ports and ICMP echo identifiers, with every
// checksum that covers them patched incrementally (RFC 1624 eqn 3, HC' = ~(~HC + ~m + m')) so the
// cost does not depend on the payload length and a first fragment keeps a checksum that is right
// for the whole datagram.
//
// Every function validates all the bytes it will touch before writing any: a false return leaves
// the frame as it was. Lengths are checked against the end of the IP packet (total length /
// payload length), not the frame, so Ethernet padding is never taken for header bytes, and
// checksum arithmetic never covers bytes outside the message it protects.
#include "dataplane/conntrack/nat_rewrite.h"

#include <cstring>

#include "dataplane/byte_order.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/ip_proto.h"

namespace ferry {
namespace {

constexpr uint32_t kIpv4MinHeaderLen = 20;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kIpv4ChecksumAt = 10;
constexpr uint32_t kIpv4SrcAt = 12;
constexpr uint32_t kIpv4DstAt = 16;
constexpr uint32_t kIpv6SrcAt = 8;
constexpr uint32_t kIpv6DstAt = 24;

constexpr uint32_t kTcpChecksumAt = 16;
constexpr uint32_t kUdpChecksumAt = 6;
constexpr uint32_t kUdpHeaderLen = 8;
constexpr uint32_t kIcmpChecksumAt = 2;
constexpr uint32_t kIcmpEchoIdAt = 4;
// Type, code, checksum and one 32-bit word (echo: identifier + sequence; errors: unused, MTU or
// pointer). An error's quoted packet starts right after it.
constexpr uint32_t kIcmpHeaderLen = 8;
// RFC 792 guarantees the quoted IP header plus 8 bytes of its payload: enough for the ports.
constexpr uint32_t kQuotedL4Len = 8;
constexpr uint8_t kIpv6FragmentHeader = 44;
constexpr uint32_t kIpv6FragmentHeaderLen = 8;

constexpr uint8_t kIcmpDestUnreachable = 3;
constexpr uint8_t kIcmpTimeExceeded = 11;
constexpr uint8_t kIcmpParamProblem = 12;
constexpr uint8_t kIcmpv6DestUnreachable = 1;
constexpr uint8_t kIcmpv6PacketTooBig = 2;
constexpr uint8_t kIcmpv6TimeExceeded = 3;
constexpr uint8_t kIcmpv6ParamProblem = 4;

/// Adds the one's-complement change of one 16-bit word (~m + m') to *acc. An unchanged word adds
/// nothing: adding ~m + m = 0xffff (negative zero) could flip a checksum between its two zero
/// representations, and a field that is not translated must not change the packet.
/// Context: fast path.
inline void add_word_change(uint32_t* acc, uint16_t old_word, uint16_t new_word) {
    if (old_word != new_word) *acc += static_cast<uint16_t>(~old_word) + uint32_t{new_word};
}

/// add_word_change over n bytes (n even) starting at a 16-bit boundary of the checksummed data.
/// Context: fast path.
inline void add_bytes_change(uint32_t* acc, const uint8_t* old_bytes, const uint8_t* new_bytes,
                             uint32_t n) {
    for (uint32_t i = 0; i < n; i += 2) {
        add_word_change(acc, load_be16(old_bytes + i), load_be16(new_bytes + i));
    }
}

/// RFC 1624 eqn 3: the checksum after the changes summed in delta. Context: fast path.
/// @param delta at most a few dozen words' changes (the sum then fits and two folds suffice)
/// @return the new checksum; equals hc when delta is 0
inline uint16_t checksum_apply(uint16_t hc, uint32_t delta) {
    uint32_t s = static_cast<uint16_t>(~hc) + delta;
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return static_cast<uint16_t>(~s);
}

/// The IP header of a packet, validated against the frame.
struct IpSpan {
    uint32_t l3;          // offset of the IP header
    uint32_t header_len;  // IPv4: IHL * 4; IPv6: the fixed 40 bytes
    uint32_t end;         // one past the IP packet's last byte (Ethernet padding excluded)
    uint32_t addr_len;    // 4 or 16
    uint32_t src_at;      // address offsets within the header
    uint32_t dst_at;
};

/// Validates the IP header of the given version at frame[l3]: version nibble, header length and
/// the packet length against the frame. Context: fast path.
/// @return true with *span filled; false if the header is truncated or inconsistent
inline bool ip_span(const uint8_t* frame, uint32_t len, uint32_t l3, uint8_t version,
                    IpSpan* span) {
    if (l3 > len) return false;
    const uint32_t avail = len - l3;
    const uint8_t* ip = frame + l3;
    if (version == 4) {
        if (avail < kIpv4MinHeaderLen || (ip[0] >> 4) != 4) return false;
        const uint32_t header_len = (ip[0] & 0x0fu) * 4;
        const uint32_t total_len = load_be16(ip + 2);
        if (header_len < kIpv4MinHeaderLen || total_len < header_len || total_len > avail) {
            return false;
        }
        *span = {l3, header_len, l3 + total_len, 4, kIpv4SrcAt, kIpv4DstAt};
        return true;
    }
    if (version == 6) {
        if (avail < kIpv6HeaderLen || (ip[0] >> 4) != 6) return false;
        const uint32_t payload_len = load_be16(ip + 4);
        if (payload_len > avail - kIpv6HeaderLen) return false;
        *span = {l3, kIpv6HeaderLen, l3 + kIpv6HeaderLen + payload_len, 16, kIpv6SrcAt, kIpv6DstAt};
        return true;
    }
    return false;
}

/// The transport fields nat_rewrite touches, decided before anything is written.
struct L4Fields {
    uint32_t at = 0;        // offset of the transport header; 0: nothing to touch
    uint32_t csum_at = 0;   // offset of the checksum within it
    bool has_csum = false;  // a checksum to maintain (not a zero UDP checksum)
    bool pseudo = false;    // the checksum covers the pseudo-header addresses
    bool ports = false;     // source port at 0, destination port at 2
    bool echo_id = false;   // echo identifier at 4
    bool udp = false;       // a computed 0 is sent as 0xffff (0 means "no checksum")
};

/// Decides which transport fields of a packet change and checks they lie inside the IP packet.
/// Context: fast path.
/// @param l4 layout.l4_offset: 0 for a non-first fragment, which carries no transport header
/// @return true with *f filled (f->at == 0 when no transport field is touched); false if the
///         transport header is outside the IP packet or too short for the fields to rewrite
inline bool plan_l4(const uint8_t* frame, const IpSpan& ip, uint32_t l4, uint8_t proto,
                    L4Fields* f) {
    if (l4 == 0) return true;
    if (l4 < ip.l3 + ip.header_len || l4 > ip.end) return false;
    const uint32_t avail = ip.end - l4;
    const uint8_t* p = frame + l4;
    switch (proto) {
        case IPPROTO_TCP:
            if (avail < kTcpChecksumAt + 2) return false;
            f->csum_at = kTcpChecksumAt;
            f->has_csum = f->pseudo = f->ports = true;
            break;
        case IPPROTO_UDP:
            if (avail < kUdpHeaderLen) return false;
            f->csum_at = kUdpChecksumAt;
            // Zero means "no checksum" (IPv4; IPv6 tunnels under RFC 6935). Patching it would turn
            // it into a wrong checksum, so it stays zero, as Linux NAT does.
            f->has_csum = load_be16(p + kUdpChecksumAt) != 0;
            f->pseudo = f->ports = f->udp = true;
            break;
        case IPPROTO_ICMP:
            // No pseudo-header in ICMPv4: only the echo identifier affects the checksum.
            if (avail == 0 || (p[0] != kIcmpEchoRequest && p[0] != kIcmpEchoReply)) return true;
            if (avail < kIcmpHeaderLen) return false;
            f->csum_at = kIcmpChecksumAt;
            f->has_csum = f->echo_id = true;
            break;
        case IPPROTO_ICMPV6:
            // Every ICMPv6 checksum covers the pseudo-header, so any message follows the
            // address change (an error forwarded untranslated still arrives intact).
            if (avail < kIcmpChecksumAt + 2) return false;
            f->csum_at = kIcmpChecksumAt;
            f->has_csum = f->pseudo = true;
            if (p[0] == kIcmpv6EchoRequest || p[0] == kIcmpv6EchoReply) {
                if (avail < kIcmpHeaderLen) return false;
                f->echo_id = true;
            }
            break;
        default:
            return true;  // SCTP's CRC32c and others do not cover the addresses
    }
    f->at = l4;
    return true;
}

/// True for the ICMP/ICMPv6 error types that quote the packet that caused them. Context: fast path.
inline bool is_icmp_error(uint8_t type, bool v4) {
    if (v4) {
        return type == kIcmpDestUnreachable || type == kIcmpTimeExceeded ||
               type == kIcmpParamProblem;
    }
    return type == kIcmpv6DestUnreachable || type == kIcmpv6PacketTooBig ||
           type == kIcmpv6TimeExceeded || type == kIcmpv6ParamProblem;
}

/// True for an echo request or reply of the given ICMP version. Context: fast path.
inline bool is_icmp_echo(uint8_t type, bool v4) {
    return v4 ? type == kIcmpEchoRequest || type == kIcmpEchoReply
              : type == kIcmpv6EchoRequest || type == kIcmpv6EchoReply;
}

/// Where an ICMP error and the packet it quotes lie in the frame.
struct IcmpErrorQuote {
    IpSpan outer;
    uint32_t icmp;        // offset of the ICMP header
    uint32_t ip;          // offset of the quoted IP header (icmp + 8)
    uint32_t header_len;  // of the quoted IP header
    uint32_t l4;          // offset of the quoted transport header; 8 bytes lie within outer.end
    uint8_t proto;        // quoted transport protocol: TCP, UDP or the ICMP of the outer version
};

/// Recognises an ICMP/ICMPv6 error quoting a TCP, UDP or ICMP echo packet of the same IP version
/// and checks that everything the NAT reads or writes lies within the outer IP packet.
/// Context: fast path.
/// @return true with *q filled; false when the packet is not such an error or is too short
inline bool find_icmp_error_quote(const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                                  const FlowKey& key, IcmpErrorQuote* q) {
    if (!ip_span(frame, len, layout.l3_offset, key.ip_version, &q->outer)) return false;
    const bool v4 = key.ip_version == 4;
    const uint8_t icmp_proto = icmp_proto_of(key.ip_version);
    if (key.ip_proto != icmp_proto) return false;
    const uint32_t icmp = layout.l4_offset;
    const uint32_t end = q->outer.end;
    if (icmp == 0 || icmp < q->outer.l3 + q->outer.header_len || icmp > end ||
        end - icmp < kIcmpHeaderLen || !is_icmp_error(frame[icmp], v4)) {
        return false;
    }
    const uint32_t ip = icmp + kIcmpHeaderLen;
    const uint32_t avail = end - ip;
    const uint8_t* quoted = frame + ip;
    uint32_t header_len;
    uint8_t proto;
    if (v4) {
        if (avail < kIpv4MinHeaderLen || (quoted[0] >> 4) != 4) return false;
        header_len = (quoted[0] & 0x0fu) * 4;
        // A non-first fragment quotes no transport header: its ports are unknown.
        if (header_len < kIpv4MinHeaderLen || (load_be16(quoted + 6) & 0x1fffu) != 0) {
            return false;
        }
        proto = quoted[9];
    } else {
        // Extension headers are not walked but for a fragment header: the NAT'ed flows it serves
        // quote TCP/UDP/ICMPv6 right after the fixed header, or a first fragment of theirs (a
        // Packet Too Big about a fragmented datagram), and anything else is refused rather than
        // half translated.
        if (avail < kIpv6HeaderLen || (quoted[0] >> 4) != 6) return false;
        header_len = kIpv6HeaderLen;
        proto = quoted[6];
        if (proto == kIpv6FragmentHeader) {
            if (avail < kIpv6HeaderLen + kIpv6FragmentHeaderLen) return false;
            const uint8_t* frag = quoted + kIpv6HeaderLen;
            if ((load_be16(frag + 2) & 0xfff8u) != 0) return false;  // not the first: no ports
            header_len += kIpv6FragmentHeaderLen;
            proto = frag[0];
        }
    }
    if (avail < header_len + kQuotedL4Len) return false;
    const uint32_t l4 = ip + header_len;
    if (proto == icmp_proto) {
        if (!is_icmp_echo(frame[l4], v4)) return false;  // an error quoting an error: not ours
    } else if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return false;
    }
    q->icmp = icmp;
    q->ip = ip;
    q->header_len = header_len;
    q->l4 = l4;
    q->proto = proto;
    return true;
}

}  // namespace

bool nat_rewrite(uint8_t* frame, uint32_t len, const PacketLayout& layout, const FlowKey& key,
                 const NatTarget& to) {
    IpSpan ip;
    if (!ip_span(frame, len, layout.l3_offset, key.ip_version, &ip)) return false;
    L4Fields f;
    if (!plan_l4(frame, ip, layout.l4_offset, key.ip_proto, &f)) return false;

    // Everything is validated: from here on only writes, so a false return never half-rewrites.
    uint8_t* iph = frame + ip.l3;
    uint32_t addr_delta = 0;
    add_bytes_change(&addr_delta, iph + ip.src_at, to.src, ip.addr_len);
    add_bytes_change(&addr_delta, iph + ip.dst_at, to.dst, ip.addr_len);
    // A zero delta does not mean "unchanged" (0xffff -> 0x0000 adds ~0xffff + 0 = 0): the
    // addresses are always copied, and only the checksum update is skipped on a zero delta.
    std::memcpy(iph + ip.src_at, to.src, ip.addr_len);
    std::memcpy(iph + ip.dst_at, to.dst, ip.addr_len);
    if (key.ip_version == 4 && addr_delta != 0) {
        store_be16(iph + kIpv4ChecksumAt,
                   checksum_apply(load_be16(iph + kIpv4ChecksumAt), addr_delta));
    }
    if (f.at == 0) return true;

    uint8_t* l4 = frame + f.at;
    uint32_t l4_delta = f.pseudo ? addr_delta : 0;
    if (f.ports) {
        add_word_change(&l4_delta, load_be16(l4), to.sport);
        add_word_change(&l4_delta, load_be16(l4 + 2), to.dport);
        store_be16(l4, to.sport);
        store_be16(l4 + 2, to.dport);
    }
    if (f.echo_id) {
        add_word_change(&l4_delta, load_be16(l4 + kIcmpEchoIdAt), to.sport);
        store_be16(l4 + kIcmpEchoIdAt, to.sport);
    }
    if (f.has_csum && l4_delta != 0) {
        uint16_t csum = checksum_apply(load_be16(l4 + f.csum_at), l4_delta);
        if (f.udp && csum == 0) csum = 0xffff;
        store_be16(l4 + f.csum_at, csum);
    }
    return true;
}

bool nat_rewrite_icmp_error(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                            const FlowKey& key, const uint8_t* outer_dst, const NatTarget& inner) {
    IcmpErrorQuote q;
    if (!find_icmp_error_quote(frame, len, layout, key, &q)) return false;
    const bool v4 = key.ip_version == 4;
    const uint32_t addr_len = q.outer.addr_len;

    // All deltas are taken from the old bytes before any write. Every changed word lies inside
    // the ICMP message at an even offset from its start, so one incremental update of the ICMP
    // checksum covers them all: no pass over the (possibly long) quoted payload.
    uint8_t* outer = frame + q.outer.l3;
    uint32_t outer_delta = 0;
    add_bytes_change(&outer_delta, outer + q.outer.dst_at, outer_dst, addr_len);
    // ICMPv6 covers the outer pseudo-header; ICMPv4 does not.
    uint32_t icmp_delta = v4 ? 0 : outer_delta;

    uint8_t* quoted = frame + q.ip;
    uint32_t quoted_delta = 0;
    add_bytes_change(&quoted_delta, quoted + q.outer.src_at, inner.src, addr_len);
    add_bytes_change(&quoted_delta, quoted + q.outer.dst_at, inner.dst, addr_len);
    icmp_delta += quoted_delta;
    uint16_t quoted_csum = 0;
    if (v4) {
        // The quoted header checksum is itself part of the ICMP message: its change counts too.
        const uint16_t old_csum = load_be16(quoted + kIpv4ChecksumAt);
        quoted_csum = checksum_apply(old_csum, quoted_delta);
        add_word_change(&icmp_delta, old_csum, quoted_csum);
    }

    uint8_t* l4 = frame + q.l4;
    const bool echo = q.proto == IPPROTO_ICMP || q.proto == IPPROTO_ICMPV6;
    uint32_t port_delta = 0;
    if (echo) {
        add_word_change(&port_delta, load_be16(l4 + kIcmpEchoIdAt), inner.sport);
    } else {
        add_word_change(&port_delta, load_be16(l4), inner.sport);
        add_word_change(&port_delta, load_be16(l4 + 2), inner.dport);
    }
    icmp_delta += port_delta;
    // The quoted packet's own checksum, when the quote holds it, goes back to what its sender
    // computed (as Linux does): it covers the ports, and the addresses through the
    // pseudo-header (not for ICMPv4). A zero UDP checksum means none and stays zero.
    uint32_t l4_csum_at = 0;
    if (q.proto == IPPROTO_UDP) {
        l4_csum_at = q.l4 + kUdpChecksumAt;
    } else if (q.proto == IPPROTO_TCP) {
        if (q.l4 + kTcpChecksumAt + 2 <= q.outer.end) l4_csum_at = q.l4 + kTcpChecksumAt;
    } else {
        l4_csum_at = q.l4 + kIcmpChecksumAt;
    }
    uint16_t l4_csum = 0;
    if (l4_csum_at != 0) {
        const uint16_t old_l4 = load_be16(frame + l4_csum_at);
        if (q.proto == IPPROTO_UDP && old_l4 == 0) {
            l4_csum_at = 0;
        } else {
            l4_csum =
                checksum_apply(old_l4, port_delta + (q.proto == IPPROTO_ICMP ? 0 : quoted_delta));
            if (q.proto == IPPROTO_UDP && l4_csum == 0) l4_csum = 0xffff;
            add_word_change(&icmp_delta, old_l4, l4_csum);
        }
    }

    // As in nat_rewrite, a zero delta may hide a change (0xffff -> 0x0000): copy regardless.
    std::memcpy(outer + q.outer.dst_at, outer_dst, addr_len);
    if (v4 && outer_delta != 0) {
        store_be16(outer + kIpv4ChecksumAt,
                   checksum_apply(load_be16(outer + kIpv4ChecksumAt), outer_delta));
    }
    std::memcpy(quoted + q.outer.src_at, inner.src, addr_len);
    std::memcpy(quoted + q.outer.dst_at, inner.dst, addr_len);
    if (v4) store_be16(quoted + kIpv4ChecksumAt, quoted_csum);
    if (echo) {
        store_be16(l4 + kIcmpEchoIdAt, inner.sport);
    } else {
        store_be16(l4, inner.sport);
        store_be16(l4 + 2, inner.dport);
    }
    if (l4_csum_at != 0) store_be16(frame + l4_csum_at, l4_csum);
    if (icmp_delta != 0) {
        uint8_t* icmp = frame + q.icmp;
        store_be16(icmp + kIcmpChecksumAt,
                   checksum_apply(load_be16(icmp + kIcmpChecksumAt), icmp_delta));
    }
    return true;
}

bool icmp_error_inner_tuple(const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                            const FlowKey& key, uint16_t zone, CtTuple* inner) {
    std::memset(inner, 0, sizeof(*inner));
    IcmpErrorQuote q;
    if (!find_icmp_error_quote(frame, len, layout, key, &q)) return false;
    const uint8_t* quoted = frame + q.ip;
    const uint8_t* l4 = frame + q.l4;
    std::memcpy(inner->src, quoted + q.outer.src_at, q.outer.addr_len);
    std::memcpy(inner->dst, quoted + q.outer.dst_at, q.outer.addr_len);
    if (q.proto == IPPROTO_ICMP || q.proto == IPPROTO_ICMPV6) {
        // Echo tuples carry the identifier as both ports (see CtTuple).
        inner->sport = inner->dport = load_be16(l4 + kIcmpEchoIdAt);
    } else {
        inner->sport = load_be16(l4);
        inner->dport = load_be16(l4 + 2);
    }
    inner->zone = zone;
    inner->proto = q.proto;
    inner->ip_version = key.ip_version;
    return true;
}

}  // namespace ferry
