#include "migrate/stream_codec.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "dataplane/ip_proto.h"
#include "migrate/large_buffer.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

constexpr uint32_t kMaxRemainingMs = 30u * 86400u * 1000u;  // the longest configurable timeout
constexpr uint8_t kMaxWindowScale = 14;
/// How many entries ahead decode_connections hashes and prefetches.
constexpr uint32_t kHashAhead = 8;

// ---- Tuples ------------------------------------------------------------------------------------

template <class Writer>
void put_tuple(Writer& w, const CtTuple& t) {
    w.u8(t.ip_version);
    w.u8(t.proto);
    w.u16(t.zone);
    w.bytes(t.src, 16);
    w.bytes(t.dst, 16);
    w.u16(t.sport);
    w.u16(t.dport);
}

/// Reads a tuple. @return "" or what is wrong
template <class Reader>
void read_tuple(Reader& r, CtTuple* t) {
    *t = CtTuple{};
    t->ip_version = r.u8();
    t->proto = r.u8();
    t->zone = r.u16();
    r.bytes(t->src, 16);
    r.bytes(t->dst, 16);
    t->sport = r.u16();
    t->dport = r.u16();
}

/// @return "" or what is wrong with a tuple read whole
std::string tuple_error(const CtTuple& t) {
    if (t.ip_version != 4 && t.ip_version != 6)
        return "tuple ip_version " + std::to_string(t.ip_version) + " (4 or 6)";
    if (t.ip_version == 4) {
        static const uint8_t zero[12] = {};
        if (std::memcmp(t.src + 4, zero, 12) != 0 || std::memcmp(t.dst + 4, zero, 12) != 0)
            return "IPv4 tuple with bytes after the address";
    }
    return "";
}

/// tuple_error's question, without building an answer: the per-connection check.
bool tuple_ok(const CtTuple& t) {
    if (t.ip_version == 6) return true;
    if (t.ip_version != 4) return false;
    uint64_t a, b;
    uint32_t c, d;
    std::memcpy(&a, t.src + 4, 8);
    std::memcpy(&c, t.src + 12, 4);
    std::memcpy(&b, t.dst + 4, 8);
    std::memcpy(&d, t.dst + 12, 4);
    return (a | b | c | d) == 0;
}

/// Reads a tuple. @return "" or what is wrong
std::string get_tuple(WireReader& r, CtTuple* t) {
    read_tuple(r, t);
    if (!r.ok()) return "truncated tuple";
    return tuple_error(*t);
}

/// Wire TCP state -> TcpState, kCount for a value that is none.
constexpr std::array<uint8_t, 256> kTcpStateOfWire = [] {
    std::array<uint8_t, 256> a{};
    a.fill(static_cast<uint8_t>(TcpState::kCount));
    for (size_t i = 1; i < kTcpStateWire.size(); ++i) a[kTcpStateWire[i]] = static_cast<uint8_t>(i);
    return a;
}();

// ---- Connection entries ------------------------------------------------------------------------

/// Bytes of the fields that follow the tuples in both kinds of connection entry.
constexpr size_t kConnectionFieldsWireBytes = 92;
static_assert(kConnectionIpv4WireBytes == 4 + 2 * 12 + kConnectionFieldsWireBytes);

/// The fields after the tuples, from the state to the counters.
[[gnu::always_inline]] inline void put_connection_fields(RawWriter& w,
                                                         const MigratedConnection& e) {
    w.u8(e.orig.proto == kProtoTcp               ? kTcpStateWire[static_cast<size_t>(e.tcp_state)]
         : e.other_state == CtOtherState::kFirst ? kOtherFirstWire
                                                 : kOtherMultipleWire);
    w.u8(0);
    uint32_t flags = 0;
    map_flags(kConnFlagWire, e.flags, true, &flags);
    w.u16(static_cast<uint16_t>(flags));
    w.u32(e.mark);
    w.u32(e.remaining_ms);
    w.u16(e.port[0]);
    w.u16(e.port[1]);
    w.u32(static_cast<uint32_t>(e.seq_offset[0]));
    w.u32(static_cast<uint32_t>(e.seq_offset[1]));
    for (const TcpPeer& p : e.peer) {
        w.u32(p.end);
        w.u32(p.maxend);
        w.u32(p.maxwin);
        w.u8(p.scale);
        uint32_t pf = 0;
        map_flags(kTcpPeerFlagWire, p.flags, true, &pf);
        w.u8(static_cast<uint8_t>(pf));
        w.u16(0);
    }
    w.u32(e.tcp_retrans);
    for (int d = 0; d < 2; ++d) w.u64(e.packets[d]);
    for (int d = 0; d < 2; ++d) w.u64(e.bytes[d]);
}

bool valid_port_name(const std::string& s) {
    if (s.empty() || s.size() > kMaxPortName) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

std::string port_ref(uint16_t port, const DecodeContext& ctx) {
    if (port == kNoStreamPort || port < ctx.state->ports.size()) return "";
    return "port " + std::to_string(port) + " (the stream has " +
           std::to_string(ctx.state->ports.size()) + " ports)";
}

/// Reads the fields after the tuples, from the state to the counters, and checks them.
/// @return "" or what is wrong
[[gnu::always_inline]] inline std::string read_connection_fields(RawReader& e,
                                                                 MigratedConnection& c,
                                                                 const DecodeContext& ctx) {
    const uint8_t state = e.u8();
    e.u8();
    if (c.orig.proto == kProtoTcp) {
        const uint8_t tcp = kTcpStateOfWire[state];
        if (tcp == static_cast<uint8_t>(TcpState::kCount))
            return "TCP state " + std::to_string(state) + " is not a TCP state";
        c.tcp_state = static_cast<TcpState>(tcp);
    } else if (state == kOtherFirstWire || state == kOtherMultipleWire) {
        c.other_state = state == kOtherFirstWire ? CtOtherState::kFirst : CtOtherState::kMultiple;
    } else {
        return "state " + std::to_string(state) + " is not a state of protocol " +
               std::to_string(c.orig.proto);
    }
    uint32_t flags = 0;
    if (!map_flags(kConnFlagWire, e.u16(), false, &flags)) return "unknown connection flags";
    c.flags = static_cast<uint8_t>(flags);
    if (!(c.flags & (kCtfSrcNat | kCtfDstNat)) && !(c.reply == ct_tuple_reverse(c.orig)))
        return "reply tuple is not the reverse of orig, without NAT";
    c.mark = e.u32();
    c.remaining_ms = e.u32();
    if (c.remaining_ms > kMaxRemainingMs) return "remaining_ms beyond 30 days";
    for (uint16_t& port : c.port) {
        port = e.u16();
        if (port != kNoStreamPort && port >= ctx.state->ports.size()) return port_ref(port, ctx);
    }
    for (int32_t& off : c.seq_offset) off = e.i32();
    for (TcpPeer& peer : c.peer) {
        peer.end = e.u32();
        peer.maxend = e.u32();
        peer.maxwin = e.u32();
        peer.scale = e.u8();
        uint32_t pf = 0;
        if (!map_flags(kTcpPeerFlagWire, e.u8(), false, &pf)) return "unknown TCP peer flags";
        peer.flags = static_cast<uint8_t>(pf);
        e.u16();
        if (peer.scale > kMaxWindowScale) return "window scale above 14";
    }
    c.tcp_retrans = e.u32();
    for (uint64_t& v : c.packets) v = e.u64();
    for (uint64_t& v : c.bytes) v = e.u64();
    return "";  // a CONNECTIONS entry ends in reserved bytes, not read
}

/// A CONNECTIONS entry: two whole tuples, which must agree in IP version, protocol and zone,
/// the fields, and reserved bytes.
struct FullEntry {
    static constexpr size_t kBytes = kConnectionWireBytes;
    static constexpr std::string_view kName = "CONNECTIONS";
    static void put_tuples(RawWriter& w, const MigratedConnection& c) {
        put_tuple(w, c.orig);
        put_tuple(w, c.reply);
    }
    static void read_orig(RawReader& e, CtTuple* orig) { read_tuple(e, orig); }
    static void read_tuples(RawReader& e, CtTuple* orig, CtTuple* reply) {
        read_tuple(e, orig);
        read_tuple(e, reply);
    }
    static bool tuples_ok(const MigratedConnection& c) {
        return tuple_ok(c.orig) && tuple_ok(c.reply) && c.orig.ip_version == c.reply.ip_version &&
               c.orig.proto == c.reply.proto && c.orig.zone == c.reply.zone;
    }
    static std::string tuples_error(const MigratedConnection& c) {
        if (!tuple_ok(c.orig)) return tuple_error(c.orig);
        if (!tuple_ok(c.reply)) return tuple_error(c.reply);
        return "orig and reply differ in IP version, protocol or zone";
    }
};

/// A CONNECTIONS_IPV4 entry: protocol and zone once, then each tuple's addresses and ports.
/// Every such pair of tuples is well formed.
struct Ipv4Entry {
    static constexpr size_t kBytes = kConnectionIpv4WireBytes;
    static constexpr std::string_view kName = "CONNECTIONS_IPV4";
    /// c must fit (fits_ipv4_entry).
    static void put_tuples(RawWriter& w, const MigratedConnection& c) {
        w.u8(c.orig.proto);
        w.u8(0);
        w.u16(c.orig.zone);
        put_addresses(w, c.orig);
        put_addresses(w, c.reply);
    }
    static void read_orig(RawReader& e, CtTuple* orig) {
        *orig = CtTuple{};
        orig->ip_version = 4;
        orig->proto = e.u8();
        e.u8();
        orig->zone = e.u16();
        read_addresses(e, orig);
    }
    static void read_tuples(RawReader& e, CtTuple* orig, CtTuple* reply) {
        read_orig(e, orig);
        *reply = CtTuple{};
        reply->ip_version = 4;
        reply->proto = orig->proto;
        reply->zone = orig->zone;
        read_addresses(e, reply);
    }
    static bool tuples_ok(const MigratedConnection& /*c*/) { return true; }
    static std::string tuples_error(const MigratedConnection& /*c*/) { return ""; }

private:
    static void put_addresses(RawWriter& w, const CtTuple& t) {
        w.bytes(t.src, 4);
        w.bytes(t.dst, 4);
        w.u16(t.sport);
        w.u16(t.dport);
    }
    static void read_addresses(RawReader& e, CtTuple* t) {
        e.bytes(t->src, 4);
        e.bytes(t->dst, 4);
        t->sport = e.u16();
        t->dport = e.u16();
    }
};

/// Appends a payload of n connection entries of one layout (FullEntry, Ipv4Entry).
template <class Entry>
void encode_entries(const MigratedConnection* c, size_t n, std::vector<uint8_t>& out) {
    const size_t base = out.size();
    out.resize(base + 4 + n * Entry::kBytes);  // then written without bounds checks
    RawWriter w(out.data() + base);
    w.u32(static_cast<uint32_t>(n));
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* start = w.at();
        Entry::put_tuples(w, c[i]);
        put_connection_fields(w, c[i]);
        w.zeros(Entry::kBytes - static_cast<size_t>(w.at() - start));  // reserved bytes
    }
}

/// Decodes a payload of connection entries of one layout (FullEntry, Ipv4Entry) into ctx.
template <class Entry>
std::string decode_entries(const uint8_t* p, size_t n, DecodeContext& ctx) {
    WireReader r(p, n);
    const uint32_t count = r.u32();
    if (count > kMaxConnectionsPerSection)
        return std::to_string(count) + " connections in one section (at most " +
               std::to_string(kMaxConnectionsPerSection) + ")";
    if (n != 4 + size_t{count} * Entry::kBytes)
        return std::string(Entry::kName) + " payload length does not match its count";
    MigrationState& s = *ctx.state;
    // No more than the target has room for, even when the count claims more.
    const size_t live = ctx.slot_of_tuple.size();
    const size_t more = std::min<size_t>(
        count, ctx.max_connections - std::min<size_t>(live, ctx.max_connections) + 1);
    const size_t hint = std::min<size_t>(ctx.connections_hint, size_t{ctx.max_connections} + 1);
    size_t want = std::max(s.connections.size() + more, hint);
    // Without a hint (a stream decoded section by section as it arrives over the network) the
    // room doubles: reserved one section at a time, it would move what was decoded each time.
    if (want > s.connections.capacity() && hint == 0)
        want = std::max(want, 2 * s.connections.capacity());
    reserve_large(s.connections, want);
    ctx.gone.reserve(std::max(ctx.gone.size() + more, hint));
    ctx.slot_of_number.reserve(std::max(ctx.slot_of_number.size() + more, hint));
    ctx.slot_of_tuple.reserve(std::max(live + more, hint));
    // The length is checked above: each entry is read without bounds checks, straight into
    // the state (an entry that repeats a connection then replaces that one's slot). The index
    // is probed for the entry kHashAhead further on while this one is read: at 100,000
    // connections nearly every probe misses the cache.
    auto hash_of_entry = [p](uint32_t k) {
        RawReader a(p + 4 + size_t{k} * Entry::kBytes);
        CtTuple t;
        Entry::read_orig(a, &t);
        return ct_tuple_hash(t);
    };
    uint32_t hashes[kHashAhead];
    for (uint32_t k = 0; k < kHashAhead && k < count; ++k) {
        hashes[k] = hash_of_entry(k);
        ctx.slot_of_tuple.prefetch(hashes[k]);
    }
    for (uint32_t i = 0; i < count; ++i) {
        const uint32_t hash = hashes[i % kHashAhead];
        if (i + kHashAhead < count) {
            hashes[i % kHashAhead] = hash_of_entry(i + kHashAhead);
            ctx.slot_of_tuple.prefetch(hashes[i % kHashAhead]);
        }
        // Built only for an error message.
        auto where = [&ctx] { return "connection " + std::to_string(ctx.entries) + ": "; };
        RawReader e(p + 4 + size_t{i} * Entry::kBytes);
        const auto slot_new = static_cast<uint32_t>(s.connections.size());
        MigratedConnection& c = s.connections.emplace_back();
        Entry::read_tuples(e, &c.orig, &c.reply);
        if (!Entry::tuples_ok(c)) return where() + Entry::tuples_error(c);
        if (std::string err = read_connection_fields(e, c, ctx); !err.empty()) return where() + err;
        const auto [slot, fresh] =
            ctx.slot_of_tuple.try_emplace(c.orig, hash, slot_new, s.connections);
        if (ctx.slot_of_tuple.size() > ctx.max_connections)
            return where() + "more than " + std::to_string(ctx.max_connections) +
                   " connections, which is all this ferryd has room for";
        if (fresh) {
            ctx.gone.push_back(false);
        } else {
            s.connections[slot] = c;
            s.connections.pop_back();
        }
        ctx.slot_of_number.push_back(slot);
        ++ctx.entries;
    }
    return "";
}

}  // namespace

// ---- Encoders ----------------------------------------------------------------------------------

void encode_port(const MigratedPort& p, std::vector<uint8_t>& out) {
    WireWriter w(out);
    w.str8(p.name);
    w.bytes(p.mac.data(), 6);
    w.u16(static_cast<uint16_t>(p.addresses.size()));
    for (const MigratedAddress& a : p.addresses) {
        w.u8(a.family);
        w.u8(a.prefix_length);
        w.u16(a.flags);
        w.bytes(a.address.data(), 16);
    }
}

void encode_macs(const std::vector<MigratedMac>& macs, std::vector<uint8_t>& out) {
    WireWriter w(out);
    w.u32(static_cast<uint32_t>(macs.size()));
    for (const MigratedMac& m : macs) {
        w.bytes(m.mac.data(), 6);
        w.u16(m.vlan);
        w.u16(m.port);
        w.u32(m.age_ms);
    }
}

bool fits_ipv4_entry(const MigratedConnection& c) {
    return c.orig.ip_version == 4 && c.reply.ip_version == 4 && c.orig.proto == c.reply.proto &&
           c.orig.zone == c.reply.zone;
}

void encode_connections(const MigratedConnection* c, size_t n, std::vector<uint8_t>& out) {
    encode_entries<FullEntry>(c, n, out);
}

void encode_connections_ipv4(const MigratedConnection* c, size_t n, std::vector<uint8_t>& out) {
    encode_entries<Ipv4Entry>(c, n, out);
}

void encode_connections_gone(const std::vector<CtTuple>& gone, std::vector<uint8_t>& out) {
    WireWriter w(out);
    w.u32(static_cast<uint32_t>(gone.size()));
    for (const CtTuple& t : gone) put_tuple(w, t);
}

void encode_dpi_streams(uint64_t hash, const std::vector<MigratedDpi>& dpi,
                        std::vector<uint8_t>& out) {
    WireWriter w(out);
    w.u64(hash);
    w.u32(static_cast<uint32_t>(dpi.size()));
    for (const MigratedDpi& d : dpi) {
        w.u32(d.connection);
        for (int dir = 0; dir < 2; ++dir) {
            w.u8(d.state.dir_state[dir]);
            w.u32(d.state.seen[dir]);
            w.u32(d.state.next_seq[dir]);
            w.u32(static_cast<uint32_t>(d.state.streams[dir].size()));
            w.bytes(d.state.streams[dir].data(), d.state.streams[dir].size());
        }
    }
}

void encode_rules(const std::string& json, std::vector<uint8_t>& out) {
    WireWriter w(out);
    w.u32(static_cast<uint32_t>(json.size()));
    w.bytes(reinterpret_cast<const uint8_t*>(json.data()), json.size());
}

// ---- Decoders ----------------------------------------------------------------------------------

std::string decode_port(const uint8_t* p, size_t n, DecodeContext& ctx) {
    MigrationState& s = *ctx.state;
    if (!s.connections.empty() || ctx.mac_count != 0 || ctx.dpi_count != 0)
        return "a PORT section after sections that refer to ports";
    if (s.ports.size() == kMaxStreamPorts)
        return "more than " + std::to_string(kMaxStreamPorts) + " ports";
    WireReader r(p, n);
    MigratedPort port;
    if (!r.str8(&port.name, kMaxPortName) || !valid_port_name(port.name))
        return "port name is not 1..31 of [A-Za-z0-9_.-]";
    for (const MigratedPort& other : s.ports)
        if (other.name == port.name) return "port " + port.name + " appears twice";
    r.bytes(port.mac.data(), 6);
    const uint16_t count = r.u16();
    if (count > kMaxPortAddresses)
        return "port " + port.name + ": " + std::to_string(count) + " addresses (at most " +
               std::to_string(kMaxPortAddresses) + ")";
    for (uint16_t i = 0; i < count && r.ok(); ++i) {
        MigratedAddress a;
        a.family = r.u8();
        a.prefix_length = r.u8();
        a.flags = r.u16();
        r.bytes(a.address.data(), 16);
        if (!r.ok()) break;
        if (a.family != 4 && a.family != 6)
            return "port " + port.name + ": address family " + std::to_string(a.family);
        if (a.prefix_length > (a.family == 4 ? 32 : 128))
            return "port " + port.name + ": prefix length " + std::to_string(a.prefix_length);
        if ((a.flags & ~(kAddrConfigured | kAddrLearned | kAddrLinkLocal)) != 0)
            return "port " + port.name + ": unknown address flags";
        if (a.family == 4 &&
            std::any_of(a.address.begin() + 4, a.address.end(), [](uint8_t b) { return b != 0; }))
            return "port " + port.name + ": IPv4 address with bytes after it";
        port.addresses.push_back(a);
    }
    if (!r.done()) return "PORT payload length does not match its contents";
    s.ports.push_back(std::move(port));
    return "";
}

std::string decode_macs(const uint8_t* p, size_t n, DecodeContext& ctx) {
    WireReader r(p, n);
    const uint32_t count = r.u32();
    if (count > kMaxMacs - ctx.mac_count) return "more than " + std::to_string(kMaxMacs) + " MACs";
    if (n != 4 + size_t{count} * 14) return "MACS payload length does not match its count";
    for (uint32_t i = 0; i < count; ++i) {
        MigratedMac m;
        r.bytes(m.mac.data(), 6);
        m.vlan = r.u16();
        m.port = r.u16();
        m.age_ms = r.u32();
        if (m.vlan > 4095 && m.vlan != 0xffff) return "MAC with VLAN " + std::to_string(m.vlan);
        if (m.port == kNoStreamPort) return "MAC without a port";
        if (std::string e = port_ref(m.port, ctx); !e.empty()) return "MAC on " + e;
        ctx.state->macs.push_back(m);
    }
    ctx.mac_count += count;
    return r.done() ? "" : "MACS payload length does not match its count";
}

std::string decode_connections(const uint8_t* p, size_t n, DecodeContext& ctx) {
    return decode_entries<FullEntry>(p, n, ctx);
}

std::string decode_connections_ipv4(const uint8_t* p, size_t n, DecodeContext& ctx) {
    return decode_entries<Ipv4Entry>(p, n, ctx);
}

std::string decode_connections_gone(const uint8_t* p, size_t n, DecodeContext& ctx) {
    WireReader r(p, n);
    const uint32_t count = r.u32();
    if (n != 4 + size_t{count} * kTupleWireBytes)
        return "CONNECTIONS_GONE payload length does not match its count";
    for (uint32_t i = 0; i < count; ++i) {
        CtTuple t;
        if (std::string e = get_tuple(r, &t); !e.empty()) return "gone connection: " + e;
        const uint32_t slot = ctx.slot_of_tuple.erase(t, ctx.state->connections);
        if (slot == TupleSlots::kNone) return "a gone connection that the stream did not send";
        ctx.gone[slot] = true;
        ctx.state->gone.push_back(t);
        ++ctx.gone_count;
    }
    return r.done() ? "" : "CONNECTIONS_GONE payload length does not match its count";
}

std::string decode_dpi_streams(const uint8_t* p, size_t n, DecodeContext& ctx) {
    WireReader r(p, n);
    const uint64_t hash = r.u64();
    const uint32_t count = r.u32();
    if (ctx.dpi_count != 0 && hash != ctx.state->dpi_hash)
        return "DPI_STREAMS sections of different databases";
    ctx.state->dpi_hash = hash;
    for (uint32_t i = 0; i < count; ++i) {
        MigratedDpi d;
        d.connection = r.u32();
        if (r.ok() && d.connection >= ctx.slot_of_number.size())
            return "DPI stream of connection " + std::to_string(d.connection) +
                   ", which the stream did not send";
        d.state.db_hash = hash;
        for (int dir = 0; dir < 2; ++dir) {
            d.state.dir_state[dir] = r.u8();
            d.state.seen[dir] = r.u32();
            d.state.next_seq[dir] = r.u32();
            const uint32_t len = r.u32();
            if (d.state.dir_state[dir] > kDpiDone) return "unknown DPI direction state";
            if (len > kMaxDpiStreamBytes) return "DPI stream of " + std::to_string(len) + " bytes";
            const uint8_t* v = r.view(len);
            if (v == nullptr) return "truncated DPI stream";
            d.state.streams[dir].assign(v, v + len);
        }
        if (!r.ok()) return "truncated DPI stream";
        ctx.state->dpi.push_back(std::move(d));
        ++ctx.dpi_count;
    }
    return r.done() ? "" : "DPI_STREAMS payload length does not match its contents";
}

std::string decode_rules(const uint8_t* p, size_t n, DecodeContext& ctx) {
    WireReader r(p, n);
    const uint32_t len = r.u32();
    const uint8_t* v = r.view(len);
    if (v == nullptr || !r.done()) return "RULES payload length does not match its contents";
    if (!ctx.state->rules_json.empty()) return "more than one RULES section";
    ctx.state->rules_json.assign(reinterpret_cast<const char*>(v), len);
    return "";
}

std::string decode_counters(const uint8_t* p, size_t n, DecodeContext& /*ctx*/) {
    WireReader r(p, n);
    const uint32_t count = r.u32();
    for (uint32_t i = 0; i < count && r.ok(); ++i) {
        std::string name;
        if (!r.str8(&name, kMaxPortName)) break;
        r.view(32);
    }
    return r.done() ? "" : "COUNTERS payload length does not match its contents";
}

std::string decode_precopy_end(const uint8_t* /*p*/, size_t n, DecodeContext& /*ctx*/) {
    return n == 0 ? "" : "PRECOPY_END payload must be empty";
}

}  // namespace ferry
