// libFuzzer target for parse_frame and the port-security check behind it: any byte string is a
// frame. Besides the sanitizers' checks it traps on results that break the parser's contract
// (offsets outside the frame, a key that is not what the layout says) and on a port-security
// verdict that is not one of its reasons. Run through scripts/fuzz.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "dataplane/packet_parse.h"
#include "dataplane/port_security.h"

namespace {

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > UINT16_MAX) return -1;  // larger than any frame; keeps offsets meaningful
    const auto len = static_cast<uint32_t>(size);
    ferry::FlowKey key;
    ferry::PacketLayout layout;
    const std::optional<ferry::DropReason> drop = ferry::parse_frame(data, len, 7, &key, &layout);
    if (drop) {
        check(*drop < ferry::DropReason::kCount);
        check(len >= 14 || *drop == ferry::DropReason::kRunt);
        return 0;
    }
    check(key.in_port == 7);
    check(layout.vlan_tags <= 2);
    check((layout.vlan_tags == 0) == (key.vlan == ferry::kNoVlan));
    check(key.vlan == ferry::kNoVlan || key.vlan <= 0x0fff);
    check(layout.l3_offset == 14 + 4 * layout.vlan_tags && layout.l3_offset <= len);
    check(key.ip_version == 0 || key.ip_version == 4 || key.ip_version == 6);
    check(layout.l4_offset == 0 ||
          (key.ip_version != 0 && layout.l4_offset > layout.l3_offset && layout.l4_offset <= len));
    check(key.ip_version != 0 || (key.ip_proto == 0 && key.l4_src == 0 && key.l4_dst == 0));
    check(key.tcp_flags == 0 || key.ip_proto == 6);
    check(key.ct_state == 0 && key.ct_zone == 0 && key.ct_mark == 0 && layout.segmented == 0);

    // Port security of a port whose MAC is the frame's source, so the address and Neighbor
    // Discovery checks run on hostile bytes too (their reads go past the parser's).
    ferry::PortSecurity sec;
    sec.enabled = true;
    sec.count = 2;
    std::copy(key.eth_src, key.eth_src + 6, sec.allowed[0].mac.begin());
    sec.allowed[1] = sec.allowed[0];
    sec.allowed[1].family = key.ip_version == 6 ? 6 : 4;
    sec.allowed[1].prefix = 8;
    std::copy(key.ip_src, key.ip_src + 16, sec.allowed[1].ip.begin());
    const auto verdict = ferry::port_security_check(sec, data, len, key, layout);
    check(!verdict || (*verdict >= ferry::DropReason::kPortSecMac &&
                       *verdict <= ferry::DropReason::kPortSecRa));
    return 0;
}
