#include "migrate/crc32c.h"

#include <nmmintrin.h>

#include <cstring>

namespace ferry {

uint32_t crc32c(const uint8_t* p, size_t n) {
    uint64_t c = 0xffffffffu;
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<uint32_t>(c);
    while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

}  // namespace ferry
