// CtTable: the connection table of one shard.
//
// Layout. Four arrays, each allocated once in create():
//   entries_    the CtEntry pool;
//   live_bits_  one bit per entry, set while it holds a connection;
//   free_       a stack of free entry indices (index 0 on top after create, so a fresh table fills
//               from the start of the pool);
//   buckets_    the index: power-of-two buckets of 8 ways, one cache line each.
//
// Index. A tuple with hash h = ct_tuple_hash(tuple) may sit in two buckets:
//   primary    h & mask
//   secondary  primary ^ delta, delta = ((h >> 16) * kAltMul) & mask (1 when that is 0)
// The secondary depends on the hash's high half, so tuples sharing a primary bucket spread over
// many secondaries, and it is never the primary. XOR makes the pair symmetric: either bucket and
// the signature give the other (room for cuckoo moves should a load ever need them; at the 50%
// slot load the sizing guarantees, a tuple finding both buckets full is vanishingly rare, and
// insert() simply refuses it).
// A way holds the signature of its tuple and a reference (entry index << 1 | direction). The
// signature is the whole hash, with 0 remapped to 1: 0 marks a free way (whose ref is then
// kEmptyRef), so a signature match alone proves a way is used. A false match needs two different
// tuples with equal 32-bit hashes and costs one 40-byte compare.
// insert() puts a tuple in the emptier of its two buckets (the primary on a tie), which keeps the
// buckets' loads close to even.
#include "dataplane/conntrack/ct_table.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>

#include <sys/mman.h>

namespace ferry {

namespace {

constexpr unsigned kWays = 8;                // match8() handles exactly 8
constexpr uint32_t kMaxCapacity = 1u << 27;  // entry index << 1 | dir stays below kEmptyRef
constexpr uint32_t kEmptySig = 0;
constexpr uint32_t kEmptyRef = 0xffffffffu;
constexpr unsigned kBulkMax = 64;          // lookup_bulk's contract
constexpr uint32_t kAltMul = 0x5bd1e995u;  // odd: spreads the high half over the index bits
constexpr size_t kHugePage = size_t{2} << 20;

/// The signature stored for a hash: never kEmptySig. Context: any.
inline uint32_t signature(uint32_t hash) {
    return hash != kEmptySig ? hash : 1;
}

/// What XOR turns a tuple's primary bucket into its secondary: never 0, within mask. Context: any.
inline uint32_t alt_delta(uint32_t hash, uint32_t mask) {
    const uint32_t d = ((hash >> 16) * kAltMul) & mask;
    return d != 0 ? d : 1;
}

/// Tuple equality as five 64-bit compares (no memcmp call). Context: any.
inline bool tuple_equal(const CtTuple& a, const CtTuple& b) {
    uint64_t x[5], y[5];
    std::memcpy(x, &a, sizeof(x));
    std::memcpy(y, &b, sizeof(y));
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

using U32x4 = uint32_t __attribute__((vector_size(16)));
using F32x4 = float __attribute__((vector_size(16)));

/// Bit w set for every w < 8 with lanes[w] == v. Two SSE compares and two movmskps, baseline
/// x86-64 (the hash needs SSE4.2 anyway): the DPDK build compiles this file with -march=corei7,
/// so no AVX here. As a plain loop GCC left it scalar inside lookup_bulk (16 compare/setcc pairs
/// a key). Context: any.
inline unsigned match8(const uint32_t* lanes, uint32_t v) {
    U32x4 lo, hi;
    std::memcpy(&lo, lanes, sizeof(lo));
    std::memcpy(&hi, lanes + 4, sizeof(hi));
    const auto m_lo =
        static_cast<unsigned>(__builtin_ia32_movmskps(reinterpret_cast<F32x4>(lo == v)));
    const auto m_hi =
        static_cast<unsigned>(__builtin_ia32_movmskps(reinterpret_cast<F32x4>(hi == v)));
    return m_lo | m_hi << 4;
}

/// Alignment of an array of `bytes`: 2 MB from 2 MB on (for huge pages), else a cache line.
inline size_t array_align(size_t bytes) {
    return bytes >= kHugePage ? kHugePage : 64;
}

/// Uninitialised memory for an array of `bytes`. Context: control.
/// @return nullptr when memory is short; release with free_array(p, bytes).
void* alloc_array(size_t bytes) {
    const size_t align = array_align(bytes);
    void* p = ::operator new (bytes, std::align_val_t{align}, std::nothrow);
#ifdef MADV_HUGEPAGE
    // A pool of millions of entries is far beyond the TLB's reach: every lookup's bucket and
    // entry miss would add a page walk. Advice only; the table works the same without it.
    if (p != nullptr && align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

/// Frees what alloc_array(bytes) returned; nullptr is ignored. Context: control.
void free_array(void* p, size_t bytes) {
    if (p != nullptr) ::operator delete (p, std::align_val_t{array_align(bytes)});
}

// Sizes in bytes of the arrays of a table of `capacity` entries. Context: any.
inline size_t entries_bytes(uint32_t capacity) {
    return size_t{capacity} * sizeof(CtEntry);
}
inline size_t live_words(uint32_t capacity) {
    return (size_t{capacity} + 63) / 64;
}
inline size_t live_bytes(uint32_t capacity) {
    return live_words(capacity) * sizeof(uint64_t);
}
inline size_t free_bytes(uint32_t capacity) {
    return size_t{capacity} * sizeof(uint32_t);
}

}  // namespace

struct alignas(64) CtTable::Bucket {
    uint32_t sig[kWays];  // kEmptySig in a free way
    uint32_t ref[kWays];  // entry index << 1 | direction; kEmptyRef in a free way

    /// Bit w set for every way whose signature is s (s == kEmptySig: the free ways). Context: any.
    unsigned match(uint32_t s) const { return match8(sig, s); }
    /// Bit w set for every way whose reference is r. Context: any.
    unsigned match_ref(uint32_t r) const { return match8(ref, r); }
};

std::unique_ptr<CtTable> CtTable::create(uint32_t capacity) {
    static_assert(sizeof(Bucket) == 64 && alignof(Bucket) == 64, "a bucket is one cache line");
    static_assert(std::is_trivially_copyable_v<CtEntry>, "insert() zeroes entries with memset");
    if (capacity == 0 || capacity > kMaxCapacity) return nullptr;
    std::unique_ptr<CtTable> t(new (std::nothrow) CtTable());
    if (!t) return nullptr;
    // (2 * capacity) / 4 buckets of 8 ways: 2 * capacity tuples fill at most half the ways.
    const uint32_t n_buckets = std::max(2u, std::bit_ceil(capacity / 2));
    t->capacity_ = capacity;
    t->bucket_mask_ = n_buckets - 1;
    // On failure the destructor frees whatever was allocated (it reads the sizes from capacity_
    // and bucket_mask_, which are set above).
    t->entries_ = static_cast<CtEntry*>(alloc_array(entries_bytes(capacity)));
    t->live_bits_ = static_cast<uint64_t*>(alloc_array(live_bytes(capacity)));
    t->free_ = static_cast<uint32_t*>(alloc_array(free_bytes(capacity)));
    void* buckets = alloc_array(size_t{n_buckets} * sizeof(Bucket));
    t->buckets_ = static_cast<Bucket*>(buckets);
    if (!t->entries_ || !t->live_bits_ || !t->free_ || !t->buckets_) return nullptr;

    // Writing every page now also faults the memory in, so the fast path never does.
    std::memset(t->entries_, 0, entries_bytes(capacity));
    std::memset(t->live_bits_, 0, live_bytes(capacity));
    for (uint32_t i = 0; i < capacity; ++i) t->free_[i] = capacity - 1 - i;
    t->free_top_ = capacity;
    for (uint32_t b = 0; b < n_buckets; ++b) {
        Bucket* bucket = new (static_cast<Bucket*>(buckets) + b) Bucket;
        std::fill_n(bucket->sig, kWays, kEmptySig);
        std::fill_n(bucket->ref, kWays, kEmptyRef);
    }
    return t;
}

CtTable::~CtTable() {
    free_array(entries_, entries_bytes(capacity_));
    free_array(live_bits_, live_bytes(capacity_));
    free_array(free_, free_bytes(capacity_));
    free_array(buckets_, (size_t{bucket_mask_} + 1) * sizeof(Bucket));
}

void CtTable::prefetch_buckets(uint32_t hash) const {
    const uint32_t b0 = hash & bucket_mask_;
    __builtin_prefetch(&buckets_[b0], 0, 3);
    __builtin_prefetch(&buckets_[b0 ^ alt_delta(hash, bucket_mask_)], 0, 3);
}

CtRef CtTable::find(const CtTuple& key, uint32_t hash) const {
    const uint32_t sig = signature(hash);
    const uint32_t b0 = hash & bucket_mask_;
    const uint32_t candidates[2] = {b0, b0 ^ alt_delta(hash, bucket_mask_)};
    // Primary first, ways in ascending order: insert() relies on this order when orig == reply.
    for (uint32_t b : candidates) {
        const Bucket& bucket = buckets_[b];
        for (unsigned m = bucket.match(sig); m != 0; m &= m - 1) {
            const uint32_t ref = bucket.ref[std::countr_zero(m)];
            if (tuple_equal(entries_[ref >> 1].tuple[ref & 1], key))
                return CtRef{ref >> 1, static_cast<uint8_t>(ref & 1)};
        }
    }
    return CtRef{};
}

namespace {

/// ct_tuple_hash of n tuples, compiled for AES-NI so that the AES rounds of IPv4 tuples are
/// inlined and overlap across the burst. Context: fast path, only when hash_v4_aes().
__attribute__((target("aes"))) void hash_bulk_aes(const CtTuple* keys, unsigned n, uint32_t* out) {
    for (unsigned i = 0; i < n; ++i) out[i] = ct_tuple_hash(keys[i]);
}

}  // namespace

void ct_tuple_hash_bulk(const CtTuple* keys, unsigned n, uint32_t* out) {
    if (hash_v4_aes()) {
        hash_bulk_aes(keys, n, out);
        return;
    }
    for (unsigned i = 0; i < n; ++i) out[i] = ct_tuple_hash(keys[i]);
}

// Public members are documented in ct_table.h; private helpers too.

CtRef CtTable::lookup(const CtTuple& key) const {
    return find(key, ct_tuple_hash(key));
}

void CtTable::lookup_bulk(const CtTuple* keys, unsigned n, CtRef* out) const {
    assert(n <= kBulkMax);
    const Bucket* primary[kBulkMax];
    const Bucket* secondary[kBulkMax];
    uint32_t sig[kBulkMax];
    uint8_t cand0[kBulkMax];
    uint8_t cand1[kBulkMax];

    // Stage 1: hash every key and start loading both of its buckets.
    uint32_t hashes[kBulkMax];
    ct_tuple_hash_bulk(keys, n, hashes);
    for (unsigned i = 0; i < n; ++i) {
        const uint32_t h = hashes[i];
        const uint32_t b0 = h & bucket_mask_;
        sig[i] = signature(h);
        primary[i] = &buckets_[b0];
        secondary[i] = &buckets_[b0 ^ alt_delta(h, bucket_mask_)];
        __builtin_prefetch(primary[i], 0, 3);
        __builtin_prefetch(secondary[i], 0, 3);
    }
    // Stage 2: filter ways by signature; start loading the entry of the first candidate.
    for (unsigned i = 0; i < n; ++i) {
        const unsigned m0 = primary[i]->match(sig[i]);
        const unsigned m1 = secondary[i]->match(sig[i]);
        cand0[i] = static_cast<uint8_t>(m0);
        cand1[i] = static_cast<uint8_t>(m1);
        if ((m0 | m1) == 0) continue;
        const uint32_t ref = m0 != 0 ? primary[i]->ref[std::countr_zero(m0)]
                                     : secondary[i]->ref[std::countr_zero(m1)];
        // The whole entry: the caller goes on to update its deadline, counters and state.
        const auto* e = reinterpret_cast<const char*>(&entries_[ref >> 1]);
        for (size_t line = 0; line < sizeof(CtEntry); line += 64)
            __builtin_prefetch(e + line, 1, 3);
    }
    // Stage 3: confirm the full tuple, in find()'s order (primary ways, then secondary ways).
    for (unsigned i = 0; i < n; ++i) {
        CtRef r;
        for (unsigned m = cand0[i]; m != 0 && !r.found(); m &= m - 1) {
            const uint32_t ref = primary[i]->ref[std::countr_zero(m)];
            if (tuple_equal(entries_[ref >> 1].tuple[ref & 1], keys[i]))
                r = CtRef{ref >> 1, static_cast<uint8_t>(ref & 1)};
        }
        for (unsigned m = cand1[i]; m != 0 && !r.found(); m &= m - 1) {
            const uint32_t ref = secondary[i]->ref[std::countr_zero(m)];
            if (tuple_equal(entries_[ref >> 1].tuple[ref & 1], keys[i]))
                r = CtRef{ref >> 1, static_cast<uint8_t>(ref & 1)};
        }
        out[i] = r;
    }
}

uint32_t CtTable::link(uint32_t hash, uint32_t ref, bool primary_first) {
    const uint32_t b0 = hash & bucket_mask_;
    const uint32_t b1 = b0 ^ alt_delta(hash, bucket_mask_);
    const unsigned free0 = buckets_[b0].match(kEmptySig);
    const unsigned free1 = buckets_[b1].match(kEmptySig);
    uint32_t b;
    unsigned free;
    if (free0 != 0 && (primary_first || std::popcount(free0) >= std::popcount(free1))) {
        b = b0;
        free = free0;
    } else if (free1 != 0) {
        b = b1;
        free = free1;
    } else {
        return kCtNone;
    }
    // The lowest free way: find() meets ways in ascending order.
    const auto w = static_cast<unsigned>(std::countr_zero(free));
    buckets_[b].sig[w] = signature(hash);
    buckets_[b].ref[w] = ref;
    return b * kWays + w;
}

void CtTable::unlink(uint32_t hash, uint32_t ref) {
    const uint32_t b0 = hash & bucket_mask_;
    const uint32_t candidates[2] = {b0, b0 ^ alt_delta(hash, bucket_mask_)};
    for (uint32_t b : candidates) {
        const unsigned m = buckets_[b].match_ref(ref);
        if (m == 0) continue;
        const auto w = static_cast<unsigned>(std::countr_zero(m));
        buckets_[b].sig[w] = kEmptySig;
        buckets_[b].ref[w] = kEmptyRef;
        return;
    }
    assert(false && "a live entry's tuple is indexed");
}

uint32_t CtTable::insert(const CtTuple& orig, const CtTuple& reply, uint32_t orig_hash,
                         uint32_t reply_hash) {
    if (free_top_ == 0) return kCtNone;
    const uint32_t h0 = orig_hash;
    const uint32_t h1 = reply_hash;
    // The four buckets are read below one after the other; start all their misses at once.
    prefetch_buckets(h0);
    prefetch_buckets(h1);
    if (find(orig, h0).found() || find(reply, h1).found()) return kCtNone;
    const uint32_t idx = free_[free_top_ - 1];
    // When orig == reply both refs go to the same key's buckets, primary first and each in the
    // lowest free way: orig's way then always comes before reply's in find()'s order, so a lookup
    // answers direction 0.
    const bool self_reverse = tuple_equal(orig, reply);
    const uint32_t slot0 = link(h0, idx << 1, self_reverse);
    if (slot0 == kCtNone) return kCtNone;
    if (link(h1, idx << 1 | 1, self_reverse) == kCtNone) {
        Bucket& b = buckets_[slot0 / kWays];
        b.sig[slot0 % kWays] = kEmptySig;
        b.ref[slot0 % kWays] = kEmptyRef;
        return kCtNone;
    }
    --free_top_;
    live_bits_[idx >> 6] |= uint64_t{1} << (idx & 63);
    ++size_;
    CtEntry& e = entries_[idx];
    std::memset(&e, 0, sizeof(e));
    e.tuple[0] = orig;
    e.tuple[1] = reply;
    return idx;
}

void CtTable::erase(uint32_t index) {
    // An index that is not live (already erased, out of range) is ignored: a flush and an expiry
    // may both name the same entry.
    if (!live(index)) return;
    const CtEntry& e = entries_[index];
    const uint32_t h0 = ct_tuple_hash(e.tuple[0]);
    const uint32_t h1 = ct_tuple_hash(e.tuple[1]);
    prefetch_buckets(h0);
    prefetch_buckets(h1);
    unlink(h0, index << 1);
    unlink(h1, index << 1 | 1);
    live_bits_[index >> 6] &= ~(uint64_t{1} << (index & 63));
    free_[free_top_++] = index;
    --size_;
}

uint32_t CtTable::next_live(uint32_t from) const {
    if (from >= capacity_) return kCtNone;
    const size_t words = live_words(capacity_);
    size_t w = from >> 6;
    uint64_t bits = live_bits_[w] & (~uint64_t{0} << (from & 63));
    while (bits == 0) {
        if (++w == words) return kCtNone;
        bits = live_bits_[w];
    }
    return static_cast<uint32_t>(w * 64 + static_cast<unsigned>(std::countr_zero(bits)));
}

size_t CtTable::memory_bytes() const {
    return entries_bytes(capacity_) + live_bytes(capacity_) + free_bytes(capacity_) +
           (size_t{bucket_mask_} + 1) * sizeof(Bucket);
}

}  // namespace ferry
