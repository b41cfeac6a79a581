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
#include "synthetic_connections.h"

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
    const ferry::MigrationState s =
        ferry_bench::synthetic_connections(static_cast<size_t>(n), argv[2]);
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
