// Settings and shared counts of connection-tracking zones, and the per-state timeouts. The zone
// table is shared by every shard: the control thread writes a zone's limit and options, workers
// read them; each zone's connection count is changed by the shards with an atomic add when a
// connection is created or ends (never per packet), so a zone limit holds across workers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "dataplane/conntrack/ct_tcp.h"

namespace ferry {

inline constexpr uint32_t kCtZones = 65536;
/// Ferry port indices a connection can be counted against (dataplane/port_table.h kPortSlots).
inline constexpr uint16_t kCtPortSlots = 64;

struct CtZone {
    // Control -> workers, relaxed: a worker that sees an old limit for a while is harmless.
    std::atomic<uint32_t> limit{0};  // 0: no limit
    std::atomic<uint8_t> liberal{0};
    // Shards: relaxed atomic add/sub when a connection of the zone is created or removed.
    std::atomic<uint32_t> count{0};
    // Control -> workers, relaxed: the most connections one port may have open (all zones) and
    // still commit one here; 0: no limit. One guest cannot take the zone's whole budget.
    std::atomic<uint32_t> port_limit{0};
    std::atomic<uint64_t> limit_drops{0};  // new connections refused by the limit
};

/// The connections a port opened (the port their first packet came in on), all zones and
/// workers together; changed like CtZone::count, when a connection is created or removed.
struct alignas(64) CtPortCount {  // one line each: workers of different ports do not share
    std::atomic<uint32_t> count{0};
    std::atomic<uint64_t> limit_drops{0};  // new connections refused by a zone's port_limit
};

/// Every zone's settings and counts (about 1.5 MiB). Context: created by control.
struct CtZoneTable {
    CtZone zones[kCtZones];
    CtPortCount ports[kCtPortSlots];
};

/// Seconds a connection lives without packets, by state (Linux's defaults).
struct CtTimeouts {
    uint32_t tcp[static_cast<size_t>(TcpState::kCount)] = {
        30,      // NONE (liberal pick-up before the first reply)
        120,     // SYN_SENT
        120,     // SYN_SENT2
        60,      // SYN_RECV
        432000,  // ESTABLISHED (5 days)
        120,     // FIN_WAIT
        60,      // CLOSE_WAIT
        30,      // LAST_ACK
        120,     // TIME_WAIT
        10,      // CLOSE
    };
    uint32_t udp_first = 30;    // UDP before packets went both ways
    uint32_t udp_stream = 120;  // UDP after a reply
    uint32_t icmp = 30;         // ICMP echo
    uint32_t other = 600;       // other IP protocols
};
static_assert(sizeof(CtTimeouts::tcp) / sizeof(uint32_t) == static_cast<size_t>(TcpState::kCount));

}  // namespace ferry
