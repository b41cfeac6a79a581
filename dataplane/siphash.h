// SipHash (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): a keyed
// pseudorandom function of short inputs, the standard defence against hash flooding (Linux uses
// it for its socket and conntrack hashes, Python, Rust and Ruby for their tables).
//
// Why not a keyed CRC: CRC is affine over GF(2), so crc(a) ^ crc(b) does not depend on the seed
// and two inputs that collide for one seed collide for every seed; an attacker who never learns
// the key still computes collisions offline. SipHash's output, without the key, is
// indistinguishable from random, and seeing some outputs (through a NAT port, a worker choice or
// a refused insert) tells nothing about others.
//
// SipHash-1-3 (one round per message word, three to finish) is the variant Rust's and Python's
// tables use: the paper's margin for a MAC is not needed for bucket placement, and it costs
// about half of SipHash-2-4. The word variant below hashes fixed-size keys already laid out as
// little-endian 64-bit words (and a short tail): the result is exactly siphash<1, 3>() of those
// bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ferry {

/// A 128-bit SipHash key: k0 is the key's first 8 bytes read little-endian, k1 the next 8.
struct SipKey {
    uint64_t k0;
    uint64_t k1;
};

namespace sip_detail {

struct State {
    uint64_t v0, v1, v2, v3;
};

inline uint64_t rotl(uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

inline void sip_round(State& s) {
    s.v0 += s.v1;
    s.v1 = rotl(s.v1, 13);
    s.v1 ^= s.v0;
    s.v0 = rotl(s.v0, 32);
    s.v2 += s.v3;
    s.v3 = rotl(s.v3, 16);
    s.v3 ^= s.v2;
    s.v0 += s.v3;
    s.v3 = rotl(s.v3, 21);
    s.v3 ^= s.v0;
    s.v2 += s.v1;
    s.v1 = rotl(s.v1, 17);
    s.v1 ^= s.v2;
    s.v2 = rotl(s.v2, 32);
}

inline State init(const SipKey& k) {
    return State{k.k0 ^ 0x736f6d6570736575ULL, k.k1 ^ 0x646f72616e646f6dULL,
                 k.k0 ^ 0x6c7967656e657261ULL, k.k1 ^ 0x7465646279746573ULL};
}

template <int C>
inline void compress(State& s, uint64_t m) {
    s.v3 ^= m;
    for (int i = 0; i < C; ++i) sip_round(s);
    s.v0 ^= m;
}

template <int D>
inline uint64_t finish(State& s) {
    s.v2 ^= 0xff;
    for (int i = 0; i < D; ++i) sip_round(s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

}  // namespace sip_detail

/// SipHash-C-D of `len` bytes (SipHash-2-4 is siphash<2, 4>). Context: any; little-endian hosts
/// (the dataplane is x86-64 only). @return the 64-bit tag.
template <int C, int D>
inline uint64_t siphash(const SipKey& key, const void* data, size_t len) {
    sip_detail::State s = sip_detail::init(key);
    const auto* p = static_cast<const uint8_t*>(data);
    const size_t whole = len & ~size_t{7};
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m;
        std::memcpy(&m, p + i, sizeof(m));
        sip_detail::compress<C>(s, m);
    }
    uint64_t last = static_cast<uint64_t>(len & 0xff) << 56;
    for (size_t i = 0; i < (len & 7); ++i) last |= static_cast<uint64_t>(p[whole + i]) << (8 * i);
    sip_detail::compress<C>(s, last);
    return sip_detail::finish<D>(s);
}

/// SipHash-1-3 of N 64-bit words followed by `tail_len` (0..7) more bytes, the low bytes of
/// `tail` (its other bytes must be zero): equal to siphash<1, 3>() of those 8 * N + tail_len
/// bytes on a little-endian host, unrolled for a fixed N. A key that packs into a few bytes short
/// of a whole word saves a round: the tail rides in the length block. Context: any (fast path).
/// @return the 64-bit tag
template <size_t N>
inline uint64_t siphash13_words(const SipKey& key, const uint64_t (&w)[N], uint64_t tail = 0,
                                unsigned tail_len = 0) {
    static_assert(N * 8 + 7 < 256, "the length byte holds len mod 256; keep keys short");
    sip_detail::State s = sip_detail::init(key);
    for (size_t i = 0; i < N; ++i) sip_detail::compress<1>(s, w[i]);
    sip_detail::compress<1>(s, tail | static_cast<uint64_t>(N * 8 + tail_len) << 56);
    return sip_detail::finish<3>(s);
}

}  // namespace ferry
