// FlowCache: the per-worker exact-match cache. Each test inserts classifier answers for flow keys
// and expects lookups to return exactly those answers for the same (key, table, generation), and
// a miss for anything else. Random workloads are checked against a std::unordered_map model.
#include "dataplane/flow_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/classifier.h"
#include "dataplane/rule.h"

namespace ferry {
namespace {

/// A TCP/IPv4 flow key made from a number: nearby numbers give keys that differ in a few bits,
/// the way real flows do (same hosts, other ports).
FlowKey tcp_key(uint32_t n, uint8_t ct_state = 0) {
    FlowKey k{};
    k.in_port = static_cast<uint16_t>(n % 4);
    k.vlan = kNoVlan;
    k.ethertype = 0x0800;
    k.ip_proto = 6;
    k.ip_version = 4;
    k.l4_src = static_cast<uint16_t>(1024 + (n & 0xfff));
    k.l4_dst = 80;
    k.ct_state = ct_state;
    const uint8_t src[4] = {10, 0, static_cast<uint8_t>(n >> 20), static_cast<uint8_t>(n >> 12)};
    const uint8_t dst[4] = {10, 1, 0, static_cast<uint8_t>(n >> 28)};
    std::memcpy(k.ip_src, src, 4);
    std::memcpy(k.ip_dst, dst, 4);
    return k;
}

/// One lookup of one key. @return true on a hit, with *rule set.
bool lookup_one(FlowCache& fc, const FlowKey& key, uint8_t table, uint64_t gen,
                const CompiledRule** rule) {
    return fc.lookup_bulk(&key, 1, table, gen, rule) == 1;
}

struct ModelKey {
    FlowKey key;
    uint8_t table;
    bool operator==(const ModelKey& o) const {
        return table == o.table && std::memcmp(&key, &o.key, sizeof(key)) == 0;
    }
};
struct ModelKeyHash {
    size_t operator()(const ModelKey& k) const {
        return std::hash<std::string_view>()(
                   std::string_view(reinterpret_cast<const char*>(&k.key), sizeof(k.key))) ^
               k.table;
    }
};
struct ModelValue {
    uint64_t generation;
    const CompiledRule* rule;
};
using Model = std::unordered_map<ModelKey, ModelValue, ModelKeyHash>;

struct Dumped {
    FlowKey key;
    uint8_t table;
    const CompiledRule* rule;
    uint64_t hits;
};

/// Every entry of generation gen, dumped in slices of `slice` buckets.
std::vector<Dumped> dump_all(const FlowCache& fc, uint64_t gen, uint32_t slice = 1000) {
    std::vector<Dumped> all;
    uint32_t from = 0;
    do {
        from = fc.dump(gen, from, slice,
                       [&](const FlowKey& k, uint8_t t, const CompiledRule* r, uint64_t hits) {
                           all.push_back({k, t, r, hits});
                       });
    } while (from != 0);
    return all;
}

class FlowCacheTest : public testing::Test {
protected:
    FlowCacheTest() : rules_(16) {}
    /// The answer the "classifier" gives for flow n: a rule, or nullptr for one flow in five.
    const CompiledRule* rule_for(uint32_t n) { return n % 5 == 0 ? nullptr : &rules_[n % 16]; }
    std::vector<CompiledRule> rules_;
};

TEST_F(FlowCacheTest, MissThenInsertThenHit) {
    auto fc = FlowCache::create(1024);
    ASSERT_NE(fc, nullptr);
    const FlowKey k = tcp_key(7);
    const CompiledRule* got = &rules_[0];
    EXPECT_FALSE(lookup_one(*fc, k, 0, 1, &got));
    EXPECT_EQ(got, nullptr);
    fc->insert(k, 0, 1, &rules_[3]);
    EXPECT_TRUE(lookup_one(*fc, k, 0, 1, &got));
    EXPECT_EQ(got, &rules_[3]);
    const FlowCache::Stats s = fc->stats();
    EXPECT_EQ(s.hits, 1u);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.inserts, 1u);
    EXPECT_EQ(s.evictions, 0u);
}

TEST_F(FlowCacheTest, CachedNoMatchIsAHitWithNullRule) {
    auto fc = FlowCache::create(1024);
    const FlowKey k = tcp_key(8);
    fc->insert(k, 0, 1, nullptr);
    const CompiledRule* got = &rules_[0];
    EXPECT_TRUE(lookup_one(*fc, k, 0, 1, &got));  // the mask, not the pointer, tells a hit
    EXPECT_EQ(got, nullptr);
    EXPECT_EQ(fc->stats().hits, 1u);
}

TEST_F(FlowCacheTest, InsertOverwritesTheSameKey) {
    auto fc = FlowCache::create(1024);
    const FlowKey k = tcp_key(9);
    const CompiledRule* got = nullptr;
    fc->insert(k, 2, 1, &rules_[1]);
    EXPECT_TRUE(lookup_one(*fc, k, 2, 1, &got));
    EXPECT_TRUE(lookup_one(*fc, k, 2, 1, &got));
    fc->insert(k, 2, 1, &rules_[2]);
    EXPECT_TRUE(lookup_one(*fc, k, 2, 1, &got));
    EXPECT_EQ(got, &rules_[2]);
    const std::vector<Dumped> all = dump_all(*fc, 1);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].rule, &rules_[2]);
    EXPECT_EQ(all[0].table, 2);
    EXPECT_EQ(all[0].hits, 1u) << "a new answer starts a new hit count";
    EXPECT_EQ(fc->stats().evictions, 0u);
}

TEST_F(FlowCacheTest, GenerationChangeInvalidatesEverything) {
    auto fc = FlowCache::create(4096);
    for (uint32_t n = 0; n < 500; ++n) fc->insert(tcp_key(n), 0, 1, rule_for(n));
    const CompiledRule* got;
    for (uint32_t n = 0; n < 500; ++n) {
        ASSERT_FALSE(lookup_one(*fc, tcp_key(n), 0, 2, &got)) << n;
        ASSERT_TRUE(lookup_one(*fc, tcp_key(n), 0, 1, &got)) << n;
        ASSERT_EQ(got, rule_for(n));
    }
    // A new answer for one key replaces the stale entry: the old generation no longer finds it.
    fc->insert(tcp_key(3), 0, 2, &rules_[9]);
    EXPECT_TRUE(lookup_one(*fc, tcp_key(3), 0, 2, &got));
    EXPECT_EQ(got, &rules_[9]);
    EXPECT_FALSE(lookup_one(*fc, tcp_key(3), 0, 1, &got));
}

TEST_F(FlowCacheTest, StaleEntriesAreReplacedWithoutEvicting) {
    // Fill every way of a small cache under generation 1, then insert under generation 2: the
    // stale ways are free, so nothing counts as an eviction.
    auto fc = FlowCache::create(1024);
    for (uint32_t n = 0; n < 8000; ++n) fc->insert(tcp_key(n), 0, 1, rule_for(n));
    ASSERT_EQ(dump_all(*fc, 1).size(), fc->capacity());
    const uint64_t evictions = fc->stats().evictions;
    for (uint32_t n = 0; n < 300; ++n) fc->insert(tcp_key(n + 100000), 0, 2, rule_for(n));
    EXPECT_EQ(fc->stats().evictions, evictions);
    EXPECT_EQ(dump_all(*fc, 2).size(), 300u);
    EXPECT_EQ(dump_all(*fc, 1).size(), fc->capacity() - 300);
}

TEST_F(FlowCacheTest, TableIdIsPartOfTheKey) {
    auto fc = FlowCache::create(1024);
    const FlowKey k = tcp_key(11);
    fc->insert(k, 0, 1, &rules_[1]);
    const CompiledRule* got;
    EXPECT_FALSE(lookup_one(*fc, k, 1, 1, &got));
    fc->insert(k, 1, 1, &rules_[2]);
    EXPECT_TRUE(lookup_one(*fc, k, 0, 1, &got));
    EXPECT_EQ(got, &rules_[1]);
    EXPECT_TRUE(lookup_one(*fc, k, 1, 1, &got));
    EXPECT_EQ(got, &rules_[2]);
    EXPECT_FALSE(lookup_one(*fc, k, kMaxTables - 1, 1, &got));
}

TEST_F(FlowCacheTest, CtStateIsPartOfTheKey) {
    auto fc = FlowCache::create(1024);
    const FlowKey untracked = tcp_key(12);
    const FlowKey established = tcp_key(12, kCtTracked | kCtEstablished);
    const FlowKey fresh = tcp_key(12, kCtTracked | kCtNew);
    fc->insert(untracked, 0, 1, &rules_[1]);
    fc->insert(established, 0, 1, &rules_[2]);
    const CompiledRule* got;
    EXPECT_TRUE(lookup_one(*fc, untracked, 0, 1, &got));
    EXPECT_EQ(got, &rules_[1]);
    EXPECT_TRUE(lookup_one(*fc, established, 0, 1, &got));
    EXPECT_EQ(got, &rules_[2]);
    EXPECT_FALSE(lookup_one(*fc, fresh, 0, 1, &got));
}

TEST(FlowCacheCapacity, RoundsUpToAPowerOfTwoOfAtLeast1024) {
    const std::pair<uint32_t, uint32_t> cases[] = {{0, 1024},    {1, 1024},       {1000, 1024},
                                                   {1024, 1024}, {1025, 2048},    {4096, 4096},
                                                   {5000, 8192}, {100000, 131072}};
    for (auto [asked, expected] : cases) {
        auto fc = FlowCache::create(asked);
        ASSERT_NE(fc, nullptr);
        EXPECT_EQ(fc->capacity(), expected) << asked;
    }
}

/// Drives a random workload the way a worker does (bulk lookup, insert the misses) and checks
/// every answer against the model. exact: the model must match hit for hit (no eviction may have
/// happened); otherwise every reported hit must be right, but a miss is allowed.
void run_random_workload(FlowCache& fc, uint32_t flows, int batches, bool exact,
                         const std::vector<CompiledRule>& rules, uint32_t seed) {
    std::mt19937 rng(seed);
    Model model;
    uint64_t gen = 1;
    FlowKey keys[FlowCache::kBulkMax];
    uint32_t ids[FlowCache::kBulkMax];
    const CompiledRule* out[FlowCache::kBulkMax];
    uint64_t model_hits = 0;
    for (int batch = 0; batch < batches; ++batch) {
        if (rng() % 500 == 0) ++gen;  // a rule change now and then
        const unsigned n = 1 + rng() % FlowCache::kBulkMax;
        const auto table = static_cast<uint8_t>(rng() % 3);
        for (unsigned i = 0; i < n; ++i) {
            ids[i] = rng() % flows;
            keys[i] = tcp_key(ids[i], static_cast<uint8_t>(ids[i] % 3 == 0 ? kCtTracked : 0));
        }
        // The model's answers as of the lookup: a key twice in a batch misses twice.
        bool model_hit[FlowCache::kBulkMax];
        const CompiledRule* model_rule[FlowCache::kBulkMax];
        for (unsigned i = 0; i < n; ++i) {
            auto it = model.find(ModelKey{keys[i], table});
            model_hit[i] = it != model.end() && it->second.generation == gen;
            model_rule[i] = model_hit[i] ? it->second.rule : nullptr;
            model_hits += model_hit[i];
        }
        const uint64_t hits = fc.lookup_bulk(keys, n, table, gen, out);
        if (n < 64) {
            ASSERT_EQ(hits >> n, 0u) << "bits set beyond n";
        }
        for (unsigned i = 0; i < n; ++i) {
            const bool hit = (hits >> i) & 1;
            if (hit) {
                ASSERT_TRUE(model_hit[i]) << "batch " << batch << " key " << ids[i];
                ASSERT_EQ(out[i], model_rule[i]) << "batch " << batch << " key " << ids[i];
            } else {
                ASSERT_EQ(out[i], nullptr);
                if (exact) {
                    ASSERT_FALSE(model_hit[i]) << "batch " << batch << " key " << ids[i];
                }
            }
        }
        // The worker inserts the classifier's answer for each miss. The answer depends on the
        // generation too, so a stale entry reported as a hit would show a wrong rule.
        for (unsigned i = 0; i < n; ++i) {
            if ((hits >> i) & 1) continue;
            const CompiledRule* r =
                (ids[i] + gen) % 5 == 0 ? nullptr : &rules[(ids[i] + gen + table) % 16];
            fc.insert(keys[i], table, gen, r);
            model[ModelKey{keys[i], table}] = ModelValue{gen, r};
        }
    }
    if (exact) {
        EXPECT_EQ(fc.stats().hits, model_hits);
    }
}

TEST_F(FlowCacheTest, BulkLookupMatchesModelWhenEverythingFits) {
    // 3 tables x 1500 keys in 32768 entries: about 1.1 entries per 8-way bucket, no bucket
    // overflows with this seed (checked below), so the cache must behave exactly like the model.
    auto fc = FlowCache::create(32768);
    run_random_workload(*fc, 1500, 20000, true, rules_, 1);
    const FlowCache::Stats s = fc->stats();
    EXPECT_EQ(s.evictions, 0u);
    EXPECT_GT(s.hits, s.misses);
    EXPECT_EQ(s.inserts, s.misses);
}

TEST_F(FlowCacheTest, OverfullCacheNeverReportsAWrongHit) {
    auto fc = FlowCache::create(1024);
    run_random_workload(*fc, 20000, 20000, false, rules_, 2);
    const FlowCache::Stats s = fc->stats();
    EXPECT_GT(s.evictions, 10000u);
    EXPECT_GT(s.hits, 0u);
}

TEST_F(FlowCacheTest, HotFlowSurvivesAStreamOfOneOffFlows) {
    // 1024 entries = 128 buckets, so the hot flow's bucket receives about 1600 of the 200000
    // one-off flows; between two hits of the hot flow come 16, so at most a handful land in its
    // bucket and LRU keeps it. FIFO or random replacement would lose it within a few hundred.
    auto fc = FlowCache::create(1024);
    const FlowKey hot = tcp_key(0xabcdef, kCtTracked | kCtEstablished);
    fc->insert(hot, 0, 1, &rules_[5]);
    const CompiledRule* got;
    uint32_t next_cold = 0;
    for (int round = 0; round < 12500; ++round) {
        ASSERT_TRUE(lookup_one(*fc, hot, 0, 1, &got)) << "evicted in round " << round;
        ASSERT_EQ(got, &rules_[5]);
        for (int i = 0; i < 16; ++i) {
            const FlowKey cold = tcp_key(next_cold++);
            ASSERT_FALSE(lookup_one(*fc, cold, 0, 1, &got));
            fc->insert(cold, 0, 1, rule_for(next_cold));
        }
    }
    EXPECT_GT(fc->stats().evictions, 190000u);
}

TEST_F(FlowCacheTest, EntriesHitTogetherOutliveTheOthers) {
    // Fill a small cache, keep hitting a working set of 1/8 of it, and push twice its capacity of
    // new flows through in batches: the working set must still be all there. With 8 ways and
    // about one hot flow per bucket, a hot flow is lost only if 7 new flows reach its bucket
    // between two of its hits (8 per round, 128 buckets: practically never).
    auto fc = FlowCache::create(1024);
    std::vector<FlowKey> hot;
    for (uint32_t n = 0; n < 128; ++n) hot.push_back(tcp_key(n * 7919 + 1, kCtTracked));
    for (const FlowKey& k : hot) fc->insert(k, 0, 1, &rules_[1]);
    const CompiledRule* out[FlowCache::kBulkMax];
    uint32_t cold = 1u << 24;
    for (int round = 0; round < 256; ++round) {
        for (size_t i = 0; i < hot.size(); i += 64)
            ASSERT_EQ(fc->lookup_bulk(&hot[i], 64, 0, 1, out), ~0ULL) << round;
        for (int i = 0; i < 8; ++i) fc->insert(tcp_key(cold++), 0, 1, &rules_[2]);
    }
}

TEST_F(FlowCacheTest, DumpVisitsExactlyTheCurrentGenerationInSlices) {
    auto fc = FlowCache::create(4096);
    // Generation 1: flows 0..299. Generation 2: flows 200..399 (200..299 re-inserted).
    for (uint32_t n = 0; n < 300; ++n)
        fc->insert(tcp_key(n), static_cast<uint8_t>(n % 4), 1, rule_for(n));
    for (uint32_t n = 200; n < 400; ++n)
        fc->insert(tcp_key(n), static_cast<uint8_t>(n % 4), 2, rule_for(n + 1));
    // Hit flow n of generation 2 (n % 7) times.
    const CompiledRule* got;
    for (uint32_t n = 200; n < 400; ++n)
        for (uint32_t i = 0; i < n % 7; ++i)
            ASSERT_TRUE(lookup_one(*fc, tcp_key(n), static_cast<uint8_t>(n % 4), 2, &got));
    ASSERT_EQ(fc->stats().evictions, 0u);

    std::map<uint32_t, int> seen;  // flow -> times visited
    uint32_t from = 0, slices = 0;
    do {
        const uint32_t next =
            fc->dump(2, from, 7,
                     [&](const FlowKey& k, uint8_t table, const CompiledRule* rule, uint64_t hits) {
                         uint32_t n = 0;
                         for (; n < 400; ++n) {
                             const FlowKey expected = tcp_key(n);
                             if (std::memcmp(&k, &expected, sizeof(k)) == 0) break;
                         }
                         ASSERT_LT(n, 400u) << "unknown key";
                         EXPECT_EQ(table, n % 4);
                         EXPECT_EQ(rule, rule_for(n + 1));
                         EXPECT_EQ(hits, n % 7);
                         ++seen[n];
                     });
        ++slices;
        if (next != 0) {
            EXPECT_EQ(next, from + 7);
        }
        from = next;
    } while (from != 0);
    EXPECT_EQ(slices, (fc->capacity() / 8 + 6) / 7);  // 8 ways per bucket
    ASSERT_EQ(seen.size(), 200u);
    EXPECT_EQ(seen.begin()->first, 200u);
    for (auto [n, times] : seen) EXPECT_EQ(times, 1) << n;

    // Generation 1 still holds the 200 flows that were not re-inserted; nothing else exists.
    EXPECT_EQ(dump_all(*fc, 1).size(), 200u);
    EXPECT_EQ(dump_all(*fc, 1, 1).size(), 200u);
    EXPECT_TRUE(dump_all(*fc, 3).empty());
}

TEST_F(FlowCacheTest, DumpPastTheEndReturnsZero) {
    auto fc = FlowCache::create(1024);
    fc->insert(tcp_key(1), 0, 1, nullptr);
    int visits = 0;
    EXPECT_EQ(fc->dump(1, 1u << 30, 10, [&](auto&&...) { ++visits; }), 0u);
    EXPECT_EQ(fc->dump(1, 0, 1u << 31, [&](auto&&...) { ++visits; }), 0u);
    EXPECT_EQ(visits, 1);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

// An entry of an earlier snapshot hits when the current snapshot revalidates it (no change since
// touched its flow), taking the current snapshot's rule; otherwise it misses.
TEST(FlowCacheRevalidate, StaleEntryHitsOnlyWhileNoChangeTouchedItsFlow) {
    const FlowKey a = tcp_key(1), b = tcp_key(2);
    CompiledRule any{};  // one rule matching every key: index 5
    any.index = 5;
    any.n_actions = 1;
    std::vector<CompiledRule> rules{any};
    auto g1 = Classifier::build(rules, 1, nullptr, nullptr);
    auto fc = FlowCache::create(1024);
    fc->insert(a, 0, 1, g1->lookup(a, 0));
    fc->insert(b, 0, 1, g1->lookup(b, 0));

    // Generation 2 adds a rule matching only b.
    CompiledRule only_b{};
    only_b.index = 6;
    only_b.priority = 10;
    only_b.n_actions = 1;
    only_b.mask.l4_src = 0xffff;
    only_b.value.l4_src = b.l4_src;
    ASSERT_NE(a.l4_src, b.l4_src);
    RuleDelta d{.added = {only_b}, .removed = {}, .full = false};
    rules.push_back(only_b);
    auto g2 = Classifier::build(rules, 2, g1.get(), &d);

    const CompiledRule* out[2] = {};
    const FlowKey keys[2] = {a, b};
    EXPECT_EQ(fc->lookup_bulk(keys, 2, 0, 2, out, g2.get()), 0b01u);
    EXPECT_EQ(out[0], g2->lookup(a, 0));  // re-pointed into generation 2
    EXPECT_EQ(out[1], nullptr);
    EXPECT_EQ(fc->stats().revalidated, 1u);
    // Without a snapshot to ask, an entry of another generation is a miss, as before.
    EXPECT_EQ(fc->lookup_bulk(keys, 2, 0, 3, out), 0u);
    // a is now an entry of generation 2: a plain hit there.
    EXPECT_EQ(fc->lookup_bulk(keys, 1, 0, 2, out), 0b1u);
}

}  // namespace
}  // namespace ferry
