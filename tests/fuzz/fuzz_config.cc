// libFuzzer target for parse_config (and parse_port_config, the same port shape as port.add's
// params): any byte string is a candidate configuration file. Besides the sanitizers' checks it
// traps when a configuration that parsed breaks what config.h promises (at least one worker,
// unique port names, values inside their documented ranges). Run through scripts/fuzz.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "control/config.h"

namespace {

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool valid_port_name(const std::string& name) {
    if (name.empty() || name.size() > 31) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

/// What a PortConfig that parsed must satisfy on its own (config.h's comments).
void check_port(const ferry::PortConfig& p) {
    check(valid_port_name(p.name));
    check(p.queues >= 1 && p.queues <= ferry::kMaxQueuesPerPort);
    check(p.rx_pin.empty() || p.rx_pin.size() == p.queues);
    if (p.type == ferry::PortType::kVhostUser) {
        check(!p.path.empty() && p.path[0] == '/');
        check(p.devargs.empty());
    } else {
        check(p.type == ferry::PortType::kDpdk);
        check(!p.devargs.empty() && p.path.empty());
    }
    if (p.vlan_mode == ferry::VlanMode::kAccess) {
        check(p.tag >= 1 && p.tag <= 4094);
        check(p.trunks.empty());
    } else {
        check(p.vlan_mode == ferry::VlanMode::kTrunk);
        check(p.tag <= 4094);
        for (uint16_t vid : p.trunks) check(vid >= 1 && vid <= 4094);
    }
}

void check_config(const ferry::Config& c) {
    check(!c.workers.empty() && c.workers.size() <= ferry::kMaxWorkers);
    for (size_t i = 0; i < c.workers.size(); ++i) {
        for (size_t j = 0; j < i; ++j) check(c.workers[i] != c.workers[j]);
    }
    check(c.ports.size() <= ferry::kMaxPorts);
    for (size_t i = 0; i < c.ports.size(); ++i) {
        check_port(c.ports[i]);
        for (size_t j = 0; j < i; ++j) check(c.ports[i].name != c.ports[j].name);
        for (unsigned lcore : c.ports[i].rx_pin) {
            check(std::find(c.workers.begin(), c.workers.end(), lcore) != c.workers.end());
        }
    }
    check(!c.control_socket.empty());
    check(c.idle.min_us >= 1 && c.idle.min_us <= c.idle.max_us);
    check(c.meters.size() <= 256);
    for (size_t i = 0; i < c.meters.size(); ++i) {
        const ferry::MeterConfig& m = c.meters[i];
        check(m.id <= 255 && m.pir_kbps >= m.cir_kbps);
        for (size_t j = 0; j < i; ++j) check(c.meters[j].id != m.id);
    }
    for (const nlohmann::json& rule : c.rules) check(rule.is_object());
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
        if (doc.is_discarded()) return 0;

        ferry::Result<ferry::Config> config = ferry::parse_config(doc);
        if (config) {
            check_config(*config);
        } else {
            check(config.error().code == ferry::ErrorCode::kInvalidParams);
            check(!config.error().message.empty());
        }

        ferry::Result<ferry::PortConfig> port = ferry::parse_port_config(doc, "params");
        if (port) {
            check_port(*port);
        } else {
            check(port.error().code == ferry::ErrorCode::kInvalidParams);
            check(port.error().message.starts_with("params"));
        }
    } catch (...) {
        // parse_config documents errors as a Result, never as an exception.
        __builtin_trap();
    }
    return 0;
}
