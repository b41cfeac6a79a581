// Unit tests of the NAT rewriting functions. Frames are built by hand with checksums computed from
// scratch, parsed with parse_frame for their key and layout, rewritten, and then every checksum
// (IPv4 header, TCP/UDP/ICMP/ICMPv6 with pseudo-headers, the quoted IPv4 header of an ICMP error)
// is recomputed in full and compared with what the incremental updates left in the frame. Frames
// sit in buffers of exactly their length so a sanitizer build catches any access past the end.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/nat_rewrite.h"
#include "dataplane/packet_parse.h"

namespace ferry {
namespace {

using Bytes = std::vector<uint8_t>;
using Addr = std::array<uint8_t, 16>;  // IPv4 in the first 4 bytes, the rest zero

constexpr uint8_t kIcmp = 1;
constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;
constexpr uint8_t kGre = 47;
constexpr uint8_t kIcmpv6 = 58;

constexpr Addr kClient4 = {10, 0, 0, 1};
constexpr Addr kPublic4 = {203, 0, 113, 5};
constexpr Addr kServer4 = {198, 51, 100, 7};
constexpr Addr kBackend4 = {172, 16, 0, 9};
constexpr Addr kRouter4 = {192, 0, 2, 254};
constexpr Addr kClient6 = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
constexpr Addr kPublic6 = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05};
constexpr Addr kServer6 = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0, 0x07};
constexpr Addr kBackend6 = {0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09};
constexpr Addr kRouter6 = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe};

// ---- Byte helpers and the reference checksum
// -----------------------------------------------------

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

uint16_t get16(const Bytes& b, size_t at) {
    return static_cast<uint16_t>(b[at] << 8 | b[at + 1]);
}

void set16(Bytes& b, size_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v >> 8);
    b[at + 1] = static_cast<uint8_t>(v);
}

Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

Bytes pattern(size_t n, uint8_t seed = 0xa0) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i);
    return b;
}

/// One's-complement sum of n bytes, big-endian words, an odd last byte padded with zero.
uint64_t sum_bytes(const uint8_t* p, size_t n, uint64_t acc = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint64_t>(p[i] << 8 | p[i + 1]);
    if (n % 2 != 0) acc += static_cast<uint64_t>(p[n - 1]) << 8;
    return acc;
}

uint16_t fold_complement(uint64_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(~s);
}

size_t checksum_at(uint8_t proto) {
    return proto == kTcp ? 16 : proto == kUdp ? 6 : 2;
}

/// Full checksum of a transport message (its checksum field taken as zero), with the pseudo-header
/// for everything but ICMPv4. UDP's computed 0 is returned as 0xffff, as it is sent.
uint16_t l4_checksum(uint8_t version, uint8_t proto, const uint8_t* src, const uint8_t* dst,
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

uint16_t ipv4_header_checksum(const uint8_t* ip) {
    const size_t header_len = (ip[0] & 0x0fu) * 4;
    Bytes h(ip, ip + header_len);
    set16(h, 10, 0);
    return fold_complement(sum_bytes(h.data(), h.size()));
}

// ---- Packet builders -------------------------------------------------------------------------

Bytes tcp(uint16_t sport, uint16_t dport, const Bytes& data = pattern(12)) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    for (uint16_t w : {0x1234, 0x5678, 0x9abc, 0xdef0}) put16(b, w);  // seq, ack
    b.push_back(5 << 4);
    b.push_back(0x18);  // PSH ACK
    put16(b, 0xffff);   // window
    put16(b, 0);        // checksum
    put16(b, 0);        // urgent
    return cat(b, data);
}

Bytes udp(uint16_t sport, uint16_t dport, const Bytes& data = pattern(9)) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put16(b, static_cast<uint16_t>(8 + data.size()));
    put16(b, 0);
    return cat(b, data);
}

/// ICMP/ICMPv6 header with its second word as two 16-bit halves (echo: identifier, sequence).
Bytes icmp(uint8_t type, uint8_t code, uint16_t hi, uint16_t lo, const Bytes& data = pattern(6)) {
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
Bytes ip_packet(const PacketSpec& s) {
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

Bytes build(const PacketSpec& s) {
    Bytes f = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};
    if (s.vlan) {
        put16(f, 0x8100);
        put16(f, 42);
    }
    put16(f, s.version == 4 ? 0x0800 : 0x86dd);
    return cat(f, ip_packet(s));
}

/// An ICMP error from `from` to `to` quoting the first quote_len bytes of `quoted` (an IP packet).
Bytes icmp_error(uint8_t version, uint8_t type, uint8_t code, const Addr& from, const Addr& to,
                 const Bytes& quoted, size_t quote_len) {
    PacketSpec s;
    s.version = version;
    s.proto = version == 4 ? kIcmp : kIcmpv6;
    s.src = from;
    s.dst = to;
    s.l4 = cat(icmp(type, code, 0, 0, {}), Bytes(quoted.begin(), quoted.begin() + quote_len));
    return build(s);
}

// ---- Parsing and verification --------------------------------------------------------------

struct Parsed {
    FlowKey key;
    PacketLayout layout;
};

bool parse(const Bytes& f, Parsed* p) {
    return !parse_frame(f.data(), static_cast<uint32_t>(f.size()), 1, &p->key, &p->layout);
}

size_t ip_end(const Bytes& f, const Parsed& p) {
    const size_t l3 = p.layout.l3_offset;
    return p.key.ip_version == 4 ? l3 + get16(f, l3 + 2) : l3 + 40 + get16(f, l3 + 4);
}

/// Recomputes the IPv4 header checksum and the transport checksum of frame f in full and
/// compares them with the stored ones. A zero IPv4 UDP checksum means "none" and is accepted.
::testing::AssertionResult checksums_ok(const Bytes& f) {
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
    if (proto == kUdp && stored == 0) return ::testing::AssertionSuccess();
    const uint16_t want = l4_checksum(p.key.ip_version, proto, p.key.ip_src, p.key.ip_dst,
                                      f.data() + l4, ip_end(f, p) - l4);
    if (stored != want) {
        return ::testing::AssertionFailure() << "L4 checksum " << stored << " != " << want;
    }
    return ::testing::AssertionSuccess();
}

NatTarget target(const Addr& src, const Addr& dst, uint16_t sport, uint16_t dport) {
    NatTarget t;
    std::memcpy(t.src, src.data(), 16);
    std::memcpy(t.dst, dst.data(), 16);
    t.sport = sport;
    t.dport = dport;
    return t;
}

bool rewrite(Bytes& f, const NatTarget& to) {
    Parsed p;
    if (!parse(f, &p)) return false;
    return nat_rewrite(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key, to);
}

/// Re-parses f and checks that it carries `to` (ports only when with_ports).
void expect_carries(const Bytes& f, const NatTarget& to, bool with_ports = true) {
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    const size_t alen = p.key.ip_version == 4 ? 4 : 16;
    EXPECT_EQ(0, std::memcmp(p.key.ip_src, to.src, alen));
    EXPECT_EQ(0, std::memcmp(p.key.ip_dst, to.dst, alen));
    if (with_ports) {
        EXPECT_EQ(p.key.l4_src, to.sport);
        EXPECT_EQ(p.key.l4_dst, to.dport);
    }
}

PacketSpec l4_spec(uint8_t version, uint8_t proto, const Addr& src, const Addr& dst,
                   const Bytes& l4) {
    PacketSpec s;
    s.version = version;
    s.proto = proto;
    s.src = src;
    s.dst = dst;
    s.l4 = l4;
    return s;
}

/// Builds the packet, checks it is valid, rewrites it to `to`, checks every checksum again and
/// the addresses and ports now carried.
void rewrite_and_check(const PacketSpec& s, const NatTarget& to) {
    Bytes f = build(s);
    ASSERT_TRUE(checksums_ok(f)) << "built frame";
    ASSERT_TRUE(rewrite(f, to));
    EXPECT_TRUE(checksums_ok(f));
    expect_carries(f, to);
}

// ---- nat_rewrite ---------------------------------------------------------------------------

// A client's TCP segment leaves through SNAT: source address and port change.
TEST(NatRewrite, Ipv4TcpSnat) {
    rewrite_and_check(l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80)),
                      target(kPublic4, kServer4, 61000, 80));
}

// A segment to a virtual service goes through DNAT: destination address and port change.
TEST(NatRewrite, Ipv4TcpDnat) {
    rewrite_and_check(l4_spec(4, kTcp, kClient4, kPublic4, tcp(40000, 80)),
                      target(kClient4, kBackend4, 40000, 8080));
}

TEST(NatRewrite, Ipv4TcpBoth) {
    rewrite_and_check(l4_spec(4, kTcp, kClient4, kPublic4, tcp(40000, 80, pattern(1001))),
                      target(kServer4, kBackend4, 1, 65535));
}

TEST(NatRewrite, Ipv4TcpWithOptions) {
    PacketSpec s = l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 443));
    s.ipv4_option_words = 3;
    rewrite_and_check(s, target(kPublic4, kServer4, 61000, 443));
}

TEST(NatRewrite, Ipv4UdpWithChecksum) {
    rewrite_and_check(l4_spec(4, kUdp, kClient4, kServer4, udp(5353, 53)),
                      target(kPublic4, kBackend4, 60000, 5353));
}

// A zero IPv4 UDP checksum means "not computed": it must stay zero, the ports still change.
TEST(NatRewrite, Ipv4UdpZeroChecksumStaysZero) {
    PacketSpec s = l4_spec(4, kUdp, kClient4, kServer4, udp(5353, 53));
    s.udp_no_checksum = true;
    Bytes f = build(s);
    const NatTarget to = target(kPublic4, kServer4, 60000, 53);
    ASSERT_TRUE(rewrite(f, to));
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    EXPECT_EQ(get16(f, p.layout.l4_offset + 6), 0);
    EXPECT_TRUE(checksums_ok(f));
    expect_carries(f, to);
}

TEST(NatRewrite, Ipv6Tcp) {
    rewrite_and_check(l4_spec(6, kTcp, kClient6, kServer6, tcp(40000, 443, pattern(77))),
                      target(kPublic6, kServer6, 61000, 443));
    rewrite_and_check(l4_spec(6, kTcp, kClient6, kPublic6, tcp(40000, 443)),
                      target(kClient6, kBackend6, 40000, 8443));
}

TEST(NatRewrite, Ipv6Udp) {
    rewrite_and_check(l4_spec(6, kUdp, kClient6, kServer6, udp(5353, 53)),
                      target(kPublic6, kBackend6, 60000, 5300));
}

// A UDP payload whose checksum works out to 0 is sent as 0xffff; the update must keep that.
TEST(NatRewrite, UdpChecksumNeverBecomesZero) {
    // Search small changes of the source port until the full checksum after the rewrite is 0.
    const PacketSpec s = l4_spec(4, kUdp, kClient4, kServer4, udp(5353, 53));
    bool found = false;
    for (uint32_t port = 1; port <= 0xffff && !found; ++port) {
        Bytes f = build(s);
        const NatTarget to = target(kPublic4, kServer4, static_cast<uint16_t>(port), 53);
        Parsed p;
        ASSERT_TRUE(parse(f, &p));
        Bytes probe = f;
        ASSERT_TRUE(
            nat_rewrite(probe.data(), static_cast<uint32_t>(probe.size()), p.layout, p.key, to));
        const size_t l4 = p.layout.l4_offset;
        set16(probe, l4 + 6, 0);
        uint64_t sum = sum_bytes(kPublic4.data(), 4);
        sum = sum_bytes(kServer4.data(), 4, sum) + kUdp + (probe.size() - l4);
        if (fold_complement(sum_bytes(probe.data() + l4, probe.size() - l4, sum)) != 0) continue;
        found = true;
        ASSERT_TRUE(nat_rewrite(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key, to));
        EXPECT_EQ(get16(f, l4 + 6), 0xffff);
        EXPECT_TRUE(checksums_ok(f));
    }
    EXPECT_TRUE(found);
}

// A zero IPv6 UDP checksum is invalid except for RFC 6935 tunnels, which accept exactly zero:
// left as is it still reaches such a tunnel; patched it would become a wrong checksum anywhere.
TEST(NatRewrite, Ipv6UdpZeroChecksumStaysZero) {
    PacketSpec s = l4_spec(6, kUdp, kClient6, kServer6, udp(4789, 4789));
    s.udp_no_checksum = true;
    Bytes f = build(s);
    const NatTarget to = target(kPublic6, kServer6, 50000, 4789);
    ASSERT_TRUE(rewrite(f, to));
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    EXPECT_EQ(get16(f, p.layout.l4_offset + 6), 0);
    expect_carries(f, to);
}

// Echo request: the identifier plays the port, the ICMPv4 checksum has no pseudo-header.
TEST(NatRewrite, Ipv4IcmpEchoIdentifier) {
    for (uint8_t type : {8, 0}) {
        Bytes f = build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(type, 0, 0x1234, 7)));
        ASSERT_TRUE(checksums_ok(f));
        ASSERT_TRUE(rewrite(f, target(kPublic4, kServer4, 0xbeef, 0)));
        EXPECT_TRUE(checksums_ok(f));
        Parsed p;
        ASSERT_TRUE(parse(f, &p));
        EXPECT_EQ(get16(f, p.layout.l4_offset + 4), 0xbeef);
        EXPECT_EQ(get16(f, p.layout.l4_offset + 6), 7);  // sequence untouched
        EXPECT_EQ(0, std::memcmp(p.key.ip_src, kPublic4.data(), 4));
    }
}

// ICMPv6: the checksum covers the pseudo-header, so both the addresses and the identifier count.
TEST(NatRewrite, Ipv6IcmpEchoIdentifier) {
    for (uint8_t type : {128, 129}) {
        Bytes f = build(l4_spec(6, kIcmpv6, kClient6, kServer6, icmp(type, 0, 0x1234, 9)));
        ASSERT_TRUE(checksums_ok(f));
        ASSERT_TRUE(rewrite(f, target(kPublic6, kServer6, 0x0102, 0)));
        EXPECT_TRUE(checksums_ok(f));
        Parsed p;
        ASSERT_TRUE(parse(f, &p));
        EXPECT_EQ(get16(f, p.layout.l4_offset + 4), 0x0102);
        EXPECT_EQ(0, std::memcmp(p.key.ip_src, kPublic6.data(), 16));
    }
}

// Any other ICMPv6 message keeps a valid checksum across an address change (pseudo-header).
TEST(NatRewrite, Icmpv6NonEchoFollowsAddresses) {
    Bytes f = build(l4_spec(6, kIcmpv6, kClient6, kServer6, icmp(135, 0, 0, 0, pattern(16))));
    const Bytes before = f;
    ASSERT_TRUE(rewrite(f, target(kPublic6, kBackend6, 1, 2)));
    EXPECT_TRUE(checksums_ok(f));
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    // Only the checksum changed in the ICMPv6 message: no identifier to rewrite.
    const size_t l4 = p.layout.l4_offset;
    EXPECT_TRUE(std::equal(f.begin() + l4 + 4, f.end(), before.begin() + l4 + 4));
}

// A non-first fragment has no transport header: addresses and the header checksum change, the
// bytes after the IP header are payload and stay as they are.
TEST(NatRewrite, Ipv4NonFirstFragmentAddressesOnly) {
    PacketSpec s = l4_spec(4, kUdp, kClient4, kServer4, pattern(64, 0x10));
    s.ipv4_frag = 0x00b9;  // offset 185 * 8, last fragment
    Bytes f = build(s);
    const Bytes before = f;
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    ASSERT_EQ(p.layout.l4_offset, 0);
    ASSERT_TRUE(rewrite(f, target(kPublic4, kBackend4, 1, 2)));
    EXPECT_TRUE(checksums_ok(f));
    expect_carries(f, target(kPublic4, kBackend4, 0, 0), false);
    const size_t payload = p.layout.l3_offset + 20;
    EXPECT_TRUE(std::equal(f.begin() + payload, f.end(), before.begin() + payload));
}

// Protocols without ports (GRE here): addresses and the IPv4 header checksum only.
TEST(NatRewrite, OtherProtocolAddressesOnly) {
    Bytes f = build(l4_spec(4, kGre, kClient4, kServer4, pattern(24)));
    const Bytes before = f;
    ASSERT_TRUE(rewrite(f, target(kPublic4, kServer4, 1, 2)));
    EXPECT_TRUE(checksums_ok(f));
    expect_carries(f, target(kPublic4, kServer4, 0, 0), false);
    EXPECT_TRUE(std::equal(f.begin() + 34, f.end(), before.begin() + 34));
}

TEST(NatRewrite, VlanTaggedFrame) {
    PacketSpec s = l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80));
    s.vlan = true;
    rewrite_and_check(s, target(kPublic4, kServer4, 61000, 80));
    s = l4_spec(6, kUdp, kClient6, kServer6, udp(40000, 53));
    s.vlan = true;
    rewrite_and_check(s, target(kPublic6, kServer6, 61000, 53));
}

// A target equal to what the packet carries changes nothing, not even a checksum's zero form.
TEST(NatRewrite, SameTargetLeavesFrameAlone) {
    Bytes f = build(l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80)));
    const Bytes before = f;
    ASSERT_TRUE(rewrite(f, target(kClient4, kServer4, 40000, 80)));
    EXPECT_EQ(f, before);
}

// Every cut of a valid frame is refused without a byte changed: the IP header or the transport
// fields to rewrite would lie (partly) outside what the IP packet and the frame hold.
TEST(NatRewrite, TruncatedFramesRefusedUnchanged) {
    const Bytes frames[] = {
        build(l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80, {}))),
        build(l4_spec(6, kUdp, kClient6, kServer6, udp(40000, 53, {}))),
        build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(8, 0, 1, 1, {}))),
        build(l4_spec(6, kIcmpv6, kClient6, kServer6, icmp(128, 0, 1, 1, {}))),
    };
    for (const Bytes& full : frames) {
        Parsed p;
        ASSERT_TRUE(parse(full, &p));
        const NatTarget to = target(kPublic6, kBackend6, 1, 2);
        for (size_t len = 0; len < full.size(); ++len) {
            Bytes cut(full.begin(), full.begin() + static_cast<long>(len));
            const Bytes before = cut;
            EXPECT_FALSE(nat_rewrite(cut.data(), static_cast<uint32_t>(len), p.layout, p.key, to))
                << "len " << len;
            EXPECT_EQ(cut, before) << "len " << len;
        }
    }
}

// The IP packet itself too short for the TCP checksum (frame long enough): refused as well.
TEST(NatRewrite, IpPacketShorterThanTransportFields) {
    Bytes f = build(l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80, {})));
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    set16(f, p.layout.l3_offset + 2, 20 + 16);  // total length ends before the checksum
    const Bytes before = f;
    EXPECT_FALSE(nat_rewrite(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key,
                             target(kPublic4, kServer4, 1, 2)));
    EXPECT_EQ(f, before);
}

// ---- ICMP errors ---------------------------------------------------------------------------

/// Checks the IPv4 header checksum of the packet quoted by the ICMP error in f.
::testing::AssertionResult quoted_ipv4_header_ok(const Bytes& f) {
    Parsed p;
    if (!parse(f, &p)) return ::testing::AssertionFailure() << "frame does not parse";
    const size_t at = p.layout.l4_offset + 8;
    if (get16(f, at + 10) != ipv4_header_checksum(f.data() + at)) {
        return ::testing::AssertionFailure() << "quoted IPv4 header checksum";
    }
    return ::testing::AssertionSuccess();
}

bool rewrite_error(Bytes& f, const Addr& outer_dst, const NatTarget& inner) {
    Parsed p;
    if (!parse(f, &p)) return false;
    return nat_rewrite_icmp_error(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key,
                                  outer_dst.data(), inner);
}

// The client's datagram left as kPublic4:60000 -> kServer4:53; the server answers port
// unreachable to kPublic4. Translated back: outer destination kClient4, quoted source
// kClient4:5000; the quoted UDP checksum becomes the one the client computed.
TEST(NatRewriteIcmpError, Ipv4PortUnreachableQuotingUdp) {
    const Bytes sent = ip_packet(l4_spec(4, kUdp, kPublic4, kServer4, udp(60000, 53, pattern(40))));
    Bytes f = icmp_error(4, 3, 3, kServer4, kPublic4, sent, 20 + 8 + 12);
    ASSERT_TRUE(checksums_ok(f));
    ASSERT_TRUE(quoted_ipv4_header_ok(f));
    ASSERT_TRUE(rewrite_error(f, kClient4, target(kClient4, kServer4, 5000, 53)));
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_TRUE(quoted_ipv4_header_ok(f));

    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    EXPECT_EQ(0, std::memcmp(p.key.ip_dst, kClient4.data(), 4));
    EXPECT_EQ(0, std::memcmp(p.key.ip_src, kServer4.data(), 4));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 12, kClient4.data(), 4));
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 16, kServer4.data(), 4));
    EXPECT_EQ(get16(f, quoted + 20), 5000);
    EXPECT_EQ(get16(f, quoted + 22), 53);
    const Bytes original =
        ip_packet(l4_spec(4, kUdp, kClient4, kServer4, udp(5000, 53, pattern(40))));
    EXPECT_EQ(get16(f, quoted + 26), get16(original, 26));  // the client's UDP checksum
}

TEST(NatRewriteIcmpError, Ipv6PortUnreachableQuotingUdp) {
    const Bytes sent = ip_packet(l4_spec(6, kUdp, kPublic6, kServer6, udp(60000, 53, pattern(40))));
    Bytes f = icmp_error(6, 1, 4, kServer6, kPublic6, sent, sent.size());
    ASSERT_TRUE(checksums_ok(f));
    ASSERT_TRUE(rewrite_error(f, kClient6, target(kClient6, kServer6, 5000, 53)));
    EXPECT_TRUE(checksums_ok(f));

    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    EXPECT_EQ(0, std::memcmp(p.key.ip_dst, kClient6.data(), 16));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 8, kClient6.data(), 16));
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 24, kServer6.data(), 16));
    EXPECT_EQ(get16(f, quoted + 40), 5000);
    EXPECT_EQ(get16(f, quoted + 42), 53);
    const Bytes original =
        ip_packet(l4_spec(6, kUdp, kClient6, kServer6, udp(5000, 53, pattern(40))));
    EXPECT_EQ(get16(f, quoted + 46), get16(original, 46));
}

// Time exceeded quoting an echo request: the quoted identifier is translated back.
TEST(NatRewriteIcmpError, TimeExceededQuotingEcho) {
    const Bytes sent4 = ip_packet(l4_spec(4, kIcmp, kPublic4, kServer4, icmp(8, 0, 0x7777, 1)));
    Bytes f = icmp_error(4, 11, 0, kRouter4, kPublic4, sent4, 28);
    ASSERT_TRUE(rewrite_error(f, kClient4, target(kClient4, kServer4, 0x1111, 0)));
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_TRUE(quoted_ipv4_header_ok(f));
    EXPECT_EQ(get16(f, 14 + 20 + 8 + 20 + 4), 0x1111);

    const Bytes sent6 = ip_packet(l4_spec(6, kIcmpv6, kPublic6, kServer6, icmp(128, 0, 0x7777, 1)));
    f = icmp_error(6, 3, 0, kRouter6, kPublic6, sent6, 48);
    ASSERT_TRUE(rewrite_error(f, kClient6, target(kClient6, kServer6, 0x1111, 0)));
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_EQ(get16(f, 14 + 40 + 8 + 40 + 4), 0x1111);
}

TEST(NatRewriteIcmpError, RefusesNonErrorsAndShortQuotes) {
    const Bytes sent = ip_packet(l4_spec(4, kUdp, kPublic4, kServer4, udp(60000, 53)));
    const Bytes cases[] = {
        build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(8, 0, 1, 1))),  // echo request
        build(l4_spec(4, kTcp, kClient4, kServer4, tcp(1, 2))),
        icmp_error(4, 3, 3, kServer4, kPublic4, sent, 20 + 4),  // 4 bytes of quoted UDP
        icmp_error(4, 5, 0, kServer4, kPublic4, sent, 28),      // redirect: not an error we take
    };
    for (const Bytes& c : cases) {
        Bytes f = c;
        EXPECT_FALSE(rewrite_error(f, kClient4, target(kClient4, kServer4, 5000, 53)));
        EXPECT_EQ(f, c);
    }
    // Every cut of a valid error is refused unchanged.
    const Bytes full = icmp_error(4, 3, 3, kServer4, kPublic4, sent, 28);
    Parsed p;
    ASSERT_TRUE(parse(full, &p));
    for (size_t len = 0; len < full.size(); ++len) {
        Bytes cut(full.begin(), full.begin() + static_cast<long>(len));
        EXPECT_FALSE(nat_rewrite_icmp_error(cut.data(), static_cast<uint32_t>(len), p.layout, p.key,
                                            kClient4.data(), target(kClient4, kServer4, 5000, 53)));
        EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin()));
    }
}

// ---- icmp_error_inner_tuple ----------------------------------------------------------------

CtTuple tuple(uint8_t version, uint8_t proto, const Addr& src, const Addr& dst, uint16_t sport,
              uint16_t dport, uint16_t zone) {
    CtTuple t;
    std::memset(&t, 0, sizeof(t));
    std::memcpy(t.src, src.data(), 16);
    std::memcpy(t.dst, dst.data(), 16);
    t.sport = sport;
    t.dport = dport;
    t.zone = zone;
    t.proto = proto;
    t.ip_version = version;
    return t;
}

bool inner_tuple(const Bytes& f, uint16_t zone, CtTuple* t) {
    Parsed p;
    if (!parse(f, &p)) return false;
    return icmp_error_inner_tuple(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key, zone,
                                  t);
}

TEST(IcmpErrorInnerTuple, Ipv4QuotingTcpUdpEcho) {
    CtTuple t;
    Bytes sent = ip_packet(l4_spec(4, kTcp, kPublic4, kServer4, tcp(61000, 443)));
    ASSERT_TRUE(inner_tuple(icmp_error(4, 3, 1, kRouter4, kPublic4, sent, 28), 3, &t));
    EXPECT_EQ(t, tuple(4, kTcp, kPublic4, kServer4, 61000, 443, 3));

    sent = ip_packet(l4_spec(4, kUdp, kPublic4, kServer4, udp(60000, 53)));
    ASSERT_TRUE(inner_tuple(icmp_error(4, 11, 0, kRouter4, kPublic4, sent, sent.size()), 0, &t));
    EXPECT_EQ(t, tuple(4, kUdp, kPublic4, kServer4, 60000, 53, 0));

    sent = ip_packet(l4_spec(4, kIcmp, kPublic4, kServer4, icmp(8, 0, 0x4242, 5)));
    ASSERT_TRUE(inner_tuple(icmp_error(4, 12, 0, kRouter4, kPublic4, sent, 28), 9, &t));
    EXPECT_EQ(t, tuple(4, kIcmp, kPublic4, kServer4, 0x4242, 0x4242, 9));

    // Quoted header with options: the L4 header follows the IHL, not byte 20.
    PacketSpec s = l4_spec(4, kUdp, kPublic4, kServer4, udp(1234, 5678));
    s.ipv4_option_words = 2;
    sent = ip_packet(s);
    ASSERT_TRUE(inner_tuple(icmp_error(4, 3, 3, kServer4, kPublic4, sent, 36), 1, &t));
    EXPECT_EQ(t, tuple(4, kUdp, kPublic4, kServer4, 1234, 5678, 1));
}

TEST(IcmpErrorInnerTuple, Ipv6QuotingTcpUdpEcho) {
    CtTuple t;
    Bytes sent = ip_packet(l4_spec(6, kTcp, kPublic6, kServer6, tcp(61000, 443)));
    ASSERT_TRUE(inner_tuple(icmp_error(6, 2, 0, kRouter6, kPublic6, sent, 48), 3, &t));
    EXPECT_EQ(t, tuple(6, kTcp, kPublic6, kServer6, 61000, 443, 3));

    sent = ip_packet(l4_spec(6, kUdp, kPublic6, kServer6, udp(60000, 53)));
    ASSERT_TRUE(inner_tuple(icmp_error(6, 1, 4, kServer6, kPublic6, sent, sent.size()), 0, &t));
    EXPECT_EQ(t, tuple(6, kUdp, kPublic6, kServer6, 60000, 53, 0));

    sent = ip_packet(l4_spec(6, kIcmpv6, kPublic6, kServer6, icmp(129, 0, 0x4242, 5)));
    ASSERT_TRUE(inner_tuple(icmp_error(6, 4, 0, kRouter6, kPublic6, sent, 48), 9, &t));
    EXPECT_EQ(t, tuple(6, kIcmpv6, kPublic6, kServer6, 0x4242, 0x4242, 9));
}

TEST(IcmpErrorInnerTuple, Refusals) {
    CtTuple t;
    const Bytes udp4 = ip_packet(l4_spec(4, kUdp, kPublic4, kServer4, udp(60000, 53)));
    const Bytes udp6 = ip_packet(l4_spec(6, kUdp, kPublic6, kServer6, udp(60000, 53)));
    const Bytes err4 =  // an error quoting an error
        ip_packet(l4_spec(4, kIcmp, kPublic4, kServer4, icmp(3, 3, 0, 0, pattern(28))));
    const Bytes gre4 = ip_packet(l4_spec(4, kGre, kPublic4, kServer4, pattern(8)));
    PacketSpec frag = l4_spec(4, kUdp, kPublic4, kServer4, pattern(16));
    frag.ipv4_frag = 0x0010;
    PacketSpec ext6 = l4_spec(6, kUdp, kPublic6, kServer6, cat(Bytes{17, 0}, pattern(14)));
    ext6.ipv6_next_header = 60;  // destination options before the UDP header
    const Bytes not_errors[] = {
        build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(8, 0, 1, 1))),
        build(l4_spec(6, kIcmpv6, kClient6, kServer6, icmp(128, 0, 1, 1))),
        build(l4_spec(4, kUdp, kClient4, kServer4, udp(1, 2))),
        icmp_error(4, 3, 3, kServer4, kPublic4, udp4, 27),  // 7 bytes of quoted L4
        icmp_error(4, 3, 3, kServer4, kPublic4, udp4, 19),  // quoted header cut
        icmp_error(6, 1, 4, kServer6, kPublic6, udp6, 47),  // 7 bytes of quoted L4
        icmp_error(4, 3, 3, kServer4, kPublic4, err4, 28),  // quotes an error
        icmp_error(4, 3, 3, kServer4, kPublic4, gre4, 28),  // quotes neither TCP/UDP nor echo
        icmp_error(4, 3, 3, kServer4, kPublic4, ip_packet(frag), 28),  // non-first fragment
        icmp_error(6, 1, 4, kServer6, kPublic6, ip_packet(ext6), 56),  // extension header
        icmp_error(4, 3, 3, kServer4, kPublic4, udp6, 48),             // version mismatch
    };
    for (size_t i = 0; i < std::size(not_errors); ++i) {
        EXPECT_FALSE(inner_tuple(not_errors[i], 5, &t)) << "case " << i;
    }
}

// A word going from 0xffff to 0x0000 adds nothing to the checksum (both are zero in one's
// complement) but must still be written.
TEST(NatRewrite, WordsFromFfffToZero) {
    Addr all_ones;
    all_ones.fill(0xff);
    const Addr zero{};
    rewrite_and_check(l4_spec(6, kUdp, all_ones, kServer6, udp(0xffff, 0xffff)),
                      target(zero, kServer6, 0, 0));
    rewrite_and_check(l4_spec(4, kTcp, all_ones, kServer4, tcp(0xffff, 80)),
                      target(zero, kServer4, 0, 80));

    const Bytes sent = ip_packet(l4_spec(6, kUdp, all_ones, kServer6, udp(0xffff, 53)));
    Bytes f = icmp_error(6, 1, 4, kServer6, all_ones, sent, sent.size());
    ASSERT_TRUE(rewrite_error(f, zero, target(zero, kServer6, 0, 53)));
    EXPECT_TRUE(checksums_ok(f));
    CtTuple t;
    ASSERT_TRUE(inner_tuple(f, 0, &t));
    EXPECT_EQ(t, tuple(6, kUdp, zero, kServer6, 0, 53, 0));
}

// ---- Randomized ----------------------------------------------------------------------------

// 1000 random TCP/UDP packets over IPv4 (some with options) and IPv6, some VLAN-tagged, random
// payloads; each field of the target kept with probability 1/4. After the rewrite every checksum
// must match a full recomputation and the packet must carry the target.
TEST(NatRewrite, RandomizedChecksumsMatchFullRecomputation) {
    std::mt19937 rng(20240611);
    auto byte = [&] { return static_cast<uint8_t>(rng()); };
    auto port = [&] { return static_cast<uint16_t>(rng()); };
    auto addr = [&](uint8_t version) {
        Addr a{};
        for (size_t i = 0; i < (version == 4 ? 4u : 16u); ++i) a[i] = byte();
        return a;
    };
    for (int i = 0; i < 1000; ++i) {
        PacketSpec s;
        s.version = rng() % 2 ? 4 : 6;
        s.proto = rng() % 2 ? kTcp : kUdp;
        s.src = addr(s.version);
        s.dst = addr(s.version);
        Bytes data(rng() % 300);
        for (uint8_t& b : data) b = byte();
        const uint16_t sport = port();
        const uint16_t dport = port();
        s.l4 = s.proto == kTcp ? tcp(sport, dport, data) : udp(sport, dport, data);
        s.udp_no_checksum = s.version == 4 && s.proto == kUdp && rng() % 8 == 0;
        s.vlan = rng() % 4 == 0;
        s.ipv4_option_words = s.version == 4 && rng() % 4 == 0 ? rng() % 11 : 0;
        Bytes f = build(s);
        ASSERT_TRUE(checksums_ok(f)) << "built " << i;

        const NatTarget to =
            target(rng() % 4 ? addr(s.version) : s.src, rng() % 4 ? addr(s.version) : s.dst,
                   rng() % 4 ? port() : sport, rng() % 4 ? port() : dport);
        ASSERT_TRUE(rewrite(f, to)) << i;
        ASSERT_TRUE(checksums_ok(f)) << "rewritten " << i;
        expect_carries(f, to);
        if (s.udp_no_checksum) {
            Parsed p;
            ASSERT_TRUE(parse(f, &p));
            EXPECT_EQ(get16(f, p.layout.l4_offset + 6), 0) << i;
        }
    }
}

}  // namespace
}  // namespace ferry
