// The per-worker reassembly table of connection tracking (ct_defrag.h). Datagrams live in a
// fixed array of slots, found through a keyed hash (a tenant chooses addresses and
// identifications, so it must not be able to make chains long), aged through a list in arrival
// order (one timeout for all: the head is always the first to expire), and handed over through a
// ready list. A datagram's fragments are kept sorted by offset in a fixed run of handles, so the
// overlap check looks at two neighbours and completeness is "no gap from 0 to the end".
//
// What is refused follows Linux (ip_fragment.c, nf_conntrack_reasm.c): a fragment repeating
// bytes already held exactly is dropped alone; one overlapping others drops the datagram (RFC
// 5722 for IPv6, and Linux does the same for IPv4); an end that contradicts the last fragment's
// drops the datagram.
#include "dataplane/conntrack/ct_defrag.h"

#include <cstring>
#include <new>

#include "dataplane/byte_order.h"
#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/hash_key.h"
#include "dataplane/ip_proto.h"

namespace ferry {
namespace {

constexpr uint32_t kIpMaxLength = 65535;
constexpr uint32_t kIpv6HeaderLen = 40;
constexpr uint32_t kIpv6FragHeaderLen = 8;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint32_t kMaxIpv6ExtHeaders = 8;

/// True for the IPv6 extension headers that may precede a fragment header. Context: fast path.
bool precedes_fragment_header(uint8_t next) {
    return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS;
}

}  // namespace

std::optional<DropReason> ct_frag_parse(const uint8_t* frame, uint32_t len,
                                        const PacketLayout& layout, const FlowKey& key,
                                        CtFragment* f) {
    const uint32_t l3 = layout.l3_offset;
    uint32_t unfragmentable;  // bytes before the fragmentable part that the IP length counts
    if (key.ip_version == 4) {
        if (l3 + 20 > len) return DropReason::kCtFragBad;
        const uint8_t* ip = frame + l3;
        const uint32_t ihl = (ip[0] & 0x0fu) * 4u;
        const uint32_t total = load_be16(ip + 2);
        const uint16_t flags_offset = load_be16(ip + 6);
        if (ihl < 20 || total < ihl || l3 + total > len) return DropReason::kCtFragBad;
        f->id = load_be16(ip + 4);
        f->offset = (flags_offset & 0x1fffu) * 8u;
        f->more = (flags_offset & 0x2000u) != 0;
        f->payload_at = l3 + ihl;
        f->length = total - ihl;
        unfragmentable = ihl;
    } else if (key.ip_version == 6) {
        if (l3 + kIpv6HeaderLen > len) return DropReason::kCtFragBad;
        const uint32_t end = l3 + kIpv6HeaderLen + load_be16(frame + l3 + 4);
        if (end > len) return DropReason::kCtFragBad;
        uint8_t next = frame[l3 + 6];
        uint32_t pos = l3 + kIpv6HeaderLen;
        for (uint32_t walked = 0; next != kIpv6Fragment; ++walked) {
            if (!precedes_fragment_header(next) || walked == kMaxIpv6ExtHeaders || end - pos < 8)
                return DropReason::kCtFragBad;
            const uint32_t ext_len = (frame[pos + 1] + 1u) * 8u;
            if (end - pos < ext_len) return DropReason::kCtFragBad;
            next = frame[pos];
            pos += ext_len;
        }
        if (end - pos < kIpv6FragHeaderLen) return DropReason::kCtFragBad;
        const uint8_t* fh = frame + pos;
        f->id = load_be32(fh + 4);
        f->offset = load_be16(fh + 2) & 0xfff8u;
        f->more = (load_be16(fh + 2) & 1u) != 0;
        f->payload_at = pos + kIpv6FragHeaderLen;
        f->length = end - f->payload_at;
        // The reassembled payload length counts the headers before the fragment header.
        unfragmentable = pos - l3 - kIpv6HeaderLen;
    } else {
        return DropReason::kCtFragBad;
    }
    f->l4_at = f->offset == 0 ? layout.l4_offset : 0;
    if (f->length == 0 || (f->more && (f->length & 7u) != 0) ||
        unfragmentable + f->offset + f->length > kIpMaxLength)
        return DropReason::kCtFragBad;
    // A first fragment whose transport header the parser did not find (a protocol it does not
    // read, an extension header it stops at) is tracked from its payload start.
    if (f->offset == 0 && (f->l4_at < f->payload_at || f->l4_at > f->payload_at + f->length))
        f->l4_at = f->payload_at;
    return std::nullopt;
}

uint8_t ct_datagram_l4_verdict(const uint8_t* f0, const PacketLayout& l, const FlowKey& k,
                               uint32_t l4_length, uint64_t l4_sum) {
    const uint8_t* p = f0 + l.l4_offset;
    uint64_t acc = l4_sum;
    switch (k.ip_proto) {
        case IPPROTO_UDP: {
            const uint32_t ulen = load_be16(p + 4);
            if (ulen < 8 || ulen > l4_length) return kCsumL4Bad;
            if (load_be16(p + 6) == 0) return kCsumL4Good;  // no checksum
            break;
        }
        case IPPROTO_TCP:
        case IPPROTO_ICMPV6:
            break;
        case IPPROTO_ICMP:
            return csum_detail::folds_to_ones(acc) ? kCsumL4Good : kCsumL4Bad;
        default:
            return kCsumUnknown;  // nothing conntrack checks
    }
    acc += csum_detail::pseudo_header(f0, l.l3_offset, k.ip_version, k.ip_proto, l4_length);
    return csum_detail::folds_to_ones(acc) ? kCsumL4Good : kCsumL4Bad;
}

std::unique_ptr<CtDefrag> CtDefrag::create(const CtDefragLimits& limits, Release release,
                                           void* ctx) {
    if (limits.datagrams == 0 || limits.datagrams > (1u << 24) || limits.fragments == 0 ||
        limits.fragments > kCtDefragMaxFragments || limits.bytes == 0 || limits.held == 0 ||
        release == nullptr)
        return nullptr;
    std::unique_ptr<CtDefrag> d(new (std::nothrow) CtDefrag());
    if (d == nullptr) return nullptr;
    d->limits_ = limits;
    d->release_ = release;
    d->release_ctx_ = ctx;
    uint32_t nb = 1;
    while (nb < limits.datagrams * 2) nb <<= 1;
    const size_t runs = size_t{limits.datagrams} * limits.fragments;
    d->slots_ = new (std::nothrow) Slot[limits.datagrams];
    d->pkts_ = new (std::nothrow) void*[runs];
    d->spans_ = new (std::nothrow) Span[runs];
    d->buckets_ = new (std::nothrow) uint32_t[nb];
    if (d->slots_ == nullptr || d->pkts_ == nullptr || d->spans_ == nullptr ||
        d->buckets_ == nullptr)
        return nullptr;
    d->bucket_mask_ = nb - 1;
    for (uint32_t b = 0; b < nb; ++b) d->buckets_[b] = kNone;
    for (uint32_t s = 0; s < limits.datagrams; ++s)
        d->slots_[s].next = s + 1 < limits.datagrams ? s + 1 : kNone;
    d->free_head_ = 0;
    return d;
}

CtDefrag::~CtDefrag() {
    delete[] slots_;
    delete[] pkts_;
    delete[] spans_;
    delete[] buckets_;
}

namespace {

/// The bucket hash of a datagram key, under the process's secret. Context: fast path.
uint64_t frag_hash(const CtFragKey& k) {
    uint64_t w[6];
    static_assert(sizeof(w) == sizeof(CtFragKey));
    std::memcpy(w, &k, sizeof(w));
    return siphash13_words(hash_keys().ct_table, w, 0x67617266, 4);  // "frag"
}

}  // namespace

uint32_t CtDefrag::find(const CtFragKey& key, uint64_t h) const {
    for (uint32_t s = buckets_[h & bucket_mask_]; s != kNone; s = slots_[s].hash_next)
        if (slots_[s].key == key) return s;
    return kNone;
}

uint32_t CtDefrag::open(const CtFragKey& key, uint64_t h, uint64_t now_ms) {
    const uint32_t s = free_head_;
    if (s == kNone) return kNone;
    Slot& d = slots_[s];
    free_head_ = d.next;
    d.key = key;
    d.expires_ms = now_ms + limits_.timeout_ms;
    d.sum = 0;
    d.end = 0;
    d.bytes = 0;
    d.l4_skip = 0;
    d.n = 0;
    d.have_first = 0;
    d.have_last = 0;
    d.hops = 0;
    const uint32_t b = h & bucket_mask_;
    d.hash_next = buckets_[b];
    buckets_[b] = s;
    d.next = kNone;
    d.prev = age_tail_;
    if (age_tail_ != kNone)
        slots_[age_tail_].next = s;
    else
        age_head_ = s;
    age_tail_ = s;
    ++in_use_;
    return s;
}

void CtDefrag::unlink_age(uint32_t s) {
    Slot& d = slots_[s];
    if (d.prev != kNone)
        slots_[d.prev].next = d.next;
    else
        age_head_ = d.next;
    if (d.next != kNone)
        slots_[d.next].prev = d.prev;
    else
        age_tail_ = d.prev;
}

void CtDefrag::unlink_hash(uint32_t s) {
    uint32_t* at = &buckets_[frag_hash(slots_[s].key) & bucket_mask_];
    while (*at != s) at = &slots_[*at].hash_next;
    *at = slots_[s].hash_next;
}

void CtDefrag::release_slot(uint32_t s) {
    held_ -= slots_[s].n;
    --in_use_;
    slots_[s].n = 0;
    slots_[s].next = free_head_;
    free_head_ = s;
}

void CtDefrag::drop_datagram(uint32_t s, DropReason reason) {
    unlink_hash(s);
    unlink_age(s);
    void** run = pkts_ + size_t{s} * limits_.fragments;
    for (uint32_t i = 0; i < slots_[s].n; ++i)
        release_(release_ctx_, run[i], slots_[s].key.in_port, reason);
    release_slot(s);
}

CtFragAdd CtDefrag::add(const CtFragKey& key, const CtFragment& f, uint64_t sum, void* pkt,
                        const CompiledRule* rule, uint8_t hops, uint64_t now_ms,
                        DropReason* reason) {
    const uint64_t h = frag_hash(key);
    uint32_t s = find(key, h);
    if (s != kNone && slots_[s].expires_ms <= now_ms) {
        // Its time is up, whether or not expire() has come by: this fragment starts anew.
        drop_datagram(s, DropReason::kCtFragTimeout);
        s = kNone;
    }
    if (held_ >= limits_.held || (s == kNone && (s = open(key, h, now_ms)) == kNone)) {
        *reason = DropReason::kCtFragFull;
        return CtFragAdd::kRefused;
    }
    Slot& d = slots_[s];
    const uint32_t begin = f.offset;
    const uint32_t end = f.offset + f.length;
    // The last fragment fixes the end: nothing may lie past it, and no other may move it.
    void** run = pkts_ + size_t{s} * limits_.fragments;
    Span* spans = spans_ + size_t{s} * limits_.fragments;
    const uint32_t held_end = d.n != 0 ? spans[d.n - 1].end : 0;  // sorted, disjoint
    if ((d.have_last && (end > d.end || (!f.more && end != d.end))) ||
        (!f.more && held_end > end)) {
        *reason = DropReason::kCtFragBad;
        drop_datagram(s, *reason);
        return CtFragAdd::kRefused;
    }
    uint32_t at = 0;  // where it goes: after every fragment that starts before it
    while (at < d.n && spans[at].begin < begin) ++at;
    if (at < d.n && spans[at].begin == begin && spans[at].end == end) {
        *reason = DropReason::kCtFragDuplicate;
        return CtFragAdd::kRefused;
    }
    if ((at > 0 && spans[at - 1].end > begin) || (at < d.n && spans[at].begin < end)) {
        *reason = DropReason::kCtFragOverlap;
        drop_datagram(s, *reason);
        return CtFragAdd::kRefused;
    }
    if (d.n == limits_.fragments || d.bytes + f.length > limits_.bytes) {
        *reason = DropReason::kCtFragTooMany;
        drop_datagram(s, *reason);
        return CtFragAdd::kRefused;
    }
    for (uint32_t i = d.n; i > at; --i) {
        run[i] = run[i - 1];
        spans[i] = spans[i - 1];
    }
    run[at] = pkt;
    spans[at] = Span{begin, end};
    ++d.n;
    ++held_;
    d.bytes += f.length;
    d.sum += sum;
    if (!f.more) {
        d.have_last = 1;
        d.end = end;
    }
    if (begin == 0) {
        d.have_first = 1;
        d.l4_skip = f.l4_at - f.payload_at;
        d.hops = hops;
        if (rule != nullptr) d.rule = *rule;
    }
    // Whole when the fragments, sorted and not overlapping, cover [0, end): their bytes add up.
    if (!d.have_last || !d.have_first || d.bytes != d.end) return CtFragAdd::kHeld;
    unlink_hash(s);
    unlink_age(s);
    d.next = kNone;
    if (ready_tail_ != kNone)
        slots_[ready_tail_].next = s;
    else
        ready_head_ = s;
    ready_tail_ = s;
    return CtFragAdd::kComplete;
}

uint32_t CtDefrag::expire(uint64_t now_ms) {
    uint32_t n = 0;
    while (age_head_ != kNone && slots_[age_head_].expires_ms <= now_ms) {
        drop_datagram(age_head_, DropReason::kCtFragTimeout);
        ++n;
    }
    return n;
}

void CtDefrag::clear() {
    while (age_head_ != kNone) drop_datagram(age_head_, DropReason::kCtFragTimeout);
    while (ready_head_ != kNone) {
        const uint32_t s = ready_head_;
        ready_head_ = slots_[s].next;
        void** run = pkts_ + size_t{s} * limits_.fragments;
        for (uint32_t i = 0; i < slots_[s].n; ++i)
            release_(release_ctx_, run[i], slots_[s].key.in_port, DropReason::kCtFragTimeout);
        release_slot(s);
    }
    ready_tail_ = kNone;
}

void CtDefrag::fill(uint32_t s, CtDatagram* out) const {
    const Slot& d = slots_[s];
    out->key = &d.key;
    out->pkts = pkts_ + size_t{s} * limits_.fragments;
    out->n = d.n;
    out->l4_length = d.end - d.l4_skip;
    out->l4_sum = d.sum;
    out->rule = &d.rule;
    out->hops = d.hops;
}

}  // namespace ferry
