// The AES-128 tuple hash: that it is AES (FIPS-197's example vector), that ct_tuple_hash and
// ct_owner_hash use it for IPv4 tuples exactly when the process chose it and SipHash otherwise,
// and that a table's bulk lookup (which hashes a burst in one loop compiled for AES-NI) finds
// what single lookups find under either hash.
#include "dataplane/aes_hash.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "dataplane/conntrack/ct_table.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/hash_key.h"

namespace ferry {
namespace {

constexpr unsigned kBurst = 32;  // one receive burst; lookup_bulk takes up to 64

#define REQUIRE_AES() \
    if (!cpu_has_aes()) GTEST_SKIP() << "this CPU has no AES-NI"

CtTuple v4(uint8_t host, uint16_t sport) {
    CtTuple t{};
    const uint8_t src[4] = {10, 0, 0, host};
    const uint8_t dst[4] = {192, 0, 2, 80};
    std::memcpy(t.src, src, 4);
    std::memcpy(t.dst, dst, 4);
    t.sport = sport;
    t.dport = 443;
    t.proto = 6;
    t.zone = 3;
    t.ip_version = 4;
    return t;
}

TEST(AesHash, IsAes128ByFips197) {
    REQUIRE_AES();
    // FIPS-197 Appendix C.1: key 00 01 .. 0f, plaintext 00 11 22 .. ff.
    const AesRoundKeys k = aes128_expand({0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL});
    const __m128i ct = aes128_encrypt(
        k, _mm_set_epi64x(static_cast<long long>(0xffeeddccbbaa9988ULL), 0x7766554433221100LL));
    uint8_t got[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(got), ct);
    const uint8_t want[16] = {0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30,
                              0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a};
    EXPECT_EQ(std::memcmp(got, want, 16), 0);
    EXPECT_EQ(aes128_hash(k, 0x7766554433221100ULL, 0xffeeddccbbaa9988ULL), 0xd8e0c469u);
}

TEST(AesHash, TupleHashesFollowTheProcesssChoice) {
    ASSERT_TRUE(hash_keys_init());
    const HashKeys keys = hash_keys();
    const CtTuple t = v4(5, 40000);
    uint64_t m[1], tail;
    ct_v4_message(t.src, t.dst, t.sport, t.dport, t.zone, t.proto, &m[0], &tail);
    const auto sip = static_cast<uint32_t>(siphash13_words(keys.ct_table, m, tail, kCtV4Tail));

    hash_keys_set(keys, false);
    EXPECT_FALSE(hash_v4_aes());
    EXPECT_EQ(ct_tuple_hash(t), sip);
    if (cpu_has_aes()) {
        hash_keys_set(keys, true);
        EXPECT_TRUE(hash_v4_aes());
        EXPECT_EQ(ct_tuple_hash(t), aes128_hash(aes128_expand(keys.ct_table_v4), m[0], tail));
        EXPECT_NE(ct_tuple_hash(t), sip);
        // The owner hash: its own key, and still the same for both directions.
        EXPECT_EQ(ct_owner_hash(t), ct_owner_hash(ct_tuple_reverse(t)));
        EXPECT_NE(ct_owner_hash(t), ct_tuple_hash(t));
        // IPv6 tuples keep SipHash.
        CtTuple six = t;
        six.ip_version = 6;
        six.src[15] = 1;
        uint64_t w[5];
        std::memcpy(w, &six, sizeof(w));
        EXPECT_EQ(ct_tuple_hash(six), static_cast<uint32_t>(siphash13_words(keys.ct_table, w)));
    }
    hash_keys_set(keys);
}

TEST(AesHash, BulkLookupFindsWhatSingleLookupsFind) {
    ASSERT_TRUE(hash_keys_init());
    const HashKeys keys = hash_keys();
    for (const bool aes : {false, true}) {
        if (aes && !cpu_has_aes()) continue;
        hash_keys_set(keys, aes);
        auto table = CtTable::create(1024);
        ASSERT_TRUE(table);
        std::vector<CtTuple> probes;
        for (uint16_t i = 0; i < 300; ++i) {
            CtTuple t = v4(static_cast<uint8_t>(i % 7), static_cast<uint16_t>(1000 + i));
            if (i % 5 == 0) {  // some IPv6 among them: the bulk loop hashes both kinds
                t.ip_version = 6;
                t.src[15] = static_cast<uint8_t>(i);
            }
            if (i % 3 != 0) {
                ASSERT_NE(table->insert(t, ct_tuple_reverse(t)), kCtNone);
            }
            probes.push_back(t);
        }
        for (size_t at = 0; at + kBurst <= probes.size(); at += kBurst) {
            CtRef got[kBurst];
            table->lookup_bulk(&probes[at], kBurst, got);
            for (unsigned i = 0; i < kBurst; ++i) {
                const CtRef one = table->lookup(probes[at + i]);
                EXPECT_EQ(got[i].found(), one.found()) << "aes " << aes << " probe " << at + i;
                EXPECT_EQ(got[i].found(), (at + i) % 3 != 0);
                if (one.found()) {
                    EXPECT_EQ(got[i].index, one.index);
                }
            }
        }
    }
    hash_keys_set(keys);
}

}  // namespace
}  // namespace ferry
