// parse_frame cost per packet over a burst of 32 frames, the size a worker receives at once. The
// mix is what a vswitch port typically sees: mostly IPv4 TCP/UDP, some IPv6, a share of VLAN and
// QinQ, a few ARP. Reported as per_pkt (seconds per frame, so "12n" is 12 ns).
//
//   ninja -C build-parse benchmarks/bench_parse && ./build-parse/benchmarks/bench_parse
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/packet_parse.h"
#include "dataplane/packet_parse_inline.h"

namespace {

using Bytes = std::vector<uint8_t>;

constexpr size_t kBurst = 32;

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

/// Ethernet header with optional tags (0 = absent) and an ethertype. Context: setup only.
Bytes eth(uint16_t ethertype, uint16_t outer_vid = 0, uint16_t inner_vid = 0) {
    Bytes b = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};
    if (outer_vid != 0) {
        put16(b, inner_vid != 0 ? 0x88a8 : 0x8100);
        put16(b, outer_vid);
    }
    if (inner_vid != 0) {
        put16(b, 0x8100);
        put16(b, inner_vid);
    }
    put16(b, ethertype);
    return b;
}

/// A TCP (proto 6) or UDP (17) header followed by payload_len bytes.
Bytes l4(uint8_t proto, uint16_t sport, uint16_t dport, size_t payload_len) {
    Bytes b;
    put16(b, sport);
    put16(b, dport);
    if (proto == 6) {
        b.insert(b.end(), {0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0});
    } else {
        put16(b, static_cast<uint16_t>(8 + payload_len));
        put16(b, 0);
    }
    b.resize(b.size() + payload_len, 0x5a);
    return b;
}

Bytes ipv4_frame(uint16_t vid, uint8_t proto, uint16_t sport, uint16_t dport, size_t payload) {
    Bytes f = eth(0x0800, vid);
    const Bytes seg = l4(proto, sport, dport, payload);
    f.insert(f.end(), {0x45, 0});
    put16(f, static_cast<uint16_t>(20 + seg.size()));
    f.insert(f.end(), {0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 1, 2});
    f.insert(f.end(), seg.begin(), seg.end());
    if (f.size() < 60) f.resize(60, 0);  // Ethernet minimum, as the NIC delivers it
    return f;
}

Bytes ipv6_frame(uint16_t outer_vid, uint16_t inner_vid, uint8_t proto, uint16_t sport,
                 uint16_t dport, size_t payload) {
    Bytes f = eth(0x86dd, outer_vid, inner_vid);
    const Bytes seg = l4(proto, sport, dport, payload);
    f.insert(f.end(), {0x60, 0, 0, 0});
    put16(f, static_cast<uint16_t>(seg.size()));
    f.insert(f.end(), {proto, 64});
    for (int i = 0; i < 2; ++i) {
        f.insert(f.end(), {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
        f.push_back(static_cast<uint8_t>(i + 1));
    }
    f.insert(f.end(), seg.begin(), seg.end());
    return f;
}

Bytes arp_frame(uint16_t vid) {
    Bytes f = eth(0x0806, vid);
    f.resize(60, 0);
    return f;
}

/// The benchmark burst: 14 IPv4 TCP, 8 IPv4 UDP, 6 IPv6, 2 QinQ IPv6, 2 ARP; 12 of them tagged.
std::vector<Bytes> make_burst() {
    std::vector<Bytes> frames;
    for (uint16_t i = 0; i < 14; ++i) {
        frames.push_back(ipv4_frame(i % 3 == 0 ? 100 : 0, 6, 40000 + i, 443, i % 2 ? 0 : 1400));
    }
    for (uint16_t i = 0; i < 8; ++i) {
        frames.push_back(ipv4_frame(i % 2 ? 200 : 0, 17, 5000 + i, 53, 64));
    }
    for (uint16_t i = 0; i < 6; ++i) {
        frames.push_back(ipv6_frame(i % 3 == 0 ? 300 : 0, 0, i % 2 ? 17 : 6, 50000 + i, 22, 100));
    }
    frames.push_back(ipv6_frame(10, 20, 6, 1234, 80, 200));
    frames.push_back(ipv6_frame(10, 21, 17, 1234, 4789, 200));
    frames.push_back(arp_frame(0));
    frames.push_back(arp_frame(100));
    // Interleave so that the branch predictor does not see the kinds in runs.
    std::vector<Bytes> mixed;
    for (size_t stride = 0; stride < 4; ++stride) {
        for (size_t i = stride; i < frames.size(); i += 4) mixed.push_back(frames[i]);
    }
    return mixed;
}

/// Ends a burst benchmark: fails it if any frame was dropped, and reports items and the time
/// per packet.
void report_burst(benchmark::State& state, size_t drops) {
    if (drops != 0) state.SkipWithError("a benchmark frame was dropped");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBurst));
    state.counters["per_pkt"] = benchmark::Counter(
        kBurst, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void bm_parse_burst(benchmark::State& state) {
    const std::vector<Bytes> frames = make_burst();
    if (frames.size() != kBurst) {
        state.SkipWithError("burst is not 32 frames");
        return;
    }
    std::array<const uint8_t*, kBurst> data;
    std::array<uint32_t, kBurst> len;
    for (size_t i = 0; i < kBurst; ++i) {
        data[i] = frames[i].data();
        len[i] = static_cast<uint32_t>(frames[i].size());
    }
    alignas(64) std::array<ferry::FlowKey, kBurst> keys;
    std::array<ferry::PacketLayout, kBurst> layouts;
    size_t drops = 0;
    for (auto _ : state) {
        for (size_t i = 0; i < kBurst; ++i) {
            drops += ferry::parse_frame(data[i], len[i], static_cast<uint16_t>(i & 3), &keys[i],
                                        &layouts[i])
                         .has_value();
        }
        benchmark::DoNotOptimize(keys.data());
        benchmark::DoNotOptimize(layouts.data());
        benchmark::ClobberMemory();
    }
    report_burst(state, drops);
}
BENCHMARK(bm_parse_burst);

/// The same burst checked without filling keys (parse_frame_as<false>, inline): what the
/// pipeline does when table 0's rules read in_port only (Classifier::in_port_only).
void bm_check_burst(benchmark::State& state) {
    const std::vector<Bytes> frames = make_burst();
    std::array<const uint8_t*, kBurst> data;
    std::array<uint32_t, kBurst> len;
    for (size_t i = 0; i < kBurst; ++i) {
        data[i] = frames[i].data();
        len[i] = static_cast<uint32_t>(frames[i].size());
    }
    std::array<ferry::PacketLayout, kBurst> layouts;
    size_t drops = 0;
    for (auto _ : state) {
        for (size_t i = 0; i < kBurst; ++i) {
            drops += ferry::parse_frame_as<false>(data[i], len[i], len[i], 0, nullptr, &layouts[i])
                         .has_value();
        }
        benchmark::DoNotOptimize(layouts.data());
        benchmark::ClobberMemory();
    }
    report_burst(state, drops);
}
BENCHMARK(bm_check_burst);

}  // namespace

BENCHMARK_MAIN();
