#include "control/port_security_config.h"

#include <arpa/inet.h>
#include <netinet/ether.h>

#include <optional>

#include "control/json_path.h"

namespace ferry {
namespace {

using json_path::at;
using json_path::invalid;

struct Prefix {
    uint8_t family = 0;
    uint8_t length = 0;
    std::array<uint8_t, 16> ip{};
};

// "ADDRESS" or "ADDRESS/LEN", IPv4 or IPv6. A missing length means the whole address.
std::optional<Prefix> parse_prefix(const std::string& text) {
    const size_t slash = text.find('/');
    const std::string address = text.substr(0, slash);
    Prefix p;
    if (inet_pton(AF_INET, address.c_str(), p.ip.data()) == 1) {
        p.family = 4;
    } else if (inet_pton(AF_INET6, address.c_str(), p.ip.data()) == 1) {
        p.family = 6;
    } else {
        return std::nullopt;
    }
    const unsigned max = p.family == 4 ? 32 : 128;
    p.length = static_cast<uint8_t>(max);
    if (slash == std::string::npos) return p;
    const std::string len = text.substr(slash + 1);
    if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
    const unsigned n = static_cast<unsigned>(std::stoul(len));
    if (n > max) return std::nullopt;
    p.length = static_cast<uint8_t>(n);
    return p;
}

bool host_bits_set(const Prefix& p) {
    const unsigned bytes = p.family == 4 ? 4 : 16;
    for (unsigned bit = p.length; bit < bytes * 8; ++bit)
        if (p.ip[bit / 8] & (0x80u >> (bit % 8))) return true;
    return false;
}

std::optional<std::array<uint8_t, 6>> parse_unicast_mac(const std::string& text) {
    ether_addr a{};
    if (text.size() != 17 || ether_aton_r(text.c_str(), &a) == nullptr) return std::nullopt;
    std::array<uint8_t, 6> mac{};
    std::copy(std::begin(a.ether_addr_octet), std::end(a.ether_addr_octet), mac.begin());
    const bool zero = mac == std::array<uint8_t, 6>{};
    if (zero || (mac[0] & 0x01) != 0) return std::nullopt;  // multicast or broadcast
    return mac;
}

const char* const kMacWhat = "must be a unicast MAC address \"02:00:00:00:00:01\"";

}  // namespace

Result<PortSecurity> compile_port_security(const PortSecurityConfig& c, const std::string& path) {
    PortSecurity s;
    s.enabled = true;
    auto add = [&](const std::array<uint8_t, 6>& mac, const Prefix& p,
                   const std::string& where) -> std::optional<Error> {
        if (s.count == kPortSecurityEntries) {
            return invalid(where, "a port has at most " + std::to_string(kPortSecurityEntries) +
                                      " entries in all (its MAC, ips and allowed_address_pairs)");
        }
        AllowedAddress& a = s.allowed[s.count++];
        a.mac = mac;
        a.family = p.family;
        a.prefix = p.length;
        a.ip = p.ip;
        return std::nullopt;
    };

    const auto port_mac = parse_unicast_mac(c.mac);
    if (!port_mac) return invalid(at(path, "mac"), kMacWhat);
    if (auto e = add(*port_mac, Prefix{}, at(path, "mac"))) return *e;  // the MAC on its own
    for (size_t i = 0; i < c.ips.size(); ++i) {
        const std::string where = at(at(path, "ips"), i);
        auto p = parse_prefix(c.ips[i]);
        if (!p)
            return invalid(where,
                           "must be an address with its subnet's prefix length, "
                           "\"10.0.0.5/24\" or \"2001:db8::5/64\"");
        p->length = p->family == 4 ? 32 : 128;  // the guest owns the address, not the subnet
        if (auto e = add(*port_mac, *p, where)) return *e;
    }
    for (size_t i = 0; i < c.allowed_address_pairs.size(); ++i) {
        const AddressPairConfig& pair = c.allowed_address_pairs[i];
        const std::string where = at(at(path, "allowed_address_pairs"), i);
        auto p = parse_prefix(pair.ip);
        if (!p) return invalid(at(where, "ip"), "must be an address or a prefix, \"10.0.0.0/24\"");
        if (host_bits_set(*p)) {
            return invalid(at(where, "ip"), pair.ip + " has bits set beyond its prefix length");
        }
        std::array<uint8_t, 6> mac = *port_mac;
        if (!pair.mac.empty()) {
            const auto m = parse_unicast_mac(pair.mac);
            if (!m) return invalid(at(where, "mac"), kMacWhat);
            mac = *m;
        }
        if (auto e = add(mac, *p, where)) return *e;
    }
    return s;
}

nlohmann::json port_security_json(const PortSecurityConfig& c) {
    nlohmann::json j{{"mac", c.mac}, {"ips", c.ips}};
    nlohmann::json pairs = nlohmann::json::array();
    for (const AddressPairConfig& p : c.allowed_address_pairs) {
        nlohmann::json e{{"ip", p.ip}};
        if (!p.mac.empty()) e["mac"] = p.mac;
        pairs.push_back(std::move(e));
    }
    j["allowed_address_pairs"] = std::move(pairs);
    return j;
}

PortSecurityConfig port_security_from(const nlohmann::json& obj) {
    PortSecurityConfig c;
    c.mac = obj.value("mac", "");
    if (auto it = obj.find("ips"); it != obj.end()) it->get_to(c.ips);
    if (auto it = obj.find("allowed_address_pairs"); it != obj.end()) {
        for (const auto& e : *it)
            c.allowed_address_pairs.push_back({e.value("ip", ""), e.value("mac", "")});
    }
    return c;
}

}  // namespace ferry
