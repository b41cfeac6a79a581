// Connections moved between two ferryd processes, which hash with different secret keys (a
// migration to another host, a live upgrade to a successor). The source tracks TCP, UDP and
// SNAT connections in four shards under key A, writes them as a stream, and the target reads the
// stream into four fresh shards under key B, placing each connection as the target's installer
// does (owner = ct_owner under B).
//
// Expects every connection found by both of its tuples in the shard that owns it under B, with
// a redirect on the worker its reply hashes to when that is another (NAT), many connections on
// another worker than under A (so placement really was recomputed), no key word of the source in
// the stream, and the same connections placed under B writing the very same stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/hash_key.h"
#include "dataplane/ip_proto.h"
#include "migrate/ct_convert.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"

namespace ferry {
namespace {

constexpr uint16_t kWorkers = 4;
constexpr uint32_t kConnections = 3000;

HashKeys keys_from(uint64_t seed) {
    HashKeys k{};
    auto* w = reinterpret_cast<uint64_t*>(&k);
    for (size_t i = 0; i < sizeof(k) / 8; ++i) w[i] = (seed + i) * 0x9e3779b97f4a7c15ULL ^ 0x5555;
    return k;
}

CtTuple v4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto) {
    CtTuple t{};
    std::memcpy(t.src, &src, 4);
    std::memcpy(t.dst, &dst, 4);
    t.sport = sport;
    t.dport = dport;
    t.proto = proto;
    t.ip_version = 4;
    t.zone = 1;
    return t;
}

/// The source's connections: every third one SNATed to 192.0.2.1 (its reply tuple then differs
/// from the reversed original, and may hash to another worker).
std::vector<CtEntry> connections() {
    std::vector<CtEntry> out;
    for (uint32_t i = 0; i < kConnections; ++i) {
        CtEntry e{};
        const uint8_t proto = i % 2 ? kProtoTcp : kProtoUdp;
        e.tuple[0] = v4(0x0a000000u + i, 0x08080808u + (i % 7), static_cast<uint16_t>(30000 + i),
                        i % 5 ? 443 : 53, proto);
        e.tuple[1] = ct_tuple_reverse(e.tuple[0]);
        if (i % 3 == 0) {
            const uint32_t nat_ip = 0x010200c0u;  // 192.0.2.1, network order
            std::memcpy(e.tuple[1].dst, &nat_ip, 4);
            e.tuple[1].dport = static_cast<uint16_t>(20000 + i);
            e.flags |= kCtfSrcNat;
        }
        if (proto == kProtoTcp) e.tcp.state = TcpState::kEstablished;
        e.port[0] = e.port[1] = 0;
        out.push_back(e);
    }
    return out;
}

struct Switch {
    std::unique_ptr<CtZoneTable> zones = std::make_unique<CtZoneTable>();
    CtTimeouts timeouts;
    std::vector<std::unique_ptr<ConntrackShard>> shards;

    Switch() {
        for (uint16_t w = 0; w < kWorkers; ++w)
            shards.push_back(ConntrackShard::create(8192, w, kWorkers, zones.get(), &timeouts));
    }
    /// Places a connection as the installer does, then delivers redirect notices.
    /// @return false when it was refused
    bool place(const CtEntry& e) {
        const uint16_t w = ct_owner(e.tuple[0], kWorkers);
        if (shards[w]->install(e, 0, 60000) == kCtNone) return false;
        for (auto& s : shards) {
            for (unsigned k = 0; k < s->notice_count(); ++k)
                shards[s->notices()[k].to]->apply_notice(s->notices()[k], 0);
            s->clear_notices();
        }
        return true;
    }
};

/// Whether `pattern` occurs in `bytes`.
bool contains(const std::vector<uint8_t>& bytes, const void* pattern, size_t n) {
    const auto* p = static_cast<const uint8_t*>(pattern);
    return std::search(bytes.begin(), bytes.end(), p, p + n) != bytes.end();
}

/// The stream a switch holding `conns` (placed under the current keys) writes, connections in
/// tuple order (the order shards are walked in depends on placement, not the content).
std::vector<uint8_t> stream_of(const std::vector<CtEntry>& conns) {
    Switch src;
    for (const CtEntry& e : conns) EXPECT_TRUE(src.place(e));
    MigrationState state;
    state.stream_id = 42;
    state.ferryd_version = "0.1.0";
    state.hyperscan_version = "5.4.0";
    state.ports.push_back(MigratedPort{.name = "vm1", .mac = {2, 0, 0, 0, 0, 1}, .addresses = {}});
    const std::vector<uint16_t> stream_port = {0};
    for (auto& s : src.shards) {
        for (uint32_t i = s->table().next_live(0); i != kCtNone; i = s->table().next_live(i + 1)) {
            const CtEntry& e = s->table().entry(i);
            if (e.flags & kCtfRedirect) continue;  // a placement detail, never sent
            state.connections.push_back(connection_to_stream(e, 0, stream_port));
        }
    }
    EXPECT_EQ(state.connections.size(), conns.size());
    std::sort(state.connections.begin(), state.connections.end(),
              [](const MigratedConnection& x, const MigratedConnection& y) {
                  return std::memcmp(&x.orig, &y.orig, sizeof(CtTuple)) < 0;
              });
    return write_stream(state);
}

TEST(MigrationRekey, TargetWithAnotherKeyFindsEveryConnection) {
    const HashKeys key_a = keys_from(1);
    const HashKeys key_b = keys_from(1000);
    const std::vector<CtEntry> conns = connections();

    // Source, under key A.
    hash_keys_set(key_a);
    std::vector<uint16_t> owner_a;
    for (const CtEntry& e : conns) owner_a.push_back(ct_owner(e.tuple[0], kWorkers));
    const std::vector<uint8_t> stream = stream_of(conns);

    // Nothing of A is on the wire: no key word, and the same connections placed under B write
    // the very same bytes.
    for (const SipKey& k : {key_a.ct_table, key_a.ct_owner, key_a.nat}) {
        EXPECT_FALSE(contains(stream, &k.k0, 8));
        EXPECT_FALSE(contains(stream, &k.k1, 8));
    }
    hash_keys_set(key_b);
    EXPECT_TRUE(stream_of(conns) == stream);

    // Target, under key B.
    Result<MigrationState> got = read_stream(stream.data(), stream.size());
    ASSERT_TRUE(got) << got.error().message;
    ASSERT_EQ(got->connections.size(), conns.size());
    Switch dst;
    const std::vector<uint16_t> local_port = {0};
    for (const MigratedConnection& c : got->connections)
        ASSERT_TRUE(dst.place(connection_from_stream(c, local_port)));

    unsigned moved = 0, redirected = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
        const CtTuple& orig = conns[i].tuple[0];
        const CtTuple& reply = conns[i].tuple[1];
        const uint16_t owner = ct_owner(orig, kWorkers);
        moved += owner != owner_a[i];
        const CtRef o = dst.shards[owner]->table().lookup(orig);
        const CtRef r = dst.shards[owner]->table().lookup(reply);
        ASSERT_TRUE(o.found()) << "connection " << i;
        ASSERT_TRUE(r.found()) << "connection " << i;
        EXPECT_EQ(o.index, r.index);
        EXPECT_EQ(o.dir, 0);
        EXPECT_EQ(r.dir, 1);
        // A reply that reaches another worker first finds its way to the owner.
        const uint16_t reply_worker = ct_owner(reply, kWorkers);
        if (reply_worker != owner) {
            ++redirected;
            const CtRef fwd = dst.shards[reply_worker]->table().lookup(reply);
            ASSERT_TRUE(fwd.found()) << "connection " << i;
            const CtEntry& e = dst.shards[reply_worker]->table().entry(fwd.index);
            EXPECT_TRUE(e.flags & kCtfRedirect);
            EXPECT_EQ(e.redirect_owner, owner);
        }
    }
    // With 4 workers about 3/4 of the connections change worker under an unrelated key.
    EXPECT_GT(moved, conns.size() / 2);
    EXPECT_GT(redirected, 0u);
    hash_keys_set(kPublicHashKeys);
}

}  // namespace
}  // namespace ferry
