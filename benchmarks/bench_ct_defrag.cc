// Reassembly for connection tracking (dataplane/conntrack/ct_defrag.h), what a worker pays per
// fragmented datagram before conntrack runs:
//
//   BM_DefragDatagram/F   a UDP datagram in F IPv4 fragments (1,472-byte pieces, as an MTU of
//                         1,500 cuts them): each fragment parsed (parse_frame, ct_frag_parse),
//                         its payload summed, added to the table; then the datagram emitted and
//                         its checksum verdict computed. One datagram in flight at a time
//                         (distinct identifications; fragments from 512 buffers, so they are
//                         not all in L1): the common case of fragments arriving back to back.
//                         items = fragments; per-item time = ns per fragment.
//
//   ninja -C build benchmarks/bench_ct_defrag && build/benchmarks/bench_ct_defrag
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "dataplane/packet_parse.h"

namespace {

using ferry::CtDatagram;
using ferry::CtDefrag;
using ferry::CtDefragLimits;
using ferry::CtFragKey;
using ferry::CtFragment;
using ferry::DropReason;
using ferry::FlowKey;
using ferry::PacketLayout;

constexpr uint32_t kPiece = 1472;  // a 1,500-byte MTU's IPv4 payload, a multiple of 8
constexpr uint32_t kInFlight = 512;

/// The Ethernet frames of the IPv4 fragments of a UDP datagram of `pieces` full pieces
/// (identification 0; the caller sets it). The UDP checksum is left 0 (none).
std::vector<std::vector<uint8_t>> datagram_frames(uint32_t pieces) {
    const uint32_t l4_len = pieces * kPiece;
    std::vector<uint8_t> l4(l4_len, 0x5a);
    l4[0] = 0x13;  // source port 5000
    l4[1] = 0x88;
    l4[2] = 0;  // destination port 53
    l4[3] = 53;
    l4[4] = static_cast<uint8_t>(l4_len >> 8);
    l4[5] = static_cast<uint8_t>(l4_len);
    l4[6] = l4[7] = 0;
    std::vector<std::vector<uint8_t>> out;
    for (uint32_t i = 0; i < pieces; ++i) {
        std::vector<uint8_t> f = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
        const uint32_t total = 20 + kPiece;
        const uint16_t flags =
            static_cast<uint16_t>((i + 1 < pieces ? 0x2000 : 0) | (i * kPiece / 8));
        const uint8_t ip[20] = {0x45,
                                0,
                                static_cast<uint8_t>(total >> 8),
                                static_cast<uint8_t>(total),
                                0,
                                0,
                                static_cast<uint8_t>(flags >> 8),
                                static_cast<uint8_t>(flags),
                                64,
                                17,
                                0,
                                0,
                                10,
                                0,
                                0,
                                1,
                                198,
                                51,
                                100,
                                7};
        f.insert(f.end(), ip, ip + 20);
        const auto at = static_cast<std::ptrdiff_t>(size_t{i} * kPiece);
        f.insert(f.end(), l4.begin() + at, l4.begin() + at + kPiece);
        out.push_back(std::move(f));
    }
    return out;
}

void discard(void*, void*, uint16_t, DropReason) {}

void BM_DefragDatagram(benchmark::State& state) {
    const auto pieces = static_cast<uint32_t>(state.range(0));
    std::vector<std::vector<std::vector<uint8_t>>> datagrams(kInFlight);
    for (uint32_t d = 0; d < kInFlight; ++d) datagrams[d] = datagram_frames(pieces);
    auto table = CtDefrag::create(CtDefragLimits{}, discard, nullptr);
    ferry::CompiledRule rule{};
    uint32_t ident = 0;
    uint64_t emitted = 0;
    for (auto _ : state) {
        auto& frames = datagrams[ident % kInFlight];
        ++ident;
        for (auto& f : frames) {
            f[18] = static_cast<uint8_t>(ident >> 8);
            f[19] = static_cast<uint8_t>(ident);
            FlowKey key;
            PacketLayout layout;
            const auto n = static_cast<uint32_t>(f.size());
            if (ferry::parse_frame(f.data(), n, 1, &key, &layout)) state.SkipWithError("parse");
            CtFragment frag;
            if (ferry::ct_frag_parse(f.data(), n, layout, key, &frag)) state.SkipWithError("frag");
            const uint32_t from = frag.offset == 0 ? frag.l4_at : frag.payload_at;
            const uint64_t sum = ferry::csum_detail::add_bytes(
                f.data() + from, frag.payload_at + frag.length - from, 0);
            CtFragKey k{};
            std::memcpy(k.src, key.ip_src, 16);
            std::memcpy(k.dst, key.ip_dst, 16);
            k.id = frag.id;
            k.in_port = 1;
            k.proto = key.ip_proto;
            k.ip_version = key.ip_version;
            DropReason why;
            table->add(k, frag, sum, f.data(), &rule, 0, 0, &why);
        }
        table->emit([&](const CtDatagram& d) {
            const auto* f0 = static_cast<const uint8_t*>(d.pkts[0]);
            FlowKey key;
            PacketLayout layout;
            ferry::parse_frame(f0, 14 + 20 + kPiece, 1, &key, &layout);
            benchmark::DoNotOptimize(
                ferry::ct_datagram_l4_verdict(f0, layout, key, d.l4_length, d.l4_sum));
            ++emitted;
        });
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * pieces);
    state.counters["emitted"] = static_cast<double>(emitted);
}
BENCHMARK(BM_DefragDatagram)->Arg(2)->Arg(6)->Arg(44);

}  // namespace

BENCHMARK_MAIN();
