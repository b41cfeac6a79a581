// ferryd's configuration: the tables of every JSON object of `ferryd --config FILE` (and of
// port.add's, port.security's and dpi.load's params), and the extractors that copy validated
// objects into the structs of config.h. One table per object drives both validation and the JSON
// Schema (control/json_schema.h does both), so the two cannot drift apart. Parsing is two steps:
// check_object() validates a whole object tree against its table (types, ranges, enums, required
// and unknown keys), then small extractors copy the already-valid values into the structs and run
// the cross-field checks the schema cannot express (rx_pin length, rx_pin lcores, unique port
// names, max_us >= min_us).
//
// Adding a key: add a Field to the object's table (the schema follows), then read it in the
// object's extractor with take()/take_enum().
//
// Context: control, everything in this file. Internal checks return Ok or a kInvalidParams Error
// whose message starts with the JSON path; the first error found ends the parse.
#include "control/config.h"

#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "control/json_path.h"
#include "control/json_schema.h"

namespace ferry {
namespace {

using nlohmann::json;

using json_path::at;
using json_path::invalid;
using json_schema::array_of;
using json_schema::boolean;
using json_schema::check_object;
using json_schema::check_value;
using json_schema::deeper_than;
using json_schema::integer;
using json_schema::Kind;
using json_schema::kUnbounded;
using json_schema::matching;
using json_schema::member_or_empty;
using json_schema::name_of;
using json_schema::object;
using json_schema::ObjectSpec;
using json_schema::one_of;
using json_schema::raw_object;
using json_schema::Rule;
using json_schema::take;
using json_schema::take_enum;
using json_schema::text;

constexpr unsigned kLcoreLimit = 128;  // lcore ids are below this (DPDK's default RTE_MAX_LCORE)
constexpr uint16_t kMaxVlan = 4094;
constexpr uint64_t kSunPathSize = sizeof(sockaddr_un{}.sun_path);  // includes the NUL
constexpr int kMaxJsonDepth = 64;                                  // as for control requests

// JSON spelling of each enum value, indexed by the enum.
constexpr std::array<std::string_view, 2> kPortTypeNames{"vhost-user", "dpdk"};
constexpr std::array<std::string_view, 2> kVhostModeNames{"server", "client"};
constexpr std::array<std::string_view, 2> kVlanModeNames{"trunk", "access"};
static_assert(kPortTypeNames.size() == static_cast<size_t>(PortType::kDpdk) + 1);
static_assert(kVhostModeNames.size() == static_cast<size_t>(VhostMode::kClient) + 1);
static_assert(kVlanModeNames.size() == static_cast<size_t>(VlanMode::kAccess) + 1);

// ---------------------------------------------------------------------------------------------
// The tables. Defaults shown in the schema come from default-constructed structs, so config.h
// stays the one place that sets them.

constexpr const char* kMacPattern = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$";

const ObjectSpec& address_pair_spec() {
    static const ObjectSpec spec{
        .def_name = "address_pair",
        .description =
            "An allowed address pair: a prefix the port may also send from, and the "
            "MAC it sends it with.",
        .fields =
            {
                {.key = "ip",
                 .rule = text(2, 49, "must be an address or a prefix, \"10.0.0.0/24\""),
                 .required = true,
                 .description = "An address or a prefix, IPv4 or IPv6."},
                {.key = "mac",
                 .rule = matching(kMacPattern, 17, "must be a MAC address \"02:00:00:00:00:01\""),
                 .description = "The MAC that sends from it; absent: the port's."},
            },
    };
    return spec;
}

const ObjectSpec& port_security_spec() {
    static const ObjectSpec spec{
        .def_name = "port_security",
        .description = "Port security: the addresses a port may send from (docs/port-security.md).",
        .fields =
            {
                {.key = "mac",
                 .rule = matching(kMacPattern, 17, "must be a MAC address \"02:00:00:00:00:01\""),
                 .required = true,
                 .description = "The port's MAC."},
                {.key = "ips",
                 .rule = array_of(text(2, 49, "must be an address with its prefix length"), 0,
                                  kPortSecurityEntries, true),
                 .description = "The port's addresses with their subnets' prefix lengths, "
                                "\"10.0.0.5/24\"."},
                {.key = "allowed_address_pairs",
                 .rule = array_of(object(address_pair_spec()), 0, kPortSecurityEntries, false),
                 .description = "More prefixes (and MACs) the port may send from."},
            },
    };
    return spec;
}

const ObjectSpec& port_spec() {
    static const ObjectSpec spec = [] {
        const PortConfig d{};
        const Rule lcore = integer(0, kLcoreLimit - 1);
        ObjectSpec s{
            .def_name = "port",
            .description = "A port: the elements of \"ports\" and the params of port.add.",
            .fields =
                {
                    {.key = "name",
                     .rule = matching("^[A-Za-z0-9_.-]{1,31}$", 31,
                                      "must be 1..31 characters from A-Z a-z 0-9 _ . -"),
                     .required = true,
                     .description = "Unique port name."},
                    {.key = "type", .rule = one_of(kPortTypeNames), .required = true},
                    {.key = "queues",
                     .rule = integer(1, kMaxQueuesPerPort),
                     .default_value = d.queues,
                     .description = "Number of rx queues."},
                    {.key = "mtu",
                     .rule = integer(kMinMtu, kMaxMtu),
                     .default_value = d.mtu,
                     .description = "Largest L3 packet the port receives and sends (Ethernet "
                                    "header and VLAN tags not counted); larger frames are "
                                    "dropped as mtu_exceeded."},
                    {.key = "rx_pin",
                     .rule = array_of(lcore, 1, kMaxQueuesPerPort, false),
                     .description = "Worker lcore polling each rx queue: one entry per queue, each "
                                    "one of \"workers\"."},
                    {.key = "vlan_mode",
                     .rule = one_of(kVlanModeNames),
                     .default_value = name_of(kVlanModeNames, d.vlan_mode)},
                    {.key = "security",
                     .rule = object(port_security_spec()),
                     .description = "Addresses the port may send from; absent: any."},
                },
            .switches =
                {
                    {.key = "type",
                     .variants =
                         {
                             {.value = name_of(kPortTypeNames, PortType::kVhostUser),
                              .fields =
                                  {
                                      {.key = "path",
                                       // Absolute: a relative path would depend on ferryd's cwd.
                                       .rule =
                                           Rule{.kind = Kind::kString,
                                                .min = 1,
                                                .max = kSunPathSize - 1,
                                                .pattern = "^/",
                                                .what = "must be an absolute socket path "
                                                        "shorter than " +
                                                        std::to_string(kSunPathSize) + " bytes"},
                                       .required = true,
                                       .description =
                                           "vhost-user socket path (a sun_path: bytes, not "
                                           "characters, are limited)."},
                                      {.key = "mode",
                                       .rule = one_of(kVhostModeNames),
                                       .default_value = name_of(kVhostModeNames, d.mode),
                                       .description =
                                           "server: ferryd creates the socket; client: it "
                                           "connects to one."},
                                  }},
                             {.value = name_of(kPortTypeNames, PortType::kDpdk),
                              .fields =
                                  {
                                      {.key = "devargs",
                                       .rule = matching(
                                           "^\\S+$", 4096,
                                           "must be a non-empty string of at most 4096 bytes "
                                           "without whitespace"),
                                       .required = true,
                                       .description = "DPDK device arguments, e.g. "
                                                      "\"net_pcap0,rx_pcap=in.pcap\"."},
                                  }},
                         }},
                    {.key = "vlan_mode",
                     .variants =
                         {
                             {.value = name_of(kVlanModeNames, VlanMode::kTrunk),
                              .fields =
                                  {
                                      {.key = "tag",
                                       .rule = integer(0, kMaxVlan),
                                       .default_value = d.tag,
                                       .description = "Native VLAN of untagged frames; 0 = none."},
                                      {.key = "trunks",
                                       .rule = array_of(integer(1, kMaxVlan), 0, kMaxVlan, true),
                                       .description = "Allowed VLANs; absent or empty = all."},
                                  }},
                             {.value = name_of(kVlanModeNames, VlanMode::kAccess),
                              .fields =
                                  {
                                      {.key = "tag",
                                       .rule = integer(1, kMaxVlan),
                                       .required = true,
                                       .description = "The port's VLAN."},
                                  }},
                         }},
                },
        };
        return s;
    }();
    return spec;
}

const ObjectSpec& control_spec() {
    static const ObjectSpec spec{
        .fields =
            {
                {.key = "socket",
                 .rule = text(1, kSunPathSize - 1,
                              "must be a non-empty socket path shorter than " +
                                  std::to_string(kSunPathSize) + " bytes"),
                 .default_value = Config{}.control_socket,
                 .description = "Unix socket of the JSON-RPC control interface."},
            },
    };
    return spec;
}

const ObjectSpec& idle_backoff_spec() {
    static const ObjectSpec spec = [] {
        const IdleBackoff d{};
        return ObjectSpec{
            .description = "Workers sleep when every queue they poll stays empty.",
            .fields =
                {
                    {.key = "enabled", .rule = boolean(), .default_value = d.enabled},
                    {.key = "min_us",
                     .rule = integer(1, 1000000),
                     .default_value = d.min_us,
                     .description = "First sleep, in microseconds."},
                    {.key = "max_us",
                     .rule = integer(1, 1000000),
                     .default_value = d.max_us,
                     .description = "Longest sleep, in microseconds; at least min_us."},
                    {.key = "idle_polls",
                     .rule = integer(1, 1000000),
                     .default_value = d.idle_polls,
                     .description = "Empty polls of every queue before the first sleep."},
                },
        };
    }();
    return spec;
}

const ObjectSpec& mac_table_spec() {
    static const ObjectSpec spec = [] {
        const Config d{};
        return ObjectSpec{
            .fields =
                {
                    {.key = "size",
                     .rule = integer(1024, 4194304),
                     .default_value = d.mac_table_size,
                     .description = "Entries."},
                    {.key = "aging_s",
                     .rule = integer(10, 86400),
                     .default_value = d.mac_aging_s,
                     .description = "Seconds an unrefreshed MAC stays."},
                },
        };
    }();
    return spec;
}

const ObjectSpec& meter_spec() {
    static const ObjectSpec spec{
        .description = "A two-rate three-colour meter (RFC 2698); red packets are dropped.",
        .fields =
            {
                {.key = "id",
                 .rule = integer(0, 255),
                 .required = true,
                 .description = "Referenced by a rule's meter:ID action."},
                {.key = "cir_kbps",
                 .rule = integer(1, 400000000),
                 .required = true,
                 .description = "Committed information rate, kbit/s."},
                {.key = "cbs_bytes",
                 .rule = integer(64, 1u << 30),
                 .required = true,
                 .description = "Committed burst size, bytes."},
                {.key = "pir_kbps",
                 .rule = integer(1, 400000000),
                 .required = true,
                 .description = "Peak information rate, kbit/s (>= cir_kbps)."},
                {.key = "pbs_bytes",
                 .rule = integer(64, 1u << 30),
                 .required = true,
                 .description = "Peak burst size, bytes."},
            },
    };
    return spec;
}

const ObjectSpec& flow_cache_spec() {
    static const ObjectSpec spec = [] {
        const Config d{};
        return ObjectSpec{
            .fields = {{.key = "entries",
                        .rule = integer(1024, 16777216),
                        .default_value = d.flow_cache_entries,
                        .description = "Exact-match flow cache entries per worker."}},
        };
    }();
    return spec;
}

std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

constexpr uint64_t kMaxTimeoutS = uint64_t{30} * 86400;  // a connection timeout: 30 days

const ObjectSpec& ct_timeouts_spec() {
    static const ObjectSpec spec = [] {
        const CtTimeouts d{};
        ObjectSpec o{.description = "Seconds a connection lives without packets, by state."};
        for (size_t i = 1; i < kTcpTimeoutKeys.size(); ++i)
            o.fields.push_back(
                {.key = std::string(kTcpTimeoutKeys[i]),
                 .rule = integer(1, kMaxTimeoutS),
                 .default_value = d.tcp[i],
                 .description = "TCP state " + upper(kTcpTimeoutKeys[i].substr(4)) + "."});
        o.fields.push_back({.key = "udp_first",
                            .rule = integer(1, kMaxTimeoutS),
                            .default_value = d.udp_first,
                            .description = "UDP before a reply was seen."});
        o.fields.push_back({.key = "udp_stream",
                            .rule = integer(1, kMaxTimeoutS),
                            .default_value = d.udp_stream,
                            .description = "UDP after a reply."});
        o.fields.push_back({.key = "icmp",
                            .rule = integer(1, kMaxTimeoutS),
                            .default_value = d.icmp,
                            .description = "ICMP echo."});
        o.fields.push_back({.key = "other",
                            .rule = integer(1, kMaxTimeoutS),
                            .default_value = d.other,
                            .description = "Other IP protocols."});
        return o;
    }();
    return spec;
}

const ObjectSpec& ct_zone_spec() {
    static const ObjectSpec spec{
        .description = "Settings of one connection-tracking zone.",
        .fields =
            {
                {.key = "zone", .rule = integer(0, 65535), .required = true},
                {.key = "limit",
                 .rule = integer(0, 1u << 31),
                 .default_value = 0,
                 .description = "Most connections of the zone (all workers); 0 = no limit."},
                {.key = "port_limit",
                 .rule = integer(0, 1u << 31),
                 .default_value = 0,
                 .description = "Most connections one port may have open (all zones, all workers) "
                                "and still open one in this zone, so that one guest cannot take "
                                "the zone's whole limit; 0 = no limit."},
                {.key = "liberal",
                 .rule = boolean(),
                 .default_value = false,
                 .description = "Skip TCP sequence/window checks; pick up connections mid-stream."},
            },
    };
    return spec;
}

const ObjectSpec& conntrack_spec() {
    static const ObjectSpec spec = [] {
        const ConntrackConfig d{};
        return ObjectSpec{
            .description = "Connection tracking (docs/conntrack.md).",
            .fields =
                {
                    {.key = "capacity",
                     .rule = integer(1024, 1u << 24),
                     .default_value = d.capacity,
                     .description = "Connections per worker (about 200 bytes each)."},
                    {.key = "timeouts", .rule = object(ct_timeouts_spec())},
                    {.key = "zones",
                     .rule = array_of(object(ct_zone_spec()), 0, 4096, false),
                     .description = "Zone limits and options; zones not listed have neither."},
                },
        };
    }();
    return spec;
}

const ObjectSpec& dpi_pattern_spec() {
    static const ObjectSpec spec = [] {
        const DpiPattern d{};
        return ObjectSpec{
            .def_name = "dpi_pattern",
            .description = "A payload pattern: elements of dpi.patterns and of dpi.load's params.",
            .fields =
                {
                    {.key = "id",
                     .rule = integer(0, 0xffffffffu),
                     .required = true,
                     .description = "The pattern's id (unique)."},
                    {.key = "regex",
                     .rule = text(1, kMaxDpiRegexBytes),
                     .required = true,
                     .description = "Regular expression (Hyperscan/PCRE syntax; \\x00 for a NUL "
                                    "byte)."},
                    {.key = "flags",
                     .rule = array_of(one_of(kDpiFlagNames), 0, kDpiFlagNames.size(), true),
                     .default_value = json::array(),
                     .description = "caseless, dotall, multiline, single_match (report once per "
                                    "connection and direction)."},
                    {.key = "direction",
                     .rule = one_of(kDpiDirectionNames),
                     .default_value = name_of(kDpiDirectionNames, d.direction),
                     .description = "to_server: what the connection's opener sends; to_client: "
                                    "the replies."},
                    {.key = "action",
                     .rule = one_of(kDpiActionNames),
                     .default_value = name_of(kDpiActionNames, d.action),
                     .description = "drop: end the connection; alert: count and log; mark: set "
                                    "the connection's ct_mark."},
                },
            .switches = {{.key = "action",
                          .variants = {{.value = "drop"},
                                       {.value = "alert"},
                                       {.value = "mark",
                                        .fields = {{.key = "mark",
                                                    .rule = integer(0, 0xffffffffu),
                                                    .required = true,
                                                    .description =
                                                        "The ct_mark a match sets."}}}}}},
        };
    }();
    return spec;
}

const ObjectSpec& log_subsystems_spec() {
    static const ObjectSpec spec = [] {
        ObjectSpec s{.description = "Levels of single subsystems, after \"level\"."};
        for (std::string_view name : kLogSubsystemNames)
            s.fields.push_back({.key = std::string(name), .rule = one_of(kLogLevelNames)});
        return s;
    }();
    return spec;
}

const ObjectSpec& log_spec() {
    static const ObjectSpec spec{
        .description =
            "Log levels at start; the log.level method changes them at run time. "
            "They take effect once the switch is built; before that, ferryd's "
            "--log-level applies.",
        .fields =
            {
                {.key = "level",
                 .rule = one_of(kLogLevelNames),
                 .default_value = std::string(log_level_name(LogLevel::kInfo)),
                 .description = "Lowest level printed, for every subsystem."},
                {.key = "subsystems", .rule = object(log_subsystems_spec())},
            },
    };
    return spec;
}

const ObjectSpec& migration_spec() {
    static const ObjectSpec spec{
        .description =
            "Defaults of the migration channel for tcp: addresses (TLS 1.3 with "
            "certificates on both ends, docs/migration.md); a migrate.send or "
            "migrate.receive call's own tls_creds / tls_peer win.",
        .fields =
            {
                {.key = "tls_creds",
                 .rule = text(1, 4096, "must be a directory path"),
                 .description = "Directory with ca-cert.pem, server-cert.pem, server-key.pem, "
                                "client-cert.pem and client-key.pem (QEMU's tls-creds-x509 "
                                "layout)."},
                {.key = "tls_peer",
                 .rule = text(1, 255, "must be a certificate name"),
                 .description = "The name a source's client certificate must carry when this "
                                "ferryd receives (migrate.receive). A sending ferryd expects "
                                "the target's certificate to name the host it is reached at."},
            },
    };
    return spec;
}

const ObjectSpec& dpi_spec() {
    static const ObjectSpec spec = [] {
        const DpiConfig d{};
        return ObjectSpec{
            .description = "Payload inspection with Hyperscan (docs/dpi.md).",
            .fields =
                {
                    {.key = "depth_kib",
                     .rule = integer(1, 1u << 20),
                     .default_value = d.depth_kib,
                     .description = "KiB inspected per direction of a connection."},
                    {.key = "streams_per_worker",
                     .rule = integer(16, 1u << 22),
                     .default_value = d.streams_per_worker,
                     .description = "Connections inspected at once per worker; more are "
                                    "counted and pass uninspected."},
                    {.key = "memory_mb",
                     .rule = integer(1, 1u << 16),
                     .default_value = d.memory_mb,
                     .description = "Stream state per worker: a pattern set whose streams need "
                                    "more is refused."},
                    {.key = "patterns",
                     .rule = array_of(object(dpi_pattern_spec()), 0, kMaxDpiPatterns, false),
                     .description = "Patterns loaded at start."},
                },
        };
    }();
    return spec;
}

const ObjectSpec& root_spec() {
    static const ObjectSpec spec = [] {
        const Config d{};
        return ObjectSpec{
            .description = "ferryd configuration (ferryd --config FILE).",
            .fields =
                {
                    {.key = "eal",
                     .rule = array_of(text(0, kUnbounded), 0, kUnbounded, false),
                     .default_value = json::array(),
                     .description = "DPDK EAL arguments, passed as given."},
                    {.key = "control", .rule = object(control_spec())},
                    {.key = "workers",
                     .rule = array_of(integer(0, kLcoreLimit - 1), 1, kMaxWorkers, true),
                     .required = true,
                     .description = "Worker lcore ids."},
                    {.key = "ports",
                     .rule = array_of(object(port_spec()), 0, kMaxPorts, false),
                     .description = "Ports created at start; names are unique."},
                    {.key = "idle_backoff", .rule = object(idle_backoff_spec())},
                    {.key = "mac_table", .rule = object(mac_table_spec())},
                    {.key = "mbufs",
                     .rule = integer(2048, 1048576),
                     .default_value = d.mbufs,
                     .description = "Packet buffers in the pool."},
                    {.key = "rules",
                     .rule = array_of(raw_object("A flow rule, see docs/rules.md."), 0, kUnbounded,
                                      false),
                     .description = "Flow rules installed at start (docs/rules.md)."},
                    {.key = "meters",
                     .rule = array_of(object(meter_spec()), 0, 256, false),
                     .description = "Meters that rules can refer to; ids are unique."},
                    {.key = "flow_cache", .rule = object(flow_cache_spec())},
                    {.key = "max_rules",
                     .rule = integer(1024, 1048576),
                     .default_value = d.max_rules,
                     .description = "Rule slots; each costs 16 bytes of counters per worker."},
                    {.key = "conntrack", .rule = object(conntrack_spec())},
                    {.key = "dpi", .rule = object(dpi_spec())},
                    {.key = "log", .rule = object(log_spec())},
                    {.key = "migration", .rule = object(migration_spec())},
                },
        };
    }();
    return spec;
}

// ---------------------------------------------------------------------------------------------
// Extraction of validated objects into the structs.

// Copies a port object that check_object() accepted; refuses an rx_pin whose length is not queues.
Result<PortConfig> port_from(const json& obj, const std::string& path) {
    PortConfig p;
    take(obj, "name", p.name);
    take_enum(obj, "type", kPortTypeNames, p.type);
    take(obj, "path", p.path);
    take_enum(obj, "mode", kVhostModeNames, p.mode);
    take(obj, "devargs", p.devargs);
    take(obj, "queues", p.queues);
    take(obj, "mtu", p.mtu);
    take(obj, "rx_pin", p.rx_pin);
    take_enum(obj, "vlan_mode", kVlanModeNames, p.vlan_mode);
    take(obj, "tag", p.tag);
    take(obj, "trunks", p.trunks);
    if (auto it = obj.find("security"); it != obj.end()) {
        p.security = port_security_from(*it);
        auto compiled = compile_port_security(*p.security, at(path, "security"));
        if (!compiled) return compiled.error();
    }
    if (!p.rx_pin.empty() && p.rx_pin.size() != p.queues) {
        return invalid(at(path, "rx_pin"), "must have one entry per queue (queues is " +
                                               std::to_string(p.queues) + ", rx_pin has " +
                                               std::to_string(p.rx_pin.size()) + ")");
    }
    return p;
}

// Copies a validated idle_backoff object into idle; refuses max_us below min_us (either may be
// the default).
Status idle_backoff_from(const json& obj, const std::string& path, IdleBackoff& idle) {
    take(obj, "enabled", idle.enabled);
    take(obj, "min_us", idle.min_us);
    take(obj, "max_us", idle.max_us);
    take(obj, "idle_polls", idle.idle_polls);
    if (idle.max_us < idle.min_us) {
        return invalid(at(path, "max_us"), "must be at least min_us (" +
                                               std::to_string(idle.min_us) + "), is " +
                                               std::to_string(idle.max_us));
    }
    return Ok{};
}

// Cross-checks between ports and workers: port names are unique and every rx_pin lcore is a worker.
Status check_ports(const Config& c) {
    for (size_t i = 0; i < c.ports.size(); ++i) {
        const PortConfig& p = c.ports[i];
        for (size_t j = 0; j < i; ++j) {
            if (c.ports[j].name == p.name) {
                return invalid(at(at("ports", i), "name"), "duplicate port name \"" + p.name +
                                                               "\" (also " + at("ports", j) + ")");
            }
        }
        for (size_t q = 0; q < p.rx_pin.size(); ++q) {
            if (std::find(c.workers.begin(), c.workers.end(), p.rx_pin[q]) == c.workers.end()) {
                return invalid(
                    at(at(at("ports", i), "rx_pin"), q),
                    "lcore " + std::to_string(p.rx_pin[q]) + " is not one of \"workers\"");
            }
        }
    }
    return Ok{};
}

// Copies a validated conntrack object; refuses a zone listed twice.
Status conntrack_from(const json& obj, ConntrackConfig& ct) {
    take(obj, "capacity", ct.capacity);
    const json& t = member_or_empty(obj, "timeouts");
    for (size_t i = 1; i < kTcpTimeoutKeys.size(); ++i)
        take(t, std::string(kTcpTimeoutKeys[i]).c_str(), ct.timeouts.tcp[i]);
    ct.timeouts.tcp[0] = ct.timeouts.tcp[static_cast<size_t>(TcpState::kSynSent)];
    take(t, "udp_first", ct.timeouts.udp_first);
    take(t, "udp_stream", ct.timeouts.udp_stream);
    take(t, "icmp", ct.timeouts.icmp);
    take(t, "other", ct.timeouts.other);
    if (auto it = obj.find("zones"); it != obj.end()) {
        for (size_t i = 0; i < it->size(); ++i) {
            CtZoneConfig z;
            take((*it)[i], "zone", z.zone);
            take((*it)[i], "limit", z.limit);
            take((*it)[i], "port_limit", z.port_limit);
            take((*it)[i], "liberal", z.liberal);
            for (const CtZoneConfig& other : ct.zones)
                if (other.zone == z.zone)
                    return make_error(ErrorCode::kInvalidParams,
                                      at(at("conntrack.zones", i), "zone") + ": zone " +
                                          std::to_string(z.zone) + " is listed twice");
            ct.zones.push_back(z);
        }
    }
    return Ok{};
}

// Copies validated pattern objects; refuses a repeated id and a regex with a NUL byte
// (Hyperscan takes C strings: it would silently end there).
Result<std::vector<DpiPattern>> dpi_patterns_from(const json& arr, const std::string& path) {
    std::vector<DpiPattern> out;
    out.reserve(arr.size());
    std::unordered_set<uint32_t> ids;
    for (size_t i = 0; i < arr.size(); ++i) {
        const json& o = arr[i];
        DpiPattern p;
        take(o, "id", p.id);
        take(o, "regex", p.regex);
        take_enum(o, "direction", kDpiDirectionNames, p.direction);
        take_enum(o, "action", kDpiActionNames, p.action);
        take(o, "mark", p.mark);
        if (auto it = o.find("flags"); it != o.end())
            for (const json& f : *it)
                for (size_t b = 0; b < kDpiFlagNames.size(); ++b)
                    if (kDpiFlagNames[b] == f.get_ref<const std::string&>())
                        p.flags = static_cast<uint8_t>(p.flags | (1u << b));
        if (p.regex.find('\0') != std::string::npos)
            return make_error(
                ErrorCode::kInvalidParams,
                at(at(path, i), "regex") + ": contains a NUL byte; write \\x00 in the expression");
        if (!ids.insert(p.id).second)
            return make_error(ErrorCode::kInvalidParams,
                              at(at(path, i), "id") + ": duplicate id " + std::to_string(p.id));
        out.push_back(std::move(p));
    }
    return out;
}

}  // namespace

Result<std::vector<DpiPattern>> parse_dpi_patterns(const json& arr, const std::string& path) {
    if (deeper_than(arr, kMaxJsonDepth))
        return make_error(ErrorCode::kInvalidParams,
                          path + ": nested more than " + std::to_string(kMaxJsonDepth) + " levels");
    const Rule r = array_of(object(dpi_pattern_spec()), 1, kMaxDpiPatterns, false);
    if (Status s = check_value(arr, r, path); !s) return s.error();
    return dpi_patterns_from(arr, path);
}

Result<Config> parse_config(const json& doc) {
    // Copying or walking a JSON value recurses once per level: refuse absurd nesting first.
    if (deeper_than(doc, kMaxJsonDepth))
        return make_error(ErrorCode::kInvalidParams,
                          "<root>: nested more than " + std::to_string(kMaxJsonDepth) + " levels");
    if (Status s = check_object(doc, root_spec(), ""); !s) return s.error();
    Config c;
    take(doc, "eal", c.eal);
    take(member_or_empty(doc, "control"), "socket", c.control_socket);
    take(doc, "workers", c.workers);
    if (auto it = doc.find("ports"); it != doc.end()) {
        for (size_t i = 0; i < it->size(); ++i) {
            Result<PortConfig> port = port_from((*it)[i], at("ports", i));
            if (!port) return port.error();
            c.ports.push_back(std::move(*port));
        }
    }
    if (Status s = check_ports(c); !s) return s.error();
    if (Status s = idle_backoff_from(member_or_empty(doc, "idle_backoff"), "idle_backoff", c.idle);
        !s) {
        return s.error();
    }
    const json& mac = member_or_empty(doc, "mac_table");
    take(mac, "size", c.mac_table_size);
    take(mac, "aging_s", c.mac_aging_s);
    take(doc, "mbufs", c.mbufs);
    if (auto it = doc.find("rules"); it != doc.end())
        for (const json& r : *it) c.rules.push_back(r);
    if (auto it = doc.find("meters"); it != doc.end()) {
        for (size_t i = 0; i < it->size(); ++i) {
            const json& m = (*it)[i];
            MeterConfig mc;
            take(m, "id", mc.id);
            take(m, "cir_kbps", mc.cir_kbps);
            take(m, "cbs_bytes", mc.cbs_bytes);
            take(m, "pir_kbps", mc.pir_kbps);
            take(m, "pbs_bytes", mc.pbs_bytes);
            if (mc.pir_kbps < mc.cir_kbps)
                return make_error(ErrorCode::kInvalidParams,
                                  at(at("meters", i), "pir_kbps") + ": must be >= cir_kbps");
            for (const MeterConfig& other : c.meters)
                if (other.id == mc.id)
                    return make_error(ErrorCode::kInvalidParams, at(at("meters", i), "id") +
                                                                     ": duplicate meter id " +
                                                                     std::to_string(mc.id));
            c.meters.push_back(mc);
        }
    }
    take(member_or_empty(doc, "flow_cache"), "entries", c.flow_cache_entries);
    take(doc, "max_rules", c.max_rules);
    if (Status s = conntrack_from(member_or_empty(doc, "conntrack"), c.conntrack); !s)
        return s.error();
    const json& dpi = member_or_empty(doc, "dpi");
    take(dpi, "depth_kib", c.dpi.depth_kib);
    take(dpi, "streams_per_worker", c.dpi.streams_per_worker);
    take(dpi, "memory_mb", c.dpi.memory_mb);
    if (auto it = dpi.find("patterns"); it != dpi.end()) {
        auto patterns = dpi_patterns_from(*it, "dpi.patterns");
        if (!patterns) return patterns.error();
        c.dpi.patterns = std::move(*patterns);
    }
    const json& migration = member_or_empty(doc, "migration");
    take(migration, "tls_creds", c.migration.tls_creds);
    take(migration, "tls_peer", c.migration.tls_peer);
    const json& log = member_or_empty(doc, "log");
    if (log.contains("level")) {
        LogLevel level = LogLevel::kInfo;
        take_enum(log, "level", kLogLevelNames, level);
        c.log.level = level;
    }
    const json& subsystems = member_or_empty(log, "subsystems");
    for (size_t i = 0; i < kLogSubsystemNames.size(); ++i) {
        LogLevel level = LogLevel::kInfo;
        if (!subsystems.contains(kLogSubsystemNames[i])) continue;
        take_enum(subsystems, std::string(kLogSubsystemNames[i]).c_str(), kLogLevelNames, level);
        c.log.subsystems.emplace_back(static_cast<LogSubsystem>(i), level);
    }
    return c;
}

Result<PortConfig> parse_port_config(const json& obj, const std::string& path) {
    if (Status s = check_object(obj, port_spec(), path); !s) return s.error();
    return port_from(obj, path);
}

Result<PortSecurityConfig> parse_port_security(const json& obj, const std::string& path) {
    if (Status s = check_object(obj, port_security_spec(), path); !s) return s.error();
    PortSecurityConfig c = port_security_from(obj);
    if (auto compiled = compile_port_security(c, path); !compiled) return compiled.error();
    return c;
}

Result<Config> load_config_file(const std::string& file) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(file.c_str(), "rb"), &std::fclose);
    if (!f) {
        return make_error(ErrorCode::kFailed,
                          file + ": cannot open: " + std::generic_category().message(errno));
    }
    std::string text;
    std::array<char, 65536> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) text.append(buf.data(), n);
    if (std::ferror(f.get())) {
        return make_error(ErrorCode::kFailed,
                          file + ": cannot read: " + std::generic_category().message(errno));
    }
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::parse_error& e) {
        // what() is "[json.exception.parse_error.101] parse error at line L, column C: ...".
        std::string_view detail = e.what();
        if (size_t cut = detail.find("] "); cut != std::string_view::npos)
            detail.remove_prefix(cut + 2);
        return make_error(
            ErrorCode::kParseError,
            file + ": invalid JSON at byte " + std::to_string(e.byte) + ": " + std::string(detail));
    }
    return parse_config(doc);
}

json config_schema() {
    return json_schema::document_schema(root_spec(), "ferryd configuration");
}

}  // namespace ferry
