// Connection tracking micro-benchmarks. Connections are IPv4 TCP/UDP 5-tuples with random client
// addresses (10/8) and ephemeral ports, random server addresses and ports; each connection is
// indexed by its original tuple and its reply tuple (the reverse).
//
//   BM_CtLookupBulk/N     CtTable::lookup_bulk over a table holding N live connections (capacity
//                         N, so the index is at its full-pool load), 32 keys per call as a worker
//                         calls it. Keys are existing tuples (either direction) in random order,
//                         read from a precomputed stream and prefetched a burst ahead, as a
//                         worker's parsed burst sits in L1.
//                         per-item time = ns per packet.
//   BM_CtInsertErase      CtTable::insert of a new connection plus erase of the oldest, in a table
//                         of 1M capacity kept at 50% full (the steady state of connection churn).
//                         items = inserts, so items_per_second = connections set up per second.
//
//   ninja -C build benchmarks/bench_conntrack && build/benchmarks/bench_conntrack
//   (add --benchmark_filter=BM_Ct --benchmark_min_time=0.2 for a quick run)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/conntrack/ct_table.h"
#include "dataplane/conntrack/ct_tuple.h"

namespace {

using ferry::CtRef;
using ferry::CtTable;
using ferry::CtTuple;

constexpr unsigned kBurst = 32;

/// A random IPv4 TCP or UDP original-direction tuple: client in 10/8 on an ephemeral port, server
/// anywhere on any port. Context: setup.
CtTuple random_conn(std::mt19937_64& rng) {
    CtTuple t{};
    const uint64_t r = rng();
    const uint32_t client = 0x0a000000u | static_cast<uint32_t>(r & 0xffffff);  // host order
    const uint32_t server = static_cast<uint32_t>(r >> 32);
    const uint8_t src[4] = {static_cast<uint8_t>(client >> 24), static_cast<uint8_t>(client >> 16),
                            static_cast<uint8_t>(client >> 8), static_cast<uint8_t>(client)};
    std::memcpy(t.src, src, 4);
    std::memcpy(t.dst, &server, 4);
    const uint64_t p = rng();
    t.sport = static_cast<uint16_t>(32768 + (p & 0x7fff));
    t.dport = static_cast<uint16_t>(p >> 16);
    t.proto = (p >> 32) & 1 ? 6 : 17;
    t.ip_version = 4;
    return t;
}

/// A table of the given capacity holding n random connections; their original tuples go to
/// *origs. Tuples that collide with an existing one are redrawn. Context: setup.
std::unique_ptr<CtTable> make_table(uint32_t capacity, uint32_t n, uint64_t seed,
                                    std::vector<CtTuple>* origs) {
    auto table = CtTable::create(capacity);
    if (!table) return nullptr;
    std::mt19937_64 rng(seed);
    origs->clear();
    while (origs->size() < n) {
        const CtTuple t = random_conn(rng);
        if (table->insert(t, ferry::ct_tuple_reverse(t)) != ferry::kCtNone) origs->push_back(t);
    }
    return table;
}

/// A filled table and its lookup stream, built once per N and kept across the benchmark's runs.
struct LookupSetup {
    std::unique_ptr<CtTable> table;
    std::vector<CtTuple> stream;  // random existing tuples, a multiple of kBurst long
};

const LookupSetup& lookup_setup(uint32_t n) {
    static std::map<uint32_t, LookupSetup> cache;
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
    LookupSetup s;
    std::vector<CtTuple> origs;
    s.table = make_table(n, n, n, &origs);
    // At least 4 lookups per connection and 1M keys, so the order of lookups does not repeat
    // within a run; the loop prefetches each burst's keys one burst ahead.
    const size_t len = std::max<size_t>(size_t{4} * n, size_t{1} << 20) / kBurst * kBurst;
    std::mt19937_64 rng(n + 1);
    s.stream.resize(len);
    for (auto& k : s.stream) {
        const uint64_t r = rng();
        const CtTuple& o = origs[r % n];
        k = (r >> 63) != 0 ? ferry::ct_tuple_reverse(o) : o;
    }
    return cache.emplace(n, std::move(s)).first->second;
}

void BM_CtLookupBulk(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    const LookupSetup& s = lookup_setup(n);
    if (!s.table) {
        state.SkipWithError("CtTable::create failed");
        return;
    }
    CtRef out[kBurst];
    size_t pos = 0;
    uint64_t found = 0;
    for (auto _ : state) {
        // The next burst's keys: a worker's parsed burst sits in L1 when it looks it up.
        const size_t ahead = pos + kBurst == s.stream.size() ? 0 : pos + kBurst;
        for (unsigned i = 0; i < kBurst * sizeof(CtTuple); i += 64)
            __builtin_prefetch(reinterpret_cast<const char*>(&s.stream[ahead]) + i, 0, 3);
        s.table->lookup_bulk(&s.stream[pos], kBurst, out);
        for (const CtRef& r : out) found += r.found();
        benchmark::DoNotOptimize(out);
        pos += kBurst;
        if (pos == s.stream.size()) pos = 0;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBurst);
    state.counters["hit_ratio"] =
        static_cast<double>(found) / static_cast<double>(state.iterations() * kBurst);
    state.counters["MB"] = static_cast<double>(s.table->memory_bytes()) / 1e6;
}
BENCHMARK(BM_CtLookupBulk)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_CtInsertErase(benchmark::State& state) {
    constexpr uint32_t kCapacity = 1u << 20;
    constexpr uint32_t kLive = kCapacity / 2;
    // New connections come from a pool of 2 * kLive distinct tuples used round-robin: a tuple is
    // erased kLive steps after its insertion, long before it comes round again.
    constexpr uint32_t kPool = 2 * kLive;
    static std::vector<CtTuple> pool;
    if (pool.empty()) {
        std::vector<CtTuple> origs;
        // Distinctness is checked by a table big enough to hold them all.
        if (!make_table(kPool, kPool, 99, &origs)) {
            state.SkipWithError("CtTable::create failed");
            return;
        }
        pool = std::move(origs);
    }
    auto table = CtTable::create(kCapacity);
    if (!table) {
        state.SkipWithError("CtTable::create failed");
        return;
    }
    std::vector<uint32_t> fifo(kLive);  // entry indices in insertion order
    uint32_t next = 0;                  // next pool tuple to insert
    for (uint32_t i = 0; i < kLive; ++i, ++next)
        fifo[i] = table->insert(pool[next], ferry::ct_tuple_reverse(pool[next]));
    uint32_t oldest = 0;
    uint64_t refused = 0;
    for (auto _ : state) {
        const CtTuple& t = pool[next];
        next = next + 1 == kPool ? 0 : next + 1;
        const uint32_t idx = table->insert(t, ferry::ct_tuple_reverse(t));
        refused += idx == ferry::kCtNone;
        table->erase(fifo[oldest]);
        fifo[oldest] = idx;
        oldest = oldest + 1 == kLive ? 0 : oldest + 1;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    state.counters["refused"] = static_cast<double>(refused);
    state.counters["live"] = table->size();
}
BENCHMARK(BM_CtInsertErase);

}  // namespace

BENCHMARK_MAIN();
