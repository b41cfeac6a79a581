// TCP connection tracking: a table-driven state machine plus Rooij's sequence/window bounds, in
// the spirit of netfilter's nf_conntrack_proto_tcp. Everything here is a pure function of a
// TcpConn and one parsed segment: no DPDK, no clock, no globals beyond constant tables, so the
// same object serves the fast path, unit tests and fuzzers.
//
// One segment goes through three steps, and nothing is written unless all of them agree:
//  1. its flags give a segment class, and kTransitions[direction][class][state] the candidate
//     next state (or "invalid" / "reopen");
//  2. close_refine() sharpens the FIN_WAIT / CLOSE_WAIT / LAST_ACK moves that depend on which
//     side closed first and on what an ACK covers, which flags alone cannot tell;
//  3. track_window() checks the four sequence bounds and, on success, updates the per-direction
//     tracking values.
#include "dataplane/conntrack/ct_tcp.h"

#include <algorithm>
#include <cstddef>
#include <iterator>

#include "dataplane/byte_order.h"

namespace ferry {
namespace {

constexpr uint32_t kTcpMinHeaderLen = 20;

constexpr uint8_t kOptEol = 0;
constexpr uint8_t kOptNop = 1;
constexpr uint8_t kOptMss = 2;
constexpr uint8_t kOptWindowScale = 3;
constexpr uint8_t kOptSackPerm = 4;
constexpr uint8_t kOptSack = 5;
constexpr uint8_t kOptWindowScaleLen = 3;
constexpr uint8_t kOptSackPermLen = 2;
// RFC 7323 2.3: a larger shift would let the window exceed 2^30 and confuse sequence comparisons.
constexpr uint8_t kMaxWindowScale = 14;
constexpr uint8_t kWindowScaleAbsent = 0xff;

constexpr uint8_t kFlagFin = 0x01;
constexpr uint8_t kFlagSyn = 0x02;
constexpr uint8_t kFlagRst = 0x04;
constexpr uint8_t kFlagPsh = 0x08;
constexpr uint8_t kFlagAck = 0x10;
constexpr uint8_t kFlagUrg = 0x20;
constexpr uint8_t kFlagEce = 0x40;
constexpr uint8_t kFlagCwr = 0x80;

// Floor of the ACK lag accepted (netfilter's MAXACKWINDOW default): a little above the largest
// unscaled window, so that ACKs lagging one full window behind the data are never refused.
constexpr uint32_t kMinAckWindow = 66000;

/// Wrap-safe "a comes before b" in sequence space: valid while the two are less than 2^31 apart,
/// which window scaling's limit of 2^30 guarantees for any two values worth comparing.
/// Context: any. @return true when a precedes b.
constexpr bool seq_before(uint32_t a, uint32_t b) {
    return static_cast<int32_t>(a - b) < 0;
}

/// Wrap-safe "a comes after b". Context: any. @return true when a follows b.
constexpr bool seq_after(uint32_t a, uint32_t b) {
    return seq_before(b, a);
}

/// Walks the options area (bytes 20..header end). Only SYN options matter to tracking, but the
/// walk runs on every segment so a malformed header is refused whatever its flags. Options of a
/// known kind with an unexpected length are ignored, as end hosts do; only lengths that would
/// make the walk loop (< 2) or leave the header are malformed.
/// Context: fast path. @return false when the options are malformed.
bool parse_options(const uint8_t* opt, uint32_t len, TcpSegment& seg) {
    uint32_t i = 0;
    while (i < len) {
        const uint8_t kind = opt[i];
        if (kind == kOptEol) break;
        if (kind == kOptNop) {
            ++i;
            continue;
        }
        if (len - i < 2) return false;  // the kind byte is the last one: no length byte
        const uint8_t opt_len = opt[i + 1];
        if (opt_len < 2 || opt_len > len - i) return false;
        switch (kind) {
            case kOptMss:
                // Walked for its length only: tracking does not need the MSS (TcpSegment has no
                // field for it), but an MSS option running past the header is refused above.
                break;
            case kOptWindowScale:
                if (opt_len == kOptWindowScaleLen) {
                    seg.wscale = std::min(opt[i + 2], kMaxWindowScale);
                }
                break;
            case kOptSackPerm:
                if (opt_len == kOptSackPermLen) seg.sack_perm = true;
                break;
            case kOptSack:
                // Blocks of {left, right} edges; tracking bounds the highest right edge as it
                // bounds the ACK (netfilter's tcp_sack).
                for (uint32_t b = i + 2; b + 8 <= i + opt_len; b += 8) {
                    const uint32_t right = load_be32(opt + b + 4);
                    if (!seg.has_sack || seq_after(right, seg.sack_right)) seg.sack_right = right;
                    seg.has_sack = true;
                }
                break;
            default:
                break;
        }
        i += opt_len;
    }
    return true;
}

// ---- State machine ------------------------------------------------------------------------------

/// What a segment's flags make of it. PSH, URG, ECE and CWR never change the class.
enum class SegClass : uint8_t {
    kSyn,      // SYN alone: an opening
    kSynAck,   // SYN+ACK: the answer to an opening
    kFin,      // FIN, with or without ACK: one side closes
    kAck,      // ACK alone: data or acknowledgement
    kRst,      // RST, with or without ACK: abort
    kInvalid,  // no flags, or a combination no stack sends (SYN+FIN, SYN+RST, FIN+RST...)
    kCount
};

/// Maps the flag byte to a segment class. The valid combinations are netfilter's
/// (tcp_valid_flags): PSH, ECE and CWR aside, a FIN needs an ACK and URG goes only with a SYN
/// alone or with an ACK. Context: fast path. @return the class.
SegClass classify(uint8_t flags) {
    switch (flags & static_cast<uint8_t>(~(kFlagPsh | kFlagEce | kFlagCwr))) {
        case kFlagSyn:
        case kFlagSyn | kFlagUrg:
            return SegClass::kSyn;
        case kFlagSyn | kFlagAck:
            return SegClass::kSynAck;
        case kFlagFin | kFlagAck:
        case kFlagFin | kFlagAck | kFlagUrg:
            return SegClass::kFin;
        case kFlagAck:
        case kFlagAck | kFlagUrg:
            return SegClass::kAck;
        case kFlagRst:
        case kFlagRst | kFlagAck:
            return SegClass::kRst;
        default:
            return SegClass::kInvalid;
    }
}

constexpr size_t kNumStates = static_cast<size_t>(TcpState::kCount);
constexpr size_t kNumClasses = static_cast<size_t>(SegClass::kCount);

// Table entries: a state, or one of two verdict markers placed past the last state. No entry
// leads back to NONE, so it has no short name.
constexpr TcpState sSS = TcpState::kSynSent;
constexpr TcpState sS2 = TcpState::kSynSent2;
constexpr TcpState sSR = TcpState::kSynRecv;
constexpr TcpState sES = TcpState::kEstablished;
constexpr TcpState sFW = TcpState::kFinWait;
constexpr TcpState sCW = TcpState::kCloseWait;
constexpr TcpState sLA = TcpState::kLastAck;
constexpr TcpState sTW = TcpState::kTimeWait;
constexpr TcpState sCL = TcpState::kClose;
constexpr TcpState sIV = TcpState::kCount;  // invalid here: kInvalid, nothing changes
constexpr TcpState sRO = static_cast<TcpState>(kNumStates + 1);  // kReopen: caller starts anew
constexpr TcpState sIG = static_cast<TcpState>(kNumStates + 2);  // kIgnore: passes, no change

struct TransitionRow {
    TcpState next[kNumStates];
};

/// One row of the table: the next state for each current state, in TcpState order. Taking the
/// entries as a pack lets the size check catch a row with a column missing, which a plain
/// aggregate initialiser would silently fill with kNone. Context: compile time.
template <class... S>
constexpr TransitionRow row(S... next) {
    static_assert(sizeof...(S) == kNumStates, "one entry per TcpState");
    return TransitionRow{{next...}};
}

// What each state allows ("stay" = accepted without a state change; anything unlisted is
// kInvalid). Directions: orig = the side that sent the first SYN.
//  NONE         nothing tracked yet: only an opening from orig (a SYN; with `liberal`, also
//               SYN+ACK, FIN or ACK to pick up a connection whose start we missed).
//  SYN_SENT     orig SYN retransmission (stay); reply SYN+ACK -> SYN_RECV; reply SYN
//               (simultaneous open) -> SYN_SENT2; RST -> CLOSE. No data, no FIN yet.
//  SYN_SENT2    SYN retransmissions either way (stay); SYN+ACK either way -> SYN_RECV; RST.
//  SYN_RECV     orig ACK -> ESTABLISHED; reply ACK (stay); FIN either way -> FIN_WAIT; RST.
//  ESTABLISHED  ACK/data either way (stay); FIN either way -> FIN_WAIT; RST. A new SYN from
//               orig (a client that restarted on the same port) is ignored: it passes and
//               changes nothing, so the server can answer with a challenge ACK, and the client's
//               RST to that ends the old connection (netfilter does the same, in
//               FIN_WAIT..LAST_ACK too).
//  FIN_WAIT     the closer's FIN retransmitted (stay); the other side's ACK covering the FIN ->
//               CLOSE_WAIT, its other ACKs/data (stay); the other side's FIN -> LAST_ACK; RST.
//  CLOSE_WAIT   ACK/data from the side still open (stay); its FIN -> LAST_ACK; RST.
//  LAST_ACK     an ACK covering the other side's FIN -> TIME_WAIT (in a simultaneous close the
//               first such ACK is enough: the second follows within one RTT and TIME_WAIT's
//               timeout covers it); FIN retransmissions and other ACKs (stay); RST.
//  TIME_WAIT    late ACKs/FINs (stay); orig SYN -> kReopen; RST -> CLOSE.
//  CLOSE        stragglers (stay); orig SYN -> kReopen.
// Ignored as netfilter ignores them (kIgnore: passes, changes nothing, as the endpoint will
// answer with a RST or a SYN+ACK that tells): a reply ACK in SYN_SENT or SYN_SENT2 (a half-open
// connection the firewall missed the start of), a reply SYN+ACK once in SYN_RECV (a
// retransmission, or the answer to an ignored SYN), an orig SYN once in SYN_RECV (a
// retransmission after a lost SYN+ACK).
// Indexed [direction][segment class][current state].
constexpr TransitionRow kTransitions[2][kNumClasses] = {
    {
        // Original direction.    NO   SS   S2   SR   ES   FW   CW   LA   TW   CL
        /* SYN     */ row(sSS, sSS, sS2, sIG, sIG, sIG, sIG, sIG, sRO, sRO),
        /* SYN+ACK */ row(sSR, sIV, sSR, sSR, sIV, sIV, sIV, sIV, sIV, sIV),
        /* FIN     */ row(sFW, sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL),
        /* ACK     */ row(sES, sIV, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL),
        /* RST     */ row(sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        /* invalid */ row(sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    },
    {
        // Reply direction.       NO   SS   S2   SR   ES   FW   CW   LA   TW   CL
        /* SYN     */ row(sIV, sS2, sS2, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
        /* SYN+ACK */ row(sIV, sSR, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG),
        /* FIN     */ row(sIV, sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL),
        /* ACK     */ row(sIV, sIG, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL),
        /* RST     */ row(sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        /* invalid */ row(sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    },
};
static_assert(std::size(kTransitions[0]) == kNumClasses);
static_assert(std::size(kTransitions[0][0].next) == kNumStates);

/// Whether `seg` acknowledges the FIN `receiver` sent: the FIN takes the last sequence number
/// the receiver used, so an ACK reaching its `end` covers it. Context: fast path.
/// @return true when the receiver has closed and the ACK covers its FIN.
bool acks_fin(const TcpSegment& seg, const TcpPeer& receiver) {
    return (seg.flags & kFlagAck) != 0 && (receiver.flags & kTcpPeerCloseInit) != 0 &&
           !seq_before(seg.ack, receiver.end);
}

/// The closing moves the flag table cannot decide: it is indexed by direction, but what matters
/// after the first FIN is whether the sender is the side that closed (kTcpPeerCloseInit) and
/// whether an ACK covers the other side's FIN. Context: fast path.
/// @return the refined next state (`next` when no refinement applies).
TcpState close_refine(const TcpConn& c, unsigned dir, SegClass cls, const TcpSegment& seg,
                      TcpState next) {
    const TcpPeer& sender = c.peer[dir];
    const TcpPeer& receiver = c.peer[dir ^ 1];
    const bool sender_closed = (sender.flags & kTcpPeerCloseInit) != 0;
    switch (c.state) {
        case TcpState::kFinWait:
            // A FIN from the closer is a retransmission, not the second FIN; an ACK moves to
            // CLOSE_WAIT only when the other side confirms the FIN.
            if (cls == SegClass::kFin && sender_closed) return TcpState::kFinWait;
            if (cls == SegClass::kAck && (sender_closed || !acks_fin(seg, receiver))) {
                return TcpState::kFinWait;
            }
            break;
        case TcpState::kCloseWait:
            if (cls == SegClass::kFin && sender_closed) return TcpState::kCloseWait;
            break;
        case TcpState::kLastAck:
            if (cls == SegClass::kAck && !acks_fin(seg, receiver)) return TcpState::kLastAck;
            break;
        default:
            break;
    }
    return next;
}

// ---- Sequence and window tracking ---------------------------------------------------------------

/// Records what a SYN announces about its sender: window scale and SACK permission. The scale
/// is kept even though it only applies once the other side's SYN shows scaling too (see
/// agree_window_scale). Context: fast path.
void record_syn_options(TcpPeer& p, const TcpSegment& seg) {
    p.flags &= static_cast<uint8_t>(~(kTcpPeerWindowScale | kTcpPeerSackPerm));
    p.scale = 0;
    if (seg.wscale != kWindowScaleAbsent) {
        p.flags |= kTcpPeerWindowScale;
        p.scale = std::min(seg.wscale, kMaxWindowScale);
    }
    if (seg.sack_perm) p.flags |= kTcpPeerSackPerm;
}

/// RFC 7323: scaling is on in both directions only when both SYNs carried the option; otherwise
/// neither side shifts its window. Called when the second side's SYN is seen. Context: fast path.
void agree_window_scale(TcpPeer& a, TcpPeer& b) {
    if ((a.flags & b.flags & kTcpPeerWindowScale) == 0) a.scale = b.scale = 0;
}

// TcpConn::last_data: what the last segment tracked or ignored was.
constexpr uint8_t kLastOther = 0;
constexpr uint8_t kLastAck = 1;      // an accepted plain ACK (data or not): ends a data train
constexpr uint8_t kLastIgnored = 2;  // a SYN or ACK the table ignored (sIG)

/// What the sequence bounds make of a segment.
enum class WindowVerdict : uint8_t {
    kIn,      // in window: the tracking values were updated
    kOut,     // invalid: nothing changed
    kIgnore,  // passes without tracking (netfilter's NFCT_TCP_IGNORE), see track_window
};

/// The four bounds of Rooij's "Real stateful TCP packet filtering", checked on a segment from
/// `dir`, and the tracking updates an accepted segment brings. Works on copies of both peers and
/// commits them only when the segment passes (or `liberal`, which skips the checks but keeps the
/// values current), so a refused segment leaves no trace, except that the first segment of a
/// side sets that side up whatever its verdict, as in netfilter.
/// As netfilter since Linux 6.1, two kinds of segment pass without being tracked (kIgnore):
/// one entirely older than a window behind, or acknowledging older than a window behind (an
/// overly delayed duplicate, which the endpoint discards), and one that overshoots the right
/// edge by at most the receiver's largest window while its other bounds hold (stacks that send
/// more than the window allows; its end is recorded so that the ACK for it is not refused).
/// Context: fast path. @return the verdict (kIn always with `liberal`).
WindowVerdict track_window(TcpConn& c, unsigned dir, const TcpSegment& seg, bool liberal) {
    TcpPeer s = c.peer[dir];      // sender
    TcpPeer r = c.peer[dir ^ 1];  // receiver
    const bool syn = (seg.flags & kFlagSyn) != 0;
    const bool has_ack = (seg.flags & kFlagAck) != 0;
    const bool rst = (seg.flags & kFlagRst) != 0;
    uint32_t seq = seg.seq;
    // SYN and FIN each take one sequence number.
    uint32_t end = seq + seg.payload_len + (syn ? 1u : 0u) + ((seg.flags & kFlagFin) ? 1u : 0u);
    uint32_t ack = seg.ack;
    uint32_t win = seg.window;

    // The first segment of a side sets its sequence space up; netfilter keeps that even when the
    // segment then fails the bounds, so later segments are measured against it.
    const bool first_of_side = (s.flags & kTcpPeerMaxAckSet) == 0;
    const auto refuse = [&] {
        if (first_of_side) {
            c.peer[dir] = s;
            c.peer[dir ^ 1] = r;
        }
        return WindowVerdict::kOut;
    };
    if (first_of_side) {
        // First segment from this side: it defines the side's sequence space.
        if (syn) {
            s.end = s.maxend = end;
            s.maxwin = std::max<uint32_t>(win, 1);
            record_syn_options(s, seg);
            if ((r.flags & kTcpPeerMaxAckSet) != 0) agree_window_scale(s, r);
            s.flags |= kTcpPeerMaxAckSet;
            if (!has_ack) {
                // A SYN acknowledges nothing and there is no window of the other side yet to
                // hold it against: the opening SYN, or the reply's SYN of a simultaneous open.
                c.peer[dir] = s;
                c.peer[dir ^ 1] = r;
                return WindowVerdict::kIn;
            }
        } else {
            // Picked up mid-stream (or a RST answering our SYN): trust this segment for the
            // sender's position. Its scale is unknown (0), which is why pick-up wants `liberal`.
            s.end = end;
            s.maxwin = std::max<uint32_t>(win << s.scale, 1);
            s.maxend = end + s.maxwin;
            if ((r.flags & kTcpPeerMaxAckSet) == 0) {
                if (has_ack) r.end = r.maxend = ack;
            } else if (has_ack && ack == r.end + 1) {
                r.end = ack;  // answer to a keepalive probing one byte below the edge
            }
            s.flags |= kTcpPeerMaxAckSet;
        }
    } else if (syn && seq_after(end, s.end) &&
               ((c.state == TcpState::kSynSent && dir == 0) ||
                (c.state == TcpState::kSynRecv && dir == 1))) {
        // The opener restarted with a new ISN (RFC 793: a reinitialised TCP only has to pick
        // larger sequence numbers), or the answer did: start this side's space over.
        s.end = s.maxend = end;
        s.maxwin = std::max<uint32_t>(win, 1);
        record_syn_options(s, seg);
        if ((r.flags & kTcpPeerMaxAckSet) != 0) agree_window_scale(s, r);
    }

    // A segment without ACK acknowledges nothing; some stacks send RST+ACK with ack 0. Treat
    // both as acknowledging exactly what was sent so the ACK bounds hold trivially.
    if (!has_ack || (rst && ack == 0)) ack = r.end;
    // An empty segment is held to the sequence bounds like any other (netfilter dropped its
    // old "check the ACK only" shortcut): an empty ACK far ahead of the window is invalid.
    // The exception is a RST with sequence 0 answering a SYN, which has no sequence to check.
    if (rst && seq == 0 && c.state == TcpState::kSynSent) seq = end = s.end;

    // An ACK may lag the data by up to a window. netfilter bounds it by the sender's window (what
    // the receiver may have in flight); the receiver's own window is accepted too.
    const uint32_t max_ack_window = std::max({s.maxwin, r.maxwin, kMinAckWindow});
    // A SACK block acknowledges too: its highest right edge is held to the same bounds as the
    // ACK, when the receiver of the SACK announced SACK (netfilter's tcp_sack).
    uint32_t sack = ack;
    if (has_ack && seg.has_sack && (r.flags & kTcpPeerSackPerm) != 0 &&
        seq_after(seg.sack_right, ack))
        sack = seg.sack_right;
    // Each bound is written as netfilter writes it (before(a, b + 1) rather than !after(a, b)):
    // the two differ for values 2^31 apart, where "before" and "after" both hold.
    // I: the segment starts within what the receiver allowed (its ack + scaled window);
    // RFC 793 accepts one straddling the right edge (the receiver keeps what fits).
    const bool seq_ok = seq_before(seq, s.maxend + 1);
    // II: it ends no earlier than one receiver window behind the data already sent.
    const bool end_ok = seq_after(end, s.end - r.maxwin - 1);
    // III: no ACK (or SACK) of data the receiver has not sent.
    const bool ack_not_ahead = seq_before(sack, r.end + 1);
    // IV: no ACK older than one window behind the receiver's data.
    const bool ack_not_behind = seq_after(sack, r.end - max_ack_window - 1);
    if (!liberal) {
        if (!seq_ok) {
            // Past the right edge: netfilter lets a segment overshoot it by up to the receiver's
            // largest window when everything else holds, and records its end.
            const uint32_t overshot = end - s.maxend + 1;
            if (r.maxwin != 0 && end_ok && ack_not_ahead && ack_not_behind &&
                overshot <= r.maxwin) {
                s.end = end;
                c.peer[dir] = s;
                c.peer[dir ^ 1] = r;
                return WindowVerdict::kIgnore;
            }
            return refuse();
        }
        if (!ack_not_ahead) return refuse();
        // Receiver's window still unknown: no lower bound.
        if ((r.maxwin != 0 && !end_ok) || !ack_not_behind) {
            // What the first segment of a side set up stays, as in netfilter.
            c.peer[dir] = s;
            c.peer[dir ^ 1] = r;
            return WindowVerdict::kIgnore;
        }
    }

    // RFC 7323: the window of a SYN is never scaled.
    if (!syn) win <<= s.scale;
    s.maxwin = std::max(s.maxwin, win);
    if (seq_after(end, s.end)) {
        s.end = end;
        c.retrans = 0;
    } else if (seg.payload_len != 0 || syn || (seg.flags & kFlagFin) != 0) {
        // Sequence space sent again without advancing: a retransmission (for diagnostics).
        if (c.retrans != UINT32_MAX) ++c.retrans;
    }
    // Data beyond what the receiver allowed (only with `liberal`) means it really had a larger
    // window than we saw; widen it so later segments are measured against the truth.
    if (r.maxwin != 0 && seq_after(end, s.maxend)) r.maxwin += end - s.maxend;
    // The receiver may now send up to what this side acknowledges plus its window; a zero
    // window still admits a one-byte probe.
    if (!seq_before(ack + win, r.maxend)) {
        r.maxend = ack + win;
        if (win == 0) ++r.maxend;
    }
    c.peer[dir] = s;
    c.peer[dir ^ 1] = r;
    return WindowVerdict::kIn;
}

constexpr std::string_view kTcpStateNames[] = {
    "NONE",     "SYN_SENT",   "SYN_SENT2", "SYN_RECV",  "ESTABLISHED",
    "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",  "TIME_WAIT", "CLOSE",
};
static_assert(std::size(kTcpStateNames) == kNumStates, "one name per TcpState");

}  // namespace

std::string_view tcp_state_name(TcpState s) {
    const auto i = static_cast<size_t>(s);
    return i < kNumStates ? kTcpStateNames[i] : std::string_view{"UNKNOWN"};
}

std::optional<TcpSegment> tcp_segment_parse(const uint8_t* tcp, uint32_t avail) {
    if (tcp == nullptr || avail < kTcpMinHeaderLen) return std::nullopt;
    const uint32_t header_len = uint32_t{static_cast<uint8_t>(tcp[12] >> 4)} * 4;
    if (header_len < kTcpMinHeaderLen || header_len > avail) return std::nullopt;
    TcpSegment seg{};
    seg.seq = load_be32(tcp + 4);
    seg.ack = load_be32(tcp + 8);
    seg.flags = tcp[13];
    seg.window = load_be16(tcp + 14);
    seg.payload_len = avail - header_len;
    seg.wscale = kWindowScaleAbsent;
    seg.sack_perm = false;
    if (!parse_options(tcp + kTcpMinHeaderLen, header_len - kTcpMinHeaderLen, seg)) {
        return std::nullopt;
    }
    return seg;
}

// Invalid flag combinations never open a connection, even with `liberal`: a SYN+FIN or a
// flagless segment is a scan, not a connection whose start we missed.
bool tcp_may_open(const TcpSegment& seg, bool liberal) {
    const SegClass cls = classify(seg.flags);
    if (cls == SegClass::kSyn) return true;
    return liberal && cls != SegClass::kRst && cls != SegClass::kInvalid;
}

// The first segment goes through tcp_track from NONE, so the opening follows the same table;
// window checks are skipped because there is nothing yet to check against. A segment the table
// refuses in NONE (a RST: tcp_may_open's contract excludes it) leaves the connection in NONE.
void tcp_start(TcpConn& c, const TcpSegment& seg) {
    c = TcpConn{};
    tcp_track(c, 0, seg, /*liberal=*/true);
}

/// RFC 5961 3.2 as netfilter applies it to a RST, once the receiver's next expected sequence
/// number is known (the highest ACK it sent): one below it is an old RST (refused); one above
/// it passes (the endpoint answers with a challenge ACK) but leaves an established connection
/// as it is, unless it ends a train of the sender's data. Context: fast path.
/// @return false when the RST is invalid; *next is set to the state it leads to
bool rst_refine(const TcpConn& c, unsigned dir, const TcpSegment& seg, TcpState* next) {
    const unsigned rcv = dir ^ 1;
    if ((c.maxack_set & (1u << rcv)) == 0) return true;
    const bool established = c.state == TcpState::kEstablished;
    if (seg.seq == 0 && !established) return true;  // an answer to a SYN let through
    if (seq_before(seg.seq, c.maxack[rcv])) return false;
    if (!established || seg.seq == c.maxack[rcv]) return true;
    if (c.last_data == kLastAck && c.last_dir == dir && seg.seq == c.last_end) return true;
    *next = c.state;
    return true;
}

TcpVerdict tcp_track(TcpConn& c, unsigned dir, const TcpSegment& seg, bool liberal) {
    if (dir > 1 || c.state >= TcpState::kCount) return TcpVerdict::kInvalid;
    // Only an opening may leave NONE: a bare ACK before any SYN is no connection unless liberal.
    if (c.state == TcpState::kNone && (dir != 0 || !tcp_may_open(seg, liberal))) {
        return TcpVerdict::kInvalid;
    }
    const SegClass cls = classify(seg.flags);
    TcpState next = kTransitions[dir][static_cast<size_t>(cls)].next[static_cast<size_t>(c.state)];
    if (next == sIV) return TcpVerdict::kInvalid;
    if (next == sRO) return TcpVerdict::kReopen;
    if (next == sIG) {
        // Netfilter remembers a SYN or ACK it ignored (a client restarting on the same port, a
        // half-open connection): a RST acknowledging exactly that segment answers it.
        if (cls == SegClass::kSyn || cls == SegClass::kAck) {
            c.last_dir = static_cast<uint8_t>(dir);
            c.last_data = kLastIgnored;
            c.last_end = seg.seq + seg.payload_len + (cls == SegClass::kSyn ? 1u : 0u);
        }
        return TcpVerdict::kIgnore;
    }
    // Such a RST ends the connection without the RFC 5961 and window checks: it may acknowledge
    // a sequence space the ignored segment started, which tracking never saw. Netfilter reads
    // the acknowledgement field whether or not the ACK flag is set. So does any RST once the
    // connection is closing (FIN_WAIT on): netfilter skips the checks there, as the tuple may
    // already belong to a new connection its values know nothing of.
    const bool unchecked_rst =
        cls == SegClass::kRst &&
        ((c.last_data == kLastIgnored && seg.ack == c.last_end) || c.state >= TcpState::kFinWait);
    if (cls == SegClass::kRst && !unchecked_rst && !rst_refine(c, dir, seg, &next))
        return TcpVerdict::kInvalid;
    next = close_refine(c, dir, cls, seg, next);
    // A SYN+ACK answering a SYN is held to the window like any segment: it may not acknowledge
    // beyond the SYN, and one acknowledging more than a window below it is ignored.
    const WindowVerdict w = unchecked_rst ? WindowVerdict::kIn : track_window(c, dir, seg, liberal);
    if (w == WindowVerdict::kOut) return TcpVerdict::kInvalid;
    if (w == WindowVerdict::kIgnore) return TcpVerdict::kIgnore;
    if (cls == SegClass::kFin) c.peer[dir].flags |= kTcpPeerCloseInit;
    if ((seg.flags & kFlagAck) != 0 && cls != SegClass::kRst) {
        const uint8_t bit = static_cast<uint8_t>(1u << dir);
        if ((c.maxack_set & bit) == 0 || seq_after(seg.ack, c.maxack[dir])) c.maxack[dir] = seg.ack;
        c.maxack_set |= bit;
    }
    c.last_dir = static_cast<uint8_t>(dir);
    c.last_data = cls == SegClass::kAck ? kLastAck : kLastOther;
    c.last_end = seg.seq + seg.payload_len + (cls == SegClass::kSyn || cls == SegClass::kSynAck) +
                 (cls == SegClass::kFin);
    c.state = next;
    return TcpVerdict::kAccept;
}

}  // namespace ferry
