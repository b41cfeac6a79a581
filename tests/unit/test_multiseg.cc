// Frames in several mbuf segments (jumbo frames with 2 KiB mbufs) through the fast path, driven
// directly on ring ports: the ports' MTU on the way in and out, the first-segment rule for
// headers, flood copies of chains, connection tracking (payload lengths and checksums over the
// whole chain), NAT (incremental checksums right for the whole chain) and payload inspection of
// a pattern across a segment boundary. Frames go in as chains cut where each test says and come
// out of the tx rings as whole byte vectors; every test ends with no mbuf left in use.
#include <rte_mbuf.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/rule_config.h"
#include "dataplane/classifier.h"
#include "dataplane/conntrack/ct_checksum_mbuf.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/dpi/dpi_database.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/dpi/dpi_version.h"
#include "dataplane/flow_cache.h"
#include "dataplane/pipeline.h"
#include "tests/unit/ct_frames.h"
#include "tests/unit/ring_switch_fixture.h"

namespace ferry {
namespace {

using nlohmann::json;
using namespace test_frames;  // NOLINT(google-build-using-namespace)
using Sizes = std::vector<uint16_t>;

constexpr uint16_t kJumboMtu = 9000;
// Segment cuts: DPDK's 2 KiB data room as PMDs fill it, and odd sizes that put segment
// boundaries inside headers' neighbours, words and patterns.
const Sizes kFull = {2048, 2048, 2048, 2048};
const Sizes kOdd = {101, 1001, 3, 2047, 777, 1};

/// A UDP/IPv4 frame whose IP packet is ip_len bytes (payload counting up), with its checksum.
Bytes udp_of_ip_len(size_t ip_len, const Addr& src = kClient4, const Addr& dst = kServer4) {
    return build(l4_spec(4, kUdp, src, dst, udp(4000, 53, pattern(ip_len - 20 - 8, 0x11))));
}

/// Frame f with byte at flipped (its checksums left as they were).
Bytes corrupt(Bytes f, size_t at) {
    f[at] ^= 0x5a;
    return f;
}

json rule(uint64_t id, int priority, json match, json actions, int table = 0) {
    return {{"id", id},
            {"table", table},
            {"priority", priority},
            {"match", match},
            {"actions", actions}};
}

class MultisegTest : public testing::RingSwitchTest {
protected:
    void SetUp() override {
        RingSwitchTest::SetUp();
        for (uint16_t p = 0; p < kPorts; ++p) table_.ports[p].mtu = kJumboMtu;
        cache_ = FlowCache::create(1024);
        counters_.assign(64, RuleCounters{});
        w_->flow_cache = cache_.get();
        w_->rule_counters = counters_.data();
        w_->rule_slots = 64;
        shard_ = ConntrackShard::create(1024, 0, 1, zones_.get(), &timeouts_);
        ASSERT_NE(shard_, nullptr);
        w_->ct = shard_.get();
        w_->ct_clock = &ct_clock_;
        w_->n_workers = 1;
        w_->now_ms = 1000;
    }

    void TearDown() override {
        for (uint16_t p = 0; p < kPorts; ++p) drain(p);
        EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u) << "an mbuf of a chain leaked";
        RingSwitchTest::TearDown();
    }

    /// Compiles rules (ports p0..p3) into the classifier snapshot the pipeline runs.
    void install(const std::vector<json>& rules) {
        RuleContext ctx;
        ctx.port_slot = [](const std::string& n) -> std::optional<uint16_t> {
            if (n.size() == 2 && n[0] == 'p' && n[1] >= '0' && n[1] < '0' + kPorts)
                return static_cast<uint16_t>(n[1] - '0');
            return std::nullopt;
        };
        ctx.meter_exists = [](uint32_t) { return false; };
        std::vector<CompiledRule> entries;
        for (size_t i = 0; i < rules.size(); ++i) {
            auto spec = parse_rule(rules[i], ctx, "rule");
            ASSERT_TRUE(spec.ok()) << spec.error().message;
            for (CompiledRule e : spec->entries) {
                e.index = static_cast<uint32_t>(i + 1);
                entries.push_back(e);
            }
        }
        cls_ = Classifier::build(entries, ++generation_);
    }

    /// Inspection with the given patterns, published as the control thread would.
    void enable_dpi(const std::vector<DpiPattern>& patterns) {
        DpiCompileError err;
        auto db = DpiDatabase::compile(patterns, &err);
        ASSERT_NE(db, nullptr) << err.message;
        std::string why;
        version_ = DpiVersion::create(std::move(db), 1, 1, 64, &why);
        ASSERT_NE(version_, nullptr) << why;
        dpi_ = DpiWorker::create(0, 64, 1024, 1 << 20);
        shard_->set_remove_hook(&DpiWorker::remove_hook, dpi_.get());
        published_dpi_.store(version_.get());
        w_->dpi = dpi_.get();
        w_->dpi_version = &published_dpi_;
    }

    /// Runs frames, each cut into segments as sizes says, through the pipeline from in_port
    /// (the bridge when no rules are installed) and flushes the tx buffers.
    void send(uint16_t in_port, const std::vector<Bytes>& frames, const Sizes& sizes) {
        std::vector<rte_mbuf*> pkts;
        for (const Bytes& f : frames) pkts.push_back(chain(f, sizes));
        pipeline_burst(*w_, table_, cls_.get(), in_port, pkts.data(),
                       static_cast<uint16_t>(pkts.size()));
        worker_flush_tx(*w_, table_);
    }

    void send(uint16_t in_port, const Bytes& f, const Sizes& sizes) {
        send(in_port, std::vector<Bytes>{f}, sizes);
    }

    std::unique_ptr<FlowCache> cache_;
    std::vector<RuleCounters> counters_;
    std::unique_ptr<Classifier> cls_;
    uint64_t generation_ = 0;
    std::unique_ptr<CtZoneTable> zones_ = std::make_unique<CtZoneTable>();
    CtTimeouts timeouts_;
    CtClock ct_clock_;
    std::unique_ptr<ConntrackShard> shard_;
    std::unique_ptr<DpiVersion> version_;
    std::unique_ptr<DpiWorker> dpi_;
    std::atomic<DpiVersion*> published_dpi_{nullptr};
};

// ---- Bridge, MTU and the first-segment rule ----------------------------------------------------

TEST_F(MultisegTest, BridgeFloodsChainsOf1500And9000BytesUnchanged) {
    // Broadcast, so the bridge floods: two copies (rte_pktmbuf_copy of a chain) and the original.
    Bytes small = udp_of_ip_len(1500);
    Bytes jumbo = udp_of_ip_len(kJumboMtu);
    small[0] = jumbo[0] = 0xff;  // a group address: flooded, never learned as a destination
    send(0, {small, jumbo}, kFull);
    send(0, jumbo, kOdd);
    for (uint16_t p = 1; p < kPorts; ++p)
        EXPECT_EQ(drain(p), (std::vector<Bytes>{small, jumbo, jumbo})) << "port " << p;
    EXPECT_EQ(w_->port_counters[0].drops[static_cast<size_t>(DropReason::kMtuExceeded)], 0u);
}

TEST_F(MultisegTest, FrameAboveTheIngressMtuIsDroppedAndCounted) {
    // Sends an L3 packet one byte above p0's MTU, then one of exactly the MTU; expects the first
    // dropped as mtu_exceeded on p0 and the second flooded.
    Bytes over = udp_of_ip_len(kJumboMtu + 1);
    Bytes fits = udp_of_ip_len(kJumboMtu);
    over[0] = fits[0] = 0xff;
    send(0, {over, fits}, kFull);
    EXPECT_EQ(drops(0, DropReason::kMtuExceeded), 1u);
    for (uint16_t p = 1; p < kPorts; ++p) EXPECT_EQ(drain(p), std::vector<Bytes>{fits});
}

TEST_F(MultisegTest, FrameAboveTheEgressMtuIsDroppedOnThatPort) {
    // p1 has the default MTU 1500: a 9000-byte packet flooded from p0 reaches p2 and p3 only,
    // and counts mtu_exceeded on p1; a 1500-byte one reaches all three.
    table_.ports[1].mtu = 1500;
    Bytes jumbo = udp_of_ip_len(kJumboMtu);
    Bytes small = udp_of_ip_len(1500);
    jumbo[0] = small[0] = 0xff;
    send(0, {jumbo, small}, kFull);
    EXPECT_EQ(drops(1, DropReason::kMtuExceeded), 1u);
    EXPECT_EQ(drops(0, DropReason::kMtuExceeded), 0u);
    EXPECT_EQ(drain(1), std::vector<Bytes>{small});
    EXPECT_EQ(drain(2), (std::vector<Bytes>{jumbo, small}));
    EXPECT_EQ(drain(3), (std::vector<Bytes>{jumbo, small}));
}

TEST_F(MultisegTest, VlanTagsDoNotCountAgainstTheMtu) {
    // A tagged frame carrying an L3 packet of exactly the MTU: 9,018 bytes on the wire.
    PacketSpec s = l4_spec(4, kUdp, kClient4, kServer4, udp(4000, 53, pattern(kJumboMtu - 28)));
    s.vlan = true;
    Bytes tagged = build(s);
    tagged[0] = 0xff;
    ASSERT_EQ(tagged.size(), 14u + 4 + kJumboMtu);
    send(0, tagged, kFull);
    EXPECT_EQ(drops(0, DropReason::kMtuExceeded), 0u);
    EXPECT_EQ(drain(1), std::vector<Bytes>{tagged});
}

TEST_F(MultisegTest, HeadersRunningPastTheFirstSegmentAreDroppedAsSplit) {
    // The first segment ends inside the IPv4 header (20 bytes: Ethernet + 6), then inside the
    // UDP header (40 bytes); a first segment holding all headers (42 bytes) is fine.
    Bytes f = udp_of_ip_len(3000);
    f[0] = 0xff;
    send(0, f, Sizes{20});
    send(0, f, Sizes{40});
    EXPECT_EQ(drops(0, DropReason::kSplitHeaders), 2u);
    EXPECT_TRUE(drain(1).empty());
    send(0, f, Sizes{42});
    EXPECT_EQ(drain(1), std::vector<Bytes>{f});
}

TEST_F(MultisegTest, PortSecurityPassesAllowedJumboFramesAndRefusesOthers) {
    // p0 has port security: its MAC with 10.0.0.1. A 9000-byte packet from 10.0.0.1 (a chain)
    // is kept and flooded unchanged; the same from 10.0.0.2 is dropped as port_sec_ip, not as
    // a malformed frame.
    PortSecurity& sec = table_.ports[0].security;
    sec.enabled = true;
    sec.count = 1;
    sec.allowed[0].mac = {0x02, 0, 0, 0, 0, 0x01};
    sec.allowed[0].family = 4;
    sec.allowed[0].prefix = 32;
    std::copy(kClient4.begin(), kClient4.end(), sec.allowed[0].ip.begin());
    Bytes ok = udp_of_ip_len(kJumboMtu);
    Bytes spoofed = udp_of_ip_len(kJumboMtu, kClient4b);
    ok[0] = spoofed[0] = 0xff;
    rte_mbuf* pkts[] = {chain(ok, kFull), chain(spoofed, kFull)};
    const uint16_t kept = port_security_filter(*w_, sec, 0, pkts, 2);
    ASSERT_EQ(kept, 1);
    EXPECT_EQ(drops(0, DropReason::kPortSecIp), 1u);
    pipeline_burst(*w_, table_, nullptr, 0, pkts, kept);
    worker_flush_tx(*w_, table_);
    EXPECT_EQ(drain(1), std::vector<Bytes>{ok});
}

// ---- Connection tracking -----------------------------------------------------------------------

/// Firewall rules: track IPv4, drop +inv, send the rest from p0 to p1 and from p1 to p0.
std::vector<json> firewall() {
    return {rule(1, 10, {{"eth_type", "ipv4"}}, {"ct(commit,table=1)"}),
            rule(2, 20, {{"ct_state", "+trk+inv"}}, {"drop"}, 1),
            rule(3, 10, {{"in_port", "p0"}}, {"output:p1"}, 1),
            rule(4, 10, {{"in_port", "p1"}}, {"output:p0"}, 1)};
}

TEST_F(MultisegTest, UdpChecksumIsVerifiedAcrossEverySegment) {
    // Sends 9000-byte UDP packets cut at full and at odd sizes, intact and with one payload
    // byte changed in a later segment (the 4th of the full cut, the 5th of the odd one).
    // Expects the intact ones forwarded unchanged and the corrupted ones +inv and dropped,
    // as a contiguous corrupted packet is.
    install(firewall());
    const Bytes good = udp_of_ip_len(kJumboMtu);
    send(0, good, kFull);
    send(0, good, kOdd);
    EXPECT_EQ(drain(1), (std::vector<Bytes>{good, good}));
    const uint64_t invalid = shard_->counters().invalid;
    send(0, corrupt(good, 3 * 2048 + 17), kFull);
    send(0, corrupt(good, 101 + 1001 + 3 + 2047 + 5), kOdd);
    send(0, corrupt(good, 8999), kOdd);  // the last byte: the odd tail of the sum
    EXPECT_TRUE(drain(1).empty());
    EXPECT_EQ(drops(0, DropReason::kRuleDrop), 3u);
    EXPECT_EQ(shard_->counters().invalid, invalid + 3);
}

TEST_F(MultisegTest, SoftwareSumMatchesForEveryCutOfTheChain) {
    // ct_rx_csum_mbuf directly: a 1500-byte and a 9000-byte UDP packet, each cut at every
    // first-segment length from the headers' end on, with a second cut 1..3 bytes later, so
    // segment boundaries fall on even and odd offsets of the summed bytes. Intact: L4 good;
    // one byte changed past the cuts: L4 bad.
    for (size_t ip_len : {size_t{1500}, size_t{kJumboMtu}}) {
        const Bytes good = udp_of_ip_len(ip_len);
        const Bytes bad = corrupt(good, good.size() - 2);
        for (uint16_t first = 42; first < 42 + 64; ++first) {
            for (uint16_t second : {1, 2, 3}) {
                SCOPED_TRACE(std::to_string(ip_len) + " cut at " + std::to_string(first) + "+" +
                             std::to_string(second));
                for (const Bytes* f : {&good, &bad}) {
                    rte_mbuf* m = chain(*f, Sizes{first, second});
                    FlowKey k;
                    PacketLayout l;
                    ASSERT_FALSE(parse_mbuf(m, 0, &k, &l));
                    ASSERT_TRUE(l.segmented);
                    EXPECT_EQ(ct_rx_csum_mbuf(m, l, k, kCsumUnknown),
                              f == &good ? kCsumL4Good : kCsumL4Bad);
                    rte_pktmbuf_free(m);
                }
            }
        }
    }
}

TEST_F(MultisegTest, TcpTrackingCountsThePayloadOfTheWholeChain) {
    // A handshake, then a 9000-byte segment (8,960 bytes of payload) cut in five, then the
    // server's ACK of all 8,960 bytes and the next client segment. The ACK is only valid if
    // conntrack took the whole payload into the client's sent window. Expects every packet
    // forwarded (none +inv), byte for byte; then a copy of the data segment with its last
    // byte changed: +inv, dropped.
    install(firewall());
    const uint32_t c0 = 1000, s0 = 5000;
    const Bytes payload = pattern(kJumboMtu - 40, 0x33);
    const auto n = static_cast<uint32_t>(payload.size());
    const Bytes syn = tcp_frame(kClient4, 40000, kServer4, 80, c0 - 1, 0, kSyn);
    const Bytes synack = tcp_frame(kServer4, 80, kClient4, 40000, s0 - 1, c0, kSyn | kAck);
    const Bytes ack = tcp_frame(kClient4, 40000, kServer4, 80, c0, s0, kAck);
    const Bytes data = tcp_frame(kClient4, 40000, kServer4, 80, c0, s0, kPsh | kAck, payload);
    const Bytes data_ack = tcp_frame(kServer4, 80, kClient4, 40000, s0, c0 + n, kAck);
    const Bytes next =
        tcp_frame(kClient4, 40000, kServer4, 80, c0 + n, s0, kPsh | kAck, pattern(100));
    send(0, syn, kFull);
    send(1, synack, kFull);
    send(0, ack, kFull);
    send(0, data, kFull);
    send(1, data_ack, kFull);
    send(0, next, kOdd);
    EXPECT_EQ(drain(1), (std::vector<Bytes>{syn, ack, data, next}));
    EXPECT_EQ(drain(0), (std::vector<Bytes>{synack, data_ack}));
    EXPECT_EQ(drops(0, DropReason::kRuleDrop) + drops(1, DropReason::kRuleDrop), 0u);
    send(0, corrupt(data, data.size() - 1), kOdd);
    EXPECT_TRUE(drain(1).empty());
    EXPECT_EQ(drops(0, DropReason::kRuleDrop), 1u);
}

// ---- NAT ---------------------------------------------------------------------------------------

TEST_F(MultisegTest, NatRewritesHeadersAndKeepsTheWholeChainsChecksumsRight) {
    // SNAT of p0's traffic to 203.0.113.5: a 9000-byte UDP packet, a 9000-byte TCP SYN with
    // data and a 9000-byte echo request (the identifier may change), each cut at odd sizes.
    // Expects each out of p1 with the new source, every checksum right when recomputed over the
    // whole frame, and the payload past the headers unchanged.
    install({rule(1, 10, {{"in_port", "p0"}, {"eth_type", "ipv4"}},
                  {"ct(commit,nat(src=203.0.113.5),table=1)"}),
             rule(2, 10, json::object(), {"output:p1"}, 1)});
    const Bytes u = udp_of_ip_len(kJumboMtu);
    const Bytes t = tcp_frame(kClient4, 40001, kServer4, 80, 7, 0, kSyn, pattern(8960, 0x44));
    const Bytes e = build(l4_spec(4, kIcmp, kClient4, kServer4, icmp(8, 0, 77, 1, pattern(8972))));
    send(0, {u, t, e}, kOdd);
    const std::vector<Bytes> out = drain(1);
    ASSERT_EQ(out.size(), 3u);
    const Bytes* in[] = {&u, &t, &e};
    for (size_t i = 0; i < out.size(); ++i) {
        SCOPED_TRACE(i);
        ASSERT_EQ(out[i].size(), in[i]->size());
        EXPECT_EQ(carried(out[i]).src, kPublic4);
        EXPECT_EQ(carried(out[i]).dst, kServer4);
        EXPECT_TRUE(checksums_match(out[i], ZeroUdpChecksum::kWrong));
        // Headers end by byte 14 + 20 + 20; everything from the second segment on is payload.
        EXPECT_TRUE(std::equal(out[i].begin() + 101, out[i].end(), in[i]->begin() + 101));
    }
}

// ---- Payload inspection ------------------------------------------------------------------------

TEST_F(MultisegTest, DpiFindsAPatternThatStraddlesTwoSegments) {
    // Pattern "straddle-me" (drop). A TCP connection p0 -> p1 sends a 9000-byte segment whose
    // payload holds the pattern across the boundary between its 2nd and 3rd segments (full
    // cut: "strad" ends at byte 4096), after a clean 9000-byte segment. Expects the clean one
    // forwarded unchanged and the second dropped as dpi_drop, one match counted.
    enable_dpi({DpiPattern{1, "straddle-me", 0, DpiDirection::kBoth, DpiVerdictKind::kDrop, 0}});
    install({rule(1, 10, {{"eth_type", "ipv4"}}, {"ct(commit,table=1)"}),
             rule(2, 10, {{"in_port", "p0"}}, {"dpi", "output:p1"}, 1),
             rule(3, 10, {{"in_port", "p1"}}, {"dpi", "output:p0"}, 1)});
    const uint32_t c0 = 1000, s0 = 5000;
    send(0, tcp_frame(kClient4, 40002, kServer4, 80, c0 - 1, 0, kSyn), kFull);
    send(1, tcp_frame(kServer4, 80, kClient4, 40002, s0 - 1, c0, kSyn | kAck), kFull);
    send(0, tcp_frame(kClient4, 40002, kServer4, 80, c0, s0, kAck), kFull);
    drain(0);
    drain(1);

    const size_t payload_at = 14 + 20 + 20;
    Bytes text(kJumboMtu - 40, '.');
    const Bytes clean = tcp_frame(kClient4, 40002, kServer4, 80, c0, s0, kPsh | kAck, text);
    const std::string pat = "straddle-me";
    std::copy(pat.begin(), pat.end(), text.begin() + (2 * 2048 - 5 - payload_at));
    const auto n = static_cast<uint32_t>(text.size());
    const Bytes dirty = tcp_frame(kClient4, 40002, kServer4, 80, c0 + n, s0, kPsh | kAck, text);
    ASSERT_EQ(std::string(dirty.begin() + 4096 - 5, dirty.begin() + 4096), "strad");
    send(0, clean, kFull);
    send(0, dirty, kFull);
    EXPECT_EQ(drain(1), std::vector<Bytes>{clean});
    EXPECT_EQ(drops(0, DropReason::kDpiDrop), 1u);
    EXPECT_EQ(dpi_->counters().drops, 1u);
    EXPECT_EQ(dpi_->counters().bytes, 2u * n);
}

}  // namespace
}  // namespace ferry
