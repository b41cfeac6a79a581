// AES-128 as the keyed hash of one 16-byte block, on CPUs with AES-NI.
//
// Why: an IPv4 connection tuple (15 bytes) fits one block, and AES-128 under a secret key is a
// pseudorandom permutation, so its output truncated to 32 bits is as unpredictable to a tenant
// as SipHash's (dataplane/siphash.h) -- no collision can be computed without the key -- while it
// costs ten `aesenc` instructions that pipeline across a burst: about a third of SipHash-1-3's
// time per tuple on the test machine, close to the unkeyed CRC32C the tables used first
// (docs/conntrack.md#keyed-hashes has the figures). A CPU without AES-NI keeps SipHash
// (hash_key.h chooses once, when the keys are set).
//
// The functions carry `target("aes")`: they are compiled for AES-NI whatever the build's -march,
// and must only run once cpu_has_aes() said yes. Callers compiled without the attribute get a
// call instead of inlined code; a loop that hashes a burst should carry the attribute itself.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "dataplane/siphash.h"

namespace ferry {

/// AES-128's key schedule: the 11 round keys.
struct AesRoundKeys {
    __m128i rk[11];
};

/// Whether this CPU executes AES-NI. Context: any, also before main() (a static initialiser
/// may run before the compiler runtime's own CPU probe, so this probes first).
inline bool cpu_has_aes() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") != 0;
}

namespace aes_detail {

/// One step of the AES-128 key schedule (FIPS-197 §5.2), given aeskeygenassist's output for
/// the previous round key.
__attribute__((target("aes"))) inline __m128i expand_step(__m128i key, __m128i assist) {
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

}  // namespace aes_detail

/// The round keys of a 128-bit key; the key's bytes are k0 little-endian, then k1 (the layout
/// SipKey has). Context: any, on a CPU with AES-NI.
__attribute__((target("aes"))) inline AesRoundKeys aes128_expand(const SipKey& key) {
    using aes_detail::expand_step;
    AesRoundKeys r;
    r.rk[0] = _mm_set_epi64x(static_cast<long long>(key.k1), static_cast<long long>(key.k0));
    // aeskeygenassist takes the round constant as an immediate: one line per round.
    r.rk[1] = expand_step(r.rk[0], _mm_aeskeygenassist_si128(r.rk[0], 0x01));
    r.rk[2] = expand_step(r.rk[1], _mm_aeskeygenassist_si128(r.rk[1], 0x02));
    r.rk[3] = expand_step(r.rk[2], _mm_aeskeygenassist_si128(r.rk[2], 0x04));
    r.rk[4] = expand_step(r.rk[3], _mm_aeskeygenassist_si128(r.rk[3], 0x08));
    r.rk[5] = expand_step(r.rk[4], _mm_aeskeygenassist_si128(r.rk[4], 0x10));
    r.rk[6] = expand_step(r.rk[5], _mm_aeskeygenassist_si128(r.rk[5], 0x20));
    r.rk[7] = expand_step(r.rk[6], _mm_aeskeygenassist_si128(r.rk[6], 0x40));
    r.rk[8] = expand_step(r.rk[7], _mm_aeskeygenassist_si128(r.rk[7], 0x80));
    r.rk[9] = expand_step(r.rk[8], _mm_aeskeygenassist_si128(r.rk[8], 0x1b));
    r.rk[10] = expand_step(r.rk[9], _mm_aeskeygenassist_si128(r.rk[9], 0x36));
    return r;
}

/// AES-128 encryption of one block. Context: any, on a CPU with AES-NI.
__attribute__((target("aes"))) inline __m128i aes128_encrypt(const AesRoundKeys& k, __m128i b) {
    b = _mm_xor_si128(b, k.rk[0]);
    for (int i = 1; i < 10; ++i) b = _mm_aesenc_si128(b, k.rk[i]);
    return _mm_aesenclast_si128(b, k.rk[10]);
}

/// The keyed hash of the 16 bytes `lo` then `hi` (each little-endian): the ciphertext's first
/// 4 bytes. Context: any (fast path), on a CPU with AES-NI.
__attribute__((target("aes"))) inline uint32_t aes128_hash(const AesRoundKeys& k, uint64_t lo,
                                                           uint64_t hi) {
    const __m128i b = _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
    return static_cast<uint32_t>(_mm_cvtsi128_si32(aes128_encrypt(k, b)));
}

}  // namespace ferry
