// The secret keys of every table hash whose input a tenant's packets choose (connection tuples,
// flow keys, learned MAC addresses). Without a secret a VM computes offline which of its tuples
// land in another VM's buckets, on which worker its connections run, and which NAT port it gets;
// with one it can do neither (see dataplane/siphash.h for why a keyed CRC is not enough).
//
// One set of keys per process, drawn from the kernel when the process starts (hash_keys_init()
// runs before main(); the switch calls it again and refuses to start if it failed) and read-only
// afterwards, like Linux's conntrack hash seed. It is process-wide rather than per table because
// the owner hash must be the same on every worker (both directions of a connection meet one
// owner) and the connection table's hash is also used outside the shard (migration's tuple
// sets). No key, hash value or bucket index is ever written into a migration or takeover stream:
// the reader rehashes every connection with its own keys.
#pragma once

#include "dataplane/aes_hash.h"
#include "dataplane/siphash.h"

namespace ferry {

/// One independent key per use, so an output seen through one (a NAT port, a worker choice)
/// tells nothing about another (bucket placement).
struct HashKeys {
    SipKey ct_table;    // CtTable buckets and signatures: ct_tuple_hash
    SipKey ct_owner;    // the worker owning a connection: ct_owner_hash (symmetric)
    SipKey nat;         // where a NAT binding's port search starts
    SipKey flow_cache;  // FlowCache buckets and signatures
    SipKey mac;         // MacTable (rte_hash) buckets and signatures
    // AES-128 keys (bytes as a SipKey lays them out) for IPv4 tuples on CPUs with AES-NI: the
    // same two uses as ct_table and ct_owner, with keys of their own (one key, one primitive).
    SipKey ct_table_v4;
    SipKey ct_owner_v4;
};

/// The keys until hash_keys_init() has run: a fixed, public value, kept only by programs that
/// never call it (the micro-benchmarks), and an attacker's first guess, which the tests try.
inline constexpr HashKeys kPublicHashKeys = {
    {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL}, {0x1716151413121110ULL, 0x1f1e1d1c1b1a1918ULL},
    {0x2726252423222120ULL, 0x2f2e2d2c2b2a2928ULL}, {0x3736353433323130ULL, 0x3f3e3d3c3b3a3938ULL},
    {0x4746454443424140ULL, 0x4f4e4d4c4b4a4948ULL}, {0x5756555453525150ULL, 0x5f5e5d5c5b5a5958ULL},
    {0x6766656463626160ULL, 0x6f6e6d6c6b6a6968ULL}};

namespace hash_key_detail {
/// The process's keys. Written before the workers start (their launch orders the write before
/// their reads) and never after: every reader sees one value.
alignas(64) inline HashKeys keys = kPublicHashKeys;
inline bool initialised = false;
/// Whether IPv4 tuples are hashed with AES-128 (the CPU has AES-NI and the round keys below are
/// those of `keys`); SipHash otherwise. Set with the keys, like them never while workers run.
inline bool aes = false;
inline AesRoundKeys ct_table_v4;
inline AesRoundKeys ct_owner_v4;

/// Chooses the IPv4 tuple hash for the current keys: AES-128 when allowed and the CPU has it.
inline void choose_v4_hash(bool allow_aes) {
    aes = allow_aes && cpu_has_aes();
    if (!aes) return;
    ct_table_v4 = aes128_expand(keys.ct_table_v4);
    ct_owner_v4 = aes128_expand(keys.ct_owner_v4);
}
}  // namespace hash_key_detail

/// The process's hash keys. Context: any (fast path: two loads from read-only memory).
inline const HashKeys& hash_keys() {
    return hash_key_detail::keys;
}

/// Whether IPv4 connection tuples are hashed with AES-128 rather than SipHash. Context: any.
inline bool hash_v4_aes() {
    return hash_key_detail::aes;
}

/// Draws the process's keys from getrandom(2) on the first call (made before main()); later
/// calls keep them, so tables made earlier in the process stay consistent. Context: control, at
/// start, before any table exists and before the workers run. @return false (keys unchanged) when
/// the kernel gave no randomness: the caller must not start then.
bool hash_keys_init();

/// Replaces the keys. Context: tests and benchmarks only, while no table made under the old keys
/// is used again (a test standing for a second process with other keys).
/// `allow_aes` false keeps SipHash for IPv4 tuples on any CPU (tests of that path).
inline void hash_keys_set(const HashKeys& k, bool allow_aes = true) {
    hash_key_detail::keys = k;
    hash_key_detail::initialised = true;
    hash_key_detail::choose_v4_hash(allow_aes);
}

}  // namespace ferry
