// Writes a migration stream (docs/migration-stream.md) with N established TCP connections on
// one port, for the blackout benchmark (benchmarks/migration_blackout) to load into a source
// ferryd: connections 10.(i>>16).(i>>8).(i) : 1024+(i%50000) -> 198.51.100.7:80, zone 0,
// 5 minutes left, both ports the given one.
//
//   build/benchmarks/make_migration_stream N PORT FILE
#include <cstdio>
#include <cstdlib>
#include <string>

#include "migrate/stream_writer.h"

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: make_migration_stream N PORT FILE\n");
        return 64;
    }
    const long n = std::strtol(argv[1], nullptr, 10);
    if (n < 0 || n > (1L << 24)) {
        std::fprintf(stderr, "make_migration_stream: N must be 0..16777216\n");
        return 64;
    }
    ferry::MigrationState s;
    s.scope = ferry::StreamScope::kSwitch;
    s.stream_id = 1;
    s.ferryd_version = "bench";
    ferry::MigratedPort port;
    port.name = argv[2];
    s.ports.push_back(port);
    s.connections.reserve(static_cast<size_t>(n));
    for (long i = 0; i < n; ++i) {
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
    const std::vector<uint8_t> bytes = ferry::write_stream(s);
    FILE* f = std::fopen(argv[3], "wb");
    if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() ||
        std::fclose(f) != 0) {
        std::perror(argv[3]);
        return 1;
    }
    std::printf("%zu bytes, %ld connections\n", bytes.size(), n);
    return 0;
}
