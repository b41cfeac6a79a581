// The migrate.* rows of the control socket, all of them: each parses and bounds its params and
// calls the drivers in migrate/ (migrate/README.md) through this switch's MigrationHost.
// migrate.save and migrate.load read and change the workers' tables, so the dispatcher pauses
// the workers around them; the session's rows pause the workers themselves when they must.
#include "control/migrate_commands.h"

#include <chrono>

#include "control/migration_host.h"
#include "control/switch.h"
#include "migrate/file_transport.h"
#include "migrate/inband_migration.h"
#include "migrate/session.h"
#include "migrate/stages.h"
#include "migrate/stream_writer.h"

namespace ferry {

using json = nlohmann::json;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

constexpr uint64_t kMaxTimeoutS = 86400;    // timeout_s: 1 s .. a day
constexpr uint64_t kMaxSettleMs = 3600000;  // settle_ms: up to an hour

/// A whole number param in [lo, hi], else def when absent. Context: control.
/// @return it, or kInvalidParams naming the range
Result<uint64_t> bounded(const json& p, const char* key, uint64_t def, uint64_t lo, uint64_t hi) {
    if (!p.contains(key)) return def;
    const json& v = p[key];
    if (!v.is_number_unsigned() || v.get<uint64_t>() < lo || v.get<uint64_t>() > hi)
        return make_error(ErrorCode::kInvalidParams,
                          std::string("params.") + key + ": must be an integer in " +
                              std::to_string(lo) + ".." + std::to_string(hi));
    return v.get<uint64_t>();
}

/// The channel security that migrate.send (role client) or migrate.receive (role server)
/// params ask for at address: tcp: needs tls_creds (and, on a target, tls_peer: the
/// source's name; a source expects the address's host unless tls_peer says otherwise), which
/// the configuration's `migration` section gives when the params do not; tcp-insecure: takes
/// none; unix: takes TLS when the params give tls_creds. Context: control.
/// @return the security, or kInvalidParams saying what is missing or unreadable
Result<ChannelSecurity> channel_security(const json& params, const std::string& address,
                                         TlsRole role, const MigrationConfig& defaults) {
    auto a = transport_parse(address);
    if (!a) return a.error();
    json p = params;
    if (a->scheme == TransportScheme::kTcp) {
        if (!p.contains("tls_creds") && !defaults.tls_creds.empty())
            p["tls_creds"] = defaults.tls_creds;
        if (role == TlsRole::kServer && !p.contains("tls_peer") && !defaults.tls_peer.empty())
            p["tls_peer"] = defaults.tls_peer;
    }
    const bool has_creds = p.contains("tls_creds");
    const bool has_peer = p.contains("tls_peer");
    if (a->scheme == TransportScheme::kTcpInsecure) {
        if (has_creds || has_peer)
            return make_error(ErrorCode::kInvalidParams,
                              "tcp-insecure: is a clear, unauthenticated channel: drop "
                              "tls_creds / tls_peer, or use tcp: for TLS");
        return ChannelSecurity{};
    }
    if (!has_creds) {
        if (a->scheme == TransportScheme::kTcp)
            return make_error(ErrorCode::kInvalidParams,
                              "tcp: is TLS with certificates on both ends: give tls_creds=DIR "
                              "(ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, "
                              "client-key.pem) or set migration.tls_creds in the "
                              "configuration, or use tcp-insecure:HOST:PORT for a clear, "
                              "unauthenticated channel");
        if (has_peer) return make_error(ErrorCode::kInvalidParams, "tls_peer needs tls_creds");
        return ChannelSecurity{};
    }
    ChannelSecurity sec;
    if (has_peer) {
        sec.peer = p["tls_peer"].get<std::string>();
    } else if (role == TlsRole::kClient && a->scheme == TransportScheme::kTcp) {
        sec.peer = a->host;  // the target's certificate names the host it is reached at
    }
    if (sec.peer.empty())
        return make_error(ErrorCode::kInvalidParams,
                          role == TlsRole::kServer
                              ? "TLS needs tls_peer=NAME: the name the source's client "
                                "certificate carries (CN or DNS name)"
                              : "TLS over a unix socket needs tls_peer=NAME: the name the "
                                "target's certificate carries");
    auto creds = tls_load_credentials(p["tls_creds"].get<std::string>(), role);
    if (!creds) return creds.error();
    sec.tls = std::move(*creds);
    return sec;
}

/// What the session's rows share: the switch as the drivers see it, and the one session.
/// The session goes first (its thread may still post to the host).
struct MigrateRows {
    explicit MigrateRows(Switch& sw) : host(sw), session(host) {}
    SwitchMigrationHost host;
    MigrationSession session;
};

}  // namespace

void add_migrate_commands(std::vector<CommandSpec>& t, Switch& sw) {
    t.push_back({"migrate.save",
                 "checkpoint one port's state or the whole switch's into a file (pauses the "
                 "workers while it is captured)",
                 false,
                 {{"file", ParamType::kString, true, "where to write the stream"},
                  {"port", ParamType::kString, false, "only this port's state"}},
                 [&sw](const json& p) -> Result<json> {
                     const auto t0 = std::chrono::steady_clock::now();
                     std::optional<std::string> port;
                     if (p.contains("port")) port = p["port"].get<std::string>();
                     SwitchMigrationHost host(sw);
                     auto state = MigrationControl(host).capture(port);
                     if (!state) return state.error();
                     const std::vector<uint8_t> bytes = write_stream(*state);
                     const std::string file = p["file"].get<std::string>();
                     if (Status s = write_file_atomic(file, bytes); !s) return s.error();
                     return json{{"file", file},
                                 {"bytes", bytes.size()},
                                 {"ports", state->ports.size()},
                                 {"connections", state->connections.size()},
                                 {"dpi_streams", state->dpi.size()},
                                 {"macs", state->macs.size()},
                                 {"ms", ms_since(t0)}};
                 }});
    t.push_back({"migrate.load",
                 "install the state of a stream file (all or nothing; the stream's ports must "
                 "exist here by name, its connections must not clash with tracked ones)",
                 false,
                 {{"file", ParamType::kString, true, "a stream written by migrate.save"}},
                 [&sw](const json& p) -> Result<json> {
                     SwitchMigrationHost host(sw);
                     return restore_from_file(host, p["file"].get<std::string>());
                 }});
    auto m = std::make_shared<MigrateRows>(sw);
    t.push_back(
        {"migrate.receive",
         "wait for one incoming migration stream and install it (all or nothing)",
         true,
         {{"listen", ParamType::kString, true,
           "unix:/path, tcp:HOST:PORT (TLS) or tcp-insecure:HOST:PORT (port 0: any)"},
          {"timeout_s", ParamType::kUnsigned, false, "give up after (1..86400, default 60)"},
          {"tls_creds", ParamType::kString, false,
           "directory with ca-cert.pem, server-cert.pem, server-key.pem (needed by tcp:; "
           "default: the configuration's migration.tls_creds)"},
          {"tls_peer", ParamType::kString, false,
           "the name the source's client certificate must carry (default: migration.tls_peer)"}},
         [m](const json& p) -> Result<json> {
             auto timeout = bounded(p, "timeout_s", 60, 1, kMaxTimeoutS);
             if (!timeout) return timeout.error();
             const std::string listen = p["listen"].get<std::string>();
             auto security =
                 channel_security(p, listen, TlsRole::kServer, m->host.sw().config().migration);
             if (!security) return security.error();
             return m->session.receive(listen, static_cast<double>(*timeout), std::move(*security));
         }});
    t.push_back(
        {"migrate.send",
         "send one port's state (or the whole switch's) to a target; the workers pause "
         "until the target commits, and the moved state is then retired here",
         // Safe while running: it pauses the workers itself, at the moment it chooses (after
         // a pre-copy, only for what changed since), and keeps them paused past this call,
         // until the target's answer (migrate/phase.h: sending .. resolving).
         true,
         {{"to", ParamType::kString, true,
           "the target's unix:/path, tcp:HOST:PORT (TLS) or tcp-insecure:HOST:PORT"},
          {"port", ParamType::kString, false, "only this port's state"},
          {"timeout_s", ParamType::kUnsigned, false, "give up after (1..86400, default 10)"},
          {"precopy", ParamType::kBoolean, false,
           "send the connections while traffic runs first, then only what changed "
           "with the workers paused"},
          {"settle_ms", ParamType::kUnsigned, false,
           "with precopy: wait this long after the target took the pre-copy before "
           "pausing (0..3600000, default 0)"},
          {"hold", ParamType::kBoolean, false,
           "with precopy: after the target took the pre-copy, wait in phase ready for "
           "migrate.continue (or migrate.cancel) before pausing"},
          {"tls_creds", ParamType::kString, false,
           "directory with ca-cert.pem, client-cert.pem, client-key.pem (needed by tcp:; "
           "default: the configuration's migration.tls_creds)"},
          {"tls_peer", ParamType::kString, false,
           "the name the target's certificate must carry (default: the address's host)"}},
         [m](const json& p) -> Result<json> {
             auto timeout = bounded(p, "timeout_s", 10, 1, kMaxTimeoutS);
             if (!timeout) return timeout.error();
             auto settle = bounded(p, "settle_ms", 0, 0, kMaxSettleMs);
             if (!settle) return settle.error();
             std::optional<std::string> port;
             if (p.contains("port")) port = p["port"].get<std::string>();
             const std::string to = p["to"].get<std::string>();
             auto security =
                 channel_security(p, to, TlsRole::kClient, m->host.sw().config().migration);
             if (!security) return security.error();
             return m->session.send(to, port, static_cast<double>(*timeout),
                                    p.value("precopy", false),
                                    static_cast<double>(*settle) / 1000.0, p.value("hold", false),
                                    std::move(*security));
         }});
    t.push_back({"migrate.continue",
                 "a source held in phase ready: pause the workers, send what changed since the "
                 "pre-copy and wait for the commit",
                 true,
                 {},
                 [m](const json&) -> Result<json> { return m->session.go_on(false); }});
    t.push_back({"migrate.cancel",
                 "a source held in phase ready: give the migration up (the target drops what it "
                 "placed ahead; nothing changes here); a target still listening: stop",
                 true,
                 {},
                 [m](const json&) -> Result<json> { return m->session.go_on(true); }});
    t.push_back({"migrate.status",
                 "the current or last migration: role, phase, progress",
                 true,
                 {},
                 [m](const json&) -> Result<json> {
                     json s = m->session.status();
                     s["in_band"] = inband_status();  // QEMU's own migrations (device state)
                     return s;
                 }});
}

}  // namespace ferry
