// Classifier lookup cost per packet, over batches of 32 keys (a worker's rx burst), for
// {1, 100, 10000} rules spread over {1, 4, 16, 32} subtables (distinct masks) in one table.
// Reported as per_pkt (seconds per key, so "25n" is 25 ns).
//   bm_bulk_hit     lookup_bulk, every key matches some rule (the flow-cache-miss path)
//   bm_single_hit   the same keys through lookup() one by one: what lookup_bulk must beat
//   bm_bulk_miss    lookup_bulk, no key matches: every subtable is probed, nothing prunes
//   bm_single_miss  the same through lookup()
// Rule priorities are random, so a hit prunes a random share of the remaining subtables.
// On a shared machine run with repetitions and read the per_pkt of the "_min" rows:
//
//   ninja -C build-cls benchmarks/bench_classifier
//   ./build-cls/benchmarks/bench_classifier --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/classifier.h"

namespace {

using ferry::Classifier;
using ferry::CompiledRule;
using ferry::FlowKey;

constexpr unsigned kBatch = 32;
constexpr unsigned kKeys = 1024;  // keys cycled through; 64 KiB, like a few bursts in flight

void set_prefix(uint8_t* bytes, unsigned n, unsigned len) {
    for (unsigned i = 0; i < n; ++i) {
        const unsigned bits = len > 8 * i ? std::min(8u, len - 8 * i) : 0;
        bytes[i] = bits == 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits));
    }
}

/// Mask number s (0..31), all distinct: an ip_dst prefix of /25../32 plus one of four field sets
/// an ACL or a route table would use. Context: setup only.
FlowKey make_mask(unsigned s) {
    FlowKey m;
    std::memset(&m, 0, sizeof(m));
    set_prefix(m.ip_dst, 4, 32 - s % 8);
    m.ethertype = 0xffff;
    switch (s / 8) {
        case 0:
            break;
        case 1:
            m.ip_proto = 0xff, m.l4_dst = 0xffff;
            break;
        case 2:
            set_prefix(m.ip_src, 4, 24);
            break;
        default:
            m.in_port = 0xffff, m.ip_proto = 0xff, m.l4_src = 0xff00;
            break;
    }
    return m;
}

/// A random IPv4 TCP/UDP key: addresses and ports uniformly random. Context: setup only.
FlowKey random_key(std::mt19937& rng) {
    FlowKey k;
    std::memset(&k, 0, sizeof(k));
    k.in_port = static_cast<uint16_t>(rng() % 16);
    k.vlan = ferry::kNoVlan;
    k.ethertype = 0x0800;
    k.ip_version = 4;
    k.ip_proto = rng() % 2 == 0 ? 6 : 17;
    k.l4_src = static_cast<uint16_t>(rng());
    k.l4_dst = static_cast<uint16_t>(rng());
    const uint32_t s = rng(), d = rng();
    std::memcpy(k.ip_src, &s, 4);
    std::memcpy(k.ip_dst, &d, 4);
    return k;
}

struct Setup {
    std::unique_ptr<Classifier> classifier;
    std::vector<FlowKey> keys;
};

/// n_rules rules round-robin over n_masks masks, random priorities; kKeys keys that each match
/// a random rule (hit) or, with hit false, random keys that match none. Context: setup only.
Setup make_setup(unsigned n_rules, unsigned n_masks, bool hit) {
    std::mt19937 rng(n_rules * 64 + n_masks);
    std::vector<CompiledRule> rules(n_rules);
    for (unsigned i = 0; i < n_rules; ++i) {
        CompiledRule& r = rules[i];
        std::memset(&r, 0, sizeof(r));
        r.mask = make_mask(i % n_masks);
        const FlowKey k = random_key(rng);
        auto* v = reinterpret_cast<uint8_t*>(&r.value);
        const auto* kb = reinterpret_cast<const uint8_t*>(&k);
        const auto* m = reinterpret_cast<const uint8_t*>(&r.mask);
        for (size_t b = 0; b < sizeof(FlowKey); ++b) v[b] = kb[b] & m[b];
        r.index = i;
        r.priority = static_cast<int32_t>(rng() % 1024);
        r.n_actions = 1;
        r.actions[0] = ferry::Action{ferry::ActionType::kOutput, 0, 1, 0};
    }
    Setup s;
    s.classifier = Classifier::build(rules, 1);
    s.keys.resize(kKeys);
    for (FlowKey& key : s.keys) {
        key = random_key(rng);
        if (!hit) continue;
        const CompiledRule& r = rules[rng() % n_rules];
        auto* kb = reinterpret_cast<uint8_t*>(&key);
        const auto* v = reinterpret_cast<const uint8_t*>(&r.value);
        const auto* m = reinterpret_cast<const uint8_t*>(&r.mask);
        for (size_t b = 0; b < sizeof(FlowKey); ++b) kb[b] = (kb[b] & ~m[b]) | v[b];
    }
    return s;
}

void report(benchmark::State& state, const Setup& s, unsigned hits, unsigned looked_up) {
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBatch);
    state.counters["per_pkt"] = benchmark::Counter(
        kBatch, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["hit_ratio"] = looked_up == 0 ? 0.0 : static_cast<double>(hits) / looked_up;
    state.counters["subtables"] = static_cast<double>(s.classifier->subtable_count(0));
}

template <bool kBulk, bool kHit>
void bm_lookup(benchmark::State& state) {
    const auto n_rules = static_cast<unsigned>(state.range(0));
    const auto n_masks = static_cast<unsigned>(state.range(1));
    const Setup s = make_setup(n_rules, n_masks, kHit);
    const CompiledRule* out[kBatch];
    unsigned pos = 0, hits = 0, looked_up = 0;
    for (auto _ : state) {
        const FlowKey* keys = &s.keys[pos];
        if constexpr (kBulk) {
            s.classifier->lookup_bulk(keys, kBatch, 0, out);
        } else {
            for (unsigned i = 0; i < kBatch; ++i) out[i] = s.classifier->lookup(keys[i], 0);
        }
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
        if (looked_up < kKeys) {  // the first pass over the keys is enough for the ratio
            for (unsigned i = 0; i < kBatch; ++i) hits += out[i] != nullptr;
            looked_up += kBatch;
        }
        pos = (pos + kBatch) % kKeys;
    }
    report(state, s, hits, looked_up);
}

/// {rules} x {subtables}, skipping grids with fewer rules than subtables. With repetitions, the
/// "min" aggregate is the one to read on a shared machine: noise only ever adds time.
void grid(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rules", "subtables"});
    b->ComputeStatistics(
        "min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
    for (int64_t rules : {1, 100, 10000})
        for (int64_t masks : {1, 4, 16, 32})
            if (masks <= rules) b->Args({rules, masks});
}

BENCHMARK_TEMPLATE(bm_lookup, true, true)->Name("bm_bulk_hit")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, false, true)->Name("bm_single_hit")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, true, false)->Name("bm_bulk_miss")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, false, false)->Name("bm_single_miss")->Apply(grid);

/// Port forwarding's table: one in_port rule per port (n ports), resolved from the snapshot's
/// port array (Classifier::port_indexed); keys from random ports, the other fields random too.
void bm_port_indexed(benchmark::State& state) {
    const auto n_ports = static_cast<uint16_t>(state.range(0));
    std::mt19937 rng(n_ports);
    std::vector<CompiledRule> rules(n_ports);
    for (uint16_t p = 0; p < n_ports; ++p) {
        CompiledRule& r = rules[p];
        std::memset(&r, 0, sizeof(r));
        r.mask.in_port = 0xffff;
        r.value.in_port = p;
        r.index = p;
        r.n_actions = 1;
        r.actions[0] = ferry::Action{ferry::ActionType::kOutput, 0, 1, 0};
    }
    Setup s;
    s.classifier = Classifier::build(rules, 1);
    if (!s.classifier->port_indexed(0)) {
        state.SkipWithError("table 0 is not port-indexed");
        return;
    }
    s.keys.resize(kKeys);
    for (FlowKey& key : s.keys) {
        key = random_key(rng);
        key.in_port = static_cast<uint16_t>(rng() % n_ports);
    }
    const CompiledRule* out[kBatch];
    unsigned pos = 0;
    for (auto _ : state) {
        s.classifier->lookup_bulk(&s.keys[pos], kBatch, 0, out);
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
        pos = (pos + kBatch) % kKeys;
    }
    report(state, s, kBatch, kBatch);
}
BENCHMARK(bm_port_indexed)->ArgName("ports")->Arg(2)->Arg(64);

}  // namespace

BENCHMARK_MAIN();
