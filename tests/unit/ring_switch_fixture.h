// A switch in a test process: ring ports, a mempool, a MAC table, a learn ring and one
// WorkerState, so fast-path functions can be driven directly and deterministically (no lcores).
// Frames go in as byte vectors and come out of each port's tx ring as byte vectors.
#pragma once

#include <gtest/gtest.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/mac_table.h"
#include "dataplane/worker.h"

namespace ferry::testing {

using Frame = std::vector<uint8_t>;

inline const uint8_t kA[6] = {0x02, 0, 0, 0, 0, 0x0a};
inline const uint8_t kB[6] = {0x02, 0, 0, 0, 0, 0x0b};
inline const uint8_t kC[6] = {0x02, 0, 0, 0, 0, 0x0c};
inline const uint8_t kBcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/// An Ethernet frame dst, src, optional 802.1Q tag, IPv4/UDP with a fixed payload.
inline Frame make_frame(const uint8_t* dst, const uint8_t* src, int vid = -1) {
    Frame f(dst, dst + 6);
    f.insert(f.end(), src, src + 6);
    if (vid >= 0) f.insert(f.end(), {0x81, 0x00, uint8_t(vid >> 8), uint8_t(vid)});
    const uint8_t ip_udp[] = {0x08, 0x00, 0x45, 0,  0, 32, 0,   1,   0,   0,  64,   17,
                              0,    0,    10,   0,  0, 1,  10,  0,   0,   2,  0x30, 0x39,
                              0x00, 0x35, 0,    12, 0, 0,  'f', 'e', 'r', 'y'};
    f.insert(f.end(), ip_udp, ip_udp + sizeof(ip_udp));
    return f;
}

class RingSwitchTest : public ::testing::Test {
protected:
    static constexpr uint16_t kPorts = 4;

    void SetUp() override {
        int id = counter_++;
        std::string n = "l2t" + std::to_string(id);
        pool_ =
            rte_pktmbuf_pool_create((n + "pool").c_str(), 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
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
            int pid =
                rte_eth_from_rings((n + "p" + std::to_string(p)).c_str(), &rx, 1, &tx_[p], 1, 0);
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

    /// Frames as mbufs from the test's pool.
    std::vector<rte_mbuf*> mbufs(const std::vector<Frame>& frames) {
        std::vector<rte_mbuf*> pkts;
        for (const Frame& f : frames) {
            rte_mbuf* m = rte_pktmbuf_alloc(pool_);
            EXPECT_NE(m, nullptr);
            memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
            pkts.push_back(m);
        }
        return pkts;
    }

    /// A frame as an mbuf chain whose segments hold sizes[i] bytes each, the last one what is
    /// left (more segments than sizes when the frame is longer). Context: test.
    rte_mbuf* chain(const Frame& f, const std::vector<uint16_t>& sizes) {
        rte_mbuf* head = nullptr;
        size_t at = 0;
        for (size_t i = 0; at < f.size() || head == nullptr; ++i) {
            rte_mbuf* seg = rte_pktmbuf_alloc(pool_);
            EXPECT_NE(seg, nullptr);
            const size_t room = rte_pktmbuf_tailroom(seg);
            const size_t n = std::min({i < sizes.size() ? sizes[i] : room, room, f.size() - at});
            memcpy(rte_pktmbuf_append(seg, static_cast<uint16_t>(n)), f.data() + at, n);
            at += n;
            if (head == nullptr)
                head = seg;
            else
                EXPECT_EQ(rte_pktmbuf_chain(head, seg), 0);
        }
        return head;
    }

    /// Frames that left a port, oldest first, every segment of each.
    std::vector<Frame> drain(uint16_t port) {
        std::vector<Frame> out;
        void* obj;
        while (rte_ring_dequeue(tx_[port], &obj) == 0) {
            auto* m = static_cast<rte_mbuf*>(obj);
            Frame f(rte_pktmbuf_pkt_len(m));
            const void* d = rte_pktmbuf_read(m, 0, static_cast<uint32_t>(f.size()), f.data());
            if (d != f.data()) memcpy(f.data(), d, f.size());
            out.push_back(std::move(f));
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

}  // namespace ferry::testing
