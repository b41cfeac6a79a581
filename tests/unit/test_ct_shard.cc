// Unit tests of ConntrackShard, the per-worker connection tracker. Every test builds its packets
// as bytes (checksums computed from scratch), parses them with parse_frame, runs them through
// ConntrackShard::process with explicit now_ms values, and checks what the shard says about them
// (the verdict, key->ct_state/ct_zone/ct_mark), what it stores (entries through table()) and
// what it counts (counters(), the zone table). NAT tests also recompute every checksum of the
// rewritten frame in full. Helpers for building frames and checking checksums come from
// ct_frames.h.

#include "tests/unit/ct_shard_fixture.h"

namespace ferry {
namespace {

// ---- TCP --------------------------------------------------------------------------------------

// A SYN through ct() without commit is new but leaves nothing behind.
TEST_F(CtShardTest, TcpSynWithoutCommitIsNewAndCreatesNothing) {
    const TcpFlow f;
    const Out o = run(f.syn(), track(), 0);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+new");
    EXPECT_EQ(o.key.ct_zone, 0);
    EXPECT_EQ(o.key.ct_mark, 0u);
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().created, 0u);
    EXPECT_EQ(shard_->counters().lookups, 1u);
    EXPECT_EQ(zone_count(0), 0u);
}

// ct(commit) on a SYN creates a SYN_SENT connection holding both tuples.
TEST_F(CtShardTest, TcpSynWithCommitCreatesSynSentEntry) {
    const TcpFlow f;
    Bytes syn = f.syn();
    const Out o = run(syn, commit(), 5000);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+new");
    ASSERT_EQ(shard_->table().size(), 1u);
    unsigned dir = 9;
    const CtEntry* e = find(f.orig(), &dir);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(dir, 0u);
    EXPECT_EQ(e->tuple[0], f.orig());
    EXPECT_EQ(e->tuple[1], ct_tuple_reverse(f.orig()));
    EXPECT_EQ(e->tcp.state, TcpState::kSynSent);
    EXPECT_EQ(e->packets[0], 1u);
    EXPECT_EQ(e->bytes[0], syn.size());
    EXPECT_EQ(e->packets[1], 0u);
    EXPECT_EQ(e->port[0], kInPort);
    EXPECT_EQ(e->port[1], kCtNoPort);
    EXPECT_EQ(e->flags, 0u);
    EXPECT_EQ(e->expires_ms, 5000u + 1000u * timeouts_.tcp[1]);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(c.created, 1u);
    EXPECT_EQ(tcp_count(c, TcpState::kSynSent), 1u);
    EXPECT_EQ(counted_entries(c), 1u);
    EXPECT_EQ(zone_count(0), 1u);
}

// The server's SYN-ACK is the reply: +est+rpl, SYN_RECV, the reply port recorded.
TEST_F(CtShardTest, TcpSynAckReplyIsEstablishedReply) {
    const TcpFlow f;
    run(f.syn(), commit(), 0);
    const Out o = run(f.syn_ack(), track(), 10);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tcp.state, TcpState::kSynRecv);
    EXPECT_TRUE(e->flags & kCtfSeenReply);
    EXPECT_EQ(e->packets[1], 1u);
    EXPECT_EQ(e->port[1], kInPort);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(tcp_count(c, TcpState::kSynSent), 0u);
    EXPECT_EQ(tcp_count(c, TcpState::kSynRecv), 1u);
}

// The client's ACK completes the handshake: +est (no +rpl), ESTABLISHED with its long timeout.
TEST_F(CtShardTest, TcpHandshakeAckIsEstablished) {
    const TcpFlow f;
    run(f.syn(), commit(), 0);
    run(f.syn_ack(), track(), 10);
    const Out o = run(f.ack(), track(), 20);
    EXPECT_EQ(st(o.state()), "+trk+est");
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tcp.state, TcpState::kEstablished);
    EXPECT_EQ(e->packets[0], 2u);
    EXPECT_EQ(e->expires_ms, 20u + 1000ull * timeouts_.tcp[4]);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(tcp_count(c, TcpState::kSynRecv), 0u);
    EXPECT_EQ(tcp_count(c, TcpState::kEstablished), 1u);
    EXPECT_EQ(counted_entries(c), 1u);
    EXPECT_EQ(c.invalid, 0u);
}

// Data far beyond the receiver's window is +inv, in either direction; the connection is left as
// it was (state, packet counts, deadline).
TEST_F(CtShardTest, TcpOutOfWindowSegmentIsInvalidAndLeavesState) {
    const TcpFlow f;
    handshake(f, 0);
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    const CtEntry before = *e;
    Out o = run(f.from_client(kAck | kPsh, f.c_isn + 1 + 3000000, f.s_isn + 1, pattern(10)),
                track(), 100);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    o = run(f.from_server(kAck | kPsh, f.s_isn + 1 + 3000000, f.c_isn + 1, pattern(10)), track(),
            100);
    EXPECT_EQ(st(o.state()), "+trk+rpl+inv");
    EXPECT_EQ(e->tcp.state, TcpState::kEstablished);
    EXPECT_EQ(e->packets[0], before.packets[0]);
    EXPECT_EQ(e->packets[1], before.packets[1]);
    EXPECT_EQ(e->expires_ms, before.expires_ms);
    EXPECT_EQ(std::memcmp(&e->tcp, &before.tcp, sizeof(TcpConn)), 0);
    EXPECT_EQ(shard_->counters().invalid, 2u);
    // In-window data is still accepted afterwards.
    o = run(f.from_client(kAck | kPsh, f.c_isn + 1, f.s_isn + 1, pattern(10)), track(), 200);
    EXPECT_EQ(st(o.state()), "+trk+est");
}

// A bare ACK for a connection never seen (not liberal) is +inv, even with commit.
TEST_F(CtShardTest, TcpBareAckWithoutConnectionIsInvalid) {
    const TcpFlow f;
    const Out o = run(f.ack(), commit(), 0);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().invalid, 1u);
    EXPECT_EQ(shard_->counters().created, 0u);
    EXPECT_EQ(zone_count(0), 0u);
}

// In a `liberal` zone a mid-stream ACK may open a connection, which skips window checks.
TEST_F(CtShardTest, TcpLiberalZonePicksUpMidStream) {
    zones_->zones[7].liberal = 1;
    const TcpFlow f;
    Out o = run(f.ack(), commit(7), 0);
    EXPECT_EQ(st(o.state()), "+trk+new");
    EXPECT_EQ(o.key.ct_zone, 7);
    const CtEntry* e = find(f.orig(7));
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->flags & kCtfLiberal);
    EXPECT_EQ(e->tcp.state, TcpState::kEstablished);
    o = run(f.from_client(kAck, f.c_isn + 1 + 3000000, f.s_isn + 1, pattern(10)), track(7), 1);
    EXPECT_EQ(st(o.state()), "+trk+new");  // accepted, no reply seen yet
    o = run(f.from_server(kAck, f.s_isn + 1, f.c_isn + 1 + 3000010), track(7), 2);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_EQ(shard_->counters().invalid, 0u);
}

// A new SYN on a TIME_WAIT tuple replaces the old connection: counted as reopened, and the new
// connection starts from SYN_SENT with fresh counters.
TEST_F(CtShardTest, TcpSynInTimeWaitReopensConnection) {
    TcpFlow f;
    handshake(f, 0);
    // Client FIN, server ACK of it, server FIN, client ACK: TIME_WAIT.
    EXPECT_EQ(st(run(f.from_client(kFin | kAck, f.c_isn + 1, f.s_isn + 1), track(), 1).state()),
              "+trk+est");
    run(f.from_server(kAck, f.s_isn + 1, f.c_isn + 2), track(), 2);
    run(f.from_server(kFin | kAck, f.s_isn + 1, f.c_isn + 2), track(), 3);
    run(f.from_client(kAck, f.c_isn + 2, f.s_isn + 2), track(), 4);
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    ASSERT_EQ(e->tcp.state, TcpState::kTimeWait);
    EXPECT_EQ(e->expires_ms, 4u + 1000u * timeouts_.tcp[8]);
    EXPECT_EQ(tcp_count(shard_->counters(), TcpState::kTimeWait), 1u);

    f.c_isn += 100000;
    const Out o = run(f.syn(), commit(), 10);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+new");
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(c.reopened, 1u);
    EXPECT_EQ(c.created, 2u);
    EXPECT_EQ(c.removed, 1u);
    EXPECT_EQ(tcp_count(c, TcpState::kTimeWait), 0u);
    EXPECT_EQ(tcp_count(c, TcpState::kSynSent), 1u);
    EXPECT_EQ(counted_entries(c), 1u);
    EXPECT_EQ(shard_->table().size(), 1u);
    EXPECT_EQ(zone_count(0), 1u);
    e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tcp.state, TcpState::kSynSent);
    EXPECT_EQ(e->packets[0], 1u);
    EXPECT_EQ(e->packets[1], 0u);
    EXPECT_FALSE(e->flags & kCtfSeenReply);
    // The new handshake proceeds normally.
    EXPECT_EQ(st(run(f.syn_ack(), track(), 11).state()), "+trk+est+rpl");
}

// Without commit the reopening SYN still forgets the old connection: nothing is left.
TEST_F(CtShardTest, TcpReopenWithoutCommitForgetsOldConnection) {
    TcpFlow f;
    handshake(f, 0);
    EXPECT_EQ(st(run(f.from_client(kRst, f.c_isn + 1, 0), track(), 1).state()), "+trk+est");
    ASSERT_EQ(find(f.orig())->tcp.state, TcpState::kClose);
    f.c_isn += 7777;
    EXPECT_EQ(st(run(f.syn(), track(), 2).state()), "+trk+new");
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().reopened, 1u);
    EXPECT_EQ(counted_entries(shard_->counters()), 0u);
    EXPECT_EQ(zone_count(0), 0u);
}

// An in-window RST (here from the server) closes the connection: CLOSE with its short timeout.
TEST_F(CtShardTest, TcpRstClosesConnection) {
    const TcpFlow f;
    handshake(f, 0);
    const Out o = run(f.from_server(kRst | kAck, f.s_isn + 1, f.c_isn + 1), track(), 50);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tcp.state, TcpState::kClose);
    EXPECT_EQ(e->expires_ms, 50u + 1000u * timeouts_.tcp[9]);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(tcp_count(c, TcpState::kEstablished), 0u);
    EXPECT_EQ(tcp_count(c, TcpState::kClose), 1u);
    // A RST far outside the window is refused and changes nothing.
    const TcpFlow g{.cport = 40001};
    handshake(g, 60);
    EXPECT_EQ(st(run(g.from_client(kRst, g.c_isn + 1 + 5000000, 0), track(), 61).state()),
              "+trk+inv");
    EXPECT_EQ(find(g.orig())->tcp.state, TcpState::kEstablished);
}

// ct(commit, mark=N) stores the mark; later packets of both directions report it, and a packet
// without commit cannot change it.
TEST_F(CtShardTest, CommitSetsMarkReportedOnLaterPackets) {
    const TcpFlow f;
    CtParams p = commit();
    p.set_mark = true;
    p.mark = 0x42;
    EXPECT_EQ(run(f.syn(), p, 0).key.ct_mark, 0x42u);
    CtParams q = track();
    q.set_mark = true;
    q.mark = 0x99;
    EXPECT_EQ(run(f.syn_ack(), q, 1).key.ct_mark, 0x42u);
    EXPECT_EQ(run(f.ack(), track(), 2).key.ct_mark, 0x42u);
    p.mark = 0x43;  // commit on an existing connection updates the mark
    EXPECT_EQ(run(f.ack(), p, 3).key.ct_mark, 0x43u);
    EXPECT_EQ(find(f.orig())->mark, 0x43u);
}

// ---- UDP, ICMP and what ct cannot key --------------------------------------------------------

// UDP: the first packet is new, the reply +est+rpl, the original direction afterwards +est;
// the timeout grows from udp_first to udp_stream once a reply was seen.
TEST_F(CtShardTest, UdpNewThenReplyThenEstablished) {
    const CtTuple t = tuple(kUdp, kClient4, 5000, kServer4, 53);
    Out o = run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    EXPECT_EQ(st(o.state()), "+trk+new");
    const CtEntry* e = find(t);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->flags, 0u);
    EXPECT_EQ(e->expires_ms, 1000u * timeouts_.udp_first);
    EXPECT_EQ(shard_->counters().udp, 1u);
    EXPECT_EQ(st(run(udp_frame(kClient4, 5000, kServer4, 53), track(), 1).state()), "+trk+new");

    o = run(udp_frame(kServer4, 53, kClient4, 5000), track(), 2);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_TRUE(e->flags & kCtfSeenReply);
    EXPECT_EQ(e->port[1], kInPort);
    EXPECT_EQ(e->expires_ms, 2u + 1000u * timeouts_.udp_stream);

    o = run(udp_frame(kClient4, 5000, kServer4, 53), track(), 3);
    EXPECT_EQ(st(o.state()), "+trk+est");
    EXPECT_EQ(e->packets[0], 3u);
    EXPECT_EQ(e->packets[1], 1u);
    EXPECT_EQ(shard_->counters().udp, 1u);
    EXPECT_EQ(counted_entries(shard_->counters()), 1u);
}

// UDP/ICMP pseudo-state: ct_entry.h documents CtEntry::other_state (CtOtherState kFirst ->
// kMultiple) and kCtfAssured ("UDP: packets seen in both directions more than once").
TEST_F(CtShardTest, UdpOtherStateAndAssuredFollowTraffic) {
    const CtTuple t = tuple(kUdp, kClient4, 5000, kServer4, 53);
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    const CtEntry* e = find(t);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->other_state, static_cast<uint8_t>(CtOtherState::kFirst));
    run(udp_frame(kServer4, 53, kClient4, 5000), track(), 1);
    EXPECT_EQ(e->other_state, static_cast<uint8_t>(CtOtherState::kMultiple));
    run(udp_frame(kClient4, 5000, kServer4, 53), track(), 2);
    run(udp_frame(kServer4, 53, kClient4, 5000), track(), 3);
    EXPECT_TRUE(e->flags & kCtfAssured);
}

// Echo request then reply: +new, then +est+rpl; the identifier keys the connection.
TEST_F(CtShardTest, IcmpEchoRequestAndReply) {
    const CtTuple t = tuple(kIcmp, kClient4, 0x1234, kServer4, 0x1234);
    EXPECT_EQ(st(run(echo_frame(true, kClient4, kServer4, 0x1234), commit(), 0).state()),
              "+trk+new");
    const CtEntry* e = find(t);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->expires_ms, 1000u * timeouts_.icmp);
    EXPECT_EQ(shard_->counters().icmp, 1u);
    EXPECT_EQ(st(run(echo_frame(false, kServer4, kClient4, 0x1234), track(), 1).state()),
              "+trk+est+rpl");
    EXPECT_EQ(st(run(echo_frame(true, kClient4, kServer4, 0x1234), track(), 2).state()),
              "+trk+est");
    // Another identifier is another connection.
    EXPECT_EQ(st(run(echo_frame(true, kClient4, kServer4, 0x1235), track(), 3).state()),
              "+trk+new");
    EXPECT_EQ(shard_->table().size(), 1u);
}

// An echo reply nobody asked for cannot open a connection.
TEST_F(CtShardTest, IcmpEchoReplyWithoutRequestIsInvalid) {
    const Out o = run(echo_frame(false, kServer4, kClient4, 0x1234), commit(), 0);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().invalid, 1u);
}

// A request from the answering side that reuses the identifier of a ping going the other way
// is not its reply, nor is a reply in the original direction: both are invalid, and the
// connection is unchanged.
TEST_F(CtShardTest, IcmpEchoTypeMustMatchItsDirection) {
    const CtTuple t = tuple(kIcmp, kClient4, 0x1234, kServer4, 0x1234);
    ASSERT_EQ(st(run(echo_frame(true, kClient4, kServer4, 0x1234), commit(), 0).state()),
              "+trk+new");
    EXPECT_EQ(st(run(echo_frame(true, kServer4, kClient4, 0x1234), commit(), 1).state()),
              "+trk+inv");
    EXPECT_EQ(st(run(echo_frame(false, kClient4, kServer4, 0x1234), commit(), 2).state()),
              "+trk+inv");
    EXPECT_EQ(shard_->counters().invalid, 2u);
    const CtEntry* e = find(t);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->packets[0], 1u);
    EXPECT_EQ(e->packets[1], 0u);
    EXPECT_EQ(st(run(echo_frame(false, kServer4, kClient4, 0x1234), track(), 3).state()),
              "+trk+est+rpl");
    EXPECT_EQ(shard_->table().size(), 1u);
}

// IPv6: UDP and ICMPv6 echo are tracked alike.
TEST_F(CtShardTest, Ipv6UdpAndIcmpv6Echo) {
    EXPECT_EQ(st(run(udp_frame(kClient6, 5000, kServer6, 53, 6), commit(), 0).state()), "+trk+new");
    EXPECT_EQ(st(run(udp_frame(kServer6, 53, kClient6, 5000, 6), track(), 1).state()),
              "+trk+est+rpl");
    EXPECT_NE(find(tuple(kUdp, kClient6, 5000, kServer6, 53, 0, 6)), nullptr);
    EXPECT_EQ(st(run(echo_frame(true, kClient6, kServer6, 7, 6), commit(), 2).state()), "+trk+new");
    EXPECT_EQ(st(run(echo_frame(false, kServer6, kClient6, 7, 6), track(), 3).state()),
              "+trk+est+rpl");
    EXPECT_EQ(st(run(echo_frame(false, kServer6, kClient6, 8, 6), track(), 4).state()), "+trk+inv");
    EXPECT_EQ(shard_->counters().udp, 1u);
    EXPECT_EQ(shard_->counters().icmp, 1u);
}

// A port unreachable about the client's datagram travels towards the client, the reply
// direction: +rel+rpl. The error creates nothing and does not touch the connection's counters.
TEST_F(CtShardTest, IcmpErrorQuotingTrackedUdpIsRelatedReply) {
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    CtParams p = commit();
    p.set_mark = true;
    p.mark = 5;
    run(udp_frame(kClient4, 5000, kServer4, 53), p, 0);
    const Out o = run(udp_unreachable(kClient4, kClient4, 5000, kServer4, 53), commit(), 1);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_EQ(o.key.ct_mark, 5u);
    EXPECT_EQ(shard_->table().size(), 1u);
    const CtEntry* e = find(tuple(kUdp, kClient4, 5000, kServer4, 53));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->packets[1], 0u);
    EXPECT_FALSE(e->flags & kCtfSeenReply);
}

// An error about a packet of the reply direction (the server's segment, reported to the server)
// travels in the original direction: +rel without +rpl. TCP quotes work as UDP ones.
TEST_F(CtShardTest, IcmpErrorInOriginalDirectionIsRelated) {
    const TcpFlow f;
    handshake(f, 0);
    const Bytes sent = ip_packet(
        l4_spec(4, kTcp, kServer4, kClient4, tcp(80, 40000, f.s_isn + 1, f.c_isn + 1, kAck)));
    Out o = run(icmp_error(4, 11, 0, kRouter4, kServer4, sent, 20 + 8), track(), 1);
    EXPECT_EQ(st(o.state()), "+trk+rel");
    // The same quote the other way round is the reply direction.
    const Bytes sent2 = ip_packet(
        l4_spec(4, kTcp, kClient4, kServer4, tcp(40000, 80, f.c_isn + 1, f.s_isn + 1, kAck)));
    o = run(icmp_error(4, 3, 1, kRouter4, kClient4, sent2, 20 + 8), track(), 2);
    EXPECT_EQ(st(o.state()), "+trk+rel+rpl");
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kEstablished);
}

// An error quoting a connection nobody tracks is +inv.
TEST_F(CtShardTest, IcmpErrorQuotingUnknownConnectionIsInvalid) {
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    const Out o = run(udp_unreachable(kClient4, kClient4, 5001, kServer4, 53), commit(), 1);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 1u);
    EXPECT_EQ(shard_->counters().invalid, 1u);
}

// What ct cannot key is tracked as invalid: a non-IP frame.
TEST_F(CtShardTest, NonIpFrameIsTrackedInvalid) {
    const Out o = run(arp_frame(), commit(3), 0);
    EXPECT_EQ(o.verdict, CtVerdict::kContinue);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(o.key.ct_zone, 3);
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().invalid, 1u);
}

// Without reassembly a non-first UDP fragment has no ports: +inv. A first fragment is tracked.
TEST_F(CtShardTest, NonFirstFragmentOfUdpIsInvalid) {
    PacketSpec s = l4_spec(4, kUdp, kClient4, kServer4, pattern(64, 0x10));
    s.ipv4_frag = 0x00b9;  // offset 185 * 8, last fragment
    Out o = run(build(s), commit(), 0);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    s = l4_spec(4, kUdp, kClient4, kServer4, udp(5000, 53, pattern(64)));
    s.ipv4_frag = 0x2000;  // more fragments, offset 0
    o = run(build(s), commit(), 0);
    EXPECT_EQ(st(o.state()), "+trk+new");
    EXPECT_NE(find(tuple(kUdp, kClient4, 5000, kServer4, 53)), nullptr);
}

// Protocols without ports are keyed by addresses alone.
TEST_F(CtShardTest, OtherProtocolKeyedByAddresses) {
    const Bytes gre = build(l4_spec(4, kGre, kClient4, kServer4, pattern(24)));
    Bytes f = gre;
    EXPECT_EQ(st(run(f, commit(), 0).state()), "+trk+new");
    const CtEntry* e = find(tuple(kGre, kClient4, 0, kServer4, 0));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->expires_ms, 1000u * timeouts_.other);
    EXPECT_EQ(st(run(build(l4_spec(4, kGre, kServer4, kClient4, pattern(24))), track(), 1).state()),
              "+trk+est+rpl");
    EXPECT_EQ(shard_->counters().other, 1u);
}

// ---- Zones, limits, capacity ------------------------------------------------------------------

// The same tuple in two zones is two connections, each with its own state and zone count.
TEST_F(CtShardTest, SameTupleInTwoZonesIsIndependent) {
    EXPECT_EQ(run(udp_frame(kClient4, 5000, kServer4, 53), commit(1), 0).key.ct_zone, 1);
    EXPECT_EQ(st(run(udp_frame(kClient4, 5000, kServer4, 53), commit(2), 0).state()), "+trk+new");
    EXPECT_EQ(shard_->table().size(), 2u);
    EXPECT_EQ(zone_count(1), 1u);
    EXPECT_EQ(zone_count(2), 1u);
    EXPECT_EQ(zone_count(0), 0u);
    const Out o = run(udp_frame(kServer4, 53, kClient4, 5000), track(1), 1);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    EXPECT_EQ(o.key.ct_zone, 1);
    const CtEntry* z1 = find(tuple(kUdp, kClient4, 5000, kServer4, 53, 1));
    const CtEntry* z2 = find(tuple(kUdp, kClient4, 5000, kServer4, 53, 2));
    ASSERT_TRUE(z1 && z2);
    EXPECT_NE(z1, z2);
    EXPECT_TRUE(z1->flags & kCtfSeenReply);
    EXPECT_FALSE(z2->flags & kCtfSeenReply);
    // Zone 3 has never seen it.
    EXPECT_EQ(st(run(udp_frame(kServer4, 53, kClient4, 5000), track(3), 2).state()), "+trk+new");
}

// A zone's limit refuses commits beyond it (kLimit, counted in the zone and the shard, the
// count unchanged); removing a connection frees a slot for the next one.
TEST_F(CtShardTest, ZoneLimitRefusesCommitBeyondLimit) {
    zones_->zones[5].limit = 2;
    EXPECT_EQ(run(udp_frame(kClient4, 5000, kServer4, 53), commit(5), 0).verdict,
              CtVerdict::kContinue);
    EXPECT_EQ(run(udp_frame(kClient4, 5001, kServer4, 53), commit(5), 0).verdict,
              CtVerdict::kContinue);
    Bytes third = udp_frame(kClient4, 5002, kServer4, 53);
    const Out o = run(third, commit(5), 0);
    EXPECT_EQ(o.verdict, CtVerdict::kLimit);
    EXPECT_EQ(st(o.state()), "+trk+new");
    EXPECT_EQ(zone_count(5), 2u);
    EXPECT_EQ(zones_->zones[5].limit_drops.load(), 1u);
    EXPECT_EQ(shard_->counters().limit_drops, 1u);
    EXPECT_EQ(shard_->counters().created, 2u);
    EXPECT_EQ(shard_->table().size(), 2u);
    // Other zones are not limited by zone 5's limit.
    EXPECT_EQ(run(udp_frame(kClient4, 5002, kServer4, 53), commit(6), 0).verdict,
              CtVerdict::kContinue);

    shard_->remove(index_of(tuple(kUdp, kClient4, 5000, kServer4, 53, 5)));
    EXPECT_EQ(zone_count(5), 1u);
    EXPECT_EQ(shard_->counters().removed, 1u);
    EXPECT_EQ(run(third, commit(5), 1).verdict, CtVerdict::kContinue);
    EXPECT_EQ(zone_count(5), 2u);
    EXPECT_EQ(counted_entries(shard_->counters()), shard_->table().size());
}

// A zone's port_limit bounds the connections one port has open (all zones together): a port at
// it is refused (kLimit, counted on the port and the shard, no count changed) while another port
// still commits, well below the zone's own limit; removing one of the port's connections lets it
// commit again.
TEST_F(CtShardTest, PortLimitKeepsOnePortFromTakingTheZone) {
    zones_->zones[5].limit = 100;
    zones_->zones[5].port_limit = 2;
    // The frame's connection, committed as if it came in on in_port.
    const auto commit_on = [&](uint16_t in_port, uint16_t sport, uint16_t zone) {
        Bytes f = udp_frame(kClient4, sport, kServer4, 53);
        Parsed parsed;
        EXPECT_TRUE(parse(f, &parsed));
        parsed.key.in_port = in_port;
        return shard_->process(f.data(), static_cast<uint32_t>(f.size()), parsed.layout,
                               &parsed.key, commit(zone), 0);
    };
    const auto port_count = [&](uint16_t port) { return zones_->ports[port].count.load(); };
    EXPECT_EQ(commit_on(3, 5000, 5), CtVerdict::kContinue);
    EXPECT_EQ(commit_on(3, 5001, 5), CtVerdict::kContinue);
    EXPECT_EQ(commit_on(3, 5002, 5), CtVerdict::kLimit);
    EXPECT_EQ(port_count(3), 2u);
    EXPECT_EQ(zone_count(5), 2u);
    EXPECT_EQ(zones_->ports[3].limit_drops.load(), 1u);
    EXPECT_EQ(zones_->zones[5].limit_drops.load(), 0u);  // the zone's own limit refused none
    EXPECT_EQ(shard_->counters().limit_drops, 1u);
    EXPECT_EQ(shard_->table().size(), 2u);
    // Another guest's port still has its share.
    EXPECT_EQ(commit_on(4, 5003, 5), CtVerdict::kContinue);
    EXPECT_EQ(port_count(4), 1u);
    // A zone without a port limit takes port 3's connections, and they count against zone 5's.
    EXPECT_EQ(commit_on(3, 5004, 6), CtVerdict::kContinue);
    EXPECT_EQ(port_count(3), 3u);
    shard_->remove(index_of(tuple(kUdp, kClient4, 5000, kServer4, 53, 5)));
    EXPECT_EQ(port_count(3), 2u);
    EXPECT_EQ(commit_on(3, 5002, 5), CtVerdict::kLimit);
    shard_->remove(index_of(tuple(kUdp, kClient4, 5004, kServer4, 53, 6)));
    EXPECT_EQ(commit_on(3, 5002, 5), CtVerdict::kContinue);
    EXPECT_EQ(port_count(3), 2u);
    EXPECT_EQ(zone_count(5), 3u);
    // A port limit of 0 is none.
    zones_->zones[5].port_limit = 0;
    EXPECT_EQ(commit_on(3, 5005, 5), CtVerdict::kContinue);
    EXPECT_EQ(port_count(3), 3u);
}

// A full table refuses new connections with kFull, counted; established ones keep working.
TEST_F(CtShardTest, TableFullRefusesCommit) {
    ASSERT_EQ(shard_->table().capacity(), 1024u);
    for (uint32_t i = 0; i < 1024; ++i) {
        ASSERT_EQ(
            run(udp_frame(kClient4, static_cast<uint16_t>(1000 + i), kServer4, 53), commit(), 0)
                .verdict,
            CtVerdict::kContinue)
            << i;
    }
    const Out o = run(udp_frame(kClient4b, 1000, kServer4, 53), commit(), 1);
    EXPECT_EQ(o.verdict, CtVerdict::kFull);
    EXPECT_EQ(st(o.state()), "+trk+new");
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(c.full_drops, 1u);
    EXPECT_EQ(c.created, 1024u);
    EXPECT_EQ(zone_count(0), 1024u);
    EXPECT_EQ(c.udp, 1024u);
    EXPECT_EQ(st(run(udp_frame(kServer4, 53, kClient4, 1500), track(), 2).state()), "+trk+est+rpl");
}

// ---- Expiry -----------------------------------------------------------------------------------

// expire() removes exactly the connections whose deadline has come (deadline <= now), each by
// its own state's timeout, and every count goes back down.
TEST_F(CtShardTest, ExpireRemovesExactlyTheTimedOutConnections) {
    timeouts_.udp_first = 1;
    timeouts_.udp_stream = 5;
    timeouts_.tcp[static_cast<size_t>(TcpState::kSynSent)] = 2;
    timeouts_.icmp = 3;
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);   // deadline 1000
    run(udp_frame(kClient4, 5001, kServer4, 53), commit(4), 0);  // deadline 5000 once replied
    run(udp_frame(kServer4, 53, kClient4, 5001), track(4), 0);
    run(TcpFlow{}.syn(), commit(), 0);                          // deadline 2000
    run(echo_frame(true, kClient4, kServer4, 9), commit(), 0);  // deadline 3000
    ASSERT_EQ(shard_->table().size(), 4u);
    ASSERT_EQ(zone_count(0), 3u);

    EXPECT_EQ(shard_->expire(999, 1024), 0u);
    EXPECT_EQ(shard_->expire(1000, 1024), 1u);
    EXPECT_EQ(find(tuple(kUdp, kClient4, 5000, kServer4, 53)), nullptr);
    EXPECT_EQ(shard_->counters().udp, 1u);
    EXPECT_EQ(zone_count(0), 2u);
    EXPECT_EQ(shard_->expire(1999, 1024), 0u);
    EXPECT_EQ(shard_->expire(2000, 1024), 1u);
    EXPECT_EQ(tcp_count(shard_->counters(), TcpState::kSynSent), 0u);
    EXPECT_EQ(shard_->expire(3000, 1024), 1u);
    EXPECT_EQ(shard_->counters().icmp, 0u);
    EXPECT_EQ(zone_count(0), 0u);
    EXPECT_EQ(zone_count(4), 1u);
    EXPECT_EQ(shard_->expire(4999, 1024), 0u);
    EXPECT_EQ(shard_->expire(5000, 1024), 1u);
    const CtShardCounters& c = shard_->counters();
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(counted_entries(c), 0u);
    EXPECT_EQ(c.udp, 0u);
    EXPECT_EQ(c.removed, 4u);
    EXPECT_EQ(c.created, 4u);
    EXPECT_EQ(zone_count(4), 0u);
    // The tuples are free again.
    EXPECT_EQ(st(run(udp_frame(kServer4, 53, kClient4, 5001), track(4), 6000).state()), "+trk+new");
}

// Traffic moves the deadline: a connection with packets is not expired at its first deadline.
TEST_F(CtShardTest, TrafficRefreshesDeadline) {
    timeouts_.udp_first = 1;
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    run(udp_frame(kClient4, 5000, kServer4, 53), track(), 900);
    EXPECT_EQ(find(tuple(kUdp, kClient4, 5000, kServer4, 53))->expires_ms, 1900u);
    EXPECT_EQ(shard_->expire(1000, 1024), 0u);
    EXPECT_EQ(shard_->table().size(), 1u);
    // An ICMP error about it does not refresh it.
    run(udp_unreachable(kClient4, kClient4, 5000, kServer4, 53), track(), 1800);  // related
    EXPECT_EQ(shard_->expire(1900, 1024), 1u);
    EXPECT_EQ(shard_->table().size(), 0u);
}

// The budget bounds the slots walked per call; successive calls continue where the last stopped.
TEST_F(CtShardTest, ExpireBudgetIsIncremental) {
    timeouts_.udp_first = 1;
    for (uint16_t i = 0; i < 10; ++i) run(udp_frame(kClient4, 5000 + i, kServer4, 53), commit(), 0);
    // A fresh table fills from entry 0: ten connections in slots 0..9.
    EXPECT_EQ(shard_->expire(1000, 4), 4u);
    EXPECT_EQ(shard_->expire(1000, 4), 4u);
    EXPECT_EQ(shard_->expire(1000, 1020), 2u);
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(zone_count(0), 0u);
}

// remove() names a connection by index. The table ignores an index that is no longer live ("a
// flush and an expiry may both name the same entry", ct_table.cc); the shard's counts must then
// stay right too.
TEST_F(CtShardTest, RemoveOfDeadIndexKeepsCounts) {
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    const uint32_t idx = index_of(tuple(kUdp, kClient4, 5000, kServer4, 53));
    ASSERT_NE(idx, kCtNone);
    shard_->remove(idx);
    shard_->remove(idx);
    EXPECT_EQ(zone_count(0), 0u);
    EXPECT_EQ(shard_->counters().udp, 0u);
    EXPECT_EQ(shard_->counters().removed, 1u);
}

// The ct stage hands process() the packet's tuple and what the burst's bulk lookup found: a miss
// taken before an earlier packet of the burst committed the connection must not be trusted, and
// a stale hit (an entry replaced since) is looked up again.
TEST_F(CtShardTest, KeyedProcessDistrustsMissesAndStaleHits) {
    using namespace test_frames;
    Bytes first = udp_frame(kClient4, 5000, kServer4, 53);
    Bytes second = udp_frame(kClient4, 5000, kServer4, 53);
    Parsed p1, p2;
    ASSERT_TRUE(parse(first, &p1));
    ASSERT_TRUE(parse(second, &p2));
    CtKeyed k{};
    bool icmp_error = false;
    ASSERT_TRUE(ct_packet_tuple(first.data(), static_cast<uint32_t>(first.size()), p1.layout,
                                p1.key, 0, &k.tuple, &icmp_error));
    k.icmp_error = icmp_error;
    k.hint = shard_->table().lookup(k.tuple);  // the bulk lookup, before either packet: a miss
    ASSERT_FALSE(k.hint.found());
    CtParams commit_p;
    commit_p.commit = true;
    FlowKey key1 = p1.key, key2 = p2.key;
    shard_->process(first.data(), static_cast<uint32_t>(first.size()), p1.layout, &key1, commit_p,
                    0, &k);
    EXPECT_EQ(shard_->table().size(), 1u);
    // The second packet of the burst carries the same (stale) miss: it must find the entry.
    shard_->process(second.data(), static_cast<uint32_t>(second.size()), p2.layout, &key2, commit_p,
                    0, &k);
    EXPECT_EQ(shard_->table().size(), 1u);
    const CtRef ref = shard_->table().lookup(k.tuple);
    ASSERT_TRUE(ref.found());
    EXPECT_EQ(shard_->table().entry(ref.index).packets[0], 2u);
    // A hint naming an entry that no longer holds the tuple is looked up again.
    CtKeyed stale = k;
    stale.hint = CtRef{ref.index + 1, 0};
    FlowKey key3 = p2.key;
    shard_->process(second.data(), static_cast<uint32_t>(second.size()), p2.layout, &key3, commit_p,
                    0, &stale);
    EXPECT_EQ(shard_->table().size(), 1u);
    EXPECT_EQ(shard_->table().entry(ref.index).packets[0], 3u);
}

// ---- Checksums: what the endpoint discards must change nothing (nf_conntrack_checksum=1) --------

/// f with the 16-bit word at byte `at` (from the start of the frame) changed: a checksum spoilt.
Bytes spoil(Bytes f, size_t at) {
    set16(f, at, static_cast<uint16_t>(get16(f, at) ^ 0x5a5a));
    return f;
}

constexpr size_t kIp4Csum = 14 + 10;        // IPv4 header checksum
constexpr size_t kTcp4Csum = 14 + 20 + 16;  // TCP checksum after a 20-byte IPv4 header
constexpr size_t kUdp4Csum = 14 + 20 + 6;
constexpr size_t kIcmp4Csum = 14 + 20 + 2;
constexpr size_t kUdp6Csum = 14 + 40 + 6;
constexpr size_t kIcmp6Csum = 14 + 40 + 2;

// A RST whose TCP checksum is wrong never reaches the endpoint as a reset: the connection stays
// ESTABLISHED and the RST is +inv.
TEST_F(CtShardTest, BadChecksumRstIsInvalidAndKeepsConnection) {
    const TcpFlow f;
    handshake(f, 0);
    const Out o =
        run(spoil(f.from_server(kRst | kAck, f.s_isn + 1, f.c_isn + 1), kTcp4Csum), track(), 5);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kEstablished);
    EXPECT_EQ(find(f.orig())->packets[1], 1u);
}

// A SYN from inside with a wrong TCP or IPv4 header checksum opens no pinhole.
TEST_F(CtShardTest, BadChecksumSynOpensNothing) {
    const TcpFlow f;
    EXPECT_EQ(st(run(spoil(f.syn(), kTcp4Csum), commit(), 0).state()), "+trk+inv");
    EXPECT_EQ(st(run(spoil(f.syn(), kIp4Csum), commit(), 0).state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(shard_->counters().invalid, 2u);
    // The same SYN intact opens it.
    EXPECT_EQ(st(run(f.syn(), commit(), 0).state()), "+trk+new");
    EXPECT_EQ(shard_->table().size(), 1u);
}

// UDP, ICMP and ICMPv6 checksums are checked too; a zero UDP checksum means none.
TEST_F(CtShardTest, BadUdpIcmpChecksumsAreInvalid) {
    EXPECT_EQ(
        st(run(spoil(udp_frame(kClient4, 5000, kServer4, 53), kUdp4Csum), commit(), 0).state()),
        "+trk+inv");
    EXPECT_EQ(
        st(run(spoil(udp_frame(kClient6, 5000, kServer6, 53, 6), kUdp6Csum), commit(), 0).state()),
        "+trk+inv");
    EXPECT_EQ(
        st(run(spoil(echo_frame(true, kClient4, kServer4, 7), kIcmp4Csum), commit(), 0).state()),
        "+trk+inv");
    EXPECT_EQ(
        st(run(spoil(echo_frame(true, kClient6, kServer6, 7, 6), kIcmp6Csum), commit(), 0).state()),
        "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    PacketSpec none = l4_spec(4, kUdp, kClient4, kServer4, udp(5001, 53));
    none.udp_no_checksum = true;
    EXPECT_EQ(st(run(build(none), commit(), 0).state()), "+trk+new");
    EXPECT_EQ(shard_->table().size(), 1u);
}

// A UDP length field larger than the datagram (or below 8) is malformed, as Linux has it.
TEST_F(CtShardTest, UdpLengthBeyondDatagramIsInvalid) {
    Bytes f = udp_frame(kClient4, 5000, kServer4, 53);
    set16(f, 14 + 20 + 4, static_cast<uint16_t>(get16(f, 14 + 20 + 4) + 1));
    set16(f, kUdp4Csum, 0);  // no checksum: only the length is wrong
    EXPECT_EQ(st(run(f, commit(), 0).state()), "+trk+inv");
    set16(f, 14 + 20 + 4, 7);
    EXPECT_EQ(st(run(f, commit(), 0).state()), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
}

// An ICMP error is related only when it goes to the source of the packet it quotes (Linux
// compares the outer destination with the quoted source); one sent elsewhere is +inv.
TEST_F(CtShardTest, IcmpErrorToSomeoneElseThanTheQuotedSourceIsInvalid) {
    run(udp_frame(kClient4, 5000, kServer4, 53), commit(), 0);
    EXPECT_EQ(st(run(udp_unreachable(kClient4b, kClient4, 5000, kServer4, 53), track(), 1).state()),
              "+trk+inv");
    EXPECT_EQ(st(run(udp_unreachable(kClient4, kClient4, 5000, kServer4, 53), track(), 1).state()),
              "+trk+rel+rpl");
}

// A client that restarts on the same port sends a new SYN on an ESTABLISHED tuple: it passes
// (+est) and changes nothing, so the server can answer with a challenge ACK; the client's RST
// to that (exactly what the server expects) ends the connection and the next SYN reopens it.
TEST_F(CtShardTest, NewSynOnEstablishedTuplePassesAndChangesNothing) {
    const TcpFlow f;
    handshake(f, 0);
    const uint64_t deadline = find(f.orig())->expires_ms;
    const Out o = run(f.from_client(kSyn, 777777, 0), commit(), 5);
    EXPECT_EQ(st(o.state()), "+trk+est");
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kEstablished);
    EXPECT_EQ(find(f.orig())->expires_ms, deadline);
    // Challenge ACK from the server: an ACK of the old connection.
    EXPECT_EQ(st(run(f.from_server(kAck, f.s_isn + 1, f.c_isn + 1), track(), 6).state()),
              "+trk+est+rpl");
    // The restarted client's RST carries the challenge ACK's acknowledgement number.
    EXPECT_EQ(st(run(f.from_client(kRst, f.c_isn + 1, 0), track(), 7).state()), "+trk+est");
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kClose);
    EXPECT_EQ(st(run(f.from_client(kSyn, 777777, 0), commit(), 8).state()), "+trk+new");
    EXPECT_EQ(find(f.orig())->tcp.state, TcpState::kSynSent);
}

// The port's receive offload flags decide before software does: BAD is invalid even when the
// bytes are right, GOOD and NONE (a virtio guest left the checksum to offload: the field holds
// a partial sum) are taken as they are, and only UNKNOWN is summed in software.
TEST_F(CtShardTest, OffloadFlagsDecideWhatSoftwareChecks) {
    const TcpFlow f;
    auto run_rx = [&](Bytes fr, const CtParams& p, uint8_t rx) {
        Parsed parsed;
        EXPECT_TRUE(parse(fr, &parsed));
        FlowKey key = parsed.key;
        shard_->process(fr.data(), static_cast<uint32_t>(fr.size()), parsed.layout, &key, p, 0,
                        nullptr, nullptr, rx);
        return st(key.ct_state);
    };
    EXPECT_EQ(run_rx(f.syn(), commit(), kCsumL4Bad), "+trk+inv");
    EXPECT_EQ(run_rx(f.syn(), commit(), kCsumIpBad | kCsumL4Good), "+trk+inv");
    EXPECT_EQ(run_rx(spoil(f.syn(), kTcp4Csum), commit(), kCsumUnknown), "+trk+inv");
    EXPECT_EQ(shard_->table().size(), 0u);
    EXPECT_EQ(run_rx(spoil(f.syn(), kTcp4Csum), track(), kCsumIpGood | kCsumL4None), "+trk+new");
    EXPECT_EQ(run_rx(spoil(f.syn(), kTcp4Csum), track(), kCsumL4Good), "+trk+new");
    // The IP header is still summed when only the transport's checksum was vouched for.
    EXPECT_EQ(run_rx(spoil(f.syn(), kIp4Csum), track(), kCsumL4Good), "+trk+inv");
    EXPECT_EQ(run_rx(spoil(f.syn(), kIp4Csum), track(), kCsumIpGood | kCsumL4Good), "+trk+new");
}

// An IPv4 loose or strict source route names a hop in the header, not the endpoint: such a
// packet is +inv and tracks nothing (Linux routers discard it with accept_source_route=0).
TEST_F(CtShardTest, SourceRoutedPacketIsInvalid) {
    for (const uint8_t kind : {uint8_t{131}, uint8_t{137}}) {
        PacketSpec spec = l4_spec(4, kUdp, kClient4, kServer4, udp(5000, 53));
        spec.ipv4_option_words = 2;
        Bytes f = build(spec);
        const uint8_t route[8] = {kind, 7, 4, 192, 0, 2, 254, 1};  // one hop, then a NOP
        std::memcpy(f.data() + 14 + 20, route, sizeof(route));
        set16(f, kIp4Csum, 0);
        set16(f, kIp4Csum, ipv4_header_checksum(f.data() + 14));
        EXPECT_EQ(st(run(f, commit(), 0).state()), "+trk+inv") << int{kind};
    }
    EXPECT_EQ(shard_->table().size(), 0u);
    // Other options (NOPs here) are fine.
    PacketSpec spec = l4_spec(4, kUdp, kClient4, kServer4, udp(5000, 53));
    spec.ipv4_option_words = 2;
    EXPECT_EQ(st(run(build(spec), commit(), 0).state()), "+trk+new");
}

// Netfilter's half-open case: while the connection waits for the SYN-ACK, a reply ACK passes
// untracked (+est+rpl: the reply side is heard from), and the state stays SYN_SENT.
TEST_F(CtShardTest, TcpReplyAckBeforeSynAckPassesUntracked) {
    const TcpFlow f;
    run(f.syn(), commit(), 0);
    const Out o = run(f.from_server(kAck, f.s_isn + 1, f.c_isn + 1), track(), 10);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    const CtEntry* e = find(f.orig());
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tcp.state, TcpState::kSynSent);
    EXPECT_TRUE(e->flags & kCtfSeenReply);
    EXPECT_EQ(e->expires_ms, 1000ull * timeouts_.tcp[1]);  // the deadline set by the SYN
}

// A RST before any reply leaves no connection (netfilter kills one "whose only reply is a
// RST"): the RST passes, and the client's next ACK finds nothing (+inv), its next SYN opens.
TEST_F(CtShardTest, TcpRstBeforeAnyReplyLeavesNoConnection) {
    const TcpFlow f;
    run(f.syn(), commit(), 0);
    Out o = run(f.from_server(kRst | kAck, 0, f.c_isn + 1), track(), 10);
    EXPECT_EQ(st(o.state()), "+trk+est+rpl");
    o = run(f.from_client(kAck, f.c_isn + 1, f.s_isn + 1), track(), 11);
    EXPECT_EQ(st(o.state()), "+trk+inv");
    EXPECT_EQ(find(f.orig()), nullptr);
    o = run(f.syn(), commit(), 12);
    EXPECT_EQ(st(o.state()), "+trk+new");
    ASSERT_NE(find(f.orig()), nullptr);
}

}  // namespace
}  // namespace ferry
