// What one connection costs a migration's encoding and decoding (docs/migration-stream.md):
// write_stream and read_stream of N synthetic established connections (synthetic_connections.h),
// the steps an in-band migration reports as `encode` and `decode` (migrate.status in_band).
// Each iteration starts from fresh buffers, as a migration does.
//
//   build/benchmarks/bench_migration_stream --benchmark_repetitions=3

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "synthetic_connections.h"

namespace {

void bm_write_stream(benchmark::State& state) {
    const auto n = static_cast<size_t>(state.range(0));
    const ferry::MigrationState s = ferry_bench::synthetic_connections(n, "vm1");
    for (auto _ : state) {
        std::vector<uint8_t> bytes = ferry::write_stream(s);
        benchmark::DoNotOptimize(bytes.data());
    }
    state.counters["connections"] =
        benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

void bm_read_stream(benchmark::State& state) {
    const auto n = static_cast<size_t>(state.range(0));
    const std::vector<uint8_t> bytes =
        ferry::write_stream(ferry_bench::synthetic_connections(n, "vm1"));
    for (auto _ : state) {
        auto s = ferry::read_stream(bytes.data(), bytes.size());
        if (!s || s->connections.size() != n) state.SkipWithError("the stream did not read back");
        benchmark::DoNotOptimize(s);
    }
    state.counters["connections"] =
        benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(bm_write_stream)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_read_stream)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
