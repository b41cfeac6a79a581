// What the packet-rewriting fuzzers check a frame with: a trap that libFuzzer records, and which
// of a parsed frame's checksums verify by full recomputation (so that a rewrite can be held to
// keep every checksum that was valid before). Fuzzer-only helpers; header-only so each target
// stays one source file plus the project sources it tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dataplane/byte_order.h"
#include "dataplane/flow_key.h"
#include "dataplane/ip_proto.h"

namespace ferry::fuzz {

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
inline void check(bool ok) {
    if (!ok) __builtin_trap();
}

/// One's-complement sum of n bytes (odd last byte padded with zero), not folded.
inline uint64_t sum_bytes(const uint8_t* p, size_t n, uint64_t acc = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += load_be16(p + i);
    if (n % 2 != 0) acc += static_cast<uint64_t>(p[n - 1]) << 8;
    return acc;
}

/// A checksummed region (checksum field included) verifies when its sum is a one's-complement
/// zero. Either zero form counts: the incremental update preserves the value modulo 0xffff.
inline bool sums_to_zero(uint64_t s) {
    return s % 0xffff == 0;
}

/// Sum of the pseudo-header of a transport message of n bytes (none for ICMPv4).
inline uint64_t pseudo_sum(const uint8_t* ip, uint8_t version, uint8_t proto, size_t n) {
    if (proto == IPPROTO_ICMP) return 0;
    const size_t alen = version == 4 ? 4 : 16;
    const uint8_t* src = ip + (version == 4 ? 12 : 8);
    const uint64_t s = sum_bytes(src, 2 * alen);  // destination follows the source in both
    return s + proto + (n >> 16) + (n & 0xffff);
}

/// End of the IP packet the parser accepted (its lengths were checked against the frame).
inline size_t ip_end(const uint8_t* frame, const FlowKey& key, const PacketLayout& l) {
    const uint8_t* ip = frame + l.l3_offset;
    return key.ip_version == 4 ? l.l3_offset + load_be16(ip + 2)
                               : l.l3_offset + 40 + load_be16(ip + 4);
}

/// Which checksums of a parsed frame verify by full recomputation. A checksum that cannot be
/// recomputed from this frame alone (fragments, IPv6 extension headers, a zero UDP checksum, an
/// unknown protocol) counts as not valid, so it is not checked afterwards.
struct Validity {
    bool ip_header = false;
    bool l4 = false;
    bool udp_nonzero = false;
};

inline Validity validity(const uint8_t* frame, const FlowKey& key, const PacketLayout& l) {
    Validity v;
    const uint8_t* ip = frame + l.l3_offset;
    if (key.ip_version == 4) v.ip_header = sums_to_zero(sum_bytes(ip, (ip[0] & 0x0fu) * 4u));
    const uint8_t proto = key.ip_proto;
    if (l.l4_offset == 0) return v;
    const size_t n = ip_end(frame, key, l) - l.l4_offset;
    const uint8_t* l4 = frame + l.l4_offset;
    if (proto == IPPROTO_UDP) v.udp_nonzero = load_be16(l4 + 6) != 0;
    const bool whole = key.ip_version == 4 ? (load_be16(ip + 6) & 0x3fffu) == 0 : ip[6] == proto;
    const bool known = proto == IPPROTO_TCP || (proto == IPPROTO_UDP && v.udp_nonzero) ||
                       (proto == IPPROTO_ICMP && key.ip_version == 4) ||
                       (proto == IPPROTO_ICMPV6 && key.ip_version == 6);
    if (whole && known)
        v.l4 = sums_to_zero(pseudo_sum(ip, key.ip_version, proto, n) + sum_bytes(l4, n));
    return v;
}

}  // namespace ferry::fuzz
