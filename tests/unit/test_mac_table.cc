// MacTable: the shared table the control thread writes and workers read in bulk.
#include <gtest/gtest.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <memory>
#include <set>

#include "dataplane/mac_table.h"

namespace ferry {
namespace {

const uint8_t kMacA[6] = {0x02, 0, 0, 0, 0, 0x0a};
const uint8_t kMacB[6] = {0x02, 0, 0, 0, 0, 0x0b};

class MacTableTest : public testing::Test {
protected:
    void SetUp() override {
        size_t sz = rte_rcu_qsbr_get_memsize(4);
        qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("t_qsbr", sz, 64));
        ASSERT_EQ(rte_rcu_qsbr_init(qsbr_, 4), 0);
        std::string name = "t_macs_" + std::to_string(counter_++);
        table_.reset(MacTable::create(name.c_str(), 1024, qsbr_));
        ASSERT_NE(table_, nullptr);
    }
    void TearDown() override {
        table_.reset();
        rte_free(qsbr_);
    }
    static inline int counter_ = 0;
    rte_rcu_qsbr* qsbr_ = nullptr;
    std::unique_ptr<MacTable> table_;
};

TEST(MacKey, EncodesAddressAndVlanSeparately) {
    uint64_t k = mac_key(kMacA, 10);
    EXPECT_EQ(mac_key_vlan(k), 10);
    EXPECT_EQ(mac_key_addr(k), 0x02000000000aULL);
    EXPECT_NE(mac_key(kMacA, 10), mac_key(kMacA, 20));
    EXPECT_NE(mac_key(kMacA, 0), mac_key(kMacB, 0));
}

TEST(MacValue, PackRoundTrips) {
    MacEntry e{63, 0xfffffff0u};
    MacEntry back = mac_value_unpack(mac_value_pack(e));
    EXPECT_EQ(back.port, 63);
    EXPECT_EQ(back.stamp_s, 0xfffffff0u);
}

TEST_F(MacTableTest, UpsertGetUpdateRemove) {
    uint64_t k = mac_key(kMacA, 0);
    MacEntry e{};
    EXPECT_FALSE(table_->get(k, &e));
    ASSERT_TRUE(table_->upsert(k, MacEntry{3, 100}));
    ASSERT_TRUE(table_->get(k, &e));
    EXPECT_EQ(e.port, 3);
    EXPECT_EQ(e.stamp_s, 100u);
    ASSERT_TRUE(table_->upsert(k, MacEntry{5, 200}));  // a move replaces in place
    ASSERT_TRUE(table_->get(k, &e));
    EXPECT_EQ(e.port, 5);
    EXPECT_EQ(table_->size(), 1u);
    EXPECT_TRUE(table_->remove(k));
    EXPECT_FALSE(table_->remove(k));
    EXPECT_FALSE(table_->get(k, &e));
    EXPECT_EQ(table_->size(), 0u);
}

TEST_F(MacTableTest, BulkLookupReportsHitsPerKey) {
    uint64_t keys[MacTable::kBulkMax];
    for (unsigned i = 0; i < MacTable::kBulkMax; ++i) {
        uint8_t mac[6] = {0x02, 0, 0, 0, 1, static_cast<uint8_t>(i)};
        keys[i] = mac_key(mac, 0);
        if (i % 3 == 0) {
            ASSERT_TRUE(table_->upsert(keys[i], MacEntry{static_cast<uint16_t>(i % 64), i}));
        }
    }
    uint64_t values[MacTable::kBulkMax];
    uint64_t hits = table_->lookup_bulk(keys, MacTable::kBulkMax, values);
    for (unsigned i = 0; i < MacTable::kBulkMax; ++i) {
        bool hit = hits & (1ULL << i);
        EXPECT_EQ(hit, i % 3 == 0) << i;
        if (hit) {
            EXPECT_EQ(mac_value_unpack(values[i]).port, i % 64);
            EXPECT_EQ(mac_value_unpack(values[i]).stamp_s, i);
        }
    }
}

TEST_F(MacTableTest, RemoveIfAndForEachSeeEveryEntry) {
    for (uint8_t i = 0; i < 100; ++i) {
        uint8_t mac[6] = {0x02, 0, 0, 0, 2, i};
        ASSERT_TRUE(table_->upsert(mac_key(mac, i % 2), MacEntry{static_cast<uint16_t>(i % 4), i}));
    }
    std::set<uint64_t> seen;
    table_->for_each([&](uint64_t k, MacEntry) { seen.insert(k); });
    EXPECT_EQ(seen.size(), 100u);
    uint32_t n = table_->remove_if([](uint64_t, MacEntry e) { return e.port == 1; });
    EXPECT_EQ(n, 25u);
    EXPECT_EQ(table_->size(), 75u);
    table_->for_each([&](uint64_t, MacEntry e) { EXPECT_NE(e.port, 1); });
}

TEST_F(MacTableTest, FullTableRefusesNewKeysButUpdatesOld) {
    uint32_t inserted = 0;
    for (uint32_t i = 0; i < 4096; ++i) {
        uint8_t mac[6] = {0x02,
                          0,
                          0,
                          static_cast<uint8_t>(i >> 16),
                          static_cast<uint8_t>(i >> 8),
                          static_cast<uint8_t>(i)};
        if (table_->upsert(mac_key(mac, 0), MacEntry{1, 0})) ++inserted;
    }
    EXPECT_GE(inserted, 1024u);
    EXPECT_LT(inserted, 4096u);
    uint8_t first[6] = {0x02, 0, 0, 0, 0, 0};
    EXPECT_TRUE(table_->upsert(mac_key(first, 0), MacEntry{2, 1}));
}

}  // namespace
}  // namespace ferry
