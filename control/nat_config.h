// The text of a ct action's nat(...) parameter, parsed into the NatSpec the dataplane applies.
#pragma once

#include <string>
#include <string_view>

#include "dataplane/result.h"
#include "dataplane/rule.h"

namespace ferry {

/// Parses the inside of "nat(...)": "src=ADDR[-ADDR][:PORT[-PORT]]" or the same with "dst=".
/// IPv6 addresses are written in brackets ("src=[fd00::1]-[fd00::9]:1024-65535"). Empty text
/// (plain "nat") gives kind kNone: translate connections that already have a binding.
/// Context: control. @return the spec, or kInvalidParams naming path and the fault
Result<NatSpec> parse_nat_spec(std::string_view inner, const std::string& path);

/// The canonical text of a spec, as parse_nat_spec reads it. Context: control.
std::string nat_spec_text(const NatSpec& spec);

}  // namespace ferry
