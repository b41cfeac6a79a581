// ferryd's configuration: the JSON contract of `ferryd --config FILE` and of `port.add`, parsed
// and validated completely before anything starts. Errors name the offending key by its path.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/log.h"
#include "control/port_security_config.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/dpi/dpi_pattern.h"
#include "dataplane/result.h"

namespace ferry {

inline constexpr uint16_t kMaxPorts = 64;
inline constexpr uint16_t kMaxWorkers = 16;
inline constexpr uint16_t kMaxQueuesPerPort = 16;
// A port's MTU: from IPv4's minimum (RFC 791: 68 bytes, DPDK's RTE_ETHER_MIN_MTU) to the 9,000
// bytes of common jumbo frames (what devices usually take; DPDK's net_vhost and net_pcap take
// more, a NIC says its own limit at configure).
inline constexpr uint16_t kMinMtu = 68;
inline constexpr uint16_t kMaxMtu = 9000;

enum class PortType { kVhostUser, kDpdk };
enum class VhostMode { kServer, kClient };
enum class VlanMode { kTrunk, kAccess };

struct PortConfig {
    std::string name;  // [A-Za-z0-9_.-]{1,31}, unique
    PortType type = PortType::kVhostUser;
    std::string path;  // vhost-user socket path (vhost-user only)
    VhostMode mode = VhostMode::kServer;
    std::string devargs;  // DPDK device arguments (dpdk only), e.g. "net_pcap0,rx_pcap=a.pcap"
    uint16_t queues = 1;  // rx queues (1..kMaxQueuesPerPort)
    uint16_t mtu = 1500;  // largest L3 packet in and out (kMinMtu..kMaxMtu)
    std::vector<unsigned> rx_pin;  // optional: worker lcore per rx queue (size == queues)
    VlanMode vlan_mode = VlanMode::kTrunk;
    uint16_t tag = 0;  // access: the port's VLAN (1..4094); trunk: native VLAN (0 = none)
    std::vector<uint16_t> trunks;                // trunk: allowed VLANs (empty = all)
    std::optional<PortSecurityConfig> security;  // absent: the port may send from any address
};

struct IdleBackoff {
    bool enabled = true;
    uint32_t min_us = 1;        // first sleep after the idle threshold
    uint32_t max_us = 200;      // sleeps double up to this bound
    uint32_t idle_polls = 256;  // empty polls of every queue before the first sleep
};

struct MeterConfig {
    uint32_t id = 0;         // 0..255, referenced by a rule's meter:ID action
    uint64_t cir_kbps = 0;   // committed rate
    uint64_t cbs_bytes = 0;  // committed burst
    uint64_t pir_kbps = 0;   // peak rate, >= cir_kbps
    uint64_t pbs_bytes = 0;  // peak burst
};

struct CtZoneConfig {
    uint16_t zone = 0;
    uint32_t limit = 0;       // connections; 0 = no limit
    uint32_t port_limit = 0;  // connections one port may have open to commit here; 0 = none
    bool liberal = false;     // no TCP window checks
};

struct ConntrackConfig {
    uint32_t capacity = 262144;  // connections per worker
    CtTimeouts timeouts;         // seconds, by state
    std::vector<CtZoneConfig> zones;
};

/// The config keys of the TCP timeouts, indexed by TcpState (NONE has none: it uses SYN_SENT's).
inline constexpr std::array<std::string_view, static_cast<size_t>(TcpState::kCount)>
    kTcpTimeoutKeys = {"",
                       "tcp_syn_sent",
                       "tcp_syn_sent2",
                       "tcp_syn_recv",
                       "tcp_established",
                       "tcp_fin_wait",
                       "tcp_close_wait",
                       "tcp_last_ack",
                       "tcp_time_wait",
                       "tcp_close"};

inline constexpr size_t kMaxDpiPatterns = 100000;
inline constexpr size_t kMaxDpiRegexBytes = 8192;

struct DpiConfig {
    uint32_t depth_kib = 64;              // bytes inspected per direction of a connection
    uint32_t streams_per_worker = 16384;  // connections inspected at once per worker
    uint32_t memory_mb = 256;             // stream state per worker: databases needing more fail
    std::vector<DpiPattern> patterns;
};

/// The log levels ferryd starts with (log.level changes them at run time).
struct LogConfig {
    std::optional<LogLevel> level;                              // every subsystem
    std::vector<std::pair<LogSubsystem, LogLevel>> subsystems;  // then these, in order
};

/// Defaults of the migration channel for `tcp:` addresses (docs/migration.md), so that an
/// operator's credentials live in the configuration rather than in every migrate.* call.
struct MigrationConfig {
    std::string tls_creds;  // directory laid out as QEMU's tls-creds-x509; "" none
    std::string tls_peer;   // the name a source's client certificate must carry (receive)
};

struct Config {
    std::vector<std::string> eal;  // EAL arguments as given
    std::string control_socket = "/run/ferry/ferryd.sock";
    std::vector<unsigned> workers;  // worker lcore ids (at least one)
    std::vector<PortConfig> ports;
    IdleBackoff idle;
    uint32_t mac_table_size = 65536;    // entries
    uint32_t mac_aging_s = 300;         // seconds an unrefreshed MAC stays
    uint32_t mbufs = 16384;             // packet buffers in the pool
    std::vector<nlohmann::json> rules;  // checked by parse_rule once the ports exist
    std::vector<MeterConfig> meters;
    uint32_t flow_cache_entries = 65536;  // per worker
    uint32_t max_rules = 65536;           // rule slots (per-worker hit counters)
    ConntrackConfig conntrack;
    DpiConfig dpi;
    LogConfig log;
    MigrationConfig migration;
};

/// Parses and validates a whole configuration document. Context: control.
/// @return the configuration, or kInvalidParams with a message that starts with the JSON path of
///         the offending key (e.g. "ports[1].queues: must be an integer in 1..16").
Result<Config> parse_config(const nlohmann::json& doc);

/// Parses one port object (the shape of an element of "ports", also the params of `port.add`).
/// @param path prefix used in error messages, e.g. "ports[2]" or "params"
Result<PortConfig> parse_port_config(const nlohmann::json& obj, const std::string& path);
/// Validates a port's "security" object (the form of a config port's, and of port.security's
/// params): schema, then addresses. Context: control.
Result<PortSecurityConfig> parse_port_security(const nlohmann::json& obj, const std::string& path);

/// Parses an array of payload patterns (the config's dpi.patterns, and dpi.load's params):
/// each object checked as the schema says, ids unique, regexes without NUL bytes.
/// @param path prefix of error messages, e.g. "dpi.patterns" or "params.patterns"
Result<std::vector<DpiPattern>> parse_dpi_patterns(const nlohmann::json& arr,
                                                   const std::string& path);

/// Reads and parses a configuration file; I/O and JSON syntax errors name the file.
Result<Config> load_config_file(const std::string& file);

/// The JSON Schema (draft 2020-12) of the configuration, generated from the same rules the
/// parser applies; config/schema.json is this document.
nlohmann::json config_schema();

}  // namespace ferry
