// What rule changes cost a worker while it forwards: the worker's rule resolution (the flow
// cache, then the classifier for the misses, as dataplane/pipeline.cc resolve() does it) runs
// on one cpu while another thread builds and publishes a new classifier snapshot RATE times a
// second, as ferryd's control thread does for rule.add / rule.del (one rule added or removed per
// change, published with an atomic pointer swap, the old snapshot freed once the worker has
// moved on). On a 2-core host this is the only way to see the worker's side alone: in the PVP
// loop the traffic generator shares the control thread's cpu.
//
//   BM_ResolveUnderChurn/<rules>/<rate>/<rest>
//     rules 0: port-forward (2 rules) and a resident never-matching rule of the changing rules'
//              mask (IPv4 /24): two masks, looked up directly in the classifier
//     rules 1: the same plus 4 never-matching rules of other masks (6 masks: through the flow
//              cache, whose entries each change leaves valid unless it touches their flow)
//     rate:    rule changes per second (0 = none)
//     rest:    ns per packet of other work per burst (0, or 130: the rest of a ferryd worker's
//              per-packet work at about 7 Mpps in the PVP loop), so that flows come back as
//              often as they do in the switch; with it, items_per_second with and without
//              changes compare as the switch's throughputs would.
//   1,000 flows in random order, bursts of 32; items = packets. changes_per_s is what the
//   churn thread achieved.
//
//   ninja -C build benchmarks/bench_rule_churn && build/benchmarks/bench_rule_churn
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "dataplane/classifier.h"
#include "dataplane/flow_cache.h"
#include "dataplane/rule.h"

namespace {

using ferry::Classifier;
using ferry::CompiledRule;
using ferry::FlowCache;
using ferry::FlowKey;

constexpr unsigned kBurst = 32;
constexpr uint32_t kFlows = 1000;
constexpr int kWorkerCpu = 1;
constexpr int kChurnCpu = 0;

void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % static_cast<int>(std::thread::hardware_concurrency()), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

CompiledRule base_rule(uint32_t index, int32_t priority) {
    CompiledRule r{};
    r.index = index;
    r.priority = priority;
    r.n_actions = 1;
    r.actions[0] =
        ferry::Action{.type = ferry::ActionType::kOutput, .flags = 0, .arg16 = 0, .arg32 = 0};
    return r;
}

CompiledRule churn_rule(uint32_t n);

/// in_port 0 -> 1 and back, a resident rule of the changing rules' mask (so that a change adds
/// or removes a rule, never a subtable, and the table without changes has the same shape), plus
/// (cached) four more masks nobody matches.
std::vector<CompiledRule> make_rules(bool cached) {
    std::vector<CompiledRule> rules;
    for (uint16_t p = 0; p < 2; ++p) {
        CompiledRule r = base_rule(1 + p, 10);
        r.value.in_port = p;
        r.mask.in_port = 0xffff;
        r.actions[0].arg16 = static_cast<uint16_t>(1 - p);
        rules.push_back(r);
    }
    CompiledRule resident = churn_rule(2000);
    resident.index = 9;
    rules.push_back(resident);
    if (!cached) return rules;
    for (unsigned n = 1; n < 5; ++n) {
        CompiledRule r = base_rule(10 + n, 20);
        r.value.ethertype = 0x0800;
        r.mask.ethertype = 0xffff;
        const unsigned len = 24 + n;
        const uint8_t net[4] = {192, 0, 2, 0};
        for (unsigned b = 0; b < 4; ++b) {
            const unsigned bits = len > 8 * b ? std::min(8u, len - 8 * b) : 0;
            r.mask.ip_dst[b] = static_cast<uint8_t>(0xff00u >> bits);
            r.value.ip_dst[b] = net[b] & r.mask.ip_dst[b];
        }
        r.actions[0].type = ferry::ActionType::kDrop;
        rules.push_back(r);
    }
    return rules;
}

/// The rule a change adds or removes: an IPv4 /24 destination nobody sends to.
CompiledRule churn_rule(uint32_t n) {
    CompiledRule r = base_rule(100 + (n & 1023), 30);
    r.value.ethertype = 0x0800;
    r.mask.ethertype = 0xffff;
    const uint8_t dst[4] = {203, 0, static_cast<uint8_t>(113 + (n >> 8 & 3)),
                            static_cast<uint8_t>(n)};
    for (unsigned b = 0; b < 3; ++b) {
        r.mask.ip_dst[b] = 0xff;
        r.value.ip_dst[b] = dst[b];
    }
    r.actions[0].type = ferry::ActionType::kDrop;
    return r;
}

std::vector<FlowKey> make_stream(size_t len) {
    std::mt19937_64 rng(7);
    std::vector<FlowKey> flows(kFlows);
    for (uint32_t i = 0; i < kFlows; ++i) {
        FlowKey& k = flows[i];
        k.in_port = static_cast<uint16_t>(i & 1);
        k.vlan = ferry::kNoVlan;
        k.ethertype = 0x0800;
        k.ip_proto = 17;
        k.ip_version = 4;
        k.l4_src = 1000;
        k.l4_dst = 1001;
        const uint8_t dst[4] = {198, 18, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
        std::memcpy(k.ip_dst, dst, 4);
    }
    std::vector<FlowKey> stream(len);
    for (FlowKey& k : stream) k = flows[rng() % kFlows];
    return stream;
}

/// The control thread's part: a new snapshot per change, published with release; old ones
/// freed once the worker reports a later generation (what the RCU grace period ensures).
struct Churn {
    std::atomic<const Classifier*> published{nullptr};
    std::atomic<uint64_t> worker_gen{0};
    std::atomic<bool> stop{false};
    std::vector<CompiledRule> base;
    uint64_t changes = 0;
    std::deque<std::unique_ptr<Classifier>> retired;
    std::unique_ptr<Classifier> current;

    void run(uint32_t rate) {
        pin(kChurnCpu);
        const auto period = std::chrono::nanoseconds(1'000'000'000 / rate);
        auto next = std::chrono::steady_clock::now();
        uint64_t gen = current->generation();
        std::vector<CompiledRule> rules = base;
        bool added = false;
        while (!stop.load(std::memory_order_relaxed)) {
            next += period;
            // One change: add a rule, or remove the one added before; the delta says which, as
            // ferryd's RuleTable says it.
            ferry::RuleDelta delta;
            if (added) {
                delta.removed.push_back(rules.back().index);
                rules.pop_back();
            } else {
                rules.push_back(churn_rule(static_cast<uint32_t>(changes)));
                delta.added.push_back(rules.back());
            }
            added = !added;
            auto next_cls = Classifier::build(rules, ++gen, current.get(), &delta);
            retired.push_back(std::move(current));
            current = std::move(next_cls);
            published.store(current.get(), std::memory_order_release);
            ++changes;
            while (!retired.empty() &&
                   retired.front()->generation() < worker_gen.load(std::memory_order_acquire))
                retired.pop_front();
            // Sleep, as ferryd's control thread waits in epoll: a spinning thread would take
            // execution resources from the worker if the two cpus are hyperthreads of one core.
            std::this_thread::sleep_until(next);
        }
    }
};

void BM_ResolveUnderChurn(benchmark::State& state) {
    const bool cached = state.range(0) != 0;
    const auto rate = static_cast<uint32_t>(state.range(1));
    const auto rest = std::chrono::nanoseconds(state.range(2) * kBurst);
    pin(kWorkerCpu);
    Churn churn;
    churn.base = make_rules(cached);
    churn.current = Classifier::build(churn.base, 1, nullptr, nullptr);
    churn.published.store(churn.current.get());
    auto cache = FlowCache::create(65536);
    const std::vector<FlowKey> stream = make_stream(size_t{1} << 16);
    std::thread control;
    if (rate != 0) control = std::thread([&] { churn.run(rate); });

    const CompiledRule* rules[kBurst];
    const CompiledRule* miss_rules[kBurst];
    FlowKey miss_keys[kBurst];
    uint16_t miss_idx[kBurst];
    size_t pos = 0;
    uint64_t hits = 0, misses = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : state) {
        const FlowKey* keys = &stream[pos];
        pos = pos + kBurst >= stream.size() ? 0 : pos + kBurst;
        // A worker's parsed burst is in L1 when it is resolved: stand for the parser.
        for (unsigned i = 0; i < kBurst; ++i) __builtin_prefetch(&stream[pos + i]);
        const Classifier* cls = churn.published.load(std::memory_order_acquire);
        if (cls->direct(0)) {
            cls->lookup_bulk(keys, kBurst, 0, rules);
        } else {
            const uint64_t gen = cls->generation();
            const uint64_t hit = cache->lookup_bulk(keys, kBurst, 0, gen, rules, cls);
            uint16_t nm = 0;
            for (uint16_t i = 0; i < kBurst; ++i) {
                if (hit & (1ULL << i)) continue;
                miss_keys[nm] = keys[i];
                miss_idx[nm++] = i;
            }
            if (nm != 0) {
                cls->lookup_bulk(miss_keys, nm, 0, miss_rules);
                for (uint16_t j = 0; j < nm; ++j) {
                    rules[miss_idx[j]] = miss_rules[j];
                    cache->insert(miss_keys[j], 0, gen, miss_rules[j]);
                }
            }
            hits += kBurst - nm;
            misses += nm;
        }
        benchmark::DoNotOptimize(rules[kBurst - 1]);
        if (rest.count() != 0) {
            // The rest of the worker's work on the burst (parse, actions, vhost rx/tx): it sets
            // how often a flow comes back, hence how many of its hits find it stale.
            const auto until = std::chrono::steady_clock::now() + rest;
            while (std::chrono::steady_clock::now() < until) {
            }
        }
        // The quiescent point: this worker holds no snapshot older than this one any more.
        churn.worker_gen.store(cls->generation(), std::memory_order_release);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    churn.stop.store(true);
    if (control.joinable()) control.join();
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBurst));
    state.counters["changes_per_s"] = static_cast<double>(churn.changes) / secs;
    if (cached)
        state.counters["revalidated_per_s"] =
            static_cast<double>(cache->stats().revalidated) / secs;
    if (cached)
        state.counters["hit_ratio"] =
            static_cast<double>(hits) / static_cast<double>(std::max<uint64_t>(1, hits + misses));
}
BENCHMARK(BM_ResolveUnderChurn)
    ->Args({0, 0, 0})
    ->Args({0, 10000, 0})
    ->Args({1, 0, 0})
    ->Args({1, 10000, 0})
    ->Args({0, 0, 130})
    ->Args({0, 10000, 130})
    ->Args({1, 0, 130})
    ->Args({1, 10000, 130})
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
