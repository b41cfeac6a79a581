// FlowCache: a set-associative exact-match cache, one per worker, no DPDK.
//
// Layout. The cache is a power-of-two array of buckets of kWays ways, each bucket a whole number
// of cache lines:
//   tag line    16-bit signatures, table ids, the LRU ranks and the hit counters of all ways;
//   slot lines  rule pointer and classifier generation of each way (4 ways per line);
//   key lines   the 64-byte keys.
// A miss reads the tag line only (a false signature match costs 1/65536 per way); a hit reads the
// tag line, one slot line and one key line. With 8 ways a bucket is 11 lines: 88 bytes an entry.
//
// Replacement is true LRU within a bucket: the tag line keeps a rank per way (a permutation of
// 0..kWays-1, 0 = most recently used) updated with a few SWAR operations, so there is no clock to
// wrap and no scan over the bucket on a hit. A flow that is hit survives any number of one-off
// flows as long as fewer than kWays-1 of them land in its bucket between two of its hits.
#include "dataplane/flow_cache.h"

#include "dataplane/classifier.h"
#include "dataplane/hash_key.h"

#include <bit>
#include <cassert>
#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>

#include <sys/mman.h>

namespace ferry {

namespace {

// 8 ways rather than 4: in bench_flow_cache a lookup costs about the same (4 ways were within 5%,
// inside the noise), but at equal capacity 8 ways lose far fewer flows to full buckets: 100k
// flows in 131072 entries hit 94.5% against 88.9%, 1M flows in 2M entries 99.3% against 96.7%.
constexpr unsigned kWays = 8;
constexpr uint32_t kMinEntries = 1024;
constexpr uint32_t kMaxEntries = 1u << 31;  // capacity() is a uint32_t power of two

static_assert(kWays == 4 || kWays == 8, "the SWAR helpers below handle 4 or 8 ways");

/// Rule and generation of one way. 16 bytes, so a slot line holds four ways. The tag packs the
/// classifier generation (43 bits: 27 years at 10,000 changes a second) with the rule's index
/// + 1 (21 bits; 0: no rule matched), which revalidation needs once the rule pointer's snapshot
/// may be gone.
struct Slot {
    const CompiledRule* rule;
    uint64_t tag;
};
constexpr unsigned kIndexBits = 21;
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;

inline uint64_t make_tag(uint64_t generation, const CompiledRule* rule) {
    const uint64_t index = rule != nullptr ? (uint64_t{rule->index} + 1) & kIndexMask : 0;
    return generation << kIndexBits | index;
}
inline uint64_t tag_generation(uint64_t tag) {
    return tag >> kIndexBits;
}
inline uint32_t tag_rule_index(uint64_t tag) {
    const uint64_t i = tag & kIndexMask;
    return i == 0 ? Classifier::kNoRuleIndex : static_cast<uint32_t>(i - 1);
}

struct alignas(64) Bucket {
    // Tag line: everything a miss reads.
    uint16_t sig[kWays] = {};   // 0 = empty way; a key's signature is never 0
    uint8_t table[kWays] = {};  // table id of each way's entry
    uint64_t rank;              // byte w: LRU rank of way w, 0 = most recent, kWays-1 = victim
    uint32_t hits[kWays] = {};  // saturating, reported by dump()
    // Slot and key lines, read only after a signature match.
    alignas(64) Slot slot[kWays] = {};
    alignas(64) FlowKey key[kWays] = {};

    Bucket() {
        rank = 0;
        for (unsigned w = 0; w < kWays; ++w) rank |= static_cast<uint64_t>(w) << (8 * w);
    }
};
static_assert(offsetof(Bucket, slot) == 64, "tag line must be one cache line");
static_assert(sizeof(Bucket) == 64 + kWays * sizeof(Slot) + kWays * sizeof(FlowKey));

// SWAR constants over the bytes of Bucket::rank that hold a way's rank.
constexpr uint64_t kRankBytes = kWays == 8 ? ~0ULL : (1ULL << (8 * kWays)) - 1;
constexpr uint64_t kRankOnes = 0x0101010101010101ULL & kRankBytes;
constexpr uint64_t kRankHigh = 0x8080808080808080ULL & kRankBytes;

/// Hash of (key, table): SipHash-1-3 under the process's flow_cache key, so a tenant cannot pick
/// flows that share another's bucket and evict its hot entries (CRC, even seeded, lets it: its
/// collisions do not depend on the seed). Bucket index from the low bits, signature from the high
/// 16: with more than 65536 buckets the two share bits and the signature filters a little less.
/// Non-IPv6 keys (IPv4 in the first 4 address bytes, the rest zero; non-IP all zero) are hashed
/// as 41 bytes instead of 65 (9 SipHash rounds instead of 12); the lengths differ, so the two
/// forms never meet. The table id rides in the last block. Context: any.
inline uint32_t hash_key(const FlowKey& key, uint8_t table) {
    uint64_t w[8];
    std::memcpy(w, &key, sizeof(w));
    const SipKey& k = hash_keys().flow_cache;
    if (key.ip_version != 6) {
        const uint64_t m[5] = {w[0], w[1], w[2], w[3], (w[4] & 0xffffffffu) | (w[6] << 32)};
        return static_cast<uint32_t>(siphash13_words(k, m, table, 1));
    }
    return static_cast<uint32_t>(siphash13_words(k, w, table, 1));
}

/// The 16-bit signature of a hash, never 0 (0 marks an empty way).
inline uint16_t signature(uint32_t hash) {
    auto s = static_cast<uint16_t>(hash >> 16);
    return static_cast<uint16_t>(s + (s == 0));
}

/// Bit w set for every way whose signature is s. Exact (SWAR zero-lane test, no false positives).
inline unsigned match_signature(const Bucket& b, uint16_t s) {
    constexpr uint64_t kLow15 = 0x7fff7fff7fff7fffULL;
    // Moves the top bits of the four 16-bit lanes (shifted down to bits 0, 16, 32, 48) to bits
    // 45..48 without carries.
    constexpr uint64_t kGather = 1ULL | (1ULL << 15) | (1ULL << 30) | (1ULL << 45);
    const uint64_t pattern = 0x0001000100010001ULL * s;
    unsigned mask = 0;
    for (size_t q = 0; q < kWays / 4; ++q) {
        uint64_t x;
        std::memcpy(&x, &b.sig[4 * q], sizeof(x));
        x ^= pattern;
        uint64_t zero = ~(((x & kLow15) + kLow15) | x | kLow15);  // lane top bit: lane == 0
        mask |= static_cast<unsigned>((((zero >> 15) * kGather) >> 45) & 0xf) << (4 * q);
    }
    return mask;
}

// GCC/Clang vector extension: two 32-byte compares with AVX2, plain 64-bit words without it.
using Words4 = uint64_t __attribute__((vector_size(32)));

inline bool keys_equal(const FlowKey& a, const FlowKey& b) {
    Words4 x[2], y[2];
    std::memcpy(x, &a, sizeof(x));
    std::memcpy(y, &b, sizeof(y));
    const Words4 d = (x[0] ^ y[0]) | (x[1] ^ y[1]);
    return (d[0] | d[1] | d[2] | d[3]) == 0;
}

/// Makes way w the most recently used: every way ranked before it ages by one.
inline void touch(Bucket& b, unsigned w) {
    uint64_t r = b.rank;
    const uint64_t a = (r >> (8 * w)) & 0xff;
    // Per byte, (0x80 | rank) - a cannot borrow from the next byte since a < kWays <= 0x80; the
    // top bit survives exactly where rank >= a.
    const uint64_t ge = ((r | kRankHigh) - a * kRankOnes) & kRankHigh;
    r += (~ge & kRankHigh) >> 7;
    r &= ~(0xffULL << (8 * w));
    b.rank = r;
}

inline unsigned rank_of(const Bucket& b, unsigned w) {
    return static_cast<unsigned>((b.rank >> (8 * w)) & 0xff);
}

constexpr size_t kHugePage = 2u << 20;

/// Frees what allocate_buckets returned (Bucket is trivially destructible).
struct BucketsDeleter {
    size_t align;
    void operator()(Bucket* b) const { ::operator delete (b, std::align_val_t{align}); }
};
using BucketArray = std::unique_ptr<Bucket[], BucketsDeleter>;

/// n empty buckets, 64-byte aligned; tables of 2 MB or more are 2 MB aligned and asked to be
/// backed by transparent huge pages. Context: control. @return nullptr when out of memory.
BucketArray allocate_buckets(uint32_t n) {
    static_assert(std::is_trivially_destructible_v<Bucket>);
    const size_t bytes = static_cast<size_t>(n) * sizeof(Bucket);
    const size_t align = bytes >= kHugePage ? kHugePage : alignof(Bucket);
    void* p = ::operator new (bytes, std::align_val_t{align}, std::nothrow);
    if (p == nullptr) return BucketArray(nullptr, BucketsDeleter{align});
#ifdef MADV_HUGEPAGE
    // A table far beyond the TLB's reach would add a page walk to each of a lookup's cache
    // misses. Advice only: without huge pages the cache works the same, slower.
    if (align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    auto* b = static_cast<Bucket*>(p);
    for (uint32_t i = 0; i < n; ++i) new (&b[i]) Bucket();
    return BucketArray(b, BucketsDeleter{align});
}

}  // namespace

struct alignas(64) FlowCache::Impl {
    BucketArray buckets{nullptr, BucketsDeleter{alignof(Bucket)}};
    uint32_t bucket_mask = 0;
    uint32_t n_buckets = 0;
    Stats stats{};
};

FlowCache::FlowCache() = default;
FlowCache::~FlowCache() = default;

std::unique_ptr<FlowCache> FlowCache::create(uint32_t entries) {
    uint32_t cap = entries < kMinEntries ? kMinEntries : entries;
    cap = cap > kMaxEntries ? kMaxEntries : std::bit_ceil(cap);
    std::unique_ptr<FlowCache> fc(new (std::nothrow) FlowCache());
    if (!fc) return nullptr;
    fc->impl_.reset(new (std::nothrow) Impl());
    if (!fc->impl_) return nullptr;
    Impl& c = *fc->impl_;
    c.n_buckets = cap / kWays;
    c.bucket_mask = c.n_buckets - 1;
    c.buckets = allocate_buckets(c.n_buckets);
    if (!c.buckets) return nullptr;
    return fc;
}

uint64_t FlowCache::lookup_bulk(const FlowKey* keys, unsigned n, uint8_t table, uint64_t generation,
                                const CompiledRule** out, const Classifier* current) {
    assert(n <= kBulkMax);
    Impl& c = *impl_;
    Bucket* bucket[kBulkMax];
    uint16_t sig[kBulkMax];
    uint8_t cand[kBulkMax];

    // Stage 1: hash every key and start loading its tag line.
    for (unsigned i = 0; i < n; ++i) {
        const uint32_t h = hash_key(keys[i], table);
        bucket[i] = &c.buckets[h & c.bucket_mask];
        sig[i] = signature(h);
        __builtin_prefetch(bucket[i], 0, 3);
    }
    // Stage 2: filter ways by signature; start loading the slot and key line of the first match.
    for (unsigned i = 0; i < n; ++i) {
        const unsigned m = match_signature(*bucket[i], sig[i]);
        cand[i] = static_cast<uint8_t>(m);
        if (m != 0) {
            const unsigned w = static_cast<unsigned>(std::countr_zero(m));
            __builtin_prefetch(&bucket[i]->slot[w], 0, 3);
            __builtin_prefetch(&bucket[i]->key[w], 0, 3);
        }
    }
    // Stage 3: confirm table, generation and the full key. A key is in at most one way.
    uint64_t hit_mask = 0;
    for (unsigned i = 0; i < n; ++i) {
        out[i] = nullptr;
        Bucket& b = *bucket[i];
        for (unsigned m = cand[i]; m != 0; m &= m - 1) {
            const unsigned w = static_cast<unsigned>(std::countr_zero(m));
            if (b.table[w] != table || !keys_equal(b.key[w], keys[i])) continue;
            Slot& slot = b.slot[w];
            if (tag_generation(slot.tag) != generation) {
                // An entry of an earlier snapshot: still right if no change since touched it.
                const CompiledRule* rule = nullptr;
                if (current == nullptr ||
                    !current->revalidate(keys[i], table, tag_generation(slot.tag),
                                         tag_rule_index(slot.tag), &rule))
                    break;
                slot = Slot{rule, make_tag(generation, rule)};
                ++c.stats.revalidated;
            }
            out[i] = slot.rule;
            b.hits[w] += (b.hits[w] != UINT32_MAX);
            touch(b, w);
            hit_mask |= 1ULL << i;
            break;
        }
    }
    const auto n_hits = static_cast<unsigned>(std::popcount(hit_mask));
    c.stats.hits += n_hits;
    c.stats.misses += n - n_hits;
    return hit_mask;
}

void FlowCache::insert(const FlowKey& key, uint8_t table, uint64_t generation,
                       const CompiledRule* rule) {
    Impl& c = *impl_;
    const uint32_t h = hash_key(key, table);
    Bucket& b = c.buckets[h & c.bucket_mask];
    const uint16_t s = signature(h);
    ++c.stats.inserts;

    // The key may be present with an older generation (or, rarely, the same one): reuse its way
    // so a key never occupies two ways.
    int way = -1;
    for (unsigned m = match_signature(b, s); m != 0; m &= m - 1) {
        const unsigned w = static_cast<unsigned>(std::countr_zero(m));
        if (b.table[w] == table && keys_equal(b.key[w], key)) {
            way = static_cast<int>(w);
            break;
        }
    }
    // Else the least recently used of the empty or stale ways; else evict the least recently used.
    if (way < 0) {
        int victim = -1;
        unsigned victim_rank = 0;
        for (unsigned w = 0; w < kWays; ++w) {
            const bool free = b.sig[w] == 0 || tag_generation(b.slot[w].tag) != generation;
            const unsigned r = rank_of(b, w);
            if (free && (victim < 0 || r > victim_rank)) {
                victim = static_cast<int>(w);
                victim_rank = r;
            }
        }
        if (victim < 0) {
            for (unsigned w = 0; w < kWays; ++w)
                if (rank_of(b, w) == kWays - 1) victim = static_cast<int>(w);
            ++c.stats.evictions;
        }
        way = victim;
    }
    const auto w = static_cast<unsigned>(way);
    b.sig[w] = s;
    b.table[w] = table;
    b.hits[w] = 0;
    b.slot[w] = Slot{rule, make_tag(generation, rule)};
    b.key[w] = key;
    touch(b, w);
}

uint32_t FlowCache::dump(uint64_t generation, uint32_t from, uint32_t max_buckets,
                         const DumpFn& fn) const {
    const Impl& c = *impl_;
    if (from >= c.n_buckets) return 0;
    // At least one bucket per call, so a caller looping until 0 always progresses.
    const uint64_t end64 = static_cast<uint64_t>(from) + (max_buckets == 0 ? 1 : max_buckets);
    const uint32_t end = end64 >= c.n_buckets ? c.n_buckets : static_cast<uint32_t>(end64);
    for (uint32_t i = from; i < end; ++i) {
        const Bucket& b = c.buckets[i];
        for (unsigned w = 0; w < kWays; ++w)
            if (b.sig[w] != 0 && tag_generation(b.slot[w].tag) == generation)
                fn(b.key[w], b.table[w], b.slot[w].rule, b.hits[w]);
    }
    return end == c.n_buckets ? 0 : end;
}

uint32_t FlowCache::capacity() const {
    return impl_->n_buckets * kWays;
}

FlowCache::Stats FlowCache::stats() const {
    return impl_->stats;
}

}  // namespace ferry
