// The connection table of one shard: a fixed pool of CtEntry and a hash index holding both
// directions' tuples of every entry. Written only by the owner worker (or by the control thread
// while that worker is paused); no allocation after create(), no locks.
//
// Index: power-of-two buckets of 8 slots, each slot a 32-bit signature and a 32-bit reference
// (entry index << 1 | direction). A key lives in one of two buckets (two-choice hashing from
// ct_tuple_hash); the index is sized so that it is at most half full when the pool is full.
#pragma once

#include <cstdint>
#include <memory>

#include "dataplane/conntrack/ct_entry.h"
#include "dataplane/conntrack/ct_tuple.h"

namespace ferry {

/// A found tuple: the entry and which of its two tuples matched.
struct CtRef {
    uint32_t index = kCtNone;  // entry index, kCtNone when not found
    uint8_t dir = 0;           // 0: matched tuple[0] (original), 1: tuple[1] (reply)
    bool found() const { return index != kCtNone; }
};

class CtTable {
public:
    /// A table for up to `capacity` connections (1 .. 1<<27). Context: control (setup).
    /// @return nullptr when capacity is out of range or memory is short.
    static std::unique_ptr<CtTable> create(uint32_t capacity);
    /// Frees the pool and the index. Context: control.
    ~CtTable();
    CtTable(const CtTable&) = delete;
    CtTable& operator=(const CtTable&) = delete;

    /// Finds a tuple. Context: fast path, owner.
    CtRef lookup(const CtTuple& key) const;
    /// Starts loading the buckets a lookup or insert of key reads, for a caller that walks many
    /// keys one at a time (a migration's install). Context: owner, or any while it is paused.
    /// @return key's ct_tuple_hash, for the insert that follows
    uint32_t prefetch(const CtTuple& key) const {
        const uint32_t hash = ct_tuple_hash(key);
        prefetch_buckets(hash);
        return hash;
    }
    /// lookup() for n keys (n <= 64), prefetching buckets ahead. Context: fast path, owner.
    void lookup_bulk(const CtTuple* keys, unsigned n, CtRef* out) const;

    /// Adds a connection: takes a free entry, stores both tuples (entry.tuple[0] = orig,
    /// tuple[1] = reply) and indexes them. The rest of the entry is zeroed for the caller to
    /// fill. Context: fast path, owner.
    /// @return the entry index, or kCtNone when the pool is full, either tuple is already
    ///         indexed, or both candidate buckets of a tuple are full (nothing is changed then).
    uint32_t insert(const CtTuple& orig, const CtTuple& reply) {
        return insert(orig, reply, ct_tuple_hash(orig), ct_tuple_hash(reply));
    }
    /// insert() with each tuple's ct_tuple_hash given (a caller that computed them to prefetch).
    uint32_t insert(const CtTuple& orig, const CtTuple& reply, uint32_t orig_hash,
                    uint32_t reply_hash);

    /// Removes a live entry and its two index slots; the entry returns to the pool. An index that
    /// is not live is ignored. Context: fast path, owner.
    void erase(uint32_t index);

    /// The entry at an index (< capacity()); meaningful while live. Its tuples must not change
    /// while it is live (they are the index keys). Context: owner, or any while it is paused.
    CtEntry& entry(uint32_t index) { return entries_[index]; }
    const CtEntry& entry(uint32_t index) const { return entries_[index]; }
    /// Whether an entry index holds a connection. Context: owner, or any while it is paused.
    bool live(uint32_t index) const {
        return index < capacity_ && ((live_bits_[index >> 6] >> (index & 63)) & 1) != 0;
    }

    /// Live connections, and the most the pool holds. Context: owner, or any while it is paused.
    uint32_t size() const { return size_; }
    uint32_t capacity() const { return capacity_; }

    /// Walks up to `budget` entry slots from an internal cursor that wraps around; for each live
    /// entry whose expires_ms <= now_ms, calls expired(index) (which may erase it). Context: fast
    /// path, owner. @return the number of live entries visited.
    template <class F>
    uint32_t sweep(uint64_t now_ms, uint32_t budget, F&& expired) {
        uint32_t visited = 0;
        for (uint32_t i = 0; i < budget && i < capacity_; ++i) {
            const uint32_t idx = cursor_;
            cursor_ = cursor_ + 1 == capacity_ ? 0 : cursor_ + 1;
            if (!live(idx)) continue;
            ++visited;
            if (entries_[idx].expires_ms <= now_ms) expired(idx);
        }
        return visited;
    }

    /// The next live entry index at or after `from`, or kCtNone. For listing and flushing.
    /// Context: owner, or any while it is paused.
    uint32_t next_live(uint32_t from) const;

    /// Bytes held by the table (pool + index). Context: any.
    size_t memory_bytes() const;

private:
    struct Bucket;
    CtTable() = default;
    /// The entry and direction holding `key`, whose ct_tuple_hash is `hash`. Context: fast path.
    CtRef find(const CtTuple& key, uint32_t hash) const;
    /// Starts loading both buckets of a hash. Context: fast path.
    void prefetch_buckets(uint32_t hash) const;
    /// Stores `ref` in a free way of one of the hash's two buckets. Context: fast path.
    /// @return the slot (bucket * 8 + way), or kCtNone when both buckets are full.
    uint32_t link(uint32_t hash, uint32_t ref, bool primary_first);
    /// Frees the way holding `ref` in one of the hash's two buckets. Context: fast path.
    void unlink(uint32_t hash, uint32_t ref);
    uint32_t capacity_ = 0;
    uint32_t size_ = 0;
    uint32_t cursor_ = 0;
    uint32_t bucket_mask_ = 0;
    CtEntry* entries_ = nullptr;     // capacity_ entries
    uint64_t* live_bits_ = nullptr;  // one bit per entry
    uint32_t* free_ = nullptr;       // stack of free entry indices
    uint32_t free_top_ = 0;
    Bucket* buckets_ = nullptr;
};

/// ct_tuple_hash of n tuples, as CtTable::lookup_bulk hashes a burst: with AES-NI in one loop
/// compiled for it. Context: any (fast path).
void ct_tuple_hash_bulk(const CtTuple* keys, unsigned n, uint32_t* out);

}  // namespace ferry
