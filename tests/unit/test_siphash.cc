// SipHash: the reference test vectors. SipHash-2-4 with key 00 01 .. 0f on the messages
// 00 01 .. (len - 1), len 0..63 (the reference implementation's vectors.h; entry 15 is the
// paper's Appendix A example), SipHash-1-3 (the variant the tables use) against the reference
// implementation's outputs, and the fixed-size word variant against the byte-wise one.
#include "dataplane/siphash.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

namespace ferry {
namespace {

constexpr SipKey kRefKey = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};

constexpr uint64_t kSip24[64] = {
    0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
    0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
    0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
    0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
    0x3f2acc7f57c29bdbULL, 0x699ae9f52cbe4794ULL, 0x4bc1b3f0968dd39cULL, 0xbb6dc91da77961bdULL,
    0xbed65cf21aa2ee98ULL, 0xd0f2cbb02e3b67c7ULL, 0x93536795e3a33e88ULL, 0xa80c038ccd5ccec8ULL,
    0xb8ad50c6f649af94ULL, 0xbce192de8a85b8eaULL, 0x17d835b85bbb15f3ULL, 0x2f2e6163076bcfadULL,
    0xde4daaaca71dc9a5ULL, 0xa6a2506687956571ULL, 0xad87a3535c49ef28ULL, 0x32d892fad841c342ULL,
    0x7127512f72f27cceULL, 0xa7f32346f95978e3ULL, 0x12e0b01abb051238ULL, 0x15e034d40fa197aeULL,
    0x314dffbe0815a3b4ULL, 0x027990f029623981ULL, 0xcadcd4e59ef40c4dULL, 0x9abfd8766a33735cULL,
    0x0e3ea96b5304a7d0ULL, 0xad0c42d6fc585992ULL, 0x187306c89bc215a9ULL, 0xd4a60abcf3792b95ULL,
    0xf935451de4f21df2ULL, 0xa9538f0419755787ULL, 0xdb9acddff56ca510ULL, 0xd06c98cd5c0975ebULL,
    0xe612a3cb9ecba951ULL, 0xc766e62cfcadaf96ULL, 0xee64435a9752fe72ULL, 0xa192d576b245165aULL,
    0x0a8787bf8ecb74b2ULL, 0x81b3e73d20b49b6fULL, 0x7fa8220ba3b2eceaULL, 0x245731c13ca42499ULL,
    0xb78dbfaf3a8d83bdULL, 0xea1ad565322a1a0bULL, 0x60e61c23a3795013ULL, 0x6606d7e446282b93ULL,
    0x6ca4ecb15c5f91e1ULL, 0x9f626da15c9625f3ULL, 0xe51b38608ef25f57ULL, 0x958a324ceb064572ULL,
};

TEST(SipHash, Sip24ReferenceVectors) {
    uint8_t msg[64];
    for (unsigned i = 0; i < 64; ++i) msg[i] = static_cast<uint8_t>(i);
    for (unsigned len = 0; len < 64; ++len)
        EXPECT_EQ((siphash<2, 4>(kRefKey, msg, len)), kSip24[len]) << "len " << len;
}

TEST(SipHash, Sip13ReferenceOutputs) {
    // The reference implementation built with cROUNDS=1, dROUNDS=3, all-zero key.
    constexpr SipKey zero = {0, 0};
    EXPECT_EQ((siphash<1, 3>(zero, "", 0)), 0xd1fba762150c532cULL);
    EXPECT_EQ((siphash<1, 3>(zero, "siphash", 7)), 0x8264ceeccb16bcbeULL);
}

TEST(SipHash, WordVariantEqualsByteVariant) {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 1000; ++i) {
        const SipKey k{rng(), rng()};
        uint64_t w2[2], w5[5], w9[9];
        for (auto& x : w2) x = rng();
        for (auto& x : w5) x = rng();
        for (auto& x : w9) x = rng();
        EXPECT_EQ(siphash13_words(k, w2), (siphash<1, 3>(k, w2, sizeof(w2))));
        EXPECT_EQ(siphash13_words(k, w5), (siphash<1, 3>(k, w5, sizeof(w5))));
        EXPECT_EQ(siphash13_words(k, w9), (siphash<1, 3>(k, w9, sizeof(w9))));
        // With a tail of 0..7 bytes.
        for (unsigned tl = 0; tl < 8; ++tl) {
            uint8_t bytes[48];
            std::memcpy(bytes, w5, sizeof(w5));
            const uint64_t tail = tl == 0 ? 0 : w2[0] & (~uint64_t{0} >> (64 - 8 * tl));
            std::memcpy(bytes + sizeof(w5), &tail, 8);
            EXPECT_EQ(siphash13_words(k, w5, tail, tl), (siphash<1, 3>(k, bytes, 40 + tl)));
        }
    }
}

TEST(SipHash, KeyChangesEveryOutput) {
    uint64_t w[5] = {1, 2, 3, 4, 5};
    const uint64_t a = siphash13_words(SipKey{1, 2}, w);
    const uint64_t b = siphash13_words(SipKey{1, 3}, w);
    EXPECT_NE(a, b);
    // About half the bits differ (a PRF), not a fixed XOR pattern as a seeded CRC would give.
    EXPECT_GT(__builtin_popcountll(a ^ b), 16);
}

}  // namespace
}  // namespace ferry
