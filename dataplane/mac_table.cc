#include "dataplane/mac_table.h"

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_rcu_qsbr.h>

#include <cstring>
#include <vector>

#include "dataplane/hash_key.h"

namespace ferry {
namespace {

/// Key comparison for 8-byte keys: one load and compare instead of a call into libc memcmp,
/// which rte_hash uses for key sizes it has no compare of its own for. Context: fast path.
int key_cmp8(const void* a, const void* b, size_t) {
    uint64_t x, y;
    memcpy(&x, a, sizeof(x));
    memcpy(&y, b, sizeof(y));
    return x != y;
}

/// rte_hash's hash function for the 8-byte MAC keys: SipHash-1-3 under the process's mac key.
/// Guests choose the source addresses the table learns; with rte_hash_crc (linear, its seed no
/// help) one could pick addresses that fill another's buckets, so that the other's address is
/// never learned and its frames are flooded. rte_hash passes its own 32-bit init_val, unused here.
/// Context: fast path (any lcore) and control.
uint32_t mac_hash(const void* key, uint32_t key_len, uint32_t init_val) {
    (void)key_len;
    (void)init_val;
    uint64_t w[1];
    std::memcpy(w, key, sizeof(w));
    return static_cast<uint32_t>(siphash13_words(hash_keys().mac, w));
}

}  // namespace

MacTable* MacTable::create(const char* name, uint32_t capacity, rte_rcu_qsbr* qsbr) {
    rte_hash_parameters params{};
    params.name = name;
    params.entries = capacity;
    params.key_len = sizeof(uint64_t);
    params.hash_func = mac_hash;
    params.socket_id = SOCKET_ID_ANY;
    // Readers never take a lock; the control thread is the only writer, so no writer lock either.
    params.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
    rte_hash* h = rte_hash_create(&params);
    if (h == nullptr) return nullptr;
    rte_hash_set_cmp_func(h, key_cmp8);
    if (qsbr != nullptr) {
        rte_hash_rcu_config rcu{};
        rcu.v = qsbr;
        rcu.mode = RTE_HASH_QSBR_MODE_DQ;  // deleted slots are reused after a grace period
        if (rte_hash_rcu_qsbr_add(h, &rcu) != 0) {
            rte_hash_free(h);
            return nullptr;
        }
    }
    return new MacTable(h, capacity);
}

MacTable::~MacTable() {
    rte_hash_free(hash_);
}

uint64_t MacTable::lookup_bulk(const uint64_t* keys, unsigned n, uint64_t* values) const {
    const void* key_ptrs[kBulkMax];
    void* data[kBulkMax];
    for (unsigned i = 0; i < n; ++i) key_ptrs[i] = &keys[i];
    uint64_t hits = 0;
    if (rte_hash_lookup_bulk_data(hash_, key_ptrs, n, &hits, data) <= 0) return 0;
    for (unsigned i = 0; i < n; ++i)
        if (hits & (1ULL << i)) values[i] = reinterpret_cast<uintptr_t>(data[i]);
    return hits;
}

bool MacTable::upsert(uint64_t key, MacEntry entry) {
    void* data = reinterpret_cast<void*>(static_cast<uintptr_t>(mac_value_pack(entry)));
    bool existed = rte_hash_lookup(hash_, &key) >= 0;
    // An existing key's data is replaced atomically, so readers see the old or the new port.
    if (rte_hash_add_key_data(hash_, &key, data) != 0) return false;
    if (!existed) ++size_;
    return true;
}

bool MacTable::remove(uint64_t key) {
    if (rte_hash_del_key(hash_, &key) < 0) return false;
    --size_;
    return true;
}

bool MacTable::get(uint64_t key, MacEntry* out) const {
    void* data = nullptr;
    if (rte_hash_lookup_data(hash_, &key, &data) < 0) return false;
    *out = mac_value_unpack(reinterpret_cast<uintptr_t>(data));
    return true;
}

void MacTable::for_each(const std::function<void(uint64_t, MacEntry)>& fn) const {
    const void* key = nullptr;
    void* data = nullptr;
    uint32_t next = 0;
    while (rte_hash_iterate(hash_, &key, &data, &next) >= 0)
        fn(*static_cast<const uint64_t*>(key), mac_value_unpack(reinterpret_cast<uintptr_t>(data)));
}

uint32_t MacTable::remove_if(const std::function<bool(uint64_t, MacEntry)>& pred) {
    std::vector<uint64_t> doomed;
    for_each([&](uint64_t k, MacEntry e) {
        if (pred(k, e)) doomed.push_back(k);
    });
    uint32_t n = 0;
    for (uint64_t k : doomed) n += remove(k) ? 1 : 0;
    return n;
}

uint32_t MacTable::size() const {
    return size_;
}

}  // namespace ferry
