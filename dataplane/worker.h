// A worker lcore: its one cache-aligned state struct and its poll loop. Everything in
// WorkerState below `owned by the worker` is written only by that lcore; the control thread
// reads the counters, and touches the rest only while the worker is paused.
#pragma once

#include <atomic>
#include <cstdint>

#include "dataplane/counters.h"
#include "dataplane/pause_gate.h"
#include "dataplane/port_table.h"

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;
struct rte_rcu_qsbr;

namespace ferry {

class MacTable;
class Classifier;
class FlowCache;
class ConntrackShard;
class CtDefrag;
class DpiWorker;
class DpiVersion;
struct MeterSet;

/// The millisecond clock of connection tracking, shared by every worker and the control
/// thread: all read the same invariant TSC. Set before the workers start.
struct CtClock {
    uint64_t tsc0 = 0;
    uint64_t cycles_per_ms = 1;
    uint64_t now_ms(uint64_t tsc) const { return (tsc - tsc0) / cycles_per_ms; }
};

inline constexpr uint16_t kRxBurst = 32;
inline constexpr uint16_t kTxBurst = 32;
inline constexpr uint16_t kLearnFilterSlots = 256;
inline constexpr uint32_t kCacheWindow = 4096;
inline constexpr uint32_t kThrashInsertEvery = 16;

/// A MAC learn or refresh event, sent by a worker to the control thread.
struct LearnEvent {
    uint64_t key;   // mac_key(address, vlan)
    uint16_t port;  // ferry port index the address was seen on
    uint16_t pad[3];
};
static_assert(sizeof(LearnEvent) == 16);

inline constexpr uint16_t kAddressFilterSlots = 64;

/// A source address a guest sent from on a port with port security (ARP's sender, IPv4's or
/// IPv6's source), sent by a worker to the control thread, which keeps the port's observed
/// addresses (control/port_addresses.h).
struct AddressEvent {
    uint16_t port;   // ferry port index
    uint8_t family;  // 4 or 6
    uint8_t pad;
    uint8_t ip[16];  // IPv4 in the first 4 bytes, network order
};
static_assert(sizeof(AddressEvent) == 20);

struct WorkerBackoff {
    bool enabled = true;
    uint32_t min_us = 1;
    uint32_t max_us = 200;
    uint32_t idle_polls = 256;
};

struct TxBuffer {
    uint16_t count;
    uint64_t bytes;  // of the buffered packets, summed as they are queued (tx_enqueue)
    rte_mbuf* pkts[kTxBurst];
};

struct alignas(64) WorkerState {
    // Set by the control thread before the lcore starts; read-only afterwards. Which features
    // the loop runs (ct, n_workers > 1, dpi) is chosen from these once at launch and again
    // after every pause (worker_main): the control thread may only change them while the
    // worker is stopped or paused.
    uint16_t index = 0;  // worker index: RCU thread id and tx queue id on every port
    unsigned lcore = 0;
    rte_ring* learn_ring = nullptr;    // single producer (this worker), single consumer (control)
    rte_ring* address_ring = nullptr;  // AddressEvents; single producer, single consumer
    rte_mempool* pool = nullptr;       // flood copies
    rte_rcu_qsbr* qsbr = nullptr;
    const MacTable* macs = nullptr;
    const std::atomic<const PortTable*>* table = nullptr;
    const std::atomic<uint32_t>* clock_s = nullptr;              // control thread's coarse clock
    const std::atomic<const Classifier*>* classifier = nullptr;  // rules; null: L2 bridge only
    FlowCache* flow_cache = nullptr;                             // this worker's exact-match cache
    RuleCounters* rule_counters = nullptr;  // rule_slots entries, indexed by rule index
    uint32_t rule_slots = 0;
    MeterSet* meters = nullptr;    // this worker's meter states (may be null)
    uint32_t mac_refresh_s = 150;  // re-announce a known MAC after this many seconds
    WorkerBackoff backoff;
    // Connection tracking: this worker's shard, and rings to and from every other worker
    // (ct_out[j]: single producer this worker, single consumer worker j; ct_in[j] the reverse).
    ConntrackShard* ct = nullptr;
    const CtClock* ct_clock = nullptr;
    uint16_t n_workers = 1;
    rte_ring* ct_out[kWorkerSlots] = {};
    rte_ring* ct_in[kWorkerSlots] = {};
    uint32_t ct_expire_budget = 64;  // connection slots the expiry sweep visits per millisecond
    CtDefrag* ct_defrag = nullptr;   // this worker's fragments held for tracking (with ct)
    // Payload inspection: this worker's streams, the published database (null: none), and
    // the ring alerts go to the control thread on (single producer, single consumer).
    DpiWorker* dpi = nullptr;
    const std::atomic<DpiVersion*>* dpi_version = nullptr;
    rte_ring* dpi_alerts = nullptr;

    // Control <-> worker: the pause handshake (its own cache lines for each direction).
    PauseGate pause;
    // Control -> worker. Release by the control thread, acquire by the worker.
    alignas(64) std::atomic<bool> stop{false};
    // Worker -> control: set (release) once the worker runs, cleared when it returns.
    alignas(64) std::atomic<bool> running{false};

    // Owned by the worker.
    alignas(64) WorkerCounters counters{};
    PortCounters port_counters[kPortSlots]{};
    TxBuffer tx[kPortSlots]{};
    uint16_t tx_dirty[kPortSlots]{};  // ports with buffered packets, in first-use order
    uint16_t tx_dirty_count = 0;
    // Flow cache insertion control: over windows of kCacheWindow lookups, a miss rate above
    // half means the active flows do not fit; then only one miss in kThrashInsertEvery is
    // inserted, so the cache stops paying an insert (and evicting) for flows it cannot keep.
    uint32_t cache_window_lookups = 0;
    uint32_t cache_window_misses = 0;
    uint32_t cache_insert_tick = 0;
    bool cache_thrashing = false;
    uint64_t now_tsc = 0;      // the TSC at the start of this iteration (meters read it)
    uint64_t now_ms = 0;       // ct_clock at the start of this iteration
    uint64_t next_ms_tsc = 0;  // the TSC at which now_ms next changes (one division per ms)
    uint64_t ct_swept_ms = 0;  // when the expiry sweep last ran
    uint64_t learn_recent_key[kLearnFilterSlots]{};
    uint32_t learn_recent_s[kLearnFilterSlots]{};
    uint64_t address_recent[kAddressFilterSlots]{};  // hash of (port, address) last sent
    uint32_t address_recent_s[kAddressFilterSlots]{};
};

/// The worker lcore's entry point (rte_eal_remote_launch). Context: worker lcore.
/// @param arg the WorkerState of this lcore
/// @return 0 when stopped through WorkerState::stop
int worker_main(void* arg);

/// Sends every buffered packet of the worker; what the queue refuses is freed and counted as
/// kTxFull. Context: fast path, owner lcore.
void worker_flush_tx(WorkerState& w, const PortTable& t);

}  // namespace ferry
