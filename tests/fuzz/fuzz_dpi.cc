// Fuzzes payload inspection with hostile segments and hostile imported stream state: the input
// is a program of operations on one tracked TCP connection (segments of either direction at
// any sequence number, imports of arbitrary bytes as a compressed stream, export/import round
// trips, removal and reopening). After every operation: // stream slots in use stay within bounds,
// exported state stays within the depth, and scanning goes on without a crash or a sanitizer
// report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/packet_parse.h"

namespace {

using ferry::CtTuple;

constexpr uint32_t kDepth = 512;

void check(bool ok) {
    if (!ok) std::abort();
}

/// An Ethernet + IPv4 + TCP frame (checksums zero: neither tracking nor inspection reads them).
std::vector<uint8_t> frame(bool reply, uint32_t seq, uint8_t flags, const uint8_t* data,
                           size_t len) {
    std::vector<uint8_t> f(14 + 20 + 20 + len, 0);
    f[12] = 0x08;
    uint8_t* ip = f.data() + 14;
    ip[0] = 0x45;
    const size_t total = 40 + len;
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[8] = 64;
    ip[9] = 6;
    const uint8_t a[4] = {10, 0, 0, 1}, b[4] = {10, 0, 0, 2};
    std::memcpy(ip + 12, reply ? b : a, 4);
    std::memcpy(ip + 16, reply ? a : b, 4);
    uint8_t* tcp = ip + 20;
    const uint16_t sp = reply ? 80 : 40000, dp = reply ? 40000 : 80;
    tcp[0] = static_cast<uint8_t>(sp >> 8);
    tcp[1] = static_cast<uint8_t>(sp);
    tcp[2] = static_cast<uint8_t>(dp >> 8);
    tcp[3] = static_cast<uint8_t>(dp);
    for (int i = 0; i < 4; ++i) tcp[4 + i] = static_cast<uint8_t>(seq >> (24 - 8 * i));
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14] = tcp[15] = 0xff;
    if (len) std::memcpy(tcp + 20, data, len);
    return f;
}

struct World {
    ferry::CtTimeouts timeouts;
    // Shared by every input (1.5 MB): no zone has a limit, so counts left behind do not matter.
    static inline std::unique_ptr<ferry::CtZoneTable> zones =
        std::make_unique<ferry::CtZoneTable>();
    std::unique_ptr<ferry::ConntrackShard> shard;
    std::unique_ptr<ferry::DpiWorker> dpi;
    ferry::DpiVersion* version = nullptr;
    uint64_t fed[2] = {0, 0};

    World() {
        zones->zones[0].liberal = 1;  // any segment is tracked: inspection is what is fuzzed
        shard = ferry::ConntrackShard::create(64, 0, 1, zones.get(), &timeouts);
        dpi = ferry::DpiWorker::create(0, 4, 64, kDepth);
        shard->set_remove_hook(&ferry::DpiWorker::remove_hook, dpi.get());
        version = shared_version();
    }

    /// One generation for every input: a fresh DpiWorker resets each slot's streams on first use.
    static ferry::DpiVersion* shared_version() {
        static std::unique_ptr<ferry::DpiVersion> v = [] {
            std::vector<ferry::DpiPattern> ps(3);
            ps[0].id = 1, ps[0].regex = "ab.{0,8}cd", ps[0].action = ferry::DpiVerdictKind::kAlert;
            ps[1].id = 2, ps[1].regex = "zzz", ps[1].action = ferry::DpiVerdictKind::kDrop;
            ps[2].id = 3, ps[2].regex = "m[0-9]+k", ps[2].action = ferry::DpiVerdictKind::kMark;
            ps[2].mark = 5;
            ferry::DpiCompileError err;
            std::shared_ptr<const ferry::DpiDatabase> db = ferry::DpiDatabase::compile(ps, &err);
            check(db != nullptr);
            std::string why;
            auto out = ferry::DpiVersion::create(db, 1, 1, 4, &why);
            check(out != nullptr);
            return out;
        }();
        return v.get();
    }

    /// Tracks and inspects one frame; returns the connection's index (kCtNone if untracked).
    uint32_t run(std::vector<uint8_t> f) {
        ferry::FlowKey key;
        ferry::PacketLayout layout;
        if (ferry::parse_frame(f.data(), static_cast<uint32_t>(f.size()), 1, &key, &layout))
            return ferry::kCtNone;
        ferry::CtParams p;
        p.commit = true;
        ferry::CtPacketState st;
        if (shard->process(f.data(), static_cast<uint32_t>(f.size()), layout, &key, p, 1000,
                           nullptr, &st) != ferry::CtVerdict::kContinue)
            return ferry::kCtNone;
        dpi->inspect(*version, *shard, st, f.data(), static_cast<uint32_t>(f.size()), layout, &key,
                     1000);
        dpi->clear_alerts();
        return st.index;
    }

    uint32_t conn() {
        CtTuple t{};
        const uint8_t a[4] = {10, 0, 0, 1}, b[4] = {10, 0, 0, 2};
        std::memcpy(t.src, a, 4);
        std::memcpy(t.dst, b, 4);
        t.sport = 40000;
        t.dport = 80;
        t.proto = 6;
        t.ip_version = 4;
        const ferry::CtRef r = shard->table().lookup(t);
        return r.found() ? r.index : ferry::kCtNone;
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    World w;
    w.run(frame(false, 99, 0x02, nullptr, 0));  // SYN
    size_t i = 0;
    while (i + 4 <= size) {
        const uint8_t op = data[i] & 3;
        const bool reply = (data[i] & 4) != 0;
        const uint32_t seq = 100u + static_cast<uint32_t>(data[i + 1]) * 7u;
        const size_t len = std::min<size_t>(data[i + 2] % 64, size - i - 4);
        const uint8_t* body = data + i + 4;
        i += 4 + len;
        const uint32_t idx = w.conn();
        switch (op) {
            case 0:
                w.run(frame(reply, seq, 0x18, body, len));
                break;
            case 1: {
                if (idx == ferry::kCtNone) break;
                ferry::DpiStreamState s;
                s.db_hash = (data[i - len - 1] & 1) ? w.version->database().hash() : 0;
                s.streams[reply ? 1 : 0].assign(body, body + len);
                s.seen[0] = seq;
                s.next_seq[0] = seq;
                s.dir_state[0] = data[i - len - 1];
                w.dpi->import_state(*w.version, idx, s);
                break;
            }
            case 2: {
                if (idx == ferry::kCtNone) break;
                ferry::DpiStreamState s;
                if (w.dpi->export_state(*w.version, idx, &s)) {
                    check(s.seen[0] <= kDepth && s.seen[1] <= kDepth);
                    w.dpi->import_state(*w.version, idx, s);
                }
                break;
            }
            case 3:
                if (idx != ferry::kCtNone) w.shard->remove(idx);
                w.run(frame(false, 99, 0x02, nullptr, 0));
                break;
        }
        check(w.dpi->slots_in_use() <= w.dpi->slots());
        const uint32_t now = w.conn();
        if (now != ferry::kCtNone) {
            ferry::DpiStreamState s;
            if (w.dpi->export_state(*w.version, now, &s))
                check(s.seen[0] <= kDepth && s.seen[1] <= kDepth);
        }
    }
    return 0;
}
