// Tuple-space search over an immutable snapshot. One subtable per distinct mask of a table; each
// subtable is an open-addressing hash (linear probing, load factor <= 0.5) from a masked key to
// the rules whose value is exactly that masked key, best rule first.
//
// Subtable order. OVS's dpcls keeps subtables sorted by how often they hit, because its megaflows
// never overlap: the first match is the only match, so the subtable most likely to hold it should
// be probed first. Our rules overlap and carry priorities, so the first match is not necessarily
// the answer; we must keep probing until no remaining subtable can hold a better rule. Sorting the
// subtables by the rank of their best rule (priority, then lower index), descending, turns that
// into an early exit: once the next subtable's best rank is not above the best match found, none
// of the remaining ones can win. The bound is the best rule's (priority, index), not only its
// priority, so that tables where most rules share one priority still prune. The order is fixed at
// build time, so lookup keeps no hit counters and the snapshot stays read-only for every worker.
#include "dataplane/classifier.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <iterator>
#include <new>
#include <vector>

namespace ferry {

namespace {

constexpr unsigned kKeyWords = sizeof(FlowKey) / sizeof(uint64_t);
constexpr uint32_t kEmptySlot = UINT32_MAX;
constexpr unsigned kBulkMax = 64;

/// Rank of a rule: higher is better. Priority in the high half (offset so that the signed order
/// becomes the unsigned one), the complement of the index in the low half so that a lower index
/// ranks higher. Distinct rule indices give distinct ranks. Context: any.
inline uint64_t rule_rank(const CompiledRule& r) {
    const uint64_t prio = static_cast<uint32_t>(r.priority) ^ 0x80000000u;
    return (prio << 32) | static_cast<uint32_t>(~r.index);
}

inline const uint64_t* words(const FlowKey& k) {
    return reinterpret_cast<const uint64_t*>(&k);
}

/// Hash of the n masked words of a key. Context: fast path. @return 32 bits, all usable for
/// indexing.
inline uint32_t hash_words(const uint64_t* w, unsigned n) {
#ifdef __SSE4_2__
    // Two interleaved CRC chains: crc32 has a 3-cycle latency and a 1-cycle throughput.
    uint64_t a = n, b = 0x9e3779b9u;
    unsigned j = 0;
    for (; j + 1 < n; j += 2) {
        a = __builtin_ia32_crc32di(a, w[j]);
        b = __builtin_ia32_crc32di(b, w[j + 1]);
    }
    if (j < n) a = __builtin_ia32_crc32di(a, w[j]);
    return static_cast<uint32_t>(a ^ (b << 1) ^ (b >> 31));
#else
    uint64_t h = n;
    for (unsigned j = 0; j < n; ++j) {
        h = (h ^ w[j]) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    h *= 0xbf58476d1ce4e5b9ull;
    return static_cast<uint32_t>(h ^ (h >> 32));
#endif
}

}  // namespace

struct Classifier::Impl {
    // A slot holds the full hash (a cheap first filter) and the index of the best rule of its
    // masked value. The masked key itself is that rule's value, so it is not stored twice: a hit
    // touches the rule anyway, since the caller reads its actions.
    struct Slot {
        uint32_t hash;
        uint32_t rule;  // into rules, kEmptySlot when free
    };

    struct Subtable;
    /// One subtable's step of lookup_bulk, specialised on the subtable's word count and chosen
    /// at build time. @return the keys still active (those the subtable did not prune).
    using BulkStep = uint64_t (*)(const Impl& im, const Subtable& st, const FlowKey* keys,
                                  uint64_t active, const CompiledRule** out, uint64_t* best_rank);

    // Only the key words a mask touches are masked, hashed and compared (an ACL mask typically
    // covers two or three of the eight): the others are zero in every masked key and every value.
    struct alignas(64) Subtable {
        uint64_t mask[kKeyWords];  // the non-zero mask words, in key order
        uint8_t word[kKeyWords];   // word[j]: which key word mask[j] applies to
        uint8_t n_words;
        uint32_t slot_mask;  // slot count - 1, slot count a power of two
        uint64_t best_rank;  // rank of the best rule in the subtable: the pruning bound
        const Slot* slots;
        BulkStep bulk_step;
    };

    struct TableRange {
        uint32_t first;  // into subtables
        uint32_t count;
    };

    // Rules grouped by table, then subtable, then masked value (best first). Lookup results point
    // here; the vector is never resized after build.
    std::vector<CompiledRule> rules;
    std::vector<Subtable> subtables;
    std::vector<Slot> slots;
    TableRange tables[kMaxTables] = {};

    /// The first n masked words of key for st into mk. Context: fast path.
    static void mask_key(const Subtable& st, unsigned n, const FlowKey& key, uint64_t* mk) {
        const uint64_t* k = words(key);
        for (unsigned j = 0; j < n; ++j) mk[j] = k[st.word[j]] & st.mask[j];
    }

    /// Whether the n masked words mk equal a rule's (masked) value. Context: fast path.
    static bool value_equal(const Subtable& st, unsigned n, const uint64_t* mk,
                            const CompiledRule& r) {
        const uint64_t* v = words(r.value);
        uint64_t diff = 0;
        for (unsigned j = 0; j < n; ++j) diff |= mk[j] ^ v[st.word[j]];
        return diff == 0;
    }

    /// Probes st for the masked words mk with hash h, from slot `from` on. @return the best rule
    /// of the matching value, or nullptr. Context: fast path.
    const CompiledRule* probe(const Subtable& st, unsigned n, const uint64_t* mk, uint32_t h,
                              uint32_t from) const {
        for (uint32_t i = from;; i = (i + 1) & st.slot_mask) {
            const Slot s = st.slots[i];
            if (s.rule == kEmptySlot) return nullptr;
            if (s.hash == h && value_equal(st, n, mk, rules[s.rule])) return &rules[s.rule];
        }
    }

    template <unsigned N>
    static uint64_t bulk_step(const Impl& im, const Subtable& st, const FlowKey* keys,
                              uint64_t active, const CompiledRule** out, uint64_t* best_rank);

    void build(const std::vector<CompiledRule>& in);
};

void Classifier::Impl::build(const std::vector<CompiledRule>& in) {
    rules.reserve(in.size());
    for (const CompiledRule& r : in) {
        if (r.table >= kMaxTables) continue;  // no table can hold it: unreachable by lookup
        CompiledRule c = r;
        // The contract says value is already masked; enforce it so that a returned rule always
        // satisfies rule_matches() for the key that found it.
        auto* v = reinterpret_cast<uint64_t*>(&c.value);
        for (unsigned i = 0; i < kKeyWords; ++i) v[i] &= words(c.mask)[i];
        rules.push_back(c);
    }

    // Sort by (table, mask, value, rank desc): every subtable and every masked value becomes one
    // run, best rule first. The mask/value order is arbitrary but total, which is all we need.
    std::sort(rules.begin(), rules.end(), [](const CompiledRule& a, const CompiledRule& b) {
        if (a.table != b.table) return a.table < b.table;
        if (int c = std::memcmp(&a.mask, &b.mask, sizeof(FlowKey)); c != 0) return c < 0;
        if (int c = std::memcmp(&a.value, &b.value, sizeof(FlowKey)); c != 0) return c < 0;
        return rule_rank(a) > rule_rank(b);
    });

    // Pass 1: subtables with their best rank and number of distinct values, to size the slots.
    struct Pending {
        size_t first_rule, end_rule, values;
        uint64_t best_rank;
    };
    std::vector<Pending> pending;
    for (size_t i = 0; i < rules.size();) {
        size_t j = i;
        Pending p{i, i, 0, 0};
        while (j < rules.size() && rules[j].table == rules[i].table &&
               std::memcmp(&rules[j].mask, &rules[i].mask, sizeof(FlowKey)) == 0) {
            if (j == i || std::memcmp(&rules[j].value, &rules[j - 1].value, sizeof(FlowKey)) != 0)
                ++p.values;
            p.best_rank = std::max(p.best_rank, rule_rank(rules[j]));
            ++j;
        }
        p.end_rule = j;
        pending.push_back(p);
        i = j;
    }
    // Within a table, best rank first (see the file comment). Tables stay in ascending order.
    std::sort(pending.begin(), pending.end(), [&](const Pending& a, const Pending& b) {
        const uint8_t ta = rules[a.first_rule].table, tb = rules[b.first_rule].table;
        if (ta != tb) return ta < tb;
        return a.best_rank > b.best_rank;
    });

    size_t total_slots = 0;
    std::vector<uint32_t> slot_count(pending.size());
    for (size_t s = 0; s < pending.size(); ++s) {
        slot_count[s] =
            std::bit_ceil(static_cast<uint32_t>(std::max<size_t>(2 * pending[s].values, 2)));
        total_slots += slot_count[s];
    }
    slots.assign(total_slots, Slot{0, kEmptySlot});
    subtables.resize(pending.size());

    static constexpr BulkStep kBulkSteps[kKeyWords + 1] = {
        bulk_step<0>, bulk_step<1>, bulk_step<2>, bulk_step<3>, bulk_step<4>,
        bulk_step<5>, bulk_step<6>, bulk_step<7>, bulk_step<8>};
    static_assert(std::size(kBulkSteps) == kKeyWords + 1);

    // Pass 2: fill each subtable's slots with the first (best) rule of every distinct value.
    size_t slot_base = 0;
    for (size_t s = 0; s < pending.size(); ++s) {
        const Pending& p = pending[s];
        Subtable& st = subtables[s];
        const uint64_t* mask = words(rules[p.first_rule].mask);
        st.n_words = 0;
        for (unsigned w = 0; w < kKeyWords; ++w) {
            if (mask[w] == 0) continue;
            st.mask[st.n_words] = mask[w];
            st.word[st.n_words++] = static_cast<uint8_t>(w);
        }
        st.bulk_step = kBulkSteps[st.n_words];
        st.best_rank = p.best_rank;
        st.slots = &slots[slot_base];
        st.slot_mask = slot_count[s] - 1;
        Slot* mine = &slots[slot_base];
        for (size_t r = p.first_rule; r < p.end_rule; ++r) {
            if (r != p.first_rule &&
                std::memcmp(&rules[r].value, &rules[r - 1].value, sizeof(FlowKey)) == 0)
                continue;            // a worse rule of the same value: shadowed in this subtable
            uint64_t mk[kKeyWords];  // the value is masked already: this only gathers its words
            mask_key(st, st.n_words, rules[r].value, mk);
            const uint32_t h = hash_words(mk, st.n_words);
            uint32_t i = h & st.slot_mask;
            while (mine[i].rule != kEmptySlot) i = (i + 1) & st.slot_mask;
            mine[i] = Slot{h, static_cast<uint32_t>(r)};
        }
        slot_base += slot_count[s];

        TableRange& t = tables[rules[p.first_rule].table];
        if (t.count == 0) t.first = static_cast<uint32_t>(s);
        ++t.count;
    }
}

Classifier::Classifier(uint64_t generation) : generation_(generation) {}
Classifier::~Classifier() = default;

std::unique_ptr<Classifier> Classifier::build(const std::vector<CompiledRule>& rules,
                                              uint64_t generation) {
    // The control thread builds; the only failure the contract allows is running out of memory,
    // reported as nullptr rather than an exception crossing into callers that expect none.
    try {
        std::unique_ptr<Classifier> c(new Classifier(generation));
        c->impl_ = std::make_unique<Impl>();
        c->impl_->build(rules);
        return c;
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

const CompiledRule* Classifier::lookup(const FlowKey& key, uint8_t table) const {
    if (table >= kMaxTables) return nullptr;
    const Impl& im = *impl_;
    const Impl::TableRange t = im.tables[table];
    const CompiledRule* best = nullptr;
    uint64_t best_rank = 0;
    for (uint32_t s = t.first; s < t.first + t.count; ++s) {
        const Impl::Subtable& st = im.subtables[s];
        // Sorted by best rank: when this subtable cannot beat the best match, no later one can.
        if (best != nullptr && st.best_rank <= best_rank) break;
        uint64_t mk[kKeyWords];
        Impl::mask_key(st, st.n_words, key, mk);
        const uint32_t h = hash_words(mk, st.n_words);
        const CompiledRule* r = im.probe(st, st.n_words, mk, h, h & st.slot_mask);
        if (r != nullptr && (best == nullptr || rule_rank(*r) > best_rank)) {
            best = r;
            best_rank = rule_rank(*r);
        }
    }
    return best;
}

/// Context: fast path. Stage 1 hashes every active key and prefetches its first slot, so that the
/// slot misses of the batch overlap; stage 2 probes. N is a constant, so masking, hashing and
/// comparing unroll. A third stage that prefetched the candidate rule before comparing was
/// measured slower at every size (the extra pass costs more than the rule misses it hides).
template <unsigned N>
uint64_t Classifier::Impl::bulk_step(const Impl& im, const Subtable& st, const FlowKey* keys,
                                     uint64_t active, const CompiledRule** out,
                                     uint64_t* best_rank) {
    uint32_t hashes[kBulkMax];
    // Stage 1: drop the keys this subtable cannot improve (subtables are sorted, so they stay
    // dropped), hash the others and prefetch their first slot.
    for (uint64_t a = active; a != 0; a &= a - 1) {
        const unsigned i = std::countr_zero(a);
        if (out[i] != nullptr && st.best_rank <= best_rank[i]) {
            active &= ~(uint64_t{1} << i);
            continue;
        }
        uint64_t mk[kKeyWords];
        mask_key(st, N, keys[i], mk);
        hashes[i] = hash_words(mk, N);
        __builtin_prefetch(&st.slots[hashes[i] & st.slot_mask]);
    }
    // Stage 2: probe and keep the better rule.
    for (uint64_t a = active; a != 0; a &= a - 1) {
        const unsigned i = std::countr_zero(a);
        uint64_t mk[kKeyWords];
        mask_key(st, N, keys[i], mk);
        const CompiledRule* r = im.probe(st, N, mk, hashes[i], hashes[i] & st.slot_mask);
        if (r != nullptr && (out[i] == nullptr || rule_rank(*r) > best_rank[i])) {
            out[i] = r;
            best_rank[i] = rule_rank(*r);
        }
    }
    return active;
}

void Classifier::lookup_bulk(const FlowKey* keys, unsigned n, uint8_t table,
                             const CompiledRule** out) const {
    // The contract says n <= 64 (one active-key bitmap); larger batches are split, not cut.
    for (; n > kBulkMax; n -= kBulkMax, keys += kBulkMax, out += kBulkMax)
        lookup_bulk(keys, kBulkMax, table, out);
    for (unsigned i = 0; i < n; ++i) out[i] = nullptr;
    if (table >= kMaxTables || n == 0) return;
    const Impl& im = *impl_;
    const Impl::TableRange t = im.tables[table];
    uint64_t best_rank[kBulkMax];
    uint64_t active = n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
    for (uint32_t s = t.first; s < t.first + t.count && active != 0; ++s) {
        const Impl::Subtable& st = im.subtables[s];
        active = st.bulk_step(im, st, keys, active, out, best_rank);  // per subtable, not per key
    }
}

size_t Classifier::rule_count() const {
    return impl_->rules.size();
}

size_t Classifier::subtable_count(uint8_t table) const {
    return table < kMaxTables ? impl_->tables[table].count : 0;
}

bool Classifier::table_empty(uint8_t table) const {
    return table >= kMaxTables || impl_->tables[table].count == 0;
}

}  // namespace ferry
