// CtTable: the per-worker connection table. Each test inserts connections (an original tuple and
// its reply tuple) and expects lookups of either tuple to return the entry index and direction
// insert() gave, and a miss for any tuple never inserted or since erased. Refused inserts must
// leave the table unchanged; sweep and next_live must visit exactly the live entries.
#include "dataplane/conntrack/ct_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tests/unit/ct_collide.h"

namespace ferry {
namespace {

/// An IPv4 tuple. Context: test.
CtTuple v4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto = 6) {
    CtTuple t{};
    std::memcpy(t.src, &src, 4);
    std::memcpy(t.dst, &dst, 4);
    t.sport = sport;
    t.dport = dport;
    t.proto = proto;
    t.ip_version = 4;
    return t;
}

/// n distinct random TCP/UDP IPv4 tuples whose reverses are distinct from all of them too (the
/// source address carries the tuple's number and the destination has its top bit set).
std::vector<CtTuple> random_tuples(uint32_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<CtTuple> out(n);
    for (uint32_t i = 0; i < n; ++i) {
        const uint64_t r = rng();
        out[i] = v4(i, static_cast<uint32_t>(r) | 0x80000000u, static_cast<uint16_t>(r >> 32),
                    static_cast<uint16_t>(r >> 48), (r >> 31) & 1 ? 6 : 17);
    }
    return out;
}

/// `count` distinct IPv6 tuples whose two candidate buckets in a table of `capacity` are the
/// same pair, found by search under the process's keys (as only someone knowing them could).
std::vector<CtTuple> colliding_tuples(unsigned count, uint32_t capacity) {
    CtTuple base{};
    base.src[0] = 0x20;
    base.dst[0] = 0x20;
    base.dst[15] = 1;
    base.proto = 6;
    base.ip_version = 6;
    const uint32_t mask = test::ct_bucket_mask(capacity);
    const auto target = test::ct_bucket_pair(ct_tuple_hash(base), mask);
    auto out = test::tuples_in_buckets(base, target, mask, ct_tuple_hash, count);
    EXPECT_EQ(out.size(), count);
    return out;
}

/// Two distinct tuples with the same 32-bit ct_tuple_hash (so the same signature): a birthday
/// search over source ports and addresses, about 2^16 tuples. Context: test.
std::pair<CtTuple, CtTuple> same_hash_pair() {
    std::unordered_map<uint32_t, CtTuple> seen;
    for (uint32_t i = 0;; ++i) {
        const CtTuple t = v4(0x0a000000u + (i >> 16), 0x08080808, static_cast<uint16_t>(i), 53);
        const auto [it, fresh] = seen.emplace(ct_tuple_hash(t), t);
        if (!fresh) return {it->second, t};
    }
}

void expect_ref(const CtRef& r, uint32_t index, uint8_t dir) {
    EXPECT_EQ(r.index, index);
    EXPECT_EQ(r.dir, dir);
}

TEST(CtTable, InsertThenLookupBothDirections) {
    auto t = CtTable::create(16);
    ASSERT_TRUE(t);
    const CtTuple orig = v4(0x0100000a, 0x08080808, 40000, 53, 17);
    const CtTuple reply = ct_tuple_reverse(orig);
    const uint32_t idx = t->insert(orig, reply);
    ASSERT_NE(idx, kCtNone);
    EXPECT_EQ(t->size(), 1u);
    EXPECT_TRUE(t->live(idx));
    EXPECT_TRUE(t->entry(idx).tuple[0] == orig);
    EXPECT_TRUE(t->entry(idx).tuple[1] == reply);
    EXPECT_EQ(t->entry(idx).expires_ms, 0u);
    EXPECT_EQ(t->entry(idx).flags, 0u);
    expect_ref(t->lookup(orig), idx, 0);
    expect_ref(t->lookup(reply), idx, 1);
}

TEST(CtTable, UnknownTupleMisses) {
    auto t = CtTable::create(16);
    ASSERT_TRUE(t);
    const CtTuple a = v4(1, 2, 3, 4);
    EXPECT_FALSE(t->lookup(a).found());
    ASSERT_NE(t->insert(a, ct_tuple_reverse(a)), kCtNone);
    EXPECT_FALSE(t->lookup(v4(1, 2, 3, 5)).found());
    EXPECT_FALSE(t->lookup(v4(1, 2, 3, 4, 17)).found());
}

TEST(CtTable, DuplicateInsertRefusedAndNothingChanged) {
    auto t = CtTable::create(16);
    ASSERT_TRUE(t);
    const CtTuple a = v4(1, 2, 1000, 80);
    const CtTuple ra = ct_tuple_reverse(a);
    const CtTuple x = v4(7, 8, 1000, 80);
    const uint32_t idx = t->insert(a, ra);
    ASSERT_NE(idx, kCtNone);
    EXPECT_EQ(t->insert(a, x), kCtNone);   // orig already indexed
    EXPECT_EQ(t->insert(x, ra), kCtNone);  // reply already indexed
    EXPECT_EQ(t->insert(ra, a), kCtNone);  // both, swapped
    EXPECT_EQ(t->size(), 1u);
    EXPECT_FALSE(t->lookup(x).found());
    expect_ref(t->lookup(a), idx, 0);
    expect_ref(t->lookup(ra), idx, 1);
    EXPECT_EQ(t->next_live(0), idx);
    EXPECT_EQ(t->next_live(idx + 1), kCtNone);
}

TEST(CtTable, PoolFullRefused) {
    auto t = CtTable::create(4);
    ASSERT_TRUE(t);
    for (uint32_t i = 0; i < 4; ++i) {
        const CtTuple a = v4(i, 100, 1, 2);
        ASSERT_NE(t->insert(a, ct_tuple_reverse(a)), kCtNone);
    }
    const CtTuple extra = v4(50, 100, 1, 2);
    EXPECT_EQ(t->insert(extra, ct_tuple_reverse(extra)), kCtNone);
    EXPECT_EQ(t->size(), 4u);
    EXPECT_FALSE(t->lookup(extra).found());
    EXPECT_FALSE(t->lookup(ct_tuple_reverse(extra)).found());
}

TEST(CtTable, EraseThenReinsertReusesIndex) {
    auto t = CtTable::create(4);
    ASSERT_TRUE(t);
    std::vector<CtTuple> a;
    std::vector<uint32_t> idx;
    for (uint32_t i = 0; i < 4; ++i) {
        a.push_back(v4(i, 100, 1, 2));
        idx.push_back(t->insert(a[i], ct_tuple_reverse(a[i])));
        ASSERT_NE(idx[i], kCtNone);
    }
    t->erase(idx[2]);
    EXPECT_EQ(t->size(), 3u);
    EXPECT_FALSE(t->live(idx[2]));
    EXPECT_FALSE(t->lookup(a[2]).found());
    EXPECT_FALSE(t->lookup(ct_tuple_reverse(a[2])).found());
    t->erase(idx[2]);  // not live: no effect
    EXPECT_EQ(t->size(), 3u);

    const CtTuple b = v4(9, 100, 1, 2);
    const uint32_t again = t->insert(b, ct_tuple_reverse(b));
    EXPECT_EQ(again, idx[2]);  // the only free index
    EXPECT_EQ(t->size(), 4u);
    expect_ref(t->lookup(b), again, 0);
    expect_ref(t->lookup(ct_tuple_reverse(b)), again, 1);
    // The erased tuple can come back too, once there is room.
    t->erase(idx[0]);
    const uint32_t back = t->insert(a[2], ct_tuple_reverse(a[2]));
    EXPECT_EQ(back, idx[0]);
    expect_ref(t->lookup(a[2]), back, 0);
}

TEST(CtTable, LookupBulkMatchesLookup) {
    auto t = CtTable::create(1000);
    ASSERT_TRUE(t);
    const auto tuples = random_tuples(1000, 7);
    for (uint32_t i = 0; i < 500; ++i)
        ASSERT_NE(t->insert(tuples[i], ct_tuple_reverse(tuples[i])), kCtNone);
    std::mt19937 rng(11);
    for (unsigned n : {1u, 7u, 64u}) {
        for (int round = 0; round < 20; ++round) {
            std::vector<CtTuple> keys(n);
            for (auto& k : keys) {
                const CtTuple& base = tuples[rng() % tuples.size()];  // half never inserted
                k = rng() & 1 ? ct_tuple_reverse(base) : base;
            }
            std::vector<CtRef> out(n);
            t->lookup_bulk(keys.data(), n, out.data());
            unsigned hits = 0;
            for (unsigned i = 0; i < n; ++i) {
                const CtRef one = t->lookup(keys[i]);
                expect_ref(out[i], one.index, one.dir);
                hits += one.found();
            }
            if (n == 64) {
                EXPECT_GT(hits, 0u);
                EXPECT_LT(hits, n);
            }
        }
    }
}

TEST(CtTable, FillToCapacityThenEraseHalf) {
    constexpr uint32_t kCap = 100000;
    auto t = CtTable::create(kCap);
    ASSERT_TRUE(t);
    const auto tuples = random_tuples(kCap, 42);
    std::vector<uint32_t> idx(kCap);
    for (uint32_t i = 0; i < kCap; ++i) {
        idx[i] = t->insert(tuples[i], ct_tuple_reverse(tuples[i]));
        ASSERT_NE(idx[i], kCtNone) << "tuple " << i;
    }
    EXPECT_EQ(t->size(), kCap);
    EXPECT_EQ(std::set<uint32_t>(idx.begin(), idx.end()).size(), size_t{kCap});
    for (uint32_t i = 0; i < kCap; ++i) {
        const CtRef o = t->lookup(tuples[i]);
        const CtRef r = t->lookup(ct_tuple_reverse(tuples[i]));
        ASSERT_TRUE(o.index == idx[i] && o.dir == 0) << "tuple " << i;
        ASSERT_TRUE(r.index == idx[i] && r.dir == 1) << "tuple " << i;
    }
    const CtTuple extra = v4(0xffffffff, 1, 2, 3);
    EXPECT_EQ(t->insert(extra, ct_tuple_reverse(extra)), kCtNone);

    for (uint32_t i = 0; i < kCap; i += 2) t->erase(idx[i]);
    EXPECT_EQ(t->size(), kCap / 2);
    for (uint32_t i = 0; i < kCap; ++i) {
        const CtRef o = t->lookup(tuples[i]);
        const CtRef r = t->lookup(ct_tuple_reverse(tuples[i]));
        if (i % 2 == 0) {
            ASSERT_FALSE(o.found() || r.found()) << "erased tuple " << i;
            ASSERT_FALSE(t->live(idx[i]));
        } else {
            ASSERT_TRUE(o.index == idx[i] && o.dir == 0) << "tuple " << i;
            ASSERT_TRUE(r.index == idx[i] && r.dir == 1) << "tuple " << i;
        }
    }
    EXPECT_GE(t->memory_bytes(), size_t{kCap} * sizeof(CtEntry));
}

TEST(CtTable, SweepExpiresExactlyDueEntriesAndWraps) {
    constexpr uint32_t kCap = 1000;
    auto t = CtTable::create(kCap);
    ASSERT_TRUE(t);
    const auto tuples = random_tuples(kCap, 3);
    for (uint32_t i = 0; i < kCap; ++i) {
        const uint32_t idx = t->insert(tuples[i], ct_tuple_reverse(tuples[i]));
        ASSERT_NE(idx, kCtNone);
        t->entry(idx).expires_ms = idx;  // full pool: indices are exactly 0 .. kCap-1
    }
    std::vector<uint32_t> expired;
    auto erase = [&](uint32_t idx) {
        expired.push_back(idx);
        t->erase(idx);
    };
    auto expect_live_iff = [&](auto pred) {
        for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(t->live(i), pred(i)) << "entry " << i;
    };

    // Walks [0, 700): expires 0..499.
    EXPECT_EQ(t->sweep(499, 700, erase), 700u);
    EXPECT_EQ(expired.size(), 500u);
    expect_live_iff([](uint32_t i) { return i >= 500; });
    // Continues over [700, 1000) and wraps to [0, 400): expires 700..899, not 500..699.
    expired.clear();
    EXPECT_EQ(t->sweep(899, 700, erase), 300u);
    EXPECT_EQ(expired.size(), 200u);
    expect_live_iff([](uint32_t i) { return (i >= 500 && i < 700) || i >= 900; });
    // Continues over [400, 800): expires 500..699.
    expired.clear();
    EXPECT_EQ(t->sweep(899, 400, erase), 200u);
    EXPECT_EQ(expired.size(), 200u);
    expect_live_iff([](uint32_t i) { return i >= 900; });
    EXPECT_EQ(t->size(), 100u);
    // A budget beyond the capacity walks each slot once; nothing is due.
    expired.clear();
    EXPECT_EQ(t->sweep(899, 5000, erase), 100u);
    EXPECT_TRUE(expired.empty());
}

TEST(CtTable, NextLiveWalksExactlyTheLiveSet) {
    constexpr uint32_t kCap = 1000;  // not a multiple of 64
    auto t = CtTable::create(kCap);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->next_live(0), kCtNone);
    const auto tuples = random_tuples(kCap, 5);
    std::set<uint32_t> live;
    for (uint32_t i = 0; i < kCap; ++i)
        live.insert(t->insert(tuples[i], ct_tuple_reverse(tuples[i])));
    std::mt19937 rng(9);
    for (uint32_t i = 0; i < kCap; ++i) {
        // Erase long runs (whole bitmap words) as well as scattered entries.
        if ((i >= 128 && i < 320) || rng() % 3 != 0) {
            t->erase(i);
            live.erase(i);
        }
    }
    std::set<uint32_t> walked;
    for (uint32_t i = t->next_live(0); i != kCtNone; i = t->next_live(i + 1)) {
        ASSERT_TRUE(walked.insert(i).second);
        ASSERT_TRUE(t->live(i));
    }
    EXPECT_EQ(walked, live);
    EXPECT_EQ(t->size(), live.size());
    EXPECT_EQ(t->next_live(kCap), kCtNone);
    EXPECT_EQ(t->next_live(kCtNone), kCtNone);
}

TEST(CtTable, OrigEqualsReply) {
    auto t = CtTable::create(64);
    ASSERT_TRUE(t);
    // ICMP echo from a host to itself: the reply tuple is the original one.
    CtTuple self = v4(0x0100007f, 0x0100007f, 77, 77, 1);
    ASSERT_TRUE(ct_tuple_reverse(self) == self);
    // Some other connections first, so the ways are not all free.
    const auto tuples = random_tuples(20, 1);
    for (const auto& x : tuples) ASSERT_NE(t->insert(x, ct_tuple_reverse(x)), kCtNone);
    const uint32_t idx = t->insert(self, self);
    ASSERT_NE(idx, kCtNone);
    expect_ref(t->lookup(self), idx, 0);
    CtRef bulk;
    t->lookup_bulk(&self, 1, &bulk);
    expect_ref(bulk, idx, 0);
    EXPECT_EQ(t->insert(self, self), kCtNone);
    t->erase(idx);
    EXPECT_FALSE(t->lookup(self).found());
    EXPECT_EQ(t->size(), tuples.size());
    for (const auto& x : tuples) EXPECT_TRUE(t->lookup(x).found());
}

TEST(CtTable, FullBucketsRefuseAndRollBack) {
    auto t = CtTable::create(64);
    ASSERT_TRUE(t);
    // 18 tuples sharing one pair of buckets (16 ways).
    const auto same = colliding_tuples(18, 64);
    ASSERT_EQ(same.size(), 18u);
    std::vector<uint32_t> idx;
    for (unsigned k = 0; k < 8; ++k) {
        idx.push_back(t->insert(same[2 * k], same[2 * k + 1]));
        ASSERT_NE(idx.back(), kCtNone) << "pair " << k;
    }
    // Both buckets full: orig cannot be placed.
    EXPECT_EQ(t->insert(same[16], v4(1, 2, 3, 4)), kCtNone);
    // orig placed, reply cannot be: orig's slot must be given back.
    const CtTuple fresh = v4(5, 6, 7, 8);
    EXPECT_EQ(t->insert(fresh, same[16]), kCtNone);
    EXPECT_FALSE(t->lookup(fresh).found());
    EXPECT_FALSE(t->lookup(same[16]).found());
    EXPECT_EQ(t->size(), 8u);
    for (unsigned k = 0; k < 8; ++k) {
        expect_ref(t->lookup(same[2 * k]), idx[k], 0);
        expect_ref(t->lookup(same[2 * k + 1]), idx[k], 1);
    }
    // Freeing one connection makes room for exactly one more in those buckets.
    t->erase(idx[3]);
    const uint32_t n = t->insert(same[16], same[17]);
    ASSERT_NE(n, kCtNone);
    expect_ref(t->lookup(same[16]), n, 0);
    expect_ref(t->lookup(same[17]), n, 1);
    EXPECT_FALSE(t->lookup(same[6]).found());
    const uint32_t f = t->insert(fresh, ct_tuple_reverse(fresh));
    ASSERT_NE(f, kCtNone);
    expect_ref(t->lookup(fresh), f, 0);
}

TEST(CtTable, EqualSignaturesToldApartByTheTuple) {
    auto t = CtTable::create(64);
    ASSERT_TRUE(t);
    const auto [a, b] = same_hash_pair();
    ASSERT_EQ(ct_tuple_hash(a), ct_tuple_hash(b));
    ASSERT_FALSE(a == b);
    const uint32_t ia = t->insert(a, ct_tuple_reverse(a));
    ASSERT_NE(ia, kCtNone);
    EXPECT_FALSE(t->lookup(b).found());
    const uint32_t ib = t->insert(b, ct_tuple_reverse(b));
    ASSERT_NE(ib, kCtNone);
    expect_ref(t->lookup(a), ia, 0);
    expect_ref(t->lookup(b), ib, 0);
    t->erase(ia);
    EXPECT_FALSE(t->lookup(a).found());
    expect_ref(t->lookup(b), ib, 0);
}

TEST(CtTable, CreateRejectsBadCapacity) {
    EXPECT_EQ(CtTable::create(0), nullptr);
    EXPECT_EQ(CtTable::create(1u << 28), nullptr);
    auto one = CtTable::create(1);
    ASSERT_TRUE(one);
    EXPECT_EQ(one->capacity(), 1u);
    const CtTuple a = v4(1, 2, 3, 4);
    EXPECT_NE(one->insert(a, ct_tuple_reverse(a)), kCtNone);
    EXPECT_EQ(one->insert(v4(2, 2, 3, 4), v4(2, 3, 3, 4)), kCtNone);
    // Pool + bitmap + free stack + 2 buckets.
    EXPECT_EQ(one->memory_bytes(), sizeof(CtEntry) + 8 + 4 + 2 * 64);
}

}  // namespace
}  // namespace ferry
