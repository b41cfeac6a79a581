// A VM trying to starve another VM's connection out of a conntrack shard. Each attacker tuple is
// found offline: it differs from the attacker's own base tuple only in its ports, and its two
// candidate buckets, as the attacker computes them, are the victim's. The attacker commits 16
// such connections (the victim's two 8-way buckets), then the victim commits.
//
// Expects, with the process's secret keys (drawn as ferryd draws them), the victim's connection
// to be stored whatever the attacker used to compute its tuples: the hash CtTable used before it
// was keyed (CRC32C), SipHash under a guessed key (zero, or the public default keys). Expects,
// as a control that the search itself works, the victim to be refused when the attacker does
// know the key. Before keys were added the first case was refused too (the victim's commit
// failed ct_full). Every case runs with both IPv4 tuple hashes (AES-128 and SipHash-1-3).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "dataplane/conntrack/ct_table.h"
#include "dataplane/hash_key.h"
#include "tests/unit/ct_collide.h"

namespace ferry {
namespace {

using test::BucketPair;
using test::ct_bucket_mask;
using test::ct_bucket_pair;
using test::tuples_in_buckets;

constexpr uint32_t kCapacity = 256;  // 128 buckets of 8 ways
constexpr unsigned kFill = 16;       // both of the victim's buckets

CtTuple v4(const uint8_t (&src)[4], const uint8_t (&dst)[4], uint16_t sport, uint16_t dport) {
    CtTuple t{};
    std::memcpy(t.src, src, 4);
    std::memcpy(t.dst, dst, 4);
    t.sport = sport;
    t.dport = dport;
    t.proto = 6;
    t.ip_version = 4;
    t.zone = 1;
    return t;
}

/// The victims: connections of another VM (10.0.0.5) to a few well-known servers.
std::vector<CtTuple> victims() {
    std::vector<CtTuple> out;
    for (uint16_t i = 0; i < 6; ++i)
        out.push_back(v4({10, 0, 0, 5}, {192, 0, 2, static_cast<uint8_t>(80 + i)},
                         static_cast<uint16_t>(40000 + 17 * i), i % 2 ? 443 : 53));
    return out;
}

/// The attacker (10.0.0.66, to a server of its own) fills the victim's buckets as `hash` says
/// they are, then the victim commits. @return whether the victim's connection was stored.
template <class Hash>
bool victim_survives(const CtTuple& victim, Hash&& hash) {
    const uint32_t mask = ct_bucket_mask(kCapacity);
    const BucketPair target = ct_bucket_pair(hash(victim), mask);
    const CtTuple base = v4({10, 0, 0, 66}, {198, 51, 100, 7}, 0, 0);
    const auto crafted = tuples_in_buckets(base, target, mask, hash, kFill, true);
    EXPECT_EQ(crafted.size(), kFill);
    auto table = CtTable::create(kCapacity);
    EXPECT_TRUE(table);
    if (!table) return false;
    for (const CtTuple& t : crafted) EXPECT_NE(table->insert(t, ct_tuple_reverse(t)), kCtNone);
    const uint32_t idx = table->insert(victim, ct_tuple_reverse(victim));
    if (idx == kCtNone) return false;
    EXPECT_EQ(table->lookup(victim).index, idx);
    EXPECT_EQ(table->lookup(ct_tuple_reverse(victim)).index, idx);
    return true;
}

/// An IPv4 tuple's hash under some key, exactly as ct_tuple_hash computes it: AES-128 where the
/// process hashes with AES-NI, SipHash-1-3 otherwise.
uint32_t guessed_hash(const CtTuple& t, const SipKey& key) {
    uint64_t m[1], tail;
    ct_v4_message(t.src, t.dst, t.sport, t.dport, t.zone, t.proto, &m[0], &tail);
    if (hash_v4_aes()) return aes128_hash(aes128_expand(key), m[0], tail);
    return static_cast<uint32_t>(siphash13_words(key, m, tail, kCtV4Tail));
}

/// The key ct_tuple_hash uses for IPv4 tuples in this process.
const SipKey& table_key() {
    return hash_v4_aes() ? hash_keys().ct_table_v4 : hash_keys().ct_table;
}

/// Each case with either IPv4 tuple hash: AES-128 (skipped on a CPU without AES-NI) and
/// SipHash-1-3, both under the process's secret keys.
class CtHashAttack : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        ASSERT_TRUE(hash_keys_init());
        if (GetParam() && !cpu_has_aes()) GTEST_SKIP() << "this CPU has no AES-NI";
        hash_keys_set(hash_keys(), GetParam());
        ASSERT_EQ(hash_v4_aes(), GetParam());
    }
    void TearDown() override { hash_keys_set(hash_keys()); }
};

TEST_P(CtHashAttack, UnkeyedCollisionsNoLongerFillTheVictimsBuckets) {
    for (const CtTuple& v : victims()) EXPECT_TRUE(victim_survives(v, test::unkeyed_tuple_hash));
}

TEST_P(CtHashAttack, GuessedKeysDoNotFillTheVictimsBuckets) {
    const SipKey guesses[] = {{0, 0},
                              kPublicHashKeys.ct_table,
                              kPublicHashKeys.ct_owner,
                              kPublicHashKeys.ct_table_v4,
                              kPublicHashKeys.ct_owner_v4};
    for (const SipKey& g : guesses) {
        for (const CtTuple& v : victims())
            EXPECT_TRUE(victim_survives(v, [&](const CtTuple& t) { return guessed_hash(t, g); }));
    }
}

TEST_P(CtHashAttack, TheSearchWorksWhenTheKeyIsKnown) {
    // The guessed hash with the process's own key is ct_tuple_hash itself.
    const CtTuple probe = victims()[0];
    ASSERT_EQ(guessed_hash(probe, table_key()), ct_tuple_hash(probe));
    for (const CtTuple& v : victims()) EXPECT_FALSE(victim_survives(v, ct_tuple_hash));
}

INSTANTIATE_TEST_SUITE_P(V4Hash, CtHashAttack, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& i) {
                             return i.param ? "Aes128" : "SipHash13";
                         });

TEST(CtHashKeys, InitDrawsSecretKeysOnceAndKeepsThem) {
    ASSERT_TRUE(hash_keys_init());
    const HashKeys first = hash_keys();
    EXPECT_NE(std::memcmp(&first, &kPublicHashKeys, sizeof(first)), 0);
    // Every use has its own key.
    EXPECT_FALSE(first.ct_table.k0 == first.ct_owner.k0 && first.ct_table.k1 == first.ct_owner.k1);
    ASSERT_TRUE(hash_keys_init());
    EXPECT_EQ(std::memcmp(&first, &hash_keys(), sizeof(first)), 0);
}

}  // namespace
}  // namespace ferry
