// Unit tests of ConntrackShard's NAT (SNAT, DNAT, ICMP errors about translated connections),
// of several workers' shards (reply tuples owned elsewhere, redirect notices) and of
// ct_packet_tuple. Fixture and helpers: ct_shard_fixture.h.

#include "tests/unit/ct_shard_fixture.h"

namespace ferry {
namespace {

// ---- NAT --------------------------------------------------------------------------------------

class CtShardNatTest : public CtShardTest {};

// SNAT to an address and port range: the SYN leaves with a new source from the ranges, every
// checksum right; the key follows the frame; the entry's reply tuple carries the new source.
TEST_F(CtShardNatTest, SnatRewritesFrameKeyAndEntry) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4Last, 1024, 1100);
    const TcpFlow f;
    Bytes syn = f.syn();
    const Out o = run(syn, commit_nat(&spec), 0);
    ASSERT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+new");
    EXPECT_TRUE(checksums_ok(syn));
    const Carried c = carried(syn);
    EXPECT_GE(std::memcmp(c.src.data(), kPublic4.data(), 4), 0);
    EXPECT_LE(std::memcmp(c.src.data(), kPublic4Last.data(), 4), 0);
    EXPECT_GE(c.sport, 1024);
    EXPECT_LE(c.sport, 1100);
    EXPECT_EQ(c.dst, kServer4);
    EXPECT_EQ(c.dport, 80);
    EXPECT_EQ(addr_of(o.key.ip_src, 4), c.src);
    EXPECT_EQ(o.key.l4_src, c.sport);
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), kServer4);
    EXPECT_EQ(o.key.l4_dst, 80);

    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tuple[0], f.orig());
    EXPECT_EQ(e->tuple[1], tuple(kTcp, kServer4, 80, c.src, c.sport));
    EXPECT_TRUE(e->flags & kCtfSrcNat);
    EXPECT_FALSE(e->flags & kCtfDstNat);
    EXPECT_FALSE(e->flags & kCtfForeignReply);
    // The translated tuple is not a connection of its own.
    EXPECT_EQ(shard_->table().size(), 1u);
    unsigned dir = 0;
    EXPECT_EQ(find(tuple(kTcp, kServer4, 80, c.src, c.sport), &dir), e);
    EXPECT_EQ(dir, 1u);
}

// The reply to the translated address is found in direction 1; with nat it is translated back
// to the client, without nat it passes as it came. Later client packets get the same binding.
TEST_F(CtShardNatTest, SnatReplyTranslatedBackOnlyWithNat) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4Last, 1024, 1100);
    const TcpFlow f;
    Bytes syn = f.syn();
    run(syn, commit_nat(&spec), 0);
    const Carried out = carried(syn);

    const Bytes reply =
        tcp_frame(kServer4, 80, out.src, out.sport, f.s_isn, f.c_isn + 1, kSyn | kAck);
    Bytes untranslated = reply;
    Out o = run(untranslated, track(), 1);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_EQ(untranslated, reply);
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), out.src);

    Bytes translated = reply;
    o = run(translated, nat(), 2);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_TRUE(checksums_ok(translated));
    const Carried back = carried(translated);
    EXPECT_EQ(back.src, kServer4);
    EXPECT_EQ(back.sport, 80);
    EXPECT_EQ(back.dst, kClient4);
    EXPECT_EQ(back.dport, 40000);
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), kClient4);
    EXPECT_EQ(o.key.l4_dst, 40000);

    Bytes ack = f.ack();
    o = run(ack, nat(), 3);
    EXPECT_EQ(st(o.state()), "+trk+est");
    EXPECT_TRUE(checksums_ok(ack));
    const Carried again = carried(ack);
    EXPECT_EQ(again.src, out.src);
    EXPECT_EQ(again.sport, out.sport);
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kEstablished);
}

// DNAT to one address and port: the client's packets go to the backend, the backend's replies
// come back from the public address.
TEST_F(CtShardNatTest, DnatSingleTargetBothDirections) {
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    const TcpFlow f{.server = kPublic4};
    Bytes syn = f.syn();
    Out o = run(syn, commit_nat(&spec), 0);
    ASSERT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_TRUE(checksums_ok(syn));
    Carried c = carried(syn);
    EXPECT_EQ(c.src, kClient4);
    EXPECT_EQ(c.sport, 40000);
    EXPECT_EQ(c.dst, kBackend4);
    EXPECT_EQ(c.dport, 8080);
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), kBackend4);
    EXPECT_EQ(o.key.l4_dst, 8080);
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tuple[1], tuple(kTcp, kBackend4, 8080, kClient4, 40000));
    EXPECT_TRUE(e->flags & kCtfDstNat);
    EXPECT_FALSE(e->flags & kCtfSrcNat);

    Bytes reply = tcp_frame(kBackend4, 8080, kClient4, 40000, f.s_isn, f.c_isn + 1, kSyn | kAck);
    o = run(reply, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_TRUE(checksums_ok(reply));
    c = carried(reply);
    EXPECT_EQ(c.src, kPublic4);
    EXPECT_EQ(c.sport, 80);
    EXPECT_EQ(c.dst, kClient4);
    EXPECT_EQ(c.dport, 40000);

    Bytes ack = f.ack();
    EXPECT_EQ(st(run(ack, nat(), 2).state()), "+trk+est");
    EXPECT_EQ(carried(ack).dst, kBackend4);
    EXPECT_TRUE(checksums_ok(ack));
}

// ct(commit, nat) without a binding (NatSpec kNone) and ct(commit) with a spec but no nat flag
// create plain connections: nothing is rewritten.
TEST_F(CtShardNatTest, CommitWithoutTranslationLeavesFrame) {
    const NatSpec none{};
    Bytes f1 = udp_frame(kClient4, 5000, kServer4, 53);
    const Bytes orig1 = f1;
    run(f1, commit_nat(&none), 0);
    EXPECT_EQ(f1, orig1);
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 0, 0);
    CtParams p = commit();
    p.spec = &spec;  // nat flag off
    Bytes f2 = udp_frame(kClient4, 5001, kServer4, 53);
    const Bytes orig2 = f2;
    run(f2, p, 0);
    EXPECT_EQ(f2, orig2);
    for (uint16_t port : {5000, 5001}) {
        const CtEntry* e = find(tuple(kUdp, kClient4, port, kServer4, 53));
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e->tuple[1], ct_tuple_reverse(e->tuple[0]));
        EXPECT_EQ(e->flags & (kCtfSrcNat | kCtfDstNat), 0);
    }
}

// Address-only SNAT keeps the source port.
TEST_F(CtShardNatTest, SnatAddressOnlyKeepsPort) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 0, 0);
    Bytes f = udp_frame(kClient4, 5000, kServer4, 53);
    run(f, commit_nat(&spec), 0);
    EXPECT_TRUE(checksums_ok(f));
    const Carried c = carried(f);
    EXPECT_EQ(c.src, kPublic4);
    EXPECT_EQ(c.sport, 5000);
}

// Echo SNAT: the identifier plays the port; the reply to the new identifier comes back with the
// client's own.
TEST_F(CtShardNatTest, IcmpEchoSnatRewritesIdentifier) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 2000, 2000);
    Bytes req = echo_frame(true, kClient4, kServer4, 0x1234);
    Out o = run(req, commit_nat(&spec), 0);
    ASSERT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_TRUE(checksums_ok(req));
    EXPECT_EQ(carried(req).src, kPublic4);
    EXPECT_EQ(echo_id(req), 2000);
    const CtEntry* e = find(tuple(kIcmp, kClient4, 0x1234, kServer4, 0x1234));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tuple[1], tuple(kIcmp, kServer4, 2000, kPublic4, 2000));

    Bytes reply = echo_frame(false, kServer4, kPublic4, 2000);
    o = run(reply, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_TRUE(checksums_ok(reply));
    EXPECT_EQ(carried(reply).dst, kClient4);
    EXPECT_EQ(carried(reply).src, kServer4);
    EXPECT_EQ(echo_id(reply), 0x1234);
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), kClient4);
}

// A port unreachable sent to the public address about a SNATed datagram goes back to the client
// with the quote as the client sent it; without nat it is left alone.
TEST_F(CtShardNatTest, IcmpErrorAboutSnatConnectionTranslatedBack) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 6000, 6000);
    Bytes f = udp_frame(kClient4, 5000, kServer4, 53);
    run(f, commit_nat(&spec), 0);
    ASSERT_EQ(carried(f).sport, 6000);

    const Bytes error = udp_unreachable(kPublic4, kPublic4, 6000, kServer4, 53);
    ASSERT_TRUE(checksums_ok(error));
    Bytes plain = error;
    Out o = run(plain, track(), 1);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_EQ(plain, error);

    Bytes translated = error;
    o = run(translated, nat(), 2);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_TRUE(checksums_ok(translated));
    EXPECT_TRUE(quoted_ipv4_header_ok(translated));
    EXPECT_EQ(addr_of(o.key.ip_dst, 4), kClient4);
    const Carried outer = carried(translated);
    EXPECT_EQ(outer.src, kRouter4);
    EXPECT_EQ(outer.dst, kClient4);
    Parsed p;
    ASSERT_TRUE(parse(translated, &p));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(translated.data() + quoted + 12, kClient4.data(), 4));
    EXPECT_EQ(0, std::memcmp(translated.data() + quoted + 16, kServer4.data(), 4));
    EXPECT_EQ(get16(translated, quoted + 20), 5000);
    EXPECT_EQ(get16(translated, quoted + 22), 53);
}

// Time exceeded about a SNATed echo request: the quote gets the client's address and identifier
// back.
TEST_F(CtShardNatTest, IcmpErrorAboutSnatEchoRestoresIdentifier) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 2000, 2000);
    run(echo_frame(true, kClient4, kServer4, 0x1234), commit_nat(&spec), 0);
    const Bytes sent = ip_packet(l4_spec(4, kIcmp, kPublic4, kServer4, icmp(8, 0, 2000, 1)));
    Bytes f = icmp_error(4, 11, 0, kRouter4, kPublic4, sent, 20 + 8 + 6);
    const Out o = run(f, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_TRUE(quoted_ipv4_header_ok(f));
    EXPECT_EQ(carried(f).dst, kClient4);
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 12, kClient4.data(), 4));
    EXPECT_EQ(get16(f, quoted + 20 + 4), 0x1234);
}

// ICMPv6 packet too big about a SNATed IPv6 datagram: translated back, ICMPv6 checksum (with its
// pseudo-header) right.
TEST_F(CtShardNatTest, Ipv6IcmpErrorAboutSnatConnection) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic6, kPublic6, 6000, 6000, 6);
    Bytes d = udp_frame(kClient6, 5000, kServer6, 53, 6);
    run(d, commit_nat(&spec), 0);
    ASSERT_EQ(carried(d).sport, 6000);
    const Bytes sent = ip_packet(l4_spec(6, kUdp, kPublic6, kServer6, udp(6000, 53, pattern(30))));
    Bytes f = icmp_error(6, 2, 0, kRouter6, kPublic6, sent, 40 + 8 + 8);
    ASSERT_TRUE(checksums_ok(f));
    const Out o = run(f, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_EQ(carried(f).dst, kClient6);
    EXPECT_EQ(carried(f).src, kRouter6);
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 8, kClient6.data(), 16));
    EXPECT_EQ(get16(f, quoted + 40), 5000);
}

// DNAT: an error from the backend's side about the client's (translated) packet goes back to the
// client quoting the packet as the client sent it, to the public address.
TEST_F(CtShardNatTest, IcmpErrorAboutDnatConnectionTranslatedBack) {
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    const TcpFlow flow{.server = kPublic4};
    run(flow.syn(), commit_nat(&spec), 0);
    const Bytes sent =
        ip_packet(l4_spec(4, kTcp, kClient4, kBackend4, tcp(40000, 8080, flow.c_isn, 0, kSyn)));
    Bytes f = icmp_error(4, 3, 1, kRouter4, kClient4, sent, 20 + 8);
    const Out o = run(f, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_TRUE(checksums_ok(f));
    EXPECT_TRUE(quoted_ipv4_header_ok(f));
    EXPECT_EQ(carried(f).dst, kClient4);
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    const size_t quoted = p.layout.l4_offset + 8;
    EXPECT_EQ(0, std::memcmp(f.data() + quoted + 16, kPublic4.data(), 4));
    EXPECT_EQ(get16(f, quoted + 22), 80);
}

// Four ports for one server: four connections get the four ports, the fifth is refused (kFull,
// counted as port exhaustion) and leaves the frame and the zone count alone.
TEST_F(CtShardNatTest, SnatPortExhaustion) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 3000, 3003);
    std::set<uint16_t> ports;
    for (uint16_t i = 0; i < 4; ++i) {
        Bytes f = udp_frame(kClient4, static_cast<uint16_t>(5000 + i), kServer4, 53);
        ASSERT_EQ(run(f, commit_nat(&spec), 0).verdict, CtVerdict::kContinue);
        ports.insert(carried(f).sport);
    }
    EXPECT_EQ(ports, (std::set<uint16_t>{3000, 3001, 3002, 3003}));
    Bytes fifth = udp_frame(kClient4b, 5000, kServer4, 53);
    const Bytes before = fifth;
    const Out o = run(fifth, commit_nat(&spec), 1);
    EXPECT_EQ(o.verdict, CtVerdict::kFull);
    EXPECT_EQ(fifth, before);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(c.nat_exhausted, 1u);
    EXPECT_EQ(c.full_drops, 0u);
    EXPECT_EQ(c.created, 4u);
    EXPECT_EQ(zone_count(0), 4u);
    EXPECT_EQ(shard_->table().size(), 4u);
    // Another server has all four ports free.
    EXPECT_EQ(run(udp_frame(kClient4b, 5000, kBackend4, 53), commit_nat(&spec), 1).verdict,
              CtVerdict::kContinue);
}

// Many connections to one server: each gets its own (address, port), all within the ranges; when
// the ports of one address run out the next address is used.
TEST_F(CtShardNatTest, SnatDistinctConnectionsGetDistinctBindings) {
    // 4 addresses x 16 ports = 64 bindings for one server endpoint.
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4Last, 7000, 7015);
    std::set<std::pair<uint32_t, uint16_t>> seen;
    for (uint16_t i = 0; i < 64; ++i) {
        Bytes f = tcp_frame(kClient4, static_cast<uint16_t>(30000 + i), kServer4, 443, 1, 0, kSyn);
        ASSERT_EQ(run(f, commit_nat(&spec), 0).verdict, CtVerdict::kContinue) << i;
        ASSERT_TRUE(checksums_ok(f));
        const Carried c = carried(f);
        EXPECT_GE(std::memcmp(c.src.data(), kPublic4.data(), 4), 0);
        EXPECT_LE(std::memcmp(c.src.data(), kPublic4Last.data(), 4), 0);
        EXPECT_GE(c.sport, 7000);
        EXPECT_LE(c.sport, 7015);
        uint32_t a;
        std::memcpy(&a, c.src.data(), 4);
        EXPECT_TRUE(seen.insert({a, c.sport}).second) << "binding reused at " << i;
    }
    EXPECT_EQ(run(tcp_frame(kClient4b, 1, kServer4, 443, 1, 0, kSyn), commit_nat(&spec), 0).verdict,
              CtVerdict::kFull);
    EXPECT_EQ(shard_->counters().nat_exhausted, 1u);
}

// IPv6 SNAT over a range far wider than 2^32 addresses, and the reply back.
TEST_F(CtShardNatTest, Ipv6Snat) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic6, kPublic6Last, 20000, 20999, 6);
    const TcpFlow f{
        .client = kClient6, .cport = 40000, .server = kServer6, .sport = 443, .version = 6};
    Bytes syn = f.syn();
    ASSERT_EQ(run(syn, commit_nat(&spec), 0).verdict, CtVerdict::kContinue);
    EXPECT_TRUE(checksums_ok(syn));
    const Carried c = carried(syn);
    EXPECT_GE(std::memcmp(c.src.data(), kPublic6.data(), 16), 0);
    EXPECT_LE(std::memcmp(c.src.data(), kPublic6Last.data(), 16), 0);
    EXPECT_GE(c.sport, 20000);
    EXPECT_LE(c.sport, 20999);
    EXPECT_EQ(c.dst, kServer6);
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tuple[1], tuple(kTcp, kServer6, 443, c.src, c.sport, 0, 6));

    Bytes reply =
        tcp_frame(kServer6, 443, c.src, c.sport, f.s_isn, f.c_isn + 1, kSyn | kAck, {}, 6);
    const Out o = run(reply, nat(), 1);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_TRUE(checksums_ok(reply));
    EXPECT_EQ(carried(reply).dst, kClient6);
    EXPECT_EQ(carried(reply).dport, 40000);
    // An IPv4 spec cannot translate IPv6.
    const NatSpec v4 = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 0, 0);
    EXPECT_EQ(run(udp_frame(kClient6, 1, kServer6, 2, 6), commit_nat(&v4), 2).verdict,
              CtVerdict::kFull);
}

// A DNAT rule with a port (to backend:8080) that also matches pings: the echo should go to the
// backend address with its identifier kept ("DNAT keeps the echo identifier").
TEST_F(CtShardNatTest, IcmpEchoDnatWithPortRangeKeepsIdentifier) {
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    Bytes req = echo_frame(true, kClient4, kPublic4, 0x1234);
    const Out o = run(req, commit_nat(&spec), 0);
    ASSERT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(shard_->counters().nat_exhausted, 0u);
    EXPECT_TRUE(checksums_ok(req));
    EXPECT_EQ(carried(req).dst, kBackend4);
    EXPECT_EQ(echo_id(req), 0x1234);
    Bytes reply = echo_frame(false, kBackend4, kClient4, 0x1234);
    EXPECT_EQ(st(run(reply, nat(), 1).state()), "+trk+est+rpl");
    EXPECT_EQ(carried(reply).src, kPublic4);
}

// ---- Several workers ------------------------------------------------------------------------

class CtShardWorkersTest : public CtShardTest {
protected:
    void SetUp() override {
        CtShardTest::SetUp();
        for (uint16_t w = 0; w < 2; ++w) {
            workers_[w] = make_shard(1024, w, 2);
            ASSERT_NE(workers_[w], nullptr);
        }
    }
    ConntrackShard* w(uint16_t i) { return workers_[i].get(); }

    /// A client port p (from 40000 on) for which the connection kClient4:p -> kPublic4:80 is
    /// owned by worker 0 while its DNAT reply tuple kBackend4:8080 -> kClient4:p hashes to
    /// worker 1; `skip` earlier matches are passed over.
    static uint16_t foreign_port(unsigned skip = 0) {
        for (uint32_t p = 40000; p < 65536; ++p) {
            const auto port = static_cast<uint16_t>(p);
            if (ct_owner(tuple(kTcp, kClient4, port, kPublic4, 80), 2) == 0 &&
                ct_owner(tuple(kTcp, kBackend4, 8080, kClient4, port), 2) == 1 && skip-- == 0) {
                return port;
            }
        }
        return 0;
    }

    std::unique_ptr<ConntrackShard> workers_[2];
};

// SNAT picks bindings whose reply tuple hashes to the worker that owns the connection, so both
// directions meet on one worker: no foreign replies, no notices.
TEST_F(CtShardWorkersTest, SnatReplyTupleHashesToOwner) {
    const NatSpec spec = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 1024, 65535);
    std::mt19937 rng(7);
    for (int i = 0; i < 400; ++i) {
        Addr client = {10, static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng()),
                       static_cast<uint8_t>(rng())};
        Addr server = {198, 51, static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng())};
        const auto cport = static_cast<uint16_t>(1024 + rng() % 64000);
        const uint16_t sport = rng() % 2 ? 443 : 80;
        const CtTuple t = tuple(kTcp, client, cport, server, sport);
        if (find(t, nullptr, w(0)) || find(t, nullptr, w(1))) continue;
        const uint16_t owner = ct_owner(t, 2);
        Bytes syn = tcp_frame(client, cport, server, sport, 1, 0, kSyn);
        ASSERT_EQ(run(syn, commit_nat(&spec), 0, w(owner)).verdict, CtVerdict::kContinue);
        const CtEntry* e = find(t, nullptr, w(owner));
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(ct_owner(e->tuple[1], 2), owner) << i;
        EXPECT_FALSE(e->flags & kCtfForeignReply);
        // The reply, as the owner's worker would receive it, is found on the owner.
        const Carried c = carried(syn);
        unsigned dir = 0;
        EXPECT_EQ(find(tuple(kTcp, server, sport, c.src, c.sport), &dir, w(owner)), e);
        EXPECT_EQ(dir, 1u);
    }
    for (uint16_t i = 0; i < 2; ++i) {
        EXPECT_EQ(w(i)->counters().foreign_reply, 0u);
        EXPECT_EQ(w(i)->notice_count(), 0u);
        EXPECT_EQ(w(i)->counters().nat_exhausted, 0u);
    }
}

// DNAT to one address:port leaves no choice: when the reply tuple hashes to the other worker the
// entry is flagged kCtfForeignReply and a kRedirectAdd notice is queued for that worker.
TEST_F(CtShardWorkersTest, DnatForeignReplyQueuesRedirectNotice) {
    const uint16_t cport = foreign_port();
    ASSERT_NE(cport, 0);
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    const TcpFlow f{.cport = cport, .server = kPublic4};
    ASSERT_EQ(run(f.syn(), commit_nat(&spec), 0, w(0)).verdict, CtVerdict::kContinue);
    const CtEntry* e = find(f.orig(), nullptr, w(0));
    ASSERT_NE(e, nullptr);
    const CtTuple reply = tuple(kTcp, kBackend4, 8080, kClient4, cport);
    EXPECT_EQ(e->tuple[1], reply);
    EXPECT_EQ(e->flags & (kCtfForeignReply | kCtfDstNat), kCtfForeignReply | kCtfDstNat);
    EXPECT_EQ(w(0)->counters().foreign_reply, 1u);
    ASSERT_EQ(w(0)->notice_count(), 1u);
    const CtNotice& n = w(0)->notices()[0];
    EXPECT_EQ(n.kind, CtNotice::kRedirectAdd);
    EXPECT_EQ(n.to, 1);
    EXPECT_EQ(n.owner, 0);
    EXPECT_EQ(n.tuple, reply);
    w(0)->clear_notices();
    EXPECT_EQ(w(0)->notice_count(), 0u);
}

// Once the notice is applied, the other worker hands the reply to the owner (kRedirect, frame
// untouched); the owner tracks and translates it. Removing the connection queues kRedirectDel,
// which removes the redirect.
TEST_F(CtShardWorkersTest, RedirectNoticeRoutesReplyToOwnerUntilRemoved) {
    const uint16_t cport = foreign_port();
    ASSERT_NE(cport, 0);
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    const TcpFlow f{.cport = cport, .server = kPublic4};
    run(f.syn(), commit_nat(&spec), 0, w(0));
    ASSERT_EQ(w(0)->notice_count(), 1u);
    const CtNotice add = w(0)->notices()[0];
    w(0)->clear_notices();
    w(1)->apply_notice(add, 0);
    EXPECT_EQ(w(1)->counters().redirects, 1u);
    EXPECT_EQ(w(1)->table().size(), 1u);
    EXPECT_EQ(counted_entries(w(1)->counters()), 1u);
    EXPECT_EQ(zone_count(0), 1u);  // a redirect is not a connection

    const Bytes reply =
        tcp_frame(kBackend4, 8080, kClient4, cport, f.s_isn, f.c_isn + 1, kSyn | kAck);
    Bytes on_other = reply;
    Out o = run(on_other, nat(), 1, w(1));
    EXPECT_EQ(o.verdict, CtVerdict::kRedirect);
    EXPECT_EQ(w(1)->redirect_to(), 0);
    EXPECT_EQ(on_other, reply);
    EXPECT_EQ(w(1)->counters().created, 0u);

    Bytes on_owner = reply;
    o = run(on_owner, nat(), 1, w(0));
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_EQ(carried(on_owner).src, kPublic4);
    EXPECT_EQ(carried(on_owner).sport, 80);
    EXPECT_TRUE(checksums_ok(on_owner));

    w(0)->remove(index_of(f.orig(), w(0)));
    EXPECT_EQ(zone_count(0), 0u);
    ASSERT_EQ(w(0)->notice_count(), 1u);
    const CtNotice del = w(0)->notices()[0];
    EXPECT_EQ(del.kind, CtNotice::kRedirectDel);
    EXPECT_EQ(del.to, 1);
    EXPECT_EQ(del.owner, 0);
    EXPECT_EQ(del.tuple, add.tuple);
    // A delete naming another owner is ignored.
    CtNotice wrong = del;
    wrong.owner = 1;
    w(1)->apply_notice(wrong, 2);
    EXPECT_EQ(w(1)->counters().redirects, 1u);
    w(1)->apply_notice(del, 2);
    EXPECT_EQ(w(1)->counters().redirects, 0u);
    EXPECT_EQ(w(1)->table().size(), 0u);
    EXPECT_EQ(w(1)->counters().removed, 0u);  // redirects are not connections
    o = run(Bytes(reply), nat(), 3, w(1));
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+inv");  // a SYN-ACK of nothing known
}

// A redirect lives as long as an established connection would without packets; packets keep it.
TEST_F(CtShardWorkersTest, RedirectExpiresAndIsRefreshedByPackets) {
    timeouts_.tcp[static_cast<size_t>(TcpState::kEstablished)] = 10;
    CtNotice n{};
    n.kind = CtNotice::kRedirectAdd;
    n.to = 1;
    n.owner = 0;
    n.tuple = tuple(kTcp, kBackend4, 8080, kClient4, 1234);
    w(1)->apply_notice(n, 0);
    // A notice for a tuple a connection of ours already has is ignored.
    run(udp_frame(kClient4, 1, kServer4, 2), commit(), 0, w(1));
    CtNotice mine = n;
    mine.tuple = tuple(kUdp, kClient4, 1, kServer4, 2);
    w(1)->apply_notice(mine, 0);
    EXPECT_EQ(w(1)->counters().redirects, 1u);

    Bytes f = tcp_frame(kBackend4, 8080, kClient4, 1234, 1, 1, kAck);
    EXPECT_EQ(run(f, track(), 9000, w(1)).verdict, CtVerdict::kRedirect);
    EXPECT_EQ(w(1)->expire(10000, 1024), 0u);
    EXPECT_EQ(w(1)->counters().redirects, 1u);
    w(1)->expire(19000, 1024);
    EXPECT_EQ(w(1)->counters().redirects, 0u);
    EXPECT_EQ(w(1)->counters().removed, 0u);
    EXPECT_EQ(w(1)->table().size(), 1u);  // the UDP connection (udp_first 30 s) remains
}

// The outbox holds kCtNoticeSlots notices: a foreign binding that could not announce its
// redirect is refused rather than created unreachable.
TEST_F(CtShardWorkersTest, FullNoticeOutboxRefusesForeignCommit) {
    const NatSpec spec = nat_spec(NatSpec::kDst, kBackend4, kBackend4, 8080, 8080);
    for (unsigned i = 0; i < kCtNoticeSlots; ++i) {
        const TcpFlow f{.cport = foreign_port(i), .server = kPublic4};
        ASSERT_NE(f.cport, 0);
        ASSERT_EQ(run(f.syn(), commit_nat(&spec), 0, w(0)).verdict, CtVerdict::kContinue);
    }
    ASSERT_EQ(w(0)->notice_count(), kCtNoticeSlots);
    const TcpFlow last{.cport = foreign_port(kCtNoticeSlots), .server = kPublic4};
    ASSERT_NE(last.cport, 0);
    EXPECT_EQ(run(last.syn(), commit_nat(&spec), 0, w(0)).verdict, CtVerdict::kFull);
    EXPECT_EQ(w(0)->counters().notices_lost, 1u);
    EXPECT_EQ(w(0)->counters().created, kCtNoticeSlots);
    EXPECT_EQ(zone_count(0), kCtNoticeSlots);
    w(0)->clear_notices();
    EXPECT_EQ(run(last.syn(), commit_nat(&spec), 0, w(0)).verdict, CtVerdict::kContinue);
}

// ---- ct_packet_tuple --------------------------------------------------------------------------

/// ct_packet_tuple over a frame; *ok says whether it keyed it.
CtTuple packet_tuple(const Bytes& f, uint16_t zone, bool* ok, bool* is_error) {
    Parsed p;
    EXPECT_TRUE(parse(f, &p));
    CtTuple t{};
    *ok = ct_packet_tuple(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key, zone, &t,
                          is_error);
    return t;
}

TEST(CtPacketTuple, TcpAndUdpUseTheFiveTuple) {
    bool ok = false;
    bool err = true;
    CtTuple t = packet_tuple(tcp_frame(kClient4, 40000, kServer4, 80, 1, 0, kSyn), 9, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_FALSE(err);
    EXPECT_EQ(t, tuple(kTcp, kClient4, 40000, kServer4, 80, 9));
    t = packet_tuple(udp_frame(kClient6, 5000, kServer6, 53, 6), 0, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_EQ(t, tuple(kUdp, kClient6, 5000, kServer6, 53, 0, 6));
    t = packet_tuple(build(l4_spec(4, kGre, kClient4, kServer4, pattern(24))), 1, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_EQ(t, tuple(kGre, kClient4, 0, kServer4, 0, 1));
}

TEST(CtPacketTuple, IcmpEchoUsesIdentifierAsBothPorts) {
    bool ok = false;
    bool err = true;
    CtTuple t = packet_tuple(echo_frame(true, kClient4, kServer4, 0xabcd), 2, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_FALSE(err);
    EXPECT_EQ(t, tuple(kIcmp, kClient4, 0xabcd, kServer4, 0xabcd, 2));
    t = packet_tuple(echo_frame(false, kServer6, kClient6, 0x0102, 6), 0, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_EQ(t, tuple(kIcmpv6, kServer6, 0x0102, kClient6, 0x0102, 0, 6));
}

// An error's tuple is its quote reversed: the connection's tuple in the error's direction.
TEST(CtPacketTuple, IcmpErrorIsReversedQuote) {
    bool ok = false;
    bool err = false;
    CtTuple t = packet_tuple(udp_unreachable(kClient4, kClient4, 5000, kServer4, 53), 4, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_TRUE(err);
    EXPECT_EQ(t, tuple(kUdp, kServer4, 53, kClient4, 5000, 4));
    const Bytes sent6 = ip_packet(l4_spec(6, kTcp, kClient6, kServer6, tcp(1000, 443, 1, 0, kSyn)));
    t = packet_tuple(icmp_error(6, 1, 4, kRouter4, kClient6, sent6, 48), 0, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_TRUE(err);
    EXPECT_EQ(t, tuple(kTcp, kServer6, 443, kClient6, 1000, 0, 6));
    const Bytes echo = ip_packet(l4_spec(4, kIcmp, kClient4, kServer4, icmp(8, 0, 77, 1)));
    t = packet_tuple(icmp_error(4, 11, 0, kRouter4, kClient4, echo, 28), 0, &ok, &err);
    EXPECT_TRUE(ok);
    EXPECT_EQ(t, tuple(kIcmp, kServer4, 77, kClient4, 77));
}

TEST(CtPacketTuple, Refusals) {
    bool ok = true;
    bool err = true;
    packet_tuple(arp_frame(), 0, &ok, &err);
    EXPECT_FALSE(ok);
    EXPECT_FALSE(err);
    PacketSpec frag = l4_spec(4, kUdp, kClient4, kServer4, pattern(64));
    frag.ipv4_frag = 0x00b9;
    packet_tuple(build(frag), 0, &ok, &err);
    EXPECT_FALSE(ok);
    frag.proto = kTcp;
    packet_tuple(build(frag), 0, &ok, &err);
    EXPECT_FALSE(ok);
    // Timestamp request: neither echo nor error.
    packet_tuple(build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(13, 0, 1, 1, pattern(12)))), 0,
                 &ok, &err);
    EXPECT_FALSE(ok);
    // An error whose quote is too short for ports, and one quoting GRE.
    const Bytes sent = ip_packet(l4_spec(4, kUdp, kClient4, kServer4, udp(5000, 53)));
    packet_tuple(icmp_error(4, 3, 3, kRouter4, kClient4, sent, 20 + 4), 0, &ok, &err);
    EXPECT_FALSE(ok);
    EXPECT_FALSE(err);
    const Bytes gre = ip_packet(l4_spec(4, kGre, kClient4, kServer4, pattern(24)));
    packet_tuple(icmp_error(4, 3, 3, kRouter4, kClient4, gre, 28), 0, &ok, &err);
    EXPECT_FALSE(ok);
}

}  // namespace
}  // namespace ferry
