// libFuzzer target for the reassembly table of connection tracking (CtDefrag, ct_frag_parse):
// an input is a sequence of frames, each parsed and, when it is a fragment, fed to a small table
// on a clock the input advances, with expiry and emission after each, as a worker loop does.
// Besides the sanitizers' checks it traps when:
//  - a packet is lost or owned twice: every fragment fed is refused, released by the table,
//    or emitted, exactly once (the rest are released by clear() at the end);
//  - the bounds break: more datagrams or fragments held than the limits allow;
//  - an emitted datagram is not whole: its fragments, in the order given, do not cover it from
//    offset 0 without gap or overlap to a last fragment, or are more than a datagram may have,
//    or its transport length disagrees with them.
//
// Input: byte 0 picks the limits (bits 0-1: datagrams 1..4; bits 2-4: fragments per datagram
// 1..8; bits 5-7: fragments held 1..8). Then chunks of [dt][len_hi][len_lo][len bytes of frame];
// dt advances the clock by dt * 17 ms (the timeout is 1 s). Run through scripts/fuzz.
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
using ferry::CtFragAdd;
using ferry::CtFragKey;
using ferry::CtFragment;
using ferry::DropReason;
using ferry::FlowKey;
using ferry::PacketLayout;

/// One frame fed to the table and what became of it.
struct Fed {
    std::vector<uint8_t> frame;
    int fate = 0;  // 0: held (or not a fragment), 1: refused, 2: released, 3: emitted
};

struct Run {
    std::vector<std::unique_ptr<Fed>> fed;
};

void on_release(void* ctx, void* pkt, uint16_t, DropReason) {
    (void)ctx;
    auto* f = static_cast<Fed*>(pkt);
    if (f->fate != 0) __builtin_trap();
    f->fate = 2;
}

/// Checks an emitted datagram and marks its fragments emitted.
void check_datagram(const CtDatagram& d, const CtDefragLimits& lim) {
    if (d.n == 0 || d.n > lim.fragments) __builtin_trap();
    uint32_t next = 0;
    uint32_t l4_skip = 0;
    for (uint32_t i = 0; i < d.n; ++i) {
        auto* f = static_cast<Fed*>(d.pkts[i]);
        if (f->fate != 0) __builtin_trap();
        f->fate = 3;
        FlowKey key;
        PacketLayout layout;
        const auto n = static_cast<uint32_t>(f->frame.size());
        if (ferry::parse_frame(f->frame.data(), n, 0, &key, &layout)) __builtin_trap();
        CtFragment frag;
        if (ferry::ct_frag_parse(f->frame.data(), n, layout, key, &frag)) __builtin_trap();
        if (frag.offset != next) __builtin_trap();  // a gap or an overlap
        if (i == 0) l4_skip = frag.l4_at - frag.payload_at;
        next = frag.offset + frag.length;
        if (frag.more != (i + 1 < d.n)) __builtin_trap();
    }
    if (d.l4_length != next - l4_skip) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    CtDefragLimits lim;
    lim.datagrams = 1 + (data[0] & 3u);
    lim.fragments = 1 + ((data[0] >> 2) & 7u);
    lim.held = 1 + ((data[0] >> 5) & 7u);
    Run run;
    auto table = CtDefrag::create(lim, on_release, &run);
    if (table == nullptr) __builtin_trap();
    uint64_t now = 0;
    size_t pos = 1;
    while (size - pos >= 3) {
        now += uint64_t{data[pos]} * 17;
        const size_t len = size_t{data[pos + 1]} << 8 | data[pos + 2];
        pos += 3;
        if (len > size - pos) break;
        auto fed = std::make_unique<Fed>();
        fed->frame.assign(data + pos, data + pos + len);
        pos += len;
        Fed* f = fed.get();
        run.fed.push_back(std::move(fed));
        FlowKey key;
        PacketLayout layout;
        const auto n = static_cast<uint32_t>(f->frame.size());
        if (ferry::parse_frame(f->frame.data(), n, 1, &key, &layout) || !layout.fragment) {
            f->fate = 1;
            continue;
        }
        CtFragment frag;
        if (ferry::ct_frag_parse(f->frame.data(), n, layout, key, &frag)) {
            f->fate = 1;
            continue;
        }
        const uint32_t from = frag.offset == 0 ? frag.l4_at : frag.payload_at;
        if (from > frag.payload_at + frag.length || frag.payload_at + frag.length > n)
            __builtin_trap();
        const uint64_t sum = ferry::csum_detail::add_bytes(f->frame.data() + from,
                                                           frag.payload_at + frag.length - from, 0);
        CtFragKey k{};
        std::memcpy(k.src, key.ip_src, 16);
        std::memcpy(k.dst, key.ip_dst, 16);
        k.id = frag.id;
        k.in_port = 1;
        k.proto = key.ip_proto;
        k.ip_version = key.ip_version;
        ferry::CompiledRule rule{};
        DropReason why;
        if (table->add(k, frag, sum, f, &rule, 0, now, &why) == CtFragAdd::kRefused) {
            if (f->fate != 0) __builtin_trap();
            f->fate = 1;
        }
        if (table->datagrams() > lim.datagrams || table->fragments() > lim.held) __builtin_trap();
        table->expire(now);
        table->emit([&](const CtDatagram& d) { check_datagram(d, lim); });
    }
    table->clear();
    if (table->datagrams() != 0 || table->fragments() != 0) __builtin_trap();
    for (const auto& f : run.fed)
        if (f->fate == 0) __builtin_trap();
    return 0;
}
