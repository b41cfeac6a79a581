// Bucket collisions in CtTable, computed the way an attacker would: the table's layout is public
// (dataplane/conntrack/ct_table.cc), so whoever can evaluate the hash can search, over the fields
// its packets choose, for tuples whose two candidate buckets are a victim's.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"

namespace ferry::test {

/// The two buckets a hash may use, in ascending order.
struct BucketPair {
    uint32_t lo;
    uint32_t hi;
    bool operator==(const BucketPair&) const = default;
};

/// CtTable's bucket mask for a capacity (CtTable::create's sizing). Context: test.
inline uint32_t ct_bucket_mask(uint32_t capacity) {
    return std::max(2u, std::bit_ceil(capacity / 2)) - 1;
}

/// CtTable's two buckets of a hash (primary, primary ^ alt delta). Context: test.
inline BucketPair ct_bucket_pair(uint32_t hash, uint32_t mask) {
    const uint32_t b0 = hash & mask;
    uint32_t d = ((hash >> 16) * 0x5bd1e995u) & mask;
    if (d == 0) d = 1;
    const uint32_t b1 = b0 ^ d;
    return BucketPair{std::min(b0, b1), std::max(b0, b1)};
}

/// The hash CtTable used before it was keyed: CRC32C over the tuple's five words from a fixed
/// seed. What an attacker computes offline. Context: test.
inline uint32_t unkeyed_tuple_hash(const CtTuple& t) {
    uint64_t w[5];
    std::memcpy(w, &t, sizeof(w));
    uint64_t c = 0x9e3779b9u;
    for (uint64_t x : w) c = __builtin_ia32_crc32di(c, x);
    return static_cast<uint32_t>(c);
}

/// Up to `count` tuples that differ from `base` only in their ports (what a VM sending from its
/// own address chooses) and whose bucket pair under `hash` is `target`. With reply_elsewhere,
/// only tuples whose reverse uses neither bucket of the pair (a connection's reply tuple must
/// not take one of the ways meant for another of its tuples). Context: test.
template <class Hash>
std::vector<CtTuple> tuples_in_buckets(const CtTuple& base, BucketPair target, uint32_t mask,
                                       Hash&& hash, unsigned count, bool reply_elsewhere = false) {
    std::vector<CtTuple> out;
    CtTuple t = base;
    for (uint32_t sport = 1024; sport <= 0xffff && out.size() < count; ++sport) {
        t.sport = static_cast<uint16_t>(sport);
        for (uint32_t dport = 1; dport <= 0xffff && out.size() < count; ++dport) {
            t.dport = static_cast<uint16_t>(dport);
            if (!(ct_bucket_pair(hash(t), mask) == target)) continue;
            if (reply_elsewhere) {
                const BucketPair r = ct_bucket_pair(hash(ct_tuple_reverse(t)), mask);
                if (r.lo == target.lo || r.lo == target.hi || r.hi == target.lo ||
                    r.hi == target.hi)
                    continue;
            }
            out.push_back(t);
        }
    }
    return out;
}

}  // namespace ferry::test
