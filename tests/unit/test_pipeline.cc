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
