// The classifier snapshot: every rule of every table, arranged for lookup by tuple-space
// search (one subtable per distinct mask, each an open-addressing hash of masked keys). Built
// by the control thread, published with RCU, never modified afterwards, so workers read it
// without any synchronisation beyond the RCU pointer load.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/rule.h"

namespace ferry {

/// What changed from the previous snapshot to a new one: the entries of added rules and the
/// indices of removed ones. `full` when the change is not described (everything may differ).
struct RuleDelta {
    std::vector<CompiledRule> added;
    std::vector<uint32_t> removed;
    bool full = false;
};

class Classifier {
public:
    /// Builds a snapshot from rules (any order; rule.value must already be masked). Rules are
    /// copied. previous and delta (both or neither) let the snapshot keep the recent changes,
    /// so that flow-cache entries of earlier snapshots can be revalidated instead of dropped.
    /// Context: control thread. @return nullptr only on allocation failure.
    static std::unique_ptr<Classifier> build(const std::vector<CompiledRule>& rules,
                                             uint64_t generation,
                                             const Classifier* previous = nullptr,
                                             const RuleDelta* delta = nullptr);

    /// Whether an answer a flow cache got from the snapshot of generation `since` for key in
    /// table still holds here: no change since then removed its rule or added a rule of that
    /// table matching key. rule_index is the cached rule's index, or kNoRuleIndex for "no rule
    /// matched". On true, *rule is that rule's entry in this snapshot (or nullptr).
    /// Context: fast path. @return false when the changes since then are not all known.
    /// Inline: a flow comes back after each change, so this runs about once per packet under
    /// heavy rule churn.
    bool revalidate(const FlowKey& key, uint8_t table, uint64_t since, uint32_t rule_index,
                    const CompiledRule** rule) const {
        // Every change after `since` must be known: the oldest remembered is since + 1 or older.
        if (since >= generation_ || recent_.empty() || first_change_ > since + 1) return false;
        // Generations in the history are consecutive: start at the first change after `since`.
        for (size_t i = since + 1 - first_change_; i < recent_.size(); ++i) {
            const CompactChange& c = recent_[i];
            if (c.kind == CompactChange::kFull) return false;
            if (c.kind == CompactChange::kLarge) {
                if (!still_holds(history_[i]->delta, key, table, rule_index)) return false;
                continue;
            }
            for (unsigned r = 0; r < c.n_removed; ++r)
                if (c.removed[r] == rule_index) return false;
            // An added rule that matches key could take precedence; without the cached rule's
            // priority at hand it invalidates.
            if (c.n_added != 0 && c.table == table) {
                const auto* k = reinterpret_cast<const uint64_t*>(&key);
                uint64_t diff = 0;
                for (unsigned w = 0; w < c.n_words; ++w)
                    diff |= (k[c.word[w]] & c.mask[w]) ^ c.value[w];
                if (diff == 0) return false;
            }
        }
        if (rule_index == kNoRuleIndex) {
            *rule = nullptr;
            return true;
        }
        *rule = rule_index < by_index_size_ ? by_index_[rule_index] : nullptr;
        return *rule != nullptr;
    }
    static constexpr uint32_t kNoRuleIndex = 0xffffffffu;
    /// Changes a snapshot remembers (older flow-cache entries are simply misses).
    static constexpr size_t kHistoryChanges = 64;
    static constexpr size_t kHistoryAdded = 1024;  // added rule entries over those changes
    ~Classifier();
    Classifier(const Classifier&) = delete;
    Classifier& operator=(const Classifier&) = delete;

    /// The highest-priority rule of `table` matching key (ties: lower rule index), or nullptr.
    /// Context: fast path, any worker.
    const CompiledRule* lookup(const FlowKey& key, uint8_t table) const;

    /// lookup() for n keys at once (n <= 64), all in the same table. Context: fast path.
    void lookup_bulk(const FlowKey* keys, unsigned n, uint8_t table,
                     const CompiledRule** out) const;

    /// The table-0 rule with this index (what a NIC mark names: index + 1), or nullptr. For a
    /// rule compiled into several entries, any of them: they share priority and actions.
    /// Context: fast path.
    const CompiledRule* rule_by_index(uint32_t index) const;

    uint64_t generation() const { return generation_; }
    size_t rule_count() const;
    /// Number of subtables (distinct masks) in a table. Context: any.
    size_t subtable_count(uint8_t table) const;
    /// Whether a table has any rule. Context: fast path.
    bool table_empty(uint8_t table) const;
    /// Whether lookups in a table should skip the flow cache: with few subtables the classifier
    /// answers faster than the cache (bench_classifier vs bench_flow_cache: about 5 ns per packet
    /// with one subtable and 13 ns with four, against 15 ns for a cache hit at 1k flows), and a
    /// rule change then costs no cache misses at all; a port-indexed table is always direct.
    /// Context: fast path.
    bool direct(uint8_t table) const { return table < kMaxTables && direct_[table]; }
    static constexpr size_t kDirectSubtables = 4;
    /// Whether any rule of a table has a ct action. Context: fast path.
    bool has_ct(uint8_t table) const { return table < kMaxTables && has_ct_[table]; }

    /// Ports a port-indexed table has an answer for: in_port values 0..kIndexedPorts-1 (ferry's
    /// port slots); keys with a larger in_port are looked up by tuple-space search.
    static constexpr uint16_t kIndexedPorts = 64;
    /// Whether a table's answer depends on in_port alone (every mask of the table covers no
    /// other bit of the key, a catch-all included), so that it is resolved by an array indexed
    /// by port, built with the snapshot, instead of a hash and a probe per subtable.
    /// Context: fast path.
    bool port_indexed(uint8_t table) const {
        return table < kMaxTables && by_port_[table] != nullptr;
    }
    /// The rule of a port-indexed table for a key whose in_port is in_port, what lookup() would
    /// return. Context: fast path. @pre port_indexed(table) and in_port < kIndexedPorts
    const CompiledRule* lookup_port(uint16_t in_port, uint8_t table) const {
        return by_port_[table][in_port];
    }
    /// Whether what happens to a packet in a table depends on no field of its key but in_port:
    /// the table is port-indexed and every action of its rules (output, drop, flood, mirror,
    /// meter) reads nothing of the key. Packets meeting such a table first need their frames
    /// validated (drop reasons as always), not their keys filled. Context: fast path.
    bool in_port_only(uint8_t table) const { return table < kMaxTables && in_port_only_[table]; }

private:
    struct Impl;
    /// A change as revalidation reads it: small ones (at most two removals, one addition) inline
    /// in one contiguous array, so that checking a flow against them chases no pointer.
    struct alignas(64) CompactChange {
        enum Kind : uint8_t { kSmall, kLarge, kFull };
        static constexpr unsigned kMaxWords = 3;
        uint8_t kind;
        uint8_t n_removed;
        uint8_t n_added;
        uint8_t table;    // of the added rule
        uint8_t n_words;  // the added rule's mask words that are not zero
        uint8_t word[kMaxWords];
        uint32_t removed[2];
        uint64_t mask[kMaxWords];  // of those words, and the rule's value there
        uint64_t value[kMaxWords];
    };
    static_assert(sizeof(CompactChange) == 64, "one cache line per remembered change");
    static CompactChange compact(const RuleDelta& d);
    static bool still_holds(const RuleDelta& d, const FlowKey& key, uint8_t table,
                            uint32_t rule_index);
    struct Change {
        uint64_t generation;  // of the snapshot the change produced
        RuleDelta delta;
    };
    explicit Classifier(uint64_t generation);
    /// Fills by_port_ and in_port_only_ once the subtables are built. Context: control thread.
    void index_ports();
    // Ascending generations, this snapshot's own change last. Shared with the snapshots before
    // and after: a build adds one change and copies pointers, and the workers revalidating
    // read change records that stay in their caches from one snapshot to the next.
    std::vector<std::shared_ptr<const Change>> history_;
    std::vector<CompactChange> recent_;  // one per history_ entry, same order
    // Read first by revalidation: kept here rather than behind history_'s shared pointers.
    uint64_t first_change_ = 0;  // generation of history_.front()
    // Impl's rules-by-index array, which the inline revalidate() cannot see through Impl.
    const CompiledRule* const* by_index_ = nullptr;
    size_t by_index_size_ = 0;
    uint64_t generation_;
    std::unique_ptr<Impl> impl_;
    bool direct_[kMaxTables] = {};
    bool has_ct_[kMaxTables] = {};
    bool in_port_only_[kMaxTables] = {};
    // Per port-indexed table, kIndexedPorts answers (into impl_'s rules); null for other tables.
    const CompiledRule* const* by_port_[kMaxTables] = {};
    std::vector<const CompiledRule*> port_answers_;  // what by_port_ points into
};

}  // namespace ferry
