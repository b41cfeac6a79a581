#include "control/migration.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>

#include "control/conntrack.h"
#include "control/dpi.h"
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

Result<MigrationState> MigrationControl::capture(const std::optional<std::string>& port) const {
    MigrationState s;
    s.scope = port ? StreamScope::kPort : StreamScope::kSwitch;
    s.stream_id = random_id();
    s.ferryd_version = FERRY_VERSION;
    s.hyperscan_version = dpi_library_version();
    std::vector<std::pair<std::string, uint16_t>> ports = sw_.port_slots();
    if (port) {
        std::optional<uint16_t> slot = sw_.port_slot(*port);
        if (!slot) return make_error(ErrorCode::kNotFound, "no port named " + *port);
        ports = {{*port, *slot}};
    }
    std::vector<uint16_t> stream_port(kPortSlots, kNoStreamPort);
    for (size_t i = 0; i < ports.size(); ++i) {
        stream_port[ports[i].second] = static_cast<uint16_t>(i);
        MigratedPort p;
        p.name = ports[i].first;
        p.mac = parse_mac(sw_.port_mac_text(p.name));
        s.ports.push_back(std::move(p));
    }
    const uint32_t now_s = sw_.clock_s();
    sw_.mac_table().for_each([&](uint64_t key, MacEntry e) {
        if (e.port >= kPortSlots || stream_port[e.port] == kNoStreamPort) return;
        MigratedMac m;
        const uint64_t addr = mac_key_addr(key);
        for (int i = 0; i < 6; ++i) m.mac[i] = static_cast<uint8_t>(addr >> (40 - 8 * i));
        m.vlan = mac_key_vlan(key);
        m.port = stream_port[e.port];
        m.age_ms = (now_s - e.stamp_s) * 1000;
        s.macs.push_back(m);
    });
    ConntrackControl& ct = sw_.conntrack();
    DpiControl& dpi = sw_.dpi();
    const uint64_t now_ms = ct.now_ms();
    s.dpi_hash = dpi.current().database().hash();
    for (uint16_t w = 0; w < ct.shard_count(); ++w) {
        const CtTable& t = ct.shard(w).table();
        for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1)) {
            const CtEntry& e = t.entry(i);
            if (e.flags & kCtfRedirect) continue;  // the owner's placement, not a connection
            if (port) {
                const bool on_port = (e.port[0] < kPortSlots && stream_port[e.port[0]] == 0) ||
                                     (e.port[1] < kPortSlots && stream_port[e.port[1]] == 0);
                if (!on_port) continue;
            }
            MigratedDpi d;
            if (dpi.worker(w).export_state(dpi.current(), i, &d.state)) {
                d.connection = static_cast<uint32_t>(s.connections.size());
                s.dpi.push_back(std::move(d));
            }
            s.connections.push_back(connection_to_stream(e, now_ms, stream_port));
        }
    }
    return s;
}

Result<InstallReport> MigrationControl::install(const MigrationState& s) {
    ConntrackControl& ct = sw_.conntrack();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    // Ports by name.
    std::vector<uint16_t> local_port;
    for (const MigratedPort& p : s.ports) {
        std::optional<uint16_t> slot = sw_.port_slot(p.name);
        if (!slot)
            return make_error(ErrorCode::kNotFound,
                              "the stream's port " + p.name + " does not exist here");
        local_port.push_back(*slot);
    }
    // Conflicts, room per owner shard, zone limits: all before any change.
    std::vector<uint32_t> per_shard(n_workers, 0);
    std::vector<uint32_t> per_zone(kCtZones, 0);
    for (const MigratedConnection& c : s.connections) {
        // Each tuple can only be tracked by its owner (a redirect there names the owner).
        for (const CtTuple* t : {&c.orig, &c.reply}) {
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

    // Install; the redirect notices go straight to the shards they concern (all paused).
    auto deliver_notices = [&] {
        const uint64_t now = ct.now_ms();
        for (uint16_t w = 0; w < n_workers; ++w) {
            ConntrackShard& sh = ct.shard(w);
            for (unsigned k = 0; k < sh.notice_count(); ++k) {
                const CtNotice& n = sh.notices()[k];
                if (n.to < n_workers) ct.shard(n.to).apply_notice(n, now);
            }
            sh.clear_notices();
        }
    };
    const uint64_t now_ms = ct.now_ms();
    std::vector<std::pair<uint16_t, uint32_t>> placed;  // (worker, index) per connection
    placed.reserve(s.connections.size());
    for (const MigratedConnection& c : s.connections) {
        const uint16_t w = ct_owner(c.orig, n_workers);
        const uint32_t idx =
            ct.shard(w).install(connection_from_stream(c, local_port), now_ms, c.remaining_ms);
        if (idx == kCtNone) {
            for (const auto& [pw, pi] : placed) ct.shard(pw).remove(pi);
            deliver_notices();
            return make_error(ErrorCode::kFailed, "no room for connection " + tuple_text(c.orig) +
                                                      " on worker " + std::to_string(w) +
                                                      " (its buckets are full); nothing installed");
        }
        placed.emplace_back(w, idx);
        if (ct.shard(w).notice_count() != 0) deliver_notices();
    }
    InstallReport report;
    report.connections = placed.size();
    DpiControl& dpi = sw_.dpi();
    for (const MigratedDpi& d : s.dpi) {
        if (d.connection >= placed.size()) continue;
        const auto [w, idx] = placed[d.connection];
        DpiStreamState st = d.state;
        st.db_hash = s.dpi_hash;
        const DpiImport r = dpi.worker(w).import_state(dpi.current(), idx, st);
        if (r == DpiImport::kExpanded)
            ++report.dpi_expanded;
        else
            ++report.dpi_restarted;
    }
    const uint32_t now_s = sw_.clock_s();
    for (const MigratedMac& m : s.macs) {
        if (m.port >= local_port.size()) continue;
        const uint32_t age_s = m.age_ms / 1000;
        MacEntry e{local_port[m.port], now_s > age_s ? now_s - age_s : 0};
        if (sw_.mac_table().upsert(mac_key(m.mac.data(), m.vlan), e)) ++report.macs;
    }
    return report;
}

size_t MigrationControl::retire(const MigrationState& s) {
    ConntrackControl& ct = sw_.conntrack();
    const auto n_workers = static_cast<uint16_t>(ct.shard_count());
    size_t n = 0;
    for (const MigratedConnection& c : s.connections) {
        const uint16_t w = ct_owner(c.orig, n_workers);
        const CtRef ref = ct.shard(w).table().lookup(c.orig);
        if (!ref.found()) continue;
        ct.shard(w).remove(ref.index);
        ++n;
    }
    // Delete notices for the redirects of translated connections.
    const uint64_t now = ct.now_ms();
    for (uint16_t w = 0; w < n_workers; ++w) {
        ConntrackShard& sh = ct.shard(w);
        for (unsigned k = 0; k < sh.notice_count(); ++k) {
            const CtNotice& note = sh.notices()[k];
            if (note.to < n_workers) ct.shard(note.to).apply_notice(note, now);
        }
        sh.clear_notices();
    }
    return n;
}

Status write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    const std::string tmp = path + ".tmp." + std::to_string(getpid());
    const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return make_error(ErrorCode::kFailed, "cannot create " + tmp + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t w = write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            const int err = errno;
            close(fd);
            unlink(tmp.c_str());
            return make_error(ErrorCode::kFailed,
                              "cannot write " + tmp + ": " + std::strerror(err));
        }
        done += static_cast<size_t>(w);
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        const int err = errno;
        unlink(tmp.c_str());
        return make_error(ErrorCode::kFailed, "cannot write " + tmp + ": " + std::strerror(err));
    }
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
