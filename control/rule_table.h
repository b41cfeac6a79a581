// The switch's flow rules: the records users added, their slots (which index the per-worker hit
// counters) and the classifier snapshot the workers read. The control thread is the only
// writer; every change builds a new snapshot and publishes it with RCU, so workers never wait.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/offload_sync.h"
#include "control/rule_config.h"
#include "dataplane/counters.h"
#include "dataplane/result.h"

struct rte_rcu_qsbr;

namespace ferry {

class Classifier;
struct RuleDelta;
struct WorkerState;

class RuleTable {
public:
    /// @param workers whose rule_counters arrays (max_rules entries each) the table reads
    RuleTable(rte_rcu_qsbr* qsbr, uint32_t max_rules, const std::vector<WorkerState*>& workers);
    ~RuleTable();
    RuleTable(const RuleTable&) = delete;
    RuleTable& operator=(const RuleTable&) = delete;

    /// The pointer workers load once per poll iteration. Context: any.
    const std::atomic<const Classifier*>* published() const { return &published_; }

    /// Adds rules, all or none: any invalid rule, duplicate id (also within the batch) or lack
    /// of slots refuses the whole batch and changes nothing. Context: control.
    /// @param path prefix of error paths, e.g. "rules" or "params.rules"; with `indexed` each
    ///        rule's path is path[i], otherwise path itself (a single rule: "params.rule")
    /// @return {"added": N, "generation": G}
    Result<nlohmann::json> add(const std::vector<nlohmann::json>& rules, const RuleContext& ctx,
                               const std::string& path, bool indexed = true);
    /// Deletes rules by id, all or none (an unknown id refuses the batch with kNotFound).
    Result<nlohmann::json> del(const std::vector<uint64_t>& ids);
    /// Deletes every rule, or every rule of one table. @return {"deleted": N}
    Result<nlohmann::json> flush(std::optional<uint8_t> table);
    /// Rules with their hit counters, ordered by table, then priority (high first), then id.
    nlohmann::json list(std::optional<uint8_t> table) const;
    /// Ids of rules that name port slot `slot` (in_port, output, mirror).
    std::vector<uint64_t> rules_using_port(uint16_t slot) const;
    /// Every table-0 rule, for the offload layer. Context: control.
    std::vector<OffloadCandidate> table0_candidates() const;
    /// Called after every publish (e.g. to sync NIC rules), and asked for a slot's offload
    /// state by list(). Context: control.
    void set_offload_hooks(std::function<void()> after_publish,
                           std::function<std::string(uint32_t slot)> state);
    size_t size() const { return records_.size(); }
    uint64_t generation() const { return generation_; }

private:
    struct Record {
        RuleSpec spec;
        uint32_t slot = 0;
        RuleCounters baseline{};  // what the slot's counters held when this rule took it
    };

    RuleCounters sum_counters(uint32_t slot) const;
    /// Builds a snapshot of every record and publishes it; frees the previous one after a grace
    /// period. Context: control. @return kFailed (nothing published) when memory runs out.
    /// @param delta what changed since the last snapshot (added entries, removed slots)
    Status publish(const RuleDelta& delta);

    rte_rcu_qsbr* qsbr_;
    uint32_t max_rules_;
    const std::vector<WorkerState*>& workers_;
    std::map<uint64_t, Record> records_;  // by id
    std::vector<uint32_t> free_slots_;
    std::atomic<const Classifier*> published_{nullptr};
    std::function<void()> after_publish_;
    std::function<std::string(uint32_t)> offload_state_;
    uint64_t generation_ = 0;
};

}  // namespace ferry
