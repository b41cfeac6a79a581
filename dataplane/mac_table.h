// The shared MAC table: written only by the control thread, read lock-free by every worker.
// Backed by rte_hash in lock-free read/write-concurrency mode; freed key slots are reclaimed
// through the switch's RCU (rte_rcu_qsbr) so a worker never reads a slot being reused.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>

struct rte_hash;
struct rte_rcu_qsbr;

namespace ferry {

/// Key of a MAC table entry: the 48-bit address in the low bits, the internal VLAN above it.
inline uint64_t mac_key(const uint8_t mac[6], uint16_t vlan) {
    uint64_t k = 0;
    for (int i = 0; i < 6; ++i) k = (k << 8) | mac[i];
    return k | (static_cast<uint64_t>(vlan & 0xfff) << 48);
}
inline uint16_t mac_key_vlan(uint64_t key) {
    return static_cast<uint16_t>((key >> 48) & 0xfff);
}
inline uint64_t mac_key_addr(uint64_t key) {
    return key & 0xffffffffffffULL;
}

/// Value of an entry: the ferry port index and the control thread's clock (seconds) when the
/// entry was last learned or refreshed. Workers compare the stamp to decide when to refresh.
struct MacEntry {
    uint16_t port;
    uint32_t stamp_s;
};
inline uint64_t mac_value_pack(MacEntry e) {
    // Bit 63 keeps the packed value non-zero, which rte_hash's data slot does not need but a
    // reader's "no data" debugging does.
    return (1ULL << 63) | (static_cast<uint64_t>(e.stamp_s) << 16) | e.port;
}
inline MacEntry mac_value_unpack(uint64_t v) {
    return MacEntry{static_cast<uint16_t>(v & 0xffff),
                    static_cast<uint32_t>((v >> 16) & 0xffffffff)};
}

class MacTable {
public:
    static constexpr unsigned kBulkMax = 64;  // rte_hash's bulk lookup limit

    /// Creates the table. Context: control. @return nullptr on failure (rte_errno set).
    static MacTable* create(const char* name, uint32_t capacity, rte_rcu_qsbr* qsbr);
    ~MacTable();
    MacTable(const MacTable&) = delete;
    MacTable& operator=(const MacTable&) = delete;

    /// Looks up n (<= kBulkMax) keys. Context: fast path (any lcore registered with the RCU).
    /// @param values out: packed MacEntry for each hit
    /// @return bit i set when keys[i] was found
    uint64_t lookup_bulk(const uint64_t* keys, unsigned n, uint64_t* values) const;

    /// Inserts or updates an entry. Context: control thread only.
    /// @return true on success; false when the table is full.
    bool upsert(uint64_t key, MacEntry entry);
    /// Removes an entry if present. Context: control thread only. @return true if removed.
    bool remove(uint64_t key);
    /// Looks up one key. Context: control. @return true and *out when found.
    bool get(uint64_t key, MacEntry* out) const;
    /// Calls fn for every entry. Context: control (the only writer, so the walk is stable).
    void for_each(const std::function<void(uint64_t key, MacEntry entry)>& fn) const;
    /// Removes entries for which pred is true. Context: control. @return how many.
    uint32_t remove_if(const std::function<bool(uint64_t key, MacEntry entry)>& pred);
    /// Number of entries. Context: control.
    uint32_t size() const;
    uint32_t capacity() const { return capacity_; }

private:
    MacTable(rte_hash* h, uint32_t capacity) : hash_(h), capacity_(capacity) {}
    rte_hash* hash_;
    uint32_t capacity_;
    // Kept here because rte_hash_count() also counts deleted slots still waiting for their RCU
    // grace period. Written by the control thread only.
    uint32_t size_ = 0;
};

}  // namespace ferry
