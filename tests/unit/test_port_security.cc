// Port security's verdicts on the frames a guest can send: its own addresses pass; another's MAC,
// IP, ARP or Neighbor Discovery claim, and Router Advertisements, are dropped with their own
// reasons. Frames are built byte by byte and parsed by the real parser first, as the worker does.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control/port_security_config.h"
#include "dataplane/packet_parse.h"
#include "dataplane/port_security.h"

namespace ferry {
namespace {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

constexpr Mac kVmMac = {0x02, 0, 0, 0, 0, 0x01};
constexpr Mac kVipMac = {0x02, 0, 0, 0, 0, 0x0a};  // an allowed address pair's own MAC
constexpr Mac kVictimMac = {0x02, 0, 0, 0, 0, 0x02};

Bytes v4(const char* text) {
    Bytes b(4);
    inet_pton(AF_INET, text, b.data());
    return b;
}

Bytes v6(const char* text) {
    Bytes b(16);
    inet_pton(AF_INET6, text, b.data());
    return b;
}

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

void append(Bytes& b, const Bytes& more) {
    for (uint8_t x : more) b.push_back(x);
}

Bytes eth(const Mac& src, uint16_t type, const Bytes& payload) {
    Bytes f = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    f.insert(f.end(), src.begin(), src.end());
    put16(f, type);
    append(f, payload);
    while (f.size() < 60) f.push_back(0);
    return f;
}

Bytes arp(const Mac& sha, const Bytes& spa, const Bytes& tpa, uint16_t op = 1) {
    Bytes a;
    put16(a, 1);
    put16(a, 0x0800);
    a.push_back(6);
    a.push_back(4);
    put16(a, op);
    a.insert(a.end(), sha.begin(), sha.end());
    append(a, spa);
    append(a, Bytes(6, 0));
    append(a, tpa);
    return a;
}

Bytes udp(uint16_t sport, uint16_t dport) {
    Bytes u;
    put16(u, sport);
    put16(u, dport);
    put16(u, 8 + 4);
    put16(u, 0);
    append(u, Bytes(4, 0x55));
    return u;
}

Bytes ipv4(const Bytes& src, const Bytes& dst, uint8_t proto, const Bytes& l4) {
    Bytes ip = {0x45, 0};
    put16(ip, static_cast<uint16_t>(20 + l4.size()));
    append(ip, {0, 1, 0, 0, 64, proto, 0, 0});
    append(ip, src);
    append(ip, dst);
    append(ip, l4);
    return ip;
}

Bytes ipv6(const Bytes& src, const Bytes& dst, uint8_t next, const Bytes& payload) {
    Bytes ip = {0x60, 0, 0, 0};
    put16(ip, static_cast<uint16_t>(payload.size()));
    ip.push_back(next);
    ip.push_back(255);
    append(ip, src);
    append(ip, dst);
    append(ip, payload);
    return ip;
}

// An ICMPv6 message; for NS/NA the target follows the 32-bit word, then the options.
Bytes icmpv6(uint8_t type, const Bytes& target = {}, const Bytes& options = {}) {
    Bytes m = {type, 0, 0, 0, 0, 0, 0, 0};
    append(m, target);
    append(m, options);
    return m;
}

Bytes lla_option(uint8_t type, const Mac& mac) {
    Bytes o = {type, 1};
    o.insert(o.end(), mac.begin(), mac.end());
    return o;
}

Bytes eui64_link_local(const Mac& m) {
    Bytes a = v6("fe80::");
    const uint8_t iid[8] = {
        static_cast<uint8_t>(m[0] ^ 2), m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]};
    std::copy(iid, iid + 8, a.begin() + 8);
    return a;
}

PortSecurity vm_security() {
    PortSecurityConfig c;
    c.mac = "02:00:00:00:00:01";
    c.ips = {"10.0.0.5/24", "2001:db8::5/64"};
    c.allowed_address_pairs = {{"10.0.0.100", "02:00:00:00:00:0a"}, {"192.168.7.0/24", ""}};
    auto s = compile_port_security(c, "security");
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return s.ok() ? s.value() : PortSecurity{};
}

std::optional<DropReason> verdict(const Bytes& frame) {
    static const PortSecurity sec = vm_security();
    FlowKey key{};
    PacketLayout layout{};
    auto bad = parse_frame(frame.data(), static_cast<uint32_t>(frame.size()), 1, &key, &layout);
    EXPECT_FALSE(bad) << "the parser refused a test frame";
    if (bad) return bad;
    return port_security_check(sec, frame.data(), static_cast<uint32_t>(frame.size()), key, layout);
}

constexpr uint16_t kIpv4 = 0x0800;
constexpr uint16_t kArp = 0x0806;
constexpr uint16_t kIpv6 = 0x86dd;

TEST(PortSecurity, OwnAddressesPass) {
    EXPECT_EQ(verdict(eth(kVmMac, kIpv4, ipv4(v4("10.0.0.5"), v4("10.0.0.9"), 17, udp(1, 2)))),
              std::nullopt);
    EXPECT_EQ(verdict(eth(kVmMac, kArp, arp(kVmMac, v4("10.0.0.5"), v4("10.0.0.9")))),
              std::nullopt);
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv6, ipv6(v6("2001:db8::5"), v6("2001:db8::9"), 17, udp(1, 2)))),
        std::nullopt);
    // Allowed address pairs: a prefix with the port's MAC, an address with a MAC of its own.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv4, ipv4(v4("192.168.7.33"), v4("10.0.0.9"), 17, udp(1, 2)))),
              std::nullopt);
    EXPECT_EQ(verdict(eth(kVipMac, kArp, arp(kVipMac, v4("10.0.0.100"), v4("10.0.0.9")))),
              std::nullopt);
    // The link-local address derived from the port's MAC, as a guest configures by default.
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv6, ipv6(eui64_link_local(kVmMac), v6("ff02::1"), 17, udp(1, 2)))),
        std::nullopt);
    // Non-IP traffic from the port's MAC (LLDP here) is not the business of address checks.
    EXPECT_EQ(verdict(eth(kVmMac, 0x88cc, Bytes(20, 0))), std::nullopt);
}

TEST(PortSecurity, ForeignSourceMacDropped) {
    EXPECT_EQ(verdict(eth(kVictimMac, kIpv4, ipv4(v4("10.0.0.5"), v4("10.0.0.9"), 17, udp(1, 2)))),
              DropReason::kPortSecMac);
    EXPECT_EQ(verdict(eth(kVictimMac, 0x88cc, Bytes(20, 0))), DropReason::kPortSecMac);
}

TEST(PortSecurity, ForeignSourceIpDropped) {
    EXPECT_EQ(verdict(eth(kVmMac, kIpv4, ipv4(v4("10.0.0.6"), v4("10.0.0.9"), 17, udp(1, 2)))),
              DropReason::kPortSecIp);
    // The fixed address's /24 is its subnet, not a range the guest may use.
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv4, ipv4(v4("10.0.0.77"), v4("10.0.0.9"), 6, Bytes(20, 0x50)))),
        DropReason::kPortSecIp);
    // The pair's address only with the pair's MAC.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv4, ipv4(v4("10.0.0.100"), v4("10.0.0.9"), 17, udp(1, 2)))),
              DropReason::kPortSecIp);
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv6, ipv6(v6("2001:db8::6"), v6("2001:db8::9"), 17, udp(1, 2)))),
        DropReason::kPortSecIp);
    // A link-local address of another MAC.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(eui64_link_local(kVictimMac), v6("ff02::1"), 17, udp(1, 2)))),
              DropReason::kPortSecIp);
}

TEST(PortSecurity, UnspecifiedSourceOnlyForDhcpAndDad) {
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv4, ipv4(v4("0.0.0.0"), v4("255.255.255.255"), 17, udp(68, 67)))),
        std::nullopt);
    EXPECT_EQ(verdict(eth(kVmMac, kIpv4, ipv4(v4("0.0.0.0"), v4("10.0.0.9"), 17, udp(53, 53)))),
              DropReason::kPortSecIp);
    // Duplicate address detection for the port's own address passes; for another's, a VM could
    // make that guest give its address up.
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv6,
                    ipv6(v6("::"), v6("ff02::1:ff00:5"), 58, icmpv6(135, v6("2001:db8::5"))))),
        std::nullopt);
    EXPECT_EQ(
        verdict(eth(kVmMac, kIpv6,
                    ipv6(v6("::"), v6("ff02::1:ff00:6"), 58, icmpv6(135, v6("2001:db8::6"))))),
        DropReason::kPortSecNd);
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(v6("::"), v6("2001:db8::9"), 17, udp(1, 2)))),
              DropReason::kPortSecIp);
}

TEST(PortSecurity, ArpSpoofDropped) {
    // Claiming the victim's address, with the port's MAC in the ARP payload.
    EXPECT_EQ(verdict(eth(kVmMac, kArp, arp(kVmMac, v4("10.0.0.6"), v4("10.0.0.9"), 2))),
              DropReason::kPortSecArp);
    // The port's own address, but announced for another MAC (poisoning caches towards it).
    EXPECT_EQ(verdict(eth(kVmMac, kArp, arp(kVictimMac, v4("10.0.0.5"), v4("10.0.0.9"), 2))),
              DropReason::kPortSecArp);
    // A probe claims nothing, as long as its sender MAC is the port's.
    EXPECT_EQ(verdict(eth(kVmMac, kArp, arp(kVmMac, v4("0.0.0.0"), v4("10.0.0.5")))), std::nullopt);
    EXPECT_EQ(verdict(eth(kVmMac, kArp, arp(kVictimMac, v4("0.0.0.0"), v4("10.0.0.5")))),
              DropReason::kPortSecArp);
    Bytes not_ipv4 = arp(kVmMac, v4("10.0.0.5"), v4("10.0.0.9"));
    not_ipv4[2] = 0x86;  // protocol type IPv6: nothing a port needs to send
    EXPECT_EQ(verdict(eth(kVmMac, kArp, not_ipv4)), DropReason::kPortSecArp);
}

TEST(PortSecurity, NeighborAdvertisementSpoofDropped) {
    const Bytes src = v6("2001:db8::5");
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(src, v6("ff02::1"), 58,
                               icmpv6(136, v6("2001:db8::5"), lla_option(2, kVmMac))))),
              std::nullopt);
    // Claiming the victim's address.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(src, v6("ff02::1"), 58,
                               icmpv6(136, v6("2001:db8::6"), lla_option(2, kVmMac))))),
              DropReason::kPortSecNd);
    // The port's address, but at another MAC.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(src, v6("ff02::1"), 58,
                               icmpv6(136, v6("2001:db8::5"), lla_option(2, kVictimMac))))),
              DropReason::kPortSecNd);
    // A solicitation whose source link-layer option names another MAC.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(src, v6("ff02::1:ff00:9"), 58,
                               icmpv6(135, v6("2001:db8::9"), lla_option(1, kVictimMac))))),
              DropReason::kPortSecNd);
    // An option of length zero (RFC 4861 §4.6: invalid) and a truncated advertisement.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6,
                          ipv6(src, v6("ff02::1"), 58,
                               icmpv6(136, v6("2001:db8::5"), {2, 0, 0, 0, 0, 0, 0, 0})))),
              DropReason::kPortSecNd);
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(src, v6("ff02::1"), 58, icmpv6(136, Bytes(8, 0))))),
              DropReason::kPortSecNd);
}

TEST(PortSecurity, RouterAdvertisementsAndRedirectsDropped) {
    const Bytes ll = eui64_link_local(kVmMac);
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(ll, v6("ff02::1"), 58, icmpv6(134, Bytes(8, 0))))),
              DropReason::kPortSecRa);
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(ll, v6("ff02::1"), 58, icmpv6(137, Bytes(32, 0))))),
              DropReason::kPortSecRa);
    // Behind a destination options header (RA-Guard evasion, RFC 7113): still an RA.
    Bytes with_ext = {58, 0, 1, 4, 0, 0, 0, 0};
    append(with_ext, icmpv6(134, Bytes(8, 0)));
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(ll, v6("ff02::1"), 60, with_ext))),
              DropReason::kPortSecRa);
    // Router solicitations are a guest's to send.
    EXPECT_EQ(verdict(eth(kVmMac, kIpv6, ipv6(ll, v6("ff02::2"), 58, icmpv6(133)))), std::nullopt);
}

TEST(PortSecurityConfig, RefusesWhatItCannotEnforce) {
    auto refusal = [](PortSecurityConfig c) {
        auto r = compile_port_security(c, "ports[0].security");
        return r.ok() ? std::string("accepted") : r.error().message;
    };
    PortSecurityConfig ok;
    ok.mac = "02:00:00:00:00:01";
    EXPECT_EQ(refusal(ok), "accepted");

    PortSecurityConfig c = ok;
    c.mac = "01:00:5e:00:00:01";  // multicast
    EXPECT_NE(refusal(c).find("ports[0].security.mac: must be a unicast MAC"), std::string::npos);
    c.mac = "00:00:00:00:00:00";
    EXPECT_NE(refusal(c).find("ports[0].security.mac"), std::string::npos);

    c = ok;
    c.ips = {"10.0.0.5/33"};
    EXPECT_NE(refusal(c).find("ports[0].security.ips[0]"), std::string::npos);
    c.ips = {"10.0.0.300"};
    EXPECT_NE(refusal(c).find("ports[0].security.ips[0]"), std::string::npos);

    c = ok;
    c.allowed_address_pairs = {{"10.0.0.5/24", ""}};
    EXPECT_NE(refusal(c).find("allowed_address_pairs[0].ip: 10.0.0.5/24 has bits set beyond"),
              std::string::npos);
    c.allowed_address_pairs = {{"10.0.0.0/24", "ff:ff:ff:ff:ff:ff"}};
    EXPECT_NE(refusal(c).find("allowed_address_pairs[0].mac"), std::string::npos);

    c = ok;
    for (int i = 0; i < kPortSecurityEntries; ++i) c.ips.push_back("10.0.1." + std::to_string(i));
    EXPECT_NE(refusal(c).find("at most 16 entries"), std::string::npos);
}

}  // namespace
}  // namespace ferry
