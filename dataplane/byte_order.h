// Big-endian fields of packet headers at any alignment: the one copy of these helpers for the
// fast path, the tests, the fuzzers and the benchmarks. <endian.h> rather than rte_byteorder.h so
// that the pieces built without DPDK (parser, conntrack, their tests) can use them; both compile
// to one load and a byte swap.
#pragma once

#include <endian.h>

#include <cstdint>
#include <cstring>

namespace ferry {

/// Reads a big-endian 16-bit field. Context: any. Contract: p[0..1] readable.
inline uint16_t load_be16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof(v));
    return be16toh(v);
}

/// Reads a big-endian 32-bit field. Context: any. Contract: p[0..3] readable.
inline uint32_t load_be32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof(v));
    return be32toh(v);
}

/// Writes a big-endian 16-bit field. Context: any. Contract: p[0..1] writable.
inline void store_be16(uint8_t* p, uint16_t v) {
    v = htobe16(v);
    std::memcpy(p, &v, sizeof(v));
}

/// Writes a big-endian 32-bit field. Context: any. Contract: p[0..3] writable.
inline void store_be32(uint8_t* p, uint32_t v) {
    v = htobe32(v);
    std::memcpy(p, &v, sizeof(v));
}

}  // namespace ferry
