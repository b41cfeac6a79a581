#include "control/migration.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>

#include "control/ct_control.h"
#include "control/dpi_control.h"
#include "control/log.h"
#include "control/switch.h"
#include "dataplane/mac_table.h"
#include "dataplane/port_table.h"
#include "ferry_version.h"
#include "migrate/ct_convert.h"

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

std::string tuple_text(const CtTuple& t) {
    return ct_tuple_text(t);
}

uint64_t random_id() {
    std::random_device rd;
    return (uint64_t{rd()} << 32) | rd();
}

}  // namespace

namespace {

/// The stream's header fields and ports for a one-port (port given) or whole-switch stream;
/// stream_port maps local slots to stream port numbers. @return kNotFound for an unknown port
Status begin_state(Switch& sw, const std::optional<std::string>& port, MigrationState* s,
                   std::vector<uint16_t>* stream_port, std::optional<uint16_t>* slot) {
    s->scope = port ? StreamScope::kPort : StreamScope::kSwitch;
    s->stream_id = random_id();
    s->ferryd_version = FERRY_VERSION;
    s->hyperscan_version = dpi_library_version();
    std::vector<std::pair<std::string, uint16_t>> ports = sw.port_slots();
    if (port) {
        // The moved port first; the others follow so that its connections keep naming the
        // port their other direction uses (the target maps those when it has them).
        *slot = sw.port_slot(*port);
        if (!*slot) return make_error(ErrorCode::kNotFound, "no port named " + *port);
        std::erase_if(ports, [&](const auto& p) { return p.first == *port; });
        ports.insert(ports.begin(), {*port, **slot});
    }
    stream_port->assign(kPortSlots, kNoStreamPort);
    for (size_t i = 0; i < ports.size(); ++i) {
        (*stream_port)[ports[i].second] = static_cast<uint16_t>(i);
        MigratedPort p;
        p.name = ports[i].first;
        p.mac = parse_mac(sw.port_mac_text(p.name));
        s->ports.push_back(std::move(p));
    }
    return Ok{};
}

/// The learned MACs of the stream's ports (of the moved port only, for a one-port stream).
void capture_macs(Switch& sw, const std::vector<uint16_t>& stream_port,
                  const std::optional<uint16_t>& slot, MigrationState* s) {
    const uint32_t now_s = sw.clock_s();
    sw.mac_table().for_each([&](uint64_t key, MacEntry e) {
        if (e.port >= kPortSlots || stream_port[e.port] == kNoStreamPort) return;
        if (slot && e.port != *slot) return;
        MigratedMac m;
        const uint64_t addr = mac_key_addr(key);
        for (int i = 0; i < 6; ++i) m.mac[i] = static_cast<uint8_t>(addr >> (40 - 8 * i));
        m.vlan = mac_key_vlan(key);
        m.port = stream_port[e.port];
        m.age_ms = (now_s - e.stamp_s) * 1000;
        s->macs.push_back(m);
    });
}

/// Whether a connection belongs to a one-port migration of `slot` (any without a slot).
bool in_scope(const CtEntry& e, const std::optional<uint16_t>& slot) {
    if (e.flags & kCtfRedirect) return false;  // the owner's placement, not a connection
    return !slot || e.port[0] == *slot || e.port[1] == *slot;
}

/// Appends connection (w, i) and its DPI state to s.
void add_connection(Switch& sw, uint16_t w, uint32_t i, uint64_t now_ms,
                    const std::vector<uint16_t>& stream_port, MigrationState* s) {
    DpiControl& dpi = sw.dpi();
    const CtEntry& e = sw.conntrack().shard(w).table().entry(i);
    MigratedDpi d;
    if (dpi.worker(w).export_state(dpi.current(), i, &d.state)) {
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

}  // namespace

Result<MigrationState> MigrationControl::capture(const std::optional<std::string>& port) const {
    MigrationState s;
    std::vector<uint16_t> stream_port;
    std::optional<uint16_t> slot;
    if (Status b = begin_state(sw_, port, &s, &stream_port, &slot); !b) return b.error();
    capture_macs(sw_, stream_port, slot, &s);
    ConntrackControl& ct = sw_.conntrack();
    const uint64_t now_ms = ct.now_ms();
    s.dpi_hash = sw_.dpi().current().database().hash();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = ct.shard(w).table();
        for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1))
            if (in_scope(t.entry(i), slot)) add_connection(sw_, w, i, now_ms, stream_port, &s);
    }
    return s;
}

Result<Precopy> MigrationControl::precopy(const std::optional<std::string>& port,
                                          uint32_t slice) const {
    Precopy p;
    if (Status b = begin_state(sw_, port, &p.state, &p.stream_port, &p.slot); !b) return b.error();
    ConntrackControl& ct = sw_.conntrack();
    p.state.dpi_hash = sw_.dpi().current().database().hash();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = ct.shard(w).table();
        for (uint32_t from = 0; from < t.capacity(); from += slice) {
            // A short pause per slice: the owner writes the entries, so they are read while
            // it is parked; traffic flows between slices.
            ScopedPause paused(sw_);
            if (!paused) return paused.status().error();
            const uint64_t now_ms = ct.now_ms();
            const uint32_t to = std::min<uint32_t>(t.capacity(), from + slice);
            for (uint32_t i = t.next_live(from); i != kCtNone && i < to; i = t.next_live(i + 1)) {
                const CtEntry& e = t.entry(i);
                if (!in_scope(e, p.slot)) continue;
                add_connection(sw_, w, i, now_ms, p.stream_port, &p.state);
                p.seen.push_back(seen_of(w, i, e));
            }
        }
    }
    return p;
}

MigrationState MigrationControl::delta(const Precopy& p) const {
    MigrationState d;
    d.scope = p.state.scope;
    d.stream_id = p.state.stream_id;
    d.dpi_hash = p.state.dpi_hash;
    capture_macs(sw_, p.stream_port, p.slot, &d);
    ConntrackControl& ct = sw_.conntrack();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    const uint64_t now_ms = ct.now_ms();
    // Where each pre-copied connection was: by worker, slot index -> position in p.seen + 1.
    std::vector<std::vector<uint32_t>> at(n_workers);
    for (uint16_t w = 0; w < n_workers; ++w) at[w].assign(ct.shard(w).table().capacity(), 0);
    for (size_t k = 0; k < p.seen.size(); ++k)
        at[p.seen[k].worker][p.seen[k].index] = static_cast<uint32_t>(k + 1);
    std::vector<bool> still(p.seen.size(), false);
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = ct.shard(w).table();
        for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1)) {
            const CtEntry& e = t.entry(i);
            if (!in_scope(e, p.slot)) continue;
            const uint32_t k = at[w][i];
            if (k != 0 && unchanged(p.seen[k - 1], e)) {
                still[k - 1] = true;
                continue;
            }
            if (k != 0 && p.seen[k - 1].orig == e.tuple[0]) still[k - 1] = true;  // re-sent
            add_connection(sw_, w, i, now_ms, p.stream_port, &d);
        }
    }
    // Connections sent that are gone now, unless their tuple is tracked again (re-sent above).
    for (size_t k = 0; k < p.seen.size(); ++k) {
        if (still[k]) continue;
        const CtTuple& t = p.seen[k].orig;
        if (ct.shard(ct_owner(t, n_workers)).table().lookup(t).found()) continue;
        d.gone.push_back(t);
    }
    return d;
}

namespace {

/// Room per owner shard and zone limits for conns, and with `conflicts` clashes with tracked
/// connections: all checked before any change. Context: control.
Status check_room(ConntrackControl& ct, const std::vector<MigratedConnection>& conns,
                  bool conflicts) {
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    std::vector<uint32_t> per_shard(n_workers, 0);
    std::vector<uint32_t> per_zone(kCtZones, 0);
    for (const MigratedConnection& c : conns) {
        // Each tuple can only be tracked by its owner (a redirect there names the owner).
        for (const CtTuple* t : {&c.orig, &c.reply}) {
            if (!conflicts) break;
            const uint16_t w = ct_owner(*t, n_workers);
            if (ct.shard(w).table().lookup(*t).found())
                return make_error(ErrorCode::kConflict, "connection " + tuple_text(c.orig) +
                                                            " clashes with one tracked here (" +
                                                            tuple_text(*t) + ", worker " +
                                                            std::to_string(w) + ")");
        }
        ++per_shard[ct_owner(c.orig, n_workers)];
        ++per_zone[c.orig.zone];
    }
    for (uint16_t w = 0; w < n_workers; ++w) {
        const CtTable& t = ct.shard(w).table();
        if (per_shard[w] > t.capacity() - t.size())
            return make_error(ErrorCode::kConflict,
                              "worker " + std::to_string(w) + " has room for " +
                                  std::to_string(t.capacity() - t.size()) + " connections, the " +
                                  "stream brings " + std::to_string(per_shard[w]));
    }
    for (uint32_t zone = 0; zone < kCtZones; ++zone) {
        const uint32_t n = per_zone[zone];
        if (n == 0) continue;
        const CtZone& z = ct.zones().zones[zone];
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

}  // namespace

namespace {

/// Delivers the redirect notices shards queued (all workers paused). Context: control.
void deliver_notices(ConntrackControl& ct) {
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    const uint64_t now = ct.now_ms();
    for (uint16_t w = 0; w < n_workers; ++w) {
        ConntrackShard& sh = ct.shard(w);
        for (unsigned k = 0; k < sh.notice_count(); ++k) {
            const CtNotice& n = sh.notices()[k];
            if (n.to < n_workers) ct.shard(n.to).apply_notice(n, now);
        }
        sh.clear_notices();
    }
}

/// Places one connection in its owner's shard. @return (worker, index) or the clash / no room
Result<std::pair<uint16_t, uint32_t>> place(ConntrackControl& ct, const MigratedConnection& c,
                                            const std::vector<uint16_t>& local_port,
                                            uint64_t now_ms, bool dormant) {
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    for (const CtTuple* t : {&c.orig, &c.reply}) {
        const uint16_t w = ct_owner(*t, n_workers);
        if (ct.shard(w).table().lookup(*t).found())
            return make_error(ErrorCode::kConflict, "connection " + ct_tuple_text(c.orig) +
                                                        " clashes with one tracked here (" +
                                                        ct_tuple_text(*t) + ", worker " +
                                                        std::to_string(w) + ")");
    }
    const uint16_t w = ct_owner(c.orig, n_workers);
    const uint32_t idx =
        ct.shard(w).install(connection_from_stream(c, local_port), now_ms, c.remaining_ms, dormant);
    if (idx == kCtNone)
        return make_error(ErrorCode::kFailed, "no room for connection " + ct_tuple_text(c.orig) +
                                                  " on worker " + std::to_string(w));
    if (ct.shard(w).notice_count() != 0) deliver_notices(ct);
    return std::make_pair(w, idx);
}

constexpr std::pair<uint16_t, uint32_t> kNotPlaced{0, kCtNone};

/// Local slots of the stream's ports, by name. Every port of a whole-switch stream must exist
/// here; of a one-port stream the moved one (the first), the others map to none when absent.
/// @return kNotFound naming a missing one
Result<std::vector<uint16_t>> map_ports(Switch& sw, const MigrationState& s) {
    std::vector<uint16_t> local_port;
    for (size_t i = 0; i < s.ports.size(); ++i) {
        std::optional<uint16_t> slot = sw.port_slot(s.ports[i].name);
        if (!slot && (s.scope == StreamScope::kSwitch || i == 0))
            return make_error(ErrorCode::kNotFound,
                              "the stream's port " + s.ports[i].name + " does not exist here");
        local_port.push_back(slot.value_or(kCtNoPort));
    }
    return local_port;
}

/// After the connections: their DPI states (where(n): the entry of stream connection n, index
/// kCtNone when it has none) and the learned MACs.
void install_dpi_and_macs(Switch& sw, const MigrationState& s,
                          const std::vector<uint16_t>& local_port,
                          const std::function<std::pair<uint16_t, uint32_t>(uint32_t)>& where,
                          InstallReport* report) {
    DpiControl& dpi = sw.dpi();
    for (const MigratedDpi& d : s.dpi) {
        const auto [w, idx] = where(d.connection);
        if (idx == kCtNone) continue;
        DpiStreamState st = d.state;
        st.db_hash = s.dpi_hash;
        if (dpi.worker(w).import_state(dpi.current(), idx, st) == DpiImport::kExpanded)
            ++report->dpi_expanded;
        else
            ++report->dpi_restarted;
    }
    const uint32_t now_s = sw.clock_s();
    for (const MigratedMac& m : s.macs) {
        if (m.port >= local_port.size() || local_port[m.port] == kCtNoPort) continue;
        const uint32_t age_s = m.age_ms / 1000;
        MacEntry e{local_port[m.port], now_s > age_s ? now_s - age_s : 0};
        if (sw.mac_table().upsert(mac_key(m.mac.data(), m.vlan), e)) ++report->macs;
    }
}

}  // namespace

Result<InstallReport> MigrationControl::install(const MigrationState& s) {
    ConntrackControl& ct = sw_.conntrack();
    auto local_port = map_ports(sw_, s);
    if (!local_port) return local_port.error();
    if (Status room = check_room(ct, s.connections, false); !room) return room.error();
    const uint64_t now_ms = ct.now_ms();
    std::vector<std::pair<uint16_t, uint32_t>> placed;  // (worker, index) per connection
    placed.reserve(s.connections.size());
    for (const MigratedConnection& c : s.connections) {
        auto where = place(ct, c, *local_port, now_ms, false);
        if (!where) {
            for (const auto& [w, idx] : placed) ct.shard(w).remove(idx);
            deliver_notices(ct);
            return make_error(where.error().code, where.error().message + "; nothing installed");
        }
        placed.push_back(*where);
    }
    InstallReport report;
    report.connections = placed.size();
    install_dpi_and_macs(
        sw_, s, *local_port, [&](uint32_t n) { return n < placed.size() ? placed[n] : kNotPlaced; },
        &report);
    return report;
}

Result<Staged> MigrationControl::stage(const MigrationState& partial, uint32_t slice) {
    ConntrackControl& ct = sw_.conntrack();
    Staged st;
    auto local_port = map_ports(sw_, partial);
    if (!local_port) return local_port.error();
    st.local_port = std::move(*local_port);
    if (Status room = check_room(ct, partial.connections, false); !room) return room.error();
    st.slots = partial.connections.size();
    st.placed.assign(st.slots, kNotPlaced);
    for (size_t from = 0; from < st.slots; from += slice) {
        ScopedPause paused(sw_);
        if (!paused) {
            const Error why = paused.status().error();
            if (!unstage(st, slice))
                return make_error(ErrorCode::kFailed,
                                  why.message + "; connections placed ahead stay dormant");
            return why;
        }
        const uint64_t now_ms = ct.now_ms();
        const size_t to = std::min<size_t>(st.slots, from + slice);
        for (size_t k = from; k < to; ++k) {
            auto where = place(ct, partial.connections[k], st.local_port, now_ms, true);
            if (!where) {
                paused.release();
                if (!unstage(st, slice))
                    FERRY_LOG_ERROR("migration: connections placed ahead stay dormant");
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
    ConntrackControl& ct = sw_.conntrack();
    for (size_t from = 0; from < st.placed.size(); from += slice) {
        // The owners write these entries: edited only while they are parked.
        std::optional<ScopedPause> paused;
        for (int i = 0; i < kPauseTries && !(paused && *paused); ++i) paused.emplace(sw_);
        if (!*paused) return false;
        const size_t to = std::min<size_t>(st.placed.size(), from + slice);
        for (size_t k = from; k < to; ++k) {
            if (st.placed[k].second == kCtNone) continue;
            ct.shard(st.placed[k].first).remove(st.placed[k].second);
            st.placed[k] = kNotPlaced;
        }
        deliver_notices(ct);
    }
    return true;
}

Result<InstallReport> MigrationControl::commit_staged(Staged& st, const MigrationState& partial,
                                                      const DecodeContext& ctx,
                                                      uint32_t first_delta_entry) {
    ConntrackControl& ct = sw_.conntrack();
    const uint64_t now_ms = ct.now_ms();
    const size_t slots = partial.connections.size();
    st.placed.resize(slots, kNotPlaced);
    // Slots sent again after the pre-copy (changed or new) are placed anew, active.
    std::vector<bool> fresh(slots, false);
    for (size_t e = first_delta_entry; e < ctx.slot_of_number.size(); ++e)
        fresh[ctx.slot_of_number[e]] = true;
    auto fail = [&](const Error& err) -> Result<InstallReport> {
        for (auto& [w, idx] : st.placed)
            if (idx != kCtNone) ct.shard(w).remove(idx), idx = kCtNone;
        deliver_notices(ct);
        return make_error(err.code, err.message + "; nothing installed");
    };
    InstallReport report;
    for (size_t k = 0; k < slots; ++k) {
        auto& [w, idx] = st.placed[k];
        if (ctx.gone[k] || fresh[k]) {
            if (idx != kCtNone) ct.shard(w).remove(idx);
            idx = kCtNone;
            if (ctx.gone[k]) continue;
            auto where = place(ct, partial.connections[k], st.local_port, now_ms, false);
            if (!where) return fail(where.error());
            st.placed[k] = *where;
        } else if (idx != kCtNone) {
            ct.shard(w).activate(idx, now_ms, partial.connections[k].remaining_ms);
        }
        ++report.connections;
    }
    deliver_notices(ct);
    install_dpi_and_macs(
        sw_, partial, st.local_port,
        [&](uint32_t n) {
            return n < ctx.slot_of_number.size() ? st.placed[ctx.slot_of_number[n]] : kNotPlaced;
        },
        &report);
    st.placed.clear();  // they are the switch's now
    return report;
}

size_t MigrationControl::retire(const MigrationState& s, size_t from, size_t count) {
    ConntrackControl& ct = sw_.conntrack();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    const uint64_t now = ct.now_ms();
    size_t n = 0;
    const size_t to = std::min(s.connections.size(), from + count);
    for (size_t k = from; k < to; ++k) {
        const CtTuple& t = s.connections[k].orig;
        const uint16_t w = ct_owner(t, n_workers);
        ConntrackShard& sh = ct.shard(w);
        const CtRef ref = sh.table().lookup(t);
        if (!ref.found()) continue;
        sh.remove(ref.index);
        ++n;
        // A translated connection's redirect goes with it (the outbox holds a few notices).
        for (unsigned i = 0; i < sh.notice_count(); ++i) {
            const CtNotice& note = sh.notices()[i];
            if (note.to < n_workers) ct.shard(note.to).apply_notice(note, now);
        }
        sh.clear_notices();
    }
    return n;
}

namespace {

/// 16 hex digits from the kernel's random source: a temporary name no one can guess.
std::string random_suffix() {
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != static_cast<ssize_t>(sizeof(r)))
        r = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
            (static_cast<uint64_t>(getpid()) << 32);
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(r));
    return buf;
}

Error file_error(const std::string& what, const std::string& file, int err) {
    return make_error(ErrorCode::kFailed, what + " " + file + ": " + std::strerror(err));
}

}  // namespace

Status write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    // The temporary file is never opened by a name someone else could have planted (a
    // symlink to a file of theirs, or of root's): O_TMPFILE has no name until linkat gives it
    // a fresh random one; without O_TMPFILE, O_CREAT|O_EXCL|O_NOFOLLOW on a random name.
    const size_t slash = path.rfind('/');
    const std::string dir =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    std::string tmp;  // the temporary's name once it has one
    int fd = open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    const bool anonymous = fd >= 0;
    for (int tries = 0; fd < 0 && tries < 16; ++tries) {
        tmp = path + ".tmp." + random_suffix();
        fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) return file_error("cannot create a temporary file for", path, errno);
    auto fail = [&](const std::string& what) -> Status {
        const int err = errno;
        close(fd);
        if (!tmp.empty()) unlink(tmp.c_str());
        return file_error(what, path, err);
    };
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t w = write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return fail("cannot write");
        done += static_cast<size_t>(w);
    }
    if (fsync(fd) != 0) return fail("cannot write");
    if (anonymous) {
        // linkat does not follow or replace what the new name is: a planted name is EEXIST.
        const std::string self = "/proc/self/fd/" + std::to_string(fd);
        int rc = -1;
        for (int tries = 0; rc != 0 && tries < 16; ++tries) {
            tmp = path + ".tmp." + random_suffix();
            rc = linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW);
            if (rc != 0 && errno != EEXIST) break;
        }
        if (rc != 0) {
            tmp.clear();
            return fail("cannot name the temporary file for");
        }
    }
    if (close(fd) != 0) {
        const int err = errno;
        unlink(tmp.c_str());
        return file_error("cannot write", path, err);
    }
    // rename replaces path itself, never what a symlink at path points to.
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        unlink(tmp.c_str());
        return make_error(ErrorCode::kFailed,
                          "cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
    }
    return Ok{};
}

Result<std::vector<uint8_t>> read_file_bounded(const std::string& path, size_t max_bytes) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return make_error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kFailed,
                          "cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return make_error(ErrorCode::kInvalidParams, path + " is not a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
        close(fd);
        return make_error(ErrorCode::kInvalidParams,
                          path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < out.size()) {
        const ssize_t r = read(fd, out.data() + done, out.size() - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += static_cast<size_t>(r);
    }
    close(fd);
    if (done != out.size()) return make_error(ErrorCode::kFailed, "short read of " + path);
    return out;
}

}  // namespace ferry
