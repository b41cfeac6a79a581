// Unit tests of payload inspection: DpiDatabase (compilation, errors, the database hash),
// DpiWorker (stream slots, in-sequence scanning, depth, actions, export/import) on connections
// tracked by a real ConntrackShard. Packets are frames built byte by byte (ct_frames.h), parsed,
// tracked, then inspected, as the dpi action does.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_database.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/dpi/dpi_version.h"
#include "tests/unit/ct_frames.h"

namespace ferry {
namespace {

using namespace test_frames;  // NOLINT(google-build-using-namespace)

Bytes text(const std::string& s) {
    return Bytes(s.begin(), s.end());
}

DpiPattern pat(uint32_t id, std::string regex, DpiVerdictKind action = DpiVerdictKind::kAlert,
               DpiDirection dir = DpiDirection::kBoth, uint8_t flags = 0, uint32_t mark = 0) {
    DpiPattern p;
    p.id = id;
    p.regex = std::move(regex);
    p.action = action;
    p.direction = dir;
    p.flags = flags;
    p.mark = mark;
    return p;
}

std::shared_ptr<const DpiDatabase> compile_ok(const std::vector<DpiPattern>& ps) {
    DpiCompileError err;
    std::shared_ptr<const DpiDatabase> db = DpiDatabase::compile(ps, &err);
    EXPECT_NE(db, nullptr) << err.message;
    return db;
}

/// One switch worker: a shard and its inspection, with the published generation.
struct Side {
    std::unique_ptr<ConntrackShard> shard;
    std::unique_ptr<DpiWorker> dpi;
    std::unique_ptr<DpiVersion> version;
};

/// A TCP connection client:port -> server:80 whose segments carry consecutive sequence numbers.
struct Conn {
    uint16_t sport;
    uint32_t seq[2] = {1000, 5000};  // next sequence number per direction
};

struct Result2 {
    DpiOutcome outcome = DpiOutcome::kPass;
    CtVerdict verdict = CtVerdict::kContinue;
    FlowKey key{};
};

class DpiTest : public ::testing::Test {
protected:
    Side make_side(const std::vector<DpiPattern>& ps, uint32_t slots = 64,
                   uint32_t depth = 1 << 20) {
        Side s;
        s.shard = ConntrackShard::create(1024, 0, 1, zones_.get(), &timeouts_);
        s.dpi = DpiWorker::create(0, slots, 1024, depth);
        s.shard->set_remove_hook(&DpiWorker::remove_hook, s.dpi.get());
        s.version = make_version(ps, 1, slots);
        return s;
    }

    static std::unique_ptr<DpiVersion> make_version(const std::vector<DpiPattern>& ps, uint64_t gen,
                                                    uint32_t slots = 64) {
        std::string why;
        auto v = DpiVersion::create(compile_ok(ps), gen, 1, slots, &why);
        EXPECT_NE(v, nullptr) << why;
        return v;
    }

    /// Tracks frame f on s (committing new connections) and inspects it.
    Result2 run(Side& s, Bytes f, uint64_t now = 1000) {
        Result2 r;
        Parsed p;
        if (!parse(f, &p)) {
            ADD_FAILURE() << "frame does not parse";
            return r;
        }
        r.key = p.key;
        CtPacketState st;
        CtParams params;
        params.commit = true;
        r.verdict = s.shard->process(f.data(), static_cast<uint32_t>(f.size()), p.layout, &r.key,
                                     params, now, nullptr, &st);
        if (r.verdict != CtVerdict::kContinue) return r;
        r.outcome = s.dpi->inspect(*s.version, *s.shard, st, f.data(),
                                   static_cast<uint32_t>(f.size()), p.layout, &r.key, now);
        return r;
    }

    /// SYN, SYN-ACK, ACK.
    Conn open(Side& s, uint16_t sport = 40000) {
        Conn c{sport};
        run(s, tcp_frame(kClient4, sport, kServer4, 80, c.seq[0] - 1, 0, kSyn));
        run(s, tcp_frame(kServer4, 80, kClient4, sport, c.seq[1] - 1, c.seq[0], kSyn | kAck));
        run(s, tcp_frame(kClient4, sport, kServer4, 80, c.seq[0], c.seq[1], kAck));
        return c;
    }

    /// A data segment of direction dir (0: client to server) at the connection's next sequence
    /// number (advanced), or at `seq` when given (not advanced).
    Bytes segment(Conn& c, unsigned dir, const std::string& data, int64_t seq = -1) {
        const uint32_t at = seq >= 0 ? static_cast<uint32_t>(seq) : c.seq[dir];
        if (seq < 0) c.seq[dir] += static_cast<uint32_t>(data.size());
        return dir == 0 ? tcp_frame(kClient4, c.sport, kServer4, 80, at, c.seq[1], kPsh | kAck,
                                    text(data))
                        : tcp_frame(kServer4, 80, kClient4, c.sport, at, c.seq[0], kPsh | kAck,
                                    text(data));
    }

    Result2 send(Side& s, Conn& c, unsigned dir, const std::string& data) {
        return run(s, segment(c, dir, data));
    }

    static uint64_t matches(const Side& s, size_t rule) {
        return s.version->worker(0).matches[rule];
    }

    CtTimeouts timeouts_;
    std::unique_ptr<CtZoneTable> zones_ = std::make_unique<CtZoneTable>();
};

// ---- Compilation ------------------------------------------------------------------------------

TEST(DpiDatabaseTest, CompileErrorNamesThePatternAndKeepsHyperscansMessage) {
    DpiCompileError err;
    auto db = DpiDatabase::compile({pat(1, "fine"), pat(7, "broken(")}, &err);
    EXPECT_EQ(db, nullptr);
    EXPECT_TRUE(err.has_id);
    EXPECT_EQ(err.id, 7u);
    EXPECT_NE(err.message.find("parenthes"), std::string::npos) << err.message;
}

TEST(DpiDatabaseTest, PatternMatchingEmptyInputIsRefused) {
    DpiCompileError err;
    EXPECT_EQ(DpiDatabase::compile({pat(3, "a*")}, &err), nullptr);
    EXPECT_EQ(err.id, 3u);
    EXPECT_FALSE(err.message.empty());
}

TEST(DpiDatabaseTest, HashIsStableForTheSamePatternsAndDiffersOtherwise) {
    auto a = compile_ok({pat(1, "alpha"), pat(2, "beta", DpiVerdictKind::kDrop)});
    auto b = compile_ok({pat(1, "alpha"), pat(2, "beta", DpiVerdictKind::kDrop)});
    auto c = compile_ok({pat(1, "alpha"), pat(2, "gamma")});
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(a->hash(), b->hash());
    EXPECT_NE(a->hash(), c->hash());
    EXPECT_GT(a->stream_bytes(0), 0u);
}

TEST(DpiDatabaseTest, DirectionsGetTheirOwnDatabases) {
    auto db = compile_ok({pat(1, "up", DpiVerdictKind::kAlert, DpiDirection::kToServer)});
    ASSERT_NE(db, nullptr);
    EXPECT_NE(db->db(0), nullptr);
    EXPECT_EQ(db->db(1), nullptr);
    auto empty = compile_ok({});
    ASSERT_NE(empty, nullptr);
    EXPECT_TRUE(empty->empty());
    EXPECT_EQ(empty->db(0), nullptr);
}

// ---- Matches across segments ------------------------------------------------------------------

TEST_F(DpiTest, PatternSplitAcrossTwoSegmentsIsFound) {
    Side s = make_side({pat(42, "attack-signature")});
    Conn c = open(s);
    send(s, c, 0, "GET /x attack-");
    EXPECT_EQ(matches(s, 0), 0u);
    send(s, c, 0, "signature HTTP/1.1");
    EXPECT_EQ(matches(s, 0), 1u);
    ASSERT_EQ(s.dpi->alert_count(), 1u);
    EXPECT_EQ(s.dpi->alerts()[0].pattern_id, 42u);
    EXPECT_EQ(s.dpi->alerts()[0].dir, 0);
    EXPECT_EQ(s.dpi->alerts()[0].offset, std::string("GET /x attack-signature").size());
    EXPECT_EQ(s.dpi->alerts()[0].tuple.sport, 40000);
}

TEST_F(DpiTest, PatternSplitAcrossThreeSegmentsIsFound) {
    Side s = make_side({pat(1, "one-two-three")});
    Conn c = open(s);
    send(s, c, 0, "xx one-");
    send(s, c, 0, "two");
    EXPECT_EQ(matches(s, 0), 0u);
    send(s, c, 0, "-three yy");
    EXPECT_EQ(matches(s, 0), 1u);
}

TEST_F(DpiTest, PatternSplitIntoOneByteSegmentsIsFound) {
    Side s = make_side({pat(1, "select\\s+password\\s+from")});
    Conn c = open(s);
    const std::string whole = "q=1; select  password from users";
    for (char ch : whole) send(s, c, 0, std::string(1, ch));
    EXPECT_EQ(matches(s, 0), 1u);
    EXPECT_EQ(s.dpi->counters().packets, whole.size());
}

TEST_F(DpiTest, CaselessFlagMatchesAnyCase) {
    Side s = make_side({pat(1, "evil"),
                        pat(2, "EVIL", DpiVerdictKind::kAlert, DpiDirection::kBoth, kDpiCaseless)});
    Conn c = open(s);
    send(s, c, 0, "this is EvIl");
    EXPECT_EQ(matches(s, 0), 0u);
    EXPECT_EQ(matches(s, 1), 1u);
}

TEST_F(DpiTest, SingleMatchReportsOncePerDirection) {
    Side s =
        make_side({pat(1, "ping", DpiVerdictKind::kAlert, DpiDirection::kBoth, kDpiSingleMatch),
                   pat(2, "pong")});
    Conn c = open(s);
    send(s, c, 0, "ping ping pong pong");
    send(s, c, 0, "ping pong");
    EXPECT_EQ(matches(s, 0), 1u);
    EXPECT_EQ(matches(s, 1), 3u);
}

TEST_F(DpiTest, DirectionsAreInspectedSeparately) {
    Side s = make_side({pat(1, "request-only", DpiVerdictKind::kAlert, DpiDirection::kToServer),
                        pat(2, "reply-only", DpiVerdictKind::kAlert, DpiDirection::kToClient)});
    Conn c = open(s);
    send(s, c, 1, "request-only reply-");
    send(s, c, 0, "reply-only request-");
    EXPECT_EQ(matches(s, 0), 0u);
    EXPECT_EQ(matches(s, 1), 0u);
    send(s, c, 0, "only");  // the client's stream: "request-" + "only"
    EXPECT_EQ(matches(s, 0), 1u);
    send(s, c, 1, "only");  // the server's stream: "reply-" + "only"
    EXPECT_EQ(matches(s, 1), 1u);
}

TEST_F(DpiTest, UdpDatagramsFormOneStreamPerDirection) {
    Side s = make_side({pat(1, "split-datagram")});
    run(s, build(l4_spec(4, kUdp, kClient4, kServer4, udp(5353, 53, text("split-")))));
    run(s, build(l4_spec(4, kUdp, kClient4, kServer4, udp(5353, 53, text("datagram")))));
    EXPECT_EQ(matches(s, 0), 1u);
}

// ---- Sequence order, depth, slots --------------------------------------------------------------

TEST_F(DpiTest, RetransmissionsAreNotScannedTwice) {
    Side s = make_side({pat(1, "abc")});
    Conn c = open(s);
    const uint32_t first = c.seq[0];
    run(s, segment(c, 0, "xxabc"));
    run(s, segment(c, 0, "xxabc", first));       // the same segment again
    run(s, segment(c, 0, "xabcab", first + 1));  // overlaps: only "ab" is new
    EXPECT_EQ(matches(s, 0), 1u);
    c.seq[0] += 2;
    run(s, segment(c, 0, "c"));  // "ab" + "c": the overlap's new bytes were scanned
    EXPECT_EQ(matches(s, 0), 2u);
    EXPECT_EQ(s.dpi->counters().bytes, 5u + 2u + 1u);
}

TEST_F(DpiTest, GapEndsTheDirectionsInspection) {
    Side s = make_side({pat(1, "after-gap")});
    Conn c = open(s);
    send(s, c, 0, "hello ");
    c.seq[0] += 100;  // 100 bytes never arrive
    send(s, c, 0, "after-gap");
    EXPECT_EQ(matches(s, 0), 0u);
    EXPECT_EQ(s.dpi->counters().gaps, 1u);
    send(s, c, 1, "after-gap");  // the other direction goes on
    EXPECT_EQ(matches(s, 0), 1u);
}

TEST_F(DpiTest, OutOfOrderFirstSegmentCountsAsAGap) {
    Side s = make_side({pat(1, "/etc/passwd", DpiVerdictKind::kDrop)});
    Conn c = open(s);
    const uint32_t start = c.seq[0];
    // The second half arrives first; the first half, from before it, cannot be scanned in order.
    EXPECT_EQ(run(s, segment(c, 0, "swd HTTP/1.0", start + 12)).outcome, DpiOutcome::kPass);
    EXPECT_EQ(run(s, segment(c, 0, "GET /etc/pas", start)).outcome, DpiOutcome::kPass);
    EXPECT_EQ(s.dpi->counters().gaps, 1u);
    EXPECT_EQ(s.dpi->counters().bytes, 12u);
}

TEST_F(DpiTest, InspectionStopsAtTheDepthAndFreesTheSlot) {
    Side s = make_side({pat(1, "late-pattern", DpiVerdictKind::kAlert, DpiDirection::kToServer)},
                       64, 32);
    Conn c = open(s);
    send(s, c, 0, std::string(20, 'a') + "late-");  // 25 bytes
    EXPECT_EQ(s.dpi->slots_in_use(), 1u);
    send(s, c, 0, "pattern!");  // 7 of these 8 bytes fit: the match ends on the 32nd byte
    EXPECT_EQ(matches(s, 0), 1u);
    EXPECT_EQ(s.dpi->counters().depth_reached, 1u);
    EXPECT_EQ(s.dpi->slots_in_use(), 0u);  // to_client has no patterns: nothing left to scan
    send(s, c, 0, "late-pattern");
    EXPECT_EQ(matches(s, 0), 1u);
    EXPECT_EQ(s.dpi->counters().bytes, 32u);
}

TEST_F(DpiTest, PatternBeyondTheDepthIsNotFound) {
    Side s = make_side({pat(1, "deep")}, 64, 16);
    Conn c = open(s);
    send(s, c, 0, std::string(14, 'x') + "deep");
    EXPECT_EQ(matches(s, 0), 0u);
    EXPECT_EQ(s.dpi->counters().bytes, 16u);
}

TEST_F(DpiTest, RunningOutOfStreamsIsCountedAndLeavesTheConnectionUninspected) {
    Side s = make_side({pat(1, "needle")}, 2);
    Conn a = open(s, 40001), b = open(s, 40002), c = open(s, 40003);
    send(s, a, 0, "x");
    send(s, b, 0, "x");
    send(s, c, 0, "needle");
    EXPECT_EQ(s.dpi->slots_in_use(), 2u);
    EXPECT_EQ(s.dpi->counters().streams_exhausted, 1u);
    EXPECT_EQ(matches(s, 0), 0u);
    send(s, a, 0, "needle");
    EXPECT_EQ(matches(s, 0), 1u);
}

TEST_F(DpiTest, RemovedConnectionGivesItsStreamBack) {
    Side s = make_side({pat(1, "needle")}, 1);
    Conn a = open(s, 40001);
    send(s, a, 0, "nee");
    EXPECT_EQ(s.dpi->slots_in_use(), 1u);
    s.shard->expire(10'000'000'000ull, 1u << 20);  // everything times out
    EXPECT_EQ(s.shard->table().size(), 0u);
    EXPECT_EQ(s.dpi->slots_in_use(), 0u);
    Conn b = open(s, 40002);
    send(s, b, 0, "dle needle");  // a fresh stream: the old "nee" is not continued
    EXPECT_EQ(matches(s, 0), 1u);
}

// ---- Actions ----------------------------------------------------------------------------------

TEST_F(DpiTest, DropEndsTheConnectionInBothDirections) {
    Side s = make_side({pat(9, "forbidden", DpiVerdictKind::kDrop)});
    Conn c = open(s);
    EXPECT_EQ(send(s, c, 0, "all fine").outcome, DpiOutcome::kPass);
    EXPECT_EQ(send(s, c, 0, "forbid").outcome, DpiOutcome::kPass);
    EXPECT_EQ(send(s, c, 0, "den!").outcome, DpiOutcome::kDrop);
    EXPECT_EQ(s.dpi->counters().drops, 1u);
    EXPECT_EQ(s.shard->counters().blocked, 1u);
    EXPECT_EQ(s.dpi->slots_in_use(), 0u);
    EXPECT_EQ(send(s, c, 0, "more").verdict, CtVerdict::kBlocked);
    EXPECT_EQ(send(s, c, 1, "reply").verdict, CtVerdict::kBlocked);
    EXPECT_EQ(s.shard->counters().blocked_drops, 2u);
    // A new SYN on the same tuple is still the blocked connection's.
    EXPECT_EQ(run(s, tcp_frame(kClient4, c.sport, kServer4, 80, 1, 0, kSyn)).verdict,
              CtVerdict::kBlocked);
}

// A burst is tracked before its packets' actions run: packets tracked before an earlier one's
// match must still get the connection's verdict at their dpi action.
TEST_F(DpiTest, VerdictsReachPacketsTrackedEarlierInTheBurst) {
    Side s = make_side({pat(9, "forbidden", DpiVerdictKind::kDrop),
                        pat(5, "tagme", DpiVerdictKind::kMark, DpiDirection::kBoth, 0, 33)});
    Conn c = open(s, 40001), d = open(s, 40002);
    struct Tracked {
        Bytes f;
        Parsed p;
        CtPacketState st;
    };
    auto track = [&](Bytes f) {
        Tracked t{std::move(f), {}, {}};
        EXPECT_TRUE(parse(t.f, &t.p));
        CtParams params;
        EXPECT_EQ(s.shard->process(t.f.data(), static_cast<uint32_t>(t.f.size()), t.p.layout,
                                   &t.p.key, params, 1000, nullptr, &t.st),
                  CtVerdict::kContinue);
        return t;
    };
    auto inspect = [&](Tracked& t) {
        return s.dpi->inspect(*s.version, *s.shard, t.st, t.f.data(),
                              static_cast<uint32_t>(t.f.size()), t.p.layout, &t.p.key, 1000);
    };
    Tracked burst[] = {track(segment(c, 0, "forbidden")), track(segment(c, 0, "later")),
                       track(segment(d, 0, "tagme")), track(segment(d, 1, "reply"))};
    EXPECT_EQ(inspect(burst[0]), DpiOutcome::kDrop);
    EXPECT_EQ(inspect(burst[1]), DpiOutcome::kDrop);
    EXPECT_EQ(inspect(burst[2]), DpiOutcome::kPass);
    EXPECT_EQ(burst[2].p.key.ct_mark, 33u);
    EXPECT_EQ(burst[3].p.key.ct_mark, 0u);  // tracked before the mark was set
    EXPECT_EQ(inspect(burst[3]), DpiOutcome::kPass);
    EXPECT_EQ(burst[3].p.key.ct_mark, 33u);
}

TEST_F(DpiTest, BlockedConnectionIsForgottenAfterItsTimeout) {
    Side s = make_side({pat(9, "forbidden", DpiVerdictKind::kDrop)});
    Conn c = open(s);
    EXPECT_EQ(send(s, c, 0, "forbidden").outcome, DpiOutcome::kDrop);
    const uint64_t ttl = uint64_t{timeouts_.tcp[static_cast<size_t>(TcpState::kTimeWait)]} * 1000;
    s.shard->expire(1000 + ttl - 1, 1u << 20);
    EXPECT_EQ(s.shard->table().size(), 1u);
    s.shard->expire(1000 + ttl + 1, 1u << 20);
    EXPECT_EQ(s.shard->table().size(), 0u);
}

TEST_F(DpiTest, MarkSetsTheConnectionsMark) {
    Side s = make_side(
        {pat(5, "bittorrent", DpiVerdictKind::kMark, DpiDirection::kBoth, kDpiCaseless, 77)});
    Conn c = open(s);
    Result2 r = send(s, c, 0,
                     "\x13"
                     "BitTorrent protocol");
    EXPECT_EQ(r.outcome, DpiOutcome::kPass);
    EXPECT_EQ(r.key.ct_mark, 77u);
    // Later packets of either direction carry the mark from connection tracking.
    EXPECT_EQ(send(s, c, 1, "ok").key.ct_mark, 77u);
    EXPECT_EQ(s.dpi->counters().marks, 1u);
}

TEST_F(DpiTest, UntrackedPacketsAreCountedAndPass) {
    Side s = make_side({pat(1, "x")});
    Bytes f = tcp_frame(kClient4, 1, kServer4, 2, 0, 0, kAck, text("x"));
    Parsed p;
    ASSERT_TRUE(parse(f, &p));
    CtPacketState none;
    EXPECT_EQ(s.dpi->inspect(*s.version, *s.shard, none, f.data(), static_cast<uint32_t>(f.size()),
                             p.layout, &p.key, 0),
              DpiOutcome::kPass);
    EXPECT_EQ(s.dpi->counters().untracked, 1u);
}

// ---- Database swap -----------------------------------------------------------------------------

TEST_F(DpiTest, NewDatabaseRestartsInspectionFromTheNextByte) {
    Side s = make_side({pat(1, "old-pattern")});
    Conn c = open(s);
    send(s, c, 0, "old-");
    // A new generation (same patterns plus one): the half-seen match is not carried over.
    s.version = make_version({pat(1, "old-pattern"), pat(2, "new-pattern")}, 2);
    send(s, c, 0, "pattern new-pattern");
    EXPECT_EQ(matches(s, 0), 0u);
    EXPECT_EQ(matches(s, 1), 1u);
    EXPECT_EQ(s.dpi->counters().restarts, 1u);
    send(s, c, 0, " old-pattern");
    EXPECT_EQ(matches(s, 0), 1u);
}

// ---- Export / import ---------------------------------------------------------------------------

TEST_F(DpiTest, ExportImportContinuesAHalfSeenMatch) {
    const std::vector<DpiPattern> ps = {pat(1, "migrating-signature"),
                                        pat(2, "reply-side", DpiVerdictKind::kAlert)};
    Side a = make_side(ps);
    Conn ca = open(a);
    send(a, ca, 0, "xx migrating-");
    send(a, ca, 1, "reply-");
    EXPECT_EQ(matches(a, 0), 0u);
    const CtRef ref = a.shard->table().lookup(
        CtTuple{{10, 0, 0, 1}, {198, 51, 100, 7}, ca.sport, 80, 0, kTcp, 4});
    ASSERT_TRUE(ref.found());
    DpiStreamState state;
    ASSERT_TRUE(a.dpi->export_state(*a.version, ref.index, &state));
    EXPECT_EQ(state.db_hash, a.version->database().hash());
    EXPECT_FALSE(state.streams[0].empty());
    EXPECT_EQ(state.seen[0], std::string("xx migrating-").size());

    // The target compiled the same patterns itself and tracks the same connection (without
    // window checks: it has not seen the bytes before the move, migration brings those too).
    zones_->zones[0].liberal = 1;
    Side b = make_side(ps);
    Conn cb = open(b);
    const CtRef ref_b = b.shard->table().lookup(
        CtTuple{{10, 0, 0, 1}, {198, 51, 100, 7}, cb.sport, 80, 0, kTcp, 4});
    ASSERT_TRUE(ref_b.found());
    EXPECT_EQ(b.dpi->import_state(*b.version, ref_b.index, state), DpiImport::kExpanded);
    cb.seq[0] = ca.seq[0];
    cb.seq[1] = ca.seq[1];
    send(b, cb, 0, "signature");
    send(b, cb, 1, "side");
    EXPECT_EQ(matches(b, 0), 1u);
    EXPECT_EQ(matches(b, 1), 1u);
    EXPECT_EQ(b.dpi->alerts()[0].offset, std::string("xx migrating-signature").size());

    // Into another database: inspection restarts, the half-seen match is lost, not corrupted.
    Side d = make_side({pat(1, "migrating-signature"), pat(3, "other")});
    Conn cd = open(d);
    const CtRef ref_d = d.shard->table().lookup(
        CtTuple{{10, 0, 0, 1}, {198, 51, 100, 7}, cd.sport, 80, 0, kTcp, 4});
    EXPECT_EQ(d.dpi->import_state(*d.version, ref_d.index, state), DpiImport::kRestarted);
    cd.seq[0] = ca.seq[0];
    send(d, cd, 0, "signature migrating-signature");
    EXPECT_EQ(matches(d, 0), 1u);
    EXPECT_EQ(d.dpi->counters().restarts, 1u);
}

TEST_F(DpiTest, ImportOfAGarbledStreamRestartsInsteadOfCrashing) {
    const std::vector<DpiPattern> ps = {pat(1, "abcdef")};
    Side a = make_side(ps);
    Conn c = open(a);
    send(a, c, 0, "abc");
    const CtRef ref =
        a.shard->table().lookup(CtTuple{{10, 0, 0, 1}, {198, 51, 100, 7}, c.sport, 80, 0, kTcp, 4});
    DpiStreamState state;
    ASSERT_TRUE(a.dpi->export_state(*a.version, ref.index, &state));
    Side b = make_side(ps);
    Conn cb = open(b);
    const CtRef ref_b = b.shard->table().lookup(
        CtTuple{{10, 0, 0, 1}, {198, 51, 100, 7}, cb.sport, 80, 0, kTcp, 4});
    for (size_t cut : {size_t{0}, size_t{1}, state.streams[0].size() / 2}) {
        DpiStreamState bad = state;
        bad.streams[0].resize(cut);
        bad.dir_state[0] = 200;     // out of range: taken as done
        bad.seen[0] = 0xffffffffu;  // beyond the depth: clamped
        const DpiImport r = b.dpi->import_state(*b.version, ref_b.index, bad);
        EXPECT_TRUE(r == DpiImport::kFailed || r == DpiImport::kExpanded) << cut;
    }
    EXPECT_LE(b.dpi->slots_in_use(), 1u);
}

}  // namespace
}  // namespace ferry
