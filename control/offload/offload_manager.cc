#include "control/offload/offload_manager.h"

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>

#include <cerrno>

#include "control/offload/flow_translate.h"
#include "dataplane/ether_type.h"

namespace ferry {

namespace {

/// The PMD's message of a failed rte_flow call, or the errno text when it left none.
std::string flow_error_text(int rc, const rte_flow_error& error) {
    if (error.message != nullptr && error.message[0] != '\0') return error.message;
    return rte_strerror(rc < 0 ? -rc : rc);
}

/// Validates one rule. @return empty when the device takes it, else the device's reason.
std::string validate(uint16_t port, const rte_flow_attr& attr, const rte_flow_item* pattern,
                     const rte_flow_action* actions) {
    rte_flow_error error{};
    const int rc = rte_flow_validate(port, &attr, pattern, actions, &error);
    return rc == 0 ? std::string() : flow_error_text(rc, error);
}

/// Probes one action kind: an ETH-only pattern, then ETH/IPV4/UDP (some devices refuse
/// wildcard patterns). @return empty when either validates, else the first refusal.
std::string probe(uint16_t port, bool drop) {
    const rte_flow_attr attr{
        .group = 0, .priority = 0, .ingress = 1, .egress = 0, .transfer = 0, .reserved = 0};
    const rte_flow_item eth_only[] = {
        {.type = RTE_FLOW_ITEM_TYPE_ETH, .spec = nullptr, .last = nullptr, .mask = nullptr},
        {.type = RTE_FLOW_ITEM_TYPE_END, .spec = nullptr, .last = nullptr, .mask = nullptr}};
    const rte_flow_action_mark mark{.id = 1};
    const rte_flow_action drop_actions[] = {{.type = RTE_FLOW_ACTION_TYPE_DROP, .conf = nullptr},
                                            {.type = RTE_FLOW_ACTION_TYPE_END, .conf = nullptr}};
    const rte_flow_action mark_actions[] = {
        {.type = RTE_FLOW_ACTION_TYPE_MARK, .conf = &mark},
        {.type = RTE_FLOW_ACTION_TYPE_PASSTHRU, .conf = nullptr},
        {.type = RTE_FLOW_ACTION_TYPE_END, .conf = nullptr}};
    const rte_flow_action* actions = drop ? drop_actions : mark_actions;
    std::string first = validate(port, attr, eth_only, actions);
    if (first.empty()) return first;

    CompiledRule udp{};
    udp.value.ethertype = kEtherTypeIpv4;
    udp.mask.ethertype = 0xffff;
    udp.value.ip_version = 4;
    udp.mask.ip_version = 0xff;
    udp.value.ip_proto = 17;
    udp.mask.ip_proto = 0xff;
    udp.value.l4_dst = 9;
    udp.mask.l4_dst = 0xffff;
    udp.n_actions = 1;
    udp.actions[0].type = drop ? ActionType::kDrop : ActionType::kNormal;
    Result<FlowTranslation> t = translate_rule(udp, 1, 0);
    if (t && validate(port, t->attr(), t->pattern().data(), t->actions().data()).empty()) {
        return {};
    }
    return first;
}

}  // namespace

OffloadManager::OffloadManager(uint16_t dpdk_port) : port_(dpdk_port) {
    drop_refusal_ = probe(port_, true);
    takes_drop_ = drop_refusal_.empty();
    mark_refusal_ = probe(port_, false);
    takes_mark_ = mark_refusal_.empty();
}

OffloadManager::~OffloadManager() {
    clear();
}

Status OffloadManager::install(uint32_t rule_slot, std::span<const CompiledRule> entries,
                               uint32_t mark, uint32_t priority_rank) {
    remove(rule_slot);
    Slot& slot = slots_[rule_slot];
    const auto refuse = [&slot](std::string reason) -> Status {
        slot.reason = std::move(reason);
        return make_error(ErrorCode::kFailed, slot.reason);
    };
    if (entries.empty()) return refuse("no compiled entries");

    std::vector<FlowTranslation> translations;
    translations.reserve(entries.size());
    for (const CompiledRule& entry : entries) {
        Result<FlowTranslation> t = translate_rule(entry, mark, priority_rank);
        if (!t) return refuse(t.error().message);
        if (t->is_drop() && !takes_drop_)
            return refuse("device does not take drop: " + drop_refusal_);
        if (!t->is_drop() && !takes_mark_)
            return refuse("device does not take mark: " + mark_refusal_);
        translations.push_back(std::move(*t));
    }

    for (size_t i = 0; i < translations.size(); ++i) {
        const FlowTranslation& t = translations[i];
        // Name the entry when there are several: a port range can fail half-way.
        std::string reason;
        if (translations.size() > 1) {
            reason.append("entry ").append(std::to_string(i + 1)).append(" of ");
            reason.append(std::to_string(translations.size())).append(": ");
        }
        std::string refusal = validate(port_, t.attr(), t.pattern().data(), t.actions().data());
        if (!refusal.empty()) {
            destroy(slot.flows);
            return refuse(reason.append("rte_flow_validate: ").append(refusal));
        }
        rte_flow_error error{};
        rte_flow* flow =
            rte_flow_create(port_, &t.attr(), t.pattern().data(), t.actions().data(), &error);
        if (flow == nullptr) {
            const std::string text = flow_error_text(-rte_errno, error);
            destroy(slot.flows);
            return refuse(reason.append("rte_flow_create: ").append(text));
        }
        slot.flows.push_back(flow);
    }
    return Ok{};
}

void OffloadManager::remove(uint32_t rule_slot) {
    auto it = slots_.find(rule_slot);
    if (it == slots_.end()) return;
    destroy(it->second.flows);
    slots_.erase(it);
}

void OffloadManager::clear() {
    for (auto& [slot, state] : slots_) destroy(state.flows);
    slots_.clear();
}

std::string OffloadManager::state(uint32_t rule_slot) const {
    auto it = slots_.find(rule_slot);
    if (it == slots_.end()) return "software: not offered";
    if (!it->second.flows.empty()) return "offloaded";
    return "software: " + it->second.reason;
}

void OffloadManager::destroy(std::vector<rte_flow*>& flows) {
    for (rte_flow* flow : flows) {
        rte_flow_error error{};
        rte_flow_destroy(port_, flow, &error);
    }
    flows.clear();
}

Status OffloadManager::negotiate_mark_delivery(uint16_t dpdk_port) {
    uint64_t features = RTE_ETH_RX_METADATA_USER_MARK;
    const int rc = rte_eth_rx_metadata_negotiate(dpdk_port, &features);
    if (rc == -ENOTSUP) return Ok{};
    if (rc != 0) {
        return make_error(ErrorCode::kFailed,
                          std::string("rte_eth_rx_metadata_negotiate: ") + rte_strerror(-rc));
    }
    if ((features & RTE_ETH_RX_METADATA_USER_MARK) == 0) {
        return make_error(ErrorCode::kFailed, "the device does not deliver MARK ids");
    }
    return Ok{};
}

}  // namespace ferry
