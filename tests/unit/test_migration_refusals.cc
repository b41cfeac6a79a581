// Every refusal of the migration stream reader (docs/migration-stream.md): the header, sections,
// limits, and the values of each section type, each checked by its message and offset.
//
// Malformed streams are made two ways: StreamWriter::section() with a payload built by hand (or
// by an encoder given bad values), or a valid stream with bytes patched and its CRCs fixed
// (sections_of, fix_section_crc, fix_header_crc, fix_trailer in migration_fixtures.h).
#include "tests/unit/migration_fixtures.h"

namespace ferry {
namespace {

using namespace migration_test;  // NOLINT(google-build-using-namespace)

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
    put16(s, 8, 4);
    put16(s, 10, 3);
    fix_header_crc(s);
    EXPECT_TRUE(refused(
        s, "stream version 4 needs a reader of version 3 or later; this ferryd reads up to 2", 8));
}

TEST(Header, NewerCompatibleVersionIsRead) {
    // Version 3, readable by 2: its header is longer (bytes this reader skips) and it has a
    // section this reader does not know, which is not critical.
    Bytes s = build([](StreamWriter& w) {
        w.port(make_port("p0"));
        w.section(0x0100, false, {1, 2, 3, 4, 5});
        w.macs({make_mac(1, 5, 0, 1)});
    });
    put16(s, 8, 3);
    const size_t hl = get16(s, 12);
    s.insert(s.begin() + static_cast<ptrdiff_t>(hl) - 4, {0xaa, 0xbb, 0xcc, 0xdd, 0xee});
    put16(s, 12, static_cast<uint16_t>(hl + 5));
    fix_header_crc(s);
    fix_trailer(s);
    StreamReadInfo info;
    const MigrationState got = read_ok(s, &info);
    EXPECT_EQ(info.version, 3);
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
    const MigratedConnection c[2] = {
        make_connection(ct_tuple(4, kProtoTcp, ip4(1, 1, 1, 1), 1, ip4(2, 2, 2, 2), 2), 1, 1),
        make_connection(ct_tuple(4, kProtoTcp, ip4(1, 1, 1, 1), 3, ip4(2, 2, 2, 2), 2), 2, 1)};
    struct Layout {
        SectionType type;
        void (*encode)(const MigratedConnection*, size_t, std::vector<uint8_t>&);
        std::string name;
    };
    for (const Layout& l :
         {Layout{SectionType::kConnections, encode_connections, "CONNECTIONS"},
          Layout{SectionType::kConnectionsIpv4, encode_connections_ipv4, "CONNECTIONS_IPV4"}}) {
        SCOPED_TRACE(l.name);
        const auto conns = static_cast<uint16_t>(l.type);
        const std::string mismatch = l.name + " payload length does not match its count";
        for (uint32_t count : {0u, 1u, 3u}) {
            Bytes p;
            l.encode(c, 2, p);
            put32(p, 0, count);
            EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                                    w.port(make_port("p0"));
                                    w.section(conns, true, p);
                                }),
                                mismatch))
                << count;
        }
        Bytes p;
        l.encode(c, 2, p);
        p.pop_back();
        EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                                w.port(make_port("p0"));
                                w.section(conns, true, p);
                            }),
                            mismatch));
        EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                                w.section(conns, true, count_only(kMaxConnectionsPerSection + 1));
                            }),
                            "16777217 connections in one section (at most 16777216)"));
    }
}

TEST(ConnectionValues, Ipv4EntryReplyIsTheReverseWithoutNat) {
    // The compact entry carries both tuples' addresses and ports, and is checked as a whole one.
    MigratedConnection c =
        make_connection(ct_tuple(4, kProtoTcp, ip4(1, 1, 1, 1), 1, ip4(2, 2, 2, 2), 2), 1, 1);
    c.reply.sport = 9;
    Bytes p;
    encode_connections_ipv4(&c, 1, p);
    EXPECT_TRUE(refused(build([&](StreamWriter& w) {
                            w.port(make_port("p0"));
                            w.section(static_cast<uint16_t>(SectionType::kConnectionsIpv4), true,
                                      p);
                        }),
                        "CONNECTIONS_IPV4: connection 0: reply tuple is not the reverse of orig, "
                        "without NAT"));
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
    EXPECT_TRUE(refused(s, "CONNECTIONS_IPV4: connection 2: window scale above 14",
                        section_of(s, SectionType::kConnectionsIpv4, 1).at));
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

}  // namespace
}  // namespace ferry
