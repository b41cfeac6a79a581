// Connection tracking as the control thread sees it: it creates every worker's shard and the
// hand-off rings between workers, owns the zone table, and answers ct.list / ct.flush /
// ct.stats / ct.limit. Reading or changing a shard happens only while its worker is paused.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/command_table.h"
#include "control/config.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/result.h"
#include "dataplane/worker.h"

namespace ferry {

/// ct.stats's per-worker counters kept by the worker rather than by its shard (those of the
/// hand-off rings); ct.stats reports them after kCtCounters.
struct CtWorkerCounterInfo {
    std::string_view name;
    CounterKind kind;
    std::string_view description;
    uint64_t WorkerCounters::*field;
};

inline constexpr CtWorkerCounterInfo kCtHandoffCounters[] = {
    {"handoff_out", CounterKind::kCounter,
     "Packets handed by this worker to their connection's owner worker.",
     &WorkerCounters::ct_handoff_out},
    {"handoff_in", CounterKind::kCounter, "Packets handed to this worker by others.",
     &WorkerCounters::ct_handoff_in},
    {"reassembled", CounterKind::kCounter,
     "Fragmented datagrams reassembled for tracking, their fragments sent on.",
     &WorkerCounters::ct_reassembled},
};

/// Which connections a list or flush concerns; unset fields match everything.
struct CtFilter {
    std::optional<uint16_t> zone;
    std::optional<uint16_t> port;  // ferry port slot of either direction
    bool has_address = false;      // any address of either tuple equals address
    uint8_t address[16] = {};
    uint8_t address_version = 0;
    std::optional<std::string> state;  // a state name as ct.list shows it
};

class ConntrackControl {
public:
    /// Creates shards and rings for the workers and wires them into their WorkerStates.
    /// Context: control, before the workers start. @return kFailed on memory or ring failure
    static Result<std::unique_ptr<ConntrackControl>> create(const ConntrackConfig& cfg,
                                                            const std::vector<WorkerState*>& ws);
    ~ConntrackControl();
    ConntrackControl(const ConntrackControl&) = delete;
    ConntrackControl& operator=(const ConntrackControl&) = delete;

    /// One page of connections, from cursor on. Context: control, workers paused (ct.list is
    /// not safe while running, so the dispatcher pauses them).
    /// @param port_name slot -> name, for display. @return {"connections": [...], "next": N|null}
    nlohmann::json list(const CtFilter& f, uint64_t cursor, size_t limit,
                        const std::function<std::string(uint16_t)>& port_name) const;
    /// Removes the matching connections (no packets are sent). Context: control, workers
    /// paused. @return {"flushed": N}
    nlohmann::json flush(const CtFilter& f);
    /// Counters by state, zone and worker; read while the workers run.
    nlohmann::json stats() const;
    /// Sets (when given) and returns a zone's limit, per-port limit and options. Takes effect at
    /// once (for connections created from then on).
    nlohmann::json limit(uint16_t zone, std::optional<uint32_t> limit, std::optional<bool> liberal,
                         std::optional<uint32_t> port_limit = std::nullopt);

    uint64_t now_ms() const;
    ConntrackShard& shard(uint16_t worker) { return *shards_[worker]; }
    size_t shard_count() const { return shards_.size(); }
    CtZoneTable& zones() { return *zones_; }
    const CtTimeouts& timeouts() const { return timeouts_; }

private:
    ConntrackControl() = default;
    bool matches(const CtEntry& e, const CtFilter& f) const;

    std::unique_ptr<CtZoneTable> zones_;
    CtTimeouts timeouts_;
    CtClock clock_;
    std::vector<std::unique_ptr<ConntrackShard>> shards_;
    std::vector<std::unique_ptr<CtDefrag>> defrags_;  // one per worker, fragments held for ct
    std::vector<rte_ring*> rings_;
    std::vector<WorkerState*> ws_;
};

/// A tuple for logs: "tcp 10.0.0.1:40000 -> 10.0.0.2:80 zone 0".
std::string ct_tuple_text(const CtTuple& t);

/// The name ct.list shows for an entry's state ("ESTABLISHED", "UDP_REPLIED", ...).
std::string ct_state_text(const CtEntry& e);

/// The ct.* rows of the command table. Context: control.
void add_ct_commands(std::vector<CommandSpec>& t, class Switch& sw);

}  // namespace ferry
