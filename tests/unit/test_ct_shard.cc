// Unit tests of ConntrackShard, the per-worker connection tracker. Every test builds its packets
// as bytes (checksums computed from scratch), parses them with parse_frame, runs them through
// ConntrackShard::process with explicit now_ms values, and checks what the shard says about them
// (the verdict, key->ct_state/ct_zone/ct_mark), what it stores (entries through table()) and
// what it counts (counters(), the zone table). NAT tests also recompute every checksum of the
// rewritten frame in full. Helpers for building frames and checking checksums come from
// ct_frames.h.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/packet_parse.h"
#include "tests/unit/ct_frames.h"

namespace ferry {
namespace {

using namespace test_frames;

/// Every checksum of f recomputed in full (ct_frames.h). No frame here is built without a UDP
/// checksum, so a zero one is wrong: a computed 0 must be sent as 0xffff.
::testing::AssertionResult checksums_ok(const Bytes& f) {
    return checksums_match(f, ZeroUdpChecksum::kWrong);
}

/// ct_state as OVS writes it ("+trk+est+rpl"), for readable failures.
std::string st(uint8_t s) {
    std::string r;
    if (s & kCtTracked) r += "+trk";
    if (s & kCtNew) r += "+new";
    if (s & kCtEstablished) r += "+est";
    if (s & kCtRelated) r += "+rel";
    if (s & kCtReply) r += "+rpl";
    if (s & kCtInvalid) r += "+inv";
    return r;
}

CtTuple tuple(uint8_t proto, const Addr& src, uint16_t sport, const Addr& dst, uint16_t dport,
              uint16_t zone = 0, uint8_t version = 4) {
    CtTuple t{};
    std::memcpy(t.src, src.data(), 16);
    std::memcpy(t.dst, dst.data(), 16);
    t.sport = sport;
    t.dport = dport;
    t.zone = zone;
    t.proto = proto;
    t.ip_version = version;
    return t;
}

NatSpec nat_spec(NatSpec::Kind kind, const Addr& lo, const Addr& hi, uint16_t port_min,
                 uint16_t port_max, uint8_t version = 4) {
    NatSpec s{};
    s.kind = kind;
    s.ip_version = version;
    s.port_min = port_min;
    s.port_max = port_max;
    std::memcpy(s.addr_min, lo.data(), 16);
    std::memcpy(s.addr_max, hi.data(), 16);
    return s;
}

CtParams track(uint16_t zone = 0) {
    CtParams p;
    p.zone = zone;
    return p;
}

CtParams commit(uint16_t zone = 0) {
    CtParams p = track(zone);
    p.commit = true;
    return p;
}

/// ct(commit, nat(spec)): a new connection gets the binding, an existing one is translated.
CtParams commit_nat(const NatSpec* spec, uint16_t zone = 0) {
    CtParams p = commit(zone);
    p.nat = true;
    p.spec = spec;
    return p;
}

/// ct(nat): packets of connections with a binding are translated.
CtParams nat(uint16_t zone = 0) {
    CtParams p = track(zone);
    p.nat = true;
    return p;
}

/// The live connections a shard counts by kind, redirects included: must equal its table size.
uint64_t counted_entries(const CtShardCounters& c) {
    uint64_t n = c.udp + c.icmp + c.other + c.redirects;
    for (uint64_t v : c.by_tcp_state) n += v;
    return n;
}

uint64_t tcp_count(const CtShardCounters& c, TcpState s) {
    return c.by_tcp_state[static_cast<size_t>(s)];
}

/// A TCP connection's endpoints and initial sequence numbers, and the frames of its handshake.
struct TcpFlow {
    Addr client = kClient4;
    uint16_t cport = 40000;
    Addr server = kServer4;
    uint16_t sport = 80;
    uint8_t version = 4;
    uint32_t c_isn = 1000;
    uint32_t s_isn = 500000;

    Bytes from_client(uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& data = {}) const {
        return tcp_frame(client, cport, server, sport, seq, ack, flags, data, version);
    }
    Bytes from_server(uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& data = {}) const {
        return tcp_frame(server, sport, client, cport, seq, ack, flags, data, version);
    }
    Bytes syn() const { return from_client(kSyn, c_isn, 0); }
    Bytes syn_ack() const { return from_server(kSyn | kAck, s_isn, c_isn + 1); }
    Bytes ack() const { return from_client(kAck, c_isn + 1, s_isn + 1); }
    CtTuple orig(uint16_t zone = 0) const {
        return tuple(kTcp, client, cport, server, sport, zone, version);
    }
};

// ---- Fixture ----------------------------------------------------------------------------------

class CtShardTest : public ::testing::Test {
protected:
    void SetUp() override {
        shard_ = make_shard(1024, 0, 1);
        ASSERT_NE(shard_, nullptr);
    }

    std::unique_ptr<ConntrackShard> make_shard(uint32_t capacity, uint16_t worker,
                                               uint16_t n_workers) {
        return ConntrackShard::create(capacity, worker, n_workers, zones_.get(), &timeouts_);
    }

    struct Out {
        CtVerdict verdict = CtVerdict::kContinue;
        FlowKey key{};
        uint8_t state() const { return key.ct_state; }
    };

    /// Parses f and tracks it on shard s (default: the fixture's), letting NAT rewrite f.
    Out run(Bytes& f, const CtParams& p, uint64_t now_ms, ConntrackShard* s = nullptr) {
        Out o;
        Parsed parsed;
        if (!parse(f, &parsed)) {
            ADD_FAILURE() << "test frame does not parse";
            return o;
        }
        o.key = parsed.key;
        o.verdict = (s ? s : shard_.get())
                        ->process(f.data(), static_cast<uint32_t>(f.size()), parsed.layout, &o.key,
                                  p, now_ms);
        return o;
    }
    Out run(Bytes&& f, const CtParams& p, uint64_t now_ms, ConntrackShard* s = nullptr) {
        return run(f, p, now_ms, s);
    }

    /// The entry holding t on shard s, and which of its tuples matched; nullptr when none.
    const CtEntry* find(const CtTuple& t, unsigned* dir = nullptr,
                        const ConntrackShard* s = nullptr) const {
        const CtTable& table = (s ? s : shard_.get())->table();
        const CtRef r = table.lookup(t);
        if (!r.found()) return nullptr;
        if (dir) *dir = r.dir;
        return &table.entry(r.index);
    }
    uint32_t index_of(const CtTuple& t, const ConntrackShard* s = nullptr) const {
        return (s ? s : shard_.get())->table().lookup(t).index;
    }

    /// Runs the three-way handshake of f at now_ms; returns the entry.
    const CtEntry* handshake(const TcpFlow& f, uint64_t now_ms = 0, uint16_t zone = 0) {
        EXPECT_EQ(run(f.syn(), commit(zone), now_ms).verdict, CtVerdict::kContinue);
        run(f.syn_ack(), track(zone), now_ms);
        run(f.ack(), track(zone), now_ms);
        const CtEntry* e = find(f.orig(zone));
        EXPECT_NE(e, nullptr);
        if (e != nullptr) {
            EXPECT_EQ(e->tcp.state, TcpState::kEstablished);
        }
        return e;
    }

    uint32_t zone_count(uint16_t z) const { return zones_->zones[z].count.load(); }

    CtTimeouts timeouts_;  // shards keep a pointer: tests may change values at any time
    std::unique_ptr<CtZoneTable> zones_ = std::make_unique<CtZoneTable>();
    std::unique_ptr<ConntrackShard> shard_;
};

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
    EXPECT_EQ(c.nat_port_exhausted, 1u);
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
    EXPECT_EQ(shard_->counters().nat_port_exhausted, 1u);
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
    EXPECT_EQ(shard_->counters().nat_port_exhausted, 0u);
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
        EXPECT_EQ(w(i)->counters().nat_port_exhausted, 0u);
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

namespace ferry {
namespace {

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

}  // namespace
}  // namespace ferry
