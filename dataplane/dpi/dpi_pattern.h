// A payload pattern as the control plane holds it, before compilation: the regular expression,
// its Hyperscan flags, the direction it applies to and what a match does.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ferry {

/// Pattern flags, mapped to Hyperscan's at compilation.
enum DpiFlag : uint8_t {
    kDpiCaseless = 1 << 0,
    kDpiDotall = 1 << 1,
    kDpiMultiline = 1 << 2,
    kDpiSingleMatch = 1 << 3,  // report at most one match per connection and direction
};

/// Which half of a connection a pattern looks at. "To server" is the original direction: the
/// packets of whoever opened the connection.
enum class DpiDirection : uint8_t { kToServer, kToClient, kBoth };

/// What a match does.
enum class DpiVerdictKind : uint8_t {
    kDrop,   // drop the packet and every later packet of the connection
    kAlert,  // count it and report it to the control thread (logged)
    kMark,   // set the connection's ct_mark to `mark`, so later rules can act on it
};

/// Names in configs and replies, indexed by bit position / enum value.
inline constexpr std::array<std::string_view, 4> kDpiFlagNames = {"caseless", "dotall", "multiline",
                                                                  "single_match"};
inline constexpr std::array<std::string_view, 3> kDpiDirectionNames = {"to_server", "to_client",
                                                                       "both"};
inline constexpr std::array<std::string_view, 3> kDpiActionNames = {"drop", "alert", "mark"};

struct DpiPattern {
    uint32_t id = 0;
    std::string regex;
    uint8_t flags = 0;  // DpiFlag
    DpiDirection direction = DpiDirection::kBoth;
    DpiVerdictKind action = DpiVerdictKind::kAlert;
    uint32_t mark = 0;  // kMark only
};

}  // namespace ferry
