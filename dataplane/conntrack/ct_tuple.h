// The key of a tracked connection in one direction, and the two hashes over it: a
// direction-specific one for the shard's table and a symmetric one that picks the owner worker,
// so both directions of a connection meet the same owner. Both are keyed (dataplane/hash_key.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "dataplane/hash_key.h"

namespace ferry {

/// One direction of a connection. Zero-filled, compared and hashed as bytes.
///  - TCP/UDP: sport/dport are the ports (host order).
///  - ICMP/ICMPv6 echo: sport == dport == the echo identifier, in both directions, so the reply
///    tuple of a request is the request's tuple with the addresses swapped.
struct CtTuple {
    uint8_t src[16];  // IPv4 in the first 4 bytes, network order; the rest zero
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
    uint16_t zone;
    uint8_t proto;
    uint8_t ip_version;  // 4 or 6
};
static_assert(sizeof(CtTuple) == 40);

inline bool operator==(const CtTuple& a, const CtTuple& b) {
    return std::memcmp(&a, &b, sizeof(CtTuple)) == 0;
}

/// The tuple of the other direction: addresses and ports swapped. Context: any.
inline CtTuple ct_tuple_reverse(const CtTuple& t) {
    CtTuple r = t;
    std::memcpy(r.src, t.dst, 16);
    std::memcpy(r.dst, t.src, 16);
    r.sport = t.dport;
    r.dport = t.sport;
    return r;
}

/// An IPv4 tuple's fields (addresses in the first 4 bytes, the rest zero by contract) as
/// SipHash input: one word of addresses and a 7-byte tail (ports, zone, protocol). 15 bytes
/// against an IPv6 tuple's 40, so the two forms never meet; 5 SipHash rounds instead of 9.
/// Context: any.
inline void ct_v4_message(const uint8_t* a, const uint8_t* b, uint16_t pa, uint16_t pb,
                          uint16_t zone, uint8_t proto, uint64_t* word, uint64_t* tail) {
    uint32_t x, y;
    std::memcpy(&x, a, 4);
    std::memcpy(&y, b, 4);
    *word = x | uint64_t{y} << 32;
    *tail = pa | uint64_t{pb} << 16 | uint64_t{zone} << 32 | uint64_t{proto} << 48;
}
inline constexpr unsigned kCtV4Tail = 7;

/// Direction-specific hash of a tuple: SipHash-1-3 under the process's ct_table key, so a tenant
/// cannot choose tuples that share another connection's buckets; an IPv4 tuple is one AES-128
/// block under its own key instead where the CPU has AES-NI (dataplane/aes_hash.h). Context: any.
inline uint32_t ct_tuple_hash(const CtTuple& t) {
    const SipKey& key = hash_keys().ct_table;
    if (t.ip_version == 4) {
        uint64_t m[1], tail;
        ct_v4_message(t.src, t.dst, t.sport, t.dport, t.zone, t.proto, &m[0], &tail);
        if (hash_v4_aes()) return aes128_hash(hash_key_detail::ct_table_v4, m[0], tail);
        return static_cast<uint32_t>(siphash13_words(key, m, tail, kCtV4Tail));
    }
    uint64_t w[5];
    std::memcpy(w, &t, sizeof(w));
    return static_cast<uint32_t>(siphash13_words(key, w));
}

/// Symmetric hash: equal for a tuple and its reverse. The endpoints (address, port) are put in a
/// fixed order, then hashed with SipHash-1-3 under the ct_owner key (so a tenant can neither
/// steer its connections onto one worker nor tell from a worker choice where they sit in a
/// table). IPv4 as in ct_tuple_hash. Context: any.
inline uint32_t ct_owner_hash(const CtTuple& t) {
    const int c = std::memcmp(t.src, t.dst, 16);
    const bool swap = c > 0 || (c == 0 && t.sport > t.dport);
    const uint8_t* lo = swap ? t.dst : t.src;
    const uint8_t* hi = swap ? t.src : t.dst;
    const uint16_t plo = swap ? t.dport : t.sport;
    const uint16_t phi = swap ? t.sport : t.dport;
    const SipKey& key = hash_keys().ct_owner;
    if (t.ip_version == 4) {
        uint64_t m[1], tail;
        ct_v4_message(lo, hi, plo, phi, t.zone, t.proto, &m[0], &tail);
        if (hash_v4_aes()) return aes128_hash(hash_key_detail::ct_owner_v4, m[0], tail);
        return static_cast<uint32_t>(siphash13_words(key, m, tail, kCtV4Tail));
    }
    uint64_t m[5];
    std::memcpy(m, lo, 16);
    std::memcpy(m + 2, hi, 16);
    m[4] = (uint64_t{plo} << 48) | (uint64_t{phi} << 32) | (uint64_t{t.zone} << 16) |
           (uint64_t{t.proto} << 8) | t.ip_version;
    return static_cast<uint32_t>(siphash13_words(key, m));
}

/// The worker that owns connections of this tuple among n_workers. Context: any.
inline uint16_t ct_owner(const CtTuple& t, uint16_t n_workers) {
    return n_workers <= 1 ? 0 : static_cast<uint16_t>(ct_owner_hash(t) % n_workers);
}

}  // namespace ferry
