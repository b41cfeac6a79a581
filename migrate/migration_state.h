// What a migration stream carries, as plain values: the reader fills it (the target's shadow
// state, which the workers cannot see) and the writer serialises it. Nothing here points into
// a ferryd's tables: ports are the stream's own numbering, times are remaining durations.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/conntrack/ct_tcp.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/dpi/dpi_engine.h"
#include "migrate/stream_format.h"

namespace ferry {

struct MigratedAddress {
    uint8_t family = 4;  // 4 or 6
    uint8_t prefix_length = 32;
    uint16_t flags = 0;  // kAddrConfigured, kAddrLearned, kAddrLinkLocal
    std::array<uint8_t, 16> address{};
};

struct MigratedPort {
    std::string name;
    std::array<uint8_t, 6> mac{};
    std::vector<MigratedAddress> addresses;
};

struct MigratedMac {
    std::array<uint8_t, 6> mac{};
    uint16_t vlan = 0xffff;  // 0xffff: untagged
    uint16_t port = 0;       // stream port number
    uint32_t age_ms = 0;
};

struct MigratedConnection {
    CtTuple orig{};
    CtTuple reply{};
    TcpState tcp_state = TcpState::kNone;             // TCP connections
    CtOtherState other_state = CtOtherState::kFirst;  // the others
    uint8_t flags = 0;                                // CtEntryFlag, only those in kConnFlagWire
    uint32_t mark = 0;
    uint32_t remaining_ms = 0;
    uint16_t port[2] = {kNoStreamPort, kNoStreamPort};  // stream port numbers
    int32_t seq_offset[2] = {0, 0};
    TcpPeer peer[2] = {};
    uint32_t tcp_retrans = 0;
    uint64_t packets[2] = {0, 0};
    uint64_t bytes[2] = {0, 0};
};

struct MigratedDpi {
    uint32_t connection = 0;  // stream connection number
    DpiStreamState state;     // db_hash is the section's database_hash
};

struct MigrationState {
    StreamScope scope = StreamScope::kSwitch;
    uint64_t stream_id = 0;
    std::string ferryd_version;
    std::string hyperscan_version;
    std::vector<MigratedPort> ports;
    std::vector<MigratedMac> macs;
    std::vector<MigratedConnection> connections;  // in stream order, deltas applied
    // Orig tuples of connections that ended: the writer sends those of connections it also
    // writes (a delta); the reader leaves here the ones that were sent and then ended.
    std::vector<CtTuple> gone;
    uint64_t dpi_hash = 0;
    std::vector<MigratedDpi> dpi;
    std::string rules_json;  // empty: no RULES section
};

}  // namespace ferry
