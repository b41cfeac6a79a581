// Port security as the operator writes it (the "security" object of a port: Neutron's port MAC,
// fixed IPs and allowed address pairs) and its translation into the table the workers check.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/port_security.h"
#include "dataplane/result.h"

namespace ferry {

struct AddressPairConfig {
    std::string ip;   // an address or a prefix, "10.0.0.0/24", "2001:db8::/64"
    std::string mac;  // empty: the port's MAC
};

struct PortSecurityConfig {
    std::string mac;               // the port's MAC, "02:00:00:00:00:01"
    std::vector<std::string> ips;  // the port's addresses, each with its subnet's prefix length
                                   // ("10.0.0.5/24"); the guest may send from the address only
    std::vector<AddressPairConfig> allowed_address_pairs;  // more (prefix, MAC) pairs, as VRRP
                                                           // or a guest's own guests need
};

/// The table the workers check, or kInvalidParams naming the offending key below path: a MAC that
/// is not a unicast address, an address or prefix that does not parse or has bits set beyond its
/// prefix length (pairs), or more than kPortSecurityEntries entries in all. Context: control.
Result<PortSecurity> compile_port_security(const PortSecurityConfig& c, const std::string& path);

/// The security object of a port as it was given (the config file's and port.list's form).
/// Context: control.
nlohmann::json port_security_json(const PortSecurityConfig& c);

/// Reads the security object that the config schema accepted. Context: control.
PortSecurityConfig port_security_from(const nlohmann::json& obj);

}  // namespace ferry
