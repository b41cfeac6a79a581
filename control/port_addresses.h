// The addresses each port's guest is observed sending from (ports with port security: workers
// report the sources port security let through), kept per port beside the configured ones and
// reported with flags as passt keeps a guest's addresses: configured, observed, link-local, with
// the prefix length. Context: control thread only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/port_security_config.h"

struct rte_ring;

namespace ferry {

/// What is known of one address of a port. The bit values are internal; a migration stream
/// carries its own (docs/migration-stream.md).
enum PortAddressFlag : uint8_t {
    kPortAddrConfigured = 1 << 0,  // in the port's security (ips or an allowed address pair)
    kPortAddrObserved = 1 << 1,    // the guest was seen sending from it
    kPortAddrLinkLocal = 1 << 2,   // 169.254.0.0/16 or fe80::/10
};

struct PortAddress {
    uint8_t family = 0;  // 4 or 6
    std::array<uint8_t, 16> ip{};
    uint8_t prefix_len = 0;    // the subnet's, as configured (or 64 for a link-local IPv6)
    uint8_t flags = 0;         // PortAddressFlag bits
    uint32_t last_seen_s = 0;  // switch clock of the last observation (observed only)
};

class ObservedAddresses {
public:
    static constexpr size_t kPerPort = 64;  // the least recently seen goes beyond this

    /// Takes every pending event off the workers' rings. Context: control thread.
    void drain(const std::vector<rte_ring*>& rings, uint32_t now_s);
    /// Records that the guest on slot sent from ip (family 4: the first 4 bytes) at seen_s;
    /// a later time of the same address wins. Context: control thread.
    void note(uint16_t slot, uint8_t family, const std::array<uint8_t, 16>& ip, uint32_t seen_s);
    /// Forgets a port slot's observations (the port was removed). Context: control thread.
    void forget(uint16_t slot) { seen_.erase(slot); }
    /// The port's addresses: configured ones first, in configuration order, then observed ones
    /// that no configured entry names. Context: control thread.
    std::vector<PortAddress> list(uint16_t slot,
                                  const std::optional<PortSecurityConfig>& security) const;

private:
    using Key = std::pair<uint8_t, std::array<uint8_t, 16>>;  // family, address
    std::map<uint16_t, std::map<Key, uint32_t>> seen_;        // slot -> address -> last seen
};

/// One address as JSON: {address, prefix_len, flags: ["configured", ...], last_seen_s?}.
nlohmann::json port_address_json(const PortAddress& a, uint32_t now_s);

}  // namespace ferry
