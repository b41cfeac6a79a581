// TCP connection tracking: the state machine (table-driven) and sequence/window tracking of one
// connection, in the manner of netfilter's nf_conntrack_proto_tcp (Rooij's "Real stateful TCP
// packet filtering"). Pure functions over a TcpConn: no DPDK, no clock; the shard maps states to
// timeouts. Directions: 0 = original (the side that sent the first SYN), 1 = reply.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ferry {

/// TCP connection states. Wire values for migration are mapped separately; these may change.
enum class TcpState : uint8_t {
    kNone,         // not yet seen a valid opening
    kSynSent,      // SYN seen in the original direction
    kSynSent2,     // simultaneous open: SYN seen in both directions
    kSynRecv,      // SYN+ACK seen in reply
    kEstablished,  // handshake complete
    kFinWait,      // FIN seen in one direction
    kCloseWait,    // FIN acknowledged, other side still open
    kLastAck,      // FIN seen in both directions, last ACK awaited
    kTimeWait,     // both FINs acknowledged
    kClose,        // RST seen
    kCount
};

/// Names as ct.list shows them ("SYN_SENT", "ESTABLISHED", ...). Context: any.
std::string_view tcp_state_name(TcpState s);

/// Tracking state of one direction (the sender's side of the stream).
struct TcpPeer {
    uint32_t end;     // highest seq + len seen from this side
    uint32_t maxend;  // highest ack + window (scaled) the other side allowed this side
    uint32_t maxwin;  // largest window (scaled) this side advertised
    uint8_t scale;    // window scale this side announced in its SYN (0..14)
    uint8_t flags;    // TcpPeerFlag bits
    uint16_t pad;
};
static_assert(sizeof(TcpPeer) == 16);

enum TcpPeerFlag : uint8_t {
    kTcpPeerWindowScale = 1 << 0,  // sent the window-scale option in its SYN
    kTcpPeerSackPerm = 1 << 1,     // sent SACK-permitted
    kTcpPeerCloseInit = 1 << 2,    // this side sent a FIN
    kTcpPeerMaxAckSet = 1 << 3,    // `end` is valid (a segment was seen from this side)
};

struct TcpConn {
    TcpPeer peer[2];
    TcpState state;
    uint8_t maxack_set;  // bit d: maxack[d] is valid (side d sent an accepted ACK)
    uint8_t last_dir;    // direction of the last segment accepted (or ignored, see last_data)
    uint8_t last_data;   // 1: the last segment accepted was a plain ACK (data or not); 2: the
                         // last one was a SYN or ACK ignored by the state table (ct_tcp.cc)
    uint32_t retrans;    // consecutive identical retransmissions (for diagnostics)
    // What RFC 5961's exact-RST check needs, as netfilter keeps it (td_maxack, last_end). Not in
    // the migration stream: a connection moved here has maxack_set 0, so its first RSTs are
    // checked against the window only, as netfilter does before it has seen an ACK.
    uint32_t maxack[2];  // highest ACK side d sent: what it expects next from the other side
    uint32_t last_end;   // sequence end of the last segment accepted (or ignored)
};
static_assert(sizeof(TcpConn) == 52);

/// The fields of a segment tracking needs, parsed by tcp_segment_parse.
struct TcpSegment {
    uint32_t seq;
    uint32_t ack;
    uint32_t payload_len;  // bytes of data after the TCP header (within the IP payload)
    uint16_t window;       // raw window field (unscaled)
    uint8_t flags;         // FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE CWR
    uint8_t wscale;        // window scale option value, 0xff when absent (only read on SYN)
    bool sack_perm;        // SACK-permitted option present
    bool has_sack;         // a SACK option with at least one block is present
    uint32_t sack_right;   // with has_sack: the highest right edge of its blocks
};

/// Parses a TCP header. Context: fast path.
/// @param tcp     first byte of the TCP header
/// @param avail   bytes of the IP payload from tcp on (header + data; excludes link padding)
/// @return the segment, or std::nullopt when the header is shorter than 20 bytes, the data
///         offset is below 5 or beyond avail, or the options are malformed.
std::optional<TcpSegment> tcp_segment_parse(const uint8_t* tcp, uint32_t avail);

/// Whether a segment may create a connection: a SYN without ACK, RST or FIN. With `liberal`,
/// any segment without RST may (mid-stream pick-up). Context: fast path.
bool tcp_may_open(const TcpSegment& seg, bool liberal);

/// Starts tracking with the first segment (original direction), which tcp_may_open accepted.
/// Context: fast path.
void tcp_start(TcpConn& c, const TcpSegment& seg);

/// What tcp_track decided about one segment.
enum class TcpVerdict : uint8_t {
    kAccept,   // in window and a valid transition; state may have changed
    kInvalid,  // flags invalid in this state or out of window: count as +inv, state unchanged
    kReopen,   // a SYN on a connection in TIME_WAIT/CLOSE: the caller drops the old entry and
               // tracks the segment as a new connection
    kIgnore,   // passes as a packet of the connection, which it leaves as it is (but for what
               // a RST answering the segment needs, TcpConn::last_data): a SYN from the
               // original side past the handshake (a client that restarted on the same port),
               // so the server can answer with a challenge ACK (netfilter's
               // TCP_CONNTRACK_IGNORE), and the segments netfilter ignores (see ct_tcp.cc)
};

/// Tracks one segment of a known connection: the state transition and the window checks.
/// Context: fast path.
/// @param dir      0 = original direction, 1 = reply
/// @param liberal  skip the window checks (state transitions still apply)
TcpVerdict tcp_track(TcpConn& c, unsigned dir, const TcpSegment& seg, bool liberal);

}  // namespace ferry
