#include "control/vhost_handover.h"

#include <rte_vhost.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "control/log.h"
#include "control/vhost_wake.h"
#include "migrate/fd_message.h"
#include "migrate/transport.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

// What travels in HandedConnection::meta (big-endian, migrate/wire.h):
//   u32 magic, u64 features, u64 protocol features,
//   u32 regions, each {u64 guest physical, u64 QEMU's address, u64 size, u64 mmap offset},
//   u32 rings, each {u32 index, u32 size, u32 next index, u32 fd flags (1 kick, 2 call),
//                    u64 desc, u64 avail, u64 used (QEMU's addresses), u64 log address}
// and in HandedConnection::fds: the connection, one per region, then each ring's kick and
// call eventfds that its flags name.
constexpr uint32_t kMagic = 0x31485646;  // "FVH1"
constexpr size_t kMaxRegions = 8;        // VHOST_MEMORY_MAX_NREGIONS
constexpr size_t kMaxRings = 64;
constexpr uint32_t kHasKick = 1;
constexpr uint32_t kHasCall = 2;

// vhost-user (QEMU's docs/interop/vhost-user.rst): requests, header flags, feature bits.
enum Request : uint32_t {
    kGetFeatures = 1,
    kSetFeatures = 2,
    kSetMemTable = 5,
    kSetVringNum = 8,
    kSetVringAddr = 9,
    kSetVringBase = 10,
    kSetVringKick = 12,
    kSetVringCall = 13,
    kSetProtocolFeatures = 16,
    kSetVringEnable = 18,
    kSetStatus = 39,
};
constexpr uint32_t kFlagVersion = 0x1;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint64_t kVringNoFd = 0x100;
constexpr uint64_t kFeatureLogAll = 1ULL << 26;            // VHOST_F_LOG_ALL
constexpr uint64_t kFeatureProtocolFeatures = 1ULL << 30;  // VHOST_USER_F_PROTOCOL_FEATURES
constexpr uint64_t kFeatureIommu = 1ULL << 33;             // VIRTIO_F_IOMMU_PLATFORM
constexpr uint64_t kFeaturePacked = 1ULL << 34;            // VIRTIO_F_RING_PACKED
constexpr uint64_t kProtocolStatus = 1ULL << 16;           // VHOST_USER_PROTOCOL_F_STATUS
// ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK: a running device's status.
constexpr uint64_t kStatusRunning = 0x0f;
/// How long the vhost library may take to learn a connection again.
constexpr auto kReplayWait = std::chrono::seconds(2);

struct Region {
    uint64_t gpa, uva, size, offset;
};
struct Ring {
    uint32_t index, size, next, fd_flags;
    uint64_t desc, avail, used, log;
};
struct Meta {
    uint64_t features = 0, protocol = 0;
    std::vector<Region> regions;
    std::vector<Ring> rings;
    size_t fd_count() const {
        size_t n = 1 + regions.size();
        for (const Ring& r : rings)
            n += ((r.fd_flags & kHasKick) ? 1 : 0) + ((r.fd_flags & kHasCall) ? 1 : 0);
        return n;
    }
};

std::vector<uint8_t> encode(const Meta& m) {
    std::vector<uint8_t> out;
    WireWriter w(out);
    w.u32(kMagic);
    w.u64(m.features);
    w.u64(m.protocol);
    w.u32(static_cast<uint32_t>(m.regions.size()));
    for (const Region& r : m.regions)
        for (const uint64_t v : {r.gpa, r.uva, r.size, r.offset}) w.u64(v);
    w.u32(static_cast<uint32_t>(m.rings.size()));
    for (const Ring& r : m.rings) {
        for (const uint32_t v : {r.index, r.size, r.next, r.fd_flags}) w.u32(v);
        for (const uint64_t v : {r.desc, r.avail, r.used, r.log}) w.u64(v);
    }
    return out;
}

Result<Meta> decode(const HandedConnection& h) {
    WireReader r(h.meta.data(), h.meta.size());
    Meta m;
    auto bad = [&](const char* why) -> Result<Meta> {
        return make_error(ErrorCode::kFailed, std::string("handed vhost-user connection: ") + why);
    };
    if (r.u32() != kMagic) return bad("unknown layout");
    m.features = r.u64();
    m.protocol = r.u64();
    const uint32_t regions = r.u32();
    if (!r.ok() || regions == 0 || regions > kMaxRegions) return bad("bad region count");
    for (uint32_t i = 0; i < regions; ++i)
        m.regions.push_back(Region{r.u64(), r.u64(), r.u64(), r.u64()});
    const uint32_t rings = r.u32();
    if (!r.ok() || rings == 0 || rings > kMaxRings) return bad("bad ring count");
    for (uint32_t i = 0; i < rings; ++i) {
        Ring g{r.u32(), r.u32(), r.u32(), r.u32(), r.u64(), r.u64(), r.u64(), r.u64()};
        if (g.index >= kMaxRings || g.size == 0 || g.size > 32768 || g.next > 0xffff ||
            (g.fd_flags & ~(kHasKick | kHasCall)) != 0)
            return bad("bad ring");
        m.rings.push_back(g);
    }
    if (!r.done()) return bad("bad length");
    if (m.fd_count() != h.fds.size()) return bad("descriptors missing");
    return m;
}

/// The descriptor of a connected unix stream socket in this process on path, other than those
/// in skip; -1 when there is none. server false: its peer is bound to path (a vhost-user
/// client's connection to its front-end's socket); true: it was accepted on path (a server's).
int find_connection(const std::string& path, const std::vector<int>& skip, bool server) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return -1;
    int found = -1;
    while (const dirent* e = readdir(dir)) {
        char* end = nullptr;
        const long n = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || n == dirfd(dir)) continue;
        const int fd = static_cast<int>(n);
        if (std::find(skip.begin(), skip.end(), fd) != skip.end()) continue;
        sockaddr_un peer{};
        socklen_t len = sizeof(peer);
        const int named = server ? getsockname(fd, reinterpret_cast<sockaddr*>(&peer), &len)
                                 : getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
        if (named != 0 || peer.sun_family != AF_UNIX || len <= offsetof(sockaddr_un, sun_path))
            continue;
        int listening = 0;
        socklen_t one = sizeof(listening);
        if (server &&
            (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &one) != 0 || listening != 0))
            continue;
        const size_t name_len = strnlen(peer.sun_path, len - offsetof(sockaddr_un, sun_path));
        if (std::string(peer.sun_path, name_len) == path) {
            found = fd;
            break;
        }
    }
    closedir(dir);
    return found;
}

void close_all(std::vector<int>& fds) {
    for (int fd : fds)
        if (fd >= 0) close(fd);
    fds.clear();
}

/// QEMU's address of the host address hva, through the connection's memory regions.
bool to_qemu_address(const rte_vhost_memory& mem, uint64_t hva, uint64_t* uva) {
    for (uint32_t i = 0; i < mem.nregions; ++i) {
        const rte_vhost_mem_region& r = mem.regions[i];
        if (hva >= r.host_user_addr && hva - r.host_user_addr < r.size) {
            *uva = r.guest_user_addr + (hva - r.host_user_addr);
            return true;
        }
    }
    return false;
}

/// Sends one vhost-user message as its front-end would, with fds in its control data.
Status send_message(int fd, uint32_t request, const void* payload, uint32_t size,
                    const int* fds = nullptr, size_t n_fds = 0) {
    uint8_t buf[12 + 8 + kMaxRegions * 32];
    const uint32_t header[3] = {request, kFlagVersion, size};
    std::memcpy(buf, header, sizeof(header));
    std::memcpy(buf + sizeof(header), payload, size);
    const size_t n = sizeof(header) + size;
    if (send_with_fds(fd, buf, n, fds, n_fds, MSG_NOSIGNAL) != static_cast<ssize_t>(n))
        return make_error(ErrorCode::kFailed,
                          std::string("replaying the connection: ") + strerror(errno));
    return Ok{};
}

template <class T>
Status send_value(int fd, uint32_t request, const T& v, const int* fds = nullptr,
                  size_t n_fds = 0) {
    return send_message(fd, request, &v, sizeof(T), fds, n_fds);
}

/// Awaits GET_FEATURES' answer: the vhost library has handled every message before it.
Status await_features_reply(int fd, Clock::time_point deadline) {
    uint8_t buf[20];
    size_t got = 0;
    while (got < sizeof(buf)) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd p{fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0)
            return make_error(ErrorCode::kFailed, "the vhost library did not answer in time");
        const ssize_t r = recv(fd, buf + got, sizeof(buf) - got, 0);
        if (r <= 0)
            return make_error(ErrorCode::kFailed,
                              "the vhost library refused the replayed connection");
        got += static_cast<size_t>(r);
    }
    uint32_t header[3];
    std::memcpy(header, buf, sizeof(header));
    if (header[0] != kGetFeatures || (header[1] & kFlagReply) == 0 || header[2] != 8)
        return make_error(ErrorCode::kFailed, "the vhost library answered something else");
    return Ok{};
}

/// Plays the front-end's part on fd: the messages that set up a running device, in QEMU's
/// order, then GET_FEATURES to know that all were taken.
Status replay(int fd, const Meta& m, const std::vector<int>& fds) {
    if (Status s = send_value(fd, kSetProtocolFeatures, m.protocol); !s) return s;
    if (Status s = send_value(fd, kSetFeatures, m.features); !s) return s;
    struct {
        uint32_t n, padding;
        uint64_t r[kMaxRegions][4];
    } table{};
    table.n = static_cast<uint32_t>(m.regions.size());
    for (size_t i = 0; i < m.regions.size(); ++i) {
        const Region& g = m.regions[i];
        table.r[i][0] = g.gpa;
        table.r[i][1] = g.size;
        table.r[i][2] = g.uva;
        table.r[i][3] = g.offset;
    }
    if (Status s = send_message(fd, kSetMemTable, &table, 8 + table.n * 32, &fds[1], table.n); !s)
        return s;
    size_t next_fd = 1 + m.regions.size();
    for (const Ring& g : m.rings) {
        const uint32_t size[2] = {g.index, g.size};
        const uint32_t base[2] = {g.index, g.next};
        struct {
            uint32_t index, flags;
            uint64_t desc, used, avail, log;
        } addr{g.index, 0, g.desc, g.used, g.avail, g.log};
        if (Status s = send_value(fd, kSetVringNum, size); !s) return s;
        if (Status s = send_value(fd, kSetVringBase, base); !s) return s;
        if (Status s = send_value(fd, kSetVringAddr, addr); !s) return s;
        for (const uint32_t has : {kHasKick, kHasCall}) {
            const uint32_t request = has == kHasKick ? kSetVringKick : kSetVringCall;
            const uint64_t index = g.index;
            Status s = (g.fd_flags & has) != 0 ? send_value(fd, request, index, &fds[next_fd++], 1)
                                               : send_value(fd, request, index | kVringNoFd);
            if (!s) return s;
        }
    }
    if (m.features & kFeatureProtocolFeatures) {
        for (const Ring& g : m.rings) {
            const uint32_t enable[2] = {g.index, 1};
            if (Status s = send_value(fd, kSetVringEnable, enable); !s) return s;
        }
    }
    if (m.protocol & kProtocolStatus) {
        if (Status s = send_value(fd, kSetStatus, kStatusRunning); !s) return s;
    }
    const uint64_t none = 0;
    if (Status s = send_message(fd, kGetFeatures, &none, 0); !s) return s;
    return await_features_reply(fd, Clock::now() + kReplayWait);
}

/// The connections offered to this successor, by socket path.
std::map<std::string, HandedConnection>& offered() {
    static std::map<std::string, HandedConnection> m;
    return m;
}

}  // namespace

Result<HandedConnection> vhost_handover_capture(const std::string& path, int vid, bool server) {
    auto unsupported = [&](const std::string& why) -> Result<HandedConnection> {
        return make_error(ErrorCode::kFailed, "its connection is not handed over: " + why);
    };
    Meta m;
    if (rte_vhost_get_negotiated_features(vid, &m.features) != 0 ||
        rte_vhost_get_negotiated_protocol_features(vid, &m.protocol) != 0)
        return unsupported("no device");
    if (m.features & kFeatureLogAll) return unsupported("a migration is logging dirty pages");
    if (m.features & (kFeaturePacked | kFeatureIommu))
        return unsupported("packed rings or an IOMMU are not handed over");
    rte_vhost_memory* raw = nullptr;
    if (rte_vhost_get_mem_table(vid, &raw) != 0 || raw == nullptr)
        return unsupported("no memory table");
    std::unique_ptr<rte_vhost_memory, void (*)(void*)> mem(raw, free);
    if (mem->nregions == 0 || mem->nregions > kMaxRegions)
        return unsupported("too many memory regions");

    HandedConnection h;
    h.path = path;
    auto fail = [&](const std::string& why) {
        close_all(h.fds);
        return unsupported(why);
    };
    const int conn = find_connection(path, {}, server);
    if (conn < 0) return unsupported("its socket was not found");
    h.fds.push_back(fcntl(conn, F_DUPFD_CLOEXEC, 0));
    for (uint32_t i = 0; i < mem->nregions; ++i) {
        const rte_vhost_mem_region& r = mem->regions[i];
        m.regions.push_back(Region{r.guest_phys_addr, r.guest_user_addr, r.size,
                                   r.host_user_addr - reinterpret_cast<uint64_t>(r.mmap_addr)});
        h.fds.push_back(fcntl(r.fd, F_DUPFD_CLOEXEC, 0));
    }
    const uint16_t n = rte_vhost_get_vring_num(vid);
    for (uint16_t i = 0; i < n && i < kMaxRings; ++i) {
        rte_vhost_vring vr{};
        if (rte_vhost_get_vhost_vring(vid, i, &vr) != 0 || vr.desc == nullptr) continue;
        uint16_t avail = 0;
        uint16_t used = 0;
        if (rte_vhost_get_vring_base(vid, i, &avail, &used) != 0) return fail("a ring's index");
        if (avail != used) return fail("descriptors in flight");
        Ring g{i, vr.size, avail, 0, 0, 0, 0, vr.log_guest_addr};
        if (!to_qemu_address(*mem, reinterpret_cast<uint64_t>(vr.desc), &g.desc) ||
            !to_qemu_address(*mem, reinterpret_cast<uint64_t>(vr.avail), &g.avail) ||
            !to_qemu_address(*mem, reinterpret_cast<uint64_t>(vr.used), &g.used))
            return fail("a ring outside the guest's memory");
        if (vr.kickfd >= 0) {
            g.fd_flags |= kHasKick;
            h.fds.push_back(fcntl(vr.kickfd, F_DUPFD_CLOEXEC, 0));
        }
        if (vr.callfd >= 0) {
            g.fd_flags |= kHasCall;
            h.fds.push_back(fcntl(vr.callfd, F_DUPFD_CLOEXEC, 0));
        }
        m.rings.push_back(g);
    }
    if (m.rings.empty()) return fail("no ring set up");
    if (std::find(h.fds.begin(), h.fds.end(), -1) != h.fds.end())
        return fail(std::string("dup: ") + strerror(errno));
    h.meta = encode(m);
    return h;
}

void vhost_handover_offer(std::vector<HandedConnection> connections) {
    for (HandedConnection& h : connections) {
        if (offered().count(h.path) != 0) {
            close_all(h.fds);  // one connection per socket
            continue;
        }
        std::string path = h.path;
        offered().emplace(std::move(path), std::move(h));
    }
}

/// A server-mode port's side of the replay: a connection to its own socket, once the library
/// accepted it (*lib: the library's end). @return the front-end's end, or -1
int connect_to_self(const std::string& path, const std::vector<int>& skip, int* lib) {
    const auto deadline = Clock::now() + kReplayWait;
    auto conn = transport_connect("unix:" + path, deadline);
    if (!conn) return -1;
    const int fd = *conn;
    // The library's thread accepts it when it next polls the listening socket.
    vhost_events_wake();
    while ((*lib = find_connection(path, skip, true)) < 0 && Clock::now() < deadline) usleep(1000);
    if (*lib < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

Result<bool> vhost_handover_adopt(const std::string& path, bool server) {
    auto it = offered().find(path);
    if (it == offered().end()) return false;
    HandedConnection h = std::move(it->second);
    offered().erase(it);
    auto meta = decode(h);
    auto fail = [&](const Error& e) -> Result<bool> {
        close_all(h.fds);  // the front-end sees the close and takes the library's connection
        return e;
    };
    if (!meta) return fail(meta.error());
    int lib = -1;
    int front = -1;
    if (server) {
        // The library gets a connection to replay into by accepting one on its own socket.
        front = connect_to_self(path, h.fds, &lib);
        if (front < 0)
            return fail(make_error(ErrorCode::kFailed, "the port's socket took no connection"));
    } else {
        // The library's own connection, made as the port opened: it waits in QEMU's queue
        // (QEMU serves one connection at a time) and is swapped for a socketpair to replay
        // into.
        lib = find_connection(path, h.fds, false);
        if (lib < 0)
            return fail(
                make_error(ErrorCode::kFailed, "the port's vhost library has no connection"));
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
            return fail(
                make_error(ErrorCode::kFailed, std::string("socketpair: ") + strerror(errno)));
        front = pair[0];
        if (dup3(pair[1], lib, O_CLOEXEC) < 0) {
            close(pair[0]);
            close(pair[1]);
            return fail(make_error(ErrorCode::kFailed, std::string("dup3: ") + strerror(errno)));
        }
        close(pair[1]);
        // The library's thread polls its descriptors by number but sleeps on the old socket
        // until woken: wake it after each swap.
        vhost_events_wake();
    }
    Status replayed = replay(front, *meta, h.fds);
    if (!replayed) {
        close(front);  // the library closes its end (a client connects to the front-end anew)
        return fail(replayed.error());
    }
    const int kept = dup3(h.fds[0], lib, O_CLOEXEC);
    const int err = errno;
    vhost_events_wake();
    close(front);  // polls look the number up again on each wake-up: lib is the connection now
    if (kept < 0)
        return fail(make_error(ErrorCode::kFailed, std::string("dup3: ") + strerror(err)));
    close_all(h.fds);  // the library has its own copies now
    return true;
}

void vhost_handover_discard() {
    for (auto& [path, h] : offered()) {
        FERRY_LOG_INFO_IN(kPort, "vhost-user connection to %s not adopted: closed", path.c_str());
        close_all(h.fds);
    }
    offered().clear();
}

}  // namespace ferry
