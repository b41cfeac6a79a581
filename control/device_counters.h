// The device (ethdev) counters port.stats reports under `device`, one table for the names, the
// descriptions (stats.describe, the exporter, docs/control-api.md) and the rte_eth_stats field
// each is read from.
#pragma once

#include <rte_ethdev.h>

#include <cstdint>
#include <string_view>

namespace ferry {

struct DeviceCounterInfo {
    std::string_view name;
    std::string_view description;
    uint64_t rte_eth_stats::*field;
};

inline constexpr DeviceCounterInfo kDeviceCounters[] = {
    {"ipackets", "Packets the device received.", &rte_eth_stats::ipackets},
    {"opackets", "Packets the device sent.", &rte_eth_stats::opackets},
    {"imissed", "Packets the device dropped for lack of room in its rx queue.",
     &rte_eth_stats::imissed},
    {"ierrors", "Erroneous packets the device received.", &rte_eth_stats::ierrors},
    {"oerrors", "Packets the device failed to send.", &rte_eth_stats::oerrors},
    {"rx_nombuf", "Receive buffer allocation failures.", &rte_eth_stats::rx_nombuf},
};

}  // namespace ferry
