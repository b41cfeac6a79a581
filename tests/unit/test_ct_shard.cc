#include <gtest/gtest.h>
TEST(Placeholder, ct_shard) {}
