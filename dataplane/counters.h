// Counters written by exactly one lcore and read by others (control thread, telemetry).
// Single writer: a relaxed load-add-store is enough, and the relaxed atomic access keeps
// 64-bit reads from tearing and the compiler from caching the value.
#pragma once

#include <cstdint>

#include "dataplane/drop_reason.h"

namespace ferry {

/// Adds to a counter owned by the calling lcore. Context: fast path (owner only).
inline void counter_add(uint64_t& c, uint64_t n) {
    __atomic_store_n(&c, __atomic_load_n(&c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
/// Reads a counter owned by another lcore. Context: any.
inline uint64_t counter_read(const uint64_t& c) {
    return __atomic_load_n(&c, __ATOMIC_RELAXED);
}

struct PortCounters {
    uint64_t rx_packets;
    uint64_t rx_bytes;
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t drops[kDropReasonCount];
};

struct RuleCounters {
    uint64_t packets;
    uint64_t bytes;
};

struct WorkerCounters {
    uint64_t packets;      // packets received
    uint64_t busy_cycles;  // TSC cycles of iterations that received packets
    uint64_t idle_cycles;  // TSC cycles of empty iterations, including back-off sleeps
    uint64_t iterations;
    uint64_t sleeps;             // back-off sleeps taken
    uint64_t learn_events;       // learn events sent to the control thread
    uint64_t learn_ring_full;    // learn events lost because the ring was full
    uint64_t address_ring_full;  // observed-address events lost because the ring was full
    uint64_t cache_hits;         // flow cache hits (rules path only)
    uint64_t cache_misses;       // flow cache misses, each a classifier lookup
    uint64_t ct_handoff_out;     // packets sent to the owner worker of their connection
    uint64_t ct_handoff_in;      // packets received from other workers for their connections
};

}  // namespace ferry
