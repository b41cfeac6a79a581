#include "control/switch.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "control/ct_control.h"
#include "control/dpi_control.h"
#include "control/log.h"
#include "control/migration_host.h"
#include "dataplane/classifier.h"
#include "dataplane/flow_cache.h"
#include "dataplane/hash_key.h"
#include "dataplane/mac_table.h"
#include "dataplane/meter.h"
#include "migrate/inband_migration.h"

namespace ferry {
namespace {

constexpr uint32_t kLearnRingSize = 4096;
// A worker reaches its next pause point within a burst (microseconds) once it runs; the bound is
// for a host so busy that the worker's thread waits for a core. A second is long enough not to
// fail a migration over scheduling delays and short enough to tell a stuck worker.
constexpr auto kPauseTimeout = std::chrono::milliseconds(1000);

std::string format_mac(uint64_t addr) {
    char buf[18];
    snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", unsigned(addr >> 40) & 0xff,
             unsigned(addr >> 32) & 0xff, unsigned(addr >> 24) & 0xff, unsigned(addr >> 16) & 0xff,
             unsigned(addr >> 8) & 0xff, unsigned(addr) & 0xff);
    return buf;
}

void add_counters(PortCounters& into, const PortCounters& c) {
    into.rx_packets += counter_read(c.rx_packets);
    into.rx_bytes += counter_read(c.rx_bytes);
    into.tx_packets += counter_read(c.tx_packets);
    into.tx_bytes += counter_read(c.tx_bytes);
    for (size_t i = 0; i < kDropReasonCount; ++i) into.drops[i] += counter_read(c.drops[i]);
}

}  // namespace

Switch::Switch(const Config& cfg) : cfg_(cfg) {}

Result<std::unique_ptr<Switch>> Switch::create(const Config& cfg) {
    std::unique_ptr<Switch> sw(new Switch(cfg));
    Status st = sw->init();
    if (!st) return st.error();
    for (const PortConfig& p : cfg.ports) {
        auto added = sw->add_port(p);
        if (!added) return added.error();
    }
    if (!cfg.rules.empty()) {
        auto added = sw->rules_->add(cfg.rules, sw->rule_context(), "rules");
        if (!added) return added.error();
    }
    return sw;
}

Status Switch::init() {
    // Before any table exists: every table hash a guest's packets feed is keyed with these.
    if (!hash_keys_init())
        return make_error(ErrorCode::kFailed, "cannot draw the hash keys (getrandom failed)");
    start_tsc_ = rte_get_tsc_cycles();
    event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (event_fd_ < 0) return make_error(ErrorCode::kFailed, "eventfd failed");
    if (cfg_.workers.size() > kWorkerSlots)
        return make_error(ErrorCode::kInvalidParams, "workers: at most 16");
    for (unsigned lcore : cfg_.workers) {
        if (lcore >= RTE_MAX_LCORE || !rte_lcore_is_enabled(lcore))
            return make_error(ErrorCode::kInvalidParams,
                              "workers: lcore " + std::to_string(lcore) +
                                  " is not enabled in the EAL arguments (--lcores)");
        if (lcore == rte_get_main_lcore())
            return make_error(ErrorCode::kInvalidParams,
                              "workers: lcore " + std::to_string(lcore) +
                                  " is the main lcore, which runs the control thread");
    }
    pool_ = rte_pktmbuf_pool_create("ferry_mbufs", cfg_.mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                    static_cast<int>(rte_socket_id()));
    if (pool_ == nullptr)
        return make_error(ErrorCode::kFailed, std::string("cannot create the mbuf pool (") +
                                                  std::to_string(cfg_.mbufs) +
                                                  " mbufs): " + rte_strerror(rte_errno));
    size_t qsz = rte_rcu_qsbr_get_memsize(kWorkerSlots);
    qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("ferry_qsbr", qsz, RTE_CACHE_LINE_SIZE));
    if (qsbr_ == nullptr || rte_rcu_qsbr_init(qsbr_, kWorkerSlots) != 0)
        return make_error(ErrorCode::kFailed, "cannot create the RCU state");
    macs_ = MacTable::create("ferry_macs", cfg_.mac_table_size, qsbr_);
    if (macs_ == nullptr)
        return make_error(ErrorCode::kFailed,
                          std::string("cannot create the MAC table: ") + rte_strerror(rte_errno));
    for (size_t i = 0; i < cfg_.workers.size(); ++i) {
        auto* w = new WorkerState();
        w->index = static_cast<uint16_t>(i);
        w->lcore = cfg_.workers[i];
        std::string ring = "ferry_learn_" + std::to_string(i);
        w->learn_ring = rte_ring_create_elem(ring.c_str(), sizeof(LearnEvent), kLearnRingSize,
                                             SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (w->learn_ring == nullptr) {
            delete w;
            return make_error(ErrorCode::kFailed, "cannot create learn ring " + ring);
        }
        ring = "ferry_addr_" + std::to_string(i);
        w->address_ring = rte_ring_create_elem(ring.c_str(), sizeof(AddressEvent), kLearnRingSize,
                                               SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (w->address_ring == nullptr) {
            rte_ring_free(w->learn_ring);
            delete w;
            return make_error(ErrorCode::kFailed, "cannot create address ring " + ring);
        }
        w->pool = pool_;
        w->qsbr = qsbr_;
        w->macs = macs_;
        w->table = &table_;
        w->clock_s = &clock_s_;
        w->mac_refresh_s = std::max<uint32_t>(1, cfg_.mac_aging_s / 2);
        w->backoff = WorkerBackoff{cfg_.idle.enabled, cfg_.idle.min_us, cfg_.idle.max_us,
                                   cfg_.idle.idle_polls};
        workers_.push_back(w);
    }
    publish();
    return init_rules();
}

Status Switch::init_rules() {
    for (WorkerState* w : workers_) {
        auto cache = FlowCache::create(cfg_.flow_cache_entries);
        if (!cache) return make_error(ErrorCode::kFailed, "cannot allocate the flow cache");
        w->flow_cache = cache.get();
        flow_caches_.push_back(std::move(cache));
        rule_counters_.emplace_back(cfg_.max_rules, RuleCounters{});
        w->rule_counters = rule_counters_.back().data();
        w->rule_slots = cfg_.max_rules;
        auto meters = std::make_unique<MeterSet>();
        for (const MeterConfig& m : cfg_.meters) {
            // Each worker meters its share of the rates; see dataplane/meter.h.
            rte_meter_trtcm_params p{};
            uint64_t n = workers_.size();
            p.cir = m.cir_kbps * 1000 / 8 / n;
            p.pir = m.pir_kbps * 1000 / 8 / n;
            p.cbs = m.cbs_bytes;
            p.pbs = m.pbs_bytes;
            if (rte_meter_trtcm_profile_config(&meters->profiles[m.id], &p) != 0 ||
                rte_meter_trtcm_config(&meters->states[m.id], &meters->profiles[m.id]) != 0)
                return make_error(ErrorCode::kInvalidParams,
                                  "meters: meter " + std::to_string(m.id) + " is not valid");
            meters->present[m.id] = true;
        }
        w->meters = meters.get();
        meters_.push_back(std::move(meters));
    }
    auto ct = ConntrackControl::create(cfg_.conntrack, workers_);
    if (!ct) return ct.error();
    ct_ = std::move(*ct);
    auto dpi = DpiControl::create(cfg_.dpi, workers_, *ct_, qsbr_);
    if (!dpi) return dpi.error();
    dpi_ = std::move(*dpi);
    rules_ = std::make_unique<RuleTable>(qsbr_, cfg_.max_rules, workers_);
    rules_->set_offload_hooks([this] { offload_.sync(rules_->table0_candidates()); },
                              [this](uint32_t slot) { return offload_.state(slot); });
    for (WorkerState* w : workers_) w->classifier = rules_->published();
    return Ok{};
}

RuleContext Switch::rule_context() const {
    RuleContext ctx;
    ctx.port_slot = [this](const std::string& name) -> std::optional<uint16_t> {
        const PortRecord* r = find(name);
        if (r == nullptr) return std::nullopt;
        return r->slot;
    };
    ctx.meter_exists = [this](uint32_t id) {
        return std::any_of(cfg_.meters.begin(), cfg_.meters.end(),
                           [id](const MeterConfig& m) { return m.id == id; });
    };
    return ctx;
}

Switch::~Switch() {
    stop_workers();
    close_ports();
    rules_.reset();
    dpi_.reset();
    ct_.reset();
    delete table_.load();
    for (WorkerState* w : workers_) {
        rte_ring_free(w->learn_ring);
        rte_ring_free(w->address_ring);
        delete w;
    }
    delete macs_;
    rte_free(qsbr_);
    rte_mempool_free(pool_);
    if (event_fd_ >= 0) close(event_fd_);
}

Status Switch::start_workers() {
    for (WorkerState* w : workers_) {
        w->stop.store(false);
        int rc = rte_eal_remote_launch(worker_main, w, w->lcore);
        if (rc != 0) {
            stop_workers();
            return make_error(ErrorCode::kFailed,
                              "cannot launch worker on lcore " + std::to_string(w->lcore));
        }
    }
    workers_started_ = true;
    for (WorkerState* w : workers_)
        FERRY_LOG_INFO("worker %u started on lcore %u", w->index, w->lcore);
    return Ok{};
}

void Switch::stop_workers() {
    if (!workers_started_) return;
    for (WorkerState* w : workers_) w->stop.store(true, std::memory_order_release);
    for (WorkerState* w : workers_) rte_eal_wait_lcore(w->lcore);
    workers_started_ = false;
}

Status Switch::pause() {
    if (!workers_started_) return Ok{};
    // Nested pauses (an unsafe command while a migration holds the workers) only count.
    if (pause_depth_ > 0) {
        ++pause_depth_;
        return Ok{};
    }
    uint32_t epochs[kWorkerSlots] = {};
    for (size_t i = 0; i < workers_.size(); ++i) epochs[i] = workers_[i]->pause.request();
    auto deadline = std::chrono::steady_clock::now() + kPauseTimeout;
    for (size_t i = 0; i < workers_.size(); ++i) {
        WorkerState* w = workers_[i];
        while (!w->pause.parked(epochs[i])) {
            if (std::chrono::steady_clock::now() > deadline) {
                for (WorkerState* v : workers_) release_worker(v);
                return make_error(ErrorCode::kBusy, "worker on lcore " + std::to_string(w->lcore) +
                                                        " did not pause within 1 s");
            }
            std::this_thread::yield();
        }
    }
    pause_depth_ = 1;
    return Ok{};
}

void Switch::resume() {
    if (pause_depth_ == 0 || --pause_depth_ > 0) return;
    for (WorkerState* w : workers_) release_worker(w);
}

Status Switch::pause_worker(WorkerState* w) {
    if (!workers_started_) return Ok{};
    const uint32_t epoch = w->pause.request();
    auto deadline = std::chrono::steady_clock::now() + kPauseTimeout;
    while (!w->pause.parked(epoch)) {
        if (std::chrono::steady_clock::now() > deadline) {
            resume_worker(w);
            return make_error(ErrorCode::kBusy, "worker on lcore " + std::to_string(w->lcore) +
                                                    " did not pause within 1 s");
        }
        std::this_thread::yield();
    }
    return Ok{};
}

void Switch::resume_worker(WorkerState* w) {
    if (pause_depth_ == 0) release_worker(w);  // all paused: the outer pause lets them go
}

void Switch::release_worker(WorkerState* w) {
    w->pause.release();
}

Result<nlohmann::json> Switch::flow_dump(unsigned lcore, size_t limit) {
    auto it = std::find_if(workers_.begin(), workers_.end(),
                           [lcore](const WorkerState* w) { return w->lcore == lcore; });
    if (it == workers_.end())
        return make_error(ErrorCode::kNotFound,
                          "lcore " + std::to_string(lcore) + " is not a worker");
    WorkerState* w = *it;
    std::map<uint16_t, std::string> slot_names;
    for (const auto& [n, r] : ports_) slot_names[r.slot] = n;
    const Classifier* cls = rules_->published()->load();
    uint64_t gen = cls->generation();
    nlohmann::json entries = nlohmann::json::array();
    // Slices of 256 buckets keep each pause of the worker to a few microseconds.
    constexpr uint32_t kSlice = 256;
    uint32_t next = 0;
    do {
        Status st = pause_worker(w);
        if (!st) return st.error();
        next = w->flow_cache->dump(
            gen, next, kSlice,
            [&](const FlowKey& k, uint8_t table, const CompiledRule* r, uint64_t hits) {
                if (entries.size() >= limit) return;
                auto port = slot_names.find(k.in_port);
                entries.push_back({{"in_port", port == slot_names.end() ? "?" : port->second},
                                   {"eth_src", format_mac(mac_key(k.eth_src, 0))},
                                   {"eth_dst", format_mac(mac_key(k.eth_dst, 0))},
                                   {"eth_type", k.ethertype},
                                   {"ip_proto", k.ip_proto},
                                   {"l4_src", k.l4_src},
                                   {"l4_dst", k.l4_dst},
                                   {"table", table},
                                   {"rule_slot", r == nullptr ? nlohmann::json(nullptr)
                                                              : nlohmann::json(r->index)},
                                   {"hits", hits}});
            });
        resume_worker(w);
    } while (next != 0 && entries.size() < limit);
    auto st = w->flow_cache->stats();
    return nlohmann::json{{"lcore", lcore},
                          {"generation", gen},
                          {"capacity", w->flow_cache->capacity()},
                          {"hits", st.hits},
                          {"misses", st.misses},
                          {"evictions", st.evictions},
                          {"revalidated", st.revalidated},
                          {"entries", entries}};
}

void Switch::publish() {
    auto* t = new PortTable();
    t->generation = ++generation_;
    for (const auto& [name, r] : ports_) {
        PortSlot& s = t->ports[r.slot];
        s.active = true;
        s.link_up = r.link_up;
        s.dpdk_port = r.dev.dpdk_port;
        s.vlan_mode =
            r.cfg.vlan_mode == VlanMode::kAccess ? PortVlanMode::kAccess : PortVlanMode::kTrunk;
        s.tag = r.cfg.tag;
        s.mtu = r.cfg.mtu;
        if (s.vlan_mode == PortVlanMode::kTrunk) {
            if (r.cfg.trunks.empty()) {
                s.trunks.set();
                s.trunks.reset(0);
                s.trunks.reset(kVlanIds - 1);
            }
            for (uint16_t v : r.cfg.trunks) s.trunks.set(v);
        }
        if (r.cfg.security) {
            // Validated when set; should it still not compile, the port sends nothing (closed,
            // not open).
            auto sec = compile_port_security(*r.cfg.security, "security");
            s.security = sec ? *sec : PortSecurity{.enabled = true};
        }
        t->port_limit = std::max<uint16_t>(t->port_limit, r.slot + 1);
        for (size_t q = 0; q < r.rx_worker.size(); ++q) {
            uint16_t wi = r.rx_worker[q];
            t->rx[wi][t->rx_count[wi]++] = RxAssignment{r.slot, static_cast<uint16_t>(q)};
        }
    }
    // Release: pairs with the workers' acquire load, so the table is complete when seen.
    const PortTable* old = table_.exchange(t, std::memory_order_acq_rel);
    if (old != nullptr) {
        // Every worker passes a quiescent state after its last use of the old table.
        rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
        delete old;
    }
}

PortCounters Switch::sum_port_counters(uint16_t slot) const {
    PortCounters sum{};
    for (const WorkerState* w : workers_) add_counters(sum, w->port_counters[slot]);
    return sum;
}

std::optional<uint16_t> Switch::port_slot(const std::string& name) const {
    const PortRecord* r = find(name);
    if (r == nullptr) return std::nullopt;
    return r->slot;
}

std::string Switch::port_name(uint16_t slot) const {
    for (const auto& [name, rec] : ports_)
        if (rec.slot == slot) return name;
    std::string text = std::to_string(slot);
    text.insert(text.begin(), '#');
    return text;
}

void Switch::close_ports() {
    std::lock_guard lock(registry_mutex_);
    for (auto& [name, rec] : ports_) {
        offload_.remove_port(rec.slot);
        port_device_close(rec.dev);
        if (rec.cfg.type == PortType::kVhostUser) inband_remove_port(rec.cfg.path);
    }
    ports_.clear();
}

void Switch::release_ports() {
    released_.clear();
    for (const auto& [name, rec] : ports_) released_.emplace_back(rec.slot, rec.cfg);
    stop_workers();
    close_ports();
    publish();
}

Status Switch::reclaim_ports() {
    // Each port in its old slot: connections, rules and MACs name ports by slot.
    std::vector<std::pair<uint16_t, PortConfig>> ports = std::move(released_);
    released_.clear();
    for (const auto& [slot, cfg] : ports)
        if (auto added = add_port(cfg, slot); !added)
            return make_error(added.error().code,
                              "port " + cfg.name + ": " + added.error().message);
    return start_workers();
}

std::vector<std::pair<std::string, uint16_t>> Switch::port_slots() const {
    std::vector<std::pair<std::string, uint16_t>> out;
    for (const auto& [name, rec] : ports_) out.emplace_back(name, rec.slot);
    return out;
}

std::string Switch::port_mac_text(const std::string& name) const {
    const PortRecord* r = find(name);
    return r == nullptr ? std::string() : port_mac(r->dev.dpdk_port);
}

const Switch::PortRecord* Switch::find(const std::string& name) const {
    auto it = ports_.find(name);
    return it == ports_.end() ? nullptr : &it->second;
}

Result<nlohmann::json> Switch::add_port(const PortConfig& cfg, std::optional<uint16_t> slot) {
    if (find(cfg.name) != nullptr)
        return make_error(ErrorCode::kConflict, "port " + cfg.name + " already exists");
    std::vector<bool> used(kPortSlots, false);
    for (const auto& [n, r] : ports_) {
        used[r.slot] = true;
        if (cfg.type == PortType::kVhostUser && r.cfg.type == PortType::kVhostUser &&
            r.cfg.path == cfg.path)
            return make_error(ErrorCode::kConflict,
                              "port " + n + " already uses socket " + cfg.path);
    }
    if (slot && (*slot >= kPortSlots || used[*slot]))
        return make_error(ErrorCode::kConflict, "slot " + std::to_string(*slot) + " is in use");
    auto free_slot = slot ? used.begin() + *slot : std::find(used.begin(), used.end(), false);
    if (free_slot == used.end())
        return make_error(ErrorCode::kConflict, "all 64 port slots are in use");
    PortRecord rec;
    rec.cfg = cfg;
    rec.slot = static_cast<uint16_t>(free_slot - used.begin());
    // Queue placement is decided once: moving a queue between running workers could let two
    // lcores poll it at the same time.
    std::vector<unsigned> load(workers_.size(), 0);
    for (const auto& [n, r] : ports_)
        for (uint16_t wi : r.rx_worker) ++load[wi];
    for (uint16_t q = 0; q < cfg.queues; ++q) {
        uint16_t wi = 0;
        if (!cfg.rx_pin.empty()) {
            auto it = std::find(cfg_.workers.begin(), cfg_.workers.end(), cfg.rx_pin[q]);
            if (it == cfg_.workers.end())
                return make_error(ErrorCode::kInvalidParams,
                                  "rx_pin[" + std::to_string(q) + "]: lcore " +
                                      std::to_string(cfg.rx_pin[q]) + " is not a worker");
            wi = static_cast<uint16_t>(it - cfg_.workers.begin());
        } else {
            wi = static_cast<uint16_t>(std::min_element(load.begin(), load.end()) - load.begin());
        }
        if (load[wi] >= kRxPerWorker)
            return make_error(ErrorCode::kConflict, "worker " + std::to_string(cfg_.workers[wi]) +
                                                        " already polls 64 queues");
        ++load[wi];
        rec.rx_worker.push_back(wi);
    }
    // Known to in-band migration before the device exists: its first events attach to it.
    const bool vhost = cfg.type == PortType::kVhostUser;
    if (vhost) inband_add_port(std::make_shared<SwitchMigrationHost>(*this), cfg.name, cfg.path);
    auto dev = port_device_open(cfg, worker_count(), pool_, &Switch::on_port_event, this);
    if (!dev) {
        if (vhost) inband_remove_port(cfg.path);
        return dev.error();
    }
    rec.dev = dev.value();
    rec.link_up = port_link_up(rec.dev.dpdk_port);
    offload_.add_port(rec.slot, rec.dev.dpdk_port);
    rec.baseline = sum_port_counters(rec.slot);
    nlohmann::json desc;
    {
        std::lock_guard lock(registry_mutex_);
        auto [it, ok] = ports_.emplace(cfg.name, std::move(rec));
        desc = describe(it->second);
    }
    publish();
    FERRY_LOG_INFO("port %s added (%s, slot %s, link %s)", cfg.name.c_str(),
                   desc["device"].get<std::string>().c_str(), desc["slot"].dump().c_str(),
                   desc["link"].get<std::string>().c_str());
    return desc;
}

Status Switch::del_port(const std::string& name) {
    const PortRecord* r = find(name);
    if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + name);
    std::vector<uint64_t> users = rules_->rules_using_port(r->slot);
    if (!users.empty()) {
        std::string ids;
        for (uint64_t id : users) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
        return make_error(ErrorCode::kConflict,
                          "port " + name + " is used by rules " + ids + "; delete them first");
    }
    PortRecord rec;
    {
        std::lock_guard lock(registry_mutex_);
        auto it = ports_.find(name);
        rec = std::move(it->second);
        ports_.erase(it);
    }
    publish();  // returns after every worker has stopped using the port
    offload_.remove_port(rec.slot);
    port_device_close(rec.dev);
    if (rec.cfg.type == PortType::kVhostUser) inband_remove_port(rec.cfg.path);
    departed_macs_.erase(rec.slot);
    addresses_.forget(rec.slot);
    uint32_t n = macs_->remove_if([&](uint64_t, MacEntry e) { return e.port == rec.slot; });
    FERRY_LOG_INFO("port %s removed (%u MAC entries forgotten)", name.c_str(), n);
    return Ok{};
}

Result<nlohmann::json> Switch::set_port_security(const std::string& name,
                                                 std::optional<PortSecurityConfig> security) {
    if (security) {
        auto compiled = compile_port_security(*security, "security");
        if (!compiled) return compiled.error();
    }
    const bool security_on = security.has_value();
    {
        std::lock_guard lock(registry_mutex_);
        auto it = ports_.find(name);
        if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
        it->second.cfg.security = std::move(security);
    }
    publish();  // returns once every worker checks the new addresses
    FERRY_LOG_INFO("port %s: port security %s", name.c_str(), security_on ? "on" : "off");
    return port_security(name);
}

Result<nlohmann::json> Switch::port_addresses(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    auto it = ports_.find(name);
    if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
    const uint32_t now = clock_s_.load(std::memory_order_relaxed);
    nlohmann::json list = nlohmann::json::array();
    for (const PortAddress& a : addresses_.list(it->second.slot, it->second.cfg.security))
        list.push_back(port_address_json(a, now));
    return nlohmann::json{{"name", name}, {"addresses", std::move(list)}};
}

void Switch::drain_addresses(uint32_t now_s) {
    std::vector<rte_ring*> rings;
    for (WorkerState* w : workers_) rings.push_back(w->address_ring);
    addresses_.drain(rings, now_s);
}

std::vector<PortAddress> Switch::port_address_list(const std::string& name) {
    drain_addresses(clock_s_.load(std::memory_order_relaxed));
    std::lock_guard lock(registry_mutex_);
    const PortRecord* r = find(name);
    return r == nullptr ? std::vector<PortAddress>{} : addresses_.list(r->slot, r->cfg.security);
}

size_t Switch::note_port_addresses(const std::string& name,
                                   const std::vector<std::pair<uint8_t, IpBytes>>& seen) {
    std::lock_guard lock(registry_mutex_);
    const PortRecord* r = find(name);
    if (r == nullptr) return 0;
    std::optional<PortSecurity> sec;
    if (r->cfg.security) {
        auto compiled = compile_port_security(*r->cfg.security, "security");
        if (!compiled) return 0;  // refused when it was set: cannot happen
        sec = *compiled;
    }
    const uint32_t now = clock_s_.load(std::memory_order_relaxed);
    size_t n = 0;
    for (const auto& [family, ip] : seen) {
        if (sec && !port_security_source_allowed(*sec, family, ip.data())) continue;
        addresses_.note(r->slot, family, ip, now);
        ++n;
    }
    return n;
}

Result<nlohmann::json> Switch::port_security(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    auto it = ports_.find(name);
    if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
    const auto& sec = it->second.cfg.security;
    return nlohmann::json{{"name", name},
                          {"security", sec ? port_security_json(*sec) : nlohmann::json(nullptr)}};
}

nlohmann::json Switch::describe(const PortRecord& r) const {
    nlohmann::json j;
    j["name"] = r.cfg.name;
    j["type"] = r.cfg.type == PortType::kVhostUser ? "vhost-user" : "dpdk";
    j["state"] = r.link_up ? "up" : "down";
    j["link"] = r.link_up ? "up" : "down";
    j["slot"] = r.slot;
    j["dpdk_port"] = r.dev.dpdk_port;
    j["device"] = r.dev.dev_name;
    j["queues"] = r.cfg.queues;
    j["mtu"] = r.cfg.mtu;
    if (r.cfg.type == PortType::kVhostUser) {
        j["path"] = r.cfg.path;
        j["mode"] = r.cfg.mode == VhostMode::kServer ? "server" : "client";
    } else {
        j["devargs"] = r.cfg.devargs;
    }
    j["mac"] = port_mac(r.dev.dpdk_port);
    j["vlan_mode"] = r.cfg.vlan_mode == VlanMode::kAccess ? "access" : "trunk";
    j["tag"] = r.cfg.tag;
    if (!r.cfg.trunks.empty()) j["trunks"] = r.cfg.trunks;
    if (r.cfg.security) j["security"] = port_security_json(*r.cfg.security);
    nlohmann::json rx = nlohmann::json::array();
    for (uint16_t wi : r.rx_worker) rx.push_back(cfg_.workers[wi]);
    j["rx_lcores"] = rx;
    return j;
}

nlohmann::json Switch::port_list() const {
    std::lock_guard lock(registry_mutex_);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [n, r] : ports_) out.push_back(describe(r));
    return out;
}

Result<nlohmann::json> Switch::port_stats(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [n, r] : ports_) {
        if (!name.empty() && n != name) continue;
        PortCounters c = sum_port_counters(r.slot);
        nlohmann::json j;
        j["name"] = n;
        j["rx_packets"] = c.rx_packets - r.baseline.rx_packets;
        j["rx_bytes"] = c.rx_bytes - r.baseline.rx_bytes;
        j["tx_packets"] = c.tx_packets - r.baseline.tx_packets;
        j["tx_bytes"] = c.tx_bytes - r.baseline.tx_bytes;
        nlohmann::json drops = nlohmann::json::object();
        for (size_t i = 0; i < kDropReasonCount; ++i)
            drops[std::string(kDropReasons[i].name)] = c.drops[i] - r.baseline.drops[i];
        j["drops"] = drops;
        rte_eth_stats es{};
        if (rte_eth_stats_get(r.dev.dpdk_port, &es) == 0)
            j["device"] = {{"ipackets", es.ipackets}, {"opackets", es.opackets},
                           {"imissed", es.imissed},   {"ierrors", es.ierrors},
                           {"oerrors", es.oerrors},   {"rx_nombuf", es.rx_nombuf}};
        out.push_back(j);
    }
    if (!name.empty() && out.empty())
        return make_error(ErrorCode::kNotFound, "no port named " + name);
    return out;
}

Result<nlohmann::json> Switch::mac_list(const std::string& port,
                                        std::optional<uint16_t> vlan) const {
    std::map<uint16_t, std::string> slot_names;
    for (const auto& [n, r] : ports_) slot_names[r.slot] = n;
    std::optional<uint16_t> slot;
    if (!port.empty()) {
        const PortRecord* r = find(port);
        if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + port);
        slot = r->slot;
    }
    uint32_t now = clock_s_.load();
    nlohmann::json out = nlohmann::json::array();
    macs_->for_each([&](uint64_t key, MacEntry e) {
        if (slot && e.port != *slot) return;
        if (vlan && mac_key_vlan(key) != *vlan) return;
        auto it = slot_names.find(e.port);
        out.push_back({{"mac", format_mac(mac_key_addr(key))},
                       {"vlan", mac_key_vlan(key)},
                       {"port", it == slot_names.end() ? std::string("?") : it->second},
                       {"age_s", now - e.stamp_s}});
    });
    std::sort(out.begin(), out.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
        return std::tie(a["vlan"], a["mac"]) < std::tie(b["vlan"], b["mac"]);
    });
    return out;
}

Result<nlohmann::json> Switch::mac_flush(const std::string& port) {
    std::optional<uint16_t> slot;
    if (!port.empty()) {
        const PortRecord* r = find(port);
        if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + port);
        slot = r->slot;
    }
    uint32_t n = macs_->remove_if([&](uint64_t, MacEntry e) { return !slot || e.port == *slot; });
    return nlohmann::json{{"flushed", n}};
}

namespace {

/// The EAL's --file-prefix: the last component of its runtime directory. Context: any.
std::string eal_file_prefix() {
    const std::string dir = rte_eal_get_runtime_dir();
    const size_t slash = dir.rfind('/');
    return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

nlohmann::json Switch::stats() const {
    nlohmann::json workers = nlohmann::json::array();
    for (const WorkerState* w : workers_) {
        uint64_t pk = counter_read(w->counters.packets);
        uint64_t busy = counter_read(w->counters.busy_cycles);
        workers.push_back({{"lcore", w->lcore},
                           {"packets", pk},
                           {"busy_cycles", busy},
                           {"idle_cycles", counter_read(w->counters.idle_cycles)},
                           {"cycles_per_packet", pk == 0 ? 0 : busy / pk},
                           {"sleeps", counter_read(w->counters.sleeps)},
                           {"iterations", counter_read(w->counters.iterations)},
                           {"learn_events", counter_read(w->counters.learn_events)},
                           {"learn_ring_full", counter_read(w->counters.learn_ring_full)},
                           {"address_ring_full", counter_read(w->counters.address_ring_full)},
                           {"flow_cache_hits", counter_read(w->counters.cache_hits)},
                           {"flow_cache_misses", counter_read(w->counters.cache_misses)}});
    }
    std::lock_guard lock(registry_mutex_);
    return {
        {"uptime_s", (rte_get_tsc_cycles() - start_tsc_) / rte_get_tsc_hz()},
        {"workers", workers},
        {"ports", ports_.size()},
        {"macs", macs_->size()},
        {"mac_capacity", macs_->capacity()},
        {"mac_table_full", mac_table_full_.load()},
        {"mbufs_in_use", rte_mempool_in_use_count(pool_)},
        {"table_generation", generation_.load()},
        {"rules", rules_->size()},
        {"rule_generation", rules_->generation()},
        // What a DPDK secondary process (dpdk-dumpcap, dpdk-proc-info) needs to attach.
        {"eal", {{"file_prefix", eal_file_prefix()}, {"hugepages", rte_eal_has_hugepages() != 0}}}};
}

void Switch::housekeeping() {
    uint32_t now = static_cast<uint32_t>((rte_get_tsc_cycles() - start_tsc_) / rte_get_tsc_hz());
    clock_s_.store(now, std::memory_order_relaxed);
    drain_learn_events();
    drain_addresses(now);
    if (dpi_) dpi_->drain_alerts();
    if (now != last_age_s_) {
        last_age_s_ = now;
        age_macs();
    }
    if (events_pending_.load() || now != last_link_poll_s_) {
        last_link_poll_s_ = now;
        handle_port_events();
    }
    // A migration's destination QEMU connects to a port and sends its state long before the
    // device starts, with no event from net_vhost in between: look for such connections on
    // the vhost-user ports without a running device (docs/migration.md, "In-band migration").
    std::vector<std::string> idle_vhost;
    {
        std::lock_guard lock(registry_mutex_);
        for (const auto& [n, r] : ports_)
            if (r.cfg.type == PortType::kVhostUser && !r.link_up) idle_vhost.push_back(r.cfg.path);
    }
    for (const std::string& path : idle_vhost) inband_attach(path);
}

void Switch::drain_learn_events() {
    uint32_t now = clock_s_.load(std::memory_order_relaxed);
    const PortTable* t = table_.load(std::memory_order_acquire);
    LearnEvent evs[64];
    for (WorkerState* w : workers_) {
        unsigned n;
        while ((n = rte_ring_sc_dequeue_burst_elem(w->learn_ring, evs, sizeof(LearnEvent), 64,
                                                   nullptr)) != 0) {
            for (unsigned i = 0; i < n; ++i) {
                if (evs[i].port >= kPortSlots || !t->ports[evs[i].port].active) continue;
                MacEntry old{};
                bool known = macs_->get(evs[i].key, &old);
                if (known && old.port != evs[i].port)
                    FERRY_LOG_DEBUG("mac %s vlan %u moved from slot %u to slot %u",
                                    format_mac(mac_key_addr(evs[i].key)).c_str(),
                                    mac_key_vlan(evs[i].key), old.port, evs[i].port);
                if (!macs_->upsert(evs[i].key, MacEntry{evs[i].port, now})) ++mac_table_full_;
            }
        }
    }
}

void Switch::age_macs() {
    uint32_t now = clock_s_.load(std::memory_order_relaxed);
    uint32_t limit = cfg_.mac_aging_s;
    macs_->remove_if([&](uint64_t, MacEntry e) { return now - e.stamp_s > limit; });
}

void Switch::on_port_event(void* self) {
    // DPDK's interrupt thread: only flag and wake the control thread.
    auto* sw = static_cast<Switch*>(self);
    sw->events_pending_.store(true);
    uint64_t one = 1;
    ssize_t ignored = write(sw->event_fd_, &one, sizeof(one));
    (void)ignored;
}

void Switch::post(std::function<void()> task) {
    {
        std::lock_guard lock(posted_mutex_);
        posted_.push_back(std::move(task));
    }
    uint64_t one = 1;
    ssize_t ignored = write(event_fd_, &one, sizeof(one));
    (void)ignored;
}

void Switch::handle_port_events() {
    uint64_t drained;
    while (read(event_fd_, &drained, sizeof(drained)) > 0) {
    }
    std::vector<std::function<void()>> tasks;
    {
        std::lock_guard lock(posted_mutex_);
        tasks.swap(posted_);
    }
    for (auto& t : tasks) t();
    events_pending_.store(false);
    poll_links();
}

void Switch::poll_links() {
    bool changed = false;
    std::vector<uint16_t> went_down;
    std::vector<std::string> resumed;
    std::vector<uint16_t> vhost_down;
    {
        std::lock_guard lock(registry_mutex_);
        for (auto& [n, r] : ports_) {
            bool up = port_link_up(r.dev.dpdk_port);
            if (up == r.link_up) continue;
            r.link_up = up;
            changed = true;
            const char* what =
                r.cfg.type == PortType::kVhostUser
                    ? (up ? "vhost-user peer connected" : "vhost-user peer disconnected")
                    : "link";
            FERRY_LOG_INFO("port %s: link %s (%s)", n.c_str(), up ? "up" : "down", what);
            if (!up) went_down.push_back(r.slot);
            if (r.cfg.type == PortType::kVhostUser) {
                if (up) resumed.push_back(r.cfg.path);
                if (up) departed_macs_.erase(r.slot);
                if (!up) vhost_down.push_back(r.slot);
            }
        }
    }
    if (!changed) return;
    for (const std::string& path : resumed) inband_device_resumed(path);
    publish();
    for (uint16_t slot : went_down) {
        // A vhost-user port's link goes down when QEMU stops the device, also right before it
        // asks for the port's state: the MACs stay known for that state, not for forwarding.
        const bool keep = std::find(vhost_down.begin(), vhost_down.end(), slot) != vhost_down.end();
        std::vector<DepartedMac> departed;
        macs_->remove_if([&](uint64_t key, MacEntry e) {
            if (e.port != slot) return false;
            if (keep) departed.push_back({key, e.stamp_s});
            return true;
        });
        if (keep) departed_macs_[slot] = std::move(departed);
    }
}

std::vector<Switch::DepartedMac> Switch::departed_macs(uint16_t slot) const {
    auto it = departed_macs_.find(slot);
    return it == departed_macs_.end() ? std::vector<DepartedMac>{} : it->second;
}

}  // namespace ferry
