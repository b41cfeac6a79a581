#include "control/rule_table.h"

#include <rte_rcu_qsbr.h>

#include <algorithm>
#include <set>

#include "control/log.h"
#include "dataplane/classifier.h"
#include "dataplane/worker.h"

namespace ferry {

using nlohmann::json;

RuleTable::RuleTable(rte_rcu_qsbr* qsbr, uint32_t max_rules,
                     const std::vector<WorkerState*>& workers)
    : qsbr_(qsbr), max_rules_(max_rules), workers_(workers) {
    // Slot 0 is never given out: a rule index out of range is counted there, harmlessly.
    for (uint32_t s = max_rules_ - 1; s >= 1; --s) free_slots_.push_back(s);
    // An empty snapshot: building it cannot run out of memory in any way that matters.
    (void)publish(RuleDelta{.added = {}, .removed = {}, .full = true});
}

RuleTable::~RuleTable() {
    delete published_.load();
}

RuleCounters RuleTable::sum_counters(uint32_t slot) const {
    RuleCounters sum{};
    for (const WorkerState* w : workers_) {
        if (w->rule_counters == nullptr) continue;
        sum.packets += counter_read(w->rule_counters[slot].packets);
        sum.bytes += counter_read(w->rule_counters[slot].bytes);
    }
    return sum;
}

Result<json> RuleTable::add(const std::vector<json>& rules, const RuleContext& ctx,
                            const std::string& path, bool indexed) {
    std::vector<RuleSpec> parsed;
    std::set<uint64_t> batch_ids;
    for (size_t i = 0; i < rules.size(); ++i) {
        std::string at = indexed ? path + "[" + std::to_string(i) + "]" : path;
        auto spec = parse_rule(rules[i], ctx, at);
        if (!spec) return spec.error();
        if (records_.count(spec->id) != 0 || !batch_ids.insert(spec->id).second)
            return make_error(
                ErrorCode::kConflict,
                at + ".id: a rule with id " + std::to_string(spec->id) + " already exists");
        parsed.push_back(std::move(spec.value()));
    }
    if (parsed.size() > free_slots_.size())
        return make_error(ErrorCode::kConflict,
                          "no room: " + std::to_string(parsed.size()) + " rules to add, " +
                              std::to_string(free_slots_.size()) + " free slots (max_rules " +
                              std::to_string(max_rules_) + ")");
    std::vector<uint64_t> added;
    RuleDelta delta;
    for (RuleSpec& spec : parsed) {
        Record r;
        r.slot = free_slots_.back();
        free_slots_.pop_back();
        r.baseline = sum_counters(r.slot);
        for (CompiledRule& e : spec.entries) e.index = r.slot;
        delta.added.insert(delta.added.end(), spec.entries.begin(), spec.entries.end());
        r.spec = std::move(spec);
        uint64_t id = r.spec.id;
        records_.emplace(id, std::move(r));
        added.push_back(id);
    }
    if (Status st = publish(delta); !st) {
        for (uint64_t id : added) {
            free_slots_.push_back(records_.at(id).slot);
            records_.erase(id);
        }
        return st.error();
    }
    return json{{"added", added.size()}, {"generation", generation_}};
}

Result<json> RuleTable::del(const std::vector<uint64_t>& ids) {
    for (uint64_t id : ids)
        if (records_.count(id) == 0)
            return make_error(ErrorCode::kNotFound, "no rule with id " + std::to_string(id));
    std::vector<uint32_t> slots;
    std::map<uint64_t, Record> removed;
    for (uint64_t id : ids) {
        auto it = records_.find(id);
        if (it == records_.end()) continue;  // listed twice
        slots.push_back(it->second.slot);
        removed.insert(records_.extract(it));
    }
    // The slots return to the pool only after the new snapshot is in place: no worker can then
    // count a hit for the deleted rule into a slot a new rule has taken.
    RuleDelta delta;
    delta.removed = slots;
    if (Status st = publish(delta); !st) {
        records_.merge(removed);
        return st.error();
    }
    free_slots_.insert(free_slots_.end(), slots.begin(), slots.end());
    return json{{"deleted", slots.size()}, {"generation", generation_}};
}

Result<json> RuleTable::flush(std::optional<uint8_t> table) {
    std::vector<uint64_t> ids;
    for (const auto& [id, r] : records_)
        if (!table || r.spec.table == *table) ids.push_back(id);
    return del(ids);
}

json RuleTable::list(std::optional<uint8_t> table) const {
    std::vector<const Record*> rows;
    for (const auto& [id, r] : records_)
        if (!table || r.spec.table == *table) rows.push_back(&r);
    std::sort(rows.begin(), rows.end(), [](const Record* a, const Record* b) {
        if (a->spec.table != b->spec.table) return a->spec.table < b->spec.table;
        if (a->spec.priority != b->spec.priority) return a->spec.priority > b->spec.priority;
        return a->spec.id < b->spec.id;
    });
    json out = json::array();
    for (const Record* r : rows) {
        RuleCounters c = sum_counters(r->slot);
        json j = r->spec.source;
        j["packets"] = c.packets - r->baseline.packets;
        j["bytes"] = c.bytes - r->baseline.bytes;
        j["offload"] = offload_state_ ? offload_state_(r->slot) : "software";
        out.push_back(std::move(j));
    }
    return out;
}

std::vector<uint64_t> RuleTable::rules_using_port(uint16_t slot) const {
    std::vector<uint64_t> ids;
    for (const auto& [id, r] : records_) {
        bool uses = false;
        for (const CompiledRule& e : r.spec.entries) {
            if (e.mask.in_port != 0 && e.value.in_port == slot) uses = true;
            for (unsigned a = 0; a < e.n_actions; ++a) {
                ActionType t = e.actions[a].type;
                if ((t == ActionType::kOutput || t == ActionType::kMirror) &&
                    e.actions[a].arg16 == slot)
                    uses = true;
            }
        }
        if (uses) ids.push_back(id);
    }
    return ids;
}

std::vector<OffloadCandidate> RuleTable::table0_candidates() const {
    std::vector<OffloadCandidate> out;
    for (const auto& [id, r] : records_)
        if (r.spec.table == 0) out.push_back({r.slot, r.spec.priority, &r.spec.entries});
    return out;
}

void RuleTable::set_offload_hooks(std::function<void()> after_publish,
                                  std::function<std::string(uint32_t)> state) {
    after_publish_ = std::move(after_publish);
    offload_state_ = std::move(state);
}

Status RuleTable::publish(const RuleDelta& delta) {
    std::vector<CompiledRule> entries;
    for (const auto& [id, r] : records_)
        entries.insert(entries.end(), r.spec.entries.begin(), r.spec.entries.end());
    // The delta lets workers keep the flow-cache entries the change cannot affect.
    std::unique_ptr<Classifier> next =
        Classifier::build(entries, generation_ + 1, published_.load(), &delta);
    if (!next) return make_error(ErrorCode::kFailed, "out of memory building the classifier");
    ++generation_;
    // Release: pairs with the workers' acquire load of the pointer.
    const Classifier* old = published_.exchange(next.release(), std::memory_order_acq_rel);
    if (old != nullptr) {
        rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
        delete old;
    }
    FERRY_LOG_DEBUG_IN(kRule,
                       "generation %llu published: %zu rules, %zu entries added, %zu removed",
                       static_cast<unsigned long long>(generation_), records_.size(),
                       delta.added.size(), delta.removed.size());
    if (after_publish_) after_publish_();
    return Ok{};
}

}  // namespace ferry
