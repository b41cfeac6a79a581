// The per-worker exact-match flow cache: (FlowKey incl. ct fields, table) -> the rule the
// classifier chose, valid only for the classifier generation that chose it. Written and read by
// one worker only; bounded memory, fixed at creation.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "dataplane/flow_key.h"

namespace ferry {

struct CompiledRule;
class Classifier;

class FlowCache {
public:
    static constexpr unsigned kBulkMax = 64;

    /// Creates a cache of at least `entries` entries (rounded up to a power of two, >= 1024).
    /// Memory: 88 bytes per entry. Sets of 8 ways: keep the active flows at or below about half
    /// the capacity, or full sets start to evict them. Context: control, before the worker runs.
    /// @return nullptr when the memory cannot be allocated.
    static std::unique_ptr<FlowCache> create(uint32_t entries);
    ~FlowCache();

    /// Looks up n (<= kBulkMax) keys in one table. out[i] is the cached rule, or nullptr on a
    /// miss. An entry of another generation is a miss unless `current` (the snapshot of
    /// `generation`) revalidates it: then it is updated to this generation and hits.
    /// @return bit i set for each hit. Context: fast path, owner worker.
    uint64_t lookup_bulk(const FlowKey* keys, unsigned n, uint8_t table, uint64_t generation,
                         const CompiledRule** out, const Classifier* current = nullptr);

    /// Remembers the classifier's answer for key (rule may be nullptr: "no rule matched").
    /// Replacement keeps hot flows: a new key takes the least recently hit way of its bucket.
    /// Context: fast path, owner worker.
    void insert(const FlowKey& key, uint8_t table, uint64_t generation, const CompiledRule* rule);

    using DumpFn = std::function<void(const FlowKey& key, uint8_t table, const CompiledRule* rule,
                                      uint64_t hits)>;
    /// Calls fn for every entry of the given generation, in bucket order, starting at bucket
    /// `from` and visiting at most `max_buckets`; returns the next bucket, or 0 after the last.
    /// hits: lookups that found the entry since it was inserted (saturates at 2^32-1).
    /// Lets the control thread dump a paused worker's cache in short slices. Context: owner, or
    /// control while the owner is paused.
    uint32_t dump(uint64_t generation, uint32_t from, uint32_t max_buckets, const DumpFn& fn) const;

    uint32_t capacity() const;
    /// Hits, misses, inserts and evictions since creation. Context: owner (or paused).
    struct Stats {
        uint64_t hits, misses, inserts, evictions;
        uint64_t revalidated;  // hits on entries of an earlier generation that still held
    };
    Stats stats() const;

private:
    struct Impl;
    FlowCache();
    std::unique_ptr<Impl> impl_;
};

}  // namespace ferry
