// Unit tests of the migration stream (docs/migration-stream.md): the CRC, the round trip of
// every section through write_stream and read_stream, deltas (a re-sent connection replaces the
// first, CONNECTIONS_GONE drops one, DPI entries follow their connection), every refusal of the
// reader (each checked by its message), and the golden streams of released versions under
// tests/migrate/golden/.
//
// Malformed streams are made two ways: StreamWriter::section() with a payload built by hand (or
// by an encoder given bad values), or a valid stream with bytes patched and its CRCs fixed
// (sections_of, fix_section_crc, fix_header_crc, fix_trailer below).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/ip_proto.h"
#include "migrate/crc32c.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_format.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

using Bytes = std::vector<uint8_t>;
using Addr = std::array<uint8_t, 16>;

// ---- Values ------------------------------------------------------------------------------------

Addr ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    Addr x{};
    x[0] = a;
    x[1] = b;
    x[2] = c;
    x[3] = d;
    return x;
}

/// An IPv6 address from its groups (missing trailing groups are zero).
Addr ip6(std::initializer_list<uint16_t> groups) {
    Addr x{};
    size_t i = 0;
    for (uint16_t g : groups) {
        x[2 * i] = static_cast<uint8_t>(g >> 8);
        x[2 * i + 1] = static_cast<uint8_t>(g);
        ++i;
    }
    return x;
}

CtTuple ct_tuple(uint8_t ip_version, uint8_t proto, const Addr& src, uint16_t sport,
                 const Addr& dst, uint16_t dport, uint16_t zone = 0) {
    CtTuple t;
    std::memset(&t, 0, sizeof(t));
    t.ip_version = ip_version;
    t.proto = proto;
    t.zone = zone;
    std::memcpy(t.src, src.data(), 16);
    std::memcpy(t.dst, dst.data(), 16);
    t.sport = sport;
    t.dport = dport;
    return t;
}

MigratedAddress address(uint8_t family, uint8_t prefix, uint16_t flags, const Addr& a) {
    MigratedAddress m;
    m.family = family;
    m.prefix_length = prefix;
    m.flags = flags;
    m.address = a;
    return m;
}

MigratedPort make_port(const std::string& name, std::vector<MigratedAddress> addresses = {}) {
    MigratedPort p;
    p.name = name;
    p.mac = {0x02, 0, 0, 0, 0, static_cast<uint8_t>(name.size())};
    p.addresses = std::move(addresses);
    return p;
}

/// "p0", "p1", ... (built by appending: GCC 12 warns falsely on "p" + std::to_string(i)).
std::string numbered(const char* prefix, size_t i) {
    std::string s = prefix;
    s += std::to_string(i);
    return s;
}

MigratedMac make_mac(uint8_t last, uint16_t vlan, uint16_t port, uint32_t age_ms) {
    MigratedMac m;
    m.mac = {0x52, 0x54, 0x00, 0x12, 0x34, last};
    m.vlan = vlan;
    m.port = port;
    m.age_ms = age_ms;
    return m;
}

/// A connection of orig (reply its reverse) whose other fields are varied by seed so that no
/// two connections, and no two fields, carry the same value. TCP ones are ESTABLISHED with both
/// peers filled in; the others are kFirst with zero peers. port_count: the stream's ports.
MigratedConnection make_connection(const CtTuple& orig, uint32_t seed, uint16_t port_count = 3) {
    MigratedConnection c;
    c.orig = orig;
    c.reply = ct_tuple_reverse(orig);
    c.mark = 0x01000000u * (seed % 200 + 1) + seed;
    c.remaining_ms = 1000u * (seed + 1) + 7;
    c.port[0] = static_cast<uint16_t>(seed % port_count);
    c.port[1] = seed % 4 == 3 ? kNoStreamPort : static_cast<uint16_t>((seed + 1) % port_count);
    c.seq_offset[0] = -static_cast<int32_t>(seed * 1000 + 1);
    c.seq_offset[1] = static_cast<int32_t>(seed * 777 + 3);
    if (orig.proto == kProtoTcp) {
        c.tcp_state = TcpState::kEstablished;
        for (int d = 0; d < 2; ++d) {
            TcpPeer& p = c.peer[d];
            p.end = 0x10000000u + seed * 31 + static_cast<uint32_t>(d);
            p.maxend = p.end + 65535u + static_cast<uint32_t>(d);
            p.maxwin = 29200u + seed + static_cast<uint32_t>(d);
            p.scale = static_cast<uint8_t>((seed + static_cast<uint32_t>(d) * 7) % 15);
            p.flags = static_cast<uint8_t>((seed + static_cast<uint32_t>(d)) & 0x0f);
        }
        c.tcp_retrans = seed % 5;
    }
    c.packets[0] = 1000u + seed;
    c.packets[1] = (uint64_t{seed} << 33) + 5;
    c.bytes[0] = (uint64_t{seed} << 40) + 1500;
    c.bytes[1] = 0xfedcba9876543210ull - seed;
    return c;
}

MigratedDpi make_dpi(uint32_t connection, uint64_t hash, uint8_t state0, uint8_t state1,
                     Bytes stream0, Bytes stream1) {
    MigratedDpi d;
    d.connection = connection;
    d.state.db_hash = hash;
    d.state.dir_state[0] = state0;
    d.state.dir_state[1] = state1;
    d.state.seen[0] = static_cast<uint32_t>(stream0.size()) * 3 + 1;
    d.state.seen[1] = 0x80000000u + connection;
    d.state.next_seq[0] = 0xdeadbeefu - connection;
    d.state.next_seq[1] = connection * 1000;
    d.state.streams[0] = std::move(stream0);
    d.state.streams[1] = std::move(stream1);
    return d;
}

Bytes pattern(size_t n, uint32_t seed) {
    Bytes b(n);
    uint32_t x = seed * 2654435761u + 1;
    for (uint8_t& v : b) {
        x = x * 1103515245u + 12345u;
        v = static_cast<uint8_t>(x >> 16);
    }
    return b;
}

MigrationState meta(StreamScope scope = StreamScope::kSwitch) {
    MigrationState s;
    s.scope = scope;
    s.stream_id = 0x0123456789abcdefull;
    s.ferryd_version = "0.2.0";
    s.hyperscan_version = "5.4.0 2023-01-01";
    return s;
}

/// A state with every section and every kind of value: three ports (IPv4 and IPv6 addresses,
/// every address flag, a 31-byte name), tagged and untagged MACs, TCP in every state, UDP first
/// and multiple, ICMP and ICMPv6 echo, IPv6, SNAT, DNAT and both, every connection flag and peer
/// flag, every window scale, extreme offsets and counters, DPI streams, rules.
MigrationState full_state() {
    MigrationState s = meta();
    s.ports.push_back(make_port(
        "eth0",
        {address(4, 24, kAddrConfigured, ip4(10, 0, 0, 1)),
         address(6, 64, kAddrConfigured | kAddrLearned, ip6({0x2001, 0xdb8, 0, 0, 0, 0, 0, 1})),
         address(6, 64, kAddrLinkLocal | kAddrLearned, ip6({0xfe80, 0, 0, 0, 0, 0, 0, 1})),
         address(4, 32, 0, ip4(192, 168, 1, 1)),
         address(6, 128, kAddrConfigured | kAddrLearned | kAddrLinkLocal,
                 ip6({0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xffff})),
         address(4, 0, kAddrLearned, ip4(0, 0, 0, 0))}));
    MigratedPort vm = make_port("vm-1.a_B");
    vm.mac = {};
    s.ports.push_back(vm);
    MigratedPort up = make_port("abcdefghijklmnopqrstuvwxyz01234",  // 31 bytes
                                {address(4, 16, kAddrConfigured, ip4(172, 16, 0, 1))});
    up.mac = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa};
    s.ports.push_back(up);

    s.macs = {make_mac(1, 0xffff, 0, 0), make_mac(2, 0, 1, 1), make_mac(3, 100, 2, 123456),
              make_mac(4, 4095, 0, 0xffffffffu), make_mac(5, 0xffff, 2, 77)};

    const Addr client = ip4(10, 0, 0, 2), server = ip4(93, 184, 216, 34);
    uint32_t seed = 0;
    // TCP in every state, with every window scale and every peer flag combination between them.
    for (uint8_t st = static_cast<uint8_t>(TcpState::kSynSent);
         st < static_cast<uint8_t>(TcpState::kCount); ++st) {
        MigratedConnection c = make_connection(
            ct_tuple(4, kProtoTcp, client, static_cast<uint16_t>(40000 + st), server, 443), seed++);
        c.tcp_state = static_cast<TcpState>(st);
        c.flags = static_cast<uint8_t>(st % 2 ? kCtfSeenReply : kCtfSeenReply | kCtfAssured);
        s.connections.push_back(c);
    }
    for (uint8_t scale = 0; scale <= 14; scale += 7) {
        MigratedConnection c = make_connection(
            ct_tuple(4, kProtoTcp, client, static_cast<uint16_t>(41000 + scale), server, 80),
            seed++);
        c.peer[0].scale = scale;
        c.peer[1].scale = static_cast<uint8_t>(14 - scale);
        c.peer[0].flags =
            kTcpPeerWindowScale | kTcpPeerSackPerm | kTcpPeerCloseInit | kTcpPeerMaxAckSet;
        c.peer[1].flags = 0;
        s.connections.push_back(c);
    }
    // IPv6 TCP in a zone.
    s.connections.push_back(
        make_connection(ct_tuple(6, kProtoTcp, ip6({0x2001, 0xdb8, 0, 0, 0, 0, 0, 2}), 50000,
                                 ip6({0x2001, 0xdb8, 1, 0, 0, 0, 0, 5}), 22, 7),
                        seed++));
    // UDP, first and multiple.
    MigratedConnection udp1 = make_connection(
        ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 3), 5353, ip4(224, 0, 0, 251), 5353), seed++);
    udp1.other_state = CtOtherState::kFirst;
    s.connections.push_back(udp1);
    MigratedConnection udp2 = make_connection(
        ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 3), 40001, ip4(10, 0, 0, 53), 53), seed++);
    udp2.other_state = CtOtherState::kMultiple;
    udp2.flags = kCtfAssured | kCtfSeenReply;
    s.connections.push_back(udp2);
    // ICMP and ICMPv6 echo: both ports are the identifier.
    MigratedConnection icmp = make_connection(
        ct_tuple(4, kProtoIcmp, ip4(10, 0, 0, 4), 0x1234, ip4(8, 8, 8, 8), 0x1234), seed++);
    icmp.other_state = CtOtherState::kMultiple;
    s.connections.push_back(icmp);
    s.connections.push_back(
        make_connection(ct_tuple(6, kProtoIcmpv6, ip6({0x2001, 0xdb8, 0, 0, 0, 0, 0, 4}), 7,
                                 ip6({0x2001, 0x4860, 0, 0, 0, 0, 0, 0x8888}), 7),
                        seed++));
    // SNAT: reply goes to the translated source.
    MigratedConnection snat = make_connection(
        ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 5), 1234, ip4(8, 8, 4, 4), 53), seed++);
    snat.reply = ct_tuple(4, kProtoUdp, ip4(8, 8, 4, 4), 53, ip4(203, 0, 113, 1), 61000);
    snat.flags = kCtfSrcNat | kCtfSeenReply;
    s.connections.push_back(snat);
    // DNAT: reply comes from the translated destination.
    MigratedConnection dnat = make_connection(
        ct_tuple(4, kProtoTcp, ip4(198, 51, 100, 9), 5555, ip4(203, 0, 113, 1), 80), seed++);
    dnat.reply = ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 7), 8080, ip4(198, 51, 100, 9), 5555);
    dnat.flags = kCtfDstNat | kCtfAssured | kCtfSeenReply;
    s.connections.push_back(dnat);
    // Both, IPv6.
    MigratedConnection both =
        make_connection(ct_tuple(6, kProtoTcp, ip6({0xfd00, 0, 0, 0, 0, 0, 0, 5}), 1000,
                                 ip6({0x2001, 0xdb8, 9, 0, 0, 0, 0, 9}), 443, 3),
                        seed++);
    both.reply = ct_tuple(6, kProtoTcp, ip6({0xfd00, 0, 0, 0, 0, 0, 0, 9}), 8443,
                          ip6({0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1}), 2000, 3);
    both.flags = kCtfSrcNat | kCtfDstNat;
    s.connections.push_back(both);
    // Blocked and liberal; the extremes of every number.
    MigratedConnection blocked = make_connection(
        ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 6), 6000, ip4(1, 2, 3, 4), 8000), seed++);
    blocked.flags = kCtfBlocked | kCtfLiberal | kCtfSeenReply | kCtfAssured;
    blocked.mark = 0xffffffffu;
    blocked.remaining_ms = 30u * 86400u * 1000u;
    blocked.port[0] = blocked.port[1] = kNoStreamPort;
    blocked.seq_offset[0] = std::numeric_limits<int32_t>::min();
    blocked.seq_offset[1] = std::numeric_limits<int32_t>::max();
    blocked.tcp_retrans = 0xffffffffu;
    blocked.packets[0] = blocked.bytes[1] = std::numeric_limits<uint64_t>::max();
    blocked.packets[1] = blocked.bytes[0] = 0;
    blocked.peer[0] = {0xffffffffu, 0xfffffffeu, 0xfffffffdu, 14, 0x0f, 0};
    s.connections.push_back(blocked);
    MigratedConnection liberal = make_connection(
        ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 6), 6001, ip4(1, 2, 3, 4), 8000, 0xffff), seed++);
    liberal.flags = kCtfLiberal;
    liberal.tcp_state = TcpState::kSynRecv;
    liberal.remaining_ms = 0;
    s.connections.push_back(liberal);
    // A protocol with neither ports nor echo ids (GRE).
    s.connections.push_back(
        make_connection(ct_tuple(4, 47, ip4(10, 0, 0, 8), 0, ip4(10, 9, 9, 9), 0), seed++));

    s.dpi_hash = 0x8877665544332211ull;
    s.dpi.push_back(make_dpi(0, s.dpi_hash, 0, 1, {}, pattern(256, 1)));
    s.dpi.push_back(make_dpi(3, s.dpi_hash, 2, 2, {0, 0, 0}, {0xff}));
    s.dpi.push_back(make_dpi(static_cast<uint32_t>(s.connections.size() - 1), s.dpi_hash, 1, 0,
                             pattern(kMaxDpiStreamBytes, 2), {}));
    s.rules_json = R"([{"id":1,"match":{"dst_port":22},"action":"drop"},)"
                   R"({"id":2,"action":"accept","comment":"caf\u00e9 \u2713"}])";
    return s;
}

// ---- Comparing states --------------------------------------------------------------------------

/// Collects the first difference between two states, by path ("connections[3].peer[1].scale").
class Diff {
public:
    template <class T>
    void eq(const std::string& what, const T& a, const T& b) {
        if (!first_.empty() || a == b) return;
        std::ostringstream os;
        os << what;
        if constexpr (std::is_enum_v<T>) {
            os << ": " << static_cast<long long>(a) << " vs " << static_cast<long long>(b);
        } else if constexpr (std::is_integral_v<T>) {
            os << ": " << +a << " vs " << +b;
        } else if constexpr (std::is_same_v<T, std::string>) {
            os << ": \"" << a << "\" vs \"" << b << "\"";
        }
        first_ = os.str();
    }
    const std::string& first() const { return first_; }

private:
    std::string first_;
};

std::string idx(const std::string& what, size_t i) {
    return what + "[" + std::to_string(i) + "]";
}

void compare(Diff& d, const std::string& w, const TcpPeer& a, const TcpPeer& b) {
    d.eq(w + ".end", a.end, b.end);
    d.eq(w + ".maxend", a.maxend, b.maxend);
    d.eq(w + ".maxwin", a.maxwin, b.maxwin);
    d.eq(w + ".scale", a.scale, b.scale);
    d.eq(w + ".flags", a.flags, b.flags);
}

void compare(Diff& d, const std::string& w, const MigratedConnection& a,
             const MigratedConnection& b) {
    d.eq(w + ".orig", a.orig, b.orig);
    d.eq(w + ".reply", a.reply, b.reply);
    d.eq(w + ".tcp_state", a.tcp_state, b.tcp_state);
    d.eq(w + ".other_state", a.other_state, b.other_state);
    d.eq(w + ".flags", a.flags, b.flags);
    d.eq(w + ".mark", a.mark, b.mark);
    d.eq(w + ".remaining_ms", a.remaining_ms, b.remaining_ms);
    for (size_t k = 0; k < 2; ++k) {
        d.eq(idx(w + ".port", k), a.port[k], b.port[k]);
        d.eq(idx(w + ".seq_offset", k), a.seq_offset[k], b.seq_offset[k]);
        compare(d, idx(w + ".peer", k), a.peer[k], b.peer[k]);
        d.eq(idx(w + ".packets", k), a.packets[k], b.packets[k]);
        d.eq(idx(w + ".bytes", k), a.bytes[k], b.bytes[k]);
    }
    d.eq(w + ".tcp_retrans", a.tcp_retrans, b.tcp_retrans);
}

/// Every field of two states, compared. @return success, or the first difference
::testing::AssertionResult states_equal(const MigrationState& a, const MigrationState& b) {
    Diff d;
    d.eq("scope", a.scope, b.scope);
    d.eq("stream_id", a.stream_id, b.stream_id);
    d.eq("ferryd_version", a.ferryd_version, b.ferryd_version);
    d.eq("hyperscan_version", a.hyperscan_version, b.hyperscan_version);
    d.eq("ports.size", a.ports.size(), b.ports.size());
    for (size_t i = 0; i < std::min(a.ports.size(), b.ports.size()); ++i) {
        const std::string w = idx("ports", i);
        const MigratedPort &pa = a.ports[i], &pb = b.ports[i];
        d.eq(w + ".name", pa.name, pb.name);
        d.eq(w + ".mac", pa.mac, pb.mac);
        d.eq(w + ".addresses.size", pa.addresses.size(), pb.addresses.size());
        for (size_t k = 0; k < std::min(pa.addresses.size(), pb.addresses.size()); ++k) {
            const std::string wa = idx(w + ".addresses", k);
            d.eq(wa + ".family", pa.addresses[k].family, pb.addresses[k].family);
            d.eq(wa + ".prefix_length", pa.addresses[k].prefix_length,
                 pb.addresses[k].prefix_length);
            d.eq(wa + ".flags", pa.addresses[k].flags, pb.addresses[k].flags);
            d.eq(wa + ".address", pa.addresses[k].address, pb.addresses[k].address);
        }
    }
    d.eq("macs.size", a.macs.size(), b.macs.size());
    for (size_t i = 0; i < std::min(a.macs.size(), b.macs.size()); ++i) {
        const std::string w = idx("macs", i);
        d.eq(w + ".mac", a.macs[i].mac, b.macs[i].mac);
        d.eq(w + ".vlan", a.macs[i].vlan, b.macs[i].vlan);
        d.eq(w + ".port", a.macs[i].port, b.macs[i].port);
        d.eq(w + ".age_ms", a.macs[i].age_ms, b.macs[i].age_ms);
    }
    d.eq("connections.size", a.connections.size(), b.connections.size());
    for (size_t i = 0; i < std::min(a.connections.size(), b.connections.size()); ++i)
        compare(d, idx("connections", i), a.connections[i], b.connections[i]);
    d.eq("gone.size", a.gone.size(), b.gone.size());
    for (size_t i = 0; i < std::min(a.gone.size(), b.gone.size()); ++i)
        d.eq(idx("gone", i), a.gone[i], b.gone[i]);
    d.eq("dpi_hash", a.dpi_hash, b.dpi_hash);
    d.eq("dpi.size", a.dpi.size(), b.dpi.size());
    for (size_t i = 0; i < std::min(a.dpi.size(), b.dpi.size()); ++i) {
        const std::string w = idx("dpi", i);
        const DpiStreamState &sa = a.dpi[i].state, &sb = b.dpi[i].state;
        d.eq(w + ".connection", a.dpi[i].connection, b.dpi[i].connection);
        d.eq(w + ".db_hash", sa.db_hash, sb.db_hash);
        for (size_t k = 0; k < 2; ++k) {
            d.eq(idx(w + ".dir_state", k), sa.dir_state[k], sb.dir_state[k]);
            d.eq(idx(w + ".seen", k), sa.seen[k], sb.seen[k]);
            d.eq(idx(w + ".next_seq", k), sa.next_seq[k], sb.next_seq[k]);
            d.eq(idx(w + ".streams", k), sa.streams[k], sb.streams[k]);
        }
    }
    d.eq("rules_json", a.rules_json, b.rules_json);
    if (d.first().empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "states differ at " << d.first();
}

// ---- Stream surgery ----------------------------------------------------------------------------

uint16_t get16(const Bytes& b, size_t at) {
    return static_cast<uint16_t>(b.at(at) << 8 | b.at(at + 1));
}
uint32_t get32(const Bytes& b, size_t at) {
    return uint32_t{get16(b, at)} << 16 | get16(b, at + 2);
}
void put16(Bytes& b, size_t at, uint16_t v) {
    b.at(at) = static_cast<uint8_t>(v >> 8);
    b.at(at + 1) = static_cast<uint8_t>(v);
}
void put32(Bytes& b, size_t at, uint32_t v) {
    put16(b, at, static_cast<uint16_t>(v >> 16));
    put16(b, at + 2, static_cast<uint16_t>(v));
}
void put64(Bytes& b, size_t at, uint64_t v) {
    put32(b, at, static_cast<uint32_t>(v >> 32));
    put32(b, at + 4, static_cast<uint32_t>(v));
}

/// A section of a stream: where its 12-byte header starts, its type and payload length.
struct SectionAt {
    size_t at;
    uint16_t type;
    uint32_t length;
    size_t payload() const { return at + kSectionHeaderBytes; }
};

std::vector<SectionAt> sections_of(const Bytes& s) {
    std::vector<SectionAt> out;
    for (size_t at = get16(s, 12); at + kSectionHeaderBytes <= s.size();) {
        const SectionAt sec{at, get16(s, at), get32(s, at + 4)};
        out.push_back(sec);
        at = sec.payload() + sec.length;
    }
    return out;
}

/// The nth section of a type (the test fails when there is none).
SectionAt section_of(const Bytes& s, SectionType type, size_t nth = 0) {
    for (const SectionAt& sec : sections_of(s))
        if (sec.type == static_cast<uint16_t>(type) && nth-- == 0) return sec;
    ADD_FAILURE() << "no section " << static_cast<int>(type);
    return {0, 0, 0};
}

size_t count_sections(const Bytes& s, SectionType type) {
    const auto all = sections_of(s);
    return static_cast<size_t>(std::count_if(all.begin(), all.end(), [&](const SectionAt& sec) {
        return sec.type == static_cast<uint16_t>(type);
    }));
}

void fix_section_crc(Bytes& s, const SectionAt& sec) {
    put32(s, sec.at + 8, crc32c(s.data() + sec.payload(), sec.length));
}

void fix_header_crc(Bytes& s) {
    const size_t hl = get16(s, 12);
    put32(s, hl - 4, crc32c(s.data(), hl - 4));
}

/// Sets the trailer's "bytes before" to where the trailer now is, and its CRC.
void fix_trailer(Bytes& s) {
    const SectionAt t = section_of(s, SectionType::kTrailer);
    put64(s, t.payload() + 24, t.at);
    fix_section_crc(s, t);
}

/// Sets one of the trailer's u32 counts (0 sections, 1 ports, 2 macs, 3 connections, 4 gone,
/// 5 dpi), as a test must after writing a counted section raw with StreamWriter::section().
void set_trailer_count(Bytes& s, size_t field, uint32_t value) {
    const SectionAt t = section_of(s, SectionType::kTrailer);
    put32(s, t.payload() + 4 * field, value);
    fix_section_crc(s, t);
}

/// Whether reading s fails with kInvalidParams and a message "migration stream: ... (at offset
/// N)" that contains `what` (and ends with that offset, when given).
::testing::AssertionResult refused(const Bytes& s, const std::string& what,
                                   std::optional<size_t> offset = std::nullopt) {
    // An exact-size copy: a read past the end is a read past the allocation.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[s.size() + 1]);
    std::memcpy(copy.get(), s.data(), s.size());
    const Result<MigrationState> r = read_stream(copy.get(), s.size());
    if (r) return ::testing::AssertionFailure() << "accepted; expected \"" << what << "\"";
    const std::string& m = r.error().message;
    if (r.error().code != ErrorCode::kInvalidParams)
        return ::testing::AssertionFailure()
               << "error code " << static_cast<int>(r.error().code) << ": " << m;
    if (!m.starts_with("migration stream: ") || !m.ends_with(")") ||
        m.find(" (at offset ") == std::string::npos)
        return ::testing::AssertionFailure() << "malformed message: " << m;
    if (m.find(what) == std::string::npos)
        return ::testing::AssertionFailure() << "\"" << m << "\" does not say \"" << what << "\"";
    if (offset && !m.ends_with("(at offset " + std::to_string(*offset) + ")"))
        return ::testing::AssertionFailure() << "\"" << m << "\" is not at offset " << *offset;
    return ::testing::AssertionSuccess() << m;
}

MigrationState read_ok(const Bytes& s, StreamReadInfo* info = nullptr) {
    Result<MigrationState> r = read_stream(s.data(), s.size(), info);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r ? std::move(*r) : MigrationState{};
}

/// A stream of meta's header, whatever body writes, and the trailer.
Bytes build(const std::function<void(StreamWriter&)>& body, const MigrationState& m = meta()) {
    Bytes out;
    StreamWriter w(out, m);
    body(w);
    w.finish();
    return out;
}

/// A small valid stream with one section of each type this version writes.
Bytes small_stream() {
    MigrationState s = meta();
    s.ports.push_back(make_port("p0", {address(4, 24, kAddrConfigured, ip4(10, 1, 1, 1))}));
    s.macs.push_back(make_mac(9, 10, 0, 5));
    s.connections.push_back(make_connection(
        ct_tuple(4, kProtoTcp, ip4(10, 1, 1, 2), 1000, ip4(10, 1, 1, 3), 22), 1, 1));
    s.connections.push_back(make_connection(
        ct_tuple(4, kProtoTcp, ip4(10, 1, 1, 2), 1001, ip4(10, 1, 1, 3), 22), 2, 1));
    s.dpi_hash = 5;
    s.dpi.push_back(make_dpi(0, 5, 1, 1, {1, 2, 3}, {4}));
    s.rules_json = "[]";
    Bytes out;
    StreamWriter w(out, s);
    w.port(s.ports[0]);
    w.macs(s.macs);
    w.connections(s.connections.data(), 2);
    w.connections_gone({s.connections[1].orig});
    w.dpi_streams(s.dpi_hash, s.dpi);
    w.rules(s.rules_json);
    w.finish();
    return out;
}

// ---- CRC ---------------------------------------------------------------------------------------

uint32_t crc_of(const Bytes& b) {
    return crc32c(b.data(), b.size());
}

TEST(Crc32c, KnownAnswers) {
    const std::string check = "123456789";
    EXPECT_EQ(crc32c(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xe3069283u);
    EXPECT_EQ(crc32c(nullptr, 0), 0u);
    // RFC 3720, B.4: 32 bytes of zeros, of ones, ascending.
    EXPECT_EQ(crc_of(Bytes(32, 0x00)), 0x8a9136aau);
    EXPECT_EQ(crc_of(Bytes(32, 0xff)), 0x62a8ab43u);
    Bytes ascending(32);
    for (size_t i = 0; i < 32; ++i) ascending[i] = static_cast<uint8_t>(i);
    EXPECT_EQ(crc_of(ascending), 0x46dd794eu);
}

// ---- Round trips -------------------------------------------------------------------------------

TEST(RoundTrip, EverySection) {
    const MigrationState s = full_state();
    const Bytes stream = write_stream(s);
    StreamReadInfo info;
    const MigrationState back = read_ok(stream, &info);
    EXPECT_TRUE(states_equal(back, s));
    EXPECT_EQ(info.version, kStreamVersion);
    EXPECT_EQ(info.sections, 3u + 4u);  // ports, MACS, CONNECTIONS, DPI_STREAMS, RULES
    EXPECT_EQ(info.skipped, 0u);
    EXPECT_EQ(count_sections(stream, SectionType::kPort), 3u);
    for (SectionType t : {SectionType::kMacs, SectionType::kConnections, SectionType::kDpiStreams,
                          SectionType::kRules, SectionType::kTrailer})
        EXPECT_EQ(count_sections(stream, t), 1u) << static_cast<int>(t);
    // The header as the specification lays it out.
    EXPECT_TRUE(std::equal(kStreamMagic.begin(), kStreamMagic.end(), stream.begin()));
    EXPECT_EQ(get16(stream, 8), 1);
    EXPECT_EQ(get16(stream, 10), 1);
    EXPECT_EQ(get16(stream, 14), 0);
    EXPECT_EQ(get16(stream, 12), 26u + 5 + 16 + 4);
    EXPECT_EQ(sections_of(stream).back().payload() + 32, stream.size());
}

TEST(RoundTrip, EachConnectionFieldReachesTheWire) {
    // Changing any one field of one connection changes the stream (nothing is dropped).
    const MigrationState s = full_state();
    const Bytes base = write_stream(s);
    const std::vector<std::function<void(MigratedConnection&)>> changes = {
        [](MigratedConnection& c) { c.mark ^= 1; },
        [](MigratedConnection& c) { c.remaining_ms ^= 1; },
        [](MigratedConnection& c) { c.port[0] ^= 1; },
        [](MigratedConnection& c) { c.seq_offset[1] ^= 1; },
        [](MigratedConnection& c) { c.peer[1].maxwin ^= 1; },
        [](MigratedConnection& c) { c.peer[1].scale ^= 1; },
        [](MigratedConnection& c) { c.peer[1].flags ^= 1; },
        [](MigratedConnection& c) { c.tcp_retrans ^= 1; },
        [](MigratedConnection& c) { c.packets[1] ^= 1; },
        [](MigratedConnection& c) { c.bytes[1] ^= 1ull << 63; },
        [](MigratedConnection& c) { c.flags ^= kCtfLiberal; },
    };
    for (size_t i = 0; i < changes.size(); ++i) {
        MigrationState t = s;
        changes[i](t.connections[4]);
        const Bytes changed = write_stream(t);
        EXPECT_NE(changed, base) << "change " << i;
        EXPECT_TRUE(states_equal(read_ok(changed), t)) << "change " << i;
    }
}

TEST(RoundTrip, ManyConnectionsSpanSections) {
    MigrationState s = meta();
    s.ports.push_back(make_port("p0"));
    const size_t n = 2 * 65536 + 1;
    s.connections.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
        MigratedConnection c =
            make_connection(ct_tuple(4, i % 3 ? kProtoTcp : kProtoUdp,
                                     ip4(10, 0, uint8_t(i >> 16), uint8_t(i >> 8)),
                                     static_cast<uint16_t>(i), ip4(10, 1, 0, 1), 80),
                            i, 1);
        s.connections.push_back(c);
    }
    s.dpi.push_back(make_dpi(static_cast<uint32_t>(n - 1), 0, 1, 1, {7}, {8}));
    const Bytes stream = write_stream(s);
    EXPECT_EQ(count_sections(stream, SectionType::kConnections), 3u);
    for (const SectionAt& sec : sections_of(stream)) EXPECT_LE(sec.length, kMaxSectionBytes);
    StreamReadInfo info;
    EXPECT_TRUE(states_equal(read_ok(stream, &info), s));
    EXPECT_EQ(info.sections, 5u);
}

TEST(RoundTrip, OnePortScope) {
    MigrationState s = meta(StreamScope::kPort);
    s.hyperscan_version.clear();  // a writer without Hyperscan
    s.ports.push_back(make_port(
        "vhost-user-7", {address(6, 64, kAddrLearned, ip6({0x2001, 0xdb8, 0, 0, 0, 0, 0, 7}))}));
    s.macs.push_back(make_mac(7, 0xffff, 0, 10));
    s.connections.push_back(make_connection(
        ct_tuple(4, kProtoUdp, ip4(10, 7, 0, 1), 5000, ip4(10, 7, 0, 2), 6000), 3, 1));
    const Bytes stream = write_stream(s);
    EXPECT_EQ(get16(stream, 14), 1);
    const MigrationState back = read_ok(stream);
    EXPECT_EQ(back.scope, StreamScope::kPort);
    EXPECT_TRUE(states_equal(back, s));
}

TEST(RoundTrip, LimitsThemselvesAreAccepted) {
    MigrationState s = meta();
    s.ferryd_version = std::string(kMaxVersionText, 'v');
    s.hyperscan_version = std::string(kMaxVersionText, 'h');
    for (size_t i = 0; i < kMaxStreamPorts; ++i) s.ports.push_back(make_port(numbered("p", i)));
    for (uint16_t i = 0; i < kMaxPortAddresses; ++i)
        s.ports[5].addresses.push_back(
            address(i % 2 ? 4 : 6, i % 2 ? 32 : 128, kAddrConfigured,
                    i % 2 ? ip4(10, 0, uint8_t(i >> 8), uint8_t(i)) : ip6({0xfd00, i})));
    s.macs.push_back(make_mac(1, 4095, 63, 0));
    const Bytes stream = write_stream(s);
    EXPECT_TRUE(states_equal(read_ok(stream), s));
}

TEST(RoundTrip, EmptySwitch) {
    const MigrationState s = meta();
    const Bytes stream = write_stream(s);
    EXPECT_EQ(sections_of(stream).size(), 1u);
    EXPECT_TRUE(states_equal(read_ok(stream), s));
}

TEST(RoundTrip, DpiStreamsSplitAcrossSections) {
    // Full-size streams in both directions: more than one 64 MiB section's worth.
    MigrationState s = meta();
    s.ports.push_back(make_port("p0"));
    const size_t n = kMaxSectionBytes / (2 * kMaxDpiStreamBytes) + 2;
    const Bytes big = pattern(kMaxDpiStreamBytes, 3);
    for (uint32_t i = 0; i < n; ++i) {
        s.connections.push_back(
            make_connection(ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 1), static_cast<uint16_t>(i),
                                     ip4(10, 0, 0, 2), 80),
                            i, 1));
        s.dpi.push_back(make_dpi(i, 42, 1, 1, big, big));
    }
    s.dpi_hash = 42;
    const Bytes stream = write_stream(s);
    EXPECT_EQ(count_sections(stream, SectionType::kDpiStreams), 2u);
    for (const SectionAt& sec : sections_of(stream)) EXPECT_LE(sec.length, kMaxSectionBytes);
    EXPECT_TRUE(states_equal(read_ok(stream), s));
}

TEST(Writer, GoneTuplesSplitAcrossSections) {
    // Only the layout is checked: a stream of this many gone connections would have to carry
    // the connections too.
    const size_t n = kMaxSectionBytes / kTupleWireBytes + 1;
    std::vector<CtTuple> gone(n, ct_tuple(4, kProtoUdp, ip4(1, 1, 1, 1), 1, ip4(2, 2, 2, 2), 2));
    Bytes out;
    StreamWriter w(out, meta());
    w.connections_gone(gone);
    w.finish();
    EXPECT_EQ(count_sections(out, SectionType::kConnectionsGone), 2u);
    uint64_t total = 0;
    for (const SectionAt& sec : sections_of(out)) {
        EXPECT_LE(sec.length, kMaxSectionBytes);
        if (sec.type == static_cast<uint16_t>(SectionType::kConnectionsGone))
            total += get32(out, sec.payload());
    }
    EXPECT_EQ(total, n);
    const SectionAt t = section_of(out, SectionType::kTrailer);
    EXPECT_EQ(get32(out, t.payload()), 2u);      // sections
    EXPECT_EQ(get32(out, t.payload() + 16), n);  // gone
}

// ---- Deltas ------------------------------------------------------------------------------------

TEST(Deltas, ReplaceRemoveAndRenumber) {
    MigrationState m = meta();
    m.ports.push_back(make_port("p0"));
    const auto conn = [](uint16_t sport, uint32_t seed) {
        return make_connection(
            ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 1), sport, ip4(10, 0, 0, 2), 80), seed, 1);
    };
    const MigratedConnection a = conn(1, 1), b = conn(2, 2), c = conn(3, 3), d = conn(4, 4);
    MigratedConnection b2 = b;  // B again, later in its life
    b2.tcp_state = TcpState::kFinWait;
    b2.packets[0] += 100;
    b2.peer[0].flags |= kTcpPeerCloseInit;
    b2.remaining_ms = 120000;
    const MigratedConnection pre[] = {a, b, c, d};  // numbers 0..3
    const std::vector<MigratedDpi> sent = {
        make_dpi(2, 9, 1, 1, {1}, {2}),  // C: dropped with it
        make_dpi(4, 9, 1, 2, {3}, {4}),  // B's second number
        make_dpi(1, 9, 2, 0, {5}, {}),   // B's first number
        make_dpi(3, 9, 0, 0, {}, {6}),   // D: renumbered 3 -> 2
    };
    const Bytes stream = build([&](StreamWriter& w) {
        w.port(m.ports[0]);
        w.connections(pre, 4);
        w.connections(&b2, 1);         // number 4: replaces B
        w.connections_gone({c.orig});  // C ended
        w.dpi_streams(9, sent);
    });
    StreamReadInfo info;
    const MigrationState got = read_ok(stream, &info);
    EXPECT_EQ(info.sections, 5u);
    MigrationState want = m;
    want.connections = {a, b2, d};
    want.gone = {c.orig};
    want.dpi_hash = 9;
    want.dpi = {sent[1], sent[2], sent[3]};
    want.dpi[0].connection = 1;
    want.dpi[1].connection = 1;
    want.dpi[2].connection = 2;
    EXPECT_TRUE(states_equal(got, want));
}

TEST(Deltas, ResentAfterGoneIsANewConnection) {
    const MigratedConnection a =
        make_connection(ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 1), 1, ip4(10, 0, 0, 2), 2), 1, 1);
    MigratedConnection a2 = a;
    a2.mark = 99;
    const MigratedConnection b =
        make_connection(ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 1), 3, ip4(10, 0, 0, 2), 4), 2, 1);
    const Bytes stream = build([&](StreamWriter& w) {
        w.port(make_port("p0"));
        w.connections(&a, 1);  // 0
        w.connections(&b, 1);  // 1
        w.connections_gone({a.orig});
        w.connections(&a2, 1);  // 2: a new connection of the same tuple
        w.dpi_streams(1, {make_dpi(0, 1, 1, 1, {}, {}), make_dpi(2, 1, 2, 2, {}, {})});
    });
    const MigrationState got = read_ok(stream);
    ASSERT_EQ(got.connections.size(), 2u);
    EXPECT_EQ(got.connections[0].orig, b.orig);
    EXPECT_EQ(got.connections[1].mark, 99u);
    ASSERT_EQ(got.dpi.size(), 1u);  // the old A's entry went with it
    EXPECT_EQ(got.dpi[0].connection, 1u);
    EXPECT_EQ(got.dpi[0].state.dir_state[0], 2);
    // A is live again: the state names no gone connection, and writes back as it reads.
    EXPECT_TRUE(got.gone.empty());
    EXPECT_TRUE(states_equal(read_ok(write_stream(got)), got));
}

TEST(Deltas, WrittenBackStateReadsTheSame) {
    // What a reader produced from a stream with deltas is a valid state for the writer.
    const MigrationState got = read_ok(small_stream());
    ASSERT_EQ(got.connections.size(), 1u);
    ASSERT_EQ(got.gone.size(), 1u);
    const Bytes again = write_stream(got);
    const MigrationState back = read_ok(again);
    MigrationState want = got;
    want.gone.clear();  // nothing ended in the written-back stream
    EXPECT_TRUE(states_equal(back, want));
    EXPECT_EQ(write_stream(back), again);
}

TEST(Deltas, WriteStreamSendsGoneOfItsOwnConnections) {
    // write_stream: connections, then the gone ones among them.
    MigrationState s = full_state();
    s.gone = {s.connections[1].orig, s.connections[3].orig, s.connections[1].orig};
    s.dpi.clear();
    const MigrationState got = read_ok(write_stream(s));
    EXPECT_EQ(got.connections.size(), s.connections.size() - 2);
    EXPECT_EQ(got.gone, (std::vector<CtTuple>{s.connections[1].orig, s.connections[3].orig}));
}

// ---- Refusals: the header ----------------------------------------------------------------------

TEST(Header, WrongMagic) {
    Bytes s = small_stream();
    s[1] = 'f';
    EXPECT_TRUE(refused(s, "not a ferry migration stream (bad magic)", 0));
    EXPECT_TRUE(refused(Bytes{'G', 'I', 'F', '8', '9', 'a', 0, 0, 0, 0, 0, 0}, "bad magic", 0));
    s[1] = 'F';
    s[0] = 0x09;  // a 7-bit channel
    EXPECT_TRUE(refused(s, "bad magic"));
}

TEST(Header, ByteSwappedMagic) {
    Bytes s = small_stream();
    std::reverse(s.begin(), s.begin() + 8);
    EXPECT_TRUE(refused(s, "byte-swapped", 0));
}

TEST(Header, NewerVersionNeedingANewerReader) {
    Bytes s = small_stream();
    put16(s, 8, 3);
    put16(s, 10, 2);
    fix_header_crc(s);
    EXPECT_TRUE(refused(
        s, "stream version 3 needs a reader of version 2 or later; this ferryd reads up to 1", 8));
}

TEST(Header, NewerCompatibleVersionIsRead) {
    // Version 2, readable by 1: its header is longer (bytes this reader skips) and it has a
    // section this reader does not know, which is not critical.
    Bytes s = build([](StreamWriter& w) {
        w.port(make_port("p0"));
        w.section(0x0100, false, {1, 2, 3, 4, 5});
        w.macs({make_mac(1, 5, 0, 1)});
    });
    put16(s, 8, 2);
    const size_t hl = get16(s, 12);
    s.insert(s.begin() + static_cast<ptrdiff_t>(hl) - 4, {0xaa, 0xbb, 0xcc, 0xdd, 0xee});
    put16(s, 12, static_cast<uint16_t>(hl + 5));
    fix_header_crc(s);
    fix_trailer(s);
    StreamReadInfo info;
    const MigrationState got = read_ok(s, &info);
    EXPECT_EQ(info.version, 2);
    EXPECT_EQ(info.skipped, 1u);
    EXPECT_EQ(info.sections, 3u);
    EXPECT_EQ(got.ferryd_version, "0.2.0");
    EXPECT_EQ(got.macs.size(), 1u);
    // The same section marked critical is refused.
    put16(s, section_of(s, static_cast<SectionType>(0x0100)).at + 2, kSectionCritical);
    EXPECT_TRUE(refused(s, "unknown critical section type 0x0100"));
}

TEST(Header, VersionZero) {
    Bytes s = small_stream();
    put16(s, 8, 0);
    put16(s, 10, 0);
    fix_header_crc(s);
    EXPECT_TRUE(refused(s, "bad stream version 0", 8));
}

TEST(Header, CrcMismatch) {
    Bytes s = small_stream();
    s[20] ^= 0x01;  // in stream_id
    EXPECT_TRUE(refused(s, "header CRC mismatch", get16(s, 12) - 4u));
    s[20] ^= 0x01;
    s[get16(s, 12) - 1] ^= 0x80;  // the CRC itself
    EXPECT_TRUE(refused(s, "header CRC mismatch"));
    s = small_stream();
    s[24] ^= 0x01;  // the version text's length: still a CRC mismatch, not a malformed text
    EXPECT_TRUE(refused(s, "header CRC mismatch"));
}

TEST(Header, MalformedFields) {
    Bytes s = small_stream();
    put16(s, 14, 2);
    fix_header_crc(s);
    EXPECT_TRUE(refused(s, "unknown scope 2", 14));
    s = small_stream();
    put16(s, 12, 20);
    EXPECT_TRUE(refused(s, "header_length 20", 12));
    MigrationState m = meta();
    m.ferryd_version.clear();
    EXPECT_TRUE(refused(build([](StreamWriter&) {}, m), "malformed header"));
}

// ---- Refusals: sections ------------------------------------------------------------------------

TEST(Sections, TruncatedAtEveryOffset) {
    const Bytes s = small_stream();
    std::vector<size_t> boundaries;  // where a section starts: a cut there misses the rest
    for (const SectionAt& sec : sections_of(s)) boundaries.push_back(sec.at);
    for (size_t n = 0; n < s.size(); ++n) {
        const Bytes cut(s.begin(), s.begin() + static_cast<ptrdiff_t>(n));
        EXPECT_TRUE(refused(cut, "truncated")) << "cut at " << n;
        if (std::find(boundaries.begin(), boundaries.end(), n) != boundaries.end()) {
            EXPECT_TRUE(refused(cut, "truncated before the trailer", n)) << "cut at " << n;
        }
    }
    EXPECT_TRUE(read_stream(s.data(), s.size()).ok());
}

TEST(Sections, CrcMismatchInEverySection) {
    const Bytes s = small_stream();
    const auto all = sections_of(s);
    ASSERT_EQ(all.size(), 7u);
    for (const SectionAt& sec : all) {
        ASSERT_GT(sec.length, 0u);
        Bytes bad = s;
        bad[sec.payload() + sec.length / 2] ^= 0x10;
        char type[8];
        std::snprintf(type, sizeof(type), "0x%04x", sec.type);
        EXPECT_TRUE(refused(bad, std::string("CRC mismatch in section ") + type, sec.at));
        bad = s;
        bad[sec.at + 11] ^= 0x01;  // the CRC field
        EXPECT_TRUE(refused(bad, "CRC mismatch", sec.at));
    }
}

TEST(Sections, UnknownCriticalSection) {
    const Bytes s = build([](StreamWriter& w) {
        w.port(make_port("p0"));
        w.section(0x0042, true, {1, 2, 3});
    });
    EXPECT_TRUE(refused(s, "unknown critical section type 0x0042",
                        section_of(s, static_cast<SectionType>(0x42)).at));
    // Other flag bits are ignored; bit 0 decides.
    const Bytes skipped = build([](StreamWriter& w) { w.section(0x0042, false, {1, 2, 3}); });
    Bytes flagged = skipped;
    put16(flagged, get16(flagged, 12) + 2, 0xfffe);
    StreamReadInfo info;
    read_ok(flagged, &info);
    EXPECT_EQ(info.skipped, 1u);
}

TEST(Sections, UnknownNonCriticalSectionIsSkipped) {
    const Bytes s = build([](StreamWriter& w) {
        w.port(make_port("p0"));
        w.section(0x7fff, false, {});
        w.section(0x0042, false, pattern(100, 1));
    });
    StreamReadInfo info;
    const MigrationState got = read_ok(s, &info);
    EXPECT_EQ(info.skipped, 2u);
    EXPECT_EQ(info.sections, 3u);
    EXPECT_EQ(got.ports.size(), 1u);
}

TEST(Sections, BytesAfterTheTrailer) {
    Bytes s = small_stream();
    const size_t end = s.size();
    s.push_back(0);
    EXPECT_TRUE(refused(s, "bytes after the trailer", end));
    // A second stream glued on is no better.
    const Bytes two = [&] {
        Bytes t = small_stream(), u = small_stream();
        t.insert(t.end(), u.begin(), u.end());
        return t;
    }();
    EXPECT_TRUE(refused(two, "bytes after the trailer", end));
}

TEST(Sections, TrailerWithWrongCounts) {
    const Bytes s = small_stream();
    const SectionAt t = section_of(s, SectionType::kTrailer);
    const char* names[] = {"sections", "ports", "macs", "connections", "gone", "dpi"};
    for (size_t i = 0; i < 6; ++i) {
        Bytes bad = s;
        put32(bad, t.payload() + 4 * i, get32(s, t.payload() + 4 * i) + 1);
        fix_section_crc(bad, t);
        EXPECT_TRUE(refused(bad,
                            std::string("TRAILER counts ") +
                                std::to_string(get32(s, t.payload() + 4 * i) + 1) + " " + names[i],
                            t.at));
    }
    Bytes bad = s;
    put64(bad, t.payload() + 24, t.at - 1);
    fix_section_crc(bad, t);
    EXPECT_TRUE(refused(bad, "TRAILER says", t.at));
    // A trailer of the wrong length.
    Bytes longer = build([](StreamWriter&) {});
    const SectionAt lt = section_of(longer, SectionType::kTrailer);
    longer.push_back(0);
    put32(longer, lt.at + 4, 33);
    fix_section_crc(longer, section_of(longer, SectionType::kTrailer));
    EXPECT_TRUE(refused(longer, "TRAILER payload is not 32 bytes"));
    // No trailer at all.
    Bytes none;
    StreamWriter w(none, meta());
    w.port(make_port("p0"));
    EXPECT_TRUE(refused(none, "truncated before the trailer", none.size()));
}

TEST(Sections, LongerThan64MiB) {
    for (uint32_t length : {kMaxSectionBytes + 1, 0xffffffffu}) {
        Bytes s;
        StreamWriter w(s, meta());
        const size_t at = s.size();
        WireWriter ww(s);
        ww.u16(static_cast<uint16_t>(SectionType::kConnections));
        ww.u16(kSectionCritical);
        ww.u32(length);
        ww.u32(0);
        EXPECT_TRUE(refused(
            s, "section 0x0003 of " + std::to_string(length) + " bytes (at most 67108864)", at));
    }
    // Exactly the limit is not refused for its length (it is just not all there).
    Bytes s;
    StreamWriter w(s, meta());
    WireWriter ww(s);
    ww.u16(static_cast<uint16_t>(SectionType::kConnections));
    ww.u16(kSectionCritical);
    ww.u32(kMaxSectionBytes);
    ww.u32(0);
    EXPECT_TRUE(refused(s, "truncated inside section 0x0003", s.size()));
}

// ---- Refusals: limits --------------------------------------------------------------------------

Bytes count_only(uint32_t count) {
    Bytes p;
    WireWriter(p).u32(count);
    return p;
}

TEST(Limits, MacsBeyondTheLimit) {
    const auto macs = static_cast<uint16_t>(SectionType::kMacs);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.section(macs, false, count_only(kMaxMacs + 1));
                        }),
                        "MACS: more than 1048576 MACs"));
    // Over two sections.
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(1, 1, 0, 0)});
                            w.section(macs, false, count_only(kMaxMacs));
                        }),
                        "more than 1048576 MACs"));
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.section(macs, false, count_only(0xffffffffu));
                        }),
                        "more than 1048576 MACs"));
    // A count that the payload does not match.
    Bytes two;
    encode_macs({make_mac(1, 1, 0, 0), make_mac(2, 2, 0, 0)}, two);
    put32(two, 0, 3);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.section(macs, false, two);
                        }),
                        "MACS payload length does not match its count"));
}

TEST(Limits, PortWith257Addresses) {
    Bytes p;
    WireWriter ww(p);
    ww.str8("p0");
    ww.bytes(std::array<uint8_t, 6>{}.data(), 6);
    ww.u16(kMaxPortAddresses + 1);  // and no addresses: refused before reading them
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kPort), true, p);
                        }),
                        "PORT: port p0: 257 addresses (at most 256)"));
    // A count the payload does not match.
    MigratedPort two =
        make_port("p0", {address(4, 8, 0, ip4(10, 0, 0, 0)), address(4, 8, 0, ip4(11, 0, 0, 0))});
    Bytes q;
    encode_port(two, q);
    put16(q, 1 + 2 + 6, 3);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kPort), true, q);
                        }),
                        "PORT payload length does not match its contents"));
    put16(q, 1 + 2 + 6, 1);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kPort), true, q);
                        }),
                        "PORT payload length does not match its contents"));
}

TEST(Limits, SixtyFivePorts) {
    const Bytes s = build([](StreamWriter& w) {
        for (size_t i = 0; i <= kMaxStreamPorts; ++i) w.port(make_port(numbered("p", i)));
    });
    EXPECT_TRUE(refused(s, "PORT: more than 64 ports", section_of(s, SectionType::kPort, 64).at));
}

TEST(Limits, ConnectionCounts) {
    const auto conns = static_cast<uint16_t>(SectionType::kConnections);
    const MigratedConnection c[2] = {
        make_connection(ct_tuple(4, kProtoTcp, ip4(1, 1, 1, 1), 1, ip4(2, 2, 2, 2), 2), 1, 1),
        make_connection(ct_tuple(4, kProtoTcp, ip4(1, 1, 1, 1), 3, ip4(2, 2, 2, 2), 2), 2, 1)};
    for (uint32_t count : {0u, 1u, 3u}) {
        Bytes p;
        encode_connections(c, 2, p);
        put32(p, 0, count);
        EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                                w.port(make_port("p0"));
                                w.section(conns, true, p);
                            }),
                            "CONNECTIONS payload length does not match its count"))
            << count;
    }
    Bytes p;
    encode_connections(c, 2, p);
    p.pop_back();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.section(conns, true, p);
                        }),
                        "CONNECTIONS payload length does not match its count"));
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(conns, true, count_only(kMaxConnectionsPerSection + 1));
                        }),
                        "16777217 connections in one section (at most 16777216)"));
}

TEST(Limits, GoneCountMismatch) {
    const MigratedConnection c =
        make_connection(ct_tuple(4, kProtoUdp, ip4(1, 1, 1, 1), 1, ip4(2, 2, 2, 2), 2), 1, 1);
    Bytes p;
    encode_connections_gone({c.orig}, p);
    put32(p, 0, 2);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.connections(&c, 1);
                            w.section(static_cast<uint16_t>(SectionType::kConnectionsGone), true,
                                      p);
                        }),
                        "CONNECTIONS_GONE payload length does not match its count"));
}

// ---- Refusals: values of a connection entry ----------------------------------------------------

// Offsets inside a CONNECTIONS payload with one entry (after its 4-byte count).
constexpr size_t kE = 4;
constexpr size_t kReplyAt = kE + 40, kStateAt = kE + 80, kFlagsAt = kE + 82, kRemainingAt = kE + 88,
                 kPortAt = kE + 92, kPeerAt = kE + 104;
constexpr size_t kPeerScale = 12, kPeerFlags = 13, kPeerBytes = 16;

MigratedConnection tcp_entry() {
    return make_connection(ct_tuple(4, kProtoTcp, ip4(10, 0, 0, 1), 1234, ip4(10, 0, 0, 2), 80), 5,
                           2);
}
MigratedConnection udp_entry() {
    return make_connection(ct_tuple(4, kProtoUdp, ip4(10, 0, 0, 1), 1234, ip4(10, 0, 0, 2), 53), 6,
                           2);
}

/// Two ports and one CONNECTIONS section with c, its payload patched first.
Bytes connection_stream(const MigratedConnection& c, const std::function<void(Bytes&)>& patch) {
    Bytes p;
    encode_connections(&c, 1, p);
    patch(p);
    return build([&](StreamWriter& w) {
        w.port(make_port("p0"));
        w.port(make_port("p1"));
        w.section(static_cast<uint16_t>(SectionType::kConnections), true, p);
    });
}

TEST(ConnectionValues, BaselinesAreAccepted) {
    // The unpatched streams of the tests below are valid: each refusal is its patch's.
    for (const MigratedConnection& c : {tcp_entry(), udp_entry()}) {
        const Bytes s = connection_stream(c, [](Bytes&) {});
        Bytes fixed = s;  // the trailer counts entries: the raw section was not counted
        set_trailer_count(fixed, 3, 1);
        const MigrationState got = read_ok(fixed);
        ASSERT_EQ(got.connections.size(), 1u);
        MigrationState want = meta();
        want.ports = {make_port("p0"), make_port("p1")};
        want.connections = {c};
        EXPECT_TRUE(states_equal(got, want));
    }
}

TEST(ConnectionValues, TcpStateOutOfRange) {
    for (uint8_t st : {0x00, 0x0a, 0x80, 0x81, 0xff}) {
        EXPECT_TRUE(refused(
            connection_stream(tcp_entry(), [&](Bytes& p) { p[kStateAt] = st; }),
            "CONNECTIONS: connection 0: TCP state " + std::to_string(st) + " is not a TCP state"));
    }
}

TEST(ConnectionValues, OtherProtocolWithATcpState) {
    for (uint8_t st : {0x01, 0x04, 0x09, 0x00, 0x82}) {
        EXPECT_TRUE(refused(connection_stream(udp_entry(), [&](Bytes& p) { p[kStateAt] = st; }),
                            "state " + std::to_string(st) + " is not a state of protocol 17"));
    }
}

TEST(ConnectionValues, UnknownConnectionFlags) {
    for (uint16_t f : {0x0040, 0x0080, 0x8000, 0x0041}) {
        EXPECT_TRUE(
            refused(connection_stream(tcp_entry(), [&](Bytes& p) { put16(p, kFlagsAt, f); }),
                    "unknown connection flags"));
    }
}

TEST(ConnectionValues, UnknownPeerFlags) {
    for (size_t peer : {0, 1}) {
        for (uint8_t f : {0x10, 0x80, 0x1f}) {
            EXPECT_TRUE(refused(connection_stream(tcp_entry(),
                                                  [&](Bytes& p) {
                                                      p[kPeerAt + peer * kPeerBytes + kPeerFlags] =
                                                          f;
                                                  }),
                                "unknown TCP peer flags"));
        }
    }
}

TEST(ConnectionValues, WindowScale15) {
    for (size_t peer : {0, 1}) {
        for (uint8_t scale : {15, 255}) {
            EXPECT_TRUE(refused(connection_stream(tcp_entry(),
                                                  [&](Bytes& p) {
                                                      p[kPeerAt + peer * kPeerBytes + kPeerScale] =
                                                          scale;
                                                  }),
                                "window scale above 14"));
        }
    }
}

TEST(ConnectionValues, TupleIpVersion) {
    for (size_t at : {kE, kReplyAt}) {
        EXPECT_TRUE(refused(connection_stream(tcp_entry(), [&](Bytes& p) { p[at] = 5; }),
                            "tuple ip_version 5 (4 or 6)"));
    }
}

TEST(ConnectionValues, Ipv4TupleWithBytesAfterTheAddress) {
    // src at +4, dst at +20; the address is in the first 4 of each.
    for (size_t at : {kE + 4 + 4, kE + 4 + 15, kE + 20 + 4, kReplyAt + 20 + 15}) {
        EXPECT_TRUE(refused(connection_stream(tcp_entry(), [&](Bytes& p) { p[at] = 1; }),
                            "IPv4 tuple with bytes after the address"));
    }
}

TEST(ConnectionValues, ReplyNotTheReverseWithoutNat) {
    const auto patch = [](Bytes& p) { put16(p, kReplyAt + 36, 9999); };  // reply sport
    EXPECT_TRUE(refused(connection_stream(tcp_entry(), patch),
                        "reply tuple is not the reverse of orig, without NAT"));
    // Any NAT flag allows it.
    for (uint8_t nat : {kCtfSrcNat, kCtfDstNat}) {
        MigratedConnection c = tcp_entry();
        c.flags = nat;
        Bytes s = connection_stream(c, patch);
        set_trailer_count(s, 3, 1);
        EXPECT_EQ(read_ok(s).connections.at(0).reply.sport, 9999);
    }
    // The reply as it would be, unreversed.
    EXPECT_TRUE(refused(connection_stream(tcp_entry(),
                                          [](Bytes& p) {
                                              std::copy(p.begin() + kE, p.begin() + kE + 40,
                                                        p.begin() + kReplyAt);
                                          }),
                        "reply tuple is not the reverse"));
}

TEST(ConnectionValues, OrigAndReplyDiffer) {
    EXPECT_TRUE(refused(connection_stream(tcp_entry(), [](Bytes& p) { put16(p, kReplyAt + 2, 1); }),
                        "orig and reply differ in IP version, protocol or zone"));
    EXPECT_TRUE(refused(connection_stream(tcp_entry(), [](Bytes& p) { p[kReplyAt + 1] = 17; }),
                        "orig and reply differ"));
    EXPECT_TRUE(refused(connection_stream(tcp_entry(), [](Bytes& p) { p[kReplyAt] = 6; }),
                        "orig and reply differ"));
}

TEST(ConnectionValues, PortOutOfRange) {
    for (size_t dir : {0, 1}) {
        for (uint16_t port : {2, 3, 0xfffe}) {
            EXPECT_TRUE(
                refused(connection_stream(tcp_entry(),
                                          [&](Bytes& p) { put16(p, kPortAt + 2 * dir, port); }),
                        "port " + std::to_string(port) + " (the stream has 2 ports)"));
        }
    }
}

TEST(ConnectionValues, RemainingBeyondTheLongestTimeout) {
    EXPECT_TRUE(refused(
        connection_stream(tcp_entry(),
                          [](Bytes& p) { put32(p, kRemainingAt, 30u * 86400u * 1000u + 1); }),
        "remaining_ms beyond 30 days"));
}

TEST(ConnectionValues, TheNumberOfTheBadEntryIsNamed) {
    const MigratedConnection ok = udp_entry();
    MigratedConnection bad = tcp_entry();
    bad.peer[1].scale = 15;
    const Bytes s = build([&](StreamWriter& w) {
        w.port(make_port("p0"));
        w.port(make_port("p1"));
        w.connections(&ok, 1);
        const MigratedConnection two[] = {tcp_entry(), bad};
        w.connections(two, 2);
    });
    EXPECT_TRUE(refused(s, "CONNECTIONS: connection 2: window scale above 14",
                        section_of(s, SectionType::kConnections, 1).at));
}

// ---- Refusals: ports and MACs ------------------------------------------------------------------

Bytes port_stream(const MigratedPort& p) {
    Bytes q;
    encode_port(p, q);
    return build(
        [&](StreamWriter& w) { w.section(static_cast<uint16_t>(SectionType::kPort), true, q); });
}

TEST(PortValues, AddressFamily) {
    EXPECT_TRUE(refused(port_stream(make_port("p0", {address(5, 24, 0, ip4(1, 2, 3, 4))})),
                        "PORT: port p0: address family 5"));
    EXPECT_TRUE(refused(port_stream(make_port("p0", {address(0, 0, 0, {})})), "address family 0"));
}

TEST(PortValues, PrefixLength) {
    EXPECT_TRUE(refused(port_stream(make_port("p0", {address(4, 33, 0, ip4(1, 2, 3, 4))})),
                        "port p0: prefix length 33"));
    EXPECT_TRUE(
        refused(port_stream(make_port("p0", {address(6, 129, 0, ip6({1}))})), "prefix length 129"));
}

TEST(PortValues, AddressFlags) {
    EXPECT_TRUE(refused(port_stream(make_port("p0", {address(4, 8, 0x0008, ip4(1, 2, 3, 4))})),
                        "port p0: unknown address flags"));
}

TEST(PortValues, Ipv4AddressWithBytesAfterIt) {
    Addr a = ip4(1, 2, 3, 4);
    a[15] = 1;
    EXPECT_TRUE(refused(port_stream(make_port("p0", {address(4, 8, 0, a)})),
                        "port p0: IPv4 address with bytes after it"));
}

TEST(PortValues, BadNames) {
    for (const std::string& name : std::vector<std::string>{
             "", "eth 0", "eth0/1", "p\xc3\xa9", std::string(32, 'a'), std::string("a\0b", 3)}) {
        EXPECT_TRUE(
            refused(port_stream(make_port(name)), "PORT: port name is not 1..31 of [A-Za-z0-9_.-]"))
            << name;
    }
}

TEST(PortValues, DuplicateNames) {
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.port(make_port("eth0"));
                            w.port(make_port("eth1"));
                            w.port(make_port("eth0"));
                        }),
                        "PORT: port eth0 appears twice"));
}

TEST(PortValues, PortAfterOtherSections) {
    const MigratedConnection c = udp_entry();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.port(make_port("p2"));
                        }),
                        "a PORT section after"));
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(1, 1, 0, 0)});
                            w.port(make_port("p1"));
                        }),
                        "a PORT section after"));
    // Even after sections that name no port (empty, or rules): PORT sections come first.
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kConnections), true,
                                      count_only(0));
                            w.port(make_port("p0"));
                        }),
                        "a PORT section after"));
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.rules("[]");
                            w.port(make_port("p0"));
                        }),
                        "a PORT section after"));
    // An unknown section this reader skips does not count.
    StreamReadInfo info;
    read_ok(build([&](StreamWriter& w) {
                w.section(0x0200, false, {});
                w.port(make_port("p0"));
            }),
            &info);
    EXPECT_EQ(info.skipped, 1u);
}

TEST(PortValues, OnePortStreamNeedsItsPort) {
    // The moved port first; the others its connections refer to may follow.
    const MigrationState two = read_ok(build(
        [](StreamWriter& w) {
            w.port(make_port("p0"));
            w.port(make_port("p1"));
        },
        meta(StreamScope::kPort)));
    ASSERT_EQ(two.ports.size(), 2u);
    EXPECT_EQ(two.ports[0].name, "p0");
    EXPECT_TRUE(refused(build([](StreamWriter&) {}, meta(StreamScope::kPort)),
                        "a one-port stream without a port"));
}

TEST(MacValues, Vlan5000) {
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(1, 7, 0, 0), make_mac(2, 5000, 0, 0)});
                        }),
                        "MACS: MAC with VLAN 5000"));
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(2, 4096, 0, 0)});
                        }),
                        "MAC with VLAN 4096"));
}

TEST(MacValues, PortOutOfRange) {
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(1, 7, 1, 0)});
                        }),
                        "MACS: MAC on port 1 (the stream has 1 ports)"));
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.macs({make_mac(1, 7, kNoStreamPort, 0)});
                        }),
                        "MAC without a port"));
}

// ---- Refusals: DPI, gone, rules ----------------------------------------------------------------

Bytes dpi_stream(const std::vector<MigratedDpi>& dpi, uint64_t hash = 1) {
    const MigratedConnection c[2] = {tcp_entry(), udp_entry()};
    return build([&](StreamWriter& w) {
        w.port(make_port("p0"));
        w.port(make_port("p1"));
        w.connections(c, 2);
        w.dpi_streams(hash, dpi);
    });
}

TEST(DpiValues, ConnectionNeverSent) {
    const Bytes ok = dpi_stream({make_dpi(1, 1, 0, 0, {}, {})});
    EXPECT_EQ(read_ok(ok).dpi.size(), 1u);
    EXPECT_TRUE(refused(dpi_stream({make_dpi(2, 1, 0, 0, {}, {})}),
                        "DPI_STREAMS: DPI stream of connection 2, which the stream did not send"));
    EXPECT_TRUE(refused(dpi_stream({make_dpi(0xffffffffu, 1, 0, 0, {}, {})}),
                        "connection 4294967295, which the stream did not send"));
    // A DPI section before any connection.
    EXPECT_TRUE(
        refused(build([](StreamWriter& w) { w.dpi_streams(1, {make_dpi(0, 1, 0, 0, {}, {})}); }),
                "DPI stream of connection 0, which the stream did not send"));
}

TEST(DpiValues, State3) {
    for (size_t dir : {0, 1}) {
        MigratedDpi d = make_dpi(0, 1, 0, 0, {1}, {2});
        d.state.dir_state[dir] = 3;
        EXPECT_TRUE(refused(dpi_stream({d}), "DPI_STREAMS: unknown DPI direction state"));
    }
}

TEST(DpiValues, StreamLongerThan64KiB) {
    EXPECT_EQ(read_ok(dpi_stream({make_dpi(0, 1, 1, 1, Bytes(kMaxDpiStreamBytes), {})})).dpi.size(),
              1u);
    EXPECT_TRUE(refused(dpi_stream({make_dpi(0, 1, 1, 1, {}, Bytes(kMaxDpiStreamBytes + 1))}),
                        "DPI stream of 65537 bytes"));
    // A length beyond the limit with nothing behind it: refused for its length, not truncation.
    Bytes p;
    WireWriter ww(p);
    ww.u64(1);
    ww.u32(1);
    ww.u32(0);
    ww.u8(1);
    ww.u32(0);
    ww.u32(0);
    ww.u32(0xffffffffu);
    const MigratedConnection c = tcp_entry();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.section(static_cast<uint16_t>(SectionType::kDpiStreams), false, p);
                        }),
                        "DPI stream of 4294967295 bytes"));
}

TEST(DpiValues, TruncatedOrLongerPayload) {
    Bytes p;
    encode_dpi_streams(1, {make_dpi(0, 1, 1, 1, {1, 2}, {3})}, p);
    for (int change : {-1, +1}) {
        Bytes q = p;
        if (change < 0) {
            q.pop_back();
        } else {
            q.push_back(0);
        }
        const MigratedConnection c[2] = {tcp_entry(), udp_entry()};
        EXPECT_TRUE(refused(
            build([&](StreamWriter& w) {
                w.port(make_port("p0"));
                w.port(make_port("p1"));
                w.connections(c, 2);
                w.section(static_cast<uint16_t>(SectionType::kDpiStreams), false, q);
            }),
            change < 0 ? "truncated DPI stream" : "DPI_STREAMS payload length does not match"));
    }
}

TEST(DpiValues, SectionsOfDifferentDatabases) {
    const MigratedConnection c = tcp_entry();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.dpi_streams(1, {make_dpi(0, 1, 1, 1, {}, {})});
                            w.dpi_streams(2, {make_dpi(0, 2, 1, 1, {}, {})});
                        }),
                        "DPI_STREAMS sections of different databases"));
}

TEST(GoneValues, TupleNeverSent) {
    const MigratedConnection c = tcp_entry();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.connections_gone({c.reply});  // the other direction's tuple
                        }),
                        "CONNECTIONS_GONE: a gone connection that the stream did not send"));
    // Gone twice.
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.connections_gone({c.orig});
                            w.connections_gone({c.orig});
                        }),
                        "a gone connection that the stream did not send"));
    // Before it was sent.
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections_gone({c.orig});
                            w.connections(&c, 1);
                        }),
                        "a gone connection that the stream did not send"));
}

TEST(GoneValues, MalformedTuple) {
    const MigratedConnection c = tcp_entry();
    CtTuple t = c.orig;
    t.src[4] = 1;
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.port(make_port("p1"));
                            w.connections(&c, 1);
                            w.connections_gone({t});
                        }),
                        "gone connection: IPv4 tuple with bytes after the address"));
}

TEST(RulesValues, TwoRulesSections) {
    EXPECT_TRUE(refused(build([](StreamWriter& w) {
                            w.rules("[1]");
                            w.rules("[2]");
                        }),
                        "more than one RULES section"));
    Bytes p;
    encode_rules("[]", p);
    p.push_back(' ');
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kRules), false, p);
                        }),
                        "RULES payload length does not match its contents"));
}

TEST(CountersSection, IsReadAndIgnored) {
    Bytes p;
    WireWriter ww(p);
    ww.u32(2);
    for (const char* name : {"eth0", "vm1"}) {
        ww.str8(name);
        for (int i = 0; i < 4; ++i) ww.u64(0x1000u + static_cast<unsigned>(i));
    }
    const Bytes s = build([&](StreamWriter& w) {
        w.port(make_port("eth0"));
        w.section(static_cast<uint16_t>(SectionType::kCounters), false, p);
    });
    StreamReadInfo info;
    read_ok(s, &info);
    EXPECT_EQ(info.skipped, 0u);
    p.pop_back();
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.section(static_cast<uint16_t>(SectionType::kCounters), false, p);
                        }),
                        "COUNTERS payload length does not match its contents"));
}

// ---- Golden streams ----------------------------------------------------------------------------

// The source tree: $FERRY_SOURCE_ROOT, else derived from this file's path. Meson compiles with a
// path relative to the build directory, so a relative __FILE__ is tried from the working
// directory and from the build directory (two levels above this test's binary).
std::filesystem::path source_root() {
    if (const char* env = std::getenv("FERRY_SOURCE_ROOT")) return env;
    std::filesystem::path rel = std::filesystem::path(__FILE__).parent_path() / "../..";
    if (rel.is_absolute() || std::filesystem::exists(rel / "docs/migration-stream.md")) return rel;
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return exe.parent_path() / "../.." / rel;
}

std::filesystem::path golden_dir() {
    return source_root() / "tests/migrate/golden";
}

/// The state of v1-switch.bin. NEVER CHANGE THIS FUNCTION: the file was written from it by
/// the first release of stream version 1, and the test proves that this reader still reads
/// that file to this state and that this writer still writes it byte for byte. Everything it
/// uses is spelled out here, not taken from the helpers above, which may change.
MigrationState golden_state_v1() {
    MigrationState s;
    s.scope = StreamScope::kSwitch;
    s.stream_id = 0x5eed000000000001ull;
    s.ferryd_version = "0.2.0";
    s.hyperscan_version = "5.4.0 2023-01-01";

    const auto addr = [](uint8_t family, uint8_t prefix, uint16_t flags,
                         std::initializer_list<uint8_t> bytes) {
        MigratedAddress a;
        a.family = family;
        a.prefix_length = prefix;
        a.flags = flags;
        std::copy(bytes.begin(), bytes.end(), a.address.begin());
        return a;
    };
    MigratedPort eth0;
    eth0.name = "eth0";
    eth0.mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    eth0.addresses = {
        addr(4, 24, 0x0001, {10, 0, 0, 1}),
        addr(6, 64, 0x0001, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}),
        addr(6, 64, 0x0006, {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})};
    MigratedPort vm;
    vm.name = "vm-1.a_B";
    vm.mac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
    vm.addresses = {addr(4, 32, 0x0002, {10, 0, 0, 2})};
    MigratedPort up;
    up.name = "uplink";
    s.ports = {eth0, vm, up};

    const auto mac = [](uint8_t last, uint16_t vlan, uint16_t port, uint32_t age) {
        MigratedMac m;
        m.mac = {0x52, 0x54, 0x00, 0x00, 0x00, last};
        m.vlan = vlan;
        m.port = port;
        m.age_ms = age;
        return m;
    };
    s.macs = {mac(1, 0xffff, 0, 0), mac(2, 0xffff, 1, 1500), mac(3, 100, 2, 60000),
              mac(4, 4095, 2, 0xffffffffu), mac(5, 0, 0, 42)};

    const auto tuple = [](uint8_t v, uint8_t proto, std::initializer_list<uint8_t> src,
                          uint16_t sport, std::initializer_list<uint8_t> dst, uint16_t dport,
                          uint16_t zone) {
        CtTuple t;
        std::memset(&t, 0, sizeof(t));
        t.ip_version = v;
        t.proto = proto;
        t.zone = zone;
        std::copy(src.begin(), src.end(), t.src);
        std::copy(dst.begin(), dst.end(), t.dst);
        t.sport = sport;
        t.dport = dport;
        return t;
    };
    const auto conn = [&](uint32_t i, const CtTuple& orig) {
        MigratedConnection c;
        c.orig = orig;
        c.reply = ct_tuple_reverse(orig);
        c.mark = i * 0x01010101u;
        c.remaining_ms = 1000u * i + 500;
        c.port[0] = static_cast<uint16_t>(i % 3);
        c.port[1] = i % 4 == 0 ? kNoStreamPort : static_cast<uint16_t>((i + 1) % 3);
        c.seq_offset[0] = i % 2 ? -static_cast<int32_t>(i * 1000) : static_cast<int32_t>(i);
        c.seq_offset[1] = i % 3 ? static_cast<int32_t>(i * 100000) : -1;
        c.packets[0] = i * 10 + 1;
        c.packets[1] = i * 20;
        c.bytes[0] = (uint64_t{i} << 34) + 60;
        c.bytes[1] = 0xffffffffffffffffull - i;
        if (orig.proto == kProtoTcp) {
            c.tcp_state = TcpState::kEstablished;
            c.flags = kCtfSeenReply | kCtfAssured;
            for (uint32_t d = 0; d < 2; ++d) {
                c.peer[d].end = 0x01000000u * (i + 1) + d;
                c.peer[d].maxend = c.peer[d].end + 0x10000u;
                c.peer[d].maxwin = 0xffffu << ((i + d) % 15);
                c.peer[d].scale = static_cast<uint8_t>((i + d) % 15);
                c.peer[d].flags = static_cast<uint8_t>((i * 3 + d) % 16);
            }
            c.tcp_retrans = i % 3;
        } else {
            c.other_state = i % 2 ? CtOtherState::kMultiple : CtOtherState::kFirst;
        }
        return c;
    };
    uint32_t i = 0;
    // TCP in each state (0..8).
    for (uint8_t st = 1; st <= 9; ++st) {
        MigratedConnection c =
            conn(i++, tuple(4, kProtoTcp, {10, 0, 0, 2}, static_cast<uint16_t>(40000 + st),
                            {93, 184, 216, 34}, 443, 0));
        c.tcp_state = static_cast<TcpState>(st);
        c.flags = st < 4 ? 0 : c.flags;
        s.connections.push_back(c);
    }
    // IPv6 TCP in a zone (9), UDP (10, 11), ICMP and ICMPv6 echo (12, 13).
    s.connections.push_back(conn(
        i++, tuple(6, kProtoTcp, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2},
                   50000, {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, 22, 7)));
    s.connections.push_back(
        conn(i++, tuple(4, kProtoUdp, {10, 0, 0, 3}, 5353, {224, 0, 0, 251}, 5353, 0)));
    MigratedConnection dns =
        conn(i++, tuple(4, kProtoUdp, {10, 0, 0, 3}, 40001, {10, 0, 0, 53}, 53, 0));
    dns.flags = kCtfSeenReply | kCtfAssured;
    s.connections.push_back(dns);
    s.connections.push_back(
        conn(i++, tuple(4, kProtoIcmp, {10, 0, 0, 4}, 0x1234, {8, 8, 8, 8}, 0x1234, 0)));
    s.connections.push_back(conn(
        i++, tuple(6, kProtoIcmpv6, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4}, 7,
                   {0x20, 0x01, 0x48, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x88}, 7, 0)));
    // SNAT (14), DNAT (15), both (16).
    MigratedConnection snat =
        conn(i++, tuple(4, kProtoUdp, {10, 0, 0, 5}, 1234, {8, 8, 4, 4}, 53, 0));
    snat.reply = tuple(4, kProtoUdp, {8, 8, 4, 4}, 53, {203, 0, 113, 1}, 61000, 0);
    snat.flags = kCtfSrcNat | kCtfSeenReply;
    s.connections.push_back(snat);
    MigratedConnection dnat =
        conn(i++, tuple(4, kProtoTcp, {198, 51, 100, 9}, 5555, {203, 0, 113, 1}, 80, 0));
    dnat.reply = tuple(4, kProtoTcp, {10, 0, 0, 7}, 8080, {198, 51, 100, 9}, 5555, 0);
    dnat.flags = kCtfDstNat | kCtfSeenReply | kCtfAssured;
    s.connections.push_back(dnat);
    MigratedConnection both =
        conn(i++, tuple(4, kProtoTcp, {10, 0, 0, 8}, 3000, {203, 0, 113, 50}, 443, 2));
    both.reply = tuple(4, kProtoTcp, {10, 0, 0, 9}, 8443, {203, 0, 113, 1}, 62000, 2);
    both.flags = kCtfSrcNat | kCtfDstNat | kCtfSeenReply;
    s.connections.push_back(both);
    // Blocked (17), liberal (18), the extremes (19).
    MigratedConnection blocked =
        conn(i++, tuple(4, kProtoTcp, {10, 0, 0, 6}, 6000, {1, 2, 3, 4}, 8000, 0));
    blocked.flags = kCtfBlocked | kCtfSeenReply;
    s.connections.push_back(blocked);
    MigratedConnection liberal =
        conn(i++, tuple(4, kProtoTcp, {10, 0, 0, 6}, 6001, {1, 2, 3, 4}, 8000, 0));
    liberal.flags = kCtfLiberal;
    liberal.tcp_state = TcpState::kSynRecv;
    s.connections.push_back(liberal);
    MigratedConnection edge =
        conn(i++, tuple(4, kProtoTcp, {255, 255, 255, 255}, 65535, {0, 0, 0, 0}, 0, 65535));
    edge.mark = 0xffffffffu;
    edge.remaining_ms = 30u * 86400u * 1000u;
    edge.seq_offset[0] = -2147483647 - 1;
    edge.seq_offset[1] = 2147483647;
    edge.tcp_retrans = 0xffffffffu;
    edge.packets[0] = edge.bytes[0] = 0xffffffffffffffffull;
    edge.peer[0] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 14, 0x0f, 0};
    edge.peer[1] = {0, 0, 0, 0, 0, 0};
    s.connections.push_back(edge);

    s.dpi_hash = 0x0123456789abcdefull;
    const auto dpi = [&](uint32_t connection, uint8_t s0, uint8_t s1, size_t n0, size_t n1) {
        MigratedDpi d;
        d.connection = connection;
        d.state.db_hash = s.dpi_hash;
        d.state.dir_state[0] = s0;
        d.state.dir_state[1] = s1;
        d.state.seen[0] = static_cast<uint32_t>(n0 * 7);
        d.state.seen[1] = static_cast<uint32_t>(n1 * 11);
        d.state.next_seq[0] = 0x01000000u * (connection + 1) + 1;
        d.state.next_seq[1] = 0x01000000u * (connection + 1) + 2;
        for (size_t k = 0; k < n0; ++k) d.state.streams[0].push_back(static_cast<uint8_t>(k * 7));
        for (size_t k = 0; k < n1; ++k) d.state.streams[1].push_back(static_cast<uint8_t>(255 - k));
        return d;
    };
    s.dpi = {dpi(3, 1, 1, 40, 120), dpi(9, 0, 1, 0, 64), dpi(15, 2, 2, 0, 0),
             dpi(17, 2, 1, 300, 1)};
    s.rules_json =
        R"([{"id":1,"priority":10,"match":{"proto":"tcp","dst_port":22},"action":"drop"},)"
        R"({"id":2,"priority":20,"match":{"src":"10.0.0.0/24"},"action":"accept"}])";
    return s;
}

/// The state of v1-port.bin (NEVER CHANGE, as above): one port's state as a VM migration
/// sends it.
MigrationState golden_port_state_v1() {
    MigrationState s = golden_state_v1();
    s.scope = StreamScope::kPort;
    s.stream_id = 0x5eed000000000002ull;
    s.hyperscan_version.clear();
    s.ports = {s.ports[1]};
    std::vector<MigratedMac> macs;
    for (MigratedMac m : s.macs) {
        if (m.port != 1) continue;
        m.port = 0;
        macs.push_back(m);
    }
    s.macs = macs;
    std::vector<MigratedConnection> conns;
    for (MigratedConnection c : s.connections) {
        if (c.port[0] != 1) continue;
        c.port[0] = 0;
        c.port[1] = kNoStreamPort;
        conns.push_back(c);
    }
    s.connections = conns;
    s.dpi = {s.dpi[0]};
    s.dpi[0].connection = 1;
    s.rules_json.clear();
    return s;
}

/// The stream of v1-deltas.bin (NEVER CHANGE, as above): what a live migration's final pass
/// looks like. golden_state_v1's ports and MACs, its 20 connections as a pre-copy (numbers
/// 0..19), a delta that sends connections 4 and 11 again changed (20, 21), CONNECTIONS_GONE
/// ending 0, 12 and 17, DPI streams (one of a gone connection, one by a delta's number), a
/// COUNTERS section, the rules.
Bytes golden_deltas_stream_v1() {
    const MigrationState g = golden_state_v1();
    MigrationState header = g;
    header.stream_id = 0x5eed000000000003ull;
    Bytes out;
    StreamWriter w(out, header);
    for (const MigratedPort& p : g.ports) w.port(p);
    w.macs(g.macs);
    w.connections(g.connections.data(), g.connections.size());
    MigratedConnection delta[2] = {g.connections[4], g.connections[11]};
    delta[0].tcp_state = TcpState::kTimeWait;
    delta[0].peer[1].flags |= kTcpPeerCloseInit;
    delta[0].packets[0] += 3;
    delta[0].remaining_ms = 120000;
    delta[1].other_state = CtOtherState::kMultiple;
    delta[1].flags = kCtfSeenReply | kCtfAssured;
    delta[1].bytes[1] += 1400;
    w.connections(delta, 2);
    w.connections_gone({g.connections[0].orig, g.connections[12].orig, g.connections[17].orig});
    std::vector<MigratedDpi> dpi = g.dpi;  // connections 3, 9, 15, 17
    dpi.push_back(g.dpi[0]);
    dpi.back().connection = 20;
    dpi.back().state.dir_state[0] = 2;
    w.dpi_streams(g.dpi_hash, dpi);
    Bytes counters;
    WireWriter c(counters);
    c.u32(2);
    c.str8("eth0");
    for (uint64_t v : {1000000ull, 2000000ull, 1500000000ull, 2500000000ull}) c.u64(v);
    c.str8("uplink");
    for (uint64_t v : {0ull, 1ull, 0ull, 64ull}) c.u64(v);
    w.section(static_cast<uint16_t>(SectionType::kCounters), false, counters);
    w.rules(g.rules_json);
    w.finish();
    return out;
}

/// What v1-deltas.bin reads as, worked out by hand from the description above.
MigrationState golden_deltas_state_v1() {
    const MigrationState g = golden_state_v1();
    MigrationState s = g;
    s.stream_id = 0x5eed000000000003ull;
    s.connections[4].tcp_state = TcpState::kTimeWait;
    s.connections[4].peer[1].flags |= kTcpPeerCloseInit;
    s.connections[4].packets[0] += 3;
    s.connections[4].remaining_ms = 120000;
    s.connections[11].other_state = CtOtherState::kMultiple;
    s.connections[11].flags = kCtfSeenReply | kCtfAssured;
    s.connections[11].bytes[1] += 1400;
    for (size_t gone : {17, 12, 0})
        s.connections.erase(s.connections.begin() + static_cast<ptrdiff_t>(gone));
    s.gone = {g.connections[0].orig, g.connections[12].orig, g.connections[17].orig};
    s.dpi = {g.dpi[0], g.dpi[1], g.dpi[2], g.dpi[0]};
    s.dpi[0].connection = 2;   // 3, one gone before it
    s.dpi[1].connection = 8;   // 9
    s.dpi[2].connection = 13;  // 15, two gone before it
    s.dpi[3].connection = 3;   // 20: connection 4 again
    s.dpi[3].state.dir_state[0] = 2;
    return s;
}

Bytes read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool write_golden() {
    const char* v = std::getenv("FERRY_WRITE_GOLDEN");
    return v != nullptr && std::string(v) == "1";
}

/// Checks (or, with FERRY_WRITE_GOLDEN=1, first writes) a golden stream: the file reads as
/// `state`, and this writer writes `written` byte for byte the same.
void check_golden(const std::string& name, const Bytes& written, const MigrationState& state,
                  uint32_t sections) {
    const std::filesystem::path file = golden_dir() / name;
    if (write_golden()) {
        std::filesystem::create_directories(file.parent_path());
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(written.data()),
                  static_cast<std::streamsize>(written.size()));
        ASSERT_TRUE(out.good()) << "cannot write " << file;
    }
    const Bytes golden = read_file(file);
    ASSERT_FALSE(golden.empty()) << "cannot read " << file;
    StreamReadInfo info;
    const Result<MigrationState> r = read_stream(golden.data(), golden.size(), &info);
    ASSERT_TRUE(r.ok()) << name << ": " << r.error().message;
    EXPECT_EQ(info.version, 1);
    EXPECT_EQ(info.skipped, 0u);
    EXPECT_EQ(info.sections, sections);
    EXPECT_TRUE(states_equal(r.value(), state)) << name;
    EXPECT_TRUE(written == golden)
        << name << ": this writer no longer writes the golden stream byte for byte ("
        << written.size() << " vs " << golden.size() << " bytes); the stream format changed";
}

TEST(Golden, SwitchStreamV1) {
    const MigrationState s = golden_state_v1();
    ASSERT_EQ(s.connections.size(), 20u);
    check_golden("v1-switch.bin", write_stream(s), s, 7);
}

TEST(Golden, PortStreamV1) {
    const MigrationState s = golden_port_state_v1();
    ASSERT_EQ(s.ports.size(), 1u);
    ASSERT_FALSE(s.connections.empty());
    check_golden("v1-port.bin", write_stream(s), s, 4);
}

TEST(Golden, DeltasStreamV1) {
    check_golden("v1-deltas.bin", golden_deltas_stream_v1(), golden_deltas_state_v1(), 10);
}

}  // namespace
}  // namespace ferry
