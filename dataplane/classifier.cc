// Tuple-space search over an immutable snapshot. One subtable per distinct mask of a table; each
// subtable is an open-addressing hash (linear probing, load factor <= 0.25) from a masked key to
// the rules whose value is exactly that masked key, of which it keeps the best.
//
// Load factor. A probe's length is a branch the predictor cannot learn, so every slot beyond the
// first costs a misprediction. With at most 0.5 (2x the values, rounded up to a power of two) the
// subtables whose load came close to 0.5 averaged 2.1-2.4 slots per miss instead of 1.4, and a
// subtable's cost tripled, from about 9 to 27 cycles per key. At most 0.25 (4x) removes those
// cliffs for 8 bytes more per value. Buckets of eight tags compared with AVX2 were tried too:
// no cliffs either, but 30% slower everywhere else.
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
//
// Port-indexed tables. A table whose masks read in_port and nothing else (port forwarding,
// per-port policies, a catch-all) has one answer per port: the build looks each port up once
// and keeps the answers in an array, so a lookup there is one load instead of a hash and a probe
// per subtable, and never goes through the flow cache.
#include "dataplane/classifier.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <iterator>
#include <new>
#include <vector>

#include "dataplane/port_table.h"

namespace ferry {

namespace {

constexpr unsigned kKeyWords = sizeof(FlowKey) / sizeof(uint64_t);
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
    struct Subtable;
    /// One subtable's step of lookup_bulk, specialised on the subtable's word count and chosen
    /// at build time. @return the keys still active (those the subtable did not prune).
    using BulkStep = uint64_t (*)(const Impl& im, const Subtable& st, const FlowKey* keys,
                                  uint64_t active, const CompiledRule** out, uint64_t* best_rank);

    // Only the key words a mask touches are masked, hashed and compared (an ACL mask typically
    // covers two or three of the eight): the others are zero in every masked key and every value.
    // A slot is 64 bits, value index << 32 | hash (kFreeSlot when free), so that a miss walks a
    // dense array. Each distinct masked value has an entry of 2 + n_words 64-bit words:
    //   [0] position of its best rule in `rules`, [1] that rule's rank, [2..] the value's words
    // so comparing and ranking never read a rule: the only rule a lookup touches is the one it
    // returns, which the caller reads anyway for its actions.
    struct alignas(64) Subtable {
        uint64_t mask[kKeyWords];  // the non-zero mask words, in key order
        uint8_t word[kKeyWords];   // word[j]: which key word mask[j] applies to
        uint8_t n_words;
        uint32_t slot_mask;  // slot count - 1, slot count a power of two
        uint64_t best_rank;  // rank of the best rule in the subtable: the pruning bound
        const uint64_t* slots;
        const uint64_t* entries;
        BulkStep bulk_step;
    };

    struct TableRange {
        uint32_t first;  // into subtables
        uint32_t count;
    };

    static constexpr uint64_t kFreeSlot = uint64_t{UINT32_MAX} << 32;  // no value has that index

    // Rules grouped by table, then mask, then masked value (best first). Lookup results point
    // here; the vector is never resized after build.
    std::vector<CompiledRule> rules;
    // Rules by index, every table: NIC marks (table 0) and flow-cache revalidation.
    std::vector<const CompiledRule*> by_index;
    std::vector<Subtable> subtables;
    std::vector<uint64_t> slots;    // every subtable's slots, one subtable after the other
    std::vector<uint64_t> entries;  // every subtable's value entries, likewise
    TableRange tables[kMaxTables] = {};

    /// The first n masked words of key for st into mk. Context: fast path.
    static void mask_key(const Subtable& st, unsigned n, const FlowKey& key, uint64_t* mk) {
        const uint64_t* k = words(key);
        for (unsigned j = 0; j < n; ++j) mk[j] = k[st.word[j]] & st.mask[j];
    }

    /// Probes st (entries of 2 + n words) for the masked words mk with hash h. @return the
    /// matching entry, or nullptr. Context: fast path.
    static const uint64_t* probe(const Subtable& st, unsigned n, const uint64_t* mk, uint32_t h) {
        for (uint32_t i = h & st.slot_mask;; i = (i + 1) & st.slot_mask) {
            const uint64_t slot = st.slots[i];
            if (slot == kFreeSlot) return nullptr;
            if (static_cast<uint32_t>(slot) != h) continue;
            const uint64_t* e = st.entries + (slot >> 32) * (2 + n);
            uint64_t diff = 0;
            for (unsigned j = 0; j < n; ++j) diff |= mk[j] ^ e[2 + j];
            if (diff == 0) return e;
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
    for (const CompiledRule& r : rules) {
        if (r.index >= by_index.size()) by_index.resize(r.index + 1, nullptr);
        if (by_index[r.index] == nullptr) by_index[r.index] = &r;
    }
    const auto same_value = [&](size_t a, size_t b) {
        return std::memcmp(&rules[a].value, &rules[b].value, sizeof(FlowKey)) == 0;
    };

    // Pass 1: the subtables, with their best rank and the number of distinct values.
    struct Pending {
        size_t first_rule, end_rule, values;
        uint64_t best_rank;
    };
    std::vector<Pending> pending;
    for (size_t i = 0; i < rules.size();) {
        Pending p{i, i, 0, 0};
        for (; p.end_rule < rules.size() && rules[p.end_rule].table == rules[i].table &&
               std::memcmp(&rules[p.end_rule].mask, &rules[i].mask, sizeof(FlowKey)) == 0;
             ++p.end_rule) {
            if (p.end_rule == i || !same_value(p.end_rule, p.end_rule - 1)) ++p.values;
            p.best_rank = std::max(p.best_rank, rule_rank(rules[p.end_rule]));
        }
        pending.push_back(p);
        i = p.end_rule;
    }
    // Within a table, best rank first (see the file comment). Tables stay in ascending order.
    std::sort(pending.begin(), pending.end(), [&](const Pending& a, const Pending& b) {
        const uint8_t ta = rules[a.first_rule].table, tb = rules[b.first_rule].table;
        if (ta != tb) return ta < tb;
        return a.best_rank > b.best_rank;
    });

    // Pass 2: each subtable's compacted mask and slot count, then one allocation for all slots.
    static constexpr BulkStep kBulkSteps[] = {bulk_step<0>, bulk_step<1>, bulk_step<2>,
                                              bulk_step<3>, bulk_step<4>, bulk_step<5>,
                                              bulk_step<6>, bulk_step<7>, bulk_step<8>};
    static_assert(std::size(kBulkSteps) == kKeyWords + 1);
    subtables.resize(pending.size());
    std::vector<size_t> slot_base(pending.size()), entry_base(pending.size());
    size_t total_slots = 0, total_words = 0;
    for (size_t s = 0; s < pending.size(); ++s) {
        Subtable& st = subtables[s];
        const uint64_t* mask = words(rules[pending[s].first_rule].mask);
        st.n_words = 0;
        for (unsigned w = 0; w < kKeyWords; ++w) {
            if (mask[w] == 0) continue;
            st.mask[st.n_words] = mask[w];
            st.word[st.n_words++] = static_cast<uint8_t>(w);
        }
        st.bulk_step = kBulkSteps[st.n_words];
        st.best_rank = pending[s].best_rank;
        // Load factor <= 0.25 (see the file comment); there is always a free slot to end a probe.
        const size_t slot_count = std::bit_ceil(4 * pending[s].values);
        st.slot_mask = static_cast<uint32_t>(slot_count - 1);
        slot_base[s] = total_slots;
        total_slots += slot_count;
        entry_base[s] = total_words;
        total_words += pending[s].values * (2 + st.n_words);
    }
    slots.assign(total_slots, kFreeSlot);
    entries.assign(total_words, 0);

    // Pass 3: fill the slots with the first (best) rule of every distinct value.
    for (size_t s = 0; s < pending.size(); ++s) {
        const Pending& p = pending[s];
        Subtable& st = subtables[s];
        const size_t stride = 2 + st.n_words;
        uint64_t* my_slots = &slots[slot_base[s]];
        uint64_t* e = &entries[entry_base[s]];
        st.slots = my_slots;
        st.entries = e;
        uint32_t value = 0;
        for (size_t r = p.first_rule; r < p.end_rule; ++r) {
            // A worse rule of an already placed value can never be chosen in this subtable.
            if (r != p.first_rule && same_value(r, r - 1)) continue;
            uint64_t mk[kKeyWords];  // the value is masked already: this only gathers its words
            mask_key(st, st.n_words, rules[r].value, mk);
            const uint32_t h = hash_words(mk, st.n_words);
            uint32_t i = h & st.slot_mask;
            while (my_slots[i] != kFreeSlot) i = (i + 1) & st.slot_mask;
            my_slots[i] = uint64_t{value++} << 32 | h;
            e[0] = r;
            e[1] = rule_rank(rules[r]);
            std::memcpy(&e[2], mk, st.n_words * sizeof(uint64_t));
            e += stride;
        }

        TableRange& t = tables[rules[p.first_rule].table];
        if (t.count == 0) t.first = static_cast<uint32_t>(s);
        ++t.count;
    }
}

Classifier::Classifier(uint64_t generation) : generation_(generation) {}
Classifier::~Classifier() = default;

std::unique_ptr<Classifier> Classifier::build(const std::vector<CompiledRule>& rules,
                                              uint64_t generation, const Classifier* previous,
                                              const RuleDelta* delta) {
    // The control thread builds; the only failure the contract allows is running out of memory,
    // reported as nullptr rather than an exception crossing into callers that expect none.
    try {
        std::unique_ptr<Classifier> c(new Classifier(generation));
        c->impl_ = std::make_unique<Impl>();
        c->impl_->build(rules);
        for (const CompiledRule& r : rules)
            for (unsigned a = 0; a < r.n_actions; ++a)
                if (r.actions[a].type == ActionType::kCt) c->has_ct_[r.table] = true;
        c->index_ports();
        for (uint8_t t = 0; t < kMaxTables; ++t)
            c->direct_[t] = c->port_indexed(t) || c->subtable_count(t) <= kDirectSubtables;
        // The recent changes, for revalidating flow-cache entries: the previous snapshot's,
        // then this one's, trimmed from the oldest to the history's bounds. Only an unbroken
        // run of generations ending here is kept.
        if (previous != nullptr && delta != nullptr && previous->generation_ + 1 == generation) {
            c->history_ = previous->history_;
            c->history_.push_back(std::make_shared<const Change>(Change{generation, *delta}));
            size_t added = 0;
            for (const auto& ch : c->history_) added += ch->delta.added.size();
            size_t drop = 0;
            while (drop < c->history_.size() &&
                   (c->history_.size() - drop > kHistoryChanges || added > kHistoryAdded)) {
                added -= c->history_[drop]->delta.added.size();
                ++drop;
            }
            c->history_.erase(c->history_.begin(), c->history_.begin() + static_cast<long>(drop));
            c->recent_.reserve(c->history_.size());
            c->recent_.assign(previous->recent_.begin(), previous->recent_.end());
            c->recent_.push_back(compact(*delta));
            c->recent_.erase(c->recent_.begin(), c->recent_.begin() + static_cast<long>(drop));
        }
        if (!c->history_.empty()) {
            c->first_change_ = c->history_.front()->generation;
        }
        c->by_index_ = c->impl_->by_index.data();
        c->by_index_size_ = c->impl_->by_index.size();
        return c;
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

void Classifier::index_ports() {
    static_assert(kIndexedPorts == kPortSlots, "every port slot has its answer");
    FlowKey port_field{};
    port_field.in_port = 0xffff;
    const uint64_t in_port_bits = words(port_field)[0];
    bool indexed[kMaxTables] = {};
    bool key_free[kMaxTables] = {};
    for (uint8_t t = 0; t < kMaxTables; ++t) indexed[t] = key_free[t] = !table_empty(t);
    for (const CompiledRule& r : impl_->rules) {
        const uint64_t* m = words(r.mask);
        bool only_port = (m[0] & ~in_port_bits) == 0;
        for (unsigned w = 1; w < kKeyWords; ++w) only_port = only_port && m[w] == 0;
        if (!only_port) indexed[r.table] = false;
        for (unsigned a = 0; a < r.n_actions; ++a) {
            switch (r.actions[a].type) {
                case ActionType::kOutput:  // these read the packet and its port, not its key
                case ActionType::kDrop:
                case ActionType::kFlood:
                case ActionType::kMirror:
                case ActionType::kMeter:
                    break;
                default:
                    key_free[r.table] = false;
            }
        }
    }
    size_t n = 0;
    for (uint8_t t = 0; t < kMaxTables; ++t) n += indexed[t];
    port_answers_.resize(n * kIndexedPorts);
    size_t at = 0;
    for (uint8_t t = 0; t < kMaxTables; ++t) {
        if (!indexed[t]) continue;
        // The answer for a port is the lookup of the key with that in_port and nothing else:
        // no mask of the table reads anything else.
        for (uint16_t p = 0; p < kIndexedPorts; ++p) {
            FlowKey k{};
            k.in_port = p;
            port_answers_[at + p] = lookup(k, t);
        }
        by_port_[t] = &port_answers_[at];
        in_port_only_[t] = key_free[t];
        at += kIndexedPorts;
    }
}

Classifier::CompactChange Classifier::compact(const RuleDelta& d) {
    CompactChange c{};
    if (d.full) {
        c.kind = CompactChange::kFull;
        return c;
    }
    c.kind = CompactChange::kLarge;
    if (d.removed.size() > 2 || d.added.size() > 1) return c;
    c.n_removed = static_cast<uint8_t>(d.removed.size());
    for (size_t i = 0; i < d.removed.size(); ++i) c.removed[i] = d.removed[i];
    c.n_added = static_cast<uint8_t>(d.added.size());
    if (!d.added.empty()) {
        const CompiledRule& a = d.added[0];
        c.table = a.table;
        const uint64_t* m = words(a.mask);
        const uint64_t* v = words(a.value);
        for (unsigned w = 0; w < kKeyWords; ++w) {
            if (m[w] == 0) continue;
            if (c.n_words == CompactChange::kMaxWords) return c;  // too wide: the slow path
            c.word[c.n_words] = static_cast<uint8_t>(w);
            c.mask[c.n_words] = m[w];
            c.value[c.n_words] = v[w] & m[w];
            ++c.n_words;
        }
    }
    c.kind = CompactChange::kSmall;
    return c;
}

bool Classifier::still_holds(const RuleDelta& d, const FlowKey& key, uint8_t table,
                             uint32_t rule_index) {
    for (uint32_t r : d.removed)
        if (r == rule_index) return false;
    for (const CompiledRule& a : d.added)
        if (a.table == table && rule_matches(a, key)) return false;
    return true;
}

const CompiledRule* Classifier::rule_by_index(uint32_t index) const {
    const auto& v = impl_->by_index;
    const CompiledRule* r = index < v.size() ? v[index] : nullptr;
    return r != nullptr && r->table == 0 ? r : nullptr;  // NIC marks name table-0 rules only
}

const CompiledRule* Classifier::lookup(const FlowKey& key, uint8_t table) const {
    if (table >= kMaxTables) return nullptr;
    if (by_port_[table] != nullptr && key.in_port < kIndexedPorts)
        return by_port_[table][key.in_port];
    const Impl& im = *impl_;
    const Impl::TableRange t = im.tables[table];
    const uint64_t* best = nullptr;  // entry of the best match so far
    uint64_t best_rank = 0;
    for (uint32_t s = t.first; s < t.first + t.count; ++s) {
        const Impl::Subtable& st = im.subtables[s];
        // Sorted by best rank: when this subtable cannot beat the best match, no later one can.
        if (best != nullptr && st.best_rank <= best_rank) break;
        uint64_t mk[kKeyWords];
        Impl::mask_key(st, st.n_words, key, mk);
        const uint64_t* e = Impl::probe(st, st.n_words, mk, hash_words(mk, st.n_words));
        if (e != nullptr && (best == nullptr || e[1] > best_rank)) {
            best = e;
            best_rank = e[1];
        }
    }
    return best == nullptr ? nullptr : &im.rules[best[0]];
}

/// Context: fast path. Stage 1 hashes every active key and prefetches its first slot, so that the
/// slot misses of the batch overlap; stage 2 probes. N is a constant, so masking, hashing and
/// comparing unroll.
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
    // Stage 2: probe and keep the better rule (out[i] is only an address here: no rule is read).
    for (uint64_t a = active; a != 0; a &= a - 1) {
        const unsigned i = std::countr_zero(a);
        uint64_t mk[kKeyWords];
        mask_key(st, N, keys[i], mk);
        const uint64_t* e = probe(st, N, mk, hashes[i]);
        if (e != nullptr && (out[i] == nullptr || e[1] > best_rank[i])) {
            out[i] = &im.rules[e[0]];
            best_rank[i] = e[1];
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
    if (const CompiledRule* const* by_port = by_port_[table]; by_port != nullptr) {
        bool all = true;
        for (unsigned i = 0; i < n; ++i) {
            const uint16_t p = keys[i].in_port;
            all = all && p < kIndexedPorts;
            out[i] = p < kIndexedPorts ? by_port[p] : nullptr;
        }
        if (all) return;
        for (unsigned i = 0; i < n; ++i) out[i] = nullptr;  // rare: a port past the array
    }
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
