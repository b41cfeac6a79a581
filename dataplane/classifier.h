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

class Classifier {
public:
    /// Builds a snapshot from rules (any order; rule.value must already be masked). Rules are
    /// copied. Context: control thread. @return nullptr only on allocation failure.
    static std::unique_ptr<Classifier> build(const std::vector<CompiledRule>& rules,
                                             uint64_t generation);
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
    /// rule change then costs no cache misses at all. Context: fast path.
    bool direct(uint8_t table) const { return table < kMaxTables && direct_[table]; }
    static constexpr size_t kDirectSubtables = 4;
    /// Whether any rule of a table has a ct action. Context: fast path.
    bool has_ct(uint8_t table) const { return table < kMaxTables && has_ct_[table]; }

private:
    struct Impl;
    explicit Classifier(uint64_t generation);
    uint64_t generation_;
    std::unique_ptr<Impl> impl_;
    bool direct_[kMaxTables] = {};
    bool has_ct_[kMaxTables] = {};
};

}  // namespace ferry
