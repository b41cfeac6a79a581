// A synthetic migration state of n established TCP connections on one port, what
// make_migration_stream writes and bench_migration_stream encodes and decodes: connections
// 10.(i>>16).(i>>8).(i) : 1024+(i%50000) -> 198.51.100.7:80, zone 0, 5 minutes left, both ports
// the given one.
#pragma once

#include <cstddef>
#include <string>

#include "dataplane/conntrack/ct_entry.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "migrate/migration_state.h"

namespace ferry_bench {

inline ferry::MigrationState synthetic_connections(size_t n, const std::string& port_name) {
    ferry::MigrationState s;
    s.scope = ferry::StreamScope::kSwitch;
    s.stream_id = 1;
    s.ferryd_version = "bench";
    ferry::MigratedPort port;
    port.name = port_name;
    s.ports.push_back(port);
    s.connections.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        ferry::MigratedConnection c;
        c.orig.ip_version = 4;
        c.orig.proto = 6;
        c.orig.src[0] = 10;
        c.orig.src[1] = static_cast<uint8_t>(i >> 16);
        c.orig.src[2] = static_cast<uint8_t>(i >> 8);
        c.orig.src[3] = static_cast<uint8_t>(i);
        c.orig.dst[0] = 198;
        c.orig.dst[1] = 51;
        c.orig.dst[2] = 100;
        c.orig.dst[3] = 7;
        c.orig.sport = static_cast<uint16_t>(1024 + i % 50000);
        c.orig.dport = 80;
        c.reply = ferry::ct_tuple_reverse(c.orig);
        c.tcp_state = ferry::TcpState::kEstablished;
        c.flags = ferry::kCtfSeenReply | ferry::kCtfAssured;
        c.remaining_ms = 300000;
        c.port[0] = c.port[1] = 0;
        for (int d = 0; d < 2; ++d) {
            c.peer[d].end = 1000 + static_cast<uint32_t>(d) * 5000;
            c.peer[d].maxend = c.peer[d].end + 65535;
            c.peer[d].maxwin = 65535;
            c.peer[d].flags = ferry::kTcpPeerMaxAckSet;
            c.packets[d] = 3;
            c.bytes[d] = 180;
        }
        s.connections.push_back(c);
    }
    return s;
}

}  // namespace ferry_bench
