// Frames for the conntrack and NAT unit tests, built by hand: Ethernet (optionally VLAN-tagged),
// IPv4 (optionally with options or as a fragment) or IPv6, then TCP, UDP, ICMP/ICMPv6 or any other
// protocol, every checksum computed from scratch. The reference checksums here are recomputed in
// full, never updated incrementally, so they can judge the incremental updates of nat_rewrite and
// ConntrackShard. Frames are vectors of exactly their length, so a sanitizer build catches any
// access past the end. Test context only: helpers may report through gtest.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/packet_parse.h"

namespace ferry::test_frames {

using Bytes = std::vector<uint8_t>;
using Addr = std::array<uint8_t, 16>;  // IPv4 in the first 4 bytes, the rest zero

inline constexpr uint8_t kIcmp = 1;
inline constexpr uint8_t kTcp = 6;
inline constexpr uint8_t kUdp = 17;
inline constexpr uint8_t kGre = 47;
inline constexpr uint8_t kIcmpv6 = 58;

inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;

inline constexpr uint16_t kInPort = 1;  // the ferry port every test frame arrives on

// ---- Addresses --------------------------------------------------------------------------------

inline constexpr Addr kClient4 = {10, 0, 0, 1};
inline constexpr Addr kClient4b = {10, 0, 0, 2};
inline constexpr Addr kPublic4 = {203, 0, 113, 5};
inline constexpr Addr kPublic4Last = {203, 0, 113, 8};
inline constexpr Addr kServer4 = {198, 51, 100, 7};
inline constexpr Addr kBackend4 = {172, 16, 0, 9};
inline constexpr Addr kRouter4 = {192, 0, 2, 254};
inline constexpr Addr kClient6 = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
inline constexpr Addr kPublic6 = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05};
// kPublic6 .. kPublic6Last spans far more than 2^32 addresses (the span saturates).
inline constexpr Addr kPublic6Last = {0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
inline constexpr Addr kServer6 = {0x20, 0x01, 0x0d, 0xb8, 0,    1,    0, 0,
                                  0,    0,    0,    0,    0xca, 0xfe, 0, 0x07};
inline constexpr Addr kBackend6 = {0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09};
inline constexpr Addr kRouter6 = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe};

// ---- Byte helpers and the reference checksum --------------------------------------------------

/// Appends v big-endian.
inline void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

/// Appends v big-endian.
inline void put32(Bytes& b, uint32_t v) {
    put16(b, static_cast<uint16_t>(v >> 16));
    put16(b, static_cast<uint16_t>(v));
}

/// The big-endian 16-bit word at byte offset at.
inline uint16_t get16(const Bytes& b, size_t at) {
    return static_cast<uint16_t>(b[at] << 8 | b[at + 1]);
}

/// Overwrites the big-endian 16-bit word at byte offset at.
inline void set16(Bytes& b, size_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v >> 8);
    b[at + 1] = static_cast<uint8_t>(v);
}

/// a followed by b.
inline Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

/// n bytes counting up from seed: a payload whose every byte is known.
inline Bytes pattern(size_t n, uint8_t seed = 0xa0) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i);
    return b;
}

/// One's-complement sum of n bytes, big-endian words, an odd last byte padded with zero.
inline uint64_t sum_bytes(const uint8_t* p, size_t n, uint64_t acc = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint64_t>(p[i] << 8 | p[i + 1]);
    if (n % 2 != 0) acc += static_cast<uint64_t>(p[n - 1]) << 8;
    return acc;
}

/// s folded to 16 bits and complemented: the checksum of what s sums.
inline uint16_t fold_complement(uint64_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(~s);
}

/// Offset of the checksum field in the transport header of proto (ICMP and ICMPv6: 2).
inline size_t checksum_at(uint8_t proto) {
    return proto == kTcp ? 16 : proto == kUdp ? 6 : 2;
}

/// Full checksum of a transport message (its checksum field taken as zero), with the pseudo-header
/// for everything but ICMPv4. UDP's computed 0 is returned as 0xffff, as it is sent.
inline uint16_t l4_checksum(uint8_t version, uint8_t proto, const uint8_t* src, const uint8_t* dst,
                            const uint8_t* l4, size_t n) {
    Bytes msg(l4, l4 + n);
    set16(msg, checksum_at(proto), 0);
    uint64_t s = 0;
    if (proto != kIcmp) {
        const size_t alen = version == 4 ? 4 : 16;
        s = sum_bytes(src, alen, s);
        s = sum_bytes(dst, alen, s);
        s += proto;
        s += n >> 16;
        s += n & 0xffff;
    }
    s = sum_bytes(msg.data(), msg.size(), s);
    const uint16_t c = fold_complement(s);
    return proto == kUdp && c == 0 ? 0xffff : c;
}

/// Full checksum of the IPv4 header at ip (its length from the IHL, its checksum taken as zero).
inline uint16_t ipv4_header_checksum(const uint8_t* ip) {
    const size_t header_len = static_cast<size_t>(ip[0] & 0x0fu) * 4;
    Bytes h(ip, ip + header_len);
    set16(h, 10, 0);
    return fold_complement(sum_bytes(h.data(), h.size()));
}

// ---- Packet builders --------------------------------------------------------------------------

/// A TCP header (no options) with the given sequence numbers and flags, then data; checksum zero.
inline Bytes tcp(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
                 const Bytes& data = {}, uint16_t window = 0xffff) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put32(b, seq);
    put32(b, ack);
    b.push_back(5 << 4);
    b.push_back(flags);
    put16(b, window);
    put16(b, 0);  // checksum
    put16(b, 0);  // urgent
    return cat(b, data);
}

/// A PSH+ACK segment with fixed sequence numbers, for tests where only addresses and ports count.
inline Bytes tcp(uint16_t sport, uint16_t dport, const Bytes& data = pattern(12)) {
    return tcp(sport, dport, 0x12345678, 0x9abcdef0, kPsh | kAck, data);
}

/// A UDP header with its length set, then data; checksum zero.
inline Bytes udp(uint16_t sport, uint16_t dport, const Bytes& data = pattern(9)) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put16(b, static_cast<uint16_t>(8 + data.size()));
    put16(b, 0);
    return cat(b, data);
}

/// ICMP/ICMPv6 header with its second word as two 16-bit halves (echo: identifier, sequence).
inline Bytes icmp(uint8_t type, uint8_t code, uint16_t hi, uint16_t lo,
                  const Bytes& data = pattern(6)) {
    Bytes b = {type, code, 0, 0};
    put16(b, hi);
    put16(b, lo);
    return cat(b, data);
}

struct PacketSpec {
    uint8_t version = 4;
    uint8_t proto = kTcp;
    Addr src{};
    Addr dst{};
    Bytes l4;  // transport header + payload, checksum field zero; its checksum is filled in
    bool udp_no_checksum = false;  // leave a UDP checksum at 0
    bool vlan = false;
    uint16_t ipv4_frag = 0;  // IPv4 flags + fragment offset; a non-zero offset skips the checksum
    size_t ipv4_option_words = 0;
    uint8_t ipv6_next_header = 0;  // 0: proto
};

/// The IP packet of spec, every checksum computed from scratch.
inline Bytes ip_packet(const PacketSpec& s) {
    Bytes l4 = s.l4;
    const bool first = (s.ipv4_frag & 0x1fff) == 0;
    const bool has_checksum =
        s.proto == kTcp || s.proto == kUdp || s.proto == kIcmp || s.proto == kIcmpv6;
    if (first && has_checksum && !(s.proto == kUdp && s.udp_no_checksum)) {
        set16(l4, checksum_at(s.proto),
              l4_checksum(s.version, s.proto, s.src.data(), s.dst.data(), l4.data(), l4.size()));
    }
    Bytes ip;
    if (s.version == 4) {
        const size_t header_len = 20 + 4 * s.ipv4_option_words;
        ip.push_back(static_cast<uint8_t>(0x40 | header_len / 4));
        ip.push_back(0);
        put16(ip, static_cast<uint16_t>(header_len + l4.size()));
        put16(ip, 0x1c46);  // identification
        put16(ip, s.ipv4_frag);
        ip.push_back(64);
        ip.push_back(s.proto);
        put16(ip, 0);
        ip.insert(ip.end(), s.src.begin(), s.src.begin() + 4);
        ip.insert(ip.end(), s.dst.begin(), s.dst.begin() + 4);
        ip.resize(header_len, 0x01);  // NOP options
        set16(ip, 10, ipv4_header_checksum(ip.data()));
    } else {
        put16(ip, 0x6000);
        put16(ip, 0x1234);  // traffic class + flow label
        put16(ip, static_cast<uint16_t>(l4.size()));
        ip.push_back(s.ipv6_next_header != 0 ? s.ipv6_next_header : s.proto);
        ip.push_back(64);
        ip.insert(ip.end(), s.src.begin(), s.src.end());
        ip.insert(ip.end(), s.dst.begin(), s.dst.end());
    }
    return cat(ip, l4);
}

/// An Ethernet frame from 02:00:00:00:00:01 to 02:00:00:00:00:02 carrying payload.
inline Bytes ethernet(uint16_t ethertype, const Bytes& payload) {
    Bytes f = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};
    put16(f, ethertype);
    return cat(f, payload);
}

/// The frame of spec: Ethernet, a VLAN 42 tag when spec.vlan, then ip_packet(spec).
inline Bytes build(const PacketSpec& s) {
    const uint16_t ethertype = s.version == 4 ? 0x0800 : 0x86dd;
    if (!s.vlan) return ethernet(ethertype, ip_packet(s));
    Bytes tagged;
    put16(tagged, 42);  // VLAN id
    put16(tagged, ethertype);
    return ethernet(0x8100, cat(tagged, ip_packet(s)));
}

/// A spec of a plain packet: version, protocol, addresses and transport message; no extras.
inline PacketSpec l4_spec(uint8_t version, uint8_t proto, const Addr& src, const Addr& dst,
                          const Bytes& l4) {
    PacketSpec s;
    s.version = version;
    s.proto = proto;
    s.src = src;
    s.dst = dst;
    s.l4 = l4;
    return s;
}

/// An ICMP error from `from` to `to` quoting the first quote_len bytes of `quoted` (an IP packet).
inline Bytes icmp_error(uint8_t version, uint8_t type, uint8_t code, const Addr& from,
                        const Addr& to, const Bytes& quoted, size_t quote_len) {
    PacketSpec s = l4_spec(
        version, version == 4 ? kIcmp : kIcmpv6, from, to,
        cat(icmp(type, code, 0, 0, {}),
            Bytes(quoted.begin(), quoted.begin() + static_cast<std::ptrdiff_t>(quote_len))));
    return build(s);
}

/// A TCP frame without payload unless data is given.
inline Bytes tcp_frame(const Addr& src, uint16_t sport, const Addr& dst, uint16_t dport,
                       uint32_t seq, uint32_t ack, uint8_t flags, const Bytes& data = {},
                       uint8_t version = 4) {
    return build(l4_spec(version, kTcp, src, dst, tcp(sport, dport, seq, ack, flags, data)));
}

/// A UDP frame with the default 9-byte payload.
inline Bytes udp_frame(const Addr& src, uint16_t sport, const Addr& dst, uint16_t dport,
                       uint8_t version = 4) {
    return build(l4_spec(version, kUdp, src, dst, udp(sport, dport)));
}

/// An echo request (or reply) with identifier id, ICMP or ICMPv6 by version.
inline Bytes echo_frame(bool request, const Addr& src, const Addr& dst, uint16_t id,
                        uint8_t version = 4) {
    const uint8_t type = version == 4 ? (request ? 8 : 0) : (request ? 128 : 129);
    return build(l4_spec(version, version == 4 ? kIcmp : kIcmpv6, src, dst, icmp(type, 0, id, 1)));
}

/// An IPv4 port unreachable from the router to `to`, quoting 40 bytes of a UDP packet.
inline Bytes udp_unreachable(const Addr& to, const Addr& qsrc, uint16_t qsport, const Addr& qdst,
                             uint16_t qdport) {
    const Bytes sent = ip_packet(l4_spec(4, kUdp, qsrc, qdst, udp(qsport, qdport, pattern(40))));
    return icmp_error(4, 3, 3, kRouter4, to, sent, 20 + 8 + 12);
}

/// A broadcast ARP request: a frame that is not IP.
inline Bytes arp_frame() {
    Bytes arp = {0, 1, 0x08, 0, 6, 4, 0, 1};  // Ethernet/IPv4 request
    arp = cat(arp, {0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1});
    arp = cat(arp, {0, 0, 0, 0, 0, 0, 10, 0, 0, 2});
    Bytes f = ethernet(0x0806, arp);
    f[0] = f[1] = f[2] = f[3] = f[4] = f[5] = 0xff;
    return f;
}

// ---- Parsing and verification -----------------------------------------------------------------

struct Parsed {
    FlowKey key;
    PacketLayout layout;
};

/// parse_frame on f as received on kInPort; true when it parsed.
inline bool parse(const Bytes& f, Parsed* p) {
    return !parse_frame(f.data(), static_cast<uint32_t>(f.size()), kInPort, &p->key, &p->layout);
}

/// Offset just past the IP packet of f, by its own length field.
inline size_t ip_end(const Bytes& f, const Parsed& p) {
    const size_t l3 = p.layout.l3_offset;
    return p.key.ip_version == 4 ? l3 + get16(f, l3 + 2) : l3 + 40 + get16(f, l3 + 4);
}

/// What a stored UDP checksum of 0 means to checksums_match.
enum class ZeroUdpChecksum {
    kWrong,      // compared like any other value: it never matches (a computed 0 is sent as 0xffff)
    kMeansNone,  // "not computed" (IPv4, RFC 768): accepted as it is
};

/// Recomputes the IPv4 header checksum and the transport checksum of frame f in full and
/// compares them with the stored ones; zero_udp says how a stored UDP checksum of 0 is judged.
inline ::testing::AssertionResult checksums_match(const Bytes& f, ZeroUdpChecksum zero_udp) {
    Parsed p;
    if (!parse(f, &p)) return ::testing::AssertionFailure() << "frame does not parse";
    const uint8_t* ip = f.data() + p.layout.l3_offset;
    if (p.key.ip_version == 4 && get16(f, p.layout.l3_offset + 10) != ipv4_header_checksum(ip)) {
        return ::testing::AssertionFailure()
               << "IPv4 header checksum " << get16(f, p.layout.l3_offset + 10)
               << " != " << ipv4_header_checksum(ip);
    }
    const uint8_t proto = p.key.ip_proto;
    if (p.layout.l4_offset == 0 ||
        (proto != kTcp && proto != kUdp && proto != kIcmp && proto != kIcmpv6)) {
        return ::testing::AssertionSuccess();
    }
    const size_t l4 = p.layout.l4_offset;
    const uint16_t stored = get16(f, l4 + checksum_at(proto));
    if (zero_udp == ZeroUdpChecksum::kMeansNone && proto == kUdp && stored == 0) {
        return ::testing::AssertionSuccess();
    }
    const uint16_t want = l4_checksum(p.key.ip_version, proto, p.key.ip_src, p.key.ip_dst,
                                      f.data() + l4, ip_end(f, p) - l4);
    if (stored != want) {
        return ::testing::AssertionFailure() << "L4 checksum " << stored << " != " << want;
    }
    return ::testing::AssertionSuccess();
}

/// Checks the IPv4 header checksum of the packet quoted by the ICMP error in f.
inline ::testing::AssertionResult quoted_ipv4_header_ok(const Bytes& f) {
    Parsed p;
    if (!parse(f, &p)) return ::testing::AssertionFailure() << "frame does not parse";
    const size_t at = p.layout.l4_offset + 8;
    if (get16(f, at + 10) != ipv4_header_checksum(f.data() + at)) {
        return ::testing::AssertionFailure() << "quoted IPv4 header checksum";
    }
    return ::testing::AssertionSuccess();
}

/// Addresses and ports a frame carries, as parse_frame sees them.
struct Carried {
    Addr src{};
    Addr dst{};
    uint16_t sport = 0;
    uint16_t dport = 0;
};

/// What f carries; a frame that does not parse fails the test.
inline Carried carried(const Bytes& f) {
    Parsed p;
    EXPECT_TRUE(parse(f, &p));
    Carried c;
    const size_t alen = p.key.ip_version == 6 ? 16 : 4;
    std::memcpy(c.src.data(), p.key.ip_src, alen);
    std::memcpy(c.dst.data(), p.key.ip_dst, alen);
    c.sport = p.key.l4_src;
    c.dport = p.key.l4_dst;
    return c;
}

/// The echo identifier of an ICMP/ICMPv6 echo frame.
inline uint16_t echo_id(const Bytes& f) {
    Parsed p;
    EXPECT_TRUE(parse(f, &p));
    return get16(f, p.layout.l4_offset + 4);
}

/// The address at a (4 or 16 bytes by version) as an Addr.
inline Addr addr_of(const uint8_t* a, uint8_t version) {
    Addr r{};
    std::memcpy(r.data(), a, version == 4 ? 4 : 16);
    return r;
}

}  // namespace ferry::test_frames
