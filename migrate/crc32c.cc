#include "migrate/crc32c.h"

#include <rte_hash_crc.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace ferry {
namespace {

// rte_hash_crc_{8,4,1}byte pick the instruction or the table at run time. Not rte_hash_crc
// itself: it loads words through casts of the data pointer, and a section's payload sits at
// any offset of a stream. Neither preloads nor complements: these work on the raw register.

uint32_t crc_words(const uint8_t* p, size_t n, uint32_t c) {
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
    return c;
}

// Long inputs go as three interleaved lanes of kLane bytes each: the crc32 instruction takes
// three cycles but starts one every cycle, so one dependent chain leaves two thirds of it idle.
// The lanes are joined with the CRC's linearity: the register after lanes A, B, C from state s
// is shift(reg(s, A), 2 kLane) ^ shift(reg(0, B), kLane) ^ reg(0, C), where shift(x, n) is x
// run through n zero bytes, a linear map of x applied here by four tables of 256 entries.
constexpr size_t kLane = 2048;

struct Shift {
    std::array<std::array<uint32_t, 256>, 4> table;
    uint32_t operator()(uint32_t x) const {
        return table[0][x & 0xff] ^ table[1][(x >> 8) & 0xff] ^ table[2][(x >> 16) & 0xff] ^
               table[3][x >> 24];
    }
};

Shift shift_by(size_t zero_bytes) {
    static const uint8_t zeros[kLane] = {};
    uint32_t bit[32];
    for (int j = 0; j < 32; ++j) {
        uint32_t c = uint32_t{1} << j;
        for (size_t left = zero_bytes; left > 0; left -= std::min(left, kLane))
            c = crc_words(zeros, std::min(left, kLane), c);
        bit[j] = c;
    }
    Shift s{};
    for (int i = 0; i < 4; ++i)
        for (uint32_t b = 0; b < 256; ++b)
            for (int k = 0; k < 8; ++k)
                if (b & (1u << k)) s.table[i][b] ^= bit[8 * i + k];
    return s;
}

struct Shifts {
    Shift one = shift_by(kLane);
    Shift two = shift_by(2 * kLane);
};

uint32_t crc_lanes(const uint8_t* p, size_t n, uint32_t c) {
    static const Shifts shifts;
    for (; n >= 3 * kLane; p += 3 * kLane, n -= 3 * kLane) {
        uint32_t a = c, b = 0, d = 0;
        for (size_t i = 0; i < kLane; i += 8) {
            uint64_t wa, wb, wd;
            std::memcpy(&wa, p + i, 8);
            std::memcpy(&wb, p + kLane + i, 8);
            std::memcpy(&wd, p + 2 * kLane + i, 8);
            a = rte_hash_crc_8byte(wa, a);
            b = rte_hash_crc_8byte(wb, b);
            d = rte_hash_crc_8byte(wd, d);
        }
        c = shifts.two(a) ^ shifts.one(b) ^ d;
    }
    return crc_words(p, n, c);
}

}  // namespace

uint32_t crc32c(const uint8_t* p, size_t n) {
    // Start from all ones, complement once at the end.
    const uint32_t c = n >= 3 * kLane ? crc_lanes(p, n, 0xffffffffu) : crc_words(p, n, 0xffffffffu);
    return ~c;
}

}  // namespace ferry
