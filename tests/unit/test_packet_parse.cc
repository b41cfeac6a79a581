// Unit tests of parse_frame. Frames are built by hand, layer by layer, with the small builders
// below; each test says what it sends and which key, layout or drop reason it expects. Frames are
// handed to the parser in buffers of exactly their length so a sanitizer build catches any read
// past the end (meson setup -Db_sanitize=address,undefined).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/packet_parse.h"
#include "dataplane/packet_parse_inline.h"

namespace ferry {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint8_t kDstMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
constexpr uint8_t kSrcMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint8_t kIpv4Src[4] = {10, 0, 0, 1};
constexpr uint8_t kIpv4Dst[4] = {192, 168, 7, 200};
constexpr uint8_t kIpv6Src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
constexpr uint8_t kIpv6Dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0,    0,    0, 0,
                                  0,    0,    0,    0,    0xca, 0xfe, 0, 0x02};

constexpr uint8_t kTcpSyn = 0x02;
constexpr uint8_t kTcpAck = 0x10;
constexpr uint8_t kTcpFin = 0x01;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpCwr = 0x80;

// ---- Byte builders ------------------------------------------------------------------------------

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

void put_bytes(Bytes& b, const uint8_t* p, size_t n) {
    b.insert(b.end(), p, p + n);
}

/// Payload of n bytes with a recognisable pattern (never a valid header by accident).
Bytes payload(size_t n) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(0xa0 + i);
    return b;
}

Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

/// TCP header with data offset in 32-bit words (options zero-filled), then `data` payload bytes.
Bytes tcp(uint16_t sport, uint16_t dport, uint8_t flags, size_t data = 0, uint8_t data_offset = 5) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put16(b, 0x1234);  // seq
    put16(b, 0x5678);
    put16(b, 0);  // ack
    put16(b, 0);
    b.push_back(static_cast<uint8_t>(data_offset << 4));
    b.push_back(flags);
    put16(b, 0xffff);                                              // window
    put16(b, 0);                                                   // checksum
    put16(b, 0);                                                   // urgent
    while (b.size() < data_offset * size_t{4}) b.push_back(0x01);  // NOP options
    return cat(b, payload(data));
}

Bytes udp(uint16_t sport, uint16_t dport, size_t data = 0) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put16(b, static_cast<uint16_t>(8 + data));
    put16(b, 0);
    return cat(b, payload(data));
}

/// ICMP or ICMPv6: type, code, checksum, then `rest` bytes (4 for an echo's id and sequence).
Bytes icmp(uint8_t type, uint8_t code, size_t rest = 4) {
    Bytes b = {type, code, 0, 0};
    return cat(b, payload(rest));
}

Bytes sctp(uint16_t sport, uint16_t dport) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    put16(b, 0xdead);  // verification tag
    put16(b, 0xbeef);
    put16(b, 0);  // checksum
    put16(b, 0);
    return b;
}

struct Ipv4Options {
    uint8_t option_words = 0;  // IHL - 5
    uint16_t frag_field = 0;   // flags (DF 0x4000, MF 0x2000) | fragment offset in 8-byte units
    int total_length = -1;     // override; -1 computes it from the payload
    uint8_t version = 4;
};

Bytes ipv4(uint8_t proto, const Bytes& l4, Ipv4Options o = {}) {
    const uint8_t ihl = static_cast<uint8_t>(5 + o.option_words);
    Bytes b;
    b.push_back(static_cast<uint8_t>(o.version << 4 | (ihl & 0x0f)));
    b.push_back(0);  // TOS
    put16(b, o.total_length >= 0 ? static_cast<uint16_t>(o.total_length)
                                 : static_cast<uint16_t>(ihl * size_t{4} + l4.size()));
    put16(b, 0x4242);  // id
    put16(b, o.frag_field);
    b.push_back(64);  // TTL
    b.push_back(proto);
    put16(b, 0);  // checksum: not verified by the parser
    put_bytes(b, kIpv4Src, 4);
    put_bytes(b, kIpv4Dst, 4);
    for (int i = 0; i < o.option_words * 4; ++i) b.push_back(0x01);  // NOP options
    return cat(b, l4);
}

Bytes ipv6(uint8_t next_header, const Bytes& rest, int payload_length = -1) {
    Bytes b = {0x60, 0x01, 0x23, 0x45};  // version 6, traffic class 0, flow label 0x12345
    put16(b, payload_length >= 0 ? static_cast<uint16_t>(payload_length)
                                 : static_cast<uint16_t>(rest.size()));
    b.push_back(next_header);
    b.push_back(64);  // hop limit
    put_bytes(b, kIpv6Src, 16);
    put_bytes(b, kIpv6Dst, 16);
    return cat(b, rest);
}

/// Hop-by-hop, routing or destination options header of (units + 1) * 8 bytes.
Bytes ipv6_ext(uint8_t next_header, uint8_t units = 0) {
    Bytes b((units + size_t{1}) * 8, 0);
    b[0] = next_header;
    b[1] = units;
    b[2] = 0x01;  // PadN option, keeps the options area well formed
    b[3] = static_cast<uint8_t>(b.size() - 4);
    return b;
}

Bytes ipv6_frag(uint8_t next_header, uint16_t offset_units, bool more) {
    Bytes b = {next_header, 0};
    put16(b, static_cast<uint16_t>(offset_units << 3 | (more ? 1 : 0)));
    put16(b, 0xabcd);  // identification
    put16(b, 0x0001);
    return b;
}

struct VlanTag {
    uint16_t tpid;
    uint16_t tci;
};

/// Ethernet header, tags outer first, then the payload, zero-padded to pad_to with 0xee bytes.
Bytes eth(uint16_t ethertype, const Bytes& l3, const std::vector<VlanTag>& tags = {},
          size_t pad_to = 0) {
    Bytes b;
    put_bytes(b, kDstMac, 6);
    put_bytes(b, kSrcMac, 6);
    for (const VlanTag& t : tags) {
        put16(b, t.tpid);
        put16(b, t.tci);
    }
    put16(b, ethertype);
    b = cat(b, l3);
    while (b.size() < pad_to) b.push_back(0xee);
    return b;
}

Bytes arp_request() {
    Bytes b;
    put16(b, 1);       // Ethernet
    put16(b, 0x0800);  // IPv4
    b.push_back(6);
    b.push_back(4);
    put16(b, 1);  // request
    put_bytes(b, kSrcMac, 6);
    put_bytes(b, kIpv4Src, 4);
    b.insert(b.end(), 6, 0);
    put_bytes(b, kIpv4Dst, 4);
    return b;
}

// ---- Parsing and expectations -------------------------------------------------------------------

struct Parsed {
    std::optional<DropReason> drop;
    FlowKey key;
    PacketLayout layout;
};

/// parse_frame_as<false> (no key) of the same bytes, which must give what parse_frame gave:
/// the same reason and the same layout. Every frame of these tests goes through it.
void expect_same_without_key(const uint8_t* data, uint32_t head, uint32_t len,
                             const std::optional<DropReason>& drop, const PacketLayout& layout) {
    PacketLayout l;
    std::memset(&l, 0xcd, sizeof(l));
    const auto d = parse_frame_as<false>(data, head, len, 3, nullptr, &l);
    EXPECT_EQ(d, drop) << "without the key";
    EXPECT_EQ(std::memcmp(&l, &layout, sizeof(l)), 0) << "layout without the key";
}

/// Parses the first `len` bytes of `frame` from a heap buffer of exactly `len` bytes. Key and
/// layout start as garbage to show the parser clears them.
Parsed parse(const Bytes& frame, size_t len, uint16_t in_port = 3) {
    auto buf = std::make_unique<uint8_t[]>(len);
    if (len != 0) std::memcpy(buf.get(), frame.data(), len);
    Parsed p;
    std::memset(&p.key, 0xab, sizeof(p.key));
    std::memset(&p.layout, 0xab, sizeof(p.layout));
    p.drop = parse_frame(buf.get(), static_cast<uint32_t>(len), in_port, &p.key, &p.layout);
    expect_same_without_key(buf.get(), static_cast<uint32_t>(len), static_cast<uint32_t>(len),
                            p.drop, p.layout);
    return p;
}

Parsed parse(const Bytes& frame) {
    return parse(frame, frame.size());
}

/// The key every test frame starts from: port 3, the test MACs, untagged, everything else zero.
FlowKey base_key(uint16_t ethertype) {
    FlowKey k;
    std::memset(&k, 0, sizeof(k));
    k.in_port = 3;
    k.vlan = kNoVlan;
    k.ethertype = ethertype;
    std::memcpy(k.eth_dst, kDstMac, 6);
    std::memcpy(k.eth_src, kSrcMac, 6);
    return k;
}

FlowKey ipv4_key(uint8_t proto, uint16_t l4_src = 0, uint16_t l4_dst = 0, uint8_t flags = 0) {
    FlowKey k = base_key(0x0800);
    k.ip_version = 4;
    k.ip_proto = proto;
    std::memcpy(k.ip_src, kIpv4Src, 4);
    std::memcpy(k.ip_dst, kIpv4Dst, 4);
    k.l4_src = l4_src;
    k.l4_dst = l4_dst;
    k.tcp_flags = flags;
    return k;
}

FlowKey ipv6_key(uint8_t proto, uint16_t l4_src = 0, uint16_t l4_dst = 0, uint8_t flags = 0) {
    FlowKey k = base_key(0x86dd);
    k.ip_version = 6;
    k.ip_proto = proto;
    std::memcpy(k.ip_src, kIpv6Src, 16);
    std::memcpy(k.ip_dst, kIpv6Dst, 16);
    k.l4_src = l4_src;
    k.l4_dst = l4_dst;
    k.tcp_flags = flags;
    return k;
}

std::string hex(const void* p, size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t b = static_cast<const uint8_t*>(p)[i];
        s += kDigits[b >> 4];
        s += kDigits[b & 15];
    }
    return s;
}

/// Field by field for readable failures, then the whole 64 bytes: unused bytes must be zero.
void expect_key(const FlowKey& got, const FlowKey& want) {
    EXPECT_EQ(got.in_port, want.in_port);
    EXPECT_EQ(got.vlan, want.vlan);
    EXPECT_EQ(got.ethertype, want.ethertype);
    EXPECT_EQ(got.ip_version, want.ip_version);
    EXPECT_EQ(got.ip_proto, want.ip_proto);
    EXPECT_EQ(got.tcp_flags, want.tcp_flags);
    EXPECT_EQ(got.l4_src, want.l4_src);
    EXPECT_EQ(got.l4_dst, want.l4_dst);
    EXPECT_EQ(hex(got.eth_dst, 6), hex(want.eth_dst, 6));
    EXPECT_EQ(hex(got.eth_src, 6), hex(want.eth_src, 6));
    EXPECT_EQ(hex(got.ip_src, 16), hex(want.ip_src, 16));
    EXPECT_EQ(hex(got.ip_dst, 16), hex(want.ip_dst, 16));
    EXPECT_EQ(hex(&got, sizeof(got)), hex(&want, sizeof(want)));
}

void expect_layout(const PacketLayout& got, uint16_t l3, uint16_t l4, uint8_t tags) {
    EXPECT_EQ(got.l3_offset, l3);
    EXPECT_EQ(got.l4_offset, l4);
    EXPECT_EQ(got.vlan_tags, tags);
    EXPECT_EQ(got.segmented, 0);
}

/// Parses a well-formed frame and checks key and layout.
void expect_parsed(const Bytes& frame, const FlowKey& want, uint16_t l3, uint16_t l4,
                   uint8_t tags) {
    const Parsed p = parse(frame);
    ASSERT_EQ(p.drop, std::nullopt) << drop_reason_name(*p.drop);
    expect_key(p.key, want);
    expect_layout(p.layout, l3, l4, tags);
}

void expect_drop(const Bytes& frame, DropReason want) {
    const Parsed p = parse(frame);
    ASSERT_TRUE(p.drop.has_value()) << "frame was accepted, expected " << drop_reason_name(want);
    EXPECT_EQ(drop_reason_name(*p.drop), drop_reason_name(want));
}

// ---- Ethernet and VLAN --------------------------------------------------------------------------

TEST(ParseEthernet, UntaggedIpv4TcpFillsEveryField) {
    const Bytes f = eth(0x0800, ipv4(6, tcp(40000, 443, kTcpSyn | kTcpAck, 10)));
    expect_parsed(f, ipv4_key(6, 40000, 443, kTcpSyn | kTcpAck), 14, 34, 0);
}

TEST(ParseEthernet, StoresInPort) {
    const Bytes f = eth(0x0800, ipv4(17, udp(1, 2)));
    const Parsed p = parse(f, f.size(), 0xbeef);
    ASSERT_EQ(p.drop, std::nullopt);
    EXPECT_EQ(p.key.in_port, 0xbeef);
}

TEST(ParseEthernet, RuntBelowFourteenBytes) {
    const Bytes f = eth(0x0800, ipv4(17, udp(1, 2)));
    for (size_t len = 0; len < 14; ++len) {
        SCOPED_TRACE(len);
        const Parsed p = parse(f, len);
        ASSERT_TRUE(p.drop.has_value());
        EXPECT_EQ(*p.drop, DropReason::kRunt);
    }
}

TEST(ParseEthernet, BareEthernetHeaderIsAccepted) {
    const Bytes f = eth(0x88cc, {});  // LLDP ethertype, no payload
    expect_parsed(f, base_key(0x88cc), 14, 0, 0);
}

TEST(ParseEthernet, ArpIsL2Only) {
    const Bytes f = eth(0x0806, arp_request(), {}, 60);
    expect_parsed(f, base_key(0x0806), 14, 0, 0);
}

TEST(ParseEthernet, LlcLengthFieldIsReportedAsEthertype) {
    const Bytes f = eth(0x0026, payload(38));  // 802.3 length, not an ethertype
    expect_parsed(f, base_key(0x0026), 14, 0, 0);
}

TEST(ParseVlan, SingleTagGivesVidWithoutPcp) {
    // PCP 5, DEI 1, VID 100.
    const Bytes f = eth(0x0800, ipv4(17, udp(5353, 53, 20)), {{0x8100, 0xb064}});
    FlowKey want = ipv4_key(17, 5353, 53);
    want.vlan = 100;
    expect_parsed(f, want, 18, 38, 1);
}

TEST(ParseVlan, DoubleTagKeepsOuterVid) {
    const Bytes f =
        eth(0x0800, ipv4(6, tcp(1000, 80, kTcpFin | kTcpAck)), {{0x88a8, 200}, {0x8100, 300}});
    FlowKey want = ipv4_key(6, 1000, 80, kTcpFin | kTcpAck);
    want.vlan = 200;
    expect_parsed(f, want, 22, 42, 2);
}

TEST(ParseVlan, AcceptsLegacyQinQTpid) {
    const Bytes f = eth(0x86dd, ipv6(17, udp(7, 9)), {{0x9100, 4095}, {0x8100, 12}});
    FlowKey want = ipv6_key(17, 7, 9);
    want.vlan = 4095;
    expect_parsed(f, want, 22, 62, 2);
}

TEST(ParseVlan, PriorityTagGivesVidZero) {
    const Bytes f = eth(0x0806, arp_request(), {{0x8100, 0xe000}});
    FlowKey want = base_key(0x0806);
    want.vlan = 0;
    expect_parsed(f, want, 18, 0, 1);
}

TEST(ParseVlan, ThirdTagIsTooDeep) {
    // Only two tags are read; what a third hides would pass the rules and conntrack unseen.
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2)), {{0x88a8, 10}, {0x8100, 20}, {0x8100, 30}}),
                DropReason::kVlanTooDeep);
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2)), {{0x8100, 10}, {0x8100, 20}, {0x9100, 30}}),
                DropReason::kVlanTooDeep);
}

TEST(ParseVlan, TagBehindPriorityTagIsDropped) {
    // PCP 3, VID 0 outside; VID 20 inside: a choice of VLAN the port never offered.
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2)), {{0x8100, 0x6000}, {0x8100, 20}}),
                DropReason::kVlanAfterPriorityTag);
    // A priority tag inside a real tag is only a priority: accepted, the outer VID counts.
    const Bytes f = eth(0x0800, ipv4(17, udp(1, 2)), {{0x88a8, 7}, {0x8100, 0x2000}});
    FlowKey want = ipv4_key(17, 1, 2);
    want.vlan = 7;
    expect_parsed(f, want, 22, 42, 2);
}

TEST(ParseVlan, TruncatedTagIsBadVlan) {
    const Bytes one = eth(0x0800, {}, {{0x8100, 5}});
    for (size_t len = 14; len < 18; ++len) {
        SCOPED_TRACE(len);
        const Parsed p = parse(one, len);
        ASSERT_TRUE(p.drop.has_value());
        EXPECT_EQ(*p.drop, DropReason::kBadVlan);
    }
    const Bytes two = eth(0x0800, {}, {{0x88a8, 5}, {0x8100, 6}});
    for (size_t len = 18; len < 22; ++len) {
        SCOPED_TRACE(len);
        const Parsed p = parse(two, len);
        ASSERT_TRUE(p.drop.has_value());
        EXPECT_EQ(*p.drop, DropReason::kBadVlan);
    }
    // A tag followed by its ethertype and nothing else is a complete (empty) frame.
    FlowKey want = base_key(0x0806);
    want.vlan = 5;
    expect_parsed(eth(0x0806, {}, {{0x8100, 5}}), want, 18, 0, 1);
}

// ---- IPv4 ---------------------------------------------------------------------------------------

TEST(ParseIpv4, Udp) {
    const Bytes f = eth(0x0800, ipv4(17, udp(68, 67, 300)));
    expect_parsed(f, ipv4_key(17, 68, 67), 14, 34, 0);
}

TEST(ParseIpv4, IcmpTypeAndCode) {
    // Destination unreachable, fragmentation needed: type 3, code 4.
    const Bytes f = eth(0x0800, ipv4(1, icmp(3, 4, 28)));
    expect_parsed(f, ipv4_key(1, 3, 4), 14, 34, 0);
}

TEST(ParseIpv4, SctpPorts) {
    const Bytes f = eth(0x0800, ipv4(132, sctp(2905, 38412)));
    expect_parsed(f, ipv4_key(132, 2905, 38412), 14, 34, 0);
}

TEST(ParseIpv4, UnknownProtocolHasNoPortsButAnL4Offset) {
    const Bytes f = eth(0x0800, ipv4(47, payload(24)));  // GRE
    expect_parsed(f, ipv4_key(47), 14, 34, 0);
}

TEST(ParseIpv4, OptionsMoveTheTransportHeader) {
    Ipv4Options o;
    o.option_words = 3;  // IHL 8: 12 bytes of options
    const Bytes f = eth(0x0800, ipv4(6, tcp(22, 51000, kTcpPsh | kTcpAck, 48), o));
    expect_parsed(f, ipv4_key(6, 22, 51000, kTcpPsh | kTcpAck), 14, 46, 0);
}

TEST(ParseIpv4, MaximalOptions) {
    Ipv4Options o;
    o.option_words = 10;  // IHL 15: 60-byte header
    const Bytes f = eth(0x0800, ipv4(17, udp(1, 2), o), {{0x8100, 9}});
    FlowKey want = ipv4_key(17, 1, 2);
    want.vlan = 9;
    expect_parsed(f, want, 18, 78, 1);
}

TEST(ParseIpv4, AllTcpFlagBits) {
    const Bytes f = eth(0x0800, ipv4(6, tcp(1, 2, 0xff)));
    expect_parsed(f, ipv4_key(6, 1, 2, 0xff), 14, 34, 0);
    const Bytes g = eth(0x0800, ipv4(6, tcp(1, 2, kTcpCwr | kTcpSyn)));
    expect_parsed(g, ipv4_key(6, 1, 2, kTcpCwr | kTcpSyn), 14, 34, 0);
}

TEST(ParseIpv4, TcpWithOptions) {
    const Bytes f = eth(0x0800, ipv4(6, tcp(443, 40000, kTcpAck, 0, 15)));  // 60-byte header
    expect_parsed(f, ipv4_key(6, 443, 40000, kTcpAck), 14, 34, 0);
}

TEST(ParseIpv4, DontFragmentIsNotAFragment) {
    Ipv4Options o;
    o.frag_field = 0x4000;
    expect_parsed(eth(0x0800, ipv4(6, tcp(5, 6, kTcpSyn), o)), ipv4_key(6, 5, 6, kTcpSyn), 14, 34,
                  0);
}

TEST(ParseIpv4, FirstFragmentHasPorts) {
    Ipv4Options o;
    o.frag_field = 0x2000;  // MF, offset 0
    expect_parsed(eth(0x0800, ipv4(17, udp(4789, 4789, 1000), o)), ipv4_key(17, 4789, 4789), 14, 34,
                  0);
}

TEST(ParseIpv4, NonFirstFragmentHasNoPorts) {
    for (uint16_t frag : {0x2001, 0x00b9, 0x1fff}) {  // with and without MF, smallest and largest
        SCOPED_TRACE(frag);
        Ipv4Options o;
        o.frag_field = frag;
        // The payload looks like a UDP header; it must not be read as one.
        expect_parsed(eth(0x0800, ipv4(17, udp(1111, 2222, 64), o)), ipv4_key(17), 14, 0, 0);
    }
}

TEST(ParseIpv4, NonFirstFragmentMayBeShorterThanATransportHeader) {
    Ipv4Options o;
    o.frag_field = 0x0010;
    expect_parsed(eth(0x0800, ipv4(6, payload(3), o)), ipv4_key(6), 14, 0, 0);
}

TEST(ParseIpv4, EthernetPaddingIsIgnored) {
    // 42-byte UDP packet padded to the 60-byte minimum with 0xee.
    const Bytes f = eth(0x0800, ipv4(17, udp(123, 123)), {}, 60);
    ASSERT_EQ(f.size(), 60u);
    expect_parsed(f, ipv4_key(17, 123, 123), 14, 34, 0);
}

TEST(ParseIpv4, BadVersion) {
    Ipv4Options o;
    o.version = 6;
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2), o)), DropReason::kBadL3);
    o.version = 0;
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2), o)), DropReason::kBadL3);
}

TEST(ParseIpv4, IhlBelowFive) {
    Bytes f = eth(0x0800, ipv4(17, udp(1, 2)));
    for (uint8_t ihl = 0; ihl < 5; ++ihl) {
        f[14] = static_cast<uint8_t>(0x40 | ihl);
        SCOPED_TRACE(ihl);
        expect_drop(f, DropReason::kBadL3);
    }
}

TEST(ParseIpv4, HeaderLongerThanFrame) {
    Bytes f = eth(0x0800, ipv4(17, payload(0)));  // exactly 20 bytes of IPv4
    f[14] = 0x46;                                 // IHL 6: 24 bytes
    expect_drop(f, DropReason::kBadL3);
}

TEST(ParseIpv4, TotalLengthShorterThanHeader) {
    Ipv4Options o;
    o.option_words = 2;
    o.total_length = 24;  // header is 28
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2), o)), DropReason::kBadL3);
}

TEST(ParseIpv4, TotalLengthBeyondFrame) {
    Ipv4Options o;
    o.total_length = 20 + 8 + 1;
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2), o)), DropReason::kBadL3);
}

TEST(ParseIpv4, TotalLengthEqualToHeaderLengthWithPaddingIsShortTransport) {
    // An IPv4 header saying "no payload" in a padded frame: the padding is not a UDP header.
    Ipv4Options o;
    o.total_length = 20;
    expect_drop(eth(0x0800, ipv4(17, udp(1, 2), o)), DropReason::kBadL4);
}

TEST(ParseIpv4, ShortTransportHeaders) {
    struct Case {
        uint8_t proto;
        int need;
    };
    for (Case c : {Case{6, 20}, Case{17, 8}, Case{1, 4}, Case{132, 12}}) {
        SCOPED_TRACE(c.proto);
        // The frame keeps a full header's worth of bytes after the IP packet: only the IP total
        // length says the header is short.
        Bytes body(40, 0);
        body[12] = 5 << 4;  // a valid TCP data offset, harmless for the others
        Ipv4Options short_one;
        short_one.total_length = 20 + c.need - 1;
        expect_drop(eth(0x0800, ipv4(c.proto, body, short_one)), DropReason::kBadL4);
        Ipv4Options exact;
        exact.total_length = 20 + c.need;
        EXPECT_EQ(parse(eth(0x0800, ipv4(c.proto, body, exact))).drop, std::nullopt);
    }
}

TEST(ParseIpv4, TcpDataOffsetOutOfRange) {
    for (uint8_t doff : {0, 4}) {
        SCOPED_TRACE(doff);
        Bytes seg = tcp(1, 2, kTcpSyn);
        seg[12] = static_cast<uint8_t>(doff << 4);
        expect_drop(eth(0x0800, ipv4(6, seg)), DropReason::kBadL4);
    }
    // Data offset 6 (24 bytes) in a 20-byte segment followed by Ethernet padding.
    Bytes seg = tcp(1, 2, kTcpSyn);
    seg[12] = 6 << 4;
    expect_drop(eth(0x0800, ipv4(6, seg), {}, 64), DropReason::kBadL4);
}

// ---- IPv6 ---------------------------------------------------------------------------------------

TEST(ParseIpv6, Tcp) {
    const Bytes f = eth(0x86dd, ipv6(6, tcp(50000, 22, kTcpAck | kTcpPsh, 100)));
    expect_parsed(f, ipv6_key(6, 50000, 22, kTcpAck | kTcpPsh), 14, 54, 0);
}

TEST(ParseIpv6, Udp) {
    const Bytes f = eth(0x86dd, ipv6(17, udp(546, 547, 60)), {{0x8100, 42}});
    FlowKey want = ipv6_key(17, 546, 547);
    want.vlan = 42;
    expect_parsed(f, want, 18, 58, 1);
}

TEST(ParseIpv6, Icmpv6) {
    // Neighbor solicitation: type 135, code 0.
    const Bytes f = eth(0x86dd, ipv6(58, icmp(135, 0, 20)));
    expect_parsed(f, ipv6_key(58, 135, 0), 14, 54, 0);
    // Time exceeded, fragment reassembly: type 3, code 1.
    expect_parsed(eth(0x86dd, ipv6(58, icmp(3, 1))), ipv6_key(58, 3, 1), 14, 54, 0);
}

TEST(ParseIpv6, ExtensionHeaderChain) {
    // Hop-by-hop (8) -> routing (24) -> destination options (16) -> TCP.
    const Bytes chain = cat(cat(ipv6_ext(43, 0), ipv6_ext(60, 2)), ipv6_ext(6, 1));
    const Bytes f = eth(0x86dd, ipv6(0, cat(chain, tcp(8080, 9090, kTcpSyn))));
    expect_parsed(f, ipv6_key(6, 8080, 9090, kTcpSyn), 14, 14 + 40 + 48, 0);
}

TEST(ParseIpv6, EightExtensionHeadersAreWalkedNineAreNot) {
    Bytes chain8;
    for (int i = 0; i < 7; ++i) chain8 = cat(chain8, ipv6_ext(60));
    chain8 = cat(chain8, ipv6_ext(17));
    expect_parsed(eth(0x86dd, ipv6(60, cat(chain8, udp(1, 2)))), ipv6_key(17, 1, 2), 14,
                  14 + 40 + 64, 0);
    const Bytes chain9 = cat(ipv6_ext(60), chain8);
    expect_drop(eth(0x86dd, ipv6(60, cat(chain9, udp(1, 2)))), DropReason::kBadL3);
}

TEST(ParseIpv6, FirstFragmentHasPorts) {
    const Bytes f = eth(0x86dd, ipv6(44, cat(ipv6_frag(17, 0, true), udp(4000, 5000, 100))));
    expect_parsed(f, ipv6_key(17, 4000, 5000), 14, 62, 0);
}

TEST(ParseIpv6, NonFirstFragmentHasNoPorts) {
    const Bytes f =
        eth(0x86dd, ipv6(0, cat(ipv6_ext(44), cat(ipv6_frag(6, 185, false), tcp(1, 2, kTcpSyn)))));
    expect_parsed(f, ipv6_key(6), 14, 0, 0);
}

TEST(ParseIpv6, UnwalkedNextHeaderIsTheProtocol) {
    // ESP (50) is not walked; No Next Header (59) neither.
    expect_parsed(eth(0x86dd, ipv6(50, payload(32))), ipv6_key(50), 14, 54, 0);
    expect_parsed(eth(0x86dd, ipv6(60, ipv6_ext(59))), ipv6_key(59), 14, 62, 0);
}

TEST(ParseIpv6, EthernetPaddingIsIgnored) {
    // 8-byte UDP in IPv6 is 62 bytes; a trailing FCS-like 4 bytes must not matter.
    const Bytes f = eth(0x86dd, ipv6(17, udp(1, 2)), {}, 66);
    expect_parsed(f, ipv6_key(17, 1, 2), 14, 54, 0);
}

TEST(ParseIpv6, BadVersion) {
    Bytes f = eth(0x86dd, ipv6(17, udp(1, 2)));
    f[14] = 0x40;
    expect_drop(f, DropReason::kBadL3);
}

TEST(ParseIpv6, PayloadLengthBeyondFrame) {
    expect_drop(eth(0x86dd, ipv6(17, udp(1, 2), 9)), DropReason::kBadL3);
}

TEST(ParseIpv6, ExtensionHeaderPastPayload) {
    // Routing header claims 24 bytes but the payload length ends after 16; padding follows.
    const Bytes f = eth(0x86dd, ipv6(43, cat(ipv6_ext(17, 2), udp(1, 2)), 16), {}, 200);
    expect_drop(f, DropReason::kBadL3);
    // Fragment header cut short by the payload length.
    expect_drop(eth(0x86dd, ipv6(44, ipv6_frag(17, 0, false), 7), {}, 100), DropReason::kBadL3);
}

TEST(ParseIpv6, ShortTransportHeaders) {
    expect_drop(eth(0x86dd, ipv6(6, payload(40), 19)), DropReason::kBadL4);
    expect_drop(eth(0x86dd, ipv6(17, payload(40), 7)), DropReason::kBadL4);
    expect_drop(eth(0x86dd, ipv6(58, payload(40), 3)), DropReason::kBadL4);
    // Extension headers that consume the whole payload leave no room for UDP.
    expect_drop(eth(0x86dd, ipv6(0, ipv6_ext(17))), DropReason::kBadL4);
}

// ---- Alignment ----------------------------------------------------------------------------------

TEST(ParseAlignment, OddAddressGivesTheSameResult) {
    const Bytes f = eth(0x86dd, ipv6(6, tcp(50000, 22, kTcpAck)), {{0x8100, 7}});
    Bytes shifted(f.size() + 1);
    std::memcpy(shifted.data() + 1, f.data(), f.size());
    FlowKey key;
    PacketLayout layout;
    ASSERT_EQ(parse_frame(shifted.data() + 1, static_cast<uint32_t>(f.size()), 3, &key, &layout),
              std::nullopt);
    FlowKey want = ipv6_key(6, 50000, 22, kTcpAck);
    want.vlan = 7;
    expect_key(key, want);
    expect_layout(layout, 18, 58, 1);
}

// ---- Truncation at every length -----------------------------------------------------------------

struct TruncationCase {
    const char* name;
    Bytes frame;
    size_t l3_offset;  // end of the L2 header
    size_t ip_end;     // end of the IP packet; 0 for non-IP frames
};

std::vector<TruncationCase> truncation_cases() {
    Ipv4Options opts;
    opts.option_words = 2;
    Ipv4Options non_first;
    non_first.frag_field = 0x0020;
    const Bytes v6_chain = cat(ipv6_ext(43, 1), cat(ipv6_frag(60, 0, true), ipv6_ext(6)));
    std::vector<TruncationCase> cases = {
        {"Ipv4TcpOptions", eth(0x0800, ipv4(6, tcp(1, 2, kTcpSyn, 6, 7), opts)), 14, 0},
        {"QinQIpv4UdpPadded",
         eth(0x0800, ipv4(17, udp(53, 5353)), {{0x88a8, 100}, {0x8100, 200}}, 64), 22, 0},
        {"Ipv4Icmp", eth(0x0800, ipv4(1, icmp(8, 0))), 14, 0},
        {"Ipv4NonFirstFragment", eth(0x0800, ipv4(17, payload(16), non_first), {}, 60), 14, 0},
        {"Ipv6ExtTcp", eth(0x86dd, ipv6(43, cat(v6_chain, tcp(80, 1234, kTcpFin)))), 14, 0},
        {"VlanIpv6Icmpv6Padded", eth(0x86dd, ipv6(58, icmp(128, 0, 8)), {{0x8100, 1}}, 80), 18, 0},
        {"VlanArp", eth(0x0806, arp_request(), {{0x8100, 3}}), 18, 0},
    };
    for (TruncationCase& c : cases) {
        const uint16_t ethertype =
            static_cast<uint16_t>(c.frame[c.l3_offset - 2] << 8 | c.frame[c.l3_offset - 1]);
        const uint8_t* ip = c.frame.data() + c.l3_offset;
        if (ethertype == 0x0800) c.ip_end = c.l3_offset + (ip[2] << 8 | ip[3]);
        if (ethertype == 0x86dd) c.ip_end = c.l3_offset + 40 + (ip[4] << 8 | ip[5]);
    }
    return cases;
}

class ParseTruncation : public testing::TestWithParam<TruncationCase> {};

TEST_P(ParseTruncation, EveryPrefixIsRejectedForTheRightReasonOrIsOnlyMissingPadding) {
    const TruncationCase& c = GetParam();
    const Parsed full = parse(c.frame);
    ASSERT_EQ(full.drop, std::nullopt);
    ASSERT_EQ(full.layout.l3_offset, c.l3_offset);
    for (size_t len = 0; len < c.frame.size(); ++len) {
        SCOPED_TRACE(len);
        const Parsed p = parse(c.frame, len);
        std::optional<DropReason> want;
        if (len < 14) {
            want = DropReason::kRunt;
        } else if (len < c.l3_offset) {
            want = DropReason::kBadVlan;
        } else if (len < c.ip_end) {
            want = DropReason::kBadL3;
        }
        ASSERT_EQ(p.drop.has_value(), want.has_value())
            << (p.drop ? drop_reason_name(*p.drop) : "accepted");
        if (want) {
            EXPECT_EQ(drop_reason_name(*p.drop), drop_reason_name(*want));
        } else {
            // Only padding (or, for non-IP frames, unparsed payload) was cut: same result.
            expect_key(p.key, full.key);
            EXPECT_EQ(hex(&p.layout, sizeof(p.layout)), hex(&full.layout, sizeof(full.layout)));
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Frames, ParseTruncation, testing::ValuesIn(truncation_cases()),
                         [](const testing::TestParamInfo<TruncationCase>& info) {
                             return std::string(info.param.name);
                         });

// ---- Frames in segments: headers must lie in the first -----------------------------------------

struct SplitCase {
    const char* name;
    Bytes frame;
    size_t header_end;  // bytes the first segment must hold: every header the parser reads
};

std::vector<SplitCase> split_cases() {
    Ipv4Options opts;
    opts.option_words = 2;
    Ipv4Options non_first;
    non_first.frag_field = 0x0020;
    const Bytes v6_chain = cat(ipv6_ext(43, 1), cat(ipv6_frag(60, 0, true), ipv6_ext(6)));
    Bytes quoted = ipv4(17, udp(53, 5353, 100));
    return {
        {"Ipv4TcpOptions", eth(0x0800, ipv4(6, tcp(1, 2, kTcpAck, 3000, 7), opts)), 14 + 28 + 28},
        {"Ipv4Udp", eth(0x0800, ipv4(17, udp(53, 5353, 3000))), 14 + 20 + 8},
        {"QinQIpv4Udp", eth(0x0800, ipv4(17, udp(53, 5353, 3000)), {{0x88a8, 100}, {0x8100, 200}}),
         22 + 20 + 8},
        {"Ipv4EchoRequest", eth(0x0800, ipv4(1, icmp(8, 0, 4000))), 14 + 20 + 8},
        // An ICMP error is read up to its quote's ports: the whole message must be there.
        {"Ipv4PortUnreachable", eth(0x0800, ipv4(1, cat(icmp(3, 3, 4), quoted))),
         14 + 20 + 8 + quoted.size()},
        {"Ipv4NonFirstFragment", eth(0x0800, ipv4(17, payload(3000), non_first)), 14 + 20},
        {"Ipv4Sctp", eth(0x0800, ipv4(132, cat(sctp(1, 2), payload(3000)))), 14 + 20 + 12},
        {"Ipv6ExtTcp", eth(0x86dd, ipv6(43, cat(v6_chain, tcp(80, 1234, kTcpAck, 3000)))),
         14 + 40 + 16 + 8 + 8 + 20},
        {"Ipv6Icmpv6Echo", eth(0x86dd, ipv6(58, icmp(128, 0, 3000))), 14 + 40 + 8},
        {"VlanArp", eth(0x0806, cat(arp_request(), payload(3000)), {{0x8100, 3}}), 18},
        {"Ipv4Gre", eth(0x0800, ipv4(47, payload(3000))), 14 + 20},
    };
}

class ParseSplit : public testing::TestWithParam<SplitCase> {};

TEST_P(ParseSplit, HeadersMustLieInTheFirstSegmentAndNothingPastItIsRead) {
    // Parses the frame with only its first `head` bytes readable (a heap buffer of exactly head
    // bytes, so a sanitizer build catches a read past it), for every head. Expects kSplitHeaders
    // below the end of the headers, and from there on the result of the contiguous parse, with
    // the layout marked segmented while bytes remain past head.
    const SplitCase& c = GetParam();
    const Parsed full = parse(c.frame);
    ASSERT_EQ(full.drop, std::nullopt);
    const auto len = static_cast<uint32_t>(c.frame.size());
    for (uint32_t head = 0; head <= len; ++head) {
        SCOPED_TRACE(head);
        auto buf = std::make_unique<uint8_t[]>(head + 1);  // never 0 bytes; only head are valid
        std::memcpy(buf.get(), c.frame.data(), head);
        Parsed p;
        p.drop = parse_frame(buf.get(), head, len, 3, &p.key, &p.layout);
        expect_same_without_key(buf.get(), head, len, p.drop, p.layout);
        if (head < c.header_end) {
            ASSERT_TRUE(p.drop.has_value());
            EXPECT_EQ(drop_reason_name(*p.drop), "split_headers");
            continue;
        }
        ASSERT_EQ(p.drop, std::nullopt) << drop_reason_name(*p.drop);
        expect_key(p.key, full.key);
        EXPECT_EQ(p.layout.l3_offset, full.layout.l3_offset);
        EXPECT_EQ(p.layout.l4_offset, full.layout.l4_offset);
        EXPECT_EQ(p.layout.vlan_tags, full.layout.vlan_tags);
        EXPECT_EQ(p.layout.segmented, head < len ? 1 : 0);
    }
}

INSTANTIATE_TEST_SUITE_P(Frames, ParseSplit, testing::ValuesIn(split_cases()),
                         [](const testing::TestParamInfo<SplitCase>& info) {
                             return std::string(info.param.name);
                         });

TEST(ParseSplitLengths, IpLengthsAreCheckedAgainstTheWholeFrame) {
    // A 3,042-byte UDP frame whose first 1,000 bytes are readable: accepted (its IPv4 total
    // length is checked against the frame, not the segment). The same frame cut at 3,000 bytes,
    // with the same first segment: kBadL3, as the contiguous cut frame is.
    const Bytes f = eth(0x0800, ipv4(17, udp(53, 5353, 3000)));
    FlowKey k;
    PacketLayout l;
    EXPECT_EQ(parse_frame(f.data(), 1000, static_cast<uint32_t>(f.size()), 3, &k, &l),
              std::nullopt);
    EXPECT_EQ(l.segmented, 1);
    auto cut = parse_frame(f.data(), 1000, 3000, 3, &k, &l);
    ASSERT_TRUE(cut.has_value());
    EXPECT_EQ(drop_reason_name(*cut), "bad_l3");
}

}  // namespace
}  // namespace ferry
