// Payload inspection as the control thread sees it: the pattern set, compiling it into a new
// database generation and publishing that to the workers (RCU: the old one is freed after a
// grace period, traffic never stops), the per-worker stream pools, alerts, and the dpi.*
// answers.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/command_table.h"
#include "control/config.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/result.h"

struct rte_ring;
struct rte_rcu_qsbr;

namespace ferry {

struct WorkerState;
class ConntrackControl;

class DpiControl {
public:
    /// Creates every worker's stream slots and alert ring, hooks them to the workers' shards,
    /// and publishes cfg.patterns. Context: control, before the workers start.
    /// @return kInvalidParams for patterns that do not compile or need too much memory
    static Result<std::unique_ptr<DpiControl>> create(const DpiConfig& cfg,
                                                      const std::vector<WorkerState*>& ws,
                                                      ConntrackControl& ct, rte_rcu_qsbr* qsbr);
    ~DpiControl();
    DpiControl(const DpiControl&) = delete;
    DpiControl& operator=(const DpiControl&) = delete;

    /// Adds patterns (replacing those with the same ids), or with replace the whole set, then
    /// compiles and publishes. On any error nothing changes: the running database stays.
    /// Context: control. @return {"patterns": N, "generation": G, "hash": "..."} or
    ///         kInvalidParams naming the pattern id and Hyperscan's message
    Result<nlohmann::json> load(std::vector<DpiPattern> patterns, bool replace);
    /// Removes the listed patterns (all when ids is empty) and publishes. @return as load, or
    /// kNotFound for an id that is not loaded
    Result<nlohmann::json> clear(const std::vector<uint32_t>& ids);
    /// The loaded patterns as dpi.load takes them, with their match counts.
    nlohmann::json list() const;
    /// Database, streams, counters by worker and in total, matches per pattern.
    nlohmann::json stats() const;
    /// Logs the alerts the workers reported. Context: control (housekeeping).
    void drain_alerts();

    /// The published generation. Context: control.
    DpiVersion& current() { return *published_.load(std::memory_order_relaxed); }
    DpiWorker& worker(uint16_t w) { return *workers_[w]; }

private:
    DpiControl() = default;
    Result<nlohmann::json> publish(std::vector<DpiPattern> patterns);
    uint64_t matches(size_t rule_index) const;

    DpiConfig cfg_;
    rte_rcu_qsbr* qsbr_ = nullptr;
    std::vector<WorkerState*> ws_;
    std::vector<std::unique_ptr<DpiWorker>> workers_;
    std::vector<rte_ring*> rings_;
    std::vector<DpiPattern> patterns_;      // the published set, in rule order
    std::map<uint32_t, uint64_t> retired_;  // matches counted by earlier generations, by id
    std::atomic<DpiVersion*> published_{nullptr};
    uint64_t generation_ = 0;
    uint64_t alerts_logged_ = 0;
    uint64_t alert_window_s_ = 0;  // alerts are logged at most kAlertLogsPerSecond a second
    uint64_t alert_window_logged_ = 0;
};

/// Compiles patterns and checks that dpi.streams_per_worker of their streams fit in
/// dpi.memory_mb. Context: control (ferryd --check too). @return kInvalidParams naming the
/// pattern id and Hyperscan's message
Result<std::shared_ptr<const DpiDatabase>> compile_dpi(const std::vector<DpiPattern>& patterns,
                                                       const DpiConfig& limits);

/// The dpi.* rows of the command table. Context: control.
void add_dpi_commands(std::vector<CommandSpec>& t, class Switch& sw);

}  // namespace ferry
