// The reader's index of live connections by orig tuple: an open-addressing table of the
// decoded connections' indexes, each beside its tuple's hash (a probe compares tuples only
// when the hashes agree), whose orig tuples are the keys. Nothing is stored twice and nothing
// is allocated per connection: a stream of 100,000 connections is indexed in one allocation
// instead of 100,000 nodes. The hash is ct_tuple_hash, keyed per process, so a stream cannot
// choose tuples that collide. Context: control (one reader).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"
#include "migrate/migration_state.h"

namespace ferry {

class TupleSlots {
public:
    static constexpr uint32_t kNone = UINT32_MAX;

    size_t size() const { return size_; }

    /// Room for n live connections without growing.
    void reserve(size_t n) {
        size_t want = 16;
        while (want < 2 * n) want *= 2;
        if (want > table_.size()) rebuild(want);
    }

    /// Starts loading where a tuple of this hash is looked for.
    void prefetch(uint32_t hash) const {
        if (!table_.empty()) __builtin_prefetch(&table_[hash & (table_.size() - 1)], 1, 3);
    }

    /// @return t's slot in conns, or kNone
    uint32_t find(const CtTuple& t, const std::vector<MigratedConnection>& conns) const {
        if (table_.empty()) return kNone;
        const uint32_t hash = ct_tuple_hash(t);
        const size_t mask = table_.size() - 1;
        for (size_t i = hash & mask;; i = (i + 1) & mask) {
            const uint64_t v = table_[i];
            if (v == kEmpty) return kNone;
            if (v != kErased && (v >> 32) == hash && conns[slot_of(v)].orig == t) return slot_of(v);
        }
    }

    /// Adds t at slot unless t is there. conns holds every slot added before (not slot itself).
    /// @return t's slot and whether it was added
    std::pair<uint32_t, bool> try_emplace(const CtTuple& t, uint32_t hash, uint32_t slot,
                                          const std::vector<MigratedConnection>& conns) {
        if (2 * (size_ + erased_ + 1) > table_.size()) {
            // Grown to at most a quarter full; erased entries are dropped on the way.
            size_t capacity = 16;
            while (capacity < 4 * (size_ + 1)) capacity *= 2;
            rebuild(capacity > table_.size() ? capacity : table_.size());
        }
        const size_t mask = table_.size() - 1;
        size_t free_at = SIZE_MAX;
        size_t i = hash & mask;
        for (;; i = (i + 1) & mask) {
            const uint64_t v = table_[i];
            if (v == kEmpty) break;
            if (v == kErased) {
                if (free_at == SIZE_MAX) free_at = i;
            } else if ((v >> 32) == hash && conns[slot_of(v)].orig == t) {
                return {slot_of(v), false};
            }
        }
        if (free_at != SIZE_MAX) {
            i = free_at;
            --erased_;
        }
        table_[i] = entry(hash, slot);
        ++size_;
        return {slot, true};
    }

    /// Takes t out. @return its slot, or kNone when it was not there
    uint32_t erase(const CtTuple& t, const std::vector<MigratedConnection>& conns) {
        if (table_.empty()) return kNone;
        const uint32_t hash = ct_tuple_hash(t);
        const size_t mask = table_.size() - 1;
        for (size_t i = hash & mask;; i = (i + 1) & mask) {
            const uint64_t v = table_[i];
            if (v == kEmpty) return kNone;
            if (v != kErased && (v >> 32) == hash && conns[slot_of(v)].orig == t) {
                table_[i] = kErased;
                --size_;
                ++erased_;
                return slot_of(v);
            }
        }
    }

private:
    // An entry: the tuple's hash in the high half, its slot in the low half. A slot is below
    // kNone - 1 (the reader's connection limit is far lower), so neither marker is an entry.
    static constexpr uint64_t kEmpty = UINT64_MAX;
    static constexpr uint64_t kErased = UINT64_MAX - 1;
    static uint64_t entry(uint32_t hash, uint32_t slot) { return uint64_t{hash} << 32 | slot; }
    static uint32_t slot_of(uint64_t v) { return static_cast<uint32_t>(v); }

    void rebuild(size_t capacity) {
        std::vector<uint64_t> old;
        old.swap(table_);
        table_.assign(capacity, kEmpty);
        erased_ = 0;
        const size_t mask = capacity - 1;
        for (uint64_t v : old) {
            if (v == kEmpty || v == kErased) continue;
            size_t i = (v >> 32) & mask;
            while (table_[i] != kEmpty) i = (i + 1) & mask;
            table_[i] = v;
        }
    }

    std::vector<uint64_t> table_;  // power-of-two size, at most half full counting erased
    size_t size_ = 0;
    size_t erased_ = 0;
};

}  // namespace ferry
