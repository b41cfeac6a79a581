// Connection tracking of one shard. The order of work for a packet:
//   1. key it (ct_packet_tuple): 5-tuple, ICMP echo identifier, or an ICMP error's quote;
//   2. look it up; a hit updates the connection (TCP tracking, timeouts, counters) and
//      translates the packet if the connection has NAT and the action says `nat`;
//   3. a miss is +new when the packet may open a connection (a TCP SYN, any UDP, an echo
//      request) and +inv otherwise; with `commit` the connection is created (zone limit, table
//      room, NAT binding) and the packet translated.
// ct_state follows Open vSwitch: +est once the connection has seen a reply, +rpl on packets of
// the reply direction, +rel on ICMP errors about a tracked connection, +inv for packets that
// break the protocol, and +trk always.
#include "dataplane/conntrack/ct_shard.h"

#include <cstring>

#include "dataplane/conntrack/nat_rewrite.h"
#include "dataplane/counters.h"
#include "dataplane/hash_key.h"
#include "dataplane/ip_proto.h"
#include "dataplane/l4_payload.h"

namespace ferry {
namespace {

constexpr uint8_t kTcpFlagRst = 0x04;

bool is_icmp(uint8_t proto) {
    return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

bool is_echo_request(const FlowKey& k) {
    return (k.ip_proto == IPPROTO_ICMP && k.l4_src == kIcmpEchoRequest) ||
           (k.ip_proto == IPPROTO_ICMPV6 && k.l4_src == kIcmpv6EchoRequest);
}

bool is_echo(const FlowKey& k) {
    return is_echo_request(k) || (k.ip_proto == IPPROTO_ICMP && k.l4_src == kIcmpEchoReply) ||
           (k.ip_proto == IPPROTO_ICMPV6 && k.l4_src == kIcmpv6EchoReply);
}

bool is_icmp_error_type(const FlowKey& k) {
    if (k.ip_proto == IPPROTO_ICMP) return k.l4_src == 3 || k.l4_src == 11 || k.l4_src == 12;
    if (k.ip_proto == IPPROTO_ICMPV6) return k.l4_src >= 1 && k.l4_src <= 4;
    return false;
}

/// The segment of a TCP packet, or nullopt when its header is malformed. datagram_l4: the
/// length of a reassembled datagram's segment, whose first fragment this is (0: the packet is
/// whole); the header lies in the first fragment, so only the payload length changes.
std::optional<TcpSegment> tcp_of(const uint8_t* frame, uint32_t len, const PacketLayout& l,
                                 const FlowKey& k, uint32_t datagram_l4) {
    const uint32_t end = ip_end(frame, len, l, k);
    if (l.l4_offset == 0 || end <= l.l4_offset) return std::nullopt;
    std::optional<TcpSegment> seg = tcp_segment_parse(frame + l.l4_offset, end - l.l4_offset);
    if (seg && datagram_l4 > end - l.l4_offset)
        seg->payload_len += datagram_l4 - (end - l.l4_offset);
    return seg;
}

/// Compares the 16-byte addresses a and b as unsigned big-endian numbers.
int addr_cmp(const uint8_t* a, const uint8_t* b) {
    return std::memcmp(a, b, 16);
}

/// a += n (big-endian, over the bytes that matter for the version). Wraps at the top.
void addr_add(uint8_t* a, uint64_t n, uint8_t ip_version) {
    const int last = ip_version == 4 ? 3 : 15;
    for (int i = last; i >= 0 && n != 0; --i) {
        const uint64_t s = a[i] + (n & 0xff);
        a[i] = static_cast<uint8_t>(s);
        n = (n >> 8) + (s >> 8);
    }
}

/// Number of addresses in [lo, hi], saturated at 2^32 (more are never needed to pick one).
uint64_t addr_span(const uint8_t* lo, const uint8_t* hi, uint8_t ip_version) {
    const int last = ip_version == 4 ? 3 : 15;
    // The difference of the two numbers, saturated: only its low 32 bits can matter.
    uint64_t diff = 0;
    int borrow = 0;
    uint64_t high = 0;  // whether any byte above the low 4 differs
    for (int i = last, shift = 0; i >= 0; --i, shift += 8) {
        int d = hi[i] - lo[i] - borrow;
        borrow = d < 0;
        if (d < 0) d += 256;
        if (shift < 32)
            diff |= static_cast<uint64_t>(d) << shift;
        else if (d != 0)
            high = 1;
    }
    if (high) return uint64_t{1} << 32;
    return diff + 1;
}

}  // namespace

bool ct_packet_tuple(const uint8_t* frame, uint32_t len, const PacketLayout& layout,
                     const FlowKey& key, uint16_t zone, CtTuple* out, bool* is_icmp_error) {
    *is_icmp_error = false;
    if (key.ip_version != 4 && key.ip_version != 6) return false;
    std::memset(out, 0, sizeof(*out));
    if (is_icmp(key.ip_proto)) {
        if (layout.l4_offset == 0) return false;
        if (is_icmp_error_type(key)) {
            CtTuple inner;
            if (!icmp_error_inner_tuple(frame, len, layout, key, zone, &inner)) return false;
            // The quote is a packet the error's sender received; the error travels the other
            // way, so the connection's tuple in the error's direction is the quote reversed.
            *out = ct_tuple_reverse(inner);
            *is_icmp_error = true;
            return true;
        }
        if (!is_echo(key)) return false;
        // The identifier lies in the ICMP header's second word, inside the IP packet (not in
        // Ethernet padding; the parser put those 8 bytes in the first segment).
        if (layout.l4_offset + 8u > ip_end(frame, len, layout, key)) return false;
        const uint16_t id = load_be16(frame + layout.l4_offset + 4);
        out->sport = id;
        out->dport = id;
    } else if (key.ip_proto == IPPROTO_TCP || key.ip_proto == IPPROTO_UDP) {
        if (layout.l4_offset == 0) return false;  // no reassembly: later fragments are +inv
        out->sport = key.l4_src;
        out->dport = key.l4_dst;
    }
    std::memcpy(out->src, key.ip_src, 16);
    std::memcpy(out->dst, key.ip_dst, 16);
    out->zone = zone;
    out->proto = key.ip_proto;
    out->ip_version = key.ip_version;
    return true;
}

bool ct_apply_nat(const CtEntry& e, unsigned dir, uint8_t* frame, uint32_t len,
                  const PacketLayout& layout, FlowKey* key) {
    const CtTuple& other = e.tuple[1 - dir];
    NatTarget to;
    std::memcpy(to.src, other.dst, 16);
    std::memcpy(to.dst, other.src, 16);
    to.sport = other.dport;
    to.dport = other.sport;
    if (!nat_rewrite(frame, len, layout, *key, to)) return false;
    std::memcpy(key->ip_src, to.src, 16);
    std::memcpy(key->ip_dst, to.dst, 16);
    if (key->ip_proto == IPPROTO_TCP || key->ip_proto == IPPROTO_UDP) {
        key->l4_src = to.sport;
        key->l4_dst = to.dport;
    }
    return true;
}

std::unique_ptr<ConntrackShard> ConntrackShard::create(uint32_t capacity, uint16_t worker,
                                                       uint16_t n_workers, CtZoneTable* zones,
                                                       const CtTimeouts* timeouts) {
    if (zones == nullptr || timeouts == nullptr || n_workers == 0 || worker >= n_workers)
        return nullptr;
    std::unique_ptr<ConntrackShard> s(new ConntrackShard());
    s->table_ = CtTable::create(capacity);
    if (s->table_ == nullptr) return nullptr;
    s->zones_ = zones;
    s->timeouts_ = timeouts;
    s->worker_ = worker;
    s->n_workers_ = n_workers;
    return s;
}

uint64_t ConntrackShard::timeout_ms(const CtEntry& e) const {
    const uint8_t proto = e.tuple[0].proto;
    uint32_t s;
    if (proto == IPPROTO_TCP)
        s = timeouts_->tcp[static_cast<size_t>(e.tcp.state)];
    else if (proto == IPPROTO_UDP)
        s = (e.flags & kCtfSeenReply) ? timeouts_->udp_stream : timeouts_->udp_first;
    else if (is_icmp(proto))
        s = timeouts_->icmp;
    else
        s = timeouts_->other;
    return uint64_t{s} * 1000;
}

/// Adds delta to the live-connection count of e's kind (and state, for TCP).
void ConntrackShard::account(const CtEntry& e, int delta) {
    const uint8_t proto = e.tuple[0].proto;
    uint64_t* c;
    if (proto == IPPROTO_TCP)
        c = &counters_.by_tcp_state[static_cast<size_t>(e.tcp.state)];
    else if (proto == IPPROTO_UDP)
        c = &counters_.udp;
    else if (is_icmp(proto))
        c = &counters_.icmp;
    else
        c = &counters_.other;
    counter_add(*c, static_cast<uint64_t>(delta));  // -1 wraps to a decrement
}

/// Picks the translated tuple for a new connection: the reply tuple carries the new address
/// and port, must not be in use, and should hash to this worker so both directions stay here.
/// When no free candidate does (a DNAT to one address and port leaves no choice), the first
/// free one is taken and *foreign is set: its replies reach another worker first.
/// @return false when every candidate in the range is taken (nothing changed)
bool ConntrackShard::choose_nat(const CtTuple& orig, const NatSpec& spec, CtTuple* reply,
                                bool* foreign) {
    bool have_fallback = false;
    const bool src = spec.kind == NatSpec::kSrc;
    const bool has_addr = spec.ip_version != 0;
    if (has_addr && spec.ip_version != orig.ip_version) return false;
    // Ports apply to TCP and UDP; for ICMP echo a source range is the identifier's, and a
    // destination keeps the identifier (a port means nothing there).
    const bool has_ports =
        spec.port_max != 0 &&
        (orig.proto == IPPROTO_TCP || orig.proto == IPPROTO_UDP || (is_icmp(orig.proto) && src));
    const uint64_t addrs = has_addr ? addr_span(spec.addr_min, spec.addr_max, spec.ip_version) : 1;
    const uint32_t ports = has_ports ? uint32_t{spec.port_max} - spec.port_min + 1 : 1;
    // Start at a point derived from the connection so that retries of one flow agree, then walk.
    // Its own key: the chosen port is visible outside, and must tell nothing about the table's
    // buckets (ct_tuple_hash) nor let a tenant predict the ports its connections get.
    uint64_t w[5];
    std::memcpy(w, &orig, sizeof(w));
    const auto h = static_cast<uint32_t>(siphash13_words(hash_keys().nat, w));
    const uint64_t first_addr = h % addrs;
    const uint32_t first_port = (h >> 7) % ports;
    // Bounded search: every port of the first address, then the next addresses, never more
    // than kMaxTries candidates on the fast path.
    constexpr uint32_t kMaxTries = 4096;
    uint32_t tries = 0;
    CtTuple t = ct_tuple_reverse(orig);
    for (uint64_t ai = 0; ai < addrs && tries < kMaxTries; ++ai) {
        uint8_t addr[16];
        if (has_addr) {
            std::memcpy(addr, spec.addr_min, 16);
            addr_add(addr, (first_addr + ai) % addrs, spec.ip_version);
            if (addr_cmp(addr, spec.addr_max) > 0) continue;  // wrapped inside a saturated span
            // reply: for SNAT its destination is the new source, for DNAT its source is the new
            // destination.
            std::memcpy(src ? t.dst : t.src, addr, 16);
        }
        for (uint32_t pi = 0; pi < ports && tries < kMaxTries; ++pi, ++tries) {
            if (has_ports) {
                const auto port = static_cast<uint16_t>(spec.port_min + (first_port + pi) % ports);
                if (is_icmp(orig.proto)) {
                    t.sport = port;  // the echo identifier, both directions
                    t.dport = port;
                } else if (src) {
                    t.dport = port;
                } else {
                    t.sport = port;
                }
            }
            const bool mine = ct_owner(t, n_workers_) == worker_;
            if (!table_->lookup(t).found()) {
                if (mine) {
                    *reply = t;
                    *foreign = false;
                    return true;
                }
                if (!have_fallback) {
                    *reply = t;
                    have_fallback = true;
                }
            }
            if (!has_ports) break;
        }
    }
    *foreign = have_fallback;
    return have_fallback;
}

CtVerdict ConntrackShard::commit_new(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                                     FlowKey* key, const CtTuple& t, const CtParams& p,
                                     uint64_t now_ms, const void* tcp_seg, CtPacketState* st) {
    CtZone& zone = zones_->zones[p.zone];
    const uint32_t limit = zone.limit.load(std::memory_order_relaxed);
    // Relaxed: the count is only a budget; no other memory is published through it.
    const uint32_t before = zone.count.fetch_add(1, std::memory_order_relaxed);
    if (limit != 0 && before >= limit) {
        zone.count.fetch_sub(1, std::memory_order_relaxed);
        zone.limit_drops.fetch_add(1, std::memory_order_relaxed);
        counter_add(counters_.limit_drops, 1);
        return CtVerdict::kLimit;
    }
    // The port's share of the budget, counted whether or not the zone limits it (so a limit set
    // later sees the port's real count).
    CtPortCount* port = key->in_port < kCtPortSlots ? &zones_->ports[key->in_port] : nullptr;
    if (port != nullptr) {
        const uint32_t port_limit = zone.port_limit.load(std::memory_order_relaxed);
        const uint32_t had = port->count.fetch_add(1, std::memory_order_relaxed);
        if (port_limit != 0 && had >= port_limit) {
            port->count.fetch_sub(1, std::memory_order_relaxed);
            zone.count.fetch_sub(1, std::memory_order_relaxed);
            port->limit_drops.fetch_add(1, std::memory_order_relaxed);
            counter_add(counters_.limit_drops, 1);
            return CtVerdict::kLimit;
        }
    }
    const auto give_back = [&] {
        zone.count.fetch_sub(1, std::memory_order_relaxed);
        if (port != nullptr) port->count.fetch_sub(1, std::memory_order_relaxed);
    };
    CtTuple reply = ct_tuple_reverse(t);
    const bool bind = p.nat && p.spec != nullptr && p.spec->kind != NatSpec::kNone;
    bool foreign = false;
    if (bind && !choose_nat(t, *p.spec, &reply, &foreign)) {
        give_back();
        counter_add(counters_.nat_exhausted, 1);
        return CtVerdict::kFull;
    }
    if (foreign && n_notices_ == kCtNoticeSlots) {
        // Without its redirect the reply would reach a worker that does not know it.
        give_back();
        counter_add(counters_.notices_lost, 1);
        return CtVerdict::kFull;
    }
    const uint32_t idx = table_->insert(t, reply);
    if (idx == kCtNone) {
        give_back();
        counter_add(counters_.full_drops, 1);
        return CtVerdict::kFull;
    }
    CtEntry& e = table_->entry(idx);
    if (bind) e.flags |= p.spec->kind == NatSpec::kSrc ? kCtfSrcNat : kCtfDstNat;
    if (foreign) {
        e.flags |= kCtfForeignReply;
        counter_add(counters_.foreign_reply, 1);
        notify(CtNotice::kRedirectAdd, reply);
    }
    if (zone.liberal.load(std::memory_order_relaxed)) e.flags |= kCtfLiberal;
    if (p.set_mark) e.mark = p.mark;
    if (t.proto == IPPROTO_TCP) tcp_start(e.tcp, *static_cast<const TcpSegment*>(tcp_seg));
    e.packets[0] = 1;
    e.bytes[0] = len;
    e.port[0] = key->in_port;
    e.port[1] = kCtNoPort;
    e.expires_ms = now_ms + timeout_ms(e);
    account(e, +1);
    counter_add(counters_.created, 1);
    key->ct_mark = e.mark;
    if (bind) ct_apply_nat(e, 0, frame, len, layout, key);
    if (st != nullptr) st->track(idx, p.zone, 0, key->ct_state);
    return CtVerdict::kContinue;
}

CtVerdict ConntrackShard::process(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                                  FlowKey* key, const CtParams& p, uint64_t now_ms,
                                  const CtKeyed* keyed, CtPacketState* st, uint8_t rx_csum) {
    if (st != nullptr && st->index != kCtNone && st->zone == p.zone && table_->live(st->index) &&
        !(table_->entry(st->index).flags & kCtfRedirect))
        return process_tracked(frame, len, layout, key, p, st);
    counter_add(counters_.lookups, 1);
    key->ct_zone = p.zone;
    key->ct_mark = 0;
    key->ct_state = kCtTracked;
    CtTuple t;
    bool icmp_error = false;
    CtRef hint;
    if (keyed != nullptr) {
        t = keyed->tuple;
        icmp_error = keyed->icmp_error;
        hint = keyed->hint;
    } else if (!ct_packet_tuple(frame, len, layout, *key, p.zone, &t, &icmp_error)) {
        key->ct_state |= kCtInvalid;
        counter_add(counters_.invalid, 1);
        return CtVerdict::kContinue;
    }
    // What the endpoint would discard must neither open nor end anything (Linux checks before
    // tracking too). An ICMP error is related only when sent to the quoted packet's source.
    if (!ct_packet_intact(frame, len, layout, *key, rx_csum) ||
        (icmp_error && std::memcmp(key->ip_dst, t.dst, 16) != 0)) {
        key->ct_state |= kCtInvalid;
        counter_add(counters_.invalid, 1);
        return CtVerdict::kContinue;
    }
    // A hit of the burst's bulk lookup stands if the entry still holds the tuple (a reopen by an
    // earlier packet may have replaced it).
    CtRef ref =
        hint.found() && table_->live(hint.index) && table_->entry(hint.index).tuple[hint.dir] == t
            ? hint
            : table_->lookup(t);
    if (ref.found() && !(table_->entry(ref.index).flags & kCtfRedirect) &&
        table_->entry(ref.index).expires_ms <= now_ms) {
        // Past its deadline, which the aging walk has not reached yet: gone, as netfilter's
        // lookup skips an expired entry.
        remove(ref.index);
        ref = CtRef{};
    }
    if (ref.found() && (table_->entry(ref.index).flags & kCtfRedirect)) {
        CtEntry& r = table_->entry(ref.index);
        r.expires_ms = now_ms + redirect_ttl_ms(r.tuple[0].proto);
        redirect_to_ = r.redirect_owner;
        return CtVerdict::kRedirect;
    }
    if (ref.found() && table_->entry(ref.index).redirect_owner == kCtDormant) {
        counter_add(counters_.dormant_drops, 1);
        return CtVerdict::kDormant;
    }
    if (ref.found() && (table_->entry(ref.index).flags & kCtfBlocked)) {
        table_->entry(ref.index).expires_ms = now_ms + block_ttl_ms();
        counter_add(counters_.blocked_drops, 1);
        return CtVerdict::kBlocked;
    }

    if (icmp_error) {
        if (!ref.found()) {
            key->ct_state |= kCtInvalid;
            counter_add(counters_.invalid, 1);
            return CtVerdict::kContinue;
        }
        const CtEntry& e = table_->entry(ref.index);
        key->ct_state |= kCtRelated | (ref.dir == 1 ? kCtReply : 0);
        key->ct_mark = e.mark;
        if (p.nat) translate(e, ref.dir, true, frame, len, layout, key);
        if (st != nullptr) st->track(ref.index, p.zone, ref.dir, key->ct_state);
        return CtVerdict::kContinue;
    }

    std::optional<TcpSegment> seg;
    if (t.proto == IPPROTO_TCP) {
        seg = tcp_of(frame, len, layout, *key, keyed != nullptr ? keyed->l4_length : 0);
        if (!seg) {
            key->ct_state |= kCtInvalid;
            counter_add(counters_.invalid, 1);
            return CtVerdict::kContinue;
        }
    }

    if (ref.found() && is_icmp(t.proto) && is_echo_request(*key) != (ref.dir == 0)) {
        // Echo is keyed by identifier alone here, where netfilter keys it by type as well: a
        // request travelling the reply way (or a reply the original way) is not part of the
        // exchange, or a host outside could ping in with the identifier of a ping going out.
        key->ct_state |= kCtInvalid;
        counter_add(counters_.invalid, 1);
        return CtVerdict::kContinue;
    }
    if (ref.found()) {
        CtEntry& e = table_->entry(ref.index);
        if (t.proto == IPPROTO_TCP) {
            const TcpState before = e.tcp.state;
            const TcpVerdict v = tcp_track(e.tcp, ref.dir, *seg, (e.flags & kCtfLiberal) != 0);
            if (v == TcpVerdict::kIgnore) {
                // Passes as a packet of the connection, which it leaves as it is (not even its
                // deadline): netfilter's answer to a client restarting on the same port, and to
                // the segments it does not track. Only that the reply side was heard from is
                // kept, as netfilter keeps it for any reply it lets through.
                if (ref.dir == 1 && !(e.flags & kCtfSeenReply)) {
                    e.flags |= kCtfSeenReply;
                    e.port[1] = key->in_port;
                }
                key->ct_state |= ((e.flags & kCtfSeenReply) ? kCtEstablished : kCtNew) |
                                 (ref.dir == 1 ? kCtReply : 0);
                key->ct_mark = e.mark;
                if (p.nat) translate(e, ref.dir, false, frame, len, layout, key);
                if (st != nullptr) st->track(ref.index, p.zone, ref.dir, key->ct_state);
                return CtVerdict::kContinue;
            }
            if (v == TcpVerdict::kReopen) {
                // A new connection reuses the tuple of a closed one: forget the old one.
                counter_add(counters_.reopened, 1);
                remove(ref.index);
                ref = CtRef{};
            } else if (v == TcpVerdict::kInvalid) {
                key->ct_state |= kCtInvalid | (ref.dir == 1 ? kCtReply : 0);
                key->ct_mark = e.mark;
                counter_add(counters_.invalid, 1);
                return CtVerdict::kContinue;
            } else if (e.tcp.state != before) {
                const TcpState after = e.tcp.state;
                e.tcp.state = before;
                account(e, -1);
                e.tcp.state = after;
                account(e, +1);
            }
        }
        if (ref.found()) {
            // A RST before any reply (the answer to a SYN, or the opener giving up) leaves no
            // connection, as netfilter kills one "whose only reply is a RST": the entry
            // expires now, and the next packet of the tuple finds it gone.
            const bool rst_unreplied = t.proto == IPPROTO_TCP && (seg->flags & kTcpFlagRst) != 0 &&
                                       !(e.flags & kCtfSeenReply);
            if (ref.dir == 1 && !(e.flags & kCtfSeenReply)) {
                e.flags |= kCtfSeenReply;
                e.port[1] = key->in_port;
            }
            counter_add(e.packets[ref.dir], 1);
            counter_add(e.bytes[ref.dir], len);
            if (t.proto != IPPROTO_TCP) {
                // Netfilter's notion, kept for ct.list and the migration stream: a reply makes
                // the pseudo-connection "multiple"; traffic both ways twice makes it assured.
                if (ref.dir == 1) e.other_state = static_cast<uint8_t>(CtOtherState::kMultiple);
                if (e.packets[0] >= 2 && e.packets[1] >= 2) e.flags |= kCtfAssured;
            }
            if (p.commit && p.set_mark) e.mark = p.mark;
            e.expires_ms = rst_unreplied ? now_ms : now_ms + timeout_ms(e);
            key->ct_state |= (e.flags & kCtfSeenReply) ? kCtEstablished : kCtNew;
            if (ref.dir == 1) key->ct_state |= kCtReply;
            key->ct_mark = e.mark;
            if (p.nat) translate(e, ref.dir, false, frame, len, layout, key);
            if (st != nullptr) st->track(ref.index, p.zone, ref.dir, key->ct_state);
            return CtVerdict::kContinue;
        }
    }

    // No connection: may this packet open one?
    bool may_open;
    if (t.proto == IPPROTO_TCP)
        may_open =
            tcp_may_open(*seg, zones_->zones[p.zone].liberal.load(std::memory_order_relaxed));
    else if (is_icmp(t.proto))
        may_open = is_echo_request(*key);
    else
        may_open = true;
    if (!may_open) {
        key->ct_state |= kCtInvalid;
        counter_add(counters_.invalid, 1);
        return CtVerdict::kContinue;
    }
    key->ct_state |= kCtNew;
    if (!p.commit) return CtVerdict::kContinue;
    return commit_new(frame, len, layout, key, t, p, now_ms, seg ? &*seg : nullptr, st);
}

/// A packet already tracked in this zone by an earlier ct action: its connection stands (the
/// packet is not tracked twice); commit's mark and nat still apply.
CtVerdict ConntrackShard::process_tracked(uint8_t* frame, uint32_t len, const PacketLayout& layout,
                                          FlowKey* key, const CtParams& p, CtPacketState* st) {
    CtEntry& e = table_->entry(st->index);
    if (e.flags & kCtfBlocked) {
        counter_add(counters_.blocked_drops, 1);
        return CtVerdict::kBlocked;
    }
    if (p.commit && p.set_mark) e.mark = p.mark;
    key->ct_zone = p.zone;
    key->ct_state = st->ct_state;
    key->ct_mark = e.mark;
    if (p.nat) translate(e, st->dir, (st->ct_state & kCtRelated) != 0, frame, len, layout, key);
    return CtVerdict::kContinue;
}

/// Applies e's translation, if it has one, to a packet of direction dir (an ICMP error about
/// the connection when related). Applying it twice changes nothing the second time.
void ConntrackShard::translate(const CtEntry& e, unsigned dir, bool related, uint8_t* frame,
                               uint32_t len, const PacketLayout& layout, FlowKey* key) {
    if (!(e.flags & (kCtfSrcNat | kCtfDstNat))) return;
    if (!related) {
        ct_apply_nat(e, dir, frame, len, layout, key);
        return;
    }
    // The quote is a packet of the other direction as translated; it goes back to its
    // pre-translation form, and the error to whoever sent that packet.
    const CtTuple& pre = e.tuple[1 - dir];
    NatTarget inner;
    std::memcpy(inner.src, pre.src, 16);
    std::memcpy(inner.dst, pre.dst, 16);
    inner.sport = pre.sport;
    inner.dport = pre.dport;
    if (nat_rewrite_icmp_error(frame, len, layout, *key, pre.src, inner))
        std::memcpy(key->ip_dst, pre.src, 16);
}

uint32_t ConntrackShard::install(const CtEntry& from, uint32_t orig_hash, uint32_t reply_hash,
                                 uint64_t now_ms, uint64_t remaining_ms, bool dormant) {
    const uint32_t idx = table_->insert(from.tuple[0], from.tuple[1], orig_hash, reply_hash);
    if (idx == kCtNone) return kCtNone;
    CtEntry& e = table_->entry(idx);
    e.packets[0] = from.packets[0];
    e.packets[1] = from.packets[1];
    e.bytes[0] = from.bytes[0];
    e.bytes[1] = from.bytes[1];
    e.mark = from.mark;
    e.flags = from.flags & static_cast<uint8_t>(~(kCtfForeignReply | kCtfRedirect));
    e.other_state = from.other_state;
    e.port[0] = from.port[0];
    e.port[1] = from.port[1];
    e.seq_offset[0] = from.seq_offset[0];
    e.seq_offset[1] = from.seq_offset[1];
    e.tcp = from.tcp;
    e.expires_ms = dormant ? UINT64_MAX : now_ms + remaining_ms;  // a dormant one never expires
    e.redirect_owner = dormant ? kCtDormant : 0;
    if ((e.flags & (kCtfSrcNat | kCtfDstNat)) && ct_owner(e.tuple[1], n_workers_) != worker_) {
        e.flags |= kCtfForeignReply;
        counter_add(counters_.foreign_reply, 1);
        notify(CtNotice::kRedirectAdd, e.tuple[1]);
    }
    zones_->zones[e.tuple[0].zone].count.fetch_add(1, std::memory_order_relaxed);
    if (e.port[0] < kCtPortSlots)
        zones_->ports[e.port[0]].count.fetch_add(1, std::memory_order_relaxed);
    account(e, +1);
    counter_add(counters_.installed, 1);
    return idx;
}

void ConntrackShard::activate(uint32_t index, uint64_t now_ms, uint64_t remaining_ms) {
    CtEntry& e = table_->entry(index);
    e.redirect_owner = 0;
    e.expires_ms = now_ms + remaining_ms;
}

void ConntrackShard::block(uint32_t index, uint64_t now_ms) {
    CtEntry& e = table_->entry(index);
    if (e.flags & kCtfBlocked) return;
    e.flags |= kCtfBlocked;
    e.expires_ms = now_ms + block_ttl_ms();
    counter_add(counters_.blocked, 1);
}

/// How long a blocked connection is remembered after its last packet.
uint64_t ConntrackShard::block_ttl_ms() const {
    return uint64_t{timeouts_->tcp[static_cast<size_t>(TcpState::kTimeWait)]} * 1000;
}

void ConntrackShard::remove(uint32_t index) {
    if (!table_->live(index)) return;  // already gone (a flush and an expiry may both name it)
    const CtEntry& e = table_->entry(index);
    if (remove_hook_ != nullptr && !(e.flags & kCtfRedirect)) remove_hook_(remove_ctx_, index);
    if (e.flags & kCtfRedirect) {
        counter_add(counters_.redirects, ~uint64_t{0});  // - 1
        table_->erase(index);
        return;
    }
    if (e.flags & kCtfForeignReply) notify(CtNotice::kRedirectDel, e.tuple[1]);
    zones_->zones[e.tuple[0].zone].count.fetch_sub(1, std::memory_order_relaxed);
    if (e.port[0] < kCtPortSlots)
        zones_->ports[e.port[0]].count.fetch_sub(1, std::memory_order_relaxed);
    account(e, -1);
    counter_add(counters_.removed, 1);
    table_->erase(index);
}

/// Queues a notice for the worker that owns tuple's hash. @return false when the outbox is full
bool ConntrackShard::notify(CtNotice::Kind kind, const CtTuple& tuple) {
    if (n_notices_ == kCtNoticeSlots) {
        counter_add(counters_.notices_lost, 1);
        return false;
    }
    notices_[n_notices_++] =
        CtNotice{.kind = kind, .to = ct_owner(tuple, n_workers_), .owner = worker_, .tuple = tuple};
    return true;
}

void ConntrackShard::count_lost_notice() {
    counter_add(counters_.notices_lost, 1);
}

void ConntrackShard::apply_notice(const CtNotice& n, uint64_t now_ms) {
    const CtRef ref = table_->lookup(n.tuple);
    if (n.kind == CtNotice::kRedirectDel) {
        if (ref.found() && (table_->entry(ref.index).flags & kCtfRedirect) &&
            table_->entry(ref.index).redirect_owner == n.owner)
            remove(ref.index);
        return;
    }
    if (ref.found()) return;  // a connection of ours has the tuple: it wins
    const uint32_t idx = table_->insert(n.tuple, n.tuple);
    if (idx == kCtNone) {
        counter_add(counters_.notices_lost, 1);
        return;
    }
    CtEntry& e = table_->entry(idx);
    e.flags = kCtfRedirect;
    e.redirect_owner = n.owner;
    e.port[0] = e.port[1] = kCtNoPort;
    e.expires_ms = now_ms + redirect_ttl_ms(n.tuple.proto);
    counter_add(counters_.redirects, 1);
}

/// How long a redirect lives without packets: the longest a connection of the protocol can
/// (the owner's delete notice normally removes it first).
uint64_t ConntrackShard::redirect_ttl_ms(uint8_t proto) const {
    uint32_t s = timeouts_->other;
    if (proto == IPPROTO_TCP)
        s = timeouts_->tcp[static_cast<size_t>(TcpState::kEstablished)];
    else if (proto == IPPROTO_UDP)
        s = timeouts_->udp_stream;
    else if (is_icmp(proto))
        s = timeouts_->icmp;
    return uint64_t{s} * 1000;
}

uint32_t ConntrackShard::expire(uint64_t now_ms, uint32_t budget) {
    uint32_t removed = 0;
    table_->sweep(now_ms, budget, [&](uint32_t idx) {
        remove(idx);
        ++removed;
    });
    return removed;
}

}  // namespace ferry
