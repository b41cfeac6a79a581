// The rules pipeline (flow cache, classifier, actions) driven directly on ring ports: frames in,
// frames out of each port, counters before and after. Rules are written in the user's JSON form
// and compiled by the same parser ferryd uses.
#include <rte_cycles.h>

#include "control/rule_config.h"
#include "dataplane/classifier.h"
#include "dataplane/flow_cache.h"
#include "dataplane/meter.h"
#include "dataplane/pipeline.h"
#include "dataplane/vlan_edit.h"
#include "tests/unit/ring_switch_fixture.h"

namespace ferry {
namespace {

using nlohmann::json;
using testing::Frame;
using testing::kA;
using testing::kB;
using testing::kBcast;
using testing::make_frame;

class PipelineTest : public testing::RingSwitchTest {
protected:
    void SetUp() override {
        RingSwitchTest::SetUp();
        cache_ = FlowCache::create(1024);
        counters_.assign(64, RuleCounters{});
        w_->flow_cache = cache_.get();
        w_->rule_counters = counters_.data();
        w_->rule_slots = 64;
        w_->meters = &meters_;
    }

    /// Compiles rules (ports are named p0..p3, meter 1 exists) into a new classifier snapshot;
    /// rule i gets slot i + 1. With use_cache, table 0 also gets rules (never matching) of
    /// enough distinct masks that lookups go through the flow cache instead of straight to
    /// the classifier.
    void install(std::vector<json> rules, bool use_cache = false) {
        if (use_cache) {
            const char* fields[] = {"eth_src", "eth_dst", "vlan", "ip_proto", "l4_src", "l4_dst"};
            for (unsigned i = 0; i <= Classifier::kDirectSubtables; ++i) {
                json m = {{"eth_type", "0x88b5"}};
                std::string f = fields[i % 6];
                if (f == "eth_src" || f == "eth_dst") m[f] = "02:00:00:00:00:99";
                if (f == "vlan") m[f] = 99;
                if (f == "ip_proto" || f == "l4_src" || f == "l4_dst")
                    m = {{"ip_dst", "10.99.0.0/" + std::to_string(16 + i)}};
                rules.push_back(
                    {{"id", 100 + i}, {"priority", -100}, {"match", m}, {"actions", {"drop"}}});
            }
        }
        RuleContext ctx;
        ctx.port_slot = [](const std::string& n) -> std::optional<uint16_t> {
            if (n.size() == 2 && n[0] == 'p' && n[1] >= '0' && n[1] < '0' + kPorts)
                return static_cast<uint16_t>(n[1] - '0');
            return std::nullopt;
        };
        ctx.meter_exists = [](uint32_t id) { return id == 1; };
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
        ASSERT_EQ(cls_->direct(0), !use_cache);
    }

    void send(uint16_t in_port, const std::vector<Frame>& frames) {
        w_->now_tsc = rte_rdtsc();  // the worker loop's clock for this burst
        auto pkts = mbufs(frames);
        pipeline_burst(*w_, table_, cls_.get(), in_port, pkts.data(),
                       static_cast<uint16_t>(pkts.size()));
        worker_flush_tx(*w_, table_);
    }

    uint64_t hits(uint32_t slot) { return counters_[slot].packets; }

    std::unique_ptr<FlowCache> cache_;
    std::vector<RuleCounters> counters_;
    MeterSet meters_;
    std::unique_ptr<Classifier> cls_;
    uint64_t generation_ = 0;
};

json rule(uint64_t id, int priority, json match, json actions, int table = 0) {
    return {{"id", id},
            {"table", table},
            {"priority", priority},
            {"match", match},
            {"actions", actions}};
}

// Tests that hold for the direct classifier lookup (few subtables) and through the flow cache.
class PipelineBothPathsTest : public PipelineTest, public ::testing::WithParamInterface<bool> {};
INSTANTIATE_TEST_SUITE_P(DirectAndCached, PipelineBothPathsTest, ::testing::Bool());

TEST_F(PipelineTest, EmptyTableZeroIsTheBridge) {
    install({rule(1, 0, json::object(), {"drop"}, 1)});  // a rule, but not in table 0
    Frame f = make_frame(kBcast, kA);
    send(0, {f});
    for (uint16_t p = 1; p < kPorts; ++p) EXPECT_EQ(drain(p), std::vector<Frame>{f}) << p;
    EXPECT_EQ(learn(), 1u);
}

TEST_F(PipelineTest, OutputSendsTheFrameUnchangedAndCountsHits) {
    install({rule(1, 10, {{"in_port", "p0"}}, {"output:p2"})});
    Frame f = make_frame(kB, kA);
    send(0, {f, f, f});
    EXPECT_EQ(drain(2), (std::vector<Frame>{f, f, f}));
    EXPECT_TRUE(drain(1).empty());
    EXPECT_TRUE(drain(3).empty());
    EXPECT_EQ(hits(1), 3u);
    EXPECT_EQ(counters_[1].bytes, 3u * f.size());
    EXPECT_EQ(learn(), 0u);  // no `normal`, no learning
}

TEST_P(PipelineBothPathsTest, HigherPriorityWinsAndMissIsNoRule) {
    install({rule(1, 10, {{"eth_type", "ipv4"}}, {"output:p1"}),
             rule(2, 20, {{"eth_type", "ipv4"}, {"ip_dst", "10.0.0.2"}}, {"output:p3"})},
            GetParam());
    Frame to_2 = make_frame(kB, kA);  // 10.0.0.1 -> 10.0.0.2
    Frame arp = to_2;
    arp[12] = 0x08;
    arp[13] = 0x06;
    send(0, {to_2, arp});
    EXPECT_EQ(drain(3), std::vector<Frame>{to_2});
    EXPECT_TRUE(drain(1).empty());
    EXPECT_EQ(drops(0, DropReason::kNoRule), 1u);
    EXPECT_EQ(hits(2), 1u);
    EXPECT_EQ(hits(1), 0u);
}

TEST_P(PipelineBothPathsTest, GotoTableContinuesAndMissesThereDrop) {
    install({rule(1, 0, {{"in_port", "p0"}}, {"goto_table:1"}),
             rule(2, 0, {{"ip_dst", "10.0.0.2"}}, {"output:p2"}, 1)},
            GetParam());
    Frame hit = make_frame(kB, kA);
    Frame miss = hit;
    miss[33] = 9;  // ip_dst 10.0.0.9
    send(0, {hit, miss});
    EXPECT_EQ(drain(2), std::vector<Frame>{hit});
    EXPECT_EQ(drops(0, DropReason::kNoRule), 1u);
    EXPECT_EQ(hits(1), 2u);
    EXPECT_EQ(hits(2), 1u);
    send(0, {hit});  // again, now from the flow cache for both tables
    EXPECT_EQ(drain(2), std::vector<Frame>{hit});
    EXPECT_EQ(hits(2), 2u);
}

TEST_F(PipelineTest, MirrorCopiesAndProcessingGoesOn) {
    install({rule(1, 0, json::object(), {"mirror:p3", "output:p1"})});
    Frame f = make_frame(kB, kA);
    send(0, {f});
    EXPECT_EQ(drain(3), std::vector<Frame>{f});
    EXPECT_EQ(drain(1), std::vector<Frame>{f});
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);
}

TEST_F(PipelineTest, TwoOutputsSendTwoCopies) {
    install({rule(1, 0, json::object(), {"output:p1", "output:p2"})});
    Frame f = make_frame(kB, kA);
    send(0, {f});
    EXPECT_EQ(drain(1), std::vector<Frame>{f});
    EXPECT_EQ(drain(2), std::vector<Frame>{f});
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);
}

TEST_F(PipelineTest, VlanActionsEditTheFrame) {
    install({rule(1, 0, {{"in_port", "p0"}}, {"push_vlan:10", "output:p1"}),
             rule(2, 0, {{"in_port", "p1"}}, {"pop_vlan", "output:p0"}),
             rule(3, 0, {{"in_port", "p2"}}, {"set_vlan:30", "output:p3"})});
    send(0, {make_frame(kB, kA)});
    EXPECT_EQ(drain(1), std::vector<Frame>{make_frame(kB, kA, 10)});
    send(1, {make_frame(kB, kA, 10)});
    EXPECT_EQ(drain(0), std::vector<Frame>{make_frame(kB, kA)});
    send(2, {make_frame(kB, kA, 20), make_frame(kB, kA)});
    EXPECT_EQ(drain(3), (std::vector<Frame>{make_frame(kB, kA, 30), make_frame(kB, kA, 30)}));
}

TEST_F(PipelineTest, FloodSendsEverywhereElseUnchanged) {
    install({rule(1, 0, json::object(), {"flood"})});
    table_.ports[3].link_up = false;
    Frame f = make_frame(kB, kA, 42);
    send(1, {f});
    EXPECT_EQ(drain(0), std::vector<Frame>{f});
    EXPECT_EQ(drain(2), std::vector<Frame>{f});
    EXPECT_TRUE(drain(1).empty());
    EXPECT_TRUE(drain(3).empty());
}

TEST_F(PipelineTest, NormalLearnsAndBridges) {
    install({rule(1, 0, json::object(), {"normal"})});
    send(1, {make_frame(kBcast, kB)});
    EXPECT_EQ(learn(), 1u);
    for (uint16_t p = 0; p < kPorts; ++p) drain(p);
    Frame f = make_frame(kB, kA);
    send(0, {f});
    EXPECT_EQ(drain(1), std::vector<Frame>{f});
    EXPECT_TRUE(drain(2).empty());
}

TEST_F(PipelineTest, FewSubtablesSkipTheFlowCache) {
    install({rule(1, 0, {{"in_port", "p0"}}, {"output:p1"})});
    Frame f = make_frame(kB, kA);
    send(0, {f, f});
    EXPECT_EQ(drain(1).size(), 2u);
    EXPECT_EQ(w_->counters.cache_hits + w_->counters.cache_misses, 0u);
}

TEST_F(PipelineTest, DropActionIsCounted) {
    install({rule(1, 0, {{"in_port", "p0"}}, {"drop"})});
    send(0, {make_frame(kB, kA), make_frame(kB, kA)});
    EXPECT_EQ(drops(0, DropReason::kRuleDrop), 2u);
    for (uint16_t p = 0; p < kPorts; ++p) EXPECT_TRUE(drain(p).empty());
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);
}

TEST_F(PipelineTest, NewSnapshotIsNeverServedFromAStaleCacheEntry) {
    install({rule(1, 0, json::object(), {"output:p1"})}, true);
    Frame f = make_frame(kB, kA);
    send(0, {f});
    EXPECT_EQ(drain(1).size(), 1u);
    EXPECT_EQ(w_->counters.cache_misses, 1u);
    send(0, {f});
    EXPECT_EQ(drain(1).size(), 1u);
    EXPECT_EQ(w_->counters.cache_hits, 1u);
    install({rule(1, 0, json::object(), {"output:p2"})}, true);  // generation 2, same key
    send(0, {f});
    EXPECT_TRUE(drain(1).empty());
    EXPECT_EQ(drain(2).size(), 1u);
}

TEST_F(PipelineTest, MeterDropsWhatExceedsTheRate) {
    rte_meter_trtcm_params p{};
    p.cir = 1000;  // bytes per second: a burst of 64 frames cannot pass
    p.pir = 1000;
    p.cbs = 200;
    p.pbs = 200;
    ASSERT_EQ(rte_meter_trtcm_profile_config(&meters_.profiles[1], &p), 0);
    ASSERT_EQ(rte_meter_trtcm_config(&meters_.states[1], &meters_.profiles[1]), 0);
    meters_.present[1] = true;
    install({rule(1, 0, json::object(), {"meter:1", "output:p1"})});
    Frame f = make_frame(kB, kA);
    send(0, std::vector<Frame>(32, f));
    send(0, std::vector<Frame>(32, f));
    size_t passed = drain(1).size();
    uint64_t red = drops(0, DropReason::kMeter);
    EXPECT_GT(passed, 0u);
    EXPECT_GT(red, 50u);
    EXPECT_EQ(passed + red, 64u);
    EXPECT_EQ(meters_.red[1], red);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

class PipelineMarkTest : public PipelineTest {};

TEST_F(PipelineMarkTest, NicMarkNamesTheRuleAndSkipsTheLookups) {
    install({rule(1, 10, {{"in_port", "p0"}}, {"output:p1"}),
             rule(2, 5, {{"in_port", "p3"}}, {"output:p2"})},
            true);
    Frame f = make_frame(kB, kA);
    auto pkts = mbufs({f, f});
    // The NIC matched rule 2 (slot 2, mark 3) on the first frame; the second is unmarked.
    pkts[0]->ol_flags |= RTE_MBUF_F_RX_FDIR | RTE_MBUF_F_RX_FDIR_ID;
    pkts[0]->hash.fdir.hi = 3;
    pipeline_burst(*w_, table_, cls_.get(), 0, pkts.data(), 2);
    worker_flush_tx(*w_, table_);
    EXPECT_EQ(drain(2), std::vector<Frame>{f});  // by the mark, not by the key (in_port p0)
    EXPECT_EQ(drain(1), std::vector<Frame>{f});  // by the lookup
    EXPECT_EQ(w_->counters.cache_misses + w_->counters.cache_hits, 1u);
    EXPECT_EQ(hits(2), 1u);
    EXPECT_EQ(hits(1), 1u);
}

TEST_F(PipelineMarkTest, StaleMarkFallsBackToTheLookup) {
    install({rule(1, 10, {{"in_port", "p0"}}, {"output:p1"})}, true);
    Frame f = make_frame(kB, kA);
    auto pkts = mbufs({f});
    pkts[0]->ol_flags |= RTE_MBUF_F_RX_FDIR | RTE_MBUF_F_RX_FDIR_ID;
    pkts[0]->hash.fdir.hi = 40;  // a rule deleted after the NIC marked the frame
    pipeline_burst(*w_, table_, cls_.get(), 0, pkts.data(), 1);
    worker_flush_tx(*w_, table_);
    EXPECT_EQ(drain(1), std::vector<Frame>{f});
    EXPECT_EQ(w_->counters.cache_misses, 1u);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

/// A frame with a distinct flow key for each n (UDP ports and destination address vary).
Frame flow_frame(uint32_t n) {
    Frame f = make_frame(kB, kA);
    f[32] = static_cast<uint8_t>(n >> 16);
    f[33] = static_cast<uint8_t>(n >> 8);
    f[36] = static_cast<uint8_t>(n);
    f[37] = static_cast<uint8_t>(n >> 24);
    return f;
}

TEST_F(PipelineTest, ThrashingCacheInsertsOnlyAFractionOfMisses) {
    install({rule(1, 0, json::object(), {"output:p1"})}, true);
    uint32_t next = 0;
    auto send_flows = [&](uint32_t count, bool distinct) {
        for (uint32_t sent = 0; sent < count; sent += 32) {
            std::vector<Frame> burst;
            for (int i = 0; i < 32; ++i) burst.push_back(flow_frame(distinct ? next++ : i % 8));
            send(0, burst);
            drain(1);
        }
    };
    // Every packet a new flow: after the first window the cache counts as thrashing.
    send_flows(kCacheWindow, true);
    EXPECT_TRUE(w_->cache_thrashing);
    uint64_t inserts0 = cache_->stats().inserts;
    send_flows(kCacheWindow, true);
    uint64_t inserted = cache_->stats().inserts - inserts0;
    EXPECT_EQ(inserted, kCacheWindow / kThrashInsertEvery);
    // A working set of 8 flows: misses stop, and inserts are back to every miss.
    send_flows(2 * kCacheWindow, false);
    EXPECT_FALSE(w_->cache_thrashing);
    inserts0 = cache_->stats().inserts;
    send(0, {flow_frame(next++)});
    EXPECT_EQ(cache_->stats().inserts - inserts0, 1u);
    EXPECT_EQ(drain(1).size(), 1u);
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

/// An IPv6/UDP frame from kA to kB with a 4-byte payload; payload_len as the header claims.
Frame ipv6_frame(uint16_t payload_len = 12) {
    Frame f(kB, kB + 6);
    f.insert(f.end(), kA, kA + 6);
    f.insert(f.end(),
             {0x86, 0xdd, 0x60, 0, 0, 0, uint8_t(payload_len >> 8), uint8_t(payload_len), 17, 64});
    for (int i = 0; i < 32; ++i) f.push_back(i < 16 ? 0xfd : 0xfe);  // source, destination
    f.insert(f.end(), {0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 'f', 'e', 'r', 'y'});
    return f;
}

/// make_frame with its outer ethertype field replaced by tags (TPID, VID) and the frame's own
/// ethertype after them.
Frame tagged(std::vector<std::pair<uint16_t, uint16_t>> tags) {
    Frame base = make_frame(kB, kA);
    Frame f(base.begin(), base.begin() + 12);
    for (auto [tpid, vid] : tags)
        f.insert(f.end(), {uint8_t(tpid >> 8), uint8_t(tpid), uint8_t(vid >> 8), uint8_t(vid)});
    f.insert(f.end(), base.begin() + 12, base.end());
    return f;
}

/// Frames of every kind the parser tells apart, valid and not, one of each.
struct FrameMix {
    std::vector<Frame> valid;
    std::vector<std::pair<Frame, DropReason>> invalid;
};

FrameMix frame_mix() {
    FrameMix m;
    Frame ipv4 = make_frame(kB, kA);
    Frame arp = make_frame(kBcast, kA);
    arp[12] = 0x08;
    arp[13] = 0x06;
    arp.resize(14 + 28);
    Frame other = make_frame(kB, kA);  // an ethertype the parser does not look into
    other[12] = 0x88;
    other[13] = 0xb5;
    Frame fragment = make_frame(kB, kA);  // a non-first fragment: no transport header read
    fragment[20] = 0x00;
    fragment[21] = 0x10;
    m.valid = {ipv4,
               make_frame(kB, kA, 7),
               tagged({{0x88a8, 5}, {0x8100, 7}}),
               tagged({{0x8100, 0}}),
               arp,
               other,
               fragment,
               ipv6_frame()};

    Frame runt(ipv4.begin(), ipv4.begin() + 10);
    Frame cut_tag = tagged({{0x8100, 7}});
    cut_tag.resize(16);
    Frame long_ip = ipv4;  // IPv4 total length past the frame
    long_ip[16] = 0x01;
    Frame bad_version = ipv4;
    bad_version[14] = 0x65;
    Frame short_tcp = ipv4;  // TCP in 12 bytes of IP payload
    short_tcp[23] = 6;
    Frame long_ip6 = ipv6_frame(400);
    Frame short_ip6 = ipv6_frame();  // the fixed header only, its payload length still 12
    short_ip6.resize(14 + 40);
    m.invalid = {{runt, DropReason::kRunt},
                 {cut_tag, DropReason::kBadVlan},
                 {tagged({{0x8100, 0}, {0x8100, 7}}), DropReason::kVlanAfterPriorityTag},
                 {tagged({{0x88a8, 5}, {0x8100, 7}, {0x8100, 8}}), DropReason::kVlanTooDeep},
                 {long_ip, DropReason::kBadL3},
                 {bad_version, DropReason::kBadL3},
                 {short_tcp, DropReason::kBadL4},
                 {long_ip6, DropReason::kBadL3},
                 {short_ip6, DropReason::kBadL3}};
    return m;
}

/// What one pass of a frame mix through the pipeline left: the frames out of each port, the
/// worker's drop and port counters, the rule counters, the buffers still in use.
struct Outcome {
    std::vector<std::vector<Frame>> out;
    std::vector<uint64_t> port_counters;
    std::vector<uint64_t> rule_counters;
    unsigned in_use = 0;
    bool operator==(const Outcome&) const = default;
};

class PipelineInPortOnlyTest : public PipelineTest {
protected:
    /// Sends the mix from p0 (in_port rule: output), p1 (in_port rule: drop) and p3 (no rule),
    /// the valid frames and the invalid ones interleaved, one frame whose headers run past its
    /// first segment, and one frame past p0's MTU; with counters zeroed first.
    Outcome run_mix() {
        std::memset(w_->port_counters, 0, sizeof(w_->port_counters));
        std::fill(counters_.begin(), counters_.end(), RuleCounters{});
        FrameMix mix = frame_mix();
        std::vector<Frame> burst;
        for (size_t i = 0; i < std::max(mix.valid.size(), mix.invalid.size()); ++i) {
            if (i < mix.valid.size()) burst.push_back(mix.valid[i]);
            if (i < mix.invalid.size()) burst.push_back(mix.invalid[i].first);
        }
        for (uint16_t in : {0, 1, 3}) {
            send(in, burst);
            rte_mbuf* pkts[2] = {chain(make_frame(kB, kA), {20}), nullptr};
            Frame big = make_frame(kB, kA);  // L3 of 1,534 bytes: past the MTU of 1,500
            big.resize(14 + 1534);
            big[16] = 0x05;
            big[17] = 0xfe;
            pkts[1] = mbufs({big})[0];
            pipeline_burst(*w_, table_, cls_.get(), in, pkts, 2);
            worker_flush_tx(*w_, table_);
        }
        Outcome o;
        for (uint16_t p = 0; p < kPorts; ++p) o.out.push_back(drain(p));
        const auto* pc = reinterpret_cast<const uint64_t*>(w_->port_counters);
        o.port_counters.assign(pc, pc + kPortSlots * sizeof(PortCounters) / sizeof(uint64_t));
        for (const RuleCounters& c : counters_) {
            o.rule_counters.push_back(c.packets);
            o.rule_counters.push_back(c.bytes);
        }
        o.in_use = rte_mempool_in_use_count(pool_);
        return o;
    }
};

TEST_F(PipelineInPortOnlyTest, CheckingWithoutKeysGivesTheFullPathsOutputsDropsAndCounters) {
    const std::vector<json> port_rules = {rule(1, 10, {{"in_port", "p0"}}, {"output:p2"}),
                                          rule(2, 10, {{"in_port", "p1"}}, {"drop"})};
    install(port_rules);
    ASSERT_TRUE(cls_->in_port_only(0));
    const Outcome lean = run_mix();

    // The same decisions, but a rule that reads another field (never the best for any frame)
    // makes the table need whole keys: the full parse.
    std::vector<json> full_rules = port_rules;
    full_rules.push_back(rule(3, 1, {{"in_port", "p0"}, {"eth_type", "0x88b6"}}, {"drop"}));
    install(full_rules);
    ASSERT_FALSE(cls_->in_port_only(0));
    const Outcome full = run_mix();
    EXPECT_EQ(lean, full);

    // And what that is: every valid frame of p0 out of p2 unchanged, in order; each invalid one
    // dropped for its reason on every port; p1's valid frames dropped by their rule, p3's for
    // want of one.
    const FrameMix mix = frame_mix();
    EXPECT_EQ(lean.out[2], mix.valid);
    EXPECT_TRUE(lean.out[0].empty() && lean.out[1].empty() && lean.out[3].empty());
    for (uint16_t p : {0, 1, 3}) {
        for (const auto& [frame, reason] : mix.invalid)
            EXPECT_GE(drops(p, reason), 1u) << p << " " << static_cast<int>(reason);
        EXPECT_EQ(drops(p, DropReason::kSplitHeaders), 1u) << p;
        EXPECT_EQ(drops(p, DropReason::kMtuExceeded), 1u) << p;
    }
    EXPECT_EQ(drops(0, DropReason::kBadL3), 4u);
    EXPECT_EQ(drops(1, DropReason::kRuleDrop), mix.valid.size());
    EXPECT_EQ(drops(3, DropReason::kNoRule), mix.valid.size());
    EXPECT_EQ(hits(1), mix.valid.size());
    EXPECT_EQ(hits(2), mix.valid.size());
    EXPECT_EQ(lean.in_use, 0u);
}

TEST_F(PipelineInPortOnlyTest, RulesThatReadMoreFieldsSwitchBackToWholeKeys) {
    Frame dns = make_frame(kB, kA);  // 10.0.0.1:12345 -> 10.0.0.2:53, UDP
    Frame other = make_frame(kB, kA);
    other[33] = 3;  // to 10.0.0.3
    const json port_rule = rule(1, 10, {{"in_port", "p0"}}, {"output:p2"});
    install({port_rule});
    ASSERT_TRUE(cls_->in_port_only(0));
    send(0, {dns, other});
    EXPECT_EQ(drain(2), (std::vector<Frame>{dns, other}));

    // A 5-tuple rule published: its field decides again.
    install({port_rule, rule(2, 20,
                             {{"in_port", "p0"},
                              {"eth_type", "ipv4"},
                              {"ip_src", "10.0.0.1"},
                              {"ip_dst", "10.0.0.2"},
                              {"ip_proto", "udp"},
                              {"l4_src", 12345},
                              {"l4_dst", 53}},
                             {"output:p3"})});
    ASSERT_FALSE(cls_->in_port_only(0));
    send(0, {dns, other});
    EXPECT_EQ(drain(3), std::vector<Frame>{dns});
    EXPECT_EQ(drain(2), std::vector<Frame>{other});

    // An in_port rule whose action reads the key (normal learns the source address): keys
    // are filled again.
    install({rule(1, 10, {{"in_port", "p0"}}, {"normal"})});
    ASSERT_TRUE(cls_->port_indexed(0));
    ASSERT_FALSE(cls_->in_port_only(0));
    send(0, {dns});
    EXPECT_EQ(learn(), 1u);
    for (uint16_t p = 1; p < kPorts; ++p) EXPECT_EQ(drain(p), std::vector<Frame>{dns}) << p;

    // And back.
    install({port_rule});
    ASSERT_TRUE(cls_->in_port_only(0));
    send(0, {dns, other});
    EXPECT_EQ(drain(2), (std::vector<Frame>{dns, other}));
    EXPECT_TRUE(drain(3).empty());
    EXPECT_EQ(learn(), 0u);
}

}  // namespace
}  // namespace ferry
