#include "control/nat_config.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "control/json_path.h"

namespace ferry {
namespace {

using json_path::invalid;

/// One address, IPv4 or bracketed IPv6; sets *version. @return false when it is neither.
bool parse_addr(std::string_view s, uint8_t* out, uint8_t* version) {
    std::memset(out, 0, 16);
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') {
        const std::string text(s.substr(1, s.size() - 2));
        *version = 6;
        return inet_pton(AF_INET6, text.c_str(), out) == 1;
    }
    const std::string text(s);
    *version = 4;
    return inet_pton(AF_INET, text.c_str(), out) == 1;
}

/// A port 1..65535. @return false otherwise.
bool parse_port(std::string_view s, uint16_t* out) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v == 0 || v > 65535) return false;
    *out = static_cast<uint16_t>(v);
    return true;
}

/// The position of the ':' that starts the port part, or npos (IPv6 colons sit in brackets).
size_t port_colon(std::string_view s) {
    const size_t close = s.rfind(']');
    const size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return colon;
    if (close != std::string_view::npos && colon < close) return std::string_view::npos;
    if (close == std::string_view::npos && s.find(':') != colon) return std::string_view::npos;
    return colon;
}

std::string addr_text(const uint8_t* a, uint8_t version) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(version == 4 ? AF_INET : AF_INET6, a, buf, sizeof(buf));
    std::string out(buf);
    if (version == 6) out.insert(out.begin(), '['), out.push_back(']');
    return out;
}

}  // namespace

Result<NatSpec> parse_nat_spec(std::string_view inner, const std::string& path) {
    NatSpec spec{};
    if (inner.empty()) return spec;
    const std::string usage = " (expected nat(src=ADDR[-ADDR][:PORT[-PORT]]) or nat(dst=...))";
    if (inner.starts_with("src="))
        spec.kind = NatSpec::kSrc;
    else if (inner.starts_with("dst="))
        spec.kind = NatSpec::kDst;
    else
        return invalid(path, "bad nat parameter \"" + std::string(inner) + "\"" + usage);
    std::string_view rest = inner.substr(4);
    std::string_view ports;
    if (const size_t c = port_colon(rest); c != std::string_view::npos) {
        ports = rest.substr(c + 1);
        rest = rest.substr(0, c);
    }
    // Addresses: A or A-B. IPv6 ones are bracketed, so a '-' outside brackets separates them.
    std::string_view lo = rest, hi = rest;
    size_t depth = 0;
    for (size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == '[') ++depth;
        if (rest[i] == ']' && depth > 0) --depth;
        if (rest[i] == '-' && depth == 0) {
            lo = rest.substr(0, i);
            hi = rest.substr(i + 1);
            break;
        }
    }
    uint8_t v_lo = 0, v_hi = 0;
    if (!parse_addr(lo, spec.addr_min, &v_lo))
        return invalid(path, "bad nat address \"" + std::string(lo) + "\"" + usage);
    if (!parse_addr(hi, spec.addr_max, &v_hi))
        return invalid(path, "bad nat address \"" + std::string(hi) + "\"" + usage);
    if (v_lo != v_hi) return invalid(path, "nat address range mixes IPv4 and IPv6");
    if (std::memcmp(spec.addr_min, spec.addr_max, 16) > 0)
        return invalid(path, "nat address range is empty: " + std::string(rest));
    spec.ip_version = v_lo;
    if (!ports.empty()) {
        const size_t dash = ports.find('-');
        const std::string_view plo = ports.substr(0, dash);
        const std::string_view phi = dash == std::string_view::npos ? plo : ports.substr(dash + 1);
        if (!parse_port(plo, &spec.port_min) || !parse_port(phi, &spec.port_max))
            return invalid(
                path, "bad nat port range \"" + std::string(ports) + "\" (ports are 1..65535)");
        if (spec.port_min > spec.port_max)
            return invalid(path, "nat port range is empty: " + std::string(ports));
    }
    return spec;
}

std::string nat_spec_text(const NatSpec& spec) {
    if (spec.kind == NatSpec::kNone) return "nat";
    std::string s = spec.kind == NatSpec::kSrc ? "nat(src=" : "nat(dst=";
    s += addr_text(spec.addr_min, spec.ip_version);
    if (std::memcmp(spec.addr_min, spec.addr_max, 16) != 0) {
        s += '-';
        s += addr_text(spec.addr_max, spec.ip_version);
    }
    if (spec.port_max != 0) {
        s += ':';
        s += std::to_string(spec.port_min);
        if (spec.port_max != spec.port_min) {
            s += '-';
            s += std::to_string(spec.port_max);
        }
    }
    s += ')';
    return s;
}

}  // namespace ferry
