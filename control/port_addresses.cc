#include "control/port_addresses.h"

#include <arpa/inet.h>
#include <rte_ring.h>

#include <algorithm>
#include <string>

#include "dataplane/worker.h"

namespace ferry {
namespace {

bool link_local(uint8_t family, const std::array<uint8_t, 16>& ip) {
    if (family == 4) return ip[0] == 169 && ip[1] == 254;
    return ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80;
}

bool covers(const std::array<uint8_t, 16>& net, uint8_t bits, const std::array<uint8_t, 16>& ip) {
    for (unsigned b = 0; b < bits; ++b) {
        const uint8_t mask = static_cast<uint8_t>(0x80u >> (b % 8));
        if ((net[b / 8] & mask) != (ip[b / 8] & mask)) return false;
    }
    return true;
}

// "10.0.0.5/24" into (family, address, prefix); the configuration was validated.
std::optional<PortAddress> configured(const std::string& text) {
    const size_t slash = text.find('/');
    PortAddress a;
    const std::string addr = text.substr(0, slash);
    if (inet_pton(AF_INET, addr.c_str(), a.ip.data()) == 1) {
        a.family = 4;
    } else if (inet_pton(AF_INET6, addr.c_str(), a.ip.data()) == 1) {
        a.family = 6;
    } else {
        return std::nullopt;
    }
    a.prefix_len =
        static_cast<uint8_t>(slash == std::string::npos ? (a.family == 4 ? 32 : 128)
                                                        : std::stoul(text.substr(slash + 1)));
    a.flags = kPortAddrConfigured;
    if (link_local(a.family, a.ip)) a.flags |= kPortAddrLinkLocal;
    return a;
}

}  // namespace

void ObservedAddresses::drain(const std::vector<rte_ring*>& rings, uint32_t now_s) {
    AddressEvent evs[64];
    for (rte_ring* ring : rings) {
        if (ring == nullptr) continue;
        unsigned n;
        while ((n = rte_ring_sc_dequeue_burst_elem(ring, evs, sizeof(AddressEvent), 64, nullptr)) !=
               0) {
            for (unsigned i = 0; i < n; ++i) {
                std::array<uint8_t, 16> ip{};
                std::copy(evs[i].ip, evs[i].ip + 16, ip.begin());
                note(evs[i].port, evs[i].family, ip, now_s);
            }
        }
    }
}

void ObservedAddresses::note(uint16_t slot, uint8_t family, const std::array<uint8_t, 16>& ip,
                             uint32_t seen_s) {
    if (family != 4 && family != 6) return;
    auto& port = seen_[slot];
    uint32_t& last = port[Key{family, ip}];
    last = std::max(last, seen_s);
    if (port.size() > kPerPort) {
        auto oldest = std::min_element(port.begin(), port.end(), [](const auto& a, const auto& b) {
            return a.second < b.second;
        });
        port.erase(oldest);
    }
}

std::vector<PortAddress> ObservedAddresses::list(
    uint16_t slot, const std::optional<PortSecurityConfig>& security) const {
    std::vector<PortAddress> out;
    std::vector<PortAddress> ranges;  // allowed address pairs wider than one address
    if (security) {
        for (const std::string& ip : security->ips)
            if (auto a = configured(ip)) out.push_back(*a);
        for (const AddressPairConfig& p : security->allowed_address_pairs) {
            auto a = configured(p.ip);
            if (!a) continue;
            if (a->prefix_len == (a->family == 4 ? 32 : 128)) {
                out.push_back(*a);
            } else {
                ranges.push_back(*a);
            }
        }
    }
    auto it = seen_.find(slot);
    if (it == seen_.end()) return out;
    for (const auto& [key, last] : it->second) {
        auto same = std::find_if(out.begin(), out.end(), [&](const PortAddress& a) {
            return a.family == key.first && a.ip == key.second;
        });
        if (same == out.end()) {
            PortAddress a;
            a.family = key.first;
            a.ip = key.second;
            a.prefix_len = a.family == 4 ? 32 : 128;
            for (const PortAddress& r : ranges) {
                if (r.family == a.family && covers(r.ip, r.prefix_len, a.ip)) {
                    a.prefix_len = r.prefix_len;
                    break;
                }
            }
            if (link_local(a.family, a.ip)) {
                a.flags |= kPortAddrLinkLocal;
                if (a.family == 6) a.prefix_len = 64;
            }
            out.push_back(a);
            same = out.end() - 1;
        }
        same->flags |= kPortAddrObserved;
        same->last_seen_s = last;
    }
    return out;
}

nlohmann::json port_address_json(const PortAddress& a, uint32_t now_s) {
    char text[INET6_ADDRSTRLEN] = {};
    inet_ntop(a.family == 4 ? AF_INET : AF_INET6, a.ip.data(), text, sizeof text);
    nlohmann::json flags = nlohmann::json::array();
    if (a.flags & kPortAddrConfigured) flags.push_back("configured");
    if (a.flags & kPortAddrObserved) flags.push_back("observed");
    if (a.flags & kPortAddrLinkLocal) flags.push_back("link_local");
    nlohmann::json j{{"address", text}, {"prefix_len", a.prefix_len}, {"flags", flags}};
    if (a.flags & kPortAddrObserved) j["seen_s_ago"] = now_s - std::min(now_s, a.last_seen_s);
    return j;
}

}  // namespace ferry
