// Unit tests of the NAT rewriting functions. Frames are built by hand with checksums computed from
// scratch, parsed with parse_frame for their key and layout, rewritten, and then every checksum
// (IPv4 header, TCP/UDP/ICMP/ICMPv6 with pseudo-headers, the quoted IPv4 header of an ICMP error)
// is recomputed in full and compared with what the incremental updates left in the frame. Frames
// sit in buffers of exactly their length so a sanitizer build catches any access past the end.
// The frame builders and reference checksums come from ct_frames.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <random>

#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/nat_rewrite.h"
#include "dataplane/packet_parse.h"
#include "tests/unit/ct_frames.h"

namespace ferry {
namespace {

using namespace test_frames;

/// Every checksum of f recomputed in full (ct_frames.h). A zero UDP checksum means "none" here
/// and is accepted: some frames are built without one and must keep it.
::testing::AssertionResult checksums_ok(const Bytes& f) {
    return checksums_match(f, ZeroUdpChecksum::kMeansNone);
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
