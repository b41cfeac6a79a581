// CRC32C (Castagnoli), as the migration stream's header and sections carry it. Uses the SSE4.2
// crc32 instruction. Context: any.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

/// The CRC32C of n bytes at p (initial value all ones, final complement: the iSCSI CRC, so
/// crc32c("123456789") == 0xe3069283).
uint32_t crc32c(const uint8_t* p, size_t n);

}  // namespace ferry
