// CRC32C (Castagnoli), as the migration stream's header and sections carry it. Computed by DPDK's
// rte_hash_crc, which picks the SSE4.2 or ARMv8 crc32 instructions, or its table, when the
// program starts, so the value never depends on the CPU or on how ferry was built. Context: any.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

/// The CRC32C of n bytes at p (initial value all ones, final complement: the iSCSI CRC, so
/// crc32c("123456789") == 0xe3069283). Context: any. @return the CRC; 0 for n == 0.
uint32_t crc32c(const uint8_t* p, size_t n);

}  // namespace ferry
