// libFuzzer target for parse_frame: any byte string is a frame. Besides the sanitizers' checks it
// traps on results that break the parser's contract (offsets outside the frame, a key that is not
// what the layout says). Run through scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "dataplane/packet_parse.h"

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
    check(key.ct_state == 0 && key.ct_zone == 0 && key.ct_mark == 0 && layout.pad == 0);
    return 0;
}
