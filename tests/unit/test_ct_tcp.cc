// Unit tests of TCP connection tracking (ct_tcp): header parsing, the state machine and the
// sequence/window bounds. Header bytes are built by hand for the parser; the tracking tests drive
// one connection through a small script in which each side's next sequence number advances with
// what it sends and every ACK covers all the other side sent, then send the odd segment by hand
// where a test needs one. Each test says what it sends and which state and verdict it expects.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <ostream>
#include <vector>

#include "dataplane/conntrack/ct_tcp.h"

namespace ferry {

// Readable failures: states by name, verdicts by name.
void PrintTo(TcpState s, std::ostream* os) {
    *os << tcp_state_name(s);
}
void PrintTo(TcpVerdict v, std::ostream* os) {
    switch (v) {
        case TcpVerdict::kAccept:
            *os << "kAccept";
            break;
        case TcpVerdict::kInvalid:
            *os << "kInvalid";
            break;
        case TcpVerdict::kReopen:
            *os << "kReopen";
            break;
        case TcpVerdict::kIgnore:
            *os << "kIgnore";
            break;
    }
}

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint8_t kFin = 0x01;
constexpr uint8_t kSyn = 0x02;
constexpr uint8_t kRst = 0x04;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;

constexpr unsigned kOrig = 0;
constexpr unsigned kReply = 1;

constexpr uint32_t kClientIsn = 1000;
constexpr uint32_t kServerIsn = 500000;
constexpr uint8_t kNoWscale = 0xff;

// ---- Header bytes for the parser ----------------------------------------------------------------

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

void put32(Bytes& b, uint32_t v) {
    put16(b, static_cast<uint16_t>(v >> 16));
    put16(b, static_cast<uint16_t>(v));
}

/// A TCP header with `options` (a multiple of 4 bytes) and `payload` data bytes. The data offset
/// follows the options unless `data_offset` overrides it.
Bytes tcp_header(uint32_t seq, uint32_t ack, uint8_t flags, uint16_t window, const Bytes& options,
                 size_t payload = 0, int data_offset = -1) {
    Bytes b;
    put16(b, 40000);  // source port
    put16(b, 80);     // destination port
    put32(b, seq);
    put32(b, ack);
    const size_t words =
        data_offset >= 0 ? static_cast<size_t>(data_offset) : (20 + options.size()) / 4;
    b.push_back(static_cast<uint8_t>(words << 4));
    b.push_back(flags);
    put16(b, window);
    put16(b, 0);  // checksum: not verified here
    put16(b, 0);  // urgent pointer
    b.insert(b.end(), options.begin(), options.end());
    b.insert(b.end(), payload, 0xab);
    return b;
}

std::optional<TcpSegment> parse(const Bytes& b) {
    return tcp_segment_parse(b.data(), static_cast<uint32_t>(b.size()));
}

// ---- Segments for the tracker -------------------------------------------------------------------

TcpSegment segment(uint8_t flags, uint32_t seq, uint32_t ack, uint32_t len = 0,
                   uint16_t window = 65535, uint8_t wscale = kNoWscale) {
    TcpSegment s{};
    s.seq = seq;
    s.ack = ack;
    s.payload_len = len;
    s.window = window;
    s.flags = flags;
    s.wscale = wscale;
    s.sack_perm = false;
    return s;
}

/// One connection between a client (original direction) and a server (reply), driven segment by
/// segment. next[d] is what side d sends next; segments with ACK acknowledge everything the other
/// side sent. An accepted segment advances its sender by its length plus one for SYN and FIN.
class TcpTrack : public ::testing::Test {
protected:
    TcpSegment make(unsigned dir, uint8_t flags, uint32_t len = 0) const {
        return segment(flags, next_[dir], (flags & kAck) ? next_[dir ^ 1] : 0, len, window_[dir],
                       wscale_[dir]);
    }

    TcpVerdict send_segment(unsigned dir, const TcpSegment& s) {
        const TcpVerdict v = tcp_track(conn_, dir, s, liberal_);
        if (v == TcpVerdict::kAccept) {
            const uint32_t end =
                s.seq + s.payload_len + ((s.flags & kSyn) ? 1 : 0) + ((s.flags & kFin) ? 1 : 0);
            if (static_cast<int32_t>(end - next_[dir]) > 0) next_[dir] = end;
        }
        return v;
    }

    TcpVerdict send(unsigned dir, uint8_t flags, uint32_t len = 0) {
        return send_segment(dir, make(dir, flags, len));
    }

    /// The client's SYN through tcp_may_open and tcp_start, as the shard does.
    void start() {
        const TcpSegment syn = make(kOrig, kSyn);
        ASSERT_TRUE(tcp_may_open(syn, false));
        tcp_start(conn_, syn);
        next_[kOrig] += 1;
        ASSERT_EQ(conn_.state, TcpState::kSynSent);
    }

    /// SYN, SYN+ACK, ACK: ends in ESTABLISHED.
    void handshake() {
        start();
        ASSERT_EQ(send(kReply, kSyn | kAck), TcpVerdict::kAccept);
        ASSERT_EQ(conn_.state, TcpState::kSynRecv);
        ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
        ASSERT_EQ(conn_.state, TcpState::kEstablished);
    }

    /// Expects `s` from `dir` refused with nothing in the connection changed.
    void expect_invalid_untouched(unsigned dir, const TcpSegment& s) {
        const TcpConn before = conn_;
        EXPECT_EQ(tcp_track(conn_, dir, s, liberal_), TcpVerdict::kInvalid);
        EXPECT_EQ(std::memcmp(&before, &conn_, sizeof(TcpConn)), 0)
            << "refused segment left a trace";
    }

    /// Expects the server's first segment `s` refused with the client's side and the state as
    /// they were: only the server's side is set up from it (netfilter keeps that).
    void expect_invalid_keeps_client(const TcpSegment& s) {
        const TcpConn before = conn_;
        EXPECT_EQ(tcp_track(conn_, kReply, s, liberal_), TcpVerdict::kInvalid);
        EXPECT_EQ(std::memcmp(&before.peer[kOrig], &conn_.peer[kOrig], sizeof(TcpPeer)), 0);
        EXPECT_EQ(conn_.state, before.state);
    }

    /// Expects `s` from `dir` to pass untracked: kIgnore, nothing in the connection changed.
    void expect_ignored_untouched(unsigned dir, const TcpSegment& s) {
        const TcpConn before = conn_;
        EXPECT_EQ(tcp_track(conn_, dir, s, liberal_), TcpVerdict::kIgnore);
        EXPECT_EQ(std::memcmp(&before, &conn_, sizeof(TcpConn)), 0)
            << "ignored segment left a trace";
    }

    TcpState state() const { return conn_.state; }

    TcpConn conn_{};
    uint32_t next_[2] = {kClientIsn, kServerIsn};
    uint16_t window_[2] = {65535, 65535};
    uint8_t wscale_[2] = {kNoWscale, kNoWscale};
    bool liberal_ = false;
};

// ---- Parsing ------------------------------------------------------------------------------------

TEST(TcpSegmentParse, ReadsFixedFieldsAndPayloadLength) {
    const auto s = parse(tcp_header(0x01020304, 0xa0b0c0d0, kAck | kPsh, 0x1234, {}, 100));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->seq, 0x01020304u);
    EXPECT_EQ(s->ack, 0xa0b0c0d0u);
    EXPECT_EQ(s->flags, kAck | kPsh);
    EXPECT_EQ(s->window, 0x1234);
    EXPECT_EQ(s->payload_len, 100u);
    EXPECT_EQ(s->wscale, kNoWscale);
    EXPECT_FALSE(s->sack_perm);
}

TEST(TcpSegmentParse, ReadsWindowScaleAndSackPermittedAmongMssAndNops) {
    // MSS 1460, NOP, window scale 7, SACK-permitted, NOP, EOL.
    const Bytes opts = {2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 0};
    const auto s = parse(tcp_header(1, 0, kSyn, 65535, opts));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->wscale, 7);
    EXPECT_TRUE(s->sack_perm);
    EXPECT_EQ(s->payload_len, 0u);
}

TEST(TcpSegmentParse, ClampsWindowScaleTo14) {
    const Bytes opts = {3, 3, 20, 0};
    const auto s = parse(tcp_header(1, 0, kSyn, 65535, opts));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->wscale, 14);
}

TEST(TcpSegmentParse, IgnoresWindowScaleWithWrongLength) {
    const Bytes opts = {3, 4, 7, 0};  // kind 3 must be 3 bytes long: not a window scale
    const auto s = parse(tcp_header(1, 0, kSyn, 65535, opts));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->wscale, kNoWscale);
}

TEST(TcpSegmentParse, StopsAtEndOfOptionList) {
    // After EOL the bytes are padding, even if they would be a malformed option.
    const Bytes opts = {1, 0, 3, 0};
    const auto s = parse(tcp_header(1, 0, kSyn, 65535, opts));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->wscale, kNoWscale);
}

TEST(TcpSegmentParse, RejectsOptionLengthBelowTwo) {
    EXPECT_FALSE(parse(tcp_header(1, 0, kSyn, 65535, {2, 0, 0, 0})).has_value());
    EXPECT_FALSE(parse(tcp_header(1, 0, kSyn, 65535, {8, 1, 0, 0})).has_value());
}

TEST(TcpSegmentParse, RejectsOptionRunningPastHeaderEnd) {
    // MSS claims 4 bytes but starts 2 bytes before the header ends; the payload after it must not
    // be read as the option's rest.
    EXPECT_FALSE(parse(tcp_header(1, 0, kSyn, 65535, {1, 1, 2, 4}, 10)).has_value());
    // Timestamps (10 bytes) in a 4-byte options area.
    EXPECT_FALSE(parse(tcp_header(1, 0, kSyn, 65535, {8, 10, 0, 0})).has_value());
}

TEST(TcpSegmentParse, RejectsOptionKindWithoutLengthByte) {
    EXPECT_FALSE(parse(tcp_header(1, 0, kSyn, 65535, {1, 1, 1, 3})).has_value());
}

TEST(TcpSegmentParse, RejectsHeaderShorterThan20Bytes) {
    Bytes b = tcp_header(1, 0, kSyn, 65535, {});
    EXPECT_FALSE(tcp_segment_parse(b.data(), 19).has_value());
    EXPECT_FALSE(tcp_segment_parse(b.data(), 0).has_value());
    EXPECT_FALSE(tcp_segment_parse(nullptr, 20).has_value());
}

TEST(TcpSegmentParse, RejectsDataOffsetBelowFive) {
    EXPECT_FALSE(parse(tcp_header(1, 0, kAck, 65535, {}, 20, 4)).has_value());
}

TEST(TcpSegmentParse, RejectsDataOffsetBeyondAvail) {
    // Data offset 8 (32 bytes) with only 24 bytes there.
    EXPECT_FALSE(parse(tcp_header(1, 0, kAck, 65535, {1, 1, 1, 1}, 0, 8)).has_value());
}

TEST(TcpStateName, NamesEveryStateAsCtListShowsIt) {
    const char* names[] = {"NONE",     "SYN_SENT",   "SYN_SENT2", "SYN_RECV",  "ESTABLISHED",
                           "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",  "TIME_WAIT", "CLOSE"};
    static_assert(std::size(names) == static_cast<size_t>(TcpState::kCount));
    for (size_t i = 0; i < std::size(names); ++i) {
        EXPECT_EQ(tcp_state_name(static_cast<TcpState>(i)), names[i]);
    }
}

// ---- Opening ------------------------------------------------------------------------------------

TEST(TcpMayOpen, OnlyBareSynOpensUnlessLiberal) {
    EXPECT_TRUE(tcp_may_open(segment(kSyn, 1, 0), false));
    EXPECT_FALSE(tcp_may_open(segment(kAck, 1, 1), false));
    EXPECT_FALSE(tcp_may_open(segment(kSyn | kAck, 1, 1), false));
    EXPECT_FALSE(tcp_may_open(segment(kFin | kAck, 1, 1), false));
    EXPECT_TRUE(tcp_may_open(segment(kAck, 1, 1), true));
    EXPECT_FALSE(tcp_may_open(segment(kRst, 1, 0), true));
    EXPECT_FALSE(tcp_may_open(segment(kRst | kAck, 1, 1), true));
    // Flag combinations no stack sends never open, not even for a mid-stream pick-up.
    EXPECT_FALSE(tcp_may_open(segment(kSyn | kFin, 1, 0), true));
    EXPECT_FALSE(tcp_may_open(segment(0, 1, 0), true));
}

TEST_F(TcpTrack, AckBeforeAnySynIsNotAnOpeningUnlessLiberal) {
    expect_invalid_untouched(kOrig, make(kOrig, kAck, 100));
    EXPECT_EQ(state(), TcpState::kNone);
    expect_invalid_untouched(kReply, make(kReply, kSyn));
    liberal_ = true;
    EXPECT_EQ(send(kOrig, kAck, 100), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

TEST_F(TcpTrack, LiberalPickUpTracksBothDirectionsFromTheFirstSegment) {
    liberal_ = true;
    tcp_start(conn_, make(kOrig, kAck, 100));
    next_[kOrig] += 100;
    EXPECT_EQ(state(), TcpState::kEstablished);
    EXPECT_EQ(conn_.peer[kOrig].end, next_[kOrig]);
    EXPECT_EQ(send(kReply, kAck, 200), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
}

TEST_F(TcpTrack, ParsedSynStartsTrackingWithItsOptions) {
    const Bytes opts = {2, 4, 0x05, 0xb4, 4, 2, 3, 3, 7, 1, 1, 0};
    const auto syn = parse(tcp_header(kClientIsn, 0, kSyn, 64240, opts));
    ASSERT_TRUE(syn.has_value());
    ASSERT_TRUE(tcp_may_open(*syn, false));
    tcp_start(conn_, *syn);
    EXPECT_EQ(state(), TcpState::kSynSent);
    EXPECT_EQ(conn_.peer[kOrig].end, kClientIsn + 1);
    EXPECT_EQ(conn_.peer[kOrig].scale, 7);
    EXPECT_EQ(conn_.peer[kOrig].flags & (kTcpPeerWindowScale | kTcpPeerSackPerm),
              kTcpPeerWindowScale | kTcpPeerSackPerm);
}

TEST_F(TcpTrack, RetransmittedHandshakeSegmentsKeepTheirState) {
    start();
    EXPECT_EQ(send_segment(kOrig, segment(kSyn, kClientIsn, 0)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kSynSent);
    ASSERT_EQ(send(kReply, kSyn | kAck), TcpVerdict::kAccept);
    const TcpSegment syn_ack = segment(kSyn | kAck, kServerIsn, kClientIsn + 1);
    EXPECT_EQ(send_segment(kReply, syn_ack), TcpVerdict::kIgnore);  // netfilter's sIG
    EXPECT_EQ(state(), TcpState::kSynRecv);
    ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    // The final ACK was lost on the way to the server: its SYN+ACK comes again, and passes
    // without being tracked, as netfilter ignores it (sIG).
    const TcpConn before = conn_;
    EXPECT_EQ(send_segment(kReply, syn_ack), TcpVerdict::kIgnore);
    EXPECT_EQ(std::memcmp(&before, &conn_, sizeof(TcpConn)), 0);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

// Netfilter ignores (lets through, tracks nothing) a reply ACK while the connection waits for
// the SYN+ACK (a half-open connection whose start it missed), and a reply SYN+ACK after the
// handshake, whatever it acknowledges: the endpoint answers either with a RST or a SYN+ACK.
TEST_F(TcpTrack, ReplyAckBeforeSynAckAndLateSynAckAreIgnored) {
    start();
    const TcpConn before = conn_;
    EXPECT_EQ(send_segment(kReply, segment(kAck, kServerIsn, kClientIsn + 1)), TcpVerdict::kIgnore);
    EXPECT_EQ(std::memcmp(&before.peer, &conn_.peer, sizeof(conn_.peer)), 0);
    EXPECT_EQ(state(), TcpState::kSynSent);
    ASSERT_EQ(send(kReply, kSyn | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(state(), TcpState::kFinWait);
    expect_ignored_untouched(kReply, segment(kSyn | kAck, kServerIsn + 9, kClientIsn + 77));
}

TEST_F(TcpTrack, AckOrSynOutOfTurnIsInvalid) {
    start();
    expect_invalid_untouched(kOrig, make(kOrig, kAck));         // no SYN+ACK seen yet
    expect_invalid_untouched(kOrig, make(kOrig, kFin | kAck));  // nothing to close
    EXPECT_EQ(state(), TcpState::kSynSent);
    ASSERT_EQ(send(kReply, kSyn | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    // A SYN mid-connection (a client restarting on the same port) passes and changes nothing
    // that tracks the connection.
    const TcpConn before = conn_;
    EXPECT_EQ(tcp_track(conn_, kOrig, segment(kSyn, kClientIsn + 7000, 0), false),
              TcpVerdict::kIgnore);
    EXPECT_EQ(std::memcmp(&before.peer, &conn_.peer, sizeof(conn_.peer)), 0);
    EXPECT_EQ(conn_.maxack_set, before.maxack_set);
    EXPECT_EQ(state(), TcpState::kEstablished);
    expect_invalid_untouched(kReply, segment(kSyn, kServerIsn + 7000, 0));
}

// ---- Handshake, data and orderly close ----------------------------------------------------------

TEST_F(TcpTrack, HandshakeDataAndCloseByClientEndInTimeWait) {
    handshake();
    EXPECT_EQ(send(kOrig, kAck | kPsh, 500), TcpVerdict::kAccept);
    EXPECT_EQ(send(kReply, kAck | kPsh, 3000), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);

    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    EXPECT_NE(conn_.peer[kOrig].flags & kTcpPeerCloseInit, 0);
    EXPECT_EQ(conn_.peer[kReply].flags & kTcpPeerCloseInit, 0);
    EXPECT_EQ(send(kReply, kAck), TcpVerdict::kAccept);  // acknowledges the FIN
    EXPECT_EQ(state(), TcpState::kCloseWait);
    EXPECT_EQ(send(kReply, kAck | kPsh, 700), TcpVerdict::kAccept);  // half-close: server goes on
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kCloseWait);
    EXPECT_EQ(send(kReply, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kLastAck);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
}

TEST_F(TcpTrack, CloseByServerEndsInTimeWait) {
    handshake();
    EXPECT_EQ(send(kOrig, kAck | kPsh, 100), TcpVerdict::kAccept);
    EXPECT_EQ(send(kReply, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    EXPECT_NE(conn_.peer[kReply].flags & kTcpPeerCloseInit, 0);
    EXPECT_EQ(conn_.peer[kOrig].flags & kTcpPeerCloseInit, 0);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kCloseWait);
    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kLastAck);
    EXPECT_EQ(send(kReply, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
}

TEST_F(TcpTrack, FinAnsweredByFinAckSkipsCloseWait) {
    handshake();
    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send(kReply, kFin | kAck), TcpVerdict::kAccept);  // acks the FIN and closes too
    EXPECT_EQ(state(), TcpState::kLastAck);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
}

TEST_F(TcpTrack, AckNotCoveringTheFinStaysInFinWait) {
    handshake();
    const uint32_t fin_seq = next_[kOrig];
    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    // The server's data crossed the FIN: it acknowledges everything but the FIN.
    EXPECT_EQ(send_segment(kReply, segment(kAck | kPsh, next_[kReply], fin_seq, 200)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    // The client's own ACK of that data does not confirm its FIN either.
    EXPECT_EQ(send_segment(kOrig, segment(kAck, fin_seq + 1, next_[kReply])), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    EXPECT_EQ(send(kReply, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kCloseWait);
}

TEST_F(TcpTrack, RetransmittedFinIsNotTheSecondFin) {
    handshake();
    const TcpSegment fin = make(kOrig, kFin | kAck);
    EXPECT_EQ(send_segment(kOrig, fin), TcpVerdict::kAccept);
    EXPECT_EQ(send_segment(kOrig, fin), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    EXPECT_EQ(conn_.retrans, 1u);
    EXPECT_EQ(send(kReply, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send_segment(kOrig, fin), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kCloseWait);
}

TEST_F(TcpTrack, SimultaneousOpenGoesThroughSynSent2) {
    start();
    // The server's own SYN crosses ours.
    EXPECT_EQ(send_segment(kReply, segment(kSyn, kServerIsn, 0)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kSynSent2);
    // Each side answers the other's SYN by repeating its own with an ACK (same ISN).
    EXPECT_EQ(send_segment(kOrig, segment(kSyn | kAck, kClientIsn, kServerIsn + 1)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kSynRecv);
    // The server's SYN+ACK in SYN_RECV passes untracked, as netfilter ignores it (sIG).
    EXPECT_EQ(send_segment(kReply, segment(kSyn | kAck, kServerIsn, kClientIsn + 1)),
              TcpVerdict::kIgnore);
    EXPECT_EQ(state(), TcpState::kSynRecv);
    EXPECT_EQ(send(kOrig, kAck | kPsh, 10), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

TEST_F(TcpTrack, SimultaneousOpenAnsweredFromReplySideFirst) {
    start();
    EXPECT_EQ(send_segment(kReply, segment(kSyn, kServerIsn, 0)), TcpVerdict::kAccept);
    EXPECT_EQ(send_segment(kReply, segment(kSyn | kAck, kServerIsn, kClientIsn + 1)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kSynRecv);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

TEST_F(TcpTrack, SimultaneousOpenSynAckWithUnseenSequenceIsNotTracked) {
    start();
    EXPECT_EQ(send_segment(kReply, segment(kSyn, kServerIsn, 0)), TcpVerdict::kAccept);
    // A SYN+ACK starting past the ISN's successor overshoots what the server allowed; by less
    // than the server's window, so netfilter lets it through untracked (the server decides).
    EXPECT_EQ(tcp_track(conn_, kOrig, segment(kSyn | kAck, kClientIsn + 2, kServerIsn + 1), false),
              TcpVerdict::kIgnore);
    EXPECT_EQ(state(), TcpState::kSynSent2);
    // Far past it: invalid.
    expect_invalid_untouched(kOrig, segment(kSyn | kAck, kClientIsn + 200'000, kServerIsn + 1));
}

TEST_F(TcpTrack, SimultaneousCloseEndsInTimeWait) {
    handshake();
    const uint32_t client_fin = next_[kOrig];
    const uint32_t server_fin = next_[kReply];
    EXPECT_EQ(send_segment(kOrig, segment(kFin | kAck, client_fin, server_fin)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
    // Crossing FINs: the server's does not acknowledge the client's.
    EXPECT_EQ(send_segment(kReply, segment(kFin | kAck, server_fin, client_fin)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kLastAck);
    EXPECT_NE(conn_.peer[kOrig].flags & kTcpPeerCloseInit, 0);
    EXPECT_NE(conn_.peer[kReply].flags & kTcpPeerCloseInit, 0);
    EXPECT_EQ(send_segment(kOrig, segment(kAck, client_fin + 1, server_fin + 1)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
    EXPECT_EQ(send_segment(kReply, segment(kAck, server_fin + 1, client_fin + 1)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
}

// ---- Reset --------------------------------------------------------------------------------------

TEST_F(TcpTrack, RstInWindowClosesEstablished) {
    handshake();
    EXPECT_EQ(send(kOrig, kAck | kPsh, 100), TcpVerdict::kAccept);
    EXPECT_EQ(send(kReply, kRst | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

TEST_F(TcpTrack, RstAnsweringSynClosesSynSent) {
    start();
    EXPECT_EQ(send_segment(kReply, segment(kRst | kAck, 0, kClientIsn + 1, 0, 0)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

TEST_F(TcpTrack, RstNotAcknowledgingOurSynIsInvalid) {
    start();
    expect_invalid_keeps_client(segment(kRst | kAck, 0, kClientIsn + 90000, 0, 0));
    EXPECT_EQ(state(), TcpState::kSynSent);
}

TEST_F(TcpTrack, RstOutOfWindowIsInvalid) {
    handshake();
    expect_invalid_untouched(kReply, segment(kRst, next_[kReply] + 10'000'000, 0));
    expect_invalid_untouched(kReply, segment(kRst, next_[kReply] - 10'000'000, 0));
    EXPECT_EQ(state(), TcpState::kEstablished);
}

// ---- Sequence and window bounds -----------------------------------------------------------------

TEST_F(TcpTrack, DataFarAheadIsInvalidThenLiberalAcceptsIt) {
    handshake();
    const TcpSegment ahead = segment(kAck, next_[kOrig] + 1'000'000, next_[kReply], 100);
    expect_invalid_untouched(kOrig, ahead);
    EXPECT_EQ(state(), TcpState::kEstablished);
    liberal_ = true;
    EXPECT_EQ(send_segment(kOrig, ahead), TcpVerdict::kAccept);
    EXPECT_EQ(conn_.peer[kOrig].end, ahead.seq + 100);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

// A RST acknowledging exactly a segment the table ignored answers it and closes, without the
// window checks (netfilter's "RST sent to invalid SYN or ACK we had let through"): the client
// of a half-open connection resets it, whatever sequence space its stale SYN had.
TEST_F(TcpTrack, RstAnsweringAnIgnoredReplyAckCloses) {
    start();
    ASSERT_EQ(send_segment(kReply, segment(kAck | kPsh, kServerIsn + 1, kClientIsn + 1, 100)),
              TcpVerdict::kIgnore);
    // Not the exact answer: held to the window (the client's real sequence is elsewhere).
    expect_invalid_untouched(kOrig, segment(kRst | kAck, kClientIsn + 90'000, kServerIsn + 100));
    EXPECT_EQ(send_segment(kOrig, segment(kRst | kAck, kClientIsn + 90'000, kServerIsn + 101)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

// Once the connection is closing (FIN_WAIT on), netfilter takes any RST without checking it:
// the tuple may already belong to a new connection. It closes, and tracks nothing else.
TEST_F(TcpTrack, RstInAClosingStateIsNotChecked) {
    handshake();
    ASSERT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(state(), TcpState::kFinWait);
    const TcpConn before = conn_;
    EXPECT_EQ(tcp_track(conn_, kReply, segment(kRst | kAck, next_[kReply] + 500'000, 77), false),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
    EXPECT_EQ(std::memcmp(&before.peer, &conn_.peer, sizeof(conn_.peer)), 0);
    // In ESTABLISHED the same RST is refused.
    TcpConn est = before;
    est.state = TcpState::kEstablished;
    EXPECT_EQ(tcp_track(est, kReply, segment(kRst | kAck, next_[kReply] + 500'000, 77), false),
              TcpVerdict::kInvalid);
}

// The same for the server's RST to a client's SYN ignored on an established connection.
TEST_F(TcpTrack, RstAnsweringAnIgnoredSynCloses) {
    handshake();
    ASSERT_EQ(send_segment(kOrig, segment(kSyn, 9'000'000, 0)), TcpVerdict::kIgnore);
    EXPECT_EQ(send_segment(kReply, segment(kRst | kAck, 0, 9'000'001)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

// Netfilter (Linux 6.1 on) lets an overly delayed segment through untracked: one that ends more
// than a window behind the data sent, or acknowledges more than a window behind the data
// received. The endpoint discards it.
TEST_F(TcpTrack, DataFarBehindIsIgnoredThenLiberalAcceptsIt) {
    handshake();
    EXPECT_EQ(send(kOrig, kAck, 1000), TcpVerdict::kAccept);
    const TcpSegment behind = segment(kAck, next_[kOrig] - 500'000, next_[kReply], 100);
    expect_ignored_untouched(kOrig, behind);
    expect_ignored_untouched(kOrig, segment(kAck, next_[kOrig], next_[kReply] - 200'000));
    EXPECT_EQ(state(), TcpState::kEstablished);
    liberal_ = true;
    EXPECT_EQ(send_segment(kOrig, behind), TcpVerdict::kAccept);
    EXPECT_EQ(conn_.peer[kOrig].end, next_[kOrig]);  // an old segment never moves `end` back
}

TEST_F(TcpTrack, AckOfDataNeverSentIsInvalid) {
    handshake();
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig], next_[kReply] + 5000, 10));
}

TEST_F(TcpTrack, RetransmissionOfOldInWindowSegmentIsAccepted) {
    handshake();
    const TcpSegment first = make(kOrig, kAck | kPsh, 1000);
    EXPECT_EQ(send_segment(kOrig, first), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck | kPsh, 1000), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck | kPsh, 1000), TcpVerdict::kAccept);
    const uint32_t end = conn_.peer[kOrig].end;
    EXPECT_EQ(send_segment(kOrig, first), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
    EXPECT_EQ(conn_.peer[kOrig].end, end);
    EXPECT_EQ(conn_.retrans, 1u);
}

TEST_F(TcpTrack, ZeroWindowAdmitsOneByteProbeOnly) {
    // The server answers with a zero window: the client may only probe it, at the edge (a
    // probe longer than one byte straddles the edge, which RFC 793 and netfilter accept).
    window_[kReply] = 0;
    handshake();
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig] + 2, next_[kReply], 1));
    EXPECT_EQ(send(kOrig, kAck, 1), TcpVerdict::kAccept);
    // The window opens: data flows again.
    window_[kReply] = 8192;
    EXPECT_EQ(send(kReply, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck, 8000), TcpVerdict::kAccept);
}

// Netfilter lets data overshoot the right edge by up to the receiver's largest window (stacks
// that send more than the window allows) without tracking it, except its end, so that the ACK
// for it is not refused; beyond that it is invalid.
TEST_F(TcpTrack, DataBeyondAdvertisedWindowIsIgnoredUpToAWindowThenInvalid) {
    window_[kReply] = 1000;
    handshake();
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig] + 80'000, next_[kReply], 1));
    const TcpConn before = conn_;
    const TcpSegment over = segment(kAck, next_[kOrig] + 1001, next_[kReply], 1);
    EXPECT_EQ(tcp_track(conn_, kOrig, over, false), TcpVerdict::kIgnore);
    EXPECT_EQ(conn_.peer[kOrig].end, next_[kOrig] + 1002);
    EXPECT_EQ(conn_.peer[kOrig].maxend, before.peer[kOrig].maxend);
    EXPECT_EQ(conn_.state, TcpState::kEstablished);
    // The server acknowledges it: not an ACK of data never sent.
    EXPECT_EQ(send_segment(kReply, segment(kAck, next_[kReply], next_[kOrig] + 1002)),
              TcpVerdict::kAccept);
}

TEST_F(TcpTrack, ScaledWindowAcceptedWhenBothSidesNegotiatedScaling) {
    wscale_[kOrig] = 7;
    wscale_[kReply] = 7;
    handshake();
    EXPECT_EQ(conn_.peer[kOrig].scale, 7);
    EXPECT_EQ(conn_.peer[kReply].scale, 7);
    // The client advertises 1024 << 7 = 131072 bytes: data 100000 bytes ahead still fits.
    window_[kOrig] = 1024;
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send_segment(kReply, segment(kAck, next_[kReply] + 100'000, next_[kOrig], 1000)),
              TcpVerdict::kAccept);
}

TEST_F(TcpTrack, ScaledWindowRejectedWhenOnlyClientOfferedScaling) {
    wscale_[kOrig] = 7;
    handshake();
    EXPECT_EQ(conn_.peer[kOrig].scale, 0);
    EXPECT_EQ(conn_.peer[kReply].scale, 0);
    window_[kOrig] = 1024;  // unscaled: 1024 bytes
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    expect_invalid_untouched(kReply, segment(kAck, next_[kReply] + 200'000, next_[kOrig], 1000));
}

TEST_F(TcpTrack, ScaledWindowRejectedWhenOnlyServerOfferedScaling) {
    wscale_[kReply] = 7;
    handshake();
    EXPECT_EQ(conn_.peer[kReply].scale, 0);
    window_[kOrig] = 1024;
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    expect_invalid_untouched(kReply, segment(kAck, next_[kReply] + 200'000, next_[kOrig], 1000));
}

TEST_F(TcpTrack, SequenceNumbersWrapAroundTwoToThe32) {
    next_[kOrig] = 0xfffffe00u;
    next_[kReply] = 0xffffff80u;
    handshake();
    EXPECT_EQ(send(kOrig, kAck | kPsh, 1000), TcpVerdict::kAccept);  // crosses 2^32
    EXPECT_LT(next_[kOrig], 0x1000u);
    EXPECT_EQ(conn_.peer[kOrig].end, next_[kOrig]);
    EXPECT_EQ(send(kReply, kAck | kPsh, 1000), TcpVerdict::kAccept);  // acks across the wrap
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    // Before the wrap numerically, behind by less than a window: a retransmission.
    EXPECT_EQ(send_segment(kOrig, segment(kAck, 0xfffffe01u, next_[kReply], 100)),
              TcpVerdict::kAccept);
    // Numerically small but far ahead in sequence space.
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig] + 0x40000000u, next_[kReply], 10));
    EXPECT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send(kReply, kFin | kAck), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kTimeWait);
}

// ---- Reopening and invalid flags ----------------------------------------------------------------

TEST_F(TcpTrack, SynInTimeWaitReopens) {
    handshake();
    ASSERT_EQ(send(kOrig, kFin | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kReply, kFin | kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    ASSERT_EQ(state(), TcpState::kTimeWait);
    const TcpConn before = conn_;
    EXPECT_EQ(tcp_track(conn_, kOrig, segment(kSyn, next_[kOrig] + 64000, 0), false),
              TcpVerdict::kReopen);
    EXPECT_EQ(std::memcmp(&before, &conn_, sizeof(TcpConn)), 0);
    // Only the original direction reopens.
    expect_invalid_untouched(kReply, segment(kSyn, next_[kReply] + 64000, 0));
}

TEST_F(TcpTrack, SynAfterRstReopens) {
    handshake();
    ASSERT_EQ(send(kOrig, kRst), TcpVerdict::kAccept);
    ASSERT_EQ(state(), TcpState::kClose);
    EXPECT_EQ(tcp_track(conn_, kOrig, segment(kSyn, 77, 0), false), TcpVerdict::kReopen);
    EXPECT_EQ(state(), TcpState::kClose);
}

TEST_F(TcpTrack, InvalidFlagCombinationsAreInvalidInEveryState) {
    handshake();
    expect_invalid_untouched(kOrig, make(kOrig, kSyn | kFin));
    expect_invalid_untouched(kOrig, make(kOrig, kSyn | kRst));
    expect_invalid_untouched(kReply, make(kReply, kFin | kRst));
    expect_invalid_untouched(kReply, make(kReply, 0, 10));
    expect_invalid_untouched(kOrig, make(kOrig, kPsh, 10));  // PSH alone: no class
    EXPECT_EQ(state(), TcpState::kEstablished);
    TcpConn fresh{};
    EXPECT_EQ(tcp_track(fresh, kOrig, segment(kSyn | kFin, 1, 0), true), TcpVerdict::kInvalid);
    EXPECT_EQ(fresh.state, TcpState::kNone);
}

TEST_F(TcpTrack, BadDirectionOrCorruptStateIsInvalid) {
    handshake();
    EXPECT_EQ(tcp_track(conn_, 2, make(kOrig, kAck), false), TcpVerdict::kInvalid);
    conn_.state = TcpState::kCount;
    EXPECT_EQ(tcp_track(conn_, kOrig, make(kOrig, kAck), false), TcpVerdict::kInvalid);
}

// ---- Agreement with Linux netfilter (nf_conntrack_proto_tcp.c) ----------------------------------

constexpr uint8_t kUrg = 0x20;

// RFC 5961 3.2: a RST below what the receiver has acknowledged (an old RST) is dropped.
TEST_F(TcpTrack, RstBelowWhatTheReceiverAckedIsInvalid) {
    handshake();
    ASSERT_EQ(send(kOrig, kAck | kPsh, 1000), TcpVerdict::kAccept);
    ASSERT_EQ(send(kReply, kAck), TcpVerdict::kAccept);  // the server acknowledges all of it
    expect_invalid_untouched(kOrig, segment(kRst, next_[kOrig] - 500, 0));
    expect_invalid_untouched(kOrig, segment(kRst | kAck, next_[kOrig] - 1, next_[kReply]));
    EXPECT_EQ(state(), TcpState::kEstablished);
}

// RFC 5961 3.2: a RST in the window but not at the exact next sequence number passes (the
// endpoint answers it with a challenge ACK) and leaves the connection ESTABLISHED; traffic
// goes on.
TEST_F(TcpTrack, InexactRstInWindowKeepsEstablished) {
    handshake();
    EXPECT_EQ(send_segment(kOrig, segment(kRst, next_[kOrig] + 1000, 0)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
    EXPECT_EQ(send(kReply, kAck | kPsh, 100), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
    // The RST at exactly what the server expects ends it.
    EXPECT_EQ(send_segment(kOrig, segment(kRst, next_[kOrig], 0)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

// A RST right after data of the same side, at the end of that data, closes (the receiver has
// not acknowledged the data yet, but the RST is part of the sender's train).
TEST_F(TcpTrack, RstEndingADataTrainCloses) {
    handshake();
    ASSERT_EQ(send(kReply, kAck | kPsh, 19), TcpVerdict::kAccept);
    EXPECT_EQ(send_segment(kReply, segment(kRst, next_[kReply], 0)), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kClose);
}

// A SYN-ACK is held to the window like any segment, as netfilter holds it: acknowledging past
// the SYN is invalid, more than a window below it is ignored, and below it within a window
// (Linux 6.18 lets ISN + 1 - 1000 through) is accepted.
TEST_F(TcpTrack, SynAckIsHeldToTheAckBounds) {
    start();
    expect_invalid_keeps_client(segment(kSyn | kAck, kServerIsn, kClientIsn + 1 + 5));
    // The refused SYN+ACK still set the server's side up, as netfilter does.
    EXPECT_EQ(conn_.peer[kReply].end, kServerIsn + 1);
    EXPECT_EQ(
        tcp_track(conn_, kReply, segment(kSyn | kAck, kServerIsn, kClientIsn - 100'000), false),
        TcpVerdict::kIgnore);
    EXPECT_EQ(state(), TcpState::kSynSent);
    EXPECT_EQ(send_segment(kReply, segment(kSyn | kAck, kServerIsn, kClientIsn + 1 - 1000)),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kSynRecv);
}

// Linux's valid flag combinations (PSH, ECE and CWR aside): a FIN needs an ACK, URG goes only
// with SYN alone or with ACK.
TEST_F(TcpTrack, FinWithoutAckAndUrgOutsideAckAreInvalid) {
    handshake();
    expect_invalid_untouched(kOrig, make(kOrig, kFin));
    expect_invalid_untouched(kOrig, make(kOrig, kFin | kPsh | kUrg));
    expect_invalid_untouched(kOrig, make(kOrig, kRst | kUrg));
    EXPECT_EQ(state(), TcpState::kEstablished);
    EXPECT_EQ(send(kOrig, kAck | kUrg | kPsh, 10), TcpVerdict::kAccept);
    EXPECT_EQ(send(kOrig, kFin | kAck | kUrg | kPsh), TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kFinWait);
}

// RFC 793: a segment is acceptable when it starts in the window; one straddling the right edge
// is accepted (the receiver keeps what fits).
TEST_F(TcpTrack, SegmentStraddlingTheRightWindowEdgeIsAccepted) {
    handshake();
    const TcpSegment straddle = segment(kAck | kPsh, next_[kOrig] + 65000, next_[kReply], 1460);
    EXPECT_EQ(send_segment(kOrig, straddle), TcpVerdict::kAccept);
    // One starting beyond the edge by more than a window is still refused.
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig] + 140000, next_[kReply], 100));
}

// An empty ACK far ahead of the window is checked like data (netfilter no longer checks only
// the ACK of an empty segment); keepalives one byte below the edge still pass.
TEST_F(TcpTrack, EmptyAckFarAheadOfTheWindowIsInvalid) {
    handshake();
    expect_invalid_untouched(kOrig, segment(kAck, next_[kOrig] + 1'000'000, next_[kReply]));
    EXPECT_EQ(send_segment(kOrig, segment(kAck, next_[kOrig] - 1, next_[kReply])),
              TcpVerdict::kAccept);
    EXPECT_EQ(state(), TcpState::kEstablished);
}

// A SACK block acknowledges too: one beyond what the other side sent is invalid.
TEST_F(TcpTrack, SackBlockForDataNeverSentIsInvalid) {
    TcpSegment syn = make(kOrig, kSyn);
    syn.sack_perm = true;
    tcp_start(conn_, syn);
    next_[kOrig] += 1;
    TcpSegment syn_ack = make(kReply, kSyn | kAck);
    syn_ack.sack_perm = true;
    ASSERT_EQ(send_segment(kReply, syn_ack), TcpVerdict::kAccept);
    ASSERT_EQ(send(kOrig, kAck), TcpVerdict::kAccept);
    ASSERT_EQ(send(kReply, kAck | kPsh, 1000), TcpVerdict::kAccept);
    TcpSegment sack = segment(kAck, next_[kOrig], next_[kReply] - 1000);
    sack.has_sack = true;
    sack.sack_right = next_[kReply] + 5000;
    expect_invalid_untouched(kOrig, sack);
    sack.sack_right = next_[kReply];  // a block up to what was sent
    EXPECT_EQ(send_segment(kOrig, sack), TcpVerdict::kAccept);
}

// The parser finds the highest right edge among a SACK option's blocks.
TEST(TcpSegmentParse, ReadsHighestSackRightEdge) {
    Bytes opt = {1, 1, 5, 26};  // three blocks
    for (uint32_t v : {100u, 200u, 300u, 900u, 400u, 500u}) put32(opt, v);
    const auto s = parse(tcp_header(1, 2, kAck, 100, opt));
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->has_sack);
    EXPECT_EQ(s->sack_right, 900u);
}

}  // namespace
}  // namespace ferry
