#include "control/dpi_control.h"

#include <rte_cycles.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "control/ct_control.h"
#include "control/log.h"
#include "dataplane/counters.h"
#include "dataplane/worker.h"

namespace ferry {
namespace {

using json = nlohmann::json;

constexpr unsigned kAlertRingSize = 1024;  // alerts per worker waiting for the control thread
constexpr uint64_t kAlertLogsPerSecond = 100;

std::string hash_text(uint64_t h) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016" PRIx64, h);
    return buf;
}

json pattern_json(const DpiPattern& p) {
    json flags = json::array();
    for (size_t b = 0; b < kDpiFlagNames.size(); ++b)
        if (p.flags & (1u << b)) flags.push_back(kDpiFlagNames[b]);
    json j{{"id", p.id},
           {"regex", p.regex},
           {"flags", flags},
           {"direction", kDpiDirectionNames[static_cast<size_t>(p.direction)]},
           {"action", kDpiActionNames[static_cast<size_t>(p.action)]}};
    if (p.action == DpiVerdictKind::kMark) j["mark"] = p.mark;
    return j;
}

json counters_json(const DpiCounters& c) {
    json j = json::object();
    for (const DpiCounterInfo& k : kDpiCounters) j[std::string(k.name)] = counter_read(c.*k.field);
    return j;
}

void add_counters(DpiCounters& sum, const DpiCounters& c) {
    const auto* from = reinterpret_cast<const uint64_t*>(&c);
    auto* to = reinterpret_cast<uint64_t*>(&sum);
    for (size_t i = 0; i < sizeof(DpiCounters) / sizeof(uint64_t); ++i)
        to[i] += counter_read(from[i]);
}

}  // namespace

Result<std::unique_ptr<DpiControl>> DpiControl::create(const DpiConfig& cfg,
                                                       const std::vector<WorkerState*>& ws,
                                                       ConntrackControl& ct, rte_rcu_qsbr* qsbr) {
    std::unique_ptr<DpiControl> d(new DpiControl());
    d->cfg_ = cfg;
    d->qsbr_ = qsbr;
    d->ws_ = ws;
    for (size_t i = 0; i < ws.size(); ++i) {
        ConntrackShard& shard = ct.shard(static_cast<uint16_t>(i));
        auto w = DpiWorker::create(static_cast<uint16_t>(i), cfg.streams_per_worker,
                                   shard.table().capacity(), cfg.depth_kib * 1024);
        if (!w) return make_error(ErrorCode::kFailed, "dpi: cannot allocate the stream slots");
        const std::string name = "ferry_dpi_" + std::to_string(i);
        rte_ring* r = rte_ring_create_elem(name.c_str(), sizeof(DpiAlert), kAlertRingSize,
                                           SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (r == nullptr) return make_error(ErrorCode::kFailed, "dpi: cannot create ring " + name);
        d->rings_.push_back(r);
        shard.set_remove_hook(&DpiWorker::remove_hook, w.get());
        ws[i]->dpi = w.get();
        ws[i]->dpi_alerts = r;
        ws[i]->dpi_version = &d->published_;
        d->workers_.push_back(std::move(w));
    }
    if (auto r = d->publish(cfg.patterns); !r) {
        Error e = r.error();
        e.message = "dpi.patterns: " + e.message;
        return e;
    }
    return d;
}

DpiControl::~DpiControl() {
    for (size_t i = 0; i < ws_.size(); ++i) {
        ws_[i]->dpi = nullptr;
        ws_[i]->dpi_version = nullptr;
        ws_[i]->dpi_alerts = nullptr;
    }
    delete published_.load();
    for (rte_ring* r : rings_) rte_ring_free(r);
}

Result<std::shared_ptr<const DpiDatabase>> compile_dpi(const std::vector<DpiPattern>& patterns,
                                                       const DpiConfig& limits) {
    DpiCompileError err;
    std::shared_ptr<const DpiDatabase> db = DpiDatabase::compile(patterns, &err);
    if (!db) {
        if (err.has_id)
            return make_error(ErrorCode::kInvalidParams,
                              "pattern " + std::to_string(err.id) + ": " + err.message);
        return make_error(ErrorCode::kInvalidParams, err.message);
    }
    const uint64_t per_stream = db->stream_bytes(0) + db->stream_bytes(1);
    const uint64_t need = per_stream * limits.streams_per_worker;
    if (need > uint64_t{limits.memory_mb} << 20)
        return make_error(
            ErrorCode::kInvalidParams,
            "the patterns need " + std::to_string(per_stream) +
                " bytes of stream state per connection: " +
                std::to_string(limits.streams_per_worker) + " streams per worker take " +
                std::to_string((need + (1u << 20) - 1) >> 20) + " MiB, more than dpi.memory_mb (" +
                std::to_string(limits.memory_mb) + ")");
    return db;
}

Result<json> DpiControl::publish(std::vector<DpiPattern> patterns) {
    auto compiled = compile_dpi(patterns, cfg_);
    if (!compiled) return compiled.error();
    std::shared_ptr<const DpiDatabase> db = std::move(*compiled);
    const uint64_t per_stream = db->stream_bytes(0) + db->stream_bytes(1);
    std::string why;
    std::unique_ptr<DpiVersion> next = DpiVersion::create(
        db, generation_ + 1, static_cast<uint16_t>(workers_.size()), cfg_.streams_per_worker, &why);
    if (!next) return make_error(ErrorCode::kFailed, "dpi: " + why);
    ++generation_;
    // Release: pairs with the workers' acquire load in dpi_action.
    DpiVersion* old = published_.exchange(next.release(), std::memory_order_acq_rel);
    if (old != nullptr) {
        rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
        // The old generation's matches stay counted under their pattern ids.
        const std::vector<DpiRule>& rules = old->database().rules();
        for (size_t i = 0; i < rules.size(); ++i)
            for (uint16_t w = 0; w < old->worker_count(); ++w)
                retired_[rules[i].id] += counter_read(old->worker(w).matches[i]);
        delete old;
    }
    patterns_ = std::move(patterns);
    // Counts of patterns no longer loaded are dropped.
    std::map<uint32_t, uint64_t> kept;
    for (const DpiPattern& p : patterns_)
        if (auto it = retired_.find(p.id); it != retired_.end()) kept.insert(*it);
    retired_ = std::move(kept);
    FERRY_LOG_INFO_IN(kDpi,
                      "generation %" PRIu64 ": %zu patterns, database %s, %" PRIu64
                      " bytes of stream state per connection",
                      generation_, patterns_.size(), hash_text(db->hash()).c_str(), per_stream);
    return json{{"patterns", patterns_.size()},
                {"generation", generation_},
                {"hash", hash_text(db->hash())},
                {"stream_bytes", per_stream}};
}

Result<json> DpiControl::load(std::vector<DpiPattern> patterns, bool replace) {
    if (replace) return publish(std::move(patterns));
    std::vector<DpiPattern> merged = patterns_;
    for (DpiPattern& p : patterns) {
        auto it = std::find_if(merged.begin(), merged.end(),
                               [&](const DpiPattern& m) { return m.id == p.id; });
        if (it != merged.end())
            *it = std::move(p);
        else
            merged.push_back(std::move(p));
    }
    if (merged.size() > kMaxDpiPatterns)
        return make_error(ErrorCode::kInvalidParams,
                          "more than " + std::to_string(kMaxDpiPatterns) + " patterns");
    return publish(std::move(merged));
}

Result<json> DpiControl::clear(const std::vector<uint32_t>& ids) {
    if (ids.empty()) return publish({});
    std::vector<DpiPattern> kept = patterns_;
    for (uint32_t id : ids) {
        auto it =
            std::find_if(kept.begin(), kept.end(), [&](const DpiPattern& m) { return m.id == id; });
        if (it == kept.end())
            return make_error(ErrorCode::kNotFound, "no pattern with id " + std::to_string(id));
        kept.erase(it);
    }
    return publish(std::move(kept));
}

uint64_t DpiControl::matches(size_t rule_index) const {
    const DpiVersion* v = published_.load(std::memory_order_relaxed);
    uint64_t n = 0;
    for (uint16_t w = 0; w < v->worker_count(); ++w)
        n += counter_read(v->worker(w).matches[rule_index]);
    if (auto it = retired_.find(patterns_[rule_index].id); it != retired_.end()) n += it->second;
    return n;
}

json DpiControl::list() const {
    json out = json::array();
    for (size_t i = 0; i < patterns_.size(); ++i) {
        json j = pattern_json(patterns_[i]);
        j["matches"] = matches(i);
        out.push_back(std::move(j));
    }
    return json{{"patterns", out}};
}

json DpiControl::stats() const {
    const DpiVersion* v = published_.load(std::memory_order_relaxed);
    const DpiDatabase& db = v->database();
    DpiCounters total{};
    json workers = json::array();
    uint64_t in_use = 0;
    for (const auto& w : workers_) {
        add_counters(total, w->counters());
        json j = counters_json(w->counters());
        j["worker"] = w->worker();
        j["streams_in_use"] = w->slots_in_use();
        in_use += w->slots_in_use();
        workers.push_back(std::move(j));
    }
    json per_pattern = json::array();
    for (size_t i = 0; i < patterns_.size(); ++i)
        per_pattern.push_back(json{{"id", patterns_[i].id}, {"matches", matches(i)}});
    json out = counters_json(total);
    out["generation"] = v->generation();
    out["hash"] = hash_text(db.hash());
    out["library"] = dpi_library_version();
    out["pattern_count"] = patterns_.size();
    out["stream_bytes"] = db.stream_bytes(0) + db.stream_bytes(1);
    out["depth_bytes"] = uint64_t{cfg_.depth_kib} * 1024;
    out["streams_per_worker"] = cfg_.streams_per_worker;
    out["streams_in_use"] = in_use;
    out["alerts_logged"] = alerts_logged_;
    out["workers"] = std::move(workers);
    out["patterns"] = std::move(per_pattern);
    return out;
}

void DpiControl::drain_alerts() {
    const uint64_t now_s = rte_get_tsc_cycles() / rte_get_tsc_hz();
    if (now_s != alert_window_s_) {
        alert_window_s_ = now_s;
        alert_window_logged_ = 0;
    }
    DpiAlert a[32];
    for (rte_ring* r : rings_) {
        unsigned n;
        while ((n = rte_ring_sc_dequeue_burst_elem(r, a, sizeof(DpiAlert), 32, nullptr)) != 0) {
            for (unsigned i = 0; i < n; ++i) {
                if (alert_window_logged_++ >= kAlertLogsPerSecond) continue;  // counted, not logged
                ++alerts_logged_;
                FERRY_LOG_WARN_IN(kDpi, "dpi alert: pattern %u %s at byte %" PRIu64 ": %s",
                                  a[i].pattern_id, a[i].dir == 0 ? "to_server" : "to_client",
                                  a[i].offset, ct_tuple_text(a[i].tuple).c_str());
            }
        }
    }
}

}  // namespace ferry
