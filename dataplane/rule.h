// A compiled flow rule as the fast path sees it: a masked match over the FlowKey, a priority
// within its table, and a short fixed-size action list. Built by the control thread from the
// JSON rule; immutable once published in a classifier snapshot.
#pragma once

#include <cstdint>

#include "dataplane/flow_key.h"

namespace ferry {

inline constexpr uint8_t kMaxTables = 64;
inline constexpr uint8_t kMaxActions = 8;

enum class ActionType : uint8_t {
    kOutput,  // port = arg16 (ferry port slot)
    kDrop,
    kNormal,    // the L2 learning bridge
    kFlood,     // every other port of the frame's VLAN
    kPushVlan,  // push an 802.1Q tag, VID = arg16
    kPopVlan,
    kSetVlan,    // rewrite the outer VID to arg16 (push one if untagged)
    kMirror,     // a copy to port arg16, processing goes on
    kMeter,      // meter id arg32; red packets are dropped
    kGotoTable,  // continue the lookup in table arg16 (greater than the current one)
    kCt,         // connection tracking: zone arg16, flags arg32 (see the conntrack issue)
    kDpi,        // payload inspection of the packet's tracked connection (dataplane/dpi)
    kCount
};

// The ct action's encoding in an Action, written by the rule compiler and read by the dataplane:
//   arg16           zone
//   arg32 bit 0     commit: create the connection entry
//   arg32 bits 8-15 the table to continue in; meaningful only when bit 16 is set
//   arg32 bit 16    a table was given; without it processing goes on with the next action
//   arg32 bit 17    nat: translate (with the rule's NatSpec when committing a new connection,
//                   with the connection's binding otherwise)
//   arg32 bit 18    mark=N: on commit, the connection's mark becomes the rule's ct_mark
inline constexpr uint32_t kCtCommit = 1u << 0;
inline constexpr unsigned kCtTableShift = 8;
inline constexpr uint32_t kCtHasTable = 1u << 16;
inline constexpr uint32_t kCtNat = 1u << 17;
inline constexpr uint32_t kCtSetMark = 1u << 18;

/// The translation a ct action's nat(...) asks for when it commits a new connection.
/// kind kNone with kCtNat set means plain `nat`: apply the binding of connections that have one.
struct NatSpec {
    enum Kind : uint8_t { kNone, kSrc, kDst };
    uint8_t kind;
    uint8_t ip_version;  // of the addresses (4 or 6); 0 when no address is given
    uint16_t port_min;   // host order; 0..0: ports unchanged
    uint16_t port_max;
    uint16_t pad;
    uint8_t addr_min[16];  // IPv4 in the first 4 bytes, network order
    uint8_t addr_max[16];
};  // trivial, so that rules stay plain data: value-initialise (NatSpec{}) for kNone
static_assert(sizeof(NatSpec) == 40);

struct Action {
    ActionType type;
    uint8_t flags;
    uint16_t arg16;
    uint32_t arg32;
};
static_assert(sizeof(Action) == 8);

// Action::flags, set when the rule is compiled so that no packet recomputes them.
//   kActionSendCopy  an output with an action after it that still uses the packet (output,
//                    normal, flood, goto_table, mirror, ct): the output sends a copy
inline constexpr uint8_t kActionSendCopy = 1u << 0;

struct CompiledRule {
    FlowKey value;  // already masked: value == (value & mask)
    FlowKey mask;
    uint32_t index;    // stable slot of the rule while it exists: per-worker hit counters
    int32_t priority;  // higher wins within a table; equal priorities: lower index wins
    uint8_t table;
    uint8_t n_actions;
    uint16_t pad;
    uint32_t ct_mark;  // the mark a ct(commit,mark=N) action sets
    Action actions[kMaxActions];
    NatSpec nat;  // of the rule's ct action (at most one ct action per rule has nat(...))
};

/// Sets kActionSendCopy on each output of r that a later action of r still needs the packet
/// for. Context: control (the rule compiler).
inline void mark_output_copies(CompiledRule& r) {
    bool used_later = false;
    for (unsigned i = r.n_actions; i-- > 0;) {
        const ActionType t = r.actions[i].type;
        if (t == ActionType::kOutput) {
            r.actions[i].flags =
                static_cast<uint8_t>(used_later ? r.actions[i].flags | kActionSendCopy
                                                : r.actions[i].flags & ~kActionSendCopy);
        }
        used_later = used_later || t == ActionType::kOutput || t == ActionType::kNormal ||
                     t == ActionType::kFlood || t == ActionType::kGotoTable ||
                     t == ActionType::kMirror || t == ActionType::kCt;
    }
}

/// Whether key matches rule. Context: fast path.
inline bool rule_matches(const CompiledRule& r, const FlowKey& key) {
    const auto* k = reinterpret_cast<const uint64_t*>(&key);
    const auto* m = reinterpret_cast<const uint64_t*>(&r.mask);
    const auto* v = reinterpret_cast<const uint64_t*>(&r.value);
    uint64_t diff = 0;
    for (int i = 0; i < 8; ++i) diff |= (k[i] & m[i]) ^ v[i];
    return diff == 0;
}

}  // namespace ferry
