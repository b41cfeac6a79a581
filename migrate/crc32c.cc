#include "migrate/crc32c.h"

#include <rte_hash_crc.h>

#include <cstring>

namespace ferry {

uint32_t crc32c(const uint8_t* p, size_t n) {
    // rte_hash_crc_{8,4,1}byte pick the instruction or the table at run time. Not rte_hash_crc
    // itself: it loads words through casts of the data pointer, and a section's payload sits at
    // any offset of a stream. Neither preloads nor complements: start from all ones, complement
    // once at the end.
    uint32_t c = 0xffffffffu;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c = rte_hash_crc_8byte(w, c);
    }
    if (n >= 4) {
        uint32_t w;
        std::memcpy(&w, p, 4);
        c = rte_hash_crc_4byte(w, c);
        p += 4;
        n -= 4;
    }
    for (; n > 0; ++p, --n) c = rte_hash_crc_1byte(*p, c);
    return ~c;
}

}  // namespace ferry
