// Fixture and helpers shared by the ConntrackShard unit tests (test_ct_shard.cc,
// test_ct_shard_nat.cc): protocol parameters, readable ct_state, a TCP flow that keeps its
// sequence numbers, and a shard with its own timeouts and zone table. Context: test.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/packet_parse.h"
#include "tests/unit/ct_frames.h"

namespace ferry {
namespace {

using namespace test_frames;

/// Every checksum of f recomputed in full (ct_frames.h). No frame here is built without a UDP
/// checksum, so a zero one is wrong: a computed 0 must be sent as 0xffff.
inline ::testing::AssertionResult checksums_ok(const Bytes& f) {
    return checksums_match(f, ZeroUdpChecksum::kWrong);
}

/// ct_state as OVS writes it ("+trk+est+rpl"), for readable failures.
inline std::string st(uint8_t s) {
    std::string r;
    if (s & kCtTracked) r += "+trk";
    if (s & kCtNew) r += "+new";
    if (s & kCtEstablished) r += "+est";
    if (s & kCtRelated) r += "+rel";
    if (s & kCtReply) r += "+rpl";
    if (s & kCtInvalid) r += "+inv";
    return r;
}

CtTuple tuple(uint8_t proto, const Addr& src, uint16_t sport, const Addr& dst, uint16_t dport,
              uint16_t zone = 0, uint8_t version = 4) {
    CtTuple t{};
    std::memcpy(t.src, src.data(), 16);
    std::memcpy(t.dst, dst.data(), 16);
    t.sport = sport;
    t.dport = dport;
    t.zone = zone;
    t.proto = proto;
    t.ip_version = version;
    return t;
}

inline NatSpec nat_spec(NatSpec::Kind kind, const Addr& lo, const Addr& hi, uint16_t port_min,
                        uint16_t port_max, uint8_t version = 4) {
    NatSpec s{};
    s.kind = kind;
    s.ip_version = version;
    s.port_min = port_min;
    s.port_max = port_max;
    std::memcpy(s.addr_min, lo.data(), 16);
    std::memcpy(s.addr_max, hi.data(), 16);
    return s;
}

inline CtParams track(uint16_t zone = 0) {
    CtParams p;
    p.zone = zone;
    return p;
}

inline CtParams commit(uint16_t zone = 0) {
    CtParams p = track(zone);
    p.commit = true;
    return p;
}

/// ct(commit, nat(spec)): a new connection gets the binding, an existing one is translated.
inline CtParams commit_nat(const NatSpec* spec, uint16_t zone = 0) {
    CtParams p = commit(zone);
    p.nat = true;
    p.spec = spec;
    return p;
}

/// ct(nat): packets of connections with a binding are translated.
inline CtParams nat(uint16_t zone = 0) {
    CtParams p = track(zone);
    p.nat = true;
    return p;
}

/// The live connections a shard counts by kind, redirects included: must equal its table size.
inline uint64_t counted_entries(const CtShardCounters& c) {
    uint64_t n = c.udp + c.icmp + c.other + c.redirects;
    for (uint64_t v : c.by_tcp_state) n += v;
    return n;
}

inline uint64_t tcp_count(const CtShardCounters& c, TcpState s) {
    return c.by_tcp_state[static_cast<size_t>(s)];
}

/// A TCP connection's endpoints and initial sequence numbers, and the frames of its handshake.
struct TcpFlow {
    Addr client = kClient4;
    uint16_t cport = 40000;
    Addr server = kServer4;
    uint16_t sport = 80;
    uint8_t version = 4;
    uint32_t c_isn = 1000;
    uint32_t s_isn = 500000;

    Bytes from_client(uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& data = {}) const {
        return tcp_frame(client, cport, server, sport, seq, ack, flags, data, version);
    }
    Bytes from_server(uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& data = {}) const {
        return tcp_frame(server, sport, client, cport, seq, ack, flags, data, version);
    }
    Bytes syn() const { return from_client(kSyn, c_isn, 0); }
    Bytes syn_ack() const { return from_server(kSyn | kAck, s_isn, c_isn + 1); }
    Bytes ack() const { return from_client(kAck, c_isn + 1, s_isn + 1); }
    CtTuple orig(uint16_t zone = 0) const {
        return tuple(kTcp, client, cport, server, sport, zone, version);
    }
};

// ---- Fixture ----------------------------------------------------------------------------------

class CtShardTest : public ::testing::Test {
protected:
    void SetUp() override {
        shard_ = make_shard(1024, 0, 1);
        ASSERT_NE(shard_, nullptr);
    }

    std::unique_ptr<ConntrackShard> make_shard(uint32_t capacity, uint16_t worker,
                                               uint16_t n_workers) {
        return ConntrackShard::create(capacity, worker, n_workers, zones_.get(), &timeouts_);
    }

    struct Out {
        CtVerdict verdict = CtVerdict::kContinue;
        FlowKey key{};
        uint8_t state() const { return key.ct_state; }
    };

    /// Parses f and tracks it on shard s (default: the fixture's), letting NAT rewrite f.
    Out run(Bytes& f, const CtParams& p, uint64_t now_ms, ConntrackShard* s = nullptr) {
        Out o;
        Parsed parsed;
        if (!parse(f, &parsed)) {
            ADD_FAILURE() << "test frame does not parse";
            return o;
        }
        o.key = parsed.key;
        o.verdict = (s ? s : shard_.get())
                        ->process(f.data(), static_cast<uint32_t>(f.size()), parsed.layout, &o.key,
                                  p, now_ms);
        return o;
    }
    Out run(Bytes&& f, const CtParams& p, uint64_t now_ms, ConntrackShard* s = nullptr) {
        return run(f, p, now_ms, s);
    }

    /// The entry holding t on shard s, and which of its tuples matched; nullptr when none.
    const CtEntry* find(const CtTuple& t, unsigned* dir = nullptr,
                        const ConntrackShard* s = nullptr) const {
        const CtTable& table = (s ? s : shard_.get())->table();
        const CtRef r = table.lookup(t);
        if (!r.found()) return nullptr;
        if (dir) *dir = r.dir;
        return &table.entry(r.index);
    }
    uint32_t index_of(const CtTuple& t, const ConntrackShard* s = nullptr) const {
        return (s ? s : shard_.get())->table().lookup(t).index;
    }

    /// Runs the three-way handshake of f at now_ms; returns the entry.
    const CtEntry* handshake(const TcpFlow& f, uint64_t now_ms = 0, uint16_t zone = 0) {
        EXPECT_EQ(run(f.syn(), commit(zone), now_ms).verdict, CtVerdict::kContinue);
        run(f.syn_ack(), track(zone), now_ms);
        run(f.ack(), track(zone), now_ms);
        const CtEntry* e = find(f.orig(zone));
        EXPECT_NE(e, nullptr);
        if (e != nullptr) {
            EXPECT_EQ(e->tcp.state, TcpState::kEstablished);
        }
        return e;
    }

    uint32_t zone_count(uint16_t z) const { return zones_->zones[z].count.load(); }

    CtTimeouts timeouts_;  // shards keep a pointer: tests may change values at any time
    std::unique_ptr<CtZoneTable> zones_ = std::make_unique<CtZoneTable>();
    std::unique_ptr<ConntrackShard> shard_;
};

}  // namespace
}  // namespace ferry
