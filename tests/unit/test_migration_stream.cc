// Unit tests of the migration stream (docs/migration-stream.md): the CRC, the round trip of
// every section through write_stream and read_stream, deltas (a re-sent connection replaces the
// first, CONNECTIONS_GONE drops one, DPI entries follow their connection), and the golden streams
// of released versions under tests/migrate/golden/. The reader's refusals are in
// test_migration_refusals.cc; the helpers of both in migration_fixtures.h.
#include "tests/unit/migration_fixtures.h"

namespace ferry {
namespace {

using namespace migration_test;  // NOLINT(google-build-using-namespace)

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

/// CRC32C one bit at a time, from its definition (reflected polynomial 0x82F63B78).
uint32_t crc_by_bits(const Bytes& b) {
    uint32_t c = 0xffffffffu;
    for (uint8_t byte : b) {
        c ^= byte;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return ~c;
}

TEST(Crc32c, LongInputsAsByTheDefinition) {
    // Long inputs are computed in interleaved lanes of 2 KiB, joined afterwards: every length
    // around the lanes' boundaries, at every alignment, gives the CRC of the definition.
    Bytes data(3 * 6144 + 64);
    uint32_t x = 12345;
    for (uint8_t& b : data) b = static_cast<uint8_t>((x = x * 1103515245u + 12345u) >> 24);
    for (size_t n : {6143u, 6144u, 6145u, 6151u, 12288u, 12300u, 18431u, 18432u, 18433u}) {
        for (size_t off : {0u, 1u, 7u}) {
            const Bytes part(data.begin() + static_cast<ptrdiff_t>(off),
                             data.begin() + static_cast<ptrdiff_t>(off + n));
            EXPECT_EQ(crc_of(part), crc_by_bits(part)) << n << " at " << off;
        }
    }
}

// ---- Round trips -------------------------------------------------------------------------------

TEST(RoundTrip, EverySection) {
    const MigrationState s = full_state();
    const Bytes stream = write_stream(s);
    StreamReadInfo info;
    const MigrationState back = read_ok(stream, &info);
    EXPECT_TRUE(states_equal(back, s));
    EXPECT_EQ(info.version, kStreamVersion);
    // The connections in runs of IPv4 (CONNECTIONS_IPV4) and the others (CONNECTIONS), in
    // their order.
    size_t runs = 0;
    for (size_t i = 0; i < s.connections.size(); ++i)
        if (i == 0 || fits_ipv4_entry(s.connections[i]) != fits_ipv4_entry(s.connections[i - 1]))
            ++runs;
    ASSERT_GE(runs, 3u);
    EXPECT_EQ(count_sections(stream, SectionType::kConnections) +
                  count_sections(stream, SectionType::kConnectionsIpv4),
              runs);
    EXPECT_EQ(info.sections, 3u + 3u + runs);  // ports, MACS, connections, DPI_STREAMS, RULES
    EXPECT_EQ(info.skipped, 0u);
    EXPECT_EQ(count_sections(stream, SectionType::kPort), 3u);
    for (SectionType t :
         {SectionType::kMacs, SectionType::kDpiStreams, SectionType::kRules, SectionType::kTrailer})
        EXPECT_EQ(count_sections(stream, t), 1u) << static_cast<int>(t);
    // The header as the specification lays it out.
    EXPECT_TRUE(std::equal(kStreamMagic.begin(), kStreamMagic.end(), stream.begin()));
    EXPECT_EQ(get16(stream, 8), 2);
    EXPECT_EQ(get16(stream, 10), 2);
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
    EXPECT_EQ(count_sections(stream, SectionType::kConnectionsIpv4), 3u);
    EXPECT_EQ(count_sections(stream, SectionType::kConnections), 0u);
    for (const SectionAt& sec : sections_of(stream)) {
        EXPECT_LE(sec.length, kMaxSectionBytes);
        if (sec.type == static_cast<uint16_t>(SectionType::kConnectionsIpv4)) {
            EXPECT_EQ(sec.length, 4 + get32(stream, sec.payload()) * kConnectionIpv4WireBytes);
        }
    }
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

// ---- Version 2 (CONNECTIONS_IPV4)
// ----------------------------------------------------------------

/// The state of v2-switch.bin (NEVER CHANGE once released): golden_state_v1's, from a newer
/// ferryd.
MigrationState golden_state_v2() {
    MigrationState s = golden_state_v1();
    s.stream_id = 0x5eed000000000011ull;
    s.ferryd_version = "0.3.0";
    return s;
}

/// The state of v2-port.bin (NEVER CHANGE once released).
MigrationState golden_port_state_v2() {
    MigrationState s = golden_port_state_v1();
    s.stream_id = 0x5eed000000000012ull;
    s.ferryd_version = "0.3.0";
    return s;
}

/// The stream of v2-deltas.bin (NEVER CHANGE once released), as v1-deltas.bin was written:
/// what a live migration's final pass looks like. golden_state_v2's ports and MACs, its 20
/// connections as a pre-copy (numbers 0..19), a delta that sends connections 4 and 11 again
/// changed (20, 21), CONNECTIONS_GONE ending 0, 12 and 17, DPI streams (one of a gone
/// connection, one by a delta's number), a COUNTERS section, the rules.
Bytes golden_deltas_stream_v2() {
    const MigrationState g = golden_state_v2();
    MigrationState header = g;
    header.stream_id = 0x5eed000000000013ull;
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

/// What v1-deltas.bin reads as, worked out by hand from the description of
/// golden_deltas_stream_v2, which wrote it in version 1 with golden_state_v1 and stream_id
/// 0x5eed000000000003.
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

/// What v2-deltas.bin reads as.
MigrationState golden_deltas_state_v2() {
    MigrationState s = golden_deltas_state_v1();
    s.stream_id = 0x5eed000000000013ull;
    s.ferryd_version = "0.3.0";
    return s;
}

/// Checks that a golden stream (of this version or an older one) reads as `state`.
void check_golden_reads(const std::string& name, uint16_t version, const MigrationState& state,
                        uint32_t sections) {
    const Bytes golden = read_file(golden_dir() / name);
    ASSERT_FALSE(golden.empty()) << "cannot read " << name;
    StreamReadInfo info;
    const Result<MigrationState> r = read_stream(golden.data(), golden.size(), &info);
    ASSERT_TRUE(r.ok()) << name << ": " << r.error().message;
    EXPECT_EQ(info.version, version);
    EXPECT_EQ(info.skipped, 0u);
    EXPECT_EQ(info.sections, sections);
    EXPECT_TRUE(states_equal(r.value(), state)) << name;
}

/// Checks (or, with FERRY_WRITE_GOLDEN=1, first writes) a golden stream of this version: the
/// file reads as `state`, and this writer writes `written` byte for byte the same.
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
    check_golden_reads(name, kStreamVersion, state, sections);
    const Bytes golden = read_file(file);
    EXPECT_TRUE(written == golden)
        << name << ": this writer no longer writes the golden stream byte for byte ("
        << written.size() << " vs " << golden.size() << " bytes); the stream format changed";
}

TEST(Golden, SwitchStreamV1) {
    const MigrationState s = golden_state_v1();
    ASSERT_EQ(s.connections.size(), 20u);
    check_golden_reads("v1-switch.bin", 1, s, 7);
}

TEST(Golden, PortStreamV1) {
    const MigrationState s = golden_port_state_v1();
    ASSERT_EQ(s.ports.size(), 1u);
    ASSERT_FALSE(s.connections.empty());
    check_golden_reads("v1-port.bin", 1, s, 4);
}

TEST(Golden, DeltasStreamV1) {
    check_golden_reads("v1-deltas.bin", 1, golden_deltas_state_v1(), 10);
}

TEST(Golden, SwitchStreamV2) {
    const MigrationState s = golden_state_v2();
    const Bytes written = write_stream(s);
    check_golden("v2-switch.bin", written, s,
                 6 + count_sections(written, SectionType::kConnections) +
                     count_sections(written, SectionType::kConnectionsIpv4));
    // The 20 connections, IPv4 and IPv6 mixed, in runs that keep their order.
    EXPECT_GE(count_sections(written, SectionType::kConnections), 1u);
    EXPECT_GE(count_sections(written, SectionType::kConnectionsIpv4), 1u);
}

TEST(Golden, PortStreamV2) {
    const MigrationState s = golden_port_state_v2();
    const Bytes written = write_stream(s);
    check_golden("v2-port.bin", written, s,
                 3 + count_sections(written, SectionType::kConnections) +
                     count_sections(written, SectionType::kConnectionsIpv4));
}

TEST(Golden, DeltasStreamV2) {
    const Bytes written = golden_deltas_stream_v2();
    check_golden("v2-deltas.bin", written, golden_deltas_state_v2(),
                 8 + count_sections(written, SectionType::kConnections) +
                     count_sections(written, SectionType::kConnectionsIpv4));
}

}  // namespace
}  // namespace ferry
