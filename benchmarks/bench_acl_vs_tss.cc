// DPDK rte_acl versus our tuple-space-search Classifier on IPv4 5-tuple rules both can express
// (proto, src/dst prefixes /8../32, ports exact, a 2^k range or any), distinct priorities so both
// must return the same rule (counter agree). Args: rules, mask templates (>= TSS subtables).
//   bm_build_{acl,tss}   build the whole set + free it: create+add+build / Classifier::build.
//                        Neither adds a rule to a built structure (rte_acl: reset + re-add +
//                        build), so this is also the cost of ONE rule change. mem_bytes: rte_malloc
//                        heap growth for rte_acl, glibc heap growth for TSS.
//   bm_lookup_tss        Classifier::lookup_bulk, bursts of 32, ~90% of the keys hit
//   bm_lookup_acl        rte_acl_classify (default algorithm), 5-tuples laid out beforehand
//   bm_lookup_acl_avx2   the same with RTE_ACL_CLASSIFY_AVX2 forced
//   bm_lookup_acl_conv   default algorithm, FlowKey -> 5-tuple conversion inside the burst
//   ./build-acl/benchmarks/bench_acl_vs_tss --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line; read the _min rows)
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dataplane/classifier.h"

namespace {

using ferry::Classifier;
using ferry::CompiledRule;
using ferry::FlowKey;

constexpr unsigned kBatch = 32;
constexpr unsigned kKeys = 1024;

struct Tuple {  // the usual ipv4 5-tuple input of rte_acl, network order
    uint8_t proto, pad[3];
    uint32_t src, dst;
    uint16_t sport, dport;
};
RTE_ACL_RULE_DEF(AclRule, 5);

const rte_acl_config& acl_config() {
    static const rte_acl_config cfg = [] {
        rte_acl_config c;
        std::memset(&c, 0, sizeof(c));
        c.num_categories = 1;
        c.num_fields = 5;
        c.defs[0] = {RTE_ACL_FIELD_TYPE_BITMASK, 1, 0, 0, offsetof(Tuple, proto)};
        c.defs[1] = {RTE_ACL_FIELD_TYPE_MASK, 4, 1, 1, offsetof(Tuple, src)};
        c.defs[2] = {RTE_ACL_FIELD_TYPE_MASK, 4, 2, 2, offsetof(Tuple, dst)};
        c.defs[3] = {RTE_ACL_FIELD_TYPE_RANGE, 2, 3, 3, offsetof(Tuple, sport)};
        c.defs[4] = {RTE_ACL_FIELD_TYPE_RANGE, 2, 4, 3, offsetof(Tuple, dport)};
        return c;
    }();
    return cfg;
}

struct Template {  // prefix lengths; 0 = any
    uint8_t src, dst, sport, dport;
};

inline uint32_t prefix_mask(unsigned len, unsigned width) {
    return len == 0 ? 0 : static_cast<uint32_t>(~0ull << (width - len)) & ((1ull << width) - 1);
}

struct Setup {
    std::vector<CompiledRule> rules;
    std::vector<AclRule> acl_rules;
    std::vector<FlowKey> keys;
    std::vector<Tuple> tuples;
    std::unique_ptr<Classifier> tss;
    rte_acl_ctx* acl = nullptr;
    double hit_ratio = 0, agree = 0;
};

Tuple to_tuple(const FlowKey& k) {
    Tuple t{k.ip_proto, {0, 0, 0}, 0, 0, rte_cpu_to_be_16(k.l4_src), rte_cpu_to_be_16(k.l4_dst)};
    std::memcpy(&t.src, k.ip_src, 4);
    std::memcpy(&t.dst, k.ip_dst, 4);
    return t;
}

rte_acl_ctx* acl_build(const std::vector<AclRule>& rules, const char* name) {
    const rte_acl_param p{name, static_cast<int>(rte_socket_id()), RTE_ACL_RULE_SZ(5),
                          static_cast<uint32_t>(rules.size())};
    rte_acl_ctx* ctx = rte_acl_create(&p);
    if (ctx == nullptr ||
        rte_acl_add_rules(ctx, reinterpret_cast<const rte_acl_rule*>(rules.data()),
                          static_cast<uint32_t>(rules.size())) != 0 ||
        rte_acl_build(ctx, &acl_config()) != 0) {
        std::fprintf(stderr, "rte_acl build failed for %s\n", name);
        std::abort();
    }
    return ctx;
}

/// n rules over n_templates masks (skewed: template t drawn ~1/(t+1)), distinct priorities;
/// keys: 90% inside a random rule, 10% uniformly random. Context: setup only.
void generate(Setup& s, unsigned n, unsigned n_templates) {
    std::mt19937 rng(n * 131 + n_templates);
    std::set<uint32_t> seen;
    std::vector<Template> tpl;
    while (tpl.size() < n_templates) {
        const unsigned dp = rng() % 8;  // dport: 4/8 exact, 3/8 range 2^4..2^10, 1/8 any
        const Template t{static_cast<uint8_t>(8 + rng() % 25), static_cast<uint8_t>(8 + rng() % 25),
                         static_cast<uint8_t>(rng() % 4 == 0 ? 16 : 0),
                         static_cast<uint8_t>(dp < 4   ? 16
                                              : dp < 7 ? 6 + rng() % 7
                                                       : 0)};
        uint32_t id;
        std::memcpy(&id, &t, 4);
        if (seen.insert(id).second) tpl.push_back(t);
    }
    std::vector<double> w(n_templates);
    for (unsigned i = 0; i < n_templates; ++i) w[i] = 1.0 / (i + 1);
    std::discrete_distribution<unsigned> pick(w.begin(), w.end());
    std::vector<int32_t> prio(n);
    std::iota(prio.begin(), prio.end(), 1);
    std::shuffle(prio.begin(), prio.end(), rng);

    s.rules.resize(n);
    s.acl_rules.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        const Template& t = tpl[pick(rng)];
        const uint8_t proto = rng() % 2 ? 6 : 17;
        const uint32_t src = rng() & prefix_mask(t.src, 32), dst = rng() & prefix_mask(t.dst, 32);
        const auto sp = static_cast<uint16_t>(rng() & prefix_mask(t.sport, 16));
        const auto dp = static_cast<uint16_t>(rng() & prefix_mask(t.dport, 16));
        CompiledRule& r = s.rules[i];
        std::memset(&r, 0, sizeof(r));
        r.mask.ethertype = 0xffff, r.value.ethertype = 0x0800;
        r.mask.ip_proto = 0xff, r.value.ip_proto = proto;
        const uint32_t srcm = rte_cpu_to_be_32(prefix_mask(t.src, 32));
        const uint32_t dstm = rte_cpu_to_be_32(prefix_mask(t.dst, 32));
        const uint32_t srcv = rte_cpu_to_be_32(src), dstv = rte_cpu_to_be_32(dst);
        std::memcpy(r.mask.ip_src, &srcm, 4), std::memcpy(r.value.ip_src, &srcv, 4);
        std::memcpy(r.mask.ip_dst, &dstm, 4), std::memcpy(r.value.ip_dst, &dstv, 4);
        r.mask.l4_src = static_cast<uint16_t>(prefix_mask(t.sport, 16)), r.value.l4_src = sp;
        r.mask.l4_dst = static_cast<uint16_t>(prefix_mask(t.dport, 16)), r.value.l4_dst = dp;
        r.index = i, r.priority = prio[i], r.n_actions = 1;
        r.actions[0] = ferry::Action{ferry::ActionType::kOutput, 0, 1, 0};

        AclRule& a = s.acl_rules[i];
        std::memset(&a, 0, sizeof(a));
        a.data = {1, prio[i], i + 1};  // category mask, priority, userdata (0 = no match)
        a.field[0].value.u8 = proto, a.field[0].mask_range.u8 = 0xff;
        a.field[1].value.u32 = src, a.field[1].mask_range.u32 = t.src;
        a.field[2].value.u32 = dst, a.field[2].mask_range.u32 = t.dst;
        a.field[3].value.u16 = sp;
        a.field[3].mask_range.u16 = static_cast<uint16_t>(sp | ~prefix_mask(t.sport, 16));
        a.field[4].value.u16 = dp;
        a.field[4].mask_range.u16 = static_cast<uint16_t>(dp | ~prefix_mask(t.dport, 16));
    }
    s.keys.resize(kKeys);
    for (FlowKey& k : s.keys) {
        std::memset(&k, 0, sizeof(k));
        k.vlan = ferry::kNoVlan, k.ethertype = 0x0800, k.ip_version = 4;
        k.ip_proto = rng() % 2 ? 6 : 17;
        k.l4_src = static_cast<uint16_t>(rng()), k.l4_dst = static_cast<uint16_t>(rng());
        const uint32_t a = rng(), b = rng();
        std::memcpy(k.ip_src, &a, 4), std::memcpy(k.ip_dst, &b, 4);
        if (rng() % 10 == 0) continue;
        const CompiledRule& r = s.rules[rng() % n];
        auto* kb = reinterpret_cast<uint8_t*>(&k);
        const auto* v = reinterpret_cast<const uint8_t*>(&r.value);
        const auto* m = reinterpret_cast<const uint8_t*>(&r.mask);
        for (size_t i = 0; i < sizeof(FlowKey); ++i) kb[i] = (kb[i] & ~m[i]) | v[i];
    }
    s.tuples.resize(kKeys);
    std::transform(s.keys.begin(), s.keys.end(), s.tuples.begin(), to_tuple);
}

/// One setup per (rules, templates), built once and shared by the lookup benchmarks; also
/// checks that rte_acl and TSS return the same rule for every key.
std::map<std::pair<unsigned, unsigned>, Setup> g_setups;

Setup& setup(unsigned n, unsigned n_templates) {
    Setup& s = g_setups[{n, n_templates}];
    if (s.acl != nullptr) return s;
    generate(s, n, n_templates);
    s.tss = Classifier::build(s.rules, 1);
    const std::string name = "acl_" + std::to_string(n) + "_" + std::to_string(n_templates);
    s.acl = acl_build(s.acl_rules, name.c_str());
    unsigned hits = 0, same = 0;
    for (unsigned i = 0; i < kKeys; ++i) {
        const auto* data = reinterpret_cast<const uint8_t*>(&s.tuples[i]);
        uint32_t res = 0;
        rte_acl_classify(s.acl, &data, &res, 1, 1);
        const CompiledRule* r = s.tss->lookup(s.keys[i], 0);
        hits += r != nullptr;
        same += (r == nullptr ? 0 : r->index + 1) == res;
    }
    s.hit_ratio = static_cast<double>(hits) / kKeys;
    s.agree = static_cast<double>(same) / kKeys;
    return s;
}

size_t rte_heap_bytes() {
    size_t total = 0;
    for (unsigned i = 0; i < rte_socket_count(); ++i) {
        rte_malloc_socket_stats st;
        if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(i), &st) == 0)
            total += st.heap_allocsz_bytes;
    }
    return total;
}

size_t libc_heap_bytes() {
    return mallinfo2().uordblks + mallinfo2().hblkhd;
}

template <bool kAcl>
void bm_build(benchmark::State& state) {
    const auto n = static_cast<unsigned>(state.range(0));
    Setup& s = setup(n, static_cast<unsigned>(state.range(1)));
    size_t mem = 0;
    for (auto _ : state) {
        if constexpr (kAcl) {
            const size_t before = rte_heap_bytes();
            rte_acl_ctx* ctx = acl_build(s.acl_rules, "acl_build");
            if (mem == 0) mem = rte_heap_bytes() - before;
            rte_acl_free(ctx);
        } else {
            const size_t before = libc_heap_bytes();
            auto c = Classifier::build(s.rules, 2);
            if (mem == 0) mem = libc_heap_bytes() - before;
            benchmark::DoNotOptimize(c.get());
        }
    }
    state.counters["mem_bytes"] = static_cast<double>(mem);
    state.counters["subtables"] = static_cast<double>(s.tss->subtable_count(0));
}

enum Variant { kTss, kAclTuples, kAclAvx2, kAclConvert };

template <Variant kV>
void bm_lookup(benchmark::State& state) {
    Setup& s = setup(static_cast<unsigned>(state.range(0)), static_cast<unsigned>(state.range(1)));
    const CompiledRule* out[kBatch];
    const uint8_t* data[kBatch];
    Tuple conv[kBatch];
    uint32_t res[kBatch];
    unsigned pos = 0;
    for (auto _ : state) {
        if constexpr (kV == kTss) {
            s.tss->lookup_bulk(&s.keys[pos], kBatch, 0, out);
        } else {
            for (unsigned i = 0; i < kBatch; ++i) {
                if constexpr (kV == kAclConvert) conv[i] = to_tuple(s.keys[pos + i]);
                const Tuple* t = kV == kAclConvert ? &conv[i] : &s.tuples[pos + i];
                data[i] = reinterpret_cast<const uint8_t*>(t);
            }
            if constexpr (kV == kAclAvx2)
                rte_acl_classify_alg(s.acl, data, res, kBatch, 1, RTE_ACL_CLASSIFY_AVX2);
            else
                rte_acl_classify(s.acl, data, res, kBatch, 1);
            for (unsigned i = 0; i < kBatch; ++i)
                out[i] = res[i] == 0 ? nullptr : &s.rules[res[i] - 1];
        }
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
        pos = (pos + kBatch) % kKeys;
    }
    state.counters["per_pkt"] = benchmark::Counter(
        kBatch, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["hit_ratio"] = s.hit_ratio;
    state.counters["agree"] = s.agree;
    state.counters["subtables"] = static_cast<double>(s.tss->subtable_count(0));
}

void grid(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rules", "templates"})->Unit(benchmark::kMicrosecond);
    b->ComputeStatistics(
        "min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
    for (int64_t rules : {100, 1000, 10000})
        for (int64_t tpl : {4, 16}) b->Args({rules, tpl});
}

BENCHMARK_TEMPLATE(bm_build, true)->Name("bm_build_acl")->Apply(grid);
BENCHMARK_TEMPLATE(bm_build, false)->Name("bm_build_tss")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, kTss)->Name("bm_lookup_tss")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, kAclTuples)->Name("bm_lookup_acl")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, kAclAvx2)->Name("bm_lookup_acl_avx2")->Apply(grid);
BENCHMARK_TEMPLATE(bm_lookup, kAclConvert)->Name("bm_lookup_acl_conv")->Apply(grid);

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    const std::string prefix = "bench-acl-" + std::to_string(getpid());
    std::vector<std::string> args = {
        "bench_acl_vs_tss", "--no-huge",     "-m",   "512",      "--no-pci",
        "--no-telemetry",   "--file-prefix", prefix, "--lcores", "0@0"};
    std::vector<char*> eal_argv;
    for (std::string& a : args) eal_argv.push_back(a.data());
    if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
        std::fprintf(stderr, "rte_eal_init failed\n");
        return 1;
    }
    const std::filesystem::path run_dir = rte_eal_get_runtime_dir();
    rte_acl_dump(setup(100, 4).acl);  // shows alg= (2 SSE, 4 AVX2, 6 AVX512X16)
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    for (auto& [key, s] : g_setups) rte_acl_free(s.acl);
    rte_eal_cleanup();
    std::error_code ec;
    std::filesystem::remove_all(run_dir, ec);
    return 0;
}
