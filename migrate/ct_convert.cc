#include "migrate/ct_convert.h"

#include <algorithm>

#include "dataplane/ip_proto.h"

namespace ferry {

MigratedConnection connection_to_stream(const CtEntry& e, uint64_t now_ms,
                                        const std::vector<uint16_t>& stream_port) {
    MigratedConnection c;
    c.orig = e.tuple[0];
    c.reply = e.tuple[1];
    if (e.tuple[0].proto == kProtoTcp)
        c.tcp_state = e.tcp.state;
    else
        c.other_state = static_cast<CtOtherState>(e.other_state);
    c.flags = e.flags & static_cast<uint8_t>(~(kCtfForeignReply | kCtfRedirect));
    c.mark = e.mark;
    const uint64_t left = e.expires_ms > now_ms ? e.expires_ms - now_ms : 0;
    c.remaining_ms = static_cast<uint32_t>(std::min<uint64_t>(left, UINT32_MAX));
    for (int d = 0; d < 2; ++d) {
        c.port[d] = e.port[d] < stream_port.size() ? stream_port[e.port[d]] : kNoStreamPort;
        c.seq_offset[d] = e.seq_offset[d];
        c.peer[d] = e.tcp.peer[d];
        c.peer[d].pad = 0;
        c.packets[d] = e.packets[d];
        c.bytes[d] = e.bytes[d];
    }
    c.tcp_retrans = e.tcp.retrans;
    return c;
}

CtEntry connection_from_stream(const MigratedConnection& c,
                               const std::vector<uint16_t>& local_port) {
    CtEntry e{};
    e.tuple[0] = c.orig;
    e.tuple[1] = c.reply;
    e.flags = c.flags;
    e.mark = c.mark;
    e.other_state = static_cast<uint8_t>(c.other_state);
    for (int d = 0; d < 2; ++d) {
        e.port[d] = c.port[d] < local_port.size() ? local_port[c.port[d]] : kCtNoPort;
        e.seq_offset[d] = c.seq_offset[d];
        e.tcp.peer[d] = c.peer[d];
        e.packets[d] = c.packets[d];
        e.bytes[d] = c.bytes[d];
    }
    e.tcp.state = c.orig.proto == kProtoTcp ? c.tcp_state : TcpState::kNone;
    e.tcp.retrans = c.tcp_retrans;
    return e;
}

}  // namespace ferry
