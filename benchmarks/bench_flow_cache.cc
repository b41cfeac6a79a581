// FlowCache::lookup_bulk cost per packet, in batches of 32 as a worker calls it. Reported as
// per_pkt (seconds per key, so "12n" is 12 ns) and hit_ratio.
//
//   bm_hits/N      N distinct flows in a cache of the next power of two >= 1.25 N entries, looked
//                  up in random order. Flows whose bucket overflowed while filling stay misses;
//                  hit_ratio shows how few.
//   bm_misses*     1M flows through a 64k-entry cache: mostly misses. _insert also inserts every
//                  miss, which is the worker's miss path minus the classifier.
//
// Keys are read straight from a precomputed stream (flows in random order); the next burst's keys
// are prefetched, since a worker's parsed burst sits in L1 when it looks it up.
//
//   ninja -C build-fc benchmarks/bench_flow_cache && ./build-fc/benchmarks/bench_flow_cache
#include <benchmark/benchmark.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/flow_cache.h"
#include "dataplane/rule.h"

namespace {

using ferry::CompiledRule;
using ferry::FlowCache;
using ferry::FlowKey;

constexpr unsigned kBurst = 32;
constexpr uint64_t kGeneration = 1;
constexpr uint8_t kTable = 0;

/// n distinct IPv4 TCP/UDP flow keys with random addresses and ports. Context: setup.
std::vector<FlowKey> make_flows(uint32_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<FlowKey> flows(n);
    for (uint32_t i = 0; i < n; ++i) {
        FlowKey& k = flows[i];
        const uint64_t r = rng();
        k.in_port = static_cast<uint16_t>(r & 3);
        k.vlan = ferry::kNoVlan;
        k.ethertype = 0x0800;
        k.ip_proto = (r >> 2) & 1 ? 6 : 17;
        k.ip_version = 4;
        k.l4_src = static_cast<uint16_t>(r >> 8);
        k.l4_dst = static_cast<uint16_t>(r >> 24);
        const uint32_t dst = static_cast<uint32_t>(rng());
        std::memcpy(k.ip_src, &i, 4);  // makes every key distinct
        std::memcpy(k.ip_dst, &dst, 4);
    }
    return flows;
}

/// Keys in the order the benchmark looks them up: a random permutation of the flows, repeated
/// (each in a new order) until at least min_len keys, a multiple of kBurst; then one more burst,
/// a copy of the first, so the last burst's prefetch of the next stays inside the vector.
std::vector<FlowKey> make_stream(const std::vector<FlowKey>& flows, size_t min_len, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint32_t> order(flows.size());
    std::vector<FlowKey> stream;
    const size_t len = (std::max(min_len, flows.size()) + kBurst - 1) / kBurst * kBurst;
    stream.reserve(len + kBurst);
    while (stream.size() < len) {
        for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        for (uint32_t i = 0; i < order.size() && stream.size() < len; ++i)
            stream.push_back(flows[order[i]]);
    }
    for (unsigned i = 0; i < kBurst; ++i) stream.push_back(stream[i]);
    return stream;
}

/// Stands for the parser: the burst after `keys` is in L1 when its turn comes.
void prefetch_next_burst(const FlowKey* keys) {
    for (unsigned i = kBurst; i < 2 * kBurst; ++i) __builtin_prefetch(&keys[i]);
}

void report(benchmark::State& state, uint64_t hits) {
    const double keys = static_cast<double>(state.iterations()) * kBurst;
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBurst));
    state.counters["per_pkt"] = benchmark::Counter(
        kBurst, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["hit_ratio"] = static_cast<double>(hits) / keys;
}

void bm_hits(benchmark::State& state) {
    const auto n_flows = static_cast<uint32_t>(state.range(0));
    const std::vector<FlowKey> flows = make_flows(n_flows, 1);
    const std::vector<FlowKey> stream = make_stream(flows, 65536, 2);
    static CompiledRule rule{};
    auto fc = FlowCache::create(std::bit_ceil(n_flows + n_flows / 4));
    if (!fc) {
        state.SkipWithError("cannot allocate the cache");
        return;
    }
    for (const FlowKey& k : flows) fc->insert(k, kTable, kGeneration, &rule);
    state.counters["capacity"] = fc->capacity();

    const CompiledRule* out[kBurst];
    size_t pos = 0;
    uint64_t hits = 0;
    for (auto _ : state) {
        prefetch_next_burst(&stream[pos]);
        hits += std::popcount(fc->lookup_bulk(&stream[pos], kBurst, kTable, kGeneration, out));
        benchmark::DoNotOptimize(out);
        pos += kBurst;
        if (pos + kBurst == stream.size()) pos = 0;
    }
    report(state, hits);
}
BENCHMARK(bm_hits)->Arg(1000)->Arg(100000)->Arg(1000000);

/// 1M flows through 64k entries. insert_misses: also insert each miss, as the worker does.
void run_misses(benchmark::State& state, bool insert_misses) {
    const std::vector<FlowKey> flows = make_flows(1000000, 3);
    const std::vector<FlowKey> stream = make_stream(flows, 0, 4);
    static CompiledRule rule{};
    auto fc = FlowCache::create(65536);
    for (size_t i = 0; i < 65536; ++i) fc->insert(stream[i], kTable, kGeneration, &rule);

    const CompiledRule* out[kBurst];
    size_t pos = 0;
    uint64_t hits = 0;
    for (auto _ : state) {
        const FlowKey* keys = &stream[pos];
        prefetch_next_burst(keys);
        const uint64_t hit = fc->lookup_bulk(keys, kBurst, kTable, kGeneration, out);
        hits += std::popcount(hit);
        if (insert_misses) {
            for (uint64_t miss = ~hit & ((1ULL << kBurst) - 1); miss != 0; miss &= miss - 1)
                fc->insert(keys[std::countr_zero(miss)], kTable, kGeneration, &rule);
        }
        benchmark::DoNotOptimize(out);
        pos += kBurst;
        if (pos + kBurst == stream.size()) pos = 0;
    }
    report(state, hits);
}

void bm_misses_lookup(benchmark::State& state) {
    run_misses(state, false);
}
void bm_misses_insert(benchmark::State& state) {
    run_misses(state, true);
}
BENCHMARK(bm_misses_lookup);
BENCHMARK(bm_misses_insert);

}  // namespace

BENCHMARK_MAIN();
