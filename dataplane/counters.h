// Counters written by exactly one lcore and read by others (control thread, telemetry).
// Single writer: a relaxed load-add-store is enough, and the relaxed atomic access keeps
// 64-bit reads from tearing and the compiler from caching the value.
#pragma once

#include <cstdint>
#include <string_view>

#include "dataplane/drop_reason.h"

namespace ferry {

/// Whether a counter only grows or is a live count.
enum class CounterKind : uint8_t { kCounter, kGauge };

/// Adds to a counter owned by the calling lcore. Context: fast path (owner only).
inline void counter_add(uint64_t& c, uint64_t n) {
    __atomic_store_n(&c, __atomic_load_n(&c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
/// Reads a counter owned by another lcore. Context: any.
inline uint64_t counter_read(const uint64_t& c) {
    return __atomic_load_n(&c, __ATOMIC_RELAXED);
}

// A port's counters summed over the workers, as port.stats reports them: one table for the
// struct, the names and the descriptions (stats.describe, the exporter, docs/control-api.md):
// _(field, description); every one only grows. The drops are counted by reason beside them.
#define FERRY_FOREACH_PORT_COUNTER(_)  \
    _(rx_packets, "Packets received.") \
    _(rx_bytes, "Bytes received.")     \
    _(tx_packets, "Packets sent.")     \
    _(tx_bytes, "Bytes sent.")

struct PortCounters {
#define FERRY_PORT_COUNTER_FIELD(field, description) uint64_t field;
    FERRY_FOREACH_PORT_COUNTER(FERRY_PORT_COUNTER_FIELD)
#undef FERRY_PORT_COUNTER_FIELD
    uint64_t drops[kDropReasonCount];
};

struct PortCounterInfo {
    std::string_view name;
    std::string_view description;
    uint64_t PortCounters::*field;
};

inline constexpr PortCounterInfo kPortCounters[] = {
#define FERRY_PORT_COUNTER_INFO(field, description) {#field, description, &PortCounters::field},
    FERRY_FOREACH_PORT_COUNTER(FERRY_PORT_COUNTER_INFO)
#undef FERRY_PORT_COUNTER_INFO
};

struct RuleCounters {
    uint64_t packets;
    uint64_t bytes;
};

// A worker's own counters, as the stats method reports them per worker, one table for the
// struct, the names and the descriptions (stats.describe, the exporter, docs/control-api.md):
// _(field, name, description); every one only grows.
#define FERRY_FOREACH_WORKER_COUNTER(_)                                                         \
    _(packets, packets, "Packets the worker received from its queues.")                         \
    _(busy_cycles, busy_cycles, "TSC cycles of loop iterations that handled packets.")          \
    _(idle_cycles, idle_cycles,                                                                 \
      "TSC cycles of loop iterations that found no packet, back-off sleeps included.")          \
    _(iterations, iterations, "Iterations of the worker loop.")                                 \
    _(sleeps, sleeps, "Idle back-off sleeps taken.")                                            \
    _(learn_events, learn_events, "MAC learning events sent to the control thread.")            \
    _(learn_ring_full, learn_ring_full, "MAC learning events lost: the ring was full.")         \
    _(address_ring_full, address_ring_full, "Observed-address events lost: the ring was full.") \
    _(cache_hits, flow_cache_hits, "Flow cache hits (rules path only).")                        \
    _(cache_misses, flow_cache_misses, "Flow cache misses, each a classifier lookup.")

struct WorkerCounters {
#define FERRY_WORKER_COUNTER_FIELD(field, name, description) uint64_t field;
    FERRY_FOREACH_WORKER_COUNTER(FERRY_WORKER_COUNTER_FIELD)
#undef FERRY_WORKER_COUNTER_FIELD
    // Reported with conntrack's counters (ct.stats), not by stats.
    uint64_t ct_handoff_out;  // packets sent to the owner worker of their connection
    uint64_t ct_handoff_in;   // packets received from other workers for their connections
    uint64_t ct_reassembled;  // fragmented datagrams reassembled for tracking and sent on
};

/// One counter of WorkerCounters as stats reports it: its name, description and field.
struct WorkerCounterInfo {
    std::string_view name;
    std::string_view description;
    uint64_t WorkerCounters::*field;
};

inline constexpr WorkerCounterInfo kWorkerCounters[] = {
#define FERRY_WORKER_COUNTER_INFO(field, name, description) \
    {#name, description, &WorkerCounters::field},
    FERRY_FOREACH_WORKER_COUNTER(FERRY_WORKER_COUNTER_INFO)
#undef FERRY_WORKER_COUNTER_INFO
};

}  // namespace ferry
