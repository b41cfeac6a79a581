#include "migrate/stages.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <random>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_database.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/dpi/dpi_version.h"
#include "dataplane/mac_table.h"
#include "dataplane/port_table.h"
#include "ferry_version.h"
#include "migrate/ct_convert.h"
#include "migrate/large_buffer.h"

namespace ferry {
namespace {

std::array<uint8_t, 6> parse_mac(const std::string& text) {
    std::array<uint8_t, 6> m{};
    unsigned v[6];
    if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) ==
        6)
        for (int i = 0; i < 6; ++i) m[i] = static_cast<uint8_t>(v[i]);
    return m;
}

uint64_t random_id() {
    std::random_device rd;
    return (uint64_t{rd()} << 32) | rd();
}

/// Whether a connection belongs to a one-port migration of `slot` (any without a slot).
bool in_scope(const CtEntry& e, const std::optional<uint16_t>& slot) {
    if (e.flags & kCtfRedirect) return false;  // the owner's placement, not a connection
    return !slot || e.port[0] == *slot || e.port[1] == *slot;
}

/// Appends connection (w, i) and its DPI state to s.
void add_connection(MigrationHost& host, uint16_t w, uint32_t i, uint64_t now_ms,
                    const std::vector<uint16_t>& stream_port, MigrationState* s) {
    const CtEntry& e = host.ct_shard(w).table().entry(i);
    MigratedDpi d;
    if (host.dpi_worker(w).export_state(host.dpi_current(), i, &d.state)) {
        d.connection = static_cast<uint32_t>(s->connections.size());
        s->dpi.push_back(std::move(d));
    }
    s->connections.push_back(connection_to_stream(e, now_ms, stream_port));
}

Precopy::Seen seen_of(uint16_t w, uint32_t i, const CtEntry& e) {
    return Precopy::Seen{w,          i,
                         e.tuple[0], e.packets[0] + e.packets[1],
                         e.flags,    static_cast<uint8_t>(e.tcp.state),
                         e.mark};
}

bool unchanged(const Precopy::Seen& a, const CtEntry& e) {
    return a.orig == e.tuple[0] && a.packets == e.packets[0] + e.packets[1] && a.flags == e.flags &&
           a.tcp_state == static_cast<uint8_t>(e.tcp.state) && a.mark == e.mark;
}

/// Room per owner shard and zone limits for conns, checked before any change (a clash with a
/// tracked connection is found as each is placed, and undoes what was placed). Context: control.
Status check_room(MigrationHost& host, const std::vector<MigratedConnection>& conns) {
    const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
    std::vector<uint32_t> per_shard(n_workers, 0);
    std::vector<uint32_t> per_zone(kCtZones, 0);
    for (const MigratedConnection& c : conns) {
        ++per_shard[ct_owner(c.orig, n_workers)];
        ++per_zone[c.orig.zone];
    }
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = host.ct_shard(w).table();
        if (per_shard[w] > t.capacity() - t.size())
            return make_error(ErrorCode::kConflict,
                              "worker " + std::to_string(w) + " has room for " +
                                  std::to_string(t.capacity() - t.size()) + " connections, the " +
                                  "stream brings " + std::to_string(per_shard[w]));
    }
    for (uint32_t zone = 0; zone < kCtZones; ++zone) {
        const uint32_t n = per_zone[zone];
        if (n == 0) continue;
        const CtZone& z = host.ct_zones().zones[zone];
        const uint32_t limit = z.limit.load(std::memory_order_relaxed);
        const uint32_t count = z.count.load(std::memory_order_relaxed);
        if (limit != 0 && count + n > limit)
            return make_error(ErrorCode::kConflict, "zone " + std::to_string(zone) +
                                                        " would have " + std::to_string(count + n) +
                                                        " connections, its limit is " +
                                                        std::to_string(limit));
    }

    return Ok{};
}

/// Delivers the redirect notices shards queued (all workers paused). Context: control.
void deliver_notices(MigrationHost& host) {
    const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
    const uint64_t now = host.ct_now_ms();
    for (uint16_t w = 0; w < n_workers; ++w) {
        ConntrackShard& sh = host.ct_shard(w);
        for (unsigned k = 0; k < sh.notice_count(); ++k) {
            const CtNotice& n = sh.notices()[k];
            if (n.to < n_workers) host.ct_shard(n.to).apply_notice(n, now);
        }
        sh.clear_notices();
    }
}

/// Each tuple's ct_tuple_hash (the same in every worker's table).
struct TupleHashes {
    uint32_t orig;
    uint32_t reply;
};

TupleHashes hashes_of(const MigratedConnection& c) {
    return {ct_tuple_hash(c.orig), ct_tuple_hash(c.reply)};
}

/// Places one connection in its owner's shard; h are its tuples' hashes. @return (worker,
/// index) or the clash / no room
Result<std::pair<uint16_t, uint32_t>> place(MigrationHost& host, const MigratedConnection& c,
                                            const TupleHashes& h,
                                            const std::vector<uint16_t>& local_port,
                                            uint64_t now_ms, bool dormant) {
    const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
    // Each tuple can only be tracked by its owner (a redirect there names the owner).
    auto clash = [&](const CtTuple& t) -> std::optional<Error> {
        const uint16_t w = ct_owner(t, n_workers);
        if (!host.ct_shard(w).table().lookup(t).found()) return std::nullopt;
        return Error{ErrorCode::kConflict, "connection " + host.ct_tuple_text(c.orig) +
                                               " clashes with one tracked here (" +
                                               host.ct_tuple_text(t) + ", worker " +
                                               std::to_string(w) + ")"};
    };
    const uint16_t w = ct_owner(c.orig, n_workers);
    // The owner's insert refuses a tuple its table holds; only a reply owned by another worker
    // (a NAT binding) is looked up first, and the tables are asked why only when it refused.
    if (ct_owner(c.reply, n_workers) != w)
        if (auto e = clash(c.reply)) return *e;
    const uint32_t idx = host.ct_shard(w).install(connection_from_stream(c, local_port), h.orig,
                                                  h.reply, now_ms, c.remaining_ms, dormant);
    if (idx == kCtNone) {
        for (const CtTuple* t : {&c.orig, &c.reply})
            if (auto e = clash(*t)) return *e;
        return make_error(ErrorCode::kFailed, "no room for connection " +
                                                  host.ct_tuple_text(c.orig) + " on worker " +
                                                  std::to_string(w));
    }
    if (host.ct_shard(w).notice_count() != 0) deliver_notices(host);
    return std::make_pair(w, idx);
}

constexpr std::pair<uint16_t, uint32_t> kNotPlaced{0, kCtNone};
/// How many connections ahead an install starts loading index buckets.
constexpr size_t kInstallPrefetch = 8;

/// Local slots of the stream's ports, by name. Every port of a whole-switch stream must exist
/// here; of a one-port stream the moved one (the first), the others map to none when absent.
/// @return kNotFound naming a missing one
Result<std::vector<uint16_t>> map_ports(MigrationHost& host, const MigrationState& s) {
    std::vector<uint16_t> local_port;
    for (size_t i = 0; i < s.ports.size(); ++i) {
        std::optional<uint16_t> slot = host.port_slot(s.ports[i].name);
        if (!slot && (s.scope == StreamScope::kSwitch || i == 0))
            return make_error(ErrorCode::kNotFound,
                              "the stream's port " + s.ports[i].name + " does not exist here");
        local_port.push_back(slot.value_or(kCtNoPort));
    }
    return local_port;
}

}  // namespace

StreamLimits MigrationControl::stream_limits() const {
    uint64_t room = 0;
    for (uint16_t w = 0; w < host_.ct_shard_count(); ++w) {
        const CtTable& t = host_.ct_shard(w).table();
        room += t.capacity() - t.size();
    }
    return stream_limits_for_room(static_cast<uint32_t>(std::min<uint64_t>(room, UINT32_MAX)));
}

// The stages' capture and install columns, in table order (migrate/stages.h).

Status capture_ports(CaptureWalk& walk) {
    MigrationState& s = walk.out;
    if (walk.since != nullptr) {  // a delta: the pre-copy sent the ports
        s.scope = walk.since->state.scope;
        s.stream_id = walk.since->state.stream_id;
        walk.slot = walk.since->slot;
        walk.stream_port = walk.since->stream_port;
        return Ok{};
    }
    const std::optional<std::string>& port = walk.port;
    s.scope = port ? StreamScope::kPort : StreamScope::kSwitch;
    s.stream_id = random_id();
    s.ferryd_version = FERRY_VERSION;
    s.hyperscan_version = dpi_library_version();
    std::vector<std::pair<std::string, uint16_t>> ports = walk.host.port_slots();
    if (port) {
        // The moved port first; the others follow so that its connections keep naming the
        // port their other direction uses (the target maps those when it has them).
        walk.slot = walk.host.port_slot(*port);
        if (!walk.slot) return make_error(ErrorCode::kNotFound, "no port named " + *port);
        std::erase_if(ports, [&](const auto& p) { return p.first == *port; });
        ports.insert(ports.begin(), {*port, *walk.slot});
    }
    walk.stream_port.assign(kPortSlots, kNoStreamPort);
    for (size_t i = 0; i < ports.size(); ++i) {
        walk.stream_port[ports[i].second] = static_cast<uint16_t>(i);
        MigratedPort p;
        p.name = ports[i].first;
        p.mac = parse_mac(walk.host.port_mac_text(p.name));
        // The addresses of the stream's ports (of the moved port only, for a one-port stream).
        if (!port || i == 0) p.addresses = walk.host.port_addresses(p.name);
        if (p.addresses.size() > kMaxPortAddresses) p.addresses.resize(kMaxPortAddresses);
        s.ports.push_back(std::move(p));
    }
    return Ok{};
}

Status install_ports(InstallWalk& walk) {
    if (walk.staged != nullptr) {  // mapped when the pre-copy was placed ahead
        walk.local_port = walk.staged->local_port;
        return Ok{};
    }
    auto local_port = map_ports(walk.host, walk.s);
    if (!local_port) return local_port.error();
    walk.local_port = std::move(*local_port);
    return Ok{};
}

Status capture_macs(CaptureWalk& walk) {
    // The learned MACs of the stream's ports (of the moved port only, for a one-port stream).
    const uint32_t now_s = walk.host.clock_s();
    walk.host.mac_table().for_each([&](uint64_t key, MacEntry e) {
        if (e.port >= kPortSlots || walk.stream_port[e.port] == kNoStreamPort) return;
        if (walk.slot && e.port != *walk.slot) return;
        MigratedMac m;
        const uint64_t addr = mac_key_addr(key);
        for (int i = 0; i < 6; ++i) m.mac[i] = static_cast<uint8_t>(addr >> (40 - 8 * i));
        m.vlan = mac_key_vlan(key);
        m.port = walk.stream_port[e.port];
        m.age_ms = (now_s - e.stamp_s) * 1000;
        walk.out.macs.push_back(m);
    });
    return Ok{};
}

Status install_macs(InstallWalk& walk) {
    const uint32_t now_s = walk.host.clock_s();
    for (const MigratedMac& m : walk.s.macs) {
        if (m.port >= walk.local_port.size() || walk.local_port[m.port] == kCtNoPort) continue;
        const uint32_t age_s = m.age_ms / 1000;
        MacEntry e{walk.local_port[m.port], now_s > age_s ? now_s - age_s : 0};
        if (walk.host.mac_table().upsert(mac_key(m.mac.data(), m.vlan), e)) ++walk.report.macs;
    }
    // The addresses the ports' guests were seen using, which PORT carries: taken here, with the
    // rest of what was learned, because PORT installs before the stages that may still refuse.
    for (size_t n = 0; n < walk.s.ports.size(); ++n)
        if (n < walk.local_port.size() && walk.local_port[n] != kCtNoPort)
            walk.report.addresses +=
                walk.host.learn_port_addresses(walk.s.ports[n].name, walk.s.ports[n].addresses);
    return Ok{};
}

Status capture_connections(CaptureWalk& walk) {
    MigrationHost& host = walk.host;
    const auto n_workers = host.ct_shard_count();
    const uint64_t now_ms = host.ct_now_ms();
    if (walk.since == nullptr) {
        // At most every tracked connection: reserved once (pages untouched cost nothing), so
        // that a large capture is not copied as it grows.
        size_t tracked = 0;
        for (uint16_t w = 0; w < n_workers; ++w) tracked += host.ct_shard(w).table().size();
        reserve_large(walk.out.connections, tracked);
        for (uint16_t w = 0; w < n_workers; ++w) {
            const CtTable& t = host.ct_shard(w).table();
            for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1))
                if (in_scope(t.entry(i), walk.slot))
                    add_connection(host, w, i, now_ms, walk.stream_port, &walk.out);
        }
        return Ok{};
    }
    // A delta: the connections new or changed since the pre-copy.
    const Precopy& p = *walk.since;
    // Where each pre-copied connection was: by worker, slot index -> position in p.seen + 1.
    std::vector<std::vector<uint32_t>> at(n_workers);
    for (uint16_t w = 0; w < n_workers; ++w) at[w].assign(host.ct_shard(w).table().capacity(), 0);
    for (size_t k = 0; k < p.seen.size(); ++k)
        at[p.seen[k].worker][p.seen[k].index] = static_cast<uint32_t>(k + 1);
    walk.still.assign(p.seen.size(), false);
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = host.ct_shard(w).table();
        for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1)) {
            const CtEntry& e = t.entry(i);
            if (!in_scope(e, walk.slot)) continue;
            const uint32_t k = at[w][i];
            if (k != 0 && unchanged(p.seen[k - 1], e)) {
                walk.still[k - 1] = true;
                continue;
            }
            if (k != 0 && p.seen[k - 1].orig == e.tuple[0]) walk.still[k - 1] = true;  // re-sent
            add_connection(host, w, i, now_ms, walk.stream_port, &walk.out);
        }
    }
    return Ok{};
}

Status install_connections(InstallWalk& walk) {
    MigrationHost& host = walk.host;
    const MigrationState& s = walk.s;
    const uint64_t now_ms = host.ct_now_ms();
    if (walk.staged == nullptr) {
        // All or nothing: room and zone limits checked first; a clash or an insertion that
        // fails removes what was placed.
        if (Status room = check_room(host, s.connections); !room) return room.error();
        walk.placed.reserve(s.connections.size());
        const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
        // The index buckets of a connection a few ahead start loading while this one is
        // placed (a large table misses the cache on nearly every bucket); the hashes computed
        // for that are the insert's.
        TupleHashes ahead[kInstallPrefetch];
        auto prefetch = [&](size_t k) {
            const MigratedConnection& c = s.connections[k];
            TupleHashes& h = ahead[k % kInstallPrefetch];
            h.orig = host.ct_shard(ct_owner(c.orig, n_workers)).table().prefetch(c.orig);
            h.reply = host.ct_shard(ct_owner(c.reply, n_workers)).table().prefetch(c.reply);
        };
        for (size_t k = 0; k < kInstallPrefetch && k < s.connections.size(); ++k) prefetch(k);
        for (size_t k = 0; k < s.connections.size(); ++k) {
            const TupleHashes h = ahead[k % kInstallPrefetch];
            if (k + kInstallPrefetch < s.connections.size()) prefetch(k + kInstallPrefetch);
            const MigratedConnection& c = s.connections[k];
            auto where = place(host, c, h, walk.local_port, now_ms, false);
            if (!where) {
                for (const auto& [w, idx] : walk.placed) host.ct_shard(w).remove(idx);
                deliver_notices(host);
                walk.placed.clear();
                return make_error(where.error().code,
                                  where.error().message + "; nothing installed");
            }
            walk.placed.push_back(*where);
        }
        walk.report.connections = walk.placed.size();
        return Ok{};
    }
    // A commit of what was placed ahead: slots sent again after the pre-copy (changed or new)
    // are placed anew, active; gone ones removed; the others activated.
    Staged& st = *walk.staged;
    const DecodeContext& ctx = *walk.ctx;
    const size_t slots = s.connections.size();
    st.placed.resize(slots, kNotPlaced);
    std::vector<bool> fresh(slots, false);
    for (size_t e = walk.first_delta_entry; e < ctx.slot_of_number.size(); ++e)
        fresh[ctx.slot_of_number[e]] = true;
    auto fail = [&](const Error& err) -> Status {
        for (auto& [w, idx] : st.placed)
            if (idx != kCtNone) host.ct_shard(w).remove(idx), idx = kCtNone;
        deliver_notices(host);
        return make_error(err.code, err.message + "; nothing installed");
    };
    for (size_t k = 0; k < slots; ++k) {
        auto& [w, idx] = st.placed[k];
        if (ctx.gone[k] || fresh[k]) {
            if (idx != kCtNone) host.ct_shard(w).remove(idx);
            idx = kCtNone;
            if (ctx.gone[k]) continue;
            auto where = place(host, s.connections[k], hashes_of(s.connections[k]), walk.local_port,
                               now_ms, false);
            if (!where) return fail(where.error());
            st.placed[k] = *where;
        } else if (idx != kCtNone) {
            host.ct_shard(w).activate(idx, now_ms, s.connections[k].remaining_ms);
        }
        ++walk.report.connections;
    }
    deliver_notices(host);
    return Ok{};
}

Status capture_gone(CaptureWalk& walk) {
    if (walk.since == nullptr) return Ok{};  // a full capture ends nothing
    // Connections sent that are gone now, unless their tuple is tracked again (re-sent).
    MigrationHost& host = walk.host;
    const Precopy& p = *walk.since;
    const auto n_workers = host.ct_shard_count();
    for (size_t k = 0; k < p.seen.size(); ++k) {
        if (walk.still[k]) continue;
        const CtTuple& t = p.seen[k].orig;
        if (host.ct_shard(ct_owner(t, n_workers)).table().lookup(t).found()) continue;
        walk.out.gone.push_back(t);
    }
    return Ok{};
}

Status capture_dpi(CaptureWalk& walk) {
    // The streams come with their connections (CONNECTIONS reads both at the same index).
    walk.out.dpi_hash = walk.since != nullptr ? walk.since->state.dpi_hash
                                              : walk.host.dpi_current().database().hash();
    return Ok{};
}

Status install_dpi(InstallWalk& walk) {
    MigrationHost& host = walk.host;
    for (const MigratedDpi& d : walk.s.dpi) {
        const auto [w, idx] = walk.where(d.connection);
        if (idx == kCtNone) continue;
        DpiStreamState st = d.state;
        st.db_hash = walk.s.dpi_hash;
        if (host.dpi_worker(w).import_state(host.dpi_current(), idx, st) == DpiImport::kExpanded)
            ++walk.report.dpi_expanded;
        else
            ++walk.report.dpi_restarted;
    }
    return Ok{};
}

std::pair<uint16_t, uint32_t> InstallWalk::where(uint32_t n) const {
    if (staged == nullptr) return n < placed.size() ? placed[n] : kNotPlaced;
    return n < ctx->slot_of_number.size() ? staged->placed[ctx->slot_of_number[n]] : kNotPlaced;
}

namespace {

/// Walks the capture column. Context: control, workers paused.
Status walk_capture(CaptureWalk& walk) {
    for (const Stage& stage : kStages)
        if (stage.capture != nullptr)
            if (Status s = stage.capture(walk); !s) return s;
    return Ok{};
}

/// Walks the install column: first the stages that may refuse, then those that only add.
/// Context: control, workers paused or not started.
Result<InstallReport> walk_install(InstallWalk& walk) {
    for (const bool refusing : {true, false})
        for (const Stage& stage : kStages)
            if (stage.install != nullptr && stage.may_refuse == refusing)
                if (Status s = stage.install(walk); !s) return s.error();
    return walk.report;
}

}  // namespace

Result<MigrationState> MigrationControl::capture(const std::optional<std::string>& port) const {
    MigrationState s;
    CaptureWalk walk{host_, port, s};
    if (Status c = walk_capture(walk); !c) return c.error();
    return s;
}

MigrationState MigrationControl::delta(const Precopy& p) const {
    MigrationState d;
    CaptureWalk walk{host_, std::nullopt, d, &p};
    (void)walk_capture(walk);  // a delta's stages cannot fail: its ports were found by the pre-copy
    return d;
}

Result<InstallReport> MigrationControl::install(const MigrationState& s) {
    InstallWalk walk{host_, s};
    return walk_install(walk);
}

Result<InstallReport> MigrationControl::commit_staged(Staged& st, const MigrationState& partial,
                                                      const DecodeContext& ctx,
                                                      uint32_t first_delta_entry) {
    InstallWalk walk{host_, partial};
    walk.staged = &st;
    walk.ctx = &ctx;
    walk.first_delta_entry = first_delta_entry;
    auto report = walk_install(walk);
    st.placed.clear();  // the switch's now, or removed by the refusal
    return report;
}

Result<Precopy> MigrationControl::precopy(const std::optional<std::string>& port,
                                          uint32_t slice) const {
    Precopy p;
    // The PORT and DPI_STREAMS stages as a capture walks them; the connections a slice per
    // brief pause, while traffic runs.
    CaptureWalk walk{host_, port, p.state};
    if (Status b = capture_ports(walk); !b) return b.error();
    if (Status b = capture_dpi(walk); !b) return b.error();
    p.slot = walk.slot;
    p.stream_port = std::move(walk.stream_port);
    MigrationHost& host = host_;
    const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = host.ct_shard(w).table();
        for (uint32_t from = 0; from < t.capacity(); from += slice) {
            // A short pause per slice: the owner writes the entries, so they are read while
            // it is parked; traffic flows between slices.
            ScopedPause paused(host_.workers());
            if (!paused) return paused.status().error();
            const uint64_t now_ms = host.ct_now_ms();
            const uint32_t to = std::min<uint32_t>(t.capacity(), from + slice);
            for (uint32_t i = t.next_live(from); i != kCtNone && i < to; i = t.next_live(i + 1)) {
                const CtEntry& e = t.entry(i);
                if (!in_scope(e, p.slot)) continue;
                add_connection(host_, w, i, now_ms, p.stream_port, &p.state);
                p.seen.push_back(seen_of(w, i, e));
            }
        }
    }
    return p;
}

Result<Staged> MigrationControl::stage(const MigrationState& partial, uint32_t slice) {
    MigrationHost& host = host_;
    Staged st;
    auto local_port = map_ports(host_, partial);
    if (!local_port) return local_port.error();
    st.local_port = std::move(*local_port);
    if (Status room = check_room(host, partial.connections); !room) return room.error();
    st.slots = partial.connections.size();
    st.placed.assign(st.slots, kNotPlaced);
    for (size_t from = 0; from < st.slots; from += slice) {
        ScopedPause paused(host_.workers());
        if (!paused) {
            const Error why = paused.status().error();
            if (!unstage(st, slice))
                return make_error(ErrorCode::kFailed,
                                  why.message + "; connections placed ahead stay dormant");
            return why;
        }
        const uint64_t now_ms = host.ct_now_ms();
        const size_t to = std::min<size_t>(st.slots, from + slice);
        for (size_t k = from; k < to; ++k) {
            auto where = place(host, partial.connections[k], hashes_of(partial.connections[k]),
                               st.local_port, now_ms, true);
            if (!where) {
                paused.release();
                if (!unstage(st, slice))
                    host_.log(MigrateLog::kError,
                              "migration: connections placed ahead stay dormant");
                return make_error(where.error().code,
                                  where.error().message + "; nothing installed");
            }
            st.placed[k] = *where;
        }
    }
    return st;
}

bool MigrationControl::unstage(Staged& st, uint32_t slice) {
    constexpr int kPauseTries = 25;  // each waits at most the pause timeout
    MigrationHost& host = host_;
    for (size_t from = 0; from < st.placed.size(); from += slice) {
        // The owners write these entries: edited only while they are parked.
        std::optional<ScopedPause> paused;
        for (int i = 0; i < kPauseTries && !(paused && *paused); ++i)
            paused.emplace(host_.workers());
        if (!*paused) return false;
        const size_t to = std::min<size_t>(st.placed.size(), from + slice);
        for (size_t k = from; k < to; ++k) {
            if (st.placed[k].second == kCtNone) continue;
            host.ct_shard(st.placed[k].first).remove(st.placed[k].second);
            st.placed[k] = kNotPlaced;
        }
        deliver_notices(host);
    }
    return true;
}

size_t MigrationControl::retire(const MigrationState& s, size_t from, size_t count) {
    MigrationHost& host = host_;
    const auto n_workers = static_cast<uint16_t>(host.ct_shard_count());
    const uint64_t now = host.ct_now_ms();
    size_t n = 0;
    const size_t to = std::min(s.connections.size(), from + count);
    for (size_t k = from; k < to; ++k) {
        const CtTuple& t = s.connections[k].orig;
        const uint16_t w = ct_owner(t, n_workers);
        ConntrackShard& sh = host.ct_shard(w);
        const CtRef ref = sh.table().lookup(t);
        if (!ref.found()) continue;
        sh.remove(ref.index);
        ++n;
        // A translated connection's redirect goes with it (the outbox holds a few notices).
        for (unsigned i = 0; i < sh.notice_count(); ++i) {
            const CtNotice& note = sh.notices()[i];
            if (note.to < n_workers) host.ct_shard(note.to).apply_notice(note, now);
        }
        sh.clear_notices();
    }
    return n;
}

}  // namespace ferry
