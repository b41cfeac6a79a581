#include "migrate/inband_migration.h"

#include <rte_log.h>
#include <rte_vhost.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "dataplane/mac_table.h"
#include "migrate/stages.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/vhost_device_state.h"

namespace ferry {
namespace {

using namespace std::chrono_literals;

/// The largest stream a LOAD reads (one port's state: 100,000 connections are ~20 MiB).
constexpr size_t kMaxInbandStream = size_t{256} << 20;
/// How long a transfer hook waits for the control thread to take its task.
constexpr auto kControlWait = 10s;

/// DPDK 22.11's struct vhu_msg_context (lib/vhost/vhost_user.h), what pre_msg_handle receives:
/// the packed VhostUserMsg (request, flags, size, a payload union of 632 bytes, its largest
/// member being the crypto session parameters), then the received fds. DPDK keeps this layout
/// fixed because external handlers rely on it.
struct __attribute__((packed)) VhuMsgContext {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
    union {
        uint64_t u64;
        uint8_t bytes[632];
    } payload;
    int fds[8];
    int fd_num;
};
static_assert(sizeof(VhuMsgContext) == 12 + 632 + 8 * 4 + 4);

/// A port that takes part: its transfer per connection (vid).
struct InbandPort {
    std::string name;
    std::shared_ptr<MigrationHost> host;  // the switch the port is on
    std::map<int, std::shared_ptr<DeviceStateTransfer>> by_vid;
    /// The state the last SAVE captured, and whether QEMU confirmed it (CHECK succeeded): the
    /// source keeps those connections until it knows the outcome. The device running again
    /// means the migration failed (keep them); the connection closing without that means the
    /// guest runs elsewhere (retire them).
    std::shared_ptr<MigrationState> captured;
    bool saved = false;
};

/// DPDK's pre_msg_handle gets a vid and no context pointer, so the ports live in one registry
/// keyed by socket path. Guarded by mutex: the control thread adds and removes ports, the
/// vhost-user message thread attaches and looks up.
struct Registry {
    std::mutex mutex;
    std::map<std::string, InbandPort> ports;
    std::deque<std::pair<std::string, DeviceStateReport>> history;  // port, report; newest last
};

/// How many ended transfers migrate.status shows.
constexpr size_t kHistory = 16;

double ms_between(std::chrono::steady_clock::time_point a,
                  std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

Registry& registry() {
    static Registry r;
    return r;
}

/// Runs fn on the control thread and waits for it. @return its value, or nullopt when the
/// control thread did not take it within kControlWait (then fn never runs).
template <class T>
std::optional<T> on_control_thread(MigrationHost& host, std::function<T()> fn) {
    struct Shared {
        std::mutex m;
        bool started = false;
        bool abandoned = false;
        std::promise<T> result;
    };
    auto sh = std::make_shared<Shared>();
    std::future<T> fut = sh->result.get_future();
    host.post([sh, fn = std::move(fn)] {
        {
            std::lock_guard lock(sh->m);
            if (sh->abandoned) return;
            sh->started = true;
        }
        try {
            sh->result.set_value(fn());
        } catch (...) {
            sh->result.set_exception(std::current_exception());
        }
    });
    if (fut.wait_for(kControlWait) != std::future_status::ready) {
        std::lock_guard lock(sh->m);
        if (!sh->started) {
            sh->abandoned = true;
            return std::nullopt;
        }
    }
    return fut.get();  // started: it finishes (bounded by the pause and the install)
}

/// Retires what a confirmed SAVE sent, quietly (no packet): the guest left with it.
/// Context: control.
void retire_saved(MigrationHost& host, const std::string& port, const MigrationState& state) {
    ScopedPause paused(host.workers());
    if (!paused) {
        host.log(MigrateLog::kWarn, "port %s: cannot retire the moved connections now: %s",
                 port.c_str(), paused.status().error().message.c_str());
        return;  // they expire like any idle connection
    }
    const size_t n = MigrationControl(host).retire(state, 0, state.connections.size());
    paused.release();
    host.log(MigrateLog::kInfo, "port %s: the guest moved; %zu of its connections retired here",
             port.c_str(), n);
}

/// The port's MACs that its link down (QEMU stopping the device before SAVE) took out of the
/// MAC table, added to a capture that lacks them. Context: control.
void add_departed_macs(MigrationHost& host, const std::string& port, MigrationState* s) {
    const std::optional<uint16_t> slot = host.port_slot(port);
    if (!slot) return;
    uint16_t stream_port = kNoStreamPort;
    for (size_t i = 0; i < s->ports.size(); ++i)
        if (s->ports[i].name == port) stream_port = static_cast<uint16_t>(i);
    if (stream_port == kNoStreamPort) return;
    const uint32_t now_s = host.clock_s();
    for (const MigrationHost::DepartedMac& d : host.departed_macs(*slot)) {
        MigratedMac m;
        const uint64_t addr = mac_key_addr(d.key);
        for (int i = 0; i < 6; ++i) m.mac[i] = static_cast<uint8_t>(addr >> (40 - 8 * i));
        m.vlan = mac_key_vlan(d.key);
        m.port = stream_port;
        m.age_ms = (now_s - d.stamp_s) * 1000;
        const bool known = std::any_of(s->macs.begin(), s->macs.end(), [&](const MigratedMac& x) {
            return x.mac == m.mac && x.vlan == m.vlan;
        });
        if (!known) s->macs.push_back(m);
    }
}

DeviceStateHooks make_hooks(const std::shared_ptr<MigrationHost>& host, const std::string& port,
                            const std::string& path) {
    DeviceStateHooks h;
    h.save = [host, port, path] {
        const auto t0 = std::chrono::steady_clock::now();
        auto saved = on_control_thread<DeviceStateHooks::Saved>(*host, [host, port, path, t0] {
            const auto t1 = std::chrono::steady_clock::now();
            DeviceStateHooks::Saved out;
            ScopedPause paused(host->workers());
            if (!paused) {
                out.error = paused.status().error().message;
                return out;
            }
            auto state = MigrationControl(*host).capture(port);
            paused.release();
            if (!state) {
                out.error = state.error().message;
                return out;
            }
            add_departed_macs(*host, port, &*state);
            const auto t2 = std::chrono::steady_clock::now();
            out.connections = state->connections.size();
            out.bytes = write_stream(*state);
            const auto t3 = std::chrono::steady_clock::now();
            out.steps_ms = {{"queue", ms_between(t0, t1)},
                            {"capture", ms_between(t1, t2)},
                            {"encode", ms_between(t2, t3)}};
            host->log(MigrateLog::kInfo,
                      "port %s: state for QEMU's migration: control thread took it after "
                      "%.1f ms, captured in %.1f ms, encoded in %.1f ms",
                      port.c_str(), ms_between(t0, t1), ms_between(t1, t2), ms_between(t2, t3));
            std::lock_guard lock(registry().mutex);
            auto it = registry().ports.find(path);
            if (it != registry().ports.end()) {
                it->second.captured = std::make_shared<MigrationState>(std::move(*state));
                it->second.saved = false;  // until QEMU confirms it
            }
            return out;
        });
        if (!saved) return DeviceStateHooks::Saved{{}, 0, "the control thread is busy", {}};
        return *saved;
    };
    h.load = [host, port](std::vector<uint8_t> bytes) {
        DeviceStateHooks::Loaded out;
        const auto t0 = std::chrono::steady_clock::now();
        auto state = read_stream(bytes.data(), bytes.size());
        out.steps_ms["decode"] = ms_between(t0, std::chrono::steady_clock::now());
        if (!state) {
            out.error = state.error().message;
            return out;
        }
        if (state->scope != StreamScope::kPort || state->ports.empty() ||
            state->ports[0].name != port) {
            out.error = "the stream is not port " + port + "'s state";
            return out;
        }
        // The front-end of one port writes that port's state only: every connection must
        // have this port (stream port 0) on one side and every MAC must be on it, or a
        // hostile QEMU could open the firewall between other ports.
        for (const MigratedConnection& c : state->connections)
            if (c.port[0] != 0 && c.port[1] != 0) {
                out.error = "the stream has a connection that is not port " + port + "'s";
                return out;
            }
        for (const MigratedMac& m : state->macs)
            if (m.port != 0) {
                out.error = "the stream has a MAC that is not on port " + port;
                return out;
            }
        out.connections = state->connections.size();
        auto shared = std::make_shared<MigrationState>(std::move(*state));
        out.install = [host, shared]() -> std::string {
            auto r = on_control_thread<std::string>(*host, [host, shared]() -> std::string {
                ScopedPause paused(host->workers());
                if (!paused) return paused.status().error().message;
                auto report = MigrationControl(*host).install(*shared);
                paused.release();
                if (!report) return report.error().message;
                host->log(MigrateLog::kInfo,
                          "port %s: installed %zu connections, %zu MACs and %zu addresses "
                          "from QEMU's migration (%zu DPI streams continued, %zu restarted)",
                          shared->ports[0].name.c_str(), report->connections, report->macs,
                          report->addresses, report->dpi_expanded, report->dpi_restarted);
                return std::string();
            });
            return r ? *r : "the control thread is busy";
        };
        return out;
    };
    h.finished = [host, port, path](const DeviceStateReport& r) {
        {
            std::lock_guard lock(registry().mutex);
            registry().history.emplace_back(port, r);
            if (registry().history.size() > kHistory) registry().history.pop_front();
        }
        if (r.direction == DeviceStateDirection::kSave) {
            std::lock_guard lock(registry().mutex);
            auto it = registry().ports.find(path);
            if (it != registry().ports.end()) {
                it->second.saved = r.ok && it->second.captured != nullptr;
                if (!r.ok) it->second.captured = nullptr;
            }
        }
        const char* dir = r.direction == DeviceStateDirection::kSave ? "sent" : "received";
        if (r.ok)
            host->log(MigrateLog::kInfo,
                      "port %s: in-band migration %s %zu connections (%llu bytes) in %.1f ms",
                      port.c_str(), dir, r.connections, static_cast<unsigned long long>(r.bytes),
                      r.ms);
        else
            host->log(MigrateLog::kWarn, "port %s: in-band migration (%s) failed: %s", port.c_str(),
                      r.direction == DeviceStateDirection::kSave ? "save" : "load",
                      r.reason.c_str());
    };
    return h;
}

std::string ifname_of(int vid) {
    char buf[4096];
    if (rte_vhost_get_ifname(vid, buf, sizeof(buf)) != 0) return "";
    buf[sizeof(buf) - 1] = '\0';
    return buf;
}

/// DPDK's hook for every message of an attached connection. Context: vhost-user message
/// thread. Only 42 and 43 are ours; everything else goes on to DPDK's own handlers.
rte_vhost_msg_result pre_msg_handle(int vid, void* msg) {
    auto* ctx = static_cast<VhuMsgContext*>(msg);
    if (ctx->request != kVhostUserSetDeviceStateFd && ctx->request != kVhostUserCheckDeviceState)
        return RTE_VHOST_MSG_RESULT_NOT_HANDLED;
    std::shared_ptr<DeviceStateTransfer> t;
    const std::string path = ifname_of(vid);
    {
        std::lock_guard lock(registry().mutex);
        auto it = registry().ports.find(path);
        if (it != registry().ports.end()) {
            auto v = it->second.by_vid.find(vid);
            if (v != it->second.by_vid.end()) t = v->second;
        }
    }
    const size_t n_fds =
        ctx->fd_num >= 0 && ctx->fd_num <= 8 ? static_cast<size_t>(ctx->fd_num) : 0;
    const size_t size = std::min<size_t>(ctx->size, sizeof(ctx->payload));
    int fds[8];  // the packed struct's ints may be unaligned: copied out
    memcpy(fds, reinterpret_cast<const char*>(ctx) + offsetof(VhuMsgContext, fds), sizeof(fds));
    DeviceStateReply reply;
    if (t) {
        reply = t->handle(ctx->request, ctx->payload.bytes, size, fds, n_fds);
    } else {
        for (size_t i = 0; i < n_fds; ++i) close(fds[i]);
        reply = {true, kDeviceStateError | kDeviceStateNoFd};
    }
    ctx->fd_num = 0;  // ours now (kept or closed); none goes back with the reply
    ctx->size = sizeof(uint64_t);
    ctx->payload.u64 = reply.value;
    return RTE_VHOST_MSG_RESULT_REPLY;
}

constexpr rte_vhost_user_extern_ops kExternOps = {pre_msg_handle, nullptr};

}  // namespace

Status inband_offer(const std::string& path) {
    uint64_t features = 0;
    if (rte_vhost_driver_get_protocol_features(path.c_str(), &features) != 0 ||
        rte_vhost_driver_set_protocol_features(
            path.c_str(), features | (uint64_t{1} << kVhostProtocolFeatureDeviceState)) != 0)
        return make_error(ErrorCode::kFailed, path + ": cannot offer vhost-user device state");
    return Ok{};
}

void inband_add_port(std::shared_ptr<MigrationHost> host, const std::string& port,
                     const std::string& path) {
    std::lock_guard lock(registry().mutex);
    InbandPort& p = registry().ports[path];
    p.name = port;
    p.host = std::move(host);
    p.by_vid.clear();
}

void inband_remove_port(const std::string& path) {
    std::map<int, std::shared_ptr<DeviceStateTransfer>> gone;
    {
        std::lock_guard lock(registry().mutex);
        auto it = registry().ports.find(path);
        if (it == registry().ports.end()) return;
        gone.swap(it->second.by_vid);
        registry().ports.erase(it);
    }
    for (auto& [vid, t] : gone) t->abort();
    // Destroyed here or when a handler still holding one returns: both join the thread.
}

nlohmann::json inband_status() {
    auto dir = [](DeviceStateDirection d) {
        return d == DeviceStateDirection::kSave ? "save" : "load";
    };
    nlohmann::json out = nlohmann::json::array();
    std::lock_guard lock(registry().mutex);
    for (const auto& [port, r] : registry().history) {
        nlohmann::json j = {
            {"port", port},     {"direction", dir(r.direction)}, {"result", r.ok ? "ok" : "failed"},
            {"bytes", r.bytes}, {"connections", r.connections},  {"ms", r.ms}};
        if (!r.ok) j["error"] = r.reason;
        if (!r.steps_ms.empty()) j["steps_ms"] = r.steps_ms;
        out.push_back(std::move(j));
    }
    for (const auto& [path, p] : registry().ports)
        for (const auto& [vid, t] : p.by_vid)
            if (t->busy()) out.push_back({{"port", p.name}, {"result", "running"}});
    return out;
}

void inband_device_resumed(const std::string& path) {
    std::lock_guard lock(registry().mutex);
    auto it = registry().ports.find(path);
    if (it == registry().ports.end() || !it->second.saved) return;
    it->second.saved = false;  // the migration failed or was cancelled: the guest runs here
    it->second.captured = nullptr;
    it->second.host->log(MigrateLog::kInfo,
                         "port %s: device running again after its state was saved; its connections "
                         "stay here",
                         it->second.name.c_str());
}

std::vector<int> vhost_connections(const std::string& path) {
    // rte_vhost_get_ifname on a free vid logs an error, so the vhost library's log is
    // quietened for the scan. On the vhost-user message thread, the only one that frees
    // devices, no device goes away under the scan; from the control thread one may (its memory
    // stays mapped: rte_malloc), which docs/migration.md names.
    const int logtype = rte_log_register("lib.vhost.config");
    const int level = logtype >= 0 ? rte_log_get_level(logtype) : -1;
    if (level >= 0) rte_log_set_level(logtype, RTE_LOG_EMERG);
    std::vector<int> vids;
    for (int vid = 0; vid < RTE_MAX_VHOST_DEVICE; ++vid)
        if (ifname_of(vid) == path) vids.push_back(vid);
    if (level >= 0) rte_log_set_level(logtype, static_cast<uint32_t>(level));
    return vids;
}

void inband_attach(const std::string& path) {
    {
        std::lock_guard lock(registry().mutex);
        if (registry().ports.find(path) == registry().ports.end()) return;
    }
    const std::vector<int> vids = vhost_connections(path);

    std::map<int, std::shared_ptr<DeviceStateTransfer>> live;  // after the swap: the old ones
    std::lock_guard lock(registry().mutex);
    auto it = registry().ports.find(path);
    if (it == registry().ports.end()) return;
    InbandPort& p = it->second;
    for (int vid : vids) {
        auto known = p.by_vid.find(vid);
        if (known != p.by_vid.end()) {
            live[vid] = known->second;
            continue;
        }
        if (rte_vhost_extern_callback_register(vid, &kExternOps, nullptr) != 0) continue;
        live[vid] = std::make_shared<DeviceStateTransfer>(p.name, make_hooks(p.host, p.name, path),
                                                          kMaxInbandStream);
        p.host->log(MigrateLog::kDebug, "port %s: device-state handler on vhost connection %d",
                    p.name.c_str(), vid);
    }
    bool closed = false;
    for (auto& [vid, t] : p.by_vid) {
        if (live.count(vid)) continue;
        t->abort();  // that connection is gone
        closed = true;
    }
    p.by_vid.swap(live);
    if (closed && p.saved) {
        // The front-end that took the port's state went away without starting the device
        // again here: its migration completed, the guest runs elsewhere.
        std::shared_ptr<MigrationState> state = std::move(p.captured);
        p.saved = false;
        std::shared_ptr<MigrationHost> host = p.host;
        std::string name = p.name;
        host->post([host, name, state] { retire_saved(*host, name, *state); });
    }
    // live now holds the previous map; the gone transfers are joined when it is destroyed,
    // after the lock is released (declared before the lock_guard)
}

}  // namespace ferry
