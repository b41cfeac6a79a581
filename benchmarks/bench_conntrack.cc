// Connection tracking micro-benchmarks. Connections are IPv4 TCP/UDP 5-tuples with random client
// addresses (10/8) and ephemeral ports, random server addresses and ports; each connection is
// indexed by its original tuple and its reply tuple (the reverse).
//
//   Those with a second argument `aes` run with either IPv4 tuple hash (dataplane/hash_key.h):
//   aes:0 SipHash-1-3, aes:1 AES-128 (skipped on a CPU without AES-NI), both under fixed keys.
//
//   BM_TupleHashBurst/K   32 IPv4 tuples hashed as the bulk lookup hashes a burst: K 0 the
//                         unkeyed CRC32C of before, 1 SipHash-1-3, 2 AES-128. ns per tuple.
//   BM_CtLookupBulk/N     CtTable::lookup_bulk over a table holding N live connections (capacity
//                         N, so the index is at its full-pool load), 32 keys per call as a worker
//                         calls it. Keys are existing tuples (either direction) in random order,
//                         read from a precomputed stream and prefetched a burst ahead, as a
//                         worker's parsed burst sits in L1.
//                         per-item time = ns per packet.
//   BM_CtInsertErase      CtTable::insert of a new connection plus erase of the oldest, in a table
//                         of 1M capacity kept at 50% full (the steady state of connection churn).
//                         items = inserts, so items_per_second = connections set up per second.
//   BM_ShardNewConnections
//                         ConntrackShard::process with ct(commit) on TCP SYN frames of distinct new
//                         connections: lookup miss, TCP start, zone count, insert. The shard
//                         (capacity 1M) is recreated, untimed, whenever it is full, so the load
//                         runs from empty to full. items_per_second = connections created per
//                         second by one worker.
//   BM_ShardEstablishedLookup/N
//                         ConntrackShard::process on pure ACKs of random connections (either
//                         direction) among N established ones (shard capacity N): lookup hit, TCP
//                         window tracking, counters, deadline. Frames are parsed up front and
//                         prefetched a few packets ahead, as a worker's parsed burst sits in L1.
//                         per-item time = ns per packet.
//   BM_ShardEstablishedBurst/N
//                         the same packets in bursts of 32 as a worker's ct stage runs them: one
//                         bulk lookup for the burst, then process() of each with its hit as hint.
//                         items = packets. Checksums are summed in software (a port without
//                         offload); BM_ShardEstablishedBurstOffload: the port verified them.
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

#include "benchmarks/bench_frames.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_table.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/hash_key.h"
#include "dataplane/packet_parse.h"
#include "tests/unit/ct_collide.h"

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
    static std::map<uint64_t, LookupSetup> cache;  // by N and the hash that placed the tuples
    const uint64_t key = uint64_t{n} << 1 | (ferry::hash_v4_aes() ? 1 : 0);
    auto it = cache.find(key);
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
    return cache.emplace(key, std::move(s)).first->second;
}

/// Sets the IPv4 tuple hash a benchmark runs with, its second argument: 0 SipHash-1-3, 1 AES-128
/// (as ferryd on a CPU with AES-NI). @return false, the benchmark skipped, on a CPU without it.
bool set_v4_hash(benchmark::State& state) {
    const bool aes = state.range(1) != 0;
    if (aes && !ferry::cpu_has_aes()) {
        state.SkipWithError("this CPU has no AES-NI");
        return false;
    }
    ferry::hash_keys_set(ferry::kPublicHashKeys, aes);
    return true;
}

/// A burst of 32 IPv4 tuples hashed as the bulk lookup hashes them. Argument: 0 the unkeyed
/// CRC32C the table used before it was keyed (the reference the keyed hashes are priced
/// against), 1 SipHash-1-3, 2 AES-128. per-item time = ns per tuple.
void BM_TupleHashBurst(benchmark::State& state) {
    const int64_t which = state.range(0);
    if (which == 2 && !ferry::cpu_has_aes()) {
        state.SkipWithError("this CPU has no AES-NI");
        return;
    }
    ferry::hash_keys_set(ferry::kPublicHashKeys, which == 2);
    std::mt19937_64 rng(7);
    std::vector<CtTuple> tuples(1024);
    for (CtTuple& t : tuples) t = random_conn(rng);
    uint32_t out[kBurst];
    size_t pos = 0;
    for (auto _ : state) {
        const CtTuple* k = &tuples[pos];
        if (which == 0) {
            for (unsigned i = 0; i < kBurst; ++i) out[i] = ferry::test::unkeyed_tuple_hash(k[i]);
        } else {
            ferry::ct_tuple_hash_bulk(k, kBurst, out);
        }
        benchmark::DoNotOptimize(out);
        pos = (pos + kBurst) % tuples.size();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBurst);
}
BENCHMARK(BM_TupleHashBurst)->ArgName("crc_sip_aes")->DenseRange(0, 2);

void BM_CtLookupBulk(benchmark::State& state) {
    if (!set_v4_hash(state)) return;
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
BENCHMARK(BM_CtLookupBulk)->ArgNames({"n", "aes"})->ArgsProduct({{1000, 100000, 1000000}, {0, 1}});

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

// ---- ConntrackShard: whole packets through process() ------------------------------------------

constexpr uint32_t kFrameStride = 64;  // bytes reserved per frame: a TCP/IPv4 frame is 54
constexpr uint32_t kTcpFrameLen = 54;  // Ethernet 14 + IPv4 20 + TCP 20, no options, no data
constexpr uint8_t kTcpSyn = 0x02;
constexpr uint8_t kTcpAck = 0x10;

/// Writes a TCP/IPv4 frame of t's direction (kTcpFrameLen bytes) at out, every checksum right
/// (ct verifies them when the port's offload has not). Context: setup.
void write_tcp_frame(uint8_t* out, const CtTuple& t, uint32_t seq, uint32_t ack, uint8_t flags) {
    uint8_t* tcp = ferry::bench::write_tcp_headers(out, t, seq, ack, flags, 5, 0, false);
    uint32_t sum = 6 + 20;  // pseudo-header: protocol and TCP length
    for (int i = 12; i < 20; i += 2) sum += static_cast<uint32_t>(out[14 + i] << 8 | out[15 + i]);
    for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(tcp[i] << 8 | tcp[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    ferry::store_be16(tcp + 16, static_cast<uint16_t>(~sum));
}

/// Frames parsed once: bytes at a fixed stride, with their keys and layouts.
struct FrameSet {
    std::vector<uint8_t> bytes;
    std::vector<ferry::FlowKey> keys;
    std::vector<ferry::PacketLayout> layouts;

    explicit FrameSet(size_t n) : bytes(n * kFrameStride), keys(n), layouts(n) {}
    uint8_t* frame(size_t i) { return bytes.data() + i * kFrameStride; }
    /// Writes frame i and parses it. Context: setup. @return false if it does not parse
    bool set(size_t i, const CtTuple& t, uint32_t seq, uint32_t ack, uint8_t flags) {
        write_tcp_frame(frame(i), t, seq, ack, flags);
        return !ferry::parse_frame(frame(i), kTcpFrameLen, 0, &keys[i], &layouts[i]);
    }
};

/// The i-th of up to 2^24 distinct TCP connections: client 10.x.y.z (from i) on a random
/// ephemeral port, random server address and port. Context: setup.
CtTuple distinct_tcp_conn(uint32_t i, std::mt19937_64& rng) {
    CtTuple t = random_conn(rng);
    const uint32_t client = 0x0a000000u | (i & 0xffffff);
    const uint8_t src[4] = {static_cast<uint8_t>(client >> 24), static_cast<uint8_t>(client >> 16),
                            static_cast<uint8_t>(client >> 8), static_cast<uint8_t>(client)};
    std::memcpy(t.src, src, 4);
    t.proto = 6;
    return t;
}

/// Zones and timeouts a benchmark shard points to; they must outlive it.
struct ShardEnv {
    std::unique_ptr<ferry::CtZoneTable> zones = std::make_unique<ferry::CtZoneTable>();
    ferry::CtTimeouts timeouts;
};

void BM_ShardNewConnections(benchmark::State& state) {
    constexpr uint32_t kCapacity = 1u << 20;
    static std::unique_ptr<FrameSet> syns;
    if (!syns) {
        auto set = std::make_unique<FrameSet>(kCapacity);
        std::mt19937_64 rng(4242);
        // Client addresses follow a random permutation so that consecutive SYNs are unrelated.
        std::vector<uint32_t> order(kCapacity);
        for (uint32_t i = 0; i < kCapacity; ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        for (uint32_t i = 0; i < kCapacity; ++i) {
            if (!set->set(i, distinct_tcp_conn(order[i], rng), static_cast<uint32_t>(rng()), 0,
                          kTcpSyn)) {
                state.SkipWithError("SYN frame does not parse");
                return;
            }
        }
        syns = std::move(set);
    }
    ShardEnv env;
    auto shard = ferry::ConntrackShard::create(kCapacity, 0, 1, env.zones.get(), &env.timeouts);
    if (!shard) {
        state.SkipWithError("ConntrackShard::create failed");
        return;
    }
    ferry::CtParams p;
    p.commit = true;
    uint64_t created = 0;
    uint64_t refused = 0;
    uint32_t i = 0;
    for (auto _ : state) {
        if (i == kCapacity) {
            state.PauseTiming();
            created += shard->counters().created;
            shard.reset();
            env.zones->zones[0].count = 0;
            shard = ferry::ConntrackShard::create(kCapacity, 0, 1, env.zones.get(), &env.timeouts);
            i = 0;
            state.ResumeTiming();
        }
        const ferry::CtVerdict v =
            shard->process(syns->frame(i), kTcpFrameLen, syns->layouts[i], &syns->keys[i], p, 1);
        refused += v != ferry::CtVerdict::kContinue;
        ++i;
    }
    created += shard->counters().created;
    state.SetItemsProcessed(static_cast<int64_t>(created));
    state.counters["refused"] = static_cast<double>(refused);
}
BENCHMARK(BM_ShardNewConnections);

/// A shard holding n established connections and a data frame per connection and direction,
/// built once per n and kept across the benchmark's runs.
struct EstablishedSetup {
    ShardEnv env;
    std::unique_ptr<ferry::ConntrackShard> shard;
    std::unique_ptr<FrameSet> acks;  // 2 * n: orig ACK of connection i at 2i, reply ACK at 2i+1
    std::vector<uint32_t> stream;    // random frame indices
    const char* error = nullptr;
};

EstablishedSetup& established_setup(uint32_t n) {
    static std::map<uint64_t, EstablishedSetup> cache;  // by N and the hash, as lookup_setup
    const uint64_t key = uint64_t{n} << 1 | (ferry::hash_v4_aes() ? 1 : 0);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    EstablishedSetup& s = cache[key];
    s.shard = ferry::ConntrackShard::create(n, 0, 1, s.env.zones.get(), &s.env.timeouts);
    if (!s.shard) {
        s.error = "ConntrackShard::create failed";
        return s;
    }
    s.acks = std::make_unique<FrameSet>(size_t{2} * n);
    std::mt19937_64 rng(n);
    FrameSet scratch(1);
    ferry::CtParams commit;
    commit.commit = true;
    const ferry::CtParams track;
    for (uint32_t i = 0; i < n; ++i) {
        const CtTuple t = distinct_tcp_conn(i, rng);
        const CtTuple r = ferry::ct_tuple_reverse(t);
        const auto c_isn = static_cast<uint32_t>(rng());
        const auto s_isn = static_cast<uint32_t>(rng());
        // The handshake, through the shard.
        const struct {
            const CtTuple* dir;
            uint32_t seq, ack;
            uint8_t flags;
            const ferry::CtParams* p;
        } steps[3] = {{&t, c_isn, 0, kTcpSyn, &commit},
                      {&r, s_isn, c_isn + 1, kTcpSyn | kTcpAck, &track},
                      {&t, c_isn + 1, s_isn + 1, kTcpAck, &track}};
        for (const auto& step : steps) {
            scratch.set(0, *step.dir, step.seq, step.ack, step.flags);
            s.shard->process(scratch.frame(0), kTcpFrameLen, scratch.layouts[0], &scratch.keys[0],
                             *step.p, 1);
        }
        if (!s.acks->set(size_t{2} * i, t, c_isn + 1, s_isn + 1, kTcpAck) ||
            !s.acks->set(size_t{2} * i + 1, r, s_isn + 1, c_isn + 1, kTcpAck)) {
            s.error = "ACK frame does not parse";
            return s;
        }
    }
    const auto est = static_cast<size_t>(ferry::TcpState::kEstablished);
    if (s.shard->counters().by_tcp_state[est] != n) {
        s.error = "not every connection reached ESTABLISHED";
        return s;
    }
    // At least 4 packets per connection and 1M, so the order does not repeat within a run.
    s.stream.resize(std::max<size_t>(size_t{4} * n, size_t{1} << 20));
    for (uint32_t& k : s.stream) k = static_cast<uint32_t>(rng() % (uint64_t{2} * n));
    return s;
}

void BM_ShardEstablishedLookup(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    // The setup is shared by the runs of one n; its keys only change in their ct fields.
    EstablishedSetup& s = established_setup(n);
    if (s.error != nullptr) {
        state.SkipWithError(s.error);
        return;
    }
    constexpr size_t kAhead = 8;  // packets prefetched ahead
    const ferry::CtParams track;
    FrameSet& f = *s.acks;
    const size_t len = s.stream.size();
    size_t pos = 0;
    uint64_t established = 0;
    for (auto _ : state) {
        const uint32_t next = s.stream[pos + kAhead < len ? pos + kAhead : pos + kAhead - len];
        __builtin_prefetch(f.frame(next), 1, 3);
        __builtin_prefetch(&f.keys[next], 1, 3);
        __builtin_prefetch(&f.layouts[next], 0, 3);
        const uint32_t k = s.stream[pos];
        s.shard->process(f.frame(k), kTcpFrameLen, f.layouts[k], &f.keys[k], track, 2);
        established += (f.keys[k].ct_state & ferry::kCtEstablished) != 0;
        pos = pos + 1 == len ? 0 : pos + 1;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    state.counters["est_ratio"] =
        static_cast<double>(established) / static_cast<double>(state.iterations());
    state.counters["MB"] = static_cast<double>(s.shard->table().memory_bytes()) / 1e6;
}
BENCHMARK(BM_ShardEstablishedLookup)->Arg(10000)->Arg(100000)->Arg(1000000);

/// As BM_ShardEstablishedLookup, the way a worker's ct stage runs a burst
/// (dataplane/conntrack/ct_action.cc ct_stage): the 32 packets' tuples, one CtTable::lookup_bulk,
/// then process() of each with its tuple and the bulk hit. rx_csum: what the port's offload says
/// about the checksums (kCsumUnknown: summed in software, as on a port without offload).
void shard_established_burst(benchmark::State& state, uint8_t rx_csum) {
    if (!set_v4_hash(state)) return;
    const auto n = static_cast<uint32_t>(state.range(0));
    EstablishedSetup& s = established_setup(n);
    if (s.error != nullptr) {
        state.SkipWithError(s.error);
        return;
    }
    constexpr unsigned kBurst = 32;
    const ferry::CtParams track;
    FrameSet& f = *s.acks;
    const size_t len = s.stream.size();
    size_t pos = 0;
    uint64_t established = 0;
    CtTuple tuples[kBurst];
    ferry::CtRef refs[kBurst];
    uint32_t which[kBurst];
    // A worker's burst sits in L1 when the ct stage runs: the next burst's frames are
    // prefetched while this one is tracked, as in BM_ShardEstablishedLookup.
    auto prefetch_burst = [&](size_t from) {
        for (unsigned i = 0; i < kBurst; ++i) {
            const uint32_t k = s.stream[(from + i) % len];
            __builtin_prefetch(f.frame(k), 1, 3);
            __builtin_prefetch(&f.keys[k], 1, 3);
            __builtin_prefetch(&f.layouts[k], 0, 3);
        }
    };
    prefetch_burst(0);
    for (auto _ : state) {
        for (unsigned i = 0; i < kBurst; ++i) {
            which[i] = s.stream[pos];
            pos = pos + 1 == len ? 0 : pos + 1;
        }
        prefetch_burst(pos);
        for (unsigned i = 0; i < kBurst; ++i) {
            bool icmp_error;
            ferry::ct_packet_tuple(f.frame(which[i]), kTcpFrameLen, f.layouts[which[i]],
                                   f.keys[which[i]], 0, &tuples[i], &icmp_error);
        }
        s.shard->table().lookup_bulk(tuples, kBurst, refs);
        for (unsigned i = 0; i < kBurst; ++i) {
            const uint32_t k = which[i];
            const ferry::CtKeyed keyed{tuples[i], false, refs[i]};
            s.shard->process(f.frame(k), kTcpFrameLen, f.layouts[k], &f.keys[k], track, 2, &keyed,
                             nullptr, rx_csum);
            established += (f.keys[k].ct_state & ferry::kCtEstablished) != 0;
        }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBurst));
    state.counters["est_ratio"] =
        static_cast<double>(established) / static_cast<double>(state.iterations() * kBurst);
}
void BM_ShardEstablishedBurst(benchmark::State& state) {
    shard_established_burst(state, ferry::kCsumUnknown);
}
BENCHMARK(BM_ShardEstablishedBurst)
    ->ArgNames({"n", "aes"})
    ->ArgsProduct({{10000, 100000, 1000000}, {0, 1}});

/// The same with checksums the port's offload verified (RTE_MBUF_F_RX_*_CKSUM_GOOD).
void BM_ShardEstablishedBurstOffload(benchmark::State& state) {
    shard_established_burst(state, ferry::kCsumIpGood | ferry::kCsumL4Good);
}
BENCHMARK(BM_ShardEstablishedBurstOffload)
    ->ArgNames({"n", "aes"})
    ->ArgsProduct({{10000, 100000, 1000000}, {0, 1}});

}  // namespace

BENCHMARK_MAIN();
