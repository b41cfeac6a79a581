// MAC addresses as the control methods print them ("02:00:00:00:00:01", lowercase), from the
// 48-bit integers the MAC table and the flow key hold (dataplane/mac_table.h's mac_key_addr()).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace ferry {

/// addr's low 48 bits, most significant byte first. Context: control.
inline std::string format_mac(uint64_t addr) {
    char buf[18];
    snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", unsigned(addr >> 40) & 0xff,
             unsigned(addr >> 32) & 0xff, unsigned(addr >> 24) & 0xff, unsigned(addr >> 16) & 0xff,
             unsigned(addr >> 8) & 0xff, unsigned(addr) & 0xff);
    return buf;
}

}  // namespace ferry
