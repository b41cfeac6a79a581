// The L2 bridge's batch function, driven directly: frames in on one ring port, frames out of
// the others, with the learn events the control thread would apply. Deterministic: no lcores.
#include "dataplane/l2_bridge.h"
#include "tests/unit/ring_switch_fixture.h"

namespace ferry {
namespace {

using testing::Frame;
using testing::kA;
using testing::kB;
using testing::kBcast;
using testing::kC;
using testing::make_frame;

class L2BridgeTest : public testing::RingSwitchTest {
protected:
    /// Sends frames into the bridge on one port and flushes the tx buffers.
    void send(uint16_t in_port, const std::vector<Frame>& frames) {
        auto pkts = mbufs(frames);
        l2_switch_burst(*w_, table_, in_port, pkts.data(), static_cast<uint16_t>(pkts.size()));
        worker_flush_tx(*w_, table_);
    }
};

TEST_F(L2BridgeTest, BroadcastFloodsEveryOtherPortUnchanged) {
    Frame f = make_frame(kBcast, kA);
    send(0, {f});
    EXPECT_TRUE(drain(0).empty());
    for (uint16_t p = 1; p < kPorts; ++p) EXPECT_EQ(drain(p), std::vector<Frame>{f}) << p;
    EXPECT_EQ(learn(), 1u);
    MacEntry e{};
    ASSERT_TRUE(macs_->get(mac_key(kA, 0), &e));
    EXPECT_EQ(e.port, 0);
}

TEST_F(L2BridgeTest, LearnedDestinationGetsUnicastOnly) {
    send(1, {make_frame(kBcast, kB)});
    learn();
    for (uint16_t p = 0; p < kPorts; ++p) drain(p);
    Frame f = make_frame(kB, kA);
    send(0, {f});
    EXPECT_EQ(drain(1), std::vector<Frame>{f});
    EXPECT_TRUE(drain(2).empty());
    EXPECT_TRUE(drain(3).empty());
    EXPECT_EQ(w_->port_counters[1].tx_packets, 1u);
}

TEST_F(L2BridgeTest, UnknownUnicastIsFlooded) {
    Frame f = make_frame(kC, kA);
    send(2, {f});
    EXPECT_EQ(drain(0).size(), 1u);
    EXPECT_EQ(drain(1).size(), 1u);
    EXPECT_TRUE(drain(2).empty());
    EXPECT_EQ(drain(3).size(), 1u);
}

TEST_F(L2BridgeTest, NoHairpinToTheIngressPort) {
    send(0, {make_frame(kBcast, kB)});
    learn();
    for (uint16_t p = 0; p < kPorts; ++p) drain(p);
    send(0, {make_frame(kB, kA)});
    for (uint16_t p = 0; p < kPorts; ++p) EXPECT_TRUE(drain(p).empty()) << p;
    EXPECT_EQ(drops(0, DropReason::kHairpin), 1u);
}

TEST_F(L2BridgeTest, OneLearnEventPerSourcePerSecond) {
    std::vector<Frame> burst(8, make_frame(kBcast, kA));
    send(0, burst);
    EXPECT_EQ(learn(), 1u);
    send(0, burst);
    EXPECT_EQ(learn(), 0u);  // known, same port, fresh
    clock_.store(1000);      // past the refresh interval: announce again
    send(0, {make_frame(kBcast, kA)});
    EXPECT_EQ(learn(), 1u);
}

TEST_F(L2BridgeTest, MoveIsReportedWithTheNewPort) {
    send(0, {make_frame(kBcast, kA)});
    learn();
    send(3, {make_frame(kBcast, kA)});
    EXPECT_EQ(learn(), 1u);
    MacEntry e{};
    ASSERT_TRUE(macs_->get(mac_key(kA, 0), &e));
    EXPECT_EQ(e.port, 3);
}

TEST_F(L2BridgeTest, GroupSourceIsNeverLearned) {
    uint8_t group_src[6] = {0x01, 0, 0x5e, 0, 0, 1};
    send(0, {make_frame(kBcast, group_src)});
    EXPECT_EQ(learn(), 0u);
}

TEST_F(L2BridgeTest, AccessToTrunkPushesTagAndTrunkToAccessPopsIt) {
    make_access(0, 10);
    make_access(2, 20);
    table_.ports[1].trunks.reset();
    table_.ports[1].trunks.set(10);
    table_.ports[1].trunks.set(20);
    table_.ports[3].link_up = false;
    Frame untagged = make_frame(kBcast, kA);
    send(0, {untagged});
    EXPECT_EQ(drain(1), std::vector<Frame>{make_frame(kBcast, kA, 10)});
    EXPECT_TRUE(drain(2).empty());  // other VLAN
    EXPECT_TRUE(drain(3).empty());  // link down
    send(1, {make_frame(kBcast, kB, 20)});
    EXPECT_EQ(drain(2), std::vector<Frame>{make_frame(kBcast, kB)});
    EXPECT_TRUE(drain(0).empty());
}

TEST_F(L2BridgeTest, VlanNotCarriedIsDropped) {
    make_access(0, 10);
    table_.ports[1].trunks.reset();
    table_.ports[1].trunks.set(10);
    send(1, {make_frame(kBcast, kA, 30)});  // trunk does not carry 30
    send(0, {make_frame(kBcast, kA, 10)});  // access ports take no tagged frames
    for (uint16_t p = 0; p < kPorts; ++p) EXPECT_TRUE(drain(p).empty()) << p;
    EXPECT_EQ(drops(1, DropReason::kVlanNotAllowed), 1u);
    EXPECT_EQ(drops(0, DropReason::kVlanNotAllowed), 1u);
}

TEST_F(L2BridgeTest, PriorityTagOnAccessPortIsAccepted) {
    make_access(0, 10);
    make_access(1, 10);
    send(0, {make_frame(kBcast, kA, 0)});
    EXPECT_EQ(drain(1), std::vector<Frame>{make_frame(kBcast, kA)});
}

TEST_F(L2BridgeTest, TrunkNativeVlanTravelsUntagged) {
    table_.ports[0].tag = 5;  // trunk with native VLAN 5
    make_access(1, 5);
    send(1, {make_frame(kBcast, kA)});
    EXPECT_EQ(drain(0), std::vector<Frame>{make_frame(kBcast, kA)});
    send(0, {make_frame(kBcast, kB)});
    EXPECT_EQ(drain(1), std::vector<Frame>{make_frame(kBcast, kB)});
}

TEST_F(L2BridgeTest, MalformedFramesAreCountedAndGoodOnesInTheSameBurstPass) {
    Frame runt(10, 0xee);
    Frame good = make_frame(kBcast, kA);
    Frame bad_ihl = good;
    bad_ihl[14] = 0x43;
    send(0, {runt, good, bad_ihl});
    EXPECT_EQ(drain(1), std::vector<Frame>{good});
    EXPECT_EQ(drops(0, DropReason::kRunt), 1u);
    EXPECT_EQ(drops(0, DropReason::kBadL3), 1u);
}

TEST_F(L2BridgeTest, FloodWithNoOtherMemberIsCounted) {
    for (uint16_t p = 1; p < kPorts; ++p) table_.ports[p].link_up = false;
    send(0, {make_frame(kBcast, kA)});
    EXPECT_EQ(drops(0, DropReason::kNoDestination), 1u);
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);  // nothing leaked
}

TEST_F(L2BridgeTest, CountersMatchWhatLeft) {
    Frame f = make_frame(kBcast, kA);
    send(0, {f, f, f});
    for (uint16_t p = 1; p < kPorts; ++p) {
        EXPECT_EQ(w_->port_counters[p].tx_packets, 3u);
        EXPECT_EQ(w_->port_counters[p].tx_bytes, 3u * f.size());
        drain(p);
    }
    EXPECT_EQ(rte_mempool_in_use_count(pool_), 0u);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

TEST_F(L2BridgeTest, MixedAddressesInOneBurstEachGoTheirWay) {
    const uint8_t kD[6] = {0x02, 0, 0, 0, 0, 0x0d};
    const uint8_t kU[6] = {0x02, 0, 0, 0, 0, 0x77};  // never learned
    send(1, {make_frame(kBcast, kB)});
    send(3, {make_frame(kBcast, kD)});
    learn();
    for (uint16_t p = 0; p < kPorts; ++p) drain(p);
    // Runs of equal keys and changes between them, in sources and destinations.
    Frame ab = make_frame(kB, kA), cd = make_frame(kD, testing::kC),
          cb = make_frame(kB, testing::kC), au = make_frame(kU, kA), ad = make_frame(kD, kA);
    send(0, {ab, ab, cd, cb, au, ad, ab});
    EXPECT_EQ(drain(1), (std::vector<Frame>{ab, ab, cb, au, ab}));
    EXPECT_EQ(drain(2), (std::vector<Frame>{au}));
    EXPECT_EQ(drain(3), (std::vector<Frame>{cd, au, ad}));
    EXPECT_EQ(learn(), 2u);  // A and C, once each
}

}  // namespace
}  // namespace ferry
