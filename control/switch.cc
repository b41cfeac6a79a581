// The switch's life: building it after rte_eal_init (mbuf pool, RCU, MAC table, worker states
// with their rings, flow caches, rule counters and meters, conntrack, DPI, the rule table), the
// context rule compilation reads, and tearing it all down. What the switch does once built lives
// beside this file: switch_workers.cc (launching and pausing the workers), switch_ports.cc (the
// port registry and the port table the workers read), switch_macs.cc (the MAC table),
// switch_addresses.cc (the addresses guests are seen sending from), switch_housekeeping.cc (the
// control thread's periodic work and events), switch_reports.cc (the JSON the control methods
// return). Context: control, everything in these files unless a function says otherwise.
#include "control/switch.h"

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "control/ct_control.h"
#include "control/dpi_control.h"
#include "dataplane/flow_cache.h"
#include "dataplane/hash_key.h"
#include "dataplane/mac_table.h"
#include "dataplane/meter.h"

namespace ferry {
namespace {

constexpr uint32_t kLearnRingSize = 4096;

}  // namespace

Switch::Switch(const Config& cfg) : cfg_(cfg) {}

Result<std::unique_ptr<Switch>> Switch::create(const Config& cfg, bool with_ports) {
    std::unique_ptr<Switch> sw(new Switch(cfg));
    Status st = sw->init();
    if (!st) return st.error();
    if (with_ports) {
        if (Status opened = sw->open_configured_ports(); !opened) return opened.error();
    }
    return sw;
}

Status Switch::open_configured_ports() {
    for (const PortConfig& p : cfg_.ports) {
        auto added = add_port(p);
        if (!added) return added.error();
    }
    if (!cfg_.rules.empty()) {
        auto added = rules_->add(cfg_.rules, rule_context(), "rules");
        if (!added) return added.error();
    }
    return Ok{};
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

}  // namespace ferry
