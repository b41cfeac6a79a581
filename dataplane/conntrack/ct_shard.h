// One worker's connection-tracking shard: its connection table, the TCP/UDP/ICMP tracking,
// NAT bindings and incremental expiry. Written only by its owner worker (or the control thread
// while that worker is paused); no DPDK, no locks, no allocation after create().
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/conntrack/ct_entry.h"
#include "dataplane/conntrack/ct_table.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/counters.h"
#include "dataplane/flow_key.h"
#include "dataplane/rule.h"

namespace ferry {

/// What a ct action asks for, decoded from its Action and its rule.
struct CtParams {
    uint16_t zone = 0;
    bool commit = false;
    bool nat = false;               // kCtNat
    bool set_mark = false;          // kCtSetMark
    uint32_t mark = 0;              // with set_mark
    const NatSpec* spec = nullptr;  // with nat: the binding to create on commit (may be kNone)
};

/// The connection a packet was last tracked to, kept with the packet while its actions run (as
/// Open vSwitch keeps it on the packet): a later ct action in the same zone uses it rather than
/// looking the packet up again, which would miss once NAT has changed the packet's tuple.
struct CtPacketState {
    uint32_t index = kCtNone;  // entry; kCtNone: not tracked to a connection yet
    uint16_t zone = 0;
    uint8_t dir = 0;
    uint8_t ct_state = 0;  // what the first tracking set
    // A fragment of a reassembled datagram on its way out (ct_defrag_stage.h): it takes the
    // datagram's tracking, which its first fragment did with what follows.
    uint8_t datagram = 0;     // 1: one of a reassembled datagram's fragments
    uint8_t datagram_rx = 0;  // the whole datagram's transport checks, as CtRxCsum L4 bits
    uint16_t l4_src = 0;      // the datagram's ports and TCP flags (key fields), for its
    uint16_t l4_dst = 0;      // later fragments
    uint8_t tcp_flags = 0;
    uint32_t l4_length = 0;    // the datagram's transport message length
    uint8_t verdict = 0;       // a CtVerdict other than kContinue ends the datagram: its first
    uint16_t redirect_to = 0;  // fragment was dropped, or sent to worker redirect_to

    /// Records the connection the packet was tracked to, keeping the datagram fields.
    void track(uint32_t i, uint16_t z, uint8_t d, uint8_t state) {
        index = i;
        zone = z;
        dir = d;
        ct_state = state;
    }
};

/// A packet's tuple as the ct stage computed it for the burst's bulk lookup, with what that
/// lookup found: process() then neither keys the packet again nor, when the hit still holds,
/// looks it up again.
struct CtKeyed {
    CtTuple tuple;
    bool icmp_error;
    CtRef hint;  // a miss is never trusted: an earlier packet of the burst may have committed it
    uint32_t l4_length = 0;  // a reassembled datagram's transport length (0: the packet's own)
};

/// Outcome of tracking one packet.
enum class CtVerdict : uint8_t {
    kContinue,  // key's ct fields are set; processing goes on
    kLimit,     // commit refused by the zone's limit: drop
    kFull,      // commit refused: table full or no free NAT port: drop
    kRedirect,  // the connection lives on worker redirect_to(): hand the packet there
    kBlocked,   // the connection was ended by payload inspection: drop
    kDormant,   // the connection is being migrated here and not committed yet: drop
};

/// A message from a shard to another worker's shard, delivered by the worker over the
/// hand-off ring: "packets of `tuple` belong to worker `owner`" (add) or no longer (del).
struct CtNotice {
    enum Kind : uint8_t { kRedirectAdd = 1, kRedirectDel = 2 };
    uint8_t kind;
    uint16_t to;     // the worker whose shard receives it
    uint16_t owner;  // the worker that owns the connection
    CtTuple tuple;
};

inline constexpr unsigned kCtNoticeSlots = 64;

// Counters of one shard, one list for the struct fields, the names ct.stats reports per worker
// (the same in telemetry and in the Prometheus exporter) and their descriptions; see
// dataplane/drop_reason.h. _(field and name, kind, description); kind says whether the value only
// grows (counter) or is a live count (gauge).
#define FERRY_FOREACH_CT_COUNTER(_)                                                         \
    _(lookups, kCounter, "Packets conntrack looked up.")                                    \
    _(created, kCounter, "Connections committed.")                                          \
    _(removed, kCounter, "Connections removed (expired, closed or flushed).")               \
    _(invalid, kCounter, "Packets conntrack found invalid (+inv).")                         \
    _(limit_drops, kCounter, "Commits refused by a zone's limit.")                          \
    _(full_drops, kCounter, "Commits refused: table full or NAT exhausted.")                \
    _(nat_exhausted, kCounter, "Commits refused: no free NAT address and port.")            \
    _(reopened, kCounter, "TCP SYNs that reused a TIME_WAIT or CLOSE connection's tuple.")  \
    _(foreign_reply, kCounter, "NAT bindings whose reply tuple hashes to another worker.")  \
    _(redirects, kGauge, "Live redirect entries: other workers' foreign reply tuples.")     \
    _(notices_lost, kCounter, "Redirect notices that found no room (outbox or ring full).") \
    _(blocked, kCounter, "Connections ended by payload inspection.")                        \
    _(blocked_drops, kCounter, "Packets of connections payload inspection ended, dropped.") \
    _(installed, kCounter, "Connections installed from a migration stream or checkpoint.")  \
    _(dormant_drops, kCounter, "Packets of connections migrating in, dropped before the commit.")

/// Counters of one shard: written by the owner, read by the control thread.
struct CtShardCounters {
#define FERRY_CT_COUNTER_FIELD(field, kind, description) uint64_t field;
    FERRY_FOREACH_CT_COUNTER(FERRY_CT_COUNTER_FIELD)
#undef FERRY_CT_COUNTER_FIELD
    uint64_t by_tcp_state[static_cast<size_t>(TcpState::kCount)];  // live TCP connections
    uint64_t udp;                                                  // live UDP pseudo-connections
    uint64_t icmp;                                                 // live ICMP echo
    uint64_t other;
};

/// One counter of CtShardCounters: its name, kind, description and field.
struct CtCounterInfo {
    std::string_view name;
    CounterKind kind;
    std::string_view description;
    uint64_t CtShardCounters::*field;
};

inline constexpr CtCounterInfo kCtCounters[] = {
#define FERRY_CT_COUNTER_INFO(field, kind, description) \
    {#field, CounterKind::kind, description, &CtShardCounters::field},
    FERRY_FOREACH_CT_COUNTER(FERRY_CT_COUNTER_INFO)
#undef FERRY_CT_COUNTER_INFO
};

/// The tuple ct looks a packet up with: its own 5-tuple, or for an ICMP error the tuple of the
/// connection it concerns in the error's own direction. Used to pick the owner worker.
/// Reads headers only (frame and len as for ConntrackShard::process). Context: fast path.
/// @return false for packets ct cannot key (not IP, non-first fragment of TCP/UDP, ICMP that is
///         neither echo nor a recognised error)
bool ct_packet_tuple(const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                     const FlowKey& key, uint16_t zone, CtTuple* out, bool* is_icmp_error);

class ConntrackShard {
public:
    /// A shard for up to `capacity` connections, for worker `worker` of `n_workers` (NAT ports
    /// are chosen so that reply tuples hash to this worker). zones and timeouts are shared and
    /// must outlive the shard. Context: control (setup). @return nullptr on bad capacity/memory.
    static std::unique_ptr<ConntrackShard> create(uint32_t capacity, uint16_t worker,
                                                  uint16_t n_workers, CtZoneTable* zones,
                                                  const CtTimeouts* timeouts);

    /// Tracks one packet: looks up (and with commit creates) its connection, updates state,
    /// applies NAT to the frame and the key when asked, and sets key->ct_state (always with
    /// +trk), ct_zone and ct_mark. Context: fast path, owner.
    /// @param frame, len  the Ethernet frame, writable (NAT): frame holds at least every header
    ///                    parse_frame read (a multi-segment mbuf's first segment), len is the
    ///                    whole frame's length. Only headers are read and written (NAT patches
    ///                    checksums incrementally), except for the checksum check, which needs
    ///                    the transport checksum's verdict in rx_csum when layout.segmented
    ///                    (ct_checksum_mbuf.h)
    /// @param now_ms      the owner's clock
    /// @param keyed       the tuple and bulk-lookup hit computed for the packet just before
    ///                    (may be null: the packet is keyed and looked up here)
    /// @param st          the packet's tracking so far (may be null); updated
    /// @param rx_csum     what the port's offload found about the checksums (CtRxCsum); a
    ///                    packet with a bad one is +inv and changes nothing, as in Linux
    CtVerdict process(uint8_t* frame, uint32_t len, const PacketLayout& layout, FlowKey* key,
                      const CtParams& p, uint64_t now_ms, const CtKeyed* keyed = nullptr,
                      CtPacketState* st = nullptr, uint8_t rx_csum = kCsumUnknown);

    /// Removes up to `budget` slots' worth of expired connections. Context: fast path, owner.
    /// @return connections removed
    uint32_t expire(uint64_t now_ms, uint32_t budget);

    /// Removes one connection (flush, migration retire), keeping counts right. Context: owner,
    /// or control while the owner is paused.
    void remove(uint32_t index);

    /// Installs a connection another ferryd (or an earlier run) tracked: tuples, state, NAT
    /// binding, marks, counters and ports as in `from`, expiring remaining_ms from now. This
    /// shard must be the owner of from.tuple[0]. When the reply tuple hashes to another worker
    /// the redirect notice is queued, as a commit queues it. Counts the zone. Placement flags
    /// of `from` (kCtfForeignReply, kCtfRedirect) are ignored. Context: owner, or control while
    /// the owner is paused.
    /// @return the entry index, or kCtNone when either tuple is already tracked here or the
    ///         table has no room (nothing changed)
    uint32_t install(const CtEntry& from, uint64_t now_ms, uint64_t remaining_ms,
                     bool dormant = false) {
        return install(from, ct_tuple_hash(from.tuple[0]), ct_tuple_hash(from.tuple[1]), now_ms,
                       remaining_ms, dormant);
    }
    /// install() with each tuple's ct_tuple_hash given (a caller that computed them to prefetch).
    uint32_t install(const CtEntry& from, uint32_t orig_hash, uint32_t reply_hash, uint64_t now_ms,
                     uint64_t remaining_ms, bool dormant = false);
    /// Makes a dormant connection (install(..., dormant)) a live one, expiring remaining_ms
    /// from now. Context: owner, or control while the owner is paused.
    void activate(uint32_t index, uint64_t now_ms, uint64_t remaining_ms);

    /// Ends a connection on behalf of payload inspection: from now on its packets get
    /// kBlocked, and it is forgotten once none has been seen for a TIME_WAIT timeout.
    /// Context: owner.
    void block(uint32_t index, uint64_t now_ms);

    /// Called with the index of every connection removed (expiry, flush, reopen), before its
    /// slot can be reused: per-connection state kept elsewhere (payload inspection streams)
    /// follows. Context: setup, before the worker runs.
    using RemoveHook = void (*)(void* ctx, uint32_t index);
    void set_remove_hook(RemoveHook fn, void* ctx) {
        remove_hook_ = fn;
        remove_ctx_ = ctx;
    }

    /// Installs or removes a redirect entry as another shard's notice asks. Context: owner.
    void apply_notice(const CtNotice& n, uint64_t now_ms);
    /// Notices waiting for delivery; the worker sends them and calls clear_notices().
    const CtNotice* notices() const { return notices_; }
    unsigned notice_count() const { return n_notices_; }
    void clear_notices() { n_notices_ = 0; }
    void count_lost_notice();
    /// The worker a kRedirect verdict names. Context: owner, right after process().
    uint16_t redirect_to() const { return redirect_to_; }

    CtTable& table() { return *table_; }
    const CtTable& table() const { return *table_; }
    const CtShardCounters& counters() const { return counters_; }
    uint16_t worker() const { return worker_; }

private:
    ConntrackShard() = default;
    struct Segment;
    CtVerdict commit_new(uint8_t* frame, uint32_t len, const PacketLayout& layout, FlowKey* key,
                         const CtTuple& t, const CtParams& p, uint64_t now_ms, const void* tcp,
                         CtPacketState* st);
    bool notify(CtNotice::Kind kind, const CtTuple& tuple);
    void translate(const CtEntry& e, unsigned dir, bool related, uint8_t* frame, uint32_t len,
                   const PacketLayout& layout, FlowKey* key);
    CtVerdict process_tracked(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                              FlowKey* key, const CtParams& p, CtPacketState* st);
    bool choose_nat(const CtTuple& orig, const NatSpec& spec, CtTuple* reply, bool* foreign);
    void account(const CtEntry& e, int delta);
    uint64_t timeout_ms(const CtEntry& e) const;
    uint64_t redirect_ttl_ms(uint8_t proto) const;
    uint64_t block_ttl_ms() const;

    std::unique_ptr<CtTable> table_;
    CtZoneTable* zones_ = nullptr;
    const CtTimeouts* timeouts_ = nullptr;
    uint16_t worker_ = 0;
    uint16_t n_workers_ = 1;
    uint16_t redirect_to_ = 0;
    unsigned n_notices_ = 0;
    CtNotice notices_[kCtNoticeSlots];
    CtShardCounters counters_{};
    RemoveHook remove_hook_ = nullptr;
    void* remove_ctx_ = nullptr;
};

/// Applies a connection's translation to a packet that matched tuple[dir] of entry e: the
/// packet is rewritten to carry the reverse of tuple[1 - dir], and key follows. Context: fast
/// path. @return false when the frame is too short (nothing changed)
bool ct_apply_nat(const CtEntry& e, unsigned dir, uint8_t* frame, uint32_t len,
                  const PacketLayout& layout, FlowKey* key);

}  // namespace ferry
