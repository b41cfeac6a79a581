// The L2 bridge's batch function, driven directly: frames in on one ring port, frames out of
// the others, with the learn events the control thread would apply. Deterministic: no lcores.
#include <gtest/gtest.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <atomic>
#include <memory>
#include <vector>

#include "dataplane/l2_bridge.h"
#include "dataplane/mac_table.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

using Frame = std::vector<uint8_t>;

const uint8_t kA[6] = {0x02, 0, 0, 0, 0, 0x0a};
const uint8_t kB[6] = {0x02, 0, 0, 0, 0, 0x0b};
const uint8_t kC[6] = {0x02, 0, 0, 0, 0, 0x0c};
const uint8_t kBcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/// An Ethernet frame dst, src, optional 802.1Q tag, IPv4/UDP with a fixed payload.
Frame make_frame(const uint8_t* dst, const uint8_t* src, int vid = -1) {
    Frame f(dst, dst + 6);
    f.insert(f.end(), src, src + 6);
    if (vid >= 0) f.insert(f.end(), {0x81, 0x00, uint8_t(vid >> 8), uint8_t(vid)});
    const uint8_t ip_udp[] = {0x08, 0x00, 0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1,
                              10, 0, 0, 2, 0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 'f', 'e', 'r', 'y'};
    f.insert(f.end(), ip_udp, ip_udp + sizeof(ip_udp));
    return f;
}

class L2BridgeTest : public testing::Test {
protected:
    static constexpr uint16_t kPorts = 4;

    void SetUp() override {
        int id = counter_++;
        std::string n = "l2t" + std::to_string(id);
        pool_ = rte_pktmbuf_pool_create((n + "pool").c_str(), 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
        ASSERT_NE(pool_, nullptr);
        size_t sz = rte_rcu_qsbr_get_memsize(1);
        qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc(nullptr, sz, 64));
        rte_rcu_qsbr_init(qsbr_, 1);
        macs_.reset(MacTable::create((n + "macs").c_str(), 1024, qsbr_));
        learn_ = rte_ring_create_elem((n + "learn").c_str(), sizeof(LearnEvent), 256, 0,
                                      RING_F_SP_ENQ | RING_F_SC_DEQ);
        ASSERT_NE(learn_, nullptr);
        for (uint16_t p = 0; p < kPorts; ++p) {
            std::string rn = n + "r" + std::to_string(p);
            tx_[p] = rte_ring_create(rn.c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
            rte_ring* rx = tx_[p];
            int pid = rte_eth_from_rings((n + "p" + std::to_string(p)).c_str(), &rx, 1, &tx_[p], 1, 0);
            ASSERT_GE(pid, 0);
            auto port = static_cast<uint16_t>(pid);
            rte_eth_conf conf{};
            ASSERT_EQ(rte_eth_dev_configure(port, 1, 1, &conf), 0);
            ASSERT_EQ(rte_eth_rx_queue_setup(port, 0, 256, 0, nullptr, pool_), 0);
            ASSERT_EQ(rte_eth_tx_queue_setup(port, 0, 256, 0, nullptr), 0);
            ASSERT_EQ(rte_eth_dev_start(port), 0);
            table_.ports[p].active = true;
            table_.ports[p].link_up = true;
            table_.ports[p].dpdk_port = static_cast<uint16_t>(pid);
            table_.ports[p].trunks.set();
            table_.ports[p].trunks.reset(0);
        }
        table_.port_limit = kPorts;
        published_.store(&table_);
        w_ = std::make_unique<WorkerState>();
        w_->learn_ring = learn_;
        w_->pool = pool_;
        w_->qsbr = qsbr_;
        w_->macs = macs_.get();
        w_->table = &published_;
        w_->clock_s = &clock_;
    }

    void TearDown() override {
        for (uint16_t p = 0; p < kPorts; ++p) {
            drain(p);
            rte_eth_dev_stop(table_.ports[p].dpdk_port);
            rte_eth_dev_close(table_.ports[p].dpdk_port);
            rte_ring_free(tx_[p]);
        }
        rte_ring_free(learn_);
        macs_.reset();
        rte_free(qsbr_);
        rte_mempool_free(pool_);
    }

    /// Sends frames into the bridge on one port and flushes the tx buffers.
    void send(uint16_t in_port, const std::vector<Frame>& frames) {
        std::vector<rte_mbuf*> pkts;
        for (const Frame& f : frames) {
            rte_mbuf* m = rte_pktmbuf_alloc(pool_);
            ASSERT_NE(m, nullptr);
            memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
            pkts.push_back(m);
        }
        l2_switch_burst(*w_, table_, in_port, pkts.data(), static_cast<uint16_t>(pkts.size()));
        worker_flush_tx(*w_, table_);
    }

    /// Frames that left a port, oldest first.
    std::vector<Frame> drain(uint16_t port) {
        std::vector<Frame> out;
        void* obj;
        while (rte_ring_dequeue(tx_[port], &obj) == 0) {
            auto* m = static_cast<rte_mbuf*>(obj);
            const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
            out.emplace_back(d, d + rte_pktmbuf_data_len(m));
            rte_pktmbuf_free(m);
        }
        return out;
    }

    /// Applies pending learn events as the control thread would. @return how many.
    unsigned learn() {
        LearnEvent ev;
        unsigned n = 0;
        while (rte_ring_sc_dequeue_elem(learn_, &ev, sizeof(ev)) == 0) {
            macs_->upsert(ev.key, MacEntry{ev.port, clock_.load()});
            ++n;
        }
        return n;
    }

    uint64_t drops(uint16_t port, DropReason r) {
        return w_->port_counters[port].drops[static_cast<size_t>(r)];
    }

    void make_access(uint16_t p, uint16_t vlan) {
        table_.ports[p].vlan_mode = PortVlanMode::kAccess;
        table_.ports[p].tag = vlan;
        table_.ports[p].trunks.reset();
    }

    static inline int counter_ = 0;
    rte_mempool* pool_ = nullptr;
    rte_rcu_qsbr* qsbr_ = nullptr;
    std::unique_ptr<MacTable> macs_;
    rte_ring* learn_ = nullptr;
    rte_ring* tx_[kPorts]{};
    PortTable table_;
    std::atomic<const PortTable*> published_{nullptr};
    std::atomic<uint32_t> clock_{1};
    std::unique_ptr<WorkerState> w_;
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
