// The out-of-line parser: parse_frame_as<true> (packet_parse_inline.h) for callers that do not
// need it inline. No DPDK here: the same object is linked into unit tests, fuzzers and tools.
#include "dataplane/packet_parse.h"

#include "dataplane/packet_parse_inline.h"

namespace ferry {

std::optional<DropReason> parse_frame(const uint8_t* data, uint32_t head, uint32_t len,
                                      uint16_t in_port, FlowKey* key, PacketLayout* layout) {
    return parse_frame_as<true>(data, head, len, in_port, key, layout);
}

}  // namespace ferry
