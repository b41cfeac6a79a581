// A tracked connection as its owner worker's shard stores it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dataplane/conntrack/ct_tcp.h"
#include "dataplane/conntrack/ct_tuple.h"

namespace ferry {

inline constexpr uint32_t kCtNone = 0xffffffffu;
inline constexpr uint16_t kCtNoPort = 0xffff;
/// CtEntry::redirect_owner of a connection (not a redirect) installed ahead by a migration that
/// has not committed yet: its packets are dropped until ConntrackShard::activate().
inline constexpr uint16_t kCtDormant = 0xffff;

enum CtEntryFlag : uint8_t {
    kCtfSrcNat = 1 << 0,   // the original direction's source is rewritten
    kCtfDstNat = 1 << 1,   // the original direction's destination is rewritten
    kCtfLiberal = 1 << 2,  // no TCP window checks (the zone's `liberal` option when created)
    kCtfSeenReply = 1 << 3,
    kCtfAssured = 1 << 4,       // UDP: packets seen in both directions more than once
    kCtfForeignReply = 1 << 5,  // NAT: the reply tuple hashes to another worker
    kCtfRedirect = 1 << 6,      // not a connection: packets of tuple[0] belong to worker
                                // `redirect_owner` (the other half of a kCtfForeignReply)
    kCtfBlocked = 1 << 7,       // payload inspection ended it: its packets are dropped
};

/// Per-protocol pseudo-states of UDP and ICMP echo, kept in CtEntry::state when not TCP.
enum class CtOtherState : uint8_t { kFirst, kMultiple };

/// Three cache lines, laid out by use: a UDP or ICMP packet touches the first two (its tuple,
/// the deadline and counters), a TCP packet the third too (its tracking state).
struct alignas(64) CtEntry {
    // tuple[0]: the original direction as first seen. tuple[1]: the tuple reply packets carry,
    // after NAT (so for SNAT its dst is the translated source). A packet matching tuple[d] is
    // rewritten to the reverse of tuple[1 - d] when the entry has NAT.
    CtTuple tuple[2];
    uint64_t expires_ms;  // on the owner's clock; remaining time = expires_ms - now
    uint64_t packets[2];
    uint64_t bytes[2];
    uint32_t mark;
    uint8_t flags;            // CtEntryFlag
    uint8_t other_state;      // CtOtherState for UDP/ICMP
    uint16_t redirect_owner;  // kCtfRedirect entries; kCtDormant on a dormant connection
    // Third line: rarely written per packet.
    uint16_t port[2];       // ferry port the first packet of each direction came in on; kCtNoPort
    int32_t seq_offset[2];  // what a TCP sequence rewrite adds in each direction (0 today)
    TcpConn tcp;            // TCP only
};
static_assert(sizeof(CtEntry) == 192);
static_assert(offsetof(CtEntry, port) == 128, "the per-packet fields fill the first two lines");

}  // namespace ferry
