// libFuzzer target for ConntrackShard: an input is a short sequence of frames, each tracked by
// one or two shards (capacity 1024, workers sharing one zone table) with ct parameters the input
// chooses, on a clock the input advances, with expiry and the delivery of redirect notices
// between frames, as a worker loop does. Besides the sanitizers' checks it traps when:
//  - the per-packet contract breaks: ct_state without +trk, not exactly one of new/est/rel/inv,
//    +rpl alone, the wrong ct_zone, a refused or redirected packet whose frame changed, a second
//    redirect from the owner;
//  - a translated frame no longer parses the same way, its key does not follow the frame, bytes
//    outside the IP packet changed, or a checksum that verified before no longer does;
//  - the books disagree: table size vs the counters by kind, those counters vs the entries
//    themselves, created - removed vs the live connections, the shared zone counts vs the live
//    connections of each zone, an entry that its own tuples do not find;
//  - (while no notice was lost) a connection lives on a worker that does not own its original
//    tuple, or a binding's reply tuple hashes elsewhere without being flagged foreign.
//
// Input: byte 0 sets up the run (bit 0: two workers; bits 1-3: zone 3's limit, 0 = none; bit 4:
// zone 2 liberal). Then chunks of [ctl][dt][len_hi][len_lo][len bytes of frame]; ctl bits 0-1
// zone, bit 2 commit, bits 3-4 nat (off, src, dst, plain nat), bit 5 set_mark, bits 6-7 the
// expiry budget after the frame; dt advances the clock by dt * 37 ms. Run through scripts/fuzz.
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <vector>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/packet_parse.h"
#include "tests/fuzz/frame_checks.h"

namespace {

using ferry::ConntrackShard;
using ferry::CtEntry;
using ferry::CtTuple;
using ferry::CtVerdict;

using namespace ferry::fuzz;
using ferry::load_be16;

constexpr uint32_t kCapacity = 1024;
constexpr uint16_t kZonesUsed = 4;
constexpr unsigned kMaxFrames = 64;
constexpr uint32_t kBudgets[4] = {0, 8, 64, kCapacity};

// ---- The shards of one run ---------------------------------------------------------------------

/// Timeouts short enough that the input's clock steps (up to 9.4 s) expire connections.
ferry::CtTimeouts short_timeouts() {
    ferry::CtTimeouts t;
    const uint32_t tcp[] = {3, 5, 5, 4, 20, 5, 4, 3, 5, 2};
    std::memcpy(t.tcp, tcp, sizeof(t.tcp));
    t.udp_first = 2;
    t.udp_stream = 6;
    t.icmp = 3;
    t.other = 7;
    return t;
}

ferry::NatSpec make_spec(ferry::NatSpec::Kind kind, uint8_t version) {
    ferry::NatSpec s{};
    s.kind = kind;
    s.ip_version = version;
    if (version == 4) {
        const uint8_t lo4[4] = {203, 0, 113, 5};
        const uint8_t hi4[4] = {203, 0, 113, 6};
        const uint8_t backend4[4] = {172, 16, 0, 9};
        std::memcpy(s.addr_min, kind == ferry::NatSpec::kSrc ? lo4 : backend4, 4);
        std::memcpy(s.addr_max, kind == ferry::NatSpec::kSrc ? hi4 : backend4, 4);
    } else {
        const uint8_t lo6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
        const uint8_t backend6[16] = {0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
        std::memcpy(s.addr_min, kind == ferry::NatSpec::kSrc ? lo6 : backend6, 16);
        std::memcpy(s.addr_max, kind == ferry::NatSpec::kSrc ? lo6 : backend6, 16);
        if (kind == ferry::NatSpec::kSrc) s.addr_max[15] = 6;
    }
    // SNAT: 2 addresses x 8 ports, small enough to run out; DNAT: one address and port, so
    // with two workers half the bindings have a foreign reply.
    s.port_min = kind == ferry::NatSpec::kSrc ? 1024 : 8080;
    s.port_max = kind == ferry::NatSpec::kSrc ? 1031 : 8080;
    return s;
}

struct Run {
    std::unique_ptr<ConntrackShard> shard[2];
    uint16_t n_workers = 1;
};

bool notices_lost(const Run& r) {
    for (uint16_t w = 0; w < r.n_workers; ++w) {
        if (r.shard[w]->counters().notices_lost != 0) return true;
    }
    return false;
}

/// The books of every shard against its entries, and the zone counts against all shards.
void check_books(const Run& r, const ferry::CtZoneTable& zones) {
    uint64_t zone_live[kZonesUsed] = {};
    const bool exact_owner = !notices_lost(r);
    for (uint16_t w = 0; w < r.n_workers; ++w) {
        const ConntrackShard& s = *r.shard[w];
        const ferry::CtTable& t = s.table();
        const ferry::CtShardCounters& c = s.counters();
        uint64_t by_state[static_cast<size_t>(ferry::TcpState::kCount)] = {};
        uint64_t udp = 0, icmp = 0, other = 0, redirects = 0, live = 0;
        for (uint32_t i = t.next_live(0); i != ferry::kCtNone; i = t.next_live(i + 1)) {
            ++live;
            const CtEntry& e = t.entry(i);
            const ferry::CtRef r0 = t.lookup(e.tuple[0]);
            check(r0.index == i && r0.dir == 0);
            const ferry::CtRef r1 = t.lookup(e.tuple[1]);
            check(r1.index == i && (r1.dir == 1 || e.tuple[0] == e.tuple[1]));
            check(e.tuple[0].zone == e.tuple[1].zone && e.tuple[0].proto == e.tuple[1].proto &&
                  e.tuple[0].ip_version == e.tuple[1].ip_version);
            if (e.flags & ferry::kCtfRedirect) {
                ++redirects;
                check(e.tuple[0] == e.tuple[1]);
                check(e.redirect_owner != w && e.redirect_owner < r.n_workers);
                continue;
            }
            check(e.tuple[0].zone < kZonesUsed);
            ++zone_live[e.tuple[0].zone];
            const uint8_t proto = e.tuple[0].proto;
            if (proto == IPPROTO_TCP) {
                check(e.tcp.state < ferry::TcpState::kCount);
                ++by_state[static_cast<size_t>(e.tcp.state)];
            } else if (proto == IPPROTO_UDP) {
                ++udp;
            } else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
                ++icmp;
            } else {
                ++other;
            }
            const bool nat = (e.flags & (ferry::kCtfSrcNat | ferry::kCtfDstNat)) != 0;
            if (!nat) check(e.tuple[1] == ferry::ct_tuple_reverse(e.tuple[0]));
            if (!nat) check(!(e.flags & ferry::kCtfForeignReply));
            if (exact_owner) {
                check(ferry::ct_owner(e.tuple[0], r.n_workers) == w);
                const bool foreign = (e.flags & ferry::kCtfForeignReply) != 0;
                check((ferry::ct_owner(e.tuple[1], r.n_workers) == w) != foreign);
            }
        }
        check(live == t.size());
        check(c.redirects == redirects && c.udp == udp && c.icmp == icmp && c.other == other);
        for (size_t k = 0; k < std::size(by_state); ++k) check(c.by_tcp_state[k] == by_state[k]);
        check(c.created - c.removed == live - redirects);
    }
    for (uint16_t z = 0; z < kZonesUsed; ++z) check(zones.zones[z].count.load() == zone_live[z]);
}

/// What process() did to one frame, checked against the frame as it was.
void check_packet(const std::vector<uint8_t>& before, const std::vector<uint8_t>& after,
                  const ferry::FlowKey& parsed, const ferry::PacketLayout& layout,
                  const ferry::FlowKey& key, const ferry::CtParams& p, CtVerdict v) {
    check(key.ct_zone == p.zone);
    const uint8_t s = key.ct_state;
    check(s & ferry::kCtTracked);
    if (v == CtVerdict::kRedirect) {
        check(s == ferry::kCtTracked);
    } else {
        const uint8_t kind =
            s & (ferry::kCtNew | ferry::kCtEstablished | ferry::kCtRelated | ferry::kCtInvalid);
        check(kind != 0 && (kind & (kind - 1)) == 0);
        check(!(s & ferry::kCtReply) || !(s & ferry::kCtNew));
    }
    if (v != CtVerdict::kContinue) check(after == before);
    if (v == CtVerdict::kLimit || v == CtVerdict::kFull) check(s & ferry::kCtNew);
    if (after == before) return;

    // Translated: same layout, key follows the frame, nothing outside the IP packet touched,
    // valid checksums stay valid.
    check(parsed.ip_version != 0 && p.nat);
    const auto len = static_cast<uint32_t>(after.size());
    ferry::FlowKey now;
    ferry::PacketLayout now_layout;
    check(!ferry::parse_frame(after.data(), len, 3, &now, &now_layout));
    check(now_layout.l3_offset == layout.l3_offset && now_layout.l4_offset == layout.l4_offset);
    check(now.ip_version == parsed.ip_version && now.ip_proto == parsed.ip_proto);
    check(std::memcmp(now.ip_src, key.ip_src, 16) == 0);
    check(std::memcmp(now.ip_dst, key.ip_dst, 16) == 0);
    check(now.l4_src == key.l4_src && now.l4_dst == key.l4_dst);
    const size_t end = ip_end(before.data(), parsed, layout);
    check(std::memcmp(after.data(), before.data(), layout.l3_offset) == 0);
    check(std::memcmp(after.data() + end, before.data() + end, after.size() - end) == 0);
    const Validity was = validity(before.data(), parsed, layout);
    const Validity is = validity(after.data(), now, layout);
    check(!was.ip_header || is.ip_header);
    check(!was.l4 || is.l4);
}

/// Hands every queued notice to the shard it names, as the workers' hand-off rings do.
void deliver_notices(Run& r, uint64_t now_ms) {
    for (uint16_t w = 0; w < r.n_workers; ++w) {
        ConntrackShard& s = *r.shard[w];
        for (unsigned i = 0; i < s.notice_count(); ++i) {
            const ferry::CtNotice& n = s.notices()[i];
            check(n.kind == ferry::CtNotice::kRedirectAdd ||
                  n.kind == ferry::CtNotice::kRedirectDel);
            check(n.owner == w && n.to < r.n_workers && n.to != w);
            check(ferry::ct_owner(n.tuple, r.n_workers) == n.to);
            r.shard[n.to]->apply_notice(n, now_ms);
        }
        s.clear_notices();
    }
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    static const ferry::CtTimeouts timeouts = short_timeouts();
    // The zone table is 1.5 MiB: kept, and the zones this target uses are reset per input.
    static const auto zones = std::make_unique<ferry::CtZoneTable>();
    static const ferry::NatSpec specs[2][2] = {
        {make_spec(ferry::NatSpec::kSrc, 4), make_spec(ferry::NatSpec::kDst, 4)},
        {make_spec(ferry::NatSpec::kSrc, 6), make_spec(ferry::NatSpec::kDst, 6)}};
    static const ferry::NatSpec plain{};
    for (uint16_t z = 0; z < kZonesUsed; ++z) {
        zones->zones[z].count = 0;
        zones->zones[z].limit_drops = 0;
        zones->zones[z].limit = 0;
        zones->zones[z].liberal = 0;
    }
    const uint8_t setup = data[0];
    zones->zones[3].limit = (setup >> 1) & 7;
    zones->zones[2].liberal = (setup >> 4) & 1;

    Run r;
    r.n_workers = (setup & 1) ? 2 : 1;
    for (uint16_t w = 0; w < r.n_workers; ++w) {
        r.shard[w] = ConntrackShard::create(kCapacity, w, r.n_workers, zones.get(), &timeouts);
        check(r.shard[w] != nullptr);
    }

    uint64_t now_ms = 1;
    size_t pos = 1;
    for (unsigned frame_no = 0; frame_no < kMaxFrames && pos + 4 <= size; ++frame_no) {
        const uint8_t ctl = data[pos];
        now_ms += uint64_t{data[pos + 1]} * 37;
        size_t len = load_be16(data + pos + 2);
        pos += 4;
        if (len > size - pos) len = size - pos;
        // Exactly the frame's bytes, so that a sanitizer sees any read past its end.
        std::vector<uint8_t> frame(data + pos, data + pos + len);
        pos += len;

        ferry::FlowKey key;
        ferry::PacketLayout layout;
        if (!ferry::parse_frame(frame.data(), static_cast<uint32_t>(len), 3, &key, &layout)) {
            const ferry::FlowKey parsed = key;
            ferry::CtParams p;
            p.zone = ctl & 3;
            p.commit = (ctl & 4) != 0;
            const unsigned nat_mode = (ctl >> 3) & 3;
            p.nat = nat_mode != 0;
            if (nat_mode == 1 || nat_mode == 2) {
                p.spec = &specs[key.ip_version == 6 ? 1 : 0][nat_mode - 1];
            } else if (nat_mode == 3) {
                p.spec = &plain;
            }
            p.set_mark = (ctl & 0x20) != 0;
            p.mark = ctl;

            // The worker that owns the packet's tuple, as the dispatch stage picks it.
            CtTuple t;
            bool is_error = false;
            uint16_t w = 0;
            if (ferry::ct_packet_tuple(frame.data(), static_cast<uint32_t>(len), layout, key,
                                       p.zone, &t, &is_error)) {
                w = ferry::ct_owner(t, r.n_workers);
            }
            const std::vector<uint8_t> before = frame;
            CtVerdict v = r.shard[w]->process(frame.data(), static_cast<uint32_t>(len), layout,
                                              &key, p, now_ms);
            check_packet(before, frame, parsed, layout, key, p, v);
            if (v == CtVerdict::kRedirect) {
                const uint16_t to = r.shard[w]->redirect_to();
                check(to < r.n_workers && to != w);
                key = parsed;
                v = r.shard[to]->process(frame.data(), static_cast<uint32_t>(len), layout, &key, p,
                                         now_ms);
                check(v != CtVerdict::kRedirect);
                check_packet(before, frame, parsed, layout, key, p, v);
            }
        }
        deliver_notices(r, now_ms);
        check_books(r, *zones);

        for (uint16_t w = 0; w < r.n_workers; ++w) r.shard[w]->expire(now_ms, kBudgets[ctl >> 6]);
        deliver_notices(r, now_ms);
        check_books(r, *zones);
    }
    return 0;
}
