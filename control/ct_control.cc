#include "control/ct_control.h"

#include <arpa/inet.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <cstring>

#include "control/log.h"
#include "dataplane/conntrack/ct_action.h"
#include "dataplane/conntrack/ct_defrag_stage.h"
#include "dataplane/ip_proto.h"

namespace ferry {
namespace {

using json = nlohmann::json;

std::string addr_text(const uint8_t* a, uint8_t version) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(version == 4 ? AF_INET : AF_INET6, a, buf, sizeof(buf));
    return buf;
}

std::string proto_text(uint8_t proto) {
    switch (proto) {
        case 1:
            return "icmp";
        case 6:
            return "tcp";
        case 17:
            return "udp";
        case 58:
            return "icmpv6";
        default:
            return std::to_string(proto);
    }
}

json tuple_json(const CtTuple& t) {
    return json{{"src", addr_text(t.src, t.ip_version)},
                {"dst", addr_text(t.dst, t.ip_version)},
                {"sport", t.sport},
                {"dport", t.dport}};
}

}  // namespace

std::string ct_tuple_text(const CtTuple& t) {
    auto end = [&t](const uint8_t* a, uint16_t port) {
        std::string s = addr_text(a, t.ip_version);
        if (t.ip_version == 6) s.insert(s.begin(), '['), s.push_back(']');
        s.push_back(':');
        return s.append(std::to_string(port));
    };
    std::string out = proto_text(t.proto);
    out.append(" ").append(end(t.src, t.sport)).append(" -> ").append(end(t.dst, t.dport));
    return out.append(" zone ").append(std::to_string(t.zone));
}

std::string ct_state_text(const CtEntry& e) {
    const uint8_t proto = e.tuple[0].proto;
    if (proto == IPPROTO_TCP) return std::string(tcp_state_name(e.tcp.state));
    const bool replied = (e.flags & kCtfSeenReply) != 0;
    const std::string p = proto == IPPROTO_UDP          ? "UDP"
                          : (proto == 1 || proto == 58) ? "ICMP"
                                                        : "IP";
    return p + (replied ? "_REPLIED" : "_UNREPLIED");
}

Result<std::unique_ptr<ConntrackControl>> ConntrackControl::create(
    const ConntrackConfig& cfg, const std::vector<WorkerState*>& ws) {
    std::unique_ptr<ConntrackControl> c(new ConntrackControl());
    c->zones_ = std::make_unique<CtZoneTable>();
    c->timeouts_ = cfg.timeouts;
    for (const CtZoneConfig& z : cfg.zones) {
        c->zones_->zones[z.zone].limit.store(z.limit, std::memory_order_relaxed);
        c->zones_->zones[z.zone].port_limit.store(z.port_limit, std::memory_order_relaxed);
        c->zones_->zones[z.zone].liberal.store(z.liberal ? 1 : 0, std::memory_order_relaxed);
    }
    c->ws_ = ws;
    c->clock_.tsc0 = rte_get_tsc_cycles();
    c->clock_.cycles_per_ms = std::max<uint64_t>(1, rte_get_tsc_hz() / 1000);
    const auto n = static_cast<uint16_t>(ws.size());
    for (uint16_t i = 0; i < n; ++i) {
        auto shard = ConntrackShard::create(cfg.capacity, i, n, c->zones_.get(), &c->timeouts_);
        if (shard == nullptr)
            return make_error(ErrorCode::kFailed,
                              "conntrack: cannot allocate " + std::to_string(cfg.capacity) +
                                  " connections for worker " + std::to_string(i));
        ws[i]->ct = shard.get();
        // A sweep of the whole table about every second, one slice per millisecond.
        ws[i]->ct_expire_budget = cfg.capacity / 1000 + 1;
        ws[i]->ct_clock = &c->clock_;
        ws[i]->n_workers = n;
        c->shards_.push_back(std::move(shard));
        // Fragments are held per worker, within fixed bounds (docs/conntrack.md, "Fragments").
        auto defrag = CtDefrag::create(CtDefragLimits{}, ct_defrag_release, ws[i]);
        if (defrag == nullptr)
            return make_error(
                ErrorCode::kFailed,
                "conntrack: cannot allocate the reassembly table of worker " + std::to_string(i));
        ws[i]->ct_defrag = defrag.get();
        c->defrags_.push_back(std::move(defrag));
    }
    // One ring per ordered pair of workers: single producer, single consumer, no sharing.
    for (uint16_t i = 0; i < n; ++i) {
        for (uint16_t j = 0; j < n; ++j) {
            if (i == j) continue;
            const std::string name = "ferry_ct_" + std::to_string(i) + "_" + std::to_string(j);
            rte_ring* r = rte_ring_create_elem(name.c_str(), sizeof(CtHandoff), kCtRingSize,
                                               SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
            if (r == nullptr)
                return make_error(ErrorCode::kFailed, "conntrack: cannot create ring " + name +
                                                          ": " + rte_strerror(rte_errno));
            c->rings_.push_back(r);
            ws[i]->ct_out[j] = r;
            ws[j]->ct_in[i] = r;
        }
    }
    return c;
}

namespace {

/// Frees a fragment a reassembly table still holds at teardown, counting nothing: the worker
/// whose counters it would go to has stopped. Context: control.
void free_held_fragment(void*, void* pkt, uint16_t, DropReason) {
    rte_pktmbuf_free(static_cast<rte_mbuf*>(pkt));
}

}  // namespace

ConntrackControl::~ConntrackControl() {
    // The workers are stopped before the switch is torn down; packets still queued or held for
    // reassembly go back to their pool.
    for (auto& d : defrags_) {
        d->set_release(free_held_fragment, nullptr);
        d->clear();
    }
    for (rte_ring* r : rings_) {
        CtHandoff m;
        while (rte_ring_sc_dequeue_elem(r, &m, sizeof(m)) == 0) rte_pktmbuf_free(m.pkt);
        rte_ring_free(r);
    }
}

uint64_t ConntrackControl::now_ms() const {
    return clock_.now_ms(rte_get_tsc_cycles());
}

bool ConntrackControl::matches(const CtEntry& e, const CtFilter& f) const {
    // Redirects are another worker's bookkeeping; their owner's notices remove them.
    if (e.flags & kCtfRedirect) return false;
    if (f.zone && e.tuple[0].zone != *f.zone) return false;
    if (f.port && e.port[0] != *f.port && e.port[1] != *f.port) return false;
    if (f.has_address) {
        if (e.tuple[0].ip_version != f.address_version) return false;
        bool any = false;
        for (const CtTuple& t : e.tuple)
            any = any || std::memcmp(t.src, f.address, 16) == 0 ||
                  std::memcmp(t.dst, f.address, 16) == 0;
        if (!any) return false;
    }
    if (f.state && ct_state_text(e) != *f.state) return false;
    return true;
}

json ConntrackControl::list(const CtFilter& f, uint64_t cursor, size_t limit,
                            const std::function<std::string(uint16_t)>& port_name) const {
    json out = json::array();
    const uint64_t now = now_ms();
    auto worker = static_cast<uint16_t>(cursor >> 32);
    auto index = static_cast<uint32_t>(cursor);
    for (; worker < shards_.size(); ++worker, index = 0) {
        const CtTable& t = shards_[worker]->table();
        for (uint32_t i = t.next_live(index); i != kCtNone; i = t.next_live(i + 1)) {
            const CtEntry& e = t.entry(i);
            if (!matches(e, f)) continue;
            if (out.size() == limit)
                return json{{"connections", out}, {"next", (uint64_t{worker} << 32) | i}};
            json ports = json::array();
            for (uint16_t p : e.port) ports.push_back(p == kCtNoPort ? json() : json(port_name(p)));
            std::string nat = (e.flags & kCtfSrcNat) ? "src" : (e.flags & kCtfDstNat) ? "dst" : "";
            out.push_back(
                json{{"worker", worker},
                     {"zone", e.tuple[0].zone},
                     {"proto", proto_text(e.tuple[0].proto)},
                     {"state", ct_state_text(e)},
                     {"orig", tuple_json(e.tuple[0])},
                     {"reply", tuple_json(e.tuple[1])},
                     {"nat", nat.empty() ? json() : json(nat)},
                     {"mark", e.mark},
                     {"blocked", (e.flags & kCtfBlocked) != 0},
                     {"dormant", e.redirect_owner == kCtDormant},
                     {"ports", ports},
                     {"packets", {e.packets[0], e.packets[1]}},
                     {"bytes", {e.bytes[0], e.bytes[1]}},
                     {"timeout_s", e.expires_ms > now ? (e.expires_ms - now) / 1000 : 0}});
        }
    }
    return json{{"connections", out}, {"next", nullptr}};
}

json ConntrackControl::flush(const CtFilter& f) {
    uint64_t n = 0;
    for (auto& s : shards_) {
        CtTable& t = s->table();
        for (uint32_t i = t.next_live(0); i != kCtNone; i = t.next_live(i + 1)) {
            if (!matches(t.entry(i), f)) continue;
            s->remove(i);
            ++n;
        }
    }
    FERRY_LOG_INFO_IN(kCt, "flushed %llu connections", static_cast<unsigned long long>(n));
    return json{{"flushed", n}};
}

json ConntrackControl::stats() const {
    json by_state = json::object();
    uint64_t total = 0;
    CtShardCounters sum{};
    json workers = json::array();
    for (const auto& s : shards_) {
        const CtShardCounters& c = s->counters();
        for (size_t st = 1; st < static_cast<size_t>(TcpState::kCount); ++st)
            sum.by_tcp_state[st] += counter_read(c.by_tcp_state[st]);
        sum.udp += counter_read(c.udp);
        sum.icmp += counter_read(c.icmp);
        sum.other += counter_read(c.other);
        json w{{"worker", s->worker()},
               {"connections", s->table().size()},
               {"capacity", s->table().capacity()}};
        for (const CtCounterInfo& k : kCtCounters)
            w[std::string(k.name)] = counter_read(c.*k.field);
        for (const CtWorkerCounterInfo& k : kCtHandoffCounters)
            w[std::string(k.name)] = counter_read(ws_[s->worker()]->counters.*k.field);
        workers.push_back(w);
        total += s->table().size() - counter_read(c.redirects);
    }
    for (size_t st = 1; st < static_cast<size_t>(TcpState::kCount); ++st)
        by_state["tcp_" + std::string(tcp_state_name(static_cast<TcpState>(st)))] =
            sum.by_tcp_state[st];
    by_state["udp"] = sum.udp;
    by_state["icmp"] = sum.icmp;
    by_state["other"] = sum.other;
    json zones = json::array();
    for (uint32_t z = 0; z < kCtZones; ++z) {
        const CtZone& zone = zones_->zones[z];
        const uint32_t count = zone.count.load(std::memory_order_relaxed);
        const uint32_t lim = zone.limit.load(std::memory_order_relaxed);
        const uint64_t drops = zone.limit_drops.load(std::memory_order_relaxed);
        const bool liberal = zone.liberal.load(std::memory_order_relaxed) != 0;
        const uint32_t port_lim = zone.port_limit.load(std::memory_order_relaxed);
        if (count == 0 && lim == 0 && drops == 0 && !liberal && port_lim == 0) continue;
        json entry{{"zone", z},
                   {"connections", count},
                   {"limit", lim},
                   {"limit_drops", drops},
                   {"liberal", liberal}};
        // Only when set, as in ct.limit's reply: a zone without one keeps the shape it had.
        if (port_lim != 0) entry["port_limit"] = port_lim;
        zones.push_back(std::move(entry));
    }
    // Connections by the port that opened them, and refusals by a zone's port_limit.
    json ports = json::array();
    for (uint16_t slot = 0; slot < kCtPortSlots; ++slot) {
        const CtPortCount& pc = zones_->ports[slot];
        const uint32_t count = pc.count.load(std::memory_order_relaxed);
        const uint64_t drops = pc.limit_drops.load(std::memory_order_relaxed);
        if (count == 0 && drops == 0) continue;
        ports.push_back(json{{"port_index", slot}, {"connections", count}, {"limit_drops", drops}});
    }
    return json{{"connections", total},
                {"by_state", by_state},
                {"zones", zones},
                {"ports", ports},
                {"workers", workers}};
}

json ConntrackControl::limit(uint16_t zone, std::optional<uint32_t> limit,
                             std::optional<bool> liberal, std::optional<uint32_t> port_limit) {
    CtZone& z = zones_->zones[zone];
    // Relaxed: workers read these once per new connection; a late view is harmless.
    if (limit) z.limit.store(*limit, std::memory_order_relaxed);
    if (liberal) z.liberal.store(*liberal ? 1 : 0, std::memory_order_relaxed);
    if (port_limit) z.port_limit.store(*port_limit, std::memory_order_relaxed);
    if (limit || liberal || port_limit) {
        const uint32_t pl = z.port_limit.load(std::memory_order_relaxed);
        const std::string per_port = pl != 0 ? ", port limit " + std::to_string(pl) : "";
        FERRY_LOG_INFO_IN(kCt, "zone %u: limit %u%s, liberal %s", zone,
                          z.limit.load(std::memory_order_relaxed), per_port.c_str(),
                          z.liberal.load(std::memory_order_relaxed) != 0 ? "yes" : "no");
    }
    json out{{"zone", zone},
             {"limit", z.limit.load(std::memory_order_relaxed)},
             {"liberal", z.liberal.load(std::memory_order_relaxed) != 0},
             {"connections", z.count.load(std::memory_order_relaxed)}};
    // Only when set: the reply of a zone without one keeps the shape clients already compare.
    if (const uint32_t pl = z.port_limit.load(std::memory_order_relaxed); pl != 0)
        out["port_limit"] = pl;
    return out;
}

}  // namespace ferry
