// Values, comparisons and stream surgery shared by the migration stream tests
// (test_migration_stream.cc: round trips, deltas, golden streams; test_migration_refusals.cc:
// every refusal). Test context only: helpers may report through gtest.
#pragma once

#include <gtest/gtest.h>
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
#include "dataplane/ip_proto.h"
#include "migrate/crc32c.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_format.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/wire.h"

namespace ferry::migration_test {

using Bytes = std::vector<uint8_t>;
using Addr = std::array<uint8_t, 16>;

// ---- Values ------------------------------------------------------------------------------------

inline Addr ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    Addr x{};
    x[0] = a;
    x[1] = b;
    x[2] = c;
    x[3] = d;
    return x;
}

/// An IPv6 address from its groups (missing trailing groups are zero).
inline Addr ip6(std::initializer_list<uint16_t> groups) {
    Addr x{};
    size_t i = 0;
    for (uint16_t g : groups) {
        x[2 * i] = static_cast<uint8_t>(g >> 8);
        x[2 * i + 1] = static_cast<uint8_t>(g);
        ++i;
    }
    return x;
}

inline CtTuple ct_tuple(uint8_t ip_version, uint8_t proto, const Addr& src, uint16_t sport,
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

inline MigratedAddress address(uint8_t family, uint8_t prefix, uint16_t flags, const Addr& a) {
    MigratedAddress m;
    m.family = family;
    m.prefix_length = prefix;
    m.flags = flags;
    m.address = a;
    return m;
}

inline MigratedPort make_port(const std::string& name,
                              std::vector<MigratedAddress> addresses = {}) {
    MigratedPort p;
    p.name = name;
    p.mac = {0x02, 0, 0, 0, 0, static_cast<uint8_t>(name.size())};
    p.addresses = std::move(addresses);
    return p;
}

/// "p0", "p1", ... (built by appending: GCC 12 warns falsely on "p" + std::to_string(i)).
inline std::string numbered(const char* prefix, size_t i) {
    std::string s = prefix;
    s += std::to_string(i);
    return s;
}

inline MigratedMac make_mac(uint8_t last, uint16_t vlan, uint16_t port, uint32_t age_ms) {
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
inline MigratedConnection make_connection(const CtTuple& orig, uint32_t seed,
                                          uint16_t port_count = 3) {
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

inline MigratedDpi make_dpi(uint32_t connection, uint64_t hash, uint8_t state0, uint8_t state1,
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

inline Bytes pattern(size_t n, uint32_t seed) {
    Bytes b(n);
    uint32_t x = seed * 2654435761u + 1;
    for (uint8_t& v : b) {
        x = x * 1103515245u + 12345u;
        v = static_cast<uint8_t>(x >> 16);
    }
    return b;
}

inline MigrationState meta(StreamScope scope = StreamScope::kSwitch) {
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
inline MigrationState full_state() {
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

inline std::string idx(const std::string& what, size_t i) {
    return what + "[" + std::to_string(i) + "]";
}

inline void compare(Diff& d, const std::string& w, const TcpPeer& a, const TcpPeer& b) {
    d.eq(w + ".end", a.end, b.end);
    d.eq(w + ".maxend", a.maxend, b.maxend);
    d.eq(w + ".maxwin", a.maxwin, b.maxwin);
    d.eq(w + ".scale", a.scale, b.scale);
    d.eq(w + ".flags", a.flags, b.flags);
}

inline void compare(Diff& d, const std::string& w, const MigratedConnection& a,
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
inline ::testing::AssertionResult states_equal(const MigrationState& a, const MigrationState& b) {
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

inline uint16_t get16(const Bytes& b, size_t at) {
    return static_cast<uint16_t>(b.at(at) << 8 | b.at(at + 1));
}
inline uint32_t get32(const Bytes& b, size_t at) {
    return uint32_t{get16(b, at)} << 16 | get16(b, at + 2);
}
inline void put16(Bytes& b, size_t at, uint16_t v) {
    b.at(at) = static_cast<uint8_t>(v >> 8);
    b.at(at + 1) = static_cast<uint8_t>(v);
}
inline void put32(Bytes& b, size_t at, uint32_t v) {
    put16(b, at, static_cast<uint16_t>(v >> 16));
    put16(b, at + 2, static_cast<uint16_t>(v));
}
inline void put64(Bytes& b, size_t at, uint64_t v) {
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

inline std::vector<SectionAt> sections_of(const Bytes& s) {
    std::vector<SectionAt> out;
    for (size_t at = get16(s, 12); at + kSectionHeaderBytes <= s.size();) {
        const SectionAt sec{at, get16(s, at), get32(s, at + 4)};
        out.push_back(sec);
        at = sec.payload() + sec.length;
    }
    return out;
}

/// The nth section of a type (the test fails when there is none).
inline SectionAt section_of(const Bytes& s, SectionType type, size_t nth = 0) {
    for (const SectionAt& sec : sections_of(s))
        if (sec.type == static_cast<uint16_t>(type) && nth-- == 0) return sec;
    ADD_FAILURE() << "no section " << static_cast<int>(type);
    return {0, 0, 0};
}

inline size_t count_sections(const Bytes& s, SectionType type) {
    const auto all = sections_of(s);
    return static_cast<size_t>(std::count_if(all.begin(), all.end(), [&](const SectionAt& sec) {
        return sec.type == static_cast<uint16_t>(type);
    }));
}

inline void fix_section_crc(Bytes& s, const SectionAt& sec) {
    put32(s, sec.at + 8, crc32c(s.data() + sec.payload(), sec.length));
}

inline void fix_header_crc(Bytes& s) {
    const size_t hl = get16(s, 12);
    put32(s, hl - 4, crc32c(s.data(), hl - 4));
}

/// Sets the trailer's "bytes before" to where the trailer now is, and its CRC.
inline void fix_trailer(Bytes& s) {
    const SectionAt t = section_of(s, SectionType::kTrailer);
    put64(s, t.payload() + 24, t.at);
    fix_section_crc(s, t);
}

/// Sets one of the trailer's u32 counts (0 sections, 1 ports, 2 macs, 3 connections, 4 gone,
/// 5 dpi), as a test must after writing a counted section raw with StreamWriter::section().
inline void set_trailer_count(Bytes& s, size_t field, uint32_t value) {
    const SectionAt t = section_of(s, SectionType::kTrailer);
    put32(s, t.payload() + 4 * field, value);
    fix_section_crc(s, t);
}

/// Whether reading s fails with kInvalidParams and a message "migration stream: ... (at offset
/// N)" that contains `what` (and ends with that offset, when given).
inline ::testing::AssertionResult refused(const Bytes& s, const std::string& what,
                                          std::optional<size_t> offset = std::nullopt) {
    // An exact-size copy: a read past the end is a read past the allocation.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[s.size() + 1]);
    if (!s.empty()) std::memcpy(copy.get(), s.data(), s.size());  // never from null
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

inline MigrationState read_ok(const Bytes& s, StreamReadInfo* info = nullptr) {
    Result<MigrationState> r = read_stream(s.data(), s.size(), info);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r ? std::move(*r) : MigrationState{};
}

/// A stream of meta's header, whatever body writes, and the trailer.
inline Bytes build(const std::function<void(StreamWriter&)>& body,
                   const MigrationState& m = meta()) {
    Bytes out;
    StreamWriter w(out, m);
    body(w);
    w.finish();
    return out;
}

/// A small valid stream with one section of each type this version writes.
inline Bytes small_stream() {
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

}  // namespace ferry::migration_test
