// The ct.* methods of the control socket. ct.list and ct.flush read and change the workers'
// shards, so they run with the workers paused (the dispatcher pauses them: not safe while
// running); ct.list is paged so that a pause stays short.
#include <arpa/inet.h>

#include <cstring>

#include "control/ct_control.h"
#include "control/json_path.h"
#include "control/switch.h"

namespace ferry {
namespace {

using json = nlohmann::json;
using json_path::invalid;

constexpr size_t kDefaultPage = 100;
constexpr size_t kMaxPage = 1000;

/// The filter params shared by ct.list and ct.flush. @return kInvalidParams / kNotFound
Result<CtFilter> filter_from(const json& p, const Switch& sw, bool with_state_address) {
    CtFilter f;
    if (p.contains("zone")) {
        const uint64_t z = p["zone"].get<uint64_t>();
        if (z > 65535) return invalid("params.zone", "must be 0..65535");
        f.zone = static_cast<uint16_t>(z);
    }
    if (p.contains("port")) {
        const std::string name = p["port"].get<std::string>();
        std::optional<uint16_t> slot = sw.port_slot(name);
        if (!slot) return make_error(ErrorCode::kNotFound, "params.port: no port named " + name);
        f.port = *slot;
    }
    if (!with_state_address) return f;
    if (p.contains("address")) {
        const std::string a = p["address"].get<std::string>();
        if (inet_pton(AF_INET, a.c_str(), f.address) == 1) {
            f.address_version = 4;
        } else if (inet_pton(AF_INET6, a.c_str(), f.address) == 1) {
            f.address_version = 6;
        } else {
            return invalid("params.address", "not an IPv4 or IPv6 address: " + a);
        }
        f.has_address = true;
    }
    if (p.contains("state")) {
        const std::string state = p["state"].get<std::string>();
        std::string known;
        bool ok = false;
        auto consider = [&](const std::string& name) {
            ok = ok || name == state;
            known += (known.empty() ? "" : " ") + name;
        };
        for (size_t i = 0; i < static_cast<size_t>(TcpState::kCount); ++i)
            consider(std::string(tcp_state_name(static_cast<TcpState>(i))));
        for (const char* proto : {"UDP", "ICMP", "IP"})
            for (const char* seen : {"_UNREPLIED", "_REPLIED"}) consider(std::string(proto) + seen);
        if (!ok)
            return invalid("params.state", "unknown state " + state + " (known: " + known + ")");
        f.state = state;
    }
    return f;
}

}  // namespace

void add_ct_commands(std::vector<CommandSpec>& t, Switch& sw) {
    t.push_back({"ct.list",
                 "tracked connections, one page at a time (pauses the workers briefly)",
                 false,
                 {{"zone", ParamType::kUnsigned, false, "only this zone"},
                  {"port", ParamType::kString, false, "only connections seen on this port"},
                  {"address", ParamType::kString, false, "only connections with this address"},
                  {"state", ParamType::kString, false, "only this state, e.g. ESTABLISHED"},
                  {"limit", ParamType::kUnsigned, false, "connections per page (1..1000)"},
                  {"cursor", ParamType::kUnsigned, false, "`next` of the previous page"}},
                 [&sw](const json& p) -> Result<json> {
                     Result<CtFilter> f = filter_from(p, sw, true);
                     if (!f) return f.error();
                     const uint64_t limit = p.value("limit", uint64_t{kDefaultPage});
                     if (limit == 0 || limit > kMaxPage)
                         return invalid("params.limit", "must be 1.." + std::to_string(kMaxPage));
                     return sw.conntrack().list(*f, p.value("cursor", uint64_t{0}), limit,
                                                [&sw](uint16_t s) { return sw.port_name(s); });
                 }});
    t.push_back({"ct.flush",
                 "forget tracked connections: all, one zone's or one port's",
                 false,
                 {{"zone", ParamType::kUnsigned, false, "only this zone"},
                  {"port", ParamType::kString, false, "only connections seen on this port"}},
                 [&sw](const json& p) -> Result<json> {
                     Result<CtFilter> f = filter_from(p, sw, false);
                     if (!f) return f.error();
                     return sw.conntrack().flush(*f);
                 }});
    t.push_back({"ct.stats",
                 "connections by state, zone and worker; drop and invalid counters",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> { return sw.conntrack().stats(); }});
    t.push_back({"ct.limit",
                 "show or set a zone's connection limit and per-port limit (0 = none) and "
                 "liberal option",
                 true,
                 {{"zone", ParamType::kUnsigned, true, "zone 0..65535"},
                  {"limit", ParamType::kUnsigned, false, "most connections of the zone"},
                  {"port_limit", ParamType::kUnsigned, false,
                   "most connections one port may have open and still open one in the zone"},
                  {"liberal", ParamType::kBoolean, false, "skip TCP window checks"}},
                 [&sw](const json& p) -> Result<json> {
                     const uint64_t z = p["zone"].get<uint64_t>();
                     if (z > 65535) return invalid("params.zone", "must be 0..65535");
                     std::optional<uint32_t> limit;
                     if (p.contains("limit")) {
                         const uint64_t l = p["limit"].get<uint64_t>();
                         if (l > 0x7fffffff)
                             return invalid("params.limit", "must be 0..2147483647");
                         limit = static_cast<uint32_t>(l);
                     }
                     std::optional<uint32_t> port_limit;
                     if (p.contains("port_limit")) {
                         const uint64_t l = p["port_limit"].get<uint64_t>();
                         if (l > 0x7fffffff)
                             return invalid("params.port_limit", "must be 0..2147483647");
                         port_limit = static_cast<uint32_t>(l);
                     }
                     std::optional<bool> liberal;
                     if (p.contains("liberal")) liberal = p["liberal"].get<bool>();
                     return sw.conntrack().limit(static_cast<uint16_t>(z), limit, liberal,
                                                 port_limit);
                 }});
}

}  // namespace ferry
